package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickRun runs the load scenarios end to end, scaled to about a
// second each, into a temporary directory: it proves the harness works,
// not how fast allezon is. The micro-benchmarks are left out (they would
// run go test inside go test); TestParseBench covers their parsing.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and load")
	}
	dir := t.TempDir()
	p := plan{Limit: time.Second, Ingest: time.Second, Mixed: time.Second, Settle: time.Second, Probes: 2, MicroCount: 1, FreshnessWarmup: 500 * time.Millisecond}
	opt := options{
		Out:      filepath.Join(dir, "BENCHMARKS.md"),
		Results:  filepath.Join(dir, "results"),
		Quick:    true,
		devBuild: true,
		Only:     []string{"limit", "ingest", "mixed", "freshness"},
		Progress: io.Discard,
		Log:      slog.New(slog.NewTextHandler(t.Output(), nil)),
		plan:     &p,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, opt); err != nil {
		t.Fatal(err)
	}
	md := readFile(t, opt.Out)
	for _, want := range []string{
		"QUICK MODE: not a benchmark", "## Machine", "## Summary",
		"Limit: bare fasthttp", "Ingest: `allezon all`", "Mixed: tags with checked queries",
		"Freshness: from 204 to visible", "Aggregates at full retention", "**Not run**",
		"share of the limit (same run)", "server peak RSS",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "Not measured") {
		t.Errorf("a scenario could not measure:\n%s", md)
	}
	for _, f := range []string{"limit.json", "ingest.json", "mixed.json", "freshness.json", "freshness-load.json", "bench.json"} {
		if _, err := os.Stat(filepath.Join(opt.Results, f)); err != nil {
			t.Errorf("missing result: %v", err)
		}
	}
}

func TestParseBench(t *testing.T) {
	out := `goos: linux
pkg: github.com/allezon/allezon/gateway/profiles
BenchmarkAppend/serial-2   268   641963 ns/op   1555 appends/s   485 B/op   6 allocs/op
BenchmarkAppend/serial-2   270   600000 ns/op   1600 appends/s   485 B/op   6 allocs/op
BenchmarkAppend/serial-2   250   700000 ns/op   1500 appends/s   485 B/op   6 allocs/op
PASS
pkg: github.com/allezon/allezon/schemas
BenchmarkDecodeUserTag-2   112718   1120 ns/op   227.69 MB/s   80 B/op   1 allocs/op
`
	res := parseBench(strings.NewReader(out))
	if len(res) != 2 {
		t.Fatalf("parsed %d benchmarks, want 2", len(res))
	}
	tb := microTable(res)
	want := [][]string{
		{"gateway/profiles", "Append/serial", "642 µs", "485", "6", "1,555 appends/s", "3"},
		{"schemas", "DecodeUserTag", "1.12 µs", "80", "1", "", "1"},
	}
	for i, w := range want {
		if strings.Join(tb.Rows[i], "|") != strings.Join(w, "|") {
			t.Errorf("row %d = %q, want %q", i, tb.Rows[i], w)
		}
	}
}

// TestFullRetentionHook checks that a results JSON left by
// bench/fullretention becomes its section, dated when it is not from this
// run, and that without one the report says it was not run.
func TestFullRetentionHook(t *testing.T) {
	dir := t.TempDir()
	h := &harness{opt: options{Results: dir}, root: dir}
	if sec := h.fullRetention(context.Background()); !strings.Contains(strings.Join(sec.Intro, ""), "Not run") || sec.Err != "" {
		t.Errorf("without results: %+v", sec)
	}
	js := `{"title":"Aggregates at full retention","rows":[{"figure":"p99","target":"≤ 50 ms","result":"12 ms","pass":true}]}`
	path := filepath.Join(dir, "fullretention.json")
	if err := os.WriteFile(path, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	sec := h.fullRetention(context.Background())
	if len(sec.Rows) != 1 || sec.Rows[0].Result != "12 ms" || sec.Name != fullRetentionName {
		t.Errorf("section from JSON: %+v", sec)
	}
	if len(sec.Notes) == 0 || !strings.Contains(sec.Notes[0], "Not from this run") {
		t.Errorf("an earlier run's figures are not dated: %q", sec.Notes)
	}
	// bench/fullretention's own results: a table, one row per backend.
	js = `{"params":{"hours":24,"rate_tags_per_s":1000},"tags":86400000,"minutes":1440,"backends":[` +
		`{"backend":"pebble","fill":{"seconds":1200,"tags_per_s":72000},"size":{"bytes":1073741824},` +
		`"queries":{"latency_ms":{"n":1000,"p50":0.5,"p99":2.5,"max":9},"non_empty_share":1,"checked_against_reference":100,"mismatches":0}}]}`
	if err := os.WriteFile(path, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	sec = h.fullRetention(context.Background())
	if len(sec.Tables) != 1 || strings.Join(sec.Tables[0].Rows[0], "|") != "pebble|72,000 tags/s in 20m0s|1 GiB|1,000|500 µs|2.50 ms|9.00 ms|100.0 %|100|0" {
		t.Errorf("table from bench/fullretention's results: %+v", sec.Tables)
	}
}

func TestProcReaders(t *testing.T) {
	cpu, err := cpuSeconds(os.Getpid())
	if err != nil || cpu < 0 {
		t.Errorf("cpuSeconds = %v, %v", cpu, err)
	}
	rss, err := peakRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("peakRSS = %d, %v", rss, err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
