package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// maxExamples is how many mismatches a report shows in full.
const maxExamples = 3

// Report is the outcome of a run.
type Report struct {
	BaseURL string    `json:"base_url"`
	Seed    int64     `json:"seed"`
	Start   time.Time `json:"start"` // event time of tag 0
	Rate    int       `json:"target_rate"`
	Conns   int       `json:"conns"`

	// Elapsed is the sending phase; Settle the query-only phase after it.
	Elapsed      time.Duration `json:"elapsed_ns"`
	Settle       time.Duration `json:"settle_ns"`
	AchievedRate float64       `json:"achieved_rate"` // tags posted per second while sending

	TagsSent       int64 `json:"tags_sent"`  // distinct tags posted at least once
	TagsAcked      int64 `json:"tags_acked"` // distinct tags that got their 204
	Retries        int64 `json:"retries"`    // extra attempts of failed tags
	Unacknowledged int64 `json:"unacknowledged"`
	Interrupted    bool  `json:"interrupted"` // the context ended the run early

	Tags       EndpointReport `json:"user_tags"`
	Profiles   EndpointReport `json:"user_profiles"`
	Aggregates EndpointReport `json:"aggregates"`

	// Outages are the declared outage windows (Config.Outages).
	Outages []Window `json:"outages,omitempty"`
	// Timeline has one entry per second of the run, sending and settle
	// (and retry grace), from its start; it is in the JSON report and the
	// plot, not in the text. TimelineTruncated says the run outlasted
	// maxTimelineSecs (9 h 6 min) and later seconds are missing.
	Timeline          []Second `json:"timeline"`
	TimelineTruncated bool     `json:"timeline_truncated,omitempty"`
}

// EndpointReport is one endpoint's share of a report.
type EndpointReport struct {
	Requests int64 `json:"requests"`
	OK       int64 `json:"ok"`
	// Errors counts failed requests by kind ("status 500", "timeout",
	// "connection refused", ...); OutageErrors those inside a declared
	// outage window, which do not fail the verdict.
	Errors       map[string]int64 `json:"errors,omitempty"`
	OutageErrors map[string]int64 `json:"outage_errors,omitempty"`
	// TimeOuts counts requests slower than SPEC.md's limit for the
	// endpoint, answered or not (OutageTimeOuts: inside an outage window).
	TimeOuts       int64          `json:"timeouts"`
	OutageTimeOuts int64          `json:"outage_timeouts"`
	Limit          time.Duration  `json:"limit_ns"`
	Latency        LatencySummary `json:"latency"`

	// Queries only.
	Compared   int64            `json:"compared,omitempty"`  // answers checked against the model
	NonEmpty   int64            `json:"non_empty,omitempty"` // of those, with a non-empty expected answer
	Mismatches int64            `json:"mismatches,omitempty"`
	Examples   []Mismatch       `json:"mismatch_examples,omitempty"`
	Skipped    map[string]int64 `json:"skipped_unfair,omitempty"` // by reason

	hist histogram
}

// LatencySummary gives quantiles of the answered requests, each the upper
// bound of a bucket ~3 % wide, and the exact maximum.
type LatencySummary struct {
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// Mismatch is one wrong answer.
type Mismatch struct {
	At       time.Duration `json:"at_ns"` // since the start of the run
	Query    string        `json:"query"` // request URI
	Diff     string        `json:"diff"`  // the first difference found
	Expected string        `json:"expected"`
	Got      string        `json:"got"`
}

// ErrorCount is the number of failed requests outside outage windows.
func (e *EndpointReport) ErrorCount() int64 {
	var n int64
	for _, c := range e.Errors {
		n += c
	}
	return n
}

func (e *EndpointReport) skippedCount() int64 {
	var n int64
	for _, c := range e.Skipped {
		n += c
	}
	return n
}

// OK is the verdict: no request failed outside a declared outage, no
// answer differed from the model, and (when retrying) every tag was
// eventually acknowledged. Time-outs against SPEC.md's limits are
// reported but do not fail it: on a shared development machine they
// measure the machine as much as the product.
func (r *Report) OK() bool {
	for _, e := range r.endpoints() {
		if e.ErrorCount() != 0 || e.Mismatches != 0 {
			return false
		}
	}
	return r.Unacknowledged == 0
}

func (r *Report) endpoints() []*EndpointReport {
	return []*EndpointReport{&r.Tags, &r.Profiles, &r.Aggregates}
}

func (e *EndpointReport) merge(o *EndpointReport) {
	e.Requests += o.Requests
	e.OK += o.OK
	e.Errors = mergeCounts(e.Errors, o.Errors)
	e.OutageErrors = mergeCounts(e.OutageErrors, o.OutageErrors)
	e.TimeOuts += o.TimeOuts
	e.OutageTimeOuts += o.OutageTimeOuts
	e.Compared += o.Compared
	e.NonEmpty += o.NonEmpty
	e.Mismatches += o.Mismatches
	e.Examples = append(e.Examples, o.Examples...)
	slices.SortStableFunc(e.Examples, func(a, b Mismatch) int { return cmpInt(int64(a.At), int64(b.At)) })
	if len(e.Examples) > maxExamples {
		e.Examples = e.Examples[:maxExamples]
	}
	e.Skipped = mergeCounts(e.Skipped, o.Skipped)
	e.hist.merge(&o.hist)
}

func mergeCounts(dst, src map[string]int64) map[string]int64 {
	for k, v := range src {
		if dst == nil {
			dst = make(map[string]int64)
		}
		dst[k] += v
	}
	return dst
}

func (e *EndpointReport) summarize() {
	e.Latency = LatencySummary{
		P50: e.hist.quantile(0.50),
		P90: e.hist.quantile(0.90),
		P99: e.hist.quantile(0.99),
		Max: e.hist.max,
	}
}

// WriteText prints the report for a human.
func (r *Report) WriteText(w io.Writer) {
	verdict := "OK"
	if !r.OK() {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "loadgen %s: %s seed=%d start=%s target=%s conns=%d\n", verdict, r.BaseURL, r.Seed,
		r.Start.UTC().Format("2006-01-02T15:04:05.000Z"), rateText(r.Rate), r.Conns)
	fmt.Fprintf(w, "  sending %s (+%s settle)%s: %d tags posted, %d acknowledged, %.0f tags/s achieved, %d retries, %d never acknowledged\n",
		r.Elapsed.Round(time.Millisecond), r.Settle.Round(time.Millisecond), map[bool]string{true: " INTERRUPTED"}[r.Interrupted],
		r.TagsSent, r.TagsAcked, r.AchievedRate, r.Retries, r.Unacknowledged)
	for i, e := range r.endpoints() {
		name := [...]string{"POST /user_tags", "POST /user_profiles", "POST /aggregates"}[i]
		fmt.Fprintf(w, "  %s: %d requests, %d ok, %d errors, %d slower than %s; latency p50 %s p90 %s p99 %s max %s\n",
			name, e.Requests, e.OK, e.ErrorCount(), e.TimeOuts, e.Limit, roundDur(e.Latency.P50), roundDur(e.Latency.P90),
			roundDur(e.Latency.P99), roundDur(e.Latency.Max))
		writeCounts(w, "    errors", e.Errors)
		if len(e.OutageErrors) > 0 || e.OutageTimeOuts > 0 {
			writeCounts(w, "    during declared outages (not counted)", e.OutageErrors)
			fmt.Fprintf(w, "    slower than %s during declared outages: %d\n", e.Limit, e.OutageTimeOuts)
		}
		if i == 0 {
			continue
		}
		share := 0.0
		if e.Compared > 0 {
			share = 100 * float64(e.NonEmpty) / float64(e.Compared)
		}
		fmt.Fprintf(w, "    %d answers compared (%.1f%% with a non-empty expected answer), %d mismatches, %d queries skipped as unfair\n",
			e.Compared, share, e.Mismatches, e.skippedCount())
		writeCounts(w, "    skipped", e.Skipped)
		for _, m := range e.Examples {
			fmt.Fprintf(w, "    mismatch at %s: %s\n      %s\n      expected: %s\n      got:      %s\n",
				m.At.Round(time.Millisecond), m.Query, m.Diff, m.Expected, m.Got)
		}
	}
}

func rateText(rate int) string {
	if rate == 0 {
		return "max (closed loop)"
	}
	return fmt.Sprintf("%d/s", rate)
}

func roundDur(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}

func writeCounts(w io.Writer, title string, m map[string]int64) {
	if len(m) == 0 {
		return
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	fmt.Fprintf(w, "%s: %s\n", title, strings.Join(parts, ", "))
}

// WriteJSON writes the report as one JSON object, with "ok" the verdict.
func (r *Report) WriteJSON(w io.Writer) error {
	type alias Report
	out := struct {
		OK bool `json:"ok"`
		*alias
	}{r.OK(), (*alias)(r)}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
