package diskfloor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
)

const mib = 1 << 20

// fakeStat answers from a table of usages by path; a missing path fails.
type fakeStat map[string]Usage

func (f fakeStat) stat(path string) (Usage, error) {
	u, ok := f[path]
	if !ok {
		return Usage{}, errors.New("no such file system")
	}
	return u, nil
}

func TestWatcherChecks(t *testing.T) {
	type step struct {
		usage     fakeStat
		wantErr   string // "" for nil; else a substring of Err's message
		wantPing  string // "" for nil; else a substring of Ping's message
		wantLogs  int    // lines logged by this check
		wantBelow bool   // Err wraps ErrBelowFloor
	}
	floor512 := Floor{Bytes: 512 * mib}
	tests := []struct {
		name  string
		paths []string
		floor Floor
		steps []step
	}{
		{"room", []string{"/data"}, floor512, []step{
			{usage: fakeStat{"/data": {Free: 600 * mib, Total: 10_000 * mib}}},
		}},
		{"exactly at the floor is room", []string{"/data"}, floor512, []step{
			{usage: fakeStat{"/data": {Free: 512 * mib, Total: 10_000 * mib}}},
		}},
		{"below, stays below, comes back", []string{"/data"}, floor512, []step{
			{usage: fakeStat{"/data": {Free: 300 * mib, Total: 10_000 * mib}},
				wantErr: "free space 300MiB below the floor 512MiB on /data", wantPing: "300MiB below", wantLogs: 1, wantBelow: true},
			{usage: fakeStat{"/data": {Free: 200 * mib, Total: 10_000 * mib}},
				wantErr: "free space 200MiB below", wantPing: "200MiB below", wantBelow: true},
			{usage: fakeStat{"/data": {Free: 2048 * mib, Total: 10_000 * mib}}, wantLogs: 1},
			{usage: fakeStat{"/data": {Free: 2048 * mib, Total: 10_000 * mib}}},
		}},
		{"percentage larger than bytes", []string{"/data"}, Floor{Bytes: 512 * mib, Percent: 10}, []step{
			{usage: fakeStat{"/data": {Free: 900 * mib, Total: 10_000 * mib}},
				wantErr: "below the floor 1000MiB", wantPing: "900MiB", wantLogs: 1, wantBelow: true},
		}},
		{"bytes larger than percentage", []string{"/data"}, Floor{Bytes: 512 * mib, Percent: 1}, []step{
			{usage: fakeStat{"/data": {Free: 400 * mib, Total: 10_000 * mib}},
				wantErr: "below the floor 512MiB", wantPing: "400MiB", wantLogs: 1, wantBelow: true},
		}},
		{"one of two file systems below", []string{"/data", "/events"}, floor512, []step{
			{usage: fakeStat{"/data": {Free: 4096 * mib, Total: 10_000 * mib}, "/events": {Free: 100 * mib, Total: 1000 * mib}},
				wantErr: "on /events", wantPing: "100MiB below the floor 512MiB on /events", wantLogs: 1, wantBelow: true},
		}},
		{"statfs fails: health says so, writes go on", []string{"/data"}, floor512, []step{
			{usage: fakeStat{}, wantPing: "cannot measure free space on /data", wantLogs: 1},
			{usage: fakeStat{}, wantPing: "cannot measure"},
			{usage: fakeStat{"/data": {Free: 100 * mib, Total: 1000 * mib}},
				wantErr: "100MiB below", wantPing: "100MiB below", wantLogs: 2, wantBelow: true},
		}},
		{"below on one, statfs fails on the other", []string{"/a", "/b"}, floor512, []step{
			{usage: fakeStat{"/a": {Free: 1, Total: 1000 * mib}},
				wantErr: "1B below the floor 512MiB on /a", wantPing: "cannot measure free space on /b", wantLogs: 2, wantBelow: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			var cur fakeStat
			w := newWatcher(tc.paths, tc.floor, func(p string) (Usage, error) { return cur.stat(p) },
				slog.New(slog.NewTextHandler(&logs, nil)))
			for i, s := range tc.steps {
				cur = s.usage
				before := strings.Count(logs.String(), "\n")
				w.check()
				checkErr(t, i, "Err", w.Err(), s.wantErr)
				checkErr(t, i, "Ping", w.Ping(context.Background()), s.wantPing)
				if got := errors.Is(w.Err(), ErrBelowFloor); got != s.wantBelow {
					t.Errorf("step %d: errors.Is(Err, ErrBelowFloor) = %v, want %v", i, got, s.wantBelow)
				}
				if s.wantBelow && !errors.Is(w.Ping(context.Background()), ErrBelowFloor) {
					t.Errorf("step %d: Ping does not wrap ErrBelowFloor", i)
				}
				if got := strings.Count(logs.String(), "\n") - before; got != s.wantLogs {
					t.Errorf("step %d: %d log lines, want %d (transitions only):\n%s", i, got, s.wantLogs, logs.String())
				}
			}
		})
	}
}

func checkErr(t *testing.T, step int, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("step %d: %s = %q, want nil", step, what, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("step %d: %s = %v, want it to contain %q", step, what, err, want)
	}
}

func TestParseFloor(t *testing.T) {
	tests := []struct {
		in      string
		want    Floor
		wantErr bool
	}{
		{in: "512MiB", want: Floor{Bytes: 512 << 20}},
		{in: "1GiB", want: Floor{Bytes: 1 << 30}},
		{in: "1.5GiB", want: Floor{Bytes: 3 << 29}},
		{in: "2GB", want: Floor{Bytes: 2e9}},
		{in: "4096", want: Floor{Bytes: 4096}},
		{in: "5%", want: Floor{Percent: 5}},
		{in: "1GiB, 2.5%", want: Floor{Bytes: 1 << 30, Percent: 2.5}},
		{in: "0", want: Floor{}},
		{in: "", wantErr: true},
		{in: "lots", wantErr: true},
		{in: "-1MiB", wantErr: true},
		{in: "100%", wantErr: true},
		{in: "x%", wantErr: true},
		{in: "99999999TiB", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseFloor(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseFloor(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err == nil {
			if again, err := ParseFloor(got.String()); err != nil || again != got {
				t.Errorf("ParseFloor(%q).String() = %q reads back as %+v, %v", tc.in, got.String(), again, err)
			}
		}
	}
}

func TestDistinctKeepsOnePathPerFileSystem(t *testing.T) {
	dir := t.TempDir()
	missing := dir + "/not/yet/created"
	got := distinct([]string{dir, missing, dir + "/also"})
	if len(got) != 1 || got[0] != dir {
		t.Fatalf("distinct = %v, want [%s]: one file system", got, dir)
	}
	u, err := Statfs(missing)
	if err != nil || u.Total == 0 {
		t.Fatalf("Statfs of a path not created yet = %+v, %v: want its parent's file system", u, err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("Statfs created the path")
	}
}
