package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// fullRetentionName names the section of bench/fullretention, another
// program (run by `make bench-full`, since it needs 24 h of event time and
// takes long).
const fullRetentionName = "fullretention"

// The hook: with --full, the harness runs bench/fullretention's test (it
// sits behind the benchfull build tag so that `make test` never runs it):
//
//	ALLEZON_BENCH_OUT=<results>/fullretention.json go test -tags benchfull -run TestFullRetention -timeout 4h -count 1 -v ./bench/fullretention
//
// and renders the JSON it writes: an object in the shape of a section
// (title, rows [{figure, target, result, pass}], ...) as it is; its own
// results (per backend: fill rate, size, query latency, mismatches) as a
// table; any other object as a table of its top-level fields. Without
// --full, a fullretention.json left by an earlier run is included and
// dated as such.

// fullRetention runs bench/fullretention when asked to and renders its
// results, or says plainly that it was not run.
func (h *harness) fullRetention(ctx context.Context) *section {
	sec := &section{Name: fullRetentionName, Title: "Aggregates at full retention"}
	path := filepath.Join(h.opt.Results, fullRetentionName+".json")
	started := time.Now()
	if h.opt.Full {
		if _, err := os.Stat(filepath.Join(h.root, "bench", fullRetentionName)); err != nil {
			sec.Intro = []string{"**Not run:** `bench/fullretention` is not in this tree yet."}
			return sec
		}
		_ = os.Remove(path)
		if err := h.runFullRetention(ctx, sec, path); err != nil {
			return sec.fail(err)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		sec.Intro = []string{"**Not run** in this run: `make bench-full` runs it (`bench/fullretention`)."}
		return sec
	}
	if info.ModTime().Before(started) {
		sec.Notes = append(sec.Notes, fmt.Sprintf("**Not from this run:** these figures come from an earlier `make bench-full`, written %s.",
			info.ModTime().UTC().Format("2006-01-02 15:04 UTC")))
	}
	if err := readFullRetention(path, sec); err != nil {
		return sec.fail(err)
	}
	sec.Files = append(sec.Files, path)
	return sec
}

// runFullRetention runs the test, sending it the results path (absolute:
// go test runs in the package's directory) and, in quick mode, a tiny
// size unless the caller chose one.
func (h *harness) runFullRetention(ctx context.Context, sec *section, path string) error {
	out, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	env := []string{"ALLEZON_BENCH_OUT=" + out}
	if h.opt.Quick {
		for _, kv := range []string{"ALLEZON_BENCH_HOURS=0.02", "ALLEZON_BENCH_QUERIES=16", "ALLEZON_BENCH_BACKENDS=pebble"} {
			if _, set := os.LookupEnv(kv[:strings.IndexByte(kv, '=')]); !set {
				env = append(env, kv)
			}
		}
	}
	args := []string{"test", "-tags", "benchfull", "-run", "TestFullRetention", "-timeout", "4h", "-count", "1", "-v", "./bench/" + fullRetentionName}
	sec.Commands = append(sec.Commands, shellJoin(append(env, append([]string{"go"}, args...)...)))
	h.log.Info("scenario", "name", fullRetentionName)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Env = h.root, append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = h.opt.Progress, h.opt.Progress
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bench/%s: %w", fullRetentionName, err)
	}
	return nil
}

// readFullRetention fills sec from the program's JSON, keeping the
// harness's own name and whatever notes it already has.
func readFullRetention(path string, sec *section) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var theirs section
	if err := json.Unmarshal(b, &theirs); err == nil && (len(theirs.Rows) > 0 || len(theirs.Tables) > 0) {
		notes := sec.Notes
		*sec = theirs
		sec.Name = fullRetentionName
		sec.Notes = append(notes, theirs.Notes...)
		if sec.Title == "" {
			sec.Title = "Aggregates at full retention"
		}
		return nil
	}
	if fullRetentionRows(b, sec) {
		return nil
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		v, _ := json.Marshal(fields[k])
		sec.add(k, "—", string(v), nil)
	}
	return nil
}

// fullRetentionResults is the part of bench/fullretention's own results
// the report shows; the JSON file, linked, has the rest.
type fullRetentionResults struct {
	Params struct {
		Hours float64 `json:"hours"`
		Rate  int64   `json:"rate_tags_per_s"`
	} `json:"params"`
	Tags     int64 `json:"tags"`
	Minutes  int64 `json:"minutes"`
	Backends []struct {
		Backend string `json:"backend"`
		Fill    struct {
			Seconds    float64 `json:"seconds"`
			TagsPerSec float64 `json:"tags_per_s"`
		} `json:"fill"`
		Size struct {
			Bytes int64 `json:"bytes"`
		} `json:"size"`
		Queries struct {
			Latency struct {
				N   int     `json:"n"`
				P50 float64 `json:"p50"`
				P99 float64 `json:"p99"`
				Max float64 `json:"max"`
			} `json:"latency_ms"`
			NonEmpty   float64 `json:"non_empty_share"`
			Checked    int     `json:"checked_against_reference"`
			Mismatches int     `json:"mismatches"`
		} `json:"queries"`
	} `json:"backends"`
}

// fullRetentionRows shows bench/fullretention's own results, one row of
// figures per backend; false when b is not in that shape.
func fullRetentionRows(b []byte, sec *section) bool {
	var r fullRetentionResults
	if json.Unmarshal(b, &r) != nil || len(r.Backends) == 0 {
		return false
	}
	sec.Intro = append(sec.Intro, fmt.Sprintf("The aggregates store filled with %.4g h of event time at %s (%s tags, %s minutes) through the pipeline's write path, "+
		"then random 10-minute queries over every filter combination, timed at `Store.Query`.", r.Params.Hours, fmtRate(float64(r.Params.Rate)), fmtInt(r.Tags), fmtInt(r.Minutes)))
	t := table{Header: []string{"backend", "fill", "size", "queries", "p50", "p99", "max", "non-empty", "checked", "mismatches"}}
	for _, be := range r.Backends {
		q := be.Queries
		t.Rows = append(t.Rows, []string{be.Backend,
			fmtRate(be.Fill.TagsPerSec) + " in " + fmtDur(time.Duration(be.Fill.Seconds*float64(time.Second))), fmtBytes(be.Size.Bytes), fmtInt(int64(q.Latency.N)),
			fmtMs(q.Latency.P50), fmtMs(q.Latency.P99), fmtMs(q.Latency.Max), fmtPct(q.NonEmpty), fmtInt(int64(q.Checked)), fmtInt(int64(q.Mismatches))})
	}
	sec.Tables = append(sec.Tables, t)
	return true
}

func fmtMs(ms float64) string { return fmtDur(time.Duration(ms * float64(time.Millisecond))) }
