package main

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// report is everything one harness run measured; BENCHMARKS.md is
// rendered from it, and results/bench.json holds it as data.
type report struct {
	Machine  machine    `json:"machine"`
	Quick    bool       `json:"quick"`
	Plot     bool       `json:"loadgen_plot"` // allezon loadgen had --plot
	Builds   []string   `json:"builds"`       // go build commands of the binaries run
	Started  time.Time  `json:"started"`
	Finished time.Time  `json:"finished"`
	Sections []*section `json:"sections"`
}

// section is one scenario's part of the report.
type section struct {
	Name     string   `json:"name"`
	Title    string   `json:"title"`
	Intro    []string `json:"intro,omitempty"` // paragraphs: what was run and why
	Rows     []row    `json:"rows,omitempty"`  // figures, with their targets
	Tables   []table  `json:"tables,omitempty"`
	Commands []string `json:"commands,omitempty"` // exactly as run
	Files    []string `json:"files,omitempty"`    // raw results, linked
	Images   []string `json:"images,omitempty"`   // plots, shown inline
	Notes    []string `json:"notes,omitempty"`
	Err      string   `json:"error,omitempty"` // why it could not measure
}

// row is one figure. Pass is nil for a figure without a target.
type row struct {
	Figure string `json:"figure"`
	Target string `json:"target"`
	Result string `json:"result"`
	Pass   *bool  `json:"pass,omitempty"`
}

// table is a free-form table (the micro-benchmarks' medians).
type table struct {
	Header []string   `json:"header"`
	Rows   [][]string `json:"rows"`
}

func (s *section) add(figure, target, result string, pass *bool) {
	s.Rows = append(s.Rows, row{Figure: figure, Target: target, Result: result, Pass: pass})
}

// fail records why the section could not measure, keeping what it has.
func (s *section) fail(err error) *section {
	if err != nil {
		s.Err = err.Error()
	}
	return s
}

func verdict(ok bool) *bool { return &ok }

func (r *report) errors() error {
	var errs []error
	for _, s := range r.Sections {
		if s.Err != "" {
			errs = append(errs, fmt.Errorf("%s: %s", s.Name, s.Err))
		}
	}
	return errors.Join(errs...)
}

// markdown renders the report; links are relative to out's directory.
func (r *report) markdown(out, results, root string) ([]byte, error) {
	var b bytes.Buffer
	link := func(path string) string {
		rel, err := relativeTo(out, path)
		if err != nil {
			rel = path
		}
		return rel
	}
	b.WriteString("# Benchmarks\n\n")
	if r.Quick {
		b.WriteString("> **QUICK MODE: not a benchmark.** Every scenario was scaled down to a few seconds to check the harness; the figures below mean nothing.\n\n")
	}
	fmt.Fprintf(&b, "Written by `make bench` (the harness in [`bench/`](%s)) from the run below; do not edit by hand, run it again. Raw reports are in [`%s`](%s).\n\n",
		link(filepath.Join(root, "bench")), filepath.ToSlash(results), link(results))
	b.WriteString("Latency quantiles are loadgen's: each is the upper bound of a histogram bucket about 3 % wide. " +
		"Every scenario ran alone, against freshly started processes on loopback with fresh data directories.\n\n")
	r.writeMachine(&b)
	r.writeSummary(&b)
	for i, s := range r.Sections {
		s.writeMarkdown(&b, i+1, link)
	}
	return b.Bytes(), nil
}

func (r *report) writeMachine(b *bytes.Buffer) {
	m := r.Machine
	b.WriteString("## Machine\n\n| | |\n|---|---|\n")
	fmt.Fprintf(b, "| CPUs (nproc) | %d |\n", m.CPUs)
	fmt.Fprintf(b, "| CPU model | %s |\n", cell(m.CPUModel))
	fmt.Fprintf(b, "| memory | %s |\n", fmtBytes(m.MemoryBytes))
	fmt.Fprintf(b, "| kernel | %s |\n", cell(m.Kernel))
	fmt.Fprintf(b, "| Go | %s |\n", cell(m.GoVersion))
	dirty := "clean tree"
	if m.Dirty {
		dirty = "**dirty tree**: uncommitted changes were benchmarked"
	}
	fmt.Fprintf(b, "| commit | `%s` (%s) |\n", m.Commit, dirty)
	fmt.Fprintf(b, "| date | %s, %s in all |\n", r.Started.Format("2006-01-02 15:04 UTC"), r.Finished.Sub(r.Started).Round(time.Second))
	fmt.Fprintf(b, "| load average (1 min) before starting | %.2f |\n\n", m.Load1)
	if m.Load1 > busyLoad {
		fmt.Fprintf(b, "> **Warning: numbers from a busy machine.** The 1-minute load average was %.2f before the run started (above %.1f): other work shared the CPUs, so throughput may be understated and latencies overstated.\n\n", m.Load1, busyLoad)
	}
	if len(r.Builds) > 0 {
		b.WriteString("The binaries were built into a temporary directory, removed after the run, which the commands below name:\n\n```sh\n" +
			strings.Join(r.Builds, "\n") + "\n```\n\n")
	}
}

// writeSummary puts every missed target first, in plain words.
func (r *report) writeSummary(b *bytes.Buffer) {
	met, total := 0, 0
	var missed []string
	for _, s := range r.Sections {
		if s.Err != "" {
			missed = append(missed, fmt.Sprintf("- **Not measured: %s.** %s", s.Title, firstLine(s.Err)))
		}
		for _, rw := range s.Rows {
			if rw.Pass == nil {
				continue
			}
			total++
			if *rw.Pass {
				met++
				continue
			}
			missed = append(missed, fmt.Sprintf("- **Missed: %s, %s:** measured %s, target %s.", s.Title, rw.Figure, rw.Result, rw.Target))
		}
	}
	b.WriteString("## Summary\n\n")
	if total == 0 {
		b.WriteString("No target was judged in this run.\n")
	} else {
		fmt.Fprintf(b, "%d of %d targets met.\n", met, total)
	}
	if len(missed) > 0 {
		b.WriteString("\n" + strings.Join(missed, "\n") + "\n")
	}
	b.WriteString("\n")
}

func (s *section) writeMarkdown(b *bytes.Buffer, n int, link func(string) string) {
	fmt.Fprintf(b, "## %d. %s\n\n", n, s.Title)
	for _, p := range s.Intro {
		b.WriteString(p + "\n\n")
	}
	if s.Err != "" {
		fmt.Fprintf(b, "**Not measured:** %s\n\n", fenceless(s.Err))
	}
	if len(s.Rows) > 0 {
		b.WriteString("| figure | target | result | verdict |\n|---|---|---|---|\n")
		for _, r := range s.Rows {
			v := "—"
			if r.Pass != nil {
				v = map[bool]string{true: "pass", false: "**FAIL**"}[*r.Pass]
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s |\n", cell(r.Figure), cell(r.Target), cell(r.Result), v)
		}
		b.WriteString("\n")
	}
	for _, t := range s.Tables {
		writeTable(b, t)
	}
	for _, note := range s.Notes {
		b.WriteString(note + "\n\n")
	}
	if len(s.Commands) > 0 {
		b.WriteString("Commands, as run:\n\n```sh\n" + strings.Join(s.Commands, "\n") + "\n```\n\n")
	}
	if len(s.Files) > 0 {
		var links []string
		for _, f := range s.Files {
			links = append(links, fmt.Sprintf("[%s](%s)", filepath.Base(f), link(f)))
		}
		b.WriteString("Results: " + strings.Join(links, ", ") + "\n\n")
	}
	for _, img := range s.Images {
		fmt.Fprintf(b, "![%s](%s)\n\n", filepath.Base(img), link(img))
	}
}

func writeTable(b *bytes.Buffer, t table) {
	b.WriteString("| " + strings.Join(t.Header, " | ") + " |\n|")
	b.WriteString(strings.Repeat("---|", len(t.Header)) + "\n")
	for _, r := range t.Rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = cell(c)
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	b.WriteString("\n")
}

// cell keeps a value from breaking a Markdown table row.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}

// fenceless puts a multi-line error in a code block, a one-line one inline.
func fenceless(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	return "\n\n```\n" + s + "\n```"
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// relativeTo is path as a link from the directory holding file.
func relativeTo(file, path string) (string, error) {
	absFile, err := filepath.Abs(file)
	if err != nil {
		return "", err
	}
	absPath, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(filepath.Dir(absFile), absPath)
	return filepath.ToSlash(rel), err
}

// Figures, formatted for people.

func fmtInt(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

func fmtRate(perSec float64) string { return fmtInt(int64(perSec+0.5)) + " tags/s" }

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d >= time.Minute:
		return d.Round(time.Second).String()
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// fmtLimit is a target's round figure without trailing zeros: "50 ms".
func fmtLimit(d time.Duration) string {
	s := fmtDur(d)
	num, unit, _ := strings.Cut(s, " ")
	if strings.Contains(num, ".") {
		num = strings.TrimRight(strings.TrimRight(num, "0"), ".")
	}
	return num + " " + unit
}

func fmtBytes(n int64) string {
	switch {
	case n == 1<<30:
		return "1 GiB"
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	default:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
}

func fmtPct(f float64) string { return fmt.Sprintf("%.1f %%", 100*f) }
