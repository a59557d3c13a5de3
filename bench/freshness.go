package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/allezon/allezon/loadgen"
	"github.com/valyala/fasthttp"
)

// Freshness targets (the product's promise), and how long a probe waits
// before it counts a tag as never seen: SPEC's own bounds, past which the
// answer would be wrong, not just late.
const (
	targetProfileFreshness   = time.Second
	targetAggregateFreshness = 5 * time.Second
	profileGiveUp            = 10 * time.Second
	aggregateGiveUp          = time.Minute
	profilePoll              = 2 * time.Millisecond
	aggregatePoll            = 20 * time.Millisecond
	freshnessLoadRate        = 1000
)

// probeStart is the event time of the first probe: a day after the
// background load's stream, so no tag of the load shares a probe's cookie,
// origin or minute, and each probe's minute holds its tag alone. One tag
// a minute stays below the pipeline's retention quorum, so the probes do
// not move retention either.
var probeStart = loadgen.DefaultStart.Add(24 * time.Hour)

// probe is one tag's way from its 204 to the answers.
type probe struct {
	Index         int           `json:"index"`
	Cookie        string        `json:"cookie"`
	Origin        string        `json:"origin"`
	EventTime     time.Time     `json:"event_time"`
	PostLatency   time.Duration `json:"post_latency_ns"`
	Profile       time.Duration `json:"profile_visible_after_ns"`   // from the 204
	Aggregate     time.Duration `json:"aggregate_visible_after_ns"` // from the 204
	ProfileSeen   bool          `json:"profile_seen"`
	AggregateSeen bool          `json:"aggregate_seen"`
	Err           string        `json:"error,omitempty"`
}

// runFreshness measures how soon an acknowledged tag shows in each query
// endpoint, while the server carries a background load.
func runFreshness(ctx context.Context, h *harness) *section {
	sec := &section{Title: "Freshness: from 204 to visible", Intro: []string{fmt.Sprintf(
		"`allezon all` under a background loadgen at %s (with its default interleaved queries). "+
			"A probe in the harness posts %d tags one after another, each with its own cookie and origin, in its own event-time minute a day after the load's stream, "+
			"and measures from each 204 until `/user_profiles` shows the tag (polled every %s) and until `/aggregates` with `origin=<its origin>` over its minute counts 1 (polled every %s). "+
			"A tag not visible after %s (profiles) or %s (aggregates), SPEC's own bounds, counts as never seen. Targets are judged on the maximum.",
		fmtRate(freshnessLoadRate), h.plan.Probes, profilePoll, aggregatePoll, profileGiveUp, aggregateGiveUp)}}
	srv, data, err := h.startAllezon(ctx, "freshness")
	if err != nil {
		return sec.fail(err)
	}
	defer h.stopAllezon(srv, data)
	sec.Commands = append(sec.Commands, srv.commandLine())
	// Long enough to outlast every probe; interrupted when they are done.
	loadFor := h.plan.FreshnessWarmup + time.Duration(h.plan.Probes)*(profileGiveUp+aggregateGiveUp)
	load, err := h.startLoadgen("freshness-load", srv.addr, []string{"--seed", "1", "--rate", fmt.Sprint(freshnessLoadRate),
		"--conns", loadConns, "--duration", loadFor.String()}, false)
	if err != nil {
		return sec.fail(err)
	}
	probes, probeErr := runProbes(ctx, srv.addr, h.plan)
	load.interrupt()
	loadErr := load.wait(ctx)
	sec.addRun(load)
	if err := errors.Join(probeErr, loadErr, h.saveProbes(sec, probes)); err != nil {
		return sec.fail(err)
	}
	freshnessRows(sec, probes, load.Report)
	return sec
}

// runProbes waits for the background load to warm up, then probes one tag
// at a time, so that each measures the server and not the other probes.
func runProbes(ctx context.Context, addr string, p plan) ([]probe, error) {
	select {
	case <-time.After(p.FreshnessWarmup):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c := &fasthttp.HostClient{Addr: addr, Name: "allezon-bench-probe", MaxConns: 4, DisablePathNormalizing: true}
	var out []probe
	for i := range p.Probes {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		out = append(out, runProbe(ctx, c, i))
	}
	return out, nil
}

// runProbe posts one tag and, from its 204, polls both endpoints at once.
func runProbe(ctx context.Context, c *fasthttp.HostClient, i int) probe {
	pr := probe{
		Index:     i,
		Cookie:    fmt.Sprintf("bench-probe-%02d", i),
		Origin:    fmt.Sprintf("bench-probe-origin-%02d", i),
		EventTime: probeStart.Add(time.Duration(i)*time.Minute + 30*time.Second),
	}
	start := time.Now()
	status, err := post(c, "/user_tags", probeTag(&pr), 5*time.Second)
	acked := time.Now()
	pr.PostLatency = acked.Sub(start)
	if err != nil || status != fasthttp.StatusNoContent {
		pr.Err = fmt.Sprintf("POST /user_tags: status %d, %v", status, err)
		return pr
	}
	minute := pr.EventTime.Truncate(time.Minute)
	profileURI := "/user_profiles/" + url.PathEscape(pr.Cookie) + "?time_range=" +
		minute.Format(msLayout) + "_" + minute.Add(time.Minute).Format(msLayout)
	aggURI := "/aggregates?time_range=" + minute.Format(secLayout) + "_" + minute.Add(time.Minute).Format(secLayout) +
		"&action=VIEW&origin=" + url.QueryEscape(pr.Origin) + "&aggregates=COUNT"
	done := make(chan struct{})
	go func() {
		defer close(done)
		pr.Aggregate, pr.AggregateSeen = pollUntil(ctx, acked, aggregatePoll, aggregateGiveUp, func() bool { return aggregateCountsOne(c, aggURI) })
	}()
	pr.Profile, pr.ProfileSeen = pollUntil(ctx, acked, profilePoll, profileGiveUp, func() bool { return profileHoldsOne(c, profileURI) })
	<-done
	return pr
}

const (
	msLayout  = "2006-01-02T15:04:05.000"
	secLayout = "2006-01-02T15:04:05"
)

func probeTag(pr *probe) []byte {
	return fmt.Appendf(nil, `{"time":%q,"cookie":%q,"country":"PL","device":"PC","action":"VIEW","origin":%q,`+
		`"product_info":{"product_id":"1","brand_id":"bench-probe","category_id":"bench-probe","price":1}}`,
		pr.EventTime.Format("2006-01-02T15:04:05.000Z"), pr.Cookie, pr.Origin)
}

// pollUntil calls visible every interval (from the start of one call to
// the next) until it is true or giveUp passed since from; it returns the
// time from `from` to the first true answer.
func pollUntil(ctx context.Context, from time.Time, interval, giveUp time.Duration, visible func() bool) (time.Duration, bool) {
	for {
		at := time.Now()
		if visible() {
			return time.Since(from), true
		}
		if time.Since(from) >= giveUp || ctx.Err() != nil {
			return time.Since(from), false
		}
		time.Sleep(time.Until(at.Add(interval)))
	}
}

func profileHoldsOne(c *fasthttp.HostClient, uri string) bool {
	var p struct {
		Views []json.RawMessage `json:"views"`
	}
	return query(c, uri, &p) && len(p.Views) == 1
}

func aggregateCountsOne(c *fasthttp.HostClient, uri string) bool {
	var a struct {
		Rows [][]string `json:"rows"`
	}
	return query(c, uri, &a) && len(a.Rows) == 1 && len(a.Rows[0]) > 0 && a.Rows[0][len(a.Rows[0])-1] == "1"
}

// query POSTs uri with no body and decodes a 200 answer into v.
func query(c *fasthttp.HostClient, uri string, v any) bool {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + c.Addr + uri)
	req.Header.SetMethod(fasthttp.MethodPost)
	if err := c.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != fasthttp.StatusOK {
		return false
	}
	return json.Unmarshal(resp.Body(), v) == nil
}

func post(c *fasthttp.HostClient, uri string, body []byte, timeout time.Duration) (int, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + c.Addr + uri)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBody(body)
	err := c.DoTimeout(req, resp, timeout)
	return resp.StatusCode(), err
}

// saveProbes writes every probe's figures to freshness.json.
func (h *harness) saveProbes(sec *section, probes []probe) error {
	path := filepath.Join(h.opt.Results, "freshness.json")
	b, err := json.MarshalIndent(probes, "", "  ")
	if err != nil {
		return err
	}
	sec.Files = append([]string{path}, sec.Files...)
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// freshnessRows judges the probes on their slowest, and says how many were
// never seen.
func freshnessRows(sec *section, probes []probe, load *loadgen.Report) {
	var failed int
	for _, p := range probes {
		if p.Err != "" {
			failed++
			sec.Notes = append(sec.Notes, fmt.Sprintf("Probe %d failed: %s", p.Index, p.Err))
		}
	}
	for _, e := range []struct {
		name   string
		target time.Duration
		get    func(probe) (time.Duration, bool)
		giveUp time.Duration
	}{
		{"`/user_profiles` shows the tag", targetProfileFreshness, func(p probe) (time.Duration, bool) { return p.Profile, p.ProfileSeen }, profileGiveUp},
		{"`/aggregates` counts the tag", targetAggregateFreshness, func(p probe) (time.Duration, bool) { return p.Aggregate, p.AggregateSeen }, aggregateGiveUp},
	} {
		var ds []time.Duration
		unseen := 0
		for _, p := range probes {
			if p.Err != "" {
				continue
			}
			d, seen := e.get(p)
			if !seen {
				unseen++
			}
			ds = append(ds, d)
		}
		if len(ds) == 0 {
			sec.add(e.name+", max", "≤ "+fmtLimit(e.target), "no probe was acknowledged", verdict(false))
			continue
		}
		slices.Sort(ds)
		result := fmtDur(ds[len(ds)-1])
		if unseen > 0 {
			result = fmt.Sprintf("%d of %d never seen within %s", unseen, len(ds), e.giveUp)
		}
		sec.add(e.name+", max", "≤ "+fmtLimit(e.target), result, verdict(unseen == 0 && ds[len(ds)-1] <= e.target))
		sec.add(e.name+", p50 / p99", "—", fmtDur(quantile(ds, 0.5))+" / "+fmtDur(quantile(ds, 0.99)), nil)
	}
	sec.add("probes acknowledged", fmt.Sprint(len(probes)), fmt.Sprint(len(probes)-failed), verdict(failed == 0 && len(probes) > 0))
	if load != nil {
		sec.add("background load: tags acknowledged / failed requests", "—",
			fmt.Sprintf("%s / %s", fmtInt(load.TagsAcked), fmtInt(load.Tags.ErrorCount()+load.Profiles.ErrorCount()+load.Aggregates.ErrorCount())), nil)
	}
}

// quantile is the nearest-rank quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
