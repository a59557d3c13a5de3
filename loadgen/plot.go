package loadgen

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// The plot is for an operator who wants to see at a glance whether the
// run held its rate and latency, and when it did not: two panels share
// the time axis, throughput above (a stall is a drop to zero, shaded)
// and p99 latency below on a log scale against SPEC.md's limit.

// PlotWidth and PlotHeight are the size of a PNG plot in pixels (at 96
// dpi; vector formats get the same size in points × 4/3).
const (
	PlotWidth  = 1400
	PlotHeight = 900
	plotDPI    = 96
)

// Plot colours: one per endpoint, and what marks trouble.
var (
	colorTags       = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colorProfiles   = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colorAggregates = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colorErrors     = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colorLimit      = color.RGBA{R: 0x80, G: 0x00, B: 0x00, A: 0xff}
	colorOutage     = color.NRGBA{R: 0xff, G: 0xa0, B: 0x20, A: 0x50}
	colorStall      = color.NRGBA{R: 0x80, G: 0x80, B: 0x80, A: 0x60}
	colorPhase      = color.Gray{Y: 0x60}
)

// series is one line of a panel: y per second of the timeline, NaN where
// there is nothing to show (a gap in the line).
type series struct {
	name  string
	color color.Color
	xy    plotter.XYs
}

// span is [From, To) in seconds since the start.
type span struct{ From, To float64 }

// WritePlot draws the timeline to path, in the format its extension
// names: .png (PlotWidth × PlotHeight pixels), .svg, .pdf, .jpg, ...
func (r *Report) WritePlot(path string) error {
	format := strings.ToLower(strings.TrimPrefix(filepath.Ext(path), "."))
	if format == "" {
		return fmt.Errorf("plot %s: no extension to choose the format by (.png, .svg, .pdf)", path)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := r.DrawPlot(f, format); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// DrawPlot writes the plot to w in format ("png", "svg", "pdf", ...).
func (r *Report) DrawPlot(w io.Writer, format string) (err error) {
	defer func() {
		// gonum/plot reports some impossible layouts by panicking.
		if p := recover(); p != nil {
			err = fmt.Errorf("plot: %v", p)
		}
	}()
	width := vg.Length(PlotWidth) / plotDPI * vg.Inch
	height := vg.Length(PlotHeight) / plotDPI * vg.Inch
	cw, err := draw.NewFormattedCanvas(width, height, format)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	top, topLegend, err := r.throughputPanel()
	if err != nil {
		return err
	}
	bottom, bottomLegend, err := r.latencyPanel()
	if err != nil {
		return err
	}
	layout(draw.New(cw), [2]*plot.Plot{top, bottom}, [2]*plot.Legend{topLegend, bottomLegend})
	if _, err := cw.WriteTo(w); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// layout stacks the two panels with aligned data areas on the left and
// puts each panel's legend in a column on the right, beside its panel,
// where it cannot hide a line.
func layout(dc draw.Canvas, panels [2]*plot.Plot, legends [2]*plot.Legend) {
	const legendWidth = 3.3 * vg.Inch
	left := draw.Crop(dc, 0, -legendWidth, 0, 0)
	pad := vg.Points(10)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: pad, PadBottom: pad, PadLeft: pad, PadRight: pad, PadY: vg.Points(18)}
	cs := plot.Align([][]*plot.Plot{{panels[0]}, {panels[1]}}, tiles, left)
	for i, p := range panels {
		p.Draw(cs[i][0])
		data := p.DataCanvas(cs[i][0])
		legends[i].Draw(draw.Canvas{Canvas: dc.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: data.Max.X + 2*pad, Y: data.Min.Y},
			Max: vg.Point{X: dc.Max.X - pad, Y: data.Max.Y},
		}})
	}
}

// newLegend is a legend drawn from the top left of its column.
func newLegend() *plot.Legend {
	l := plot.NewLegend()
	l.Top, l.Left = true, true
	l.Padding = vg.Points(3)
	l.TextStyle.Font.Size = vg.Points(11)
	return &l
}

// throughputPanel draws answers per second (tags acknowledged, queries
// answered right), errors per second if any, and shades declared outages
// and stalls.
func (r *Report) throughputPanel() (*plot.Plot, *plot.Legend, error) {
	p, leg := plot.New(), newLegend()
	p.Title.Text = r.plotTitle()
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Y.Label.Text = "per second"
	p.Y.Tick.Marker = plainTicks{}
	p.X.Label.Text = "seconds since start"
	p.Add(plotter.NewGrid())
	ss := throughputSeries(r.Timeline)
	yMax := 1.0
	for _, s := range ss {
		for _, pt := range s.xy {
			yMax = max(yMax, pt.Y)
		}
	}
	yMax *= 1.1
	if err := r.addSpans(p, leg, 0, yMax); err != nil {
		return nil, nil, err
	}
	lines := make([]plot.Plotter, len(ss))
	for i, s := range ss {
		l, err := plotter.NewLine(s.xy)
		if err != nil {
			return nil, nil, fmt.Errorf("plot %s: %w", s.name, err)
		}
		l.StepStyle = plotter.PostStep
		l.Color, l.Width = s.color, vg.Points(1.5)
		lines[i] = l
		leg.Add(s.name, l)
	}
	// Errors (last) go underneath: mostly zero, they would hide the
	// query lines near zero.
	slices.Reverse(lines)
	p.Add(lines...)
	r.setX(p) // after Add, which widens the axes to the data
	p.Y.Min, p.Y.Max = 0, yMax
	return p, leg, nil
}

// latencyPanel draws the p99 of each second per endpoint on a log scale,
// with SPEC.md's limits as dashed lines.
func (r *Report) latencyPanel() (*plot.Plot, *plot.Legend, error) {
	p, leg := plot.New(), newLegend()
	p.Y.Label.Text = "p99 latency (log scale)"
	p.X.Label.Text = "seconds since start"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = durationLogTicks{}
	p.Add(plotter.NewGrid())
	ss := latencySeries(r.Timeline)
	lo, hi := latencyRange(ss)
	if err := r.addSpans(p, leg, lo, hi); err != nil {
		return nil, nil, err
	}
	for _, s := range ss {
		if err := addGappedLine(p, leg, s); err != nil {
			return nil, nil, err
		}
	}
	limits := []struct {
		d    time.Duration
		name string
	}{{TagLimit, "SPEC limit 200 ms (tags, profiles)"}, {AggregateLimit, "SPEC limit 60 s (aggregates)"}}
	for _, lim := range limits {
		ms := durationMs(lim.d)
		if ms > hi {
			continue
		}
		l, err := r.horizontal(ms)
		if err != nil {
			return nil, nil, err
		}
		l.Color, l.Width, l.Dashes = colorLimit, vg.Points(1.2), []vg.Length{vg.Points(6), vg.Points(4)}
		p.Add(l)
		leg.Add(lim.name, l)
	}
	r.setX(p)
	p.Y.Min, p.Y.Max = lo, hi
	return p, leg, nil
}

// setX gives a panel the run's time axis, the same for both.
func (r *Report) setX(p *plot.Plot) {
	p.X.Min, p.X.Max = 0, float64(max(len(r.Timeline), 1))
}

// horizontal is a line across the run at y.
func (r *Report) horizontal(y float64) (*plotter.Line, error) {
	return plotter.NewLine(plotter.XYs{{X: 0, Y: y}, {X: float64(max(len(r.Timeline), 1)), Y: y}})
}

// addSpans shades declared outages and stalls from y0 to y1, and marks
// the end of the sending phase.
func (r *Report) addSpans(p *plot.Plot, leg *plot.Legend, y0, y1 float64) error {
	shades := []struct {
		name  string
		color color.Color
		spans []span
	}{
		{"declared outage", colorOutage, r.outageSpans()},
		{"stall: no tag acknowledged", colorStall, stallSpans(r)},
	}
	for _, sh := range shades {
		for i, s := range sh.spans {
			poly, err := plotter.NewPolygon(plotter.XYs{{X: s.From, Y: y0}, {X: s.To, Y: y0}, {X: s.To, Y: y1}, {X: s.From, Y: y1}})
			if err != nil {
				return fmt.Errorf("plot %s: %w", sh.name, err)
			}
			poly.Color, poly.LineStyle.Width = sh.color, 0
			p.Add(poly)
			if i == 0 {
				leg.Add(sh.name, poly)
			}
		}
	}
	if end := r.Elapsed.Seconds(); len(r.Timeline) > int(math.Ceil(end)) {
		l, err := plotter.NewLine(plotter.XYs{{X: end, Y: y0}, {X: end, Y: y1}})
		if err != nil {
			return fmt.Errorf("plot end of sending: %w", err)
		}
		l.Color, l.Width, l.Dashes = colorPhase, vg.Points(1), []vg.Length{vg.Points(2), vg.Points(3)}
		p.Add(l)
		leg.Add("end of sending (queries only after)", l)
	}
	return nil
}

// addGappedLine draws s as one line per run of defined points (a lone
// point as a dot), with one legend entry.
func addGappedLine(p *plot.Plot, leg *plot.Legend, s series) error {
	style := draw.LineStyle{Color: s.color, Width: vg.Points(1.5)}
	var thumb plot.Thumbnailer
	for _, run := range splitRuns(s.xy) {
		if len(run) == 1 {
			sc, err := plotter.NewScatter(run)
			if err != nil {
				return fmt.Errorf("plot %s: %w", s.name, err)
			}
			sc.GlyphStyle = draw.GlyphStyle{Color: s.color, Radius: vg.Points(2.5), Shape: draw.CircleGlyph{}}
			p.Add(sc)
			continue
		}
		l, err := plotter.NewLine(run)
		if err != nil {
			return fmt.Errorf("plot %s: %w", s.name, err)
		}
		l.LineStyle = style
		p.Add(l)
		thumb = l
	}
	if thumb == nil {
		thumb = &plotter.Line{LineStyle: style}
	}
	leg.Add(s.name, thumb)
	return nil
}

// splitRuns cuts xy at its NaN points.
func splitRuns(xy plotter.XYs) []plotter.XYs {
	var runs []plotter.XYs
	start := 0
	for i := 0; i <= len(xy); i++ {
		if i < len(xy) && !math.IsNaN(xy[i].Y) {
			continue
		}
		if i > start {
			runs = append(runs, xy[start:i])
		}
		start = i + 1
	}
	return runs
}

// throughputSeries are the step lines of the top panel: x is the start of
// the second, and a last point at the end closes the last step.
func throughputSeries(tl []Second) []series {
	ss := []series{
		{name: "tags acknowledged/s", color: colorTags},
		{name: "/user_profiles answered right/s", color: colorProfiles},
		{name: "/aggregates answered right/s", color: colorAggregates},
		{name: "errors/s, all endpoints (outages too)", color: colorErrors},
	}
	anyErr := false
	for _, s := range tl {
		var errs int64
		for i, st := range s.endpoints() {
			ss[i].xy = append(ss[i].xy, plotter.XY{X: float64(s.At), Y: float64(st.OK)})
			errs += st.Errors + st.OutageErrors
		}
		ss[3].xy = append(ss[3].xy, plotter.XY{X: float64(s.At), Y: float64(errs)})
		anyErr = anyErr || errs > 0
	}
	if !anyErr {
		ss = ss[:3]
	}
	for i := range ss {
		if n := len(ss[i].xy); n > 0 {
			ss[i].xy = append(ss[i].xy, plotter.XY{X: float64(len(tl)), Y: ss[i].xy[n-1].Y})
		}
	}
	return ss
}

// latencySeries are the p99 lines of the bottom panel, in ms at the
// middle of each second; NaN where nothing was answered.
func latencySeries(tl []Second) []series {
	ss := []series{
		{name: "POST /user_tags p99", color: colorTags},
		{name: "POST /user_profiles p99", color: colorProfiles},
		{name: "POST /aggregates p99", color: colorAggregates},
	}
	for _, s := range tl {
		for i, st := range s.endpoints() {
			y := math.NaN()
			if st.P99 > 0 {
				y = durationMs(st.P99)
			}
			ss[i].xy = append(ss[i].xy, plotter.XY{X: float64(s.At) + 0.5, Y: y})
		}
	}
	return ss
}

// latencyRange is the log axis' extent in ms: whole decades around every
// point and the 200 ms limit, so that at least two ticks are labelled.
func latencyRange(ss []series) (lo, hi float64) {
	lo, hi = math.Inf(1), durationMs(TagLimit)
	for _, s := range ss {
		for _, pt := range s.xy {
			if !math.IsNaN(pt.Y) {
				lo, hi = min(lo, pt.Y), max(hi, pt.Y)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo = 0.1
	}
	return math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi*1.2)))
}

// outageSpans are the declared outage windows, in seconds.
func (r *Report) outageSpans() []span {
	out := make([]span, 0, len(r.Outages))
	end := float64(max(len(r.Timeline), 1))
	for _, w := range r.Outages {
		from, to := w.From.Seconds(), min(w.To.Seconds(), end)
		if to > from {
			out = append(out, span{from, to})
		}
	}
	return out
}

// stallSpans are the runs of whole seconds of the sending phase in which
// no tag was acknowledged: the server (or the path to it) stalled. At a
// target below 2 tags/s such seconds are normal and none is marked.
func stallSpans(r *Report) []span {
	if r.Rate == 1 {
		return nil
	}
	full := min(int(r.Elapsed/time.Second), len(r.Timeline))
	var out []span
	for i := 0; i < full; i++ {
		if r.Timeline[i].TagsAcked != 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].To == float64(i) {
			out[n-1].To++
		} else {
			out = append(out, span{float64(i), float64(i + 1)})
		}
	}
	return out
}

// plotTitle names the run and its verdict.
func (r *Report) plotTitle() string {
	return fmt.Sprintf("allezon loadgen %s — %s\nseed %d, target %s, %d conns, %s sending + %s settle, %d tags acknowledged",
		r.verdictText(), r.BaseURL, r.Seed, rateText(r.Rate), r.Conns, r.Elapsed.Round(time.Second),
		r.Settle.Round(time.Second), r.TagsAcked)
}

// verdictText is OK, or FAILED with what failed it.
func (r *Report) verdictText() string {
	var errs, mism int64
	for _, e := range r.endpoints() {
		errs += e.ErrorCount()
		mism += e.Mismatches
	}
	var why []string
	if errs > 0 {
		why = append(why, fmt.Sprintf("%d errors", errs))
	}
	if mism > 0 {
		why = append(why, fmt.Sprintf("%d mismatches", mism))
	}
	if r.Unacknowledged > 0 {
		why = append(why, fmt.Sprintf("%d tags never acknowledged", r.Unacknowledged))
	}
	v := "OK"
	if !r.OK() {
		v = "FAILED (" + strings.Join(why, ", ") + ")"
	}
	if r.Interrupted {
		v += ", interrupted"
	}
	return v
}

func durationMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// plainTicks are the default ticks labelled without trailing zeros
// ("500", not "500.00").
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', -1, 64)
		}
	}
	return ticks
}

// durationLogTicks marks a log axis in ms: a labelled tick at each
// decade ("0.1 ms", "10 ms", "1 s"), minor ones between. (plot.LogTicks
// skips the lowest decade when it is below 1.)
type durationLogTicks struct{}

func (durationLogTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for d := math.Floor(math.Log10(lo)); d <= math.Ceil(math.Log10(hi)); d++ {
		decade := math.Pow(10, d)
		ticks = append(ticks, plot.Tick{Value: decade, Label: msLabel(decade)})
		for m := 2.0; m < 10; m++ {
			ticks = append(ticks, plot.Tick{Value: m * decade})
		}
	}
	return ticks
}

// msLabel writes ms, a power of ten, as a duration.
func msLabel(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%g s", ms/1000)
	}
	return fmt.Sprintf("%g ms", ms)
}
