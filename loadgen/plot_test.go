package loadgen

import (
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"gonum.org/v1/plot/plotter"
)

// synthReport is a 20 s run at 500 tags/s (15 s sending, 5 s settle)
// whose server stalls in seconds stalls (nothing answered), with a
// declared outage at 3–5 s and errors in second 4.
func synthReport(stalls ...int64) *Report {
	r := &Report{
		BaseURL: "http://127.0.0.1:8088", Seed: 7, Rate: 500, Conns: 8,
		Elapsed: 15 * time.Second, Settle: 5 * time.Second,
		Outages: []Window{{From: 3 * time.Second, To: 5 * time.Second}},
	}
	for s := range int64(20) {
		sec := Second{At: s}
		if !slices.Contains(stalls, s) {
			if s < 15 {
				sec.Tags = SecondStats{Requests: 500, OK: 500, P99: time.Duration(3+s) * time.Millisecond}
			}
			sec.Profiles = SecondStats{Requests: 50, OK: 50, P99: 2 * time.Millisecond}
			if s%2 == 0 {
				sec.Aggregates = SecondStats{Requests: 1, OK: 1, P99: 30 * time.Millisecond}
			}
		}
		if s == 4 {
			sec.Tags.OK, sec.Tags.OutageErrors = 300, 200
		}
		sec.TagsAcked = sec.Tags.OK
		r.Timeline = append(r.Timeline, sec)
	}
	r.TagsSent, r.TagsAcked = 7500, 7000
	return r
}

func TestWritePlotPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.png")
	if err := synthReport(8, 9).WritePlot(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != PlotWidth || b.Dy() != PlotHeight {
		t.Errorf("PNG is %d×%d, want %d×%d", b.Dx(), b.Dy(), PlotWidth, PlotHeight)
	}
	// Something was drawn: the plot's colours, not a blank page.
	colours := make(map[[4]uint32]bool)
	for y := 0; y < img.Bounds().Dy(); y += 3 {
		for x := 0; x < img.Bounds().Dx(); x += 3 {
			r, g, b, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, b, a}] = true
		}
	}
	if len(colours) < 10 {
		t.Errorf("the PNG has %d colours: nothing drawn?", len(colours))
	}
}

func TestWritePlotFormats(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		ok   bool
	}{{"run.svg", true}, {"run.pdf", true}, {"run", false}, {"run.xyz", false}}
	for _, tt := range tests {
		err := synthReport().WritePlot(filepath.Join(dir, tt.name))
		if (err == nil) != tt.ok {
			t.Errorf("WritePlot(%s): %v, want success %v", tt.name, err, tt.ok)
		}
	}
	if err := (&Report{}).WritePlot(filepath.Join(dir, "empty.png")); err != nil {
		t.Errorf("a report without timeline: %v", err)
	}
}

// TestPlotShowsStall: a second with nothing answered is a zero in the
// throughput lines, a gap in the latency lines, and a shaded stall when
// it falls in the sending phase.
func TestPlotShowsStall(t *testing.T) {
	tests := []struct {
		name   string
		stalls []int64
		rate   int
		want   []span
	}{
		{"no stall", nil, 500, nil},
		{"two seconds while sending", []int64{8, 9}, 500, []span{{8, 10}}},
		{"two apart, first second", []int64{0, 12}, 0, []span{{0, 1}, {12, 13}}},
		{"settle sends no tags", []int64{17}, 500, nil},
		{"one tag a second may miss a second", []int64{8}, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := synthReport(tt.stalls...)
			r.Rate = tt.rate
			if got := stallSpans(r); !slices.Equal(got, tt.want) {
				t.Errorf("stall spans %v, want %v", got, tt.want)
			}
			thr, lat := throughputSeries(r.Timeline), latencySeries(r.Timeline)
			if len(thr) != 4 || len(lat) != 3 {
				t.Fatalf("%d throughput and %d latency series, want 4 (errors in second 4) and 3", len(thr), len(lat))
			}
			for _, s := range tt.stalls {
				for _, ser := range thr[:3] {
					if y := yAt(ser.xy, float64(s)); y != 0 {
						t.Errorf("%s at %d s = %v, want 0", ser.name, s, y)
					}
				}
				for _, ser := range lat {
					if y := yAt(ser.xy, float64(s)+0.5); !math.IsNaN(y) {
						t.Errorf("%s at %d s = %v, want a gap", ser.name, s, y)
					}
				}
			}
			if y := yAt(thr[0].xy, 5); !slices.Contains(tt.stalls, 5) && y != 500 {
				t.Errorf("tags at 5 s = %v, want 500", y)
			}
			if y := yAt(thr[3].xy, 4); y != 200 {
				t.Errorf("errors at 4 s = %v, want 200", y)
			}
		})
	}
}

// yAt is the y of the point at x (-1 if none).
func yAt(xy plotter.XYs, x float64) float64 {
	for _, p := range xy {
		if p.X == x {
			return p.Y
		}
	}
	return -1
}

func TestSplitRuns(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		ys   []float64
		want [][]float64
	}{
		{nil, nil},
		{[]float64{nan, nan}, nil},
		{[]float64{1, 2, 3}, [][]float64{{1, 2, 3}}},
		{[]float64{nan, 1, nan, nan, 2, 3, nan}, [][]float64{{1}, {2, 3}}},
	}
	for _, tt := range tests {
		var xy plotter.XYs
		for i, y := range tt.ys {
			xy = append(xy, plotter.XY{X: float64(i), Y: y})
		}
		var got [][]float64
		for _, run := range splitRuns(xy) {
			var ys []float64
			for _, p := range run {
				ys = append(ys, p.Y)
			}
			got = append(got, ys)
		}
		if !slices.EqualFunc(got, tt.want, slices.Equal) {
			t.Errorf("splitRuns(%v) = %v, want %v", tt.ys, got, tt.want)
		}
	}
}

func TestLatencyRange(t *testing.T) {
	tests := []struct {
		name   string
		ys     []float64
		lo, hi float64
	}{
		{"no answers", []float64{math.NaN()}, 0.1, 1000},
		{"fast", []float64{0.35, 4}, 0.1, 1000},
		{"a slow second", []float64{2, 1500}, 1, 10000},
	}
	for _, tt := range tests {
		var xy plotter.XYs
		for i, y := range tt.ys {
			xy = append(xy, plotter.XY{X: float64(i), Y: y})
		}
		lo, hi := latencyRange([]series{{xy: xy}})
		if math.Abs(lo-tt.lo) > 1e-9*tt.lo || math.Abs(hi-tt.hi) > 1e-9*tt.hi {
			t.Errorf("%s: range %v–%v ms, want %v–%v", tt.name, lo, hi, tt.lo, tt.hi)
		}
	}
}

func TestDurationLogTicks(t *testing.T) {
	tests := []struct {
		lo, hi float64
		labels []string
	}{
		{0.1, 1000, []string{"0.1 ms", "1 ms", "10 ms", "100 ms", "1 s"}},
		{1, 100000, []string{"1 ms", "10 ms", "100 ms", "1 s", "10 s", "100 s"}},
	}
	for _, tt := range tests {
		var labels []string
		for _, tick := range (durationLogTicks{}).Ticks(tt.lo, tt.hi) {
			if tick.Label != "" {
				labels = append(labels, tick.Label)
			}
		}
		if !slices.Equal(labels, tt.labels) {
			t.Errorf("ticks %v–%v ms labelled %q, want %q", tt.lo, tt.hi, labels, tt.labels)
		}
	}
}
