package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// microPackages are the existing micro-benchmarks of the hot path: tag
// decoding and encoding, the profile store, the stream worker's sums and
// flush, and the producer. Patterns are anchored so that the reference
// benchmarks beside them (encoding/json, goavro) are left out.
var microPackages = []struct{ pkg, pattern string }{
	{"./schemas", "^(BenchmarkDecodeUserTag|BenchmarkAppendUserTagJSON|BenchmarkAppendEventValue|BenchmarkDecodeEventValue)$"},
	{"./gateway/profiles", "^(BenchmarkAppend.*|BenchmarkRead)$"},
	{"./pipeline", "^(BenchmarkAccumulate.*|BenchmarkFlush)$"},
	{"./gateway/publish", "^BenchmarkPublishParallel$"},
}

// runMicro runs the micro-benchmarks one package at a time (go test would
// otherwise run packages in parallel, each disturbing the others) and
// keeps the raw output, which benchstat reads, in micro.txt.
func runMicro(ctx context.Context, h *harness) *section {
	sec := &section{Title: "Micro-benchmarks", Intro: []string{fmt.Sprintf(
		"The hot path's Go benchmarks, `-count %d`, one package at a time; the table gives the median of the runs. "+
			"The raw output is benchstat-ready: `benchstat old.txt micro.txt` compares two runs.", h.plan.MicroCount)}}
	path := filepath.Join(h.opt.Results, "micro.txt")
	f, err := os.Create(path)
	if err != nil {
		return sec.fail(err)
	}
	defer f.Close()
	sec.Files = append(sec.Files, path)
	var raw bytes.Buffer
	var errs []string
	for _, m := range microPackages {
		args := []string{"test", "-run", "^$", "-bench", m.pattern, "-benchmem", "-count", strconv.Itoa(h.plan.MicroCount)}
		if h.plan.MicroBenchtime != "" {
			args = append(args, "-benchtime", h.plan.MicroBenchtime)
		}
		args = append(args, m.pkg)
		sec.Commands = append(sec.Commands, shellJoin(append([]string{"go"}, args...)))
		h.log.Info("micro-benchmarks", "pkg", m.pkg)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = h.root
		cmd.Stdout, cmd.Stderr = io.MultiWriter(f, &raw), h.opt.Progress
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", m.pkg, err))
		}
	}
	sec.Tables = append(sec.Tables, microTable(parseBench(&raw)))
	if len(errs) > 0 {
		sec.Err = "go test failed: " + strings.Join(errs, "; ")
	}
	return sec
}

// benchResult is one benchmark's runs: every value of every unit.
type benchResult struct {
	pkg, name string
	units     []string // in the order of the output
	values    map[string][]float64
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// parseBench reads go test -bench output: "pkg:" lines name the package
// of the benchmark lines that follow.
func parseBench(r io.Reader) []*benchResult {
	var out []*benchResult
	index := map[string]*benchResult{}
	pkg := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(strings.TrimSpace(p), "github.com/allezon/allezon/")
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		name := procsSuffix.ReplaceAllString(f[0], "")
		br := index[pkg+" "+name]
		if br == nil {
			br = &benchResult{pkg: pkg, name: name, values: map[string][]float64{}}
			index[pkg+" "+name] = br
			out = append(out, br)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			unit := f[i+1]
			if _, seen := br.values[unit]; !seen {
				br.units = append(br.units, unit)
			}
			br.values[unit] = append(br.values[unit], v)
		}
	}
	return out
}

// microTable shows the medians: time, bytes and allocations per op, and
// the benchmark's own metric (appends/s, msgs/s, ...) when it has one.
func microTable(results []*benchResult) table {
	t := table{Header: []string{"package", "benchmark", "time/op", "B/op", "allocs/op", "own metric", "runs"}}
	std := []string{"ns/op", "B/op", "allocs/op"}
	for _, r := range results {
		var own []string
		for _, u := range r.units {
			if !slices.Contains(std, u) && u != "MB/s" {
				own = append(own, fmtFloat(median(r.values[u]))+" "+u)
			}
		}
		t.Rows = append(t.Rows, []string{
			r.pkg, strings.TrimPrefix(r.name, "Benchmark"),
			fmtNs(r.values["ns/op"]), fmtCount(r.values["B/op"]), fmtCount(r.values["allocs/op"]),
			strings.Join(own, ", "), strconv.Itoa(len(r.values["ns/op"])),
		})
	}
	return t
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtNs(v []float64) string {
	if len(v) == 0 {
		return "—"
	}
	ns := median(v)
	switch {
	case ns < 1e3:
		return sig3(ns) + " ns"
	case ns < 1e6:
		return sig3(ns/1e3) + " µs"
	case ns < 1e9:
		return sig3(ns/1e6) + " ms"
	default:
		return sig3(ns/1e9) + " s"
	}
}

// sig3 shows three significant digits: enough to compare runs, no false
// precision.
func sig3(f float64) string {
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	default:
		return fmt.Sprintf("%.2f", f)
	}
}

func fmtCount(v []float64) string {
	if len(v) == 0 {
		return "—"
	}
	return fmtFloat(median(v))
}

func fmtFloat(f float64) string {
	if f >= 100 || f == float64(int64(f)) {
		return fmtInt(int64(f + 0.5))
	}
	return strconv.FormatFloat(f, 'f', 2, 64)
}
