package profiles

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func TestParseAerospikeURL(t *testing.T) {
	cases := []struct {
		in    string
		hosts string // fmt of the host list; empty when an error is expected
		ns    string
	}{
		{"aero1:3000/profiles", "[aero1:3000]", "profiles"},
		{"aero1:3000,aero2:3001/test", "[aero1:3000 aero2:3001]", "test"},
		{"aero1/test", "[aero1:3000]", "test"},
		{"[::1]:3100/test", "[[::1]:3100]", "test"},
		{"aero1:3000", "", ""},
		{"aero1:3000/", "", ""},
		{"aero1:3000/a/b", "", ""},
		{"aero1:x/test", "", ""},
		{"aero1:70000/test", "", ""},
		{"aero1:3000,/test", "", ""},
		{"/test", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			hosts, ns, err := parseAerospikeURL(tc.in)
			if tc.hosts == "" {
				if err == nil {
					t.Fatalf("got hosts %v ns %q, want an error", hosts, ns)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got := fmt.Sprint(hosts); got != tc.hosts || ns != tc.ns {
				t.Fatalf("got %s %q, want %s %q", got, ns, tc.hosts, tc.ns)
			}
		})
	}
}

func TestOpenRejectsBadURLs(t *testing.T) {
	for _, url := range []string{"", "pebble://", "postgres://x/y", "aerospike://host:3000", "file:///tmp/x"} {
		t.Run(url, func(t *testing.T) {
			s, err := Open(context.Background(), url, Options{})
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q) succeeded", url)
			}
			if !strings.Contains(err.Error(), "profiles: open") {
				t.Fatalf("error %q lacks context", err)
			}
		})
	}
}

func TestBinValues(t *testing.T) {
	v := func(s string) []byte { return []byte(s) }
	cases := []struct {
		name  string
		res   any
		limit int
		want  []string
		err   bool
	}{
		{"absent bin", nil, 10, nil, false},
		{"nil results", []any{nil, nil}, 10, nil, false},
		{"count caps values", []any{2, []any{v("a"), v("b"), v("c")}}, 10, []string{"a", "b"}, false},
		{"limit caps values", []any{3, []any{v("a"), v("b"), v("c")}}, 1, []string{"a"}, false},
		{"zero count", []any{0, []any{v("a")}}, 10, nil, false},
		{"int64 count", []any{int64(1), []any{v("a")}}, 10, []string{"a"}, false},
		{"not a pair", []any{1}, 10, nil, true},
		{"bad value type", []any{1, []any{"a"}}, 10, nil, true},
		{"bad count type", []any{"1", []any{v("a")}}, 10, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := binValues(tc.res, tc.limit)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			var gs []string
			for _, b := range got {
				gs = append(gs, string(b))
			}
			if fmt.Sprint(gs) != fmt.Sprint(tc.want) {
				t.Fatalf("got %q, want %q", gs, tc.want)
			}
		})
	}
}
