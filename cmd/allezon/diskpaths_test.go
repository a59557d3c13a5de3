package main

import (
	"slices"
	"testing"
)

// The disk floor watches the directories of the embedded data this
// process writes, the data dir first when a store lies in it.
func TestDiskPaths(t *testing.T) {
	tests := []struct {
		name                  string
		c                     config
		withGateway, withPipe bool
		want                  []string
	}{
		{"all, defaults", config{DataDir: "/data", Events: "embedded"}, true, true,
			[]string{"/data", "/data/events", "/data/profiles", "/data/aggregates"}},
		{"all, stores on their own mounts", config{DataDir: "/data", Events: "embedded", Profiles: "pebble:///p", Aggregates: "pebble:///a"}, true, true,
			[]string{"/data", "/data/events", "/p", "/a"}},
		{"gateway on Aerospike and Kafka", config{DataDir: "/data", Events: "kafka://k:9092/t", Profiles: "aerospike://a:3000/ns", Aggregates: "postgres://u@h/db"}, true, false,
			nil},
		{"gateway with a Pebble profile store elsewhere", config{DataDir: "/data", Events: "kafka://k:9092/t", Profiles: "pebble:///p", Aggregates: "postgres://u@h/db"}, true, false,
			[]string{"/p"}},
		{"gateway does not write Pebble aggregates", config{DataDir: "/data", Events: "kafka://k:9092/t", Profiles: "aerospike://a:3000/ns"}, true, false,
			nil},
		{"pipeline on PostgreSQL", config{DataDir: "/data", Events: "kafka://k:9092/t", Aggregates: "postgres://u@h/db"}, false, true,
			nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.resolve()
			if got := tc.c.diskPaths(tc.withGateway, tc.withPipe); !slices.Equal(got, tc.want) {
				t.Errorf("diskPaths = %q, want %q", got, tc.want)
			}
		})
	}
}
