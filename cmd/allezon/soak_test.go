//go:build soak

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/allezon/allezon/loadgen"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// TestSoak (make soak) runs allezon all for ALLEZON_SOAK_DURATION (30m) at
// ALLEZON_SOAK_RATE (5,000) tags/s with SPEC's query mix, samples the
// process's memory and goroutines every 10 s from /metrics, and fails on
// any error or mismatch, or when memory or goroutines grow after the
// warm-up. The embedded broker keeps 10 minutes of events
// (--events-retention 10m): its in-memory index grows with the events it
// holds (~6 bytes each), so memory is flat only once retention trims as
// fast as tags arrive. Results go to bench/results/soak*.
func TestSoak(t *testing.T) {
	duration := envDuration(t, "ALLEZON_SOAK_DURATION", 30*time.Minute)
	rate := 5000
	if s := os.Getenv("ALLEZON_SOAK_RATE"); s != "" {
		var err error
		if rate, err = strconv.Atoi(s); err != nil {
			t.Fatalf("ALLEZON_SOAK_RATE: %v", err)
		}
	}
	out := os.Getenv("ALLEZON_SOAK_OUT")
	if out == "" {
		out = filepath.Join("..", "..", "bench", "results")
	}
	addr := freeAddr(t)
	start(t, "all", "all", "--http", addr, "--data", t.TempDir(), "--events-retention", "10m")
	waitHealthy(t, addr)

	ctx, cancel := context.WithCancel(context.Background())
	samples := make(chan []sample, 1)
	go func() { samples <- sampleMetrics(ctx, addr, 10*time.Second) }()
	rep, err := loadgen.Run(context.Background(), loadgen.Config{
		BaseURL: "http://" + addr, Seed: 99, Rate: rate, Duration: duration, Settle: 70 * time.Second,
	})
	cancel()
	ss := <-samples
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	rep.WriteText(&text)
	t.Log("\n" + text.String())
	if err := rep.WritePlot(filepath.Join(out, "soak.png")); err != nil {
		t.Error(err)
	}
	if err := plotSamples(ss, filepath.Join(out, "soak-memory.png")); err != nil {
		t.Error(err)
	}
	if b, err := json.MarshalIndent(map[string]any{"report": rep, "samples": ss}, "", " "); err == nil {
		if err := os.WriteFile(filepath.Join(out, "soak.json"), b, 0o644); err != nil {
			t.Error(err)
		}
	}
	if !rep.OK() {
		t.Error("the soak replay had errors or mismatches")
	}
	checkFlat(t, ss, duration)
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// sample is one reading of the server's own process metrics.
type sample struct {
	At         time.Duration `json:"at_ns"`
	RSS        float64       `json:"rss_bytes"`
	HeapInuse  float64       `json:"heap_inuse_bytes"`
	Goroutines float64       `json:"goroutines"`
}

func sampleMetrics(ctx context.Context, addr string, every time.Duration) []sample {
	began := time.Now()
	var out []sample
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if s, err := readSample(addr); err == nil {
			s.At = time.Since(began)
			out = append(out, s)
		}
		select {
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
	}
}

func readSample(addr string) (sample, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	var s sample
	fields := map[string]*float64{
		"process_resident_memory_bytes": &s.RSS,
		"go_memstats_heap_inuse_bytes":  &s.HeapInuse,
		"go_goroutines":                 &s.Goroutines,
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if p := fields[name]; ok && p != nil {
			*p, _ = strconv.ParseFloat(value, 64)
		}
	}
	return s, sc.Err()
}

// checkFlat compares the first and the last tenth of the run after a
// warm-up of 40 % (the caches, memtables and the broker's retention fill
// up in it): medians of RSS and heap may grow by 15 %, goroutines by 32.
func checkFlat(t *testing.T, ss []sample, duration time.Duration) {
	t.Helper()
	warm, tenth := duration*4/10, duration/10
	window := func(from, to time.Duration, f func(sample) float64) float64 {
		var v []float64
		for _, s := range ss {
			if s.At >= from && s.At < to {
				v = append(v, f(s))
			}
		}
		if len(v) == 0 {
			t.Fatalf("no samples between %v and %v", from, to)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	checks := []struct {
		name      string
		f         func(sample) float64
		ratio, by float64
	}{
		{"RSS", func(s sample) float64 { return s.RSS }, 1.15, 0},
		{"heap in use", func(s sample) float64 { return s.HeapInuse }, 1.15, 0},
		{"goroutines", func(s sample) float64 { return s.Goroutines }, 1, 32},
	}
	for _, c := range checks {
		early := window(warm, warm+tenth, c.f)
		late := window(duration-tenth, duration, c.f)
		t.Logf("%s: median %.0f after the warm-up, %.0f at the end", c.name, early, late)
		if late > early*c.ratio+c.by {
			t.Errorf("%s grew from %.0f to %.0f", c.name, early, late)
		}
	}
}

// plotSamples draws RSS, heap and goroutines over the run.
func plotSamples(ss []sample, path string) error {
	p := plot.New()
	p.Title.Text = "allezon all under the soak: memory (MiB) and goroutines"
	p.X.Label.Text = "minutes"
	lines := []struct {
		name string
		f    func(sample) float64
	}{
		{"RSS MiB", func(s sample) float64 { return s.RSS / (1 << 20) }},
		{"heap in use MiB", func(s sample) float64 { return s.HeapInuse / (1 << 20) }},
		{"goroutines", func(s sample) float64 { return s.Goroutines }},
	}
	for i, l := range lines {
		xy := make(plotter.XYs, len(ss))
		for j, s := range ss {
			xy[j] = plotter.XY{X: s.At.Minutes(), Y: l.f(s)}
		}
		line, err := plotter.NewLine(xy)
		if err != nil {
			return fmt.Errorf("plot %s: %w", l.name, err)
		}
		line.Color = plotter.DefaultLineStyle.Color
		line.Dashes = [][]vg.Length{nil, {vg.Points(4), vg.Points(2)}, {vg.Points(1), vg.Points(2)}}[i]
		p.Add(line)
		p.Legend.Add(l.name, line)
	}
	p.Legend.Top = true
	return p.Save(10*vg.Inch, 4*vg.Inch, path)
}
