package main

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/allezon/allezon/loadgen"
)

// Targets of the issue behind `make bench`.
const (
	targetIngestRate      = 20_000
	targetIngestP99       = 50 * time.Millisecond
	targetLimitShare      = 0.35
	targetRSS             = 1 << 30
	mixedRate             = 5_000
	targetMixedProfileP99 = 5 * time.Millisecond
	targetMixedAggP99     = 50 * time.Millisecond
)

// loadConns is the connections of every load: loadgen's own default, and
// enough that a short stall of the server does not slip an open-loop
// schedule.
const loadConns = "128"

// tagsOnly are loadgen's flags for a closed-loop run of tags alone: the
// same load for the limit and for allezon, so their ratio compares servers.
func tagsOnly(d time.Duration) []string {
	return []string{"--seed", "1", "--rate", "max", "--conns", loadConns, "--duration", d.String(),
		"--profile-every", "-1", "--aggregate-every", "-1"}
}

// runLimit measures the bare fasthttp server: the most tags/s this
// machine's HTTP stack and this load generator can exchange at all.
func runLimit(ctx context.Context, h *harness) *section {
	sec := &section{Title: "Limit: bare fasthttp", Intro: []string{
		"`bench/limit` is a fasthttp server with the gateway's `fasthttp.Server` settings that answers 204 to `POST /user_tags` without parsing or storing anything. " +
			"Under the same closed-loop load as the ingest scenario it is the ceiling of HTTP ingest on this machine, against which ingest is judged.",
	}}
	srv, err := startServer(ctx, h.tmp, "limit", h.bin.limit, []string{"--http", "{addr}"}, "")
	if err != nil {
		return sec.fail(err)
	}
	defer srv.stop()
	sec.Commands = append(sec.Commands, srv.commandLine())
	r, err := h.runLoadgen(ctx, "limit", srv.addr, tagsOnly(h.plan.Limit), false)
	sec.addRun(r)
	if err != nil {
		return sec.fail(err)
	}
	rep := r.Report
	h.limitRate = ackedRate(rep)
	sec.add("tags/s (acknowledged, closed loop)", "— (the ceiling)", fmtRate(h.limitRate), nil)
	sec.add("`POST /user_tags` p50 / p99", "—", fmtDur(rep.Tags.Latency.P50)+" / "+fmtDur(rep.Tags.Latency.P99), nil)
	sec.add("failed requests", "—", fmtInt(rep.Tags.ErrorCount()), nil)
	sec.add("loadgen CPU", "—", cpuShare(r.CPU, rep.Elapsed), nil)
	return sec
}

// runIngest measures `allezon all` under the limit's load: throughput,
// latency, and what each tag costs the server in CPU and memory.
func runIngest(ctx context.Context, h *harness) *section {
	sec := &section{Title: "Ingest: `allezon all`, tags only", Intro: []string{
		"`allezon all` (embedded Pebble stores and broker, fresh data directory) under the limit's closed-loop load: " +
			"every 204 means the tag is in the profile store and acknowledged by the event log. " +
			"Server CPU comes from `/proc/<pid>/stat` (utime + stime) read just before and just after the loadgen run, divided by the tags acknowledged; " +
			"peak RSS is the server's `VmHWM` after the run.",
	}}
	srv, data, err := h.startAllezon(ctx, "ingest")
	if err != nil {
		return sec.fail(err)
	}
	defer h.stopAllezon(srv, data)
	sec.Commands = append(sec.Commands, srv.commandLine())
	pid := srv.cmd.Process.Pid
	cpu0, err := cpuSeconds(pid)
	if err != nil {
		return sec.fail(err)
	}
	// Profile the middle half of the run: past the warm-up, before the end.
	prof := filepath.Join(h.opt.Results, "ingest.cpu.pprof")
	profErr := make(chan error, 1)
	go func() {
		if !sleepCtx(ctx, h.plan.Ingest/4) {
			profErr <- ctx.Err()
			return
		}
		profErr <- cpuProfile(ctx, srv.admin, h.plan.Ingest/2, prof)
	}()
	r, err := h.runLoadgen(ctx, "ingest", srv.addr, tagsOnly(h.plan.Ingest), true)
	sec.addRun(r)
	if err != nil {
		return sec.fail(err)
	}
	if err := <-profErr; err != nil {
		sec.Notes = append(sec.Notes, "Where the time goes: no CPU profile: "+err.Error())
	} else {
		defer h.profileSection(ctx, sec, prof)
	}
	cpu1, errCPU := cpuSeconds(pid)
	rss, errRSS := peakRSS(pid)
	if dead, status := srv.exited(); dead {
		return sec.fail(fmt.Errorf("allezon exited during the run (%v):\n%s", status, srv.logTail(20)))
	}
	h.ingestRows(sec, r, cpu1-cpu0, rss)
	if errCPU != nil || errRSS != nil {
		return sec.fail(fmt.Errorf("reading /proc: %v %v", errCPU, errRSS))
	}
	return sec
}

// ingestRows judges the ingest run against the targets.
func (h *harness) ingestRows(sec *section, r *loadRun, cpu float64, rss int64) {
	rep := r.Report
	rate := ackedRate(rep)
	sec.add("sustained tags/s (acknowledged)", "≥ "+fmtRate(targetIngestRate), fmtRate(rate), verdict(rate >= targetIngestRate))
	sec.add("`POST /user_tags` p99", "≤ "+fmtLimit(targetIngestP99), fmtDur(rep.Tags.Latency.P99), verdict(rep.Tags.Latency.P99 <= targetIngestP99))
	errs := rep.Tags.ErrorCount() + rep.Unacknowledged
	sec.add("failed requests", "0", fmtInt(errs)+errorKinds(rep.Tags.Errors), verdict(errs == 0))
	if h.limitRate > 0 {
		share := rate / h.limitRate
		sec.add("share of the limit (same run)", "≥ "+fmtPct(targetLimitShare),
			fmt.Sprintf("%s (%s of %s)", fmtPct(share), fmtRate(rate), fmtRate(h.limitRate)), verdict(share >= targetLimitShare))
	} else {
		sec.add("share of the limit (same run)", "≥ "+fmtPct(targetLimitShare), "not measured: the limit scenario did not run or failed", nil)
	}
	sec.add("server peak RSS (VmHWM)", "≤ "+fmtBytes(targetRSS), fmtBytes(rss), verdict(rss <= targetRSS))
	sec.add("`POST /user_tags` p50 / max", "—", fmtDur(rep.Tags.Latency.P50)+" / "+fmtDur(rep.Tags.Latency.Max), nil)
	if rep.TagsAcked > 0 {
		sec.add("server CPU per tag", "—", fmt.Sprintf("%.1f CPU-µs", cpu/float64(rep.TagsAcked)*1e6), nil)
	}
	sec.add("server CPU", "—", cpuShare(cpu, rep.Elapsed), nil)
	sec.add("loadgen CPU", "—", cpuShare(r.CPU, rep.Elapsed), nil)
}

// runMixed is the testing platform's replay at a fixed rate with its
// interleaved, checked queries.
func runMixed(ctx context.Context, h *harness) *section {
	sec := &section{Title: "Mixed: tags with checked queries", Intro: []string{
		fmt.Sprintf("`allezon all` under an open-loop load of %s with loadgen's interleaved queries (one `/user_profiles` per 10 tags, one `/aggregates` per 1,000), "+
			"each answer checked against loadgen's model. The queries use the **product's freshness, not SPEC's**: `--profile-freshness 1s --aggregate-freshness 5s` "+
			"(SPEC allows 10 s and 1 minute), so they ask about data written 1 s and 5 s before, and `--settle %s` keeps querying after the last tag so the tail is checked too.",
			fmtRate(mixedRate), h.plan.Settle),
	}}
	srv, data, err := h.startAllezon(ctx, "mixed")
	if err != nil {
		return sec.fail(err)
	}
	defer h.stopAllezon(srv, data)
	sec.Commands = append(sec.Commands, srv.commandLine())
	args := []string{"--seed", "1", "--rate", fmt.Sprint(mixedRate), "--conns", loadConns, "--duration", h.plan.Mixed.String(),
		"--profile-every", "10", "--aggregate-every", "1000",
		"--profile-freshness", "1s", "--aggregate-freshness", "5s", "--settle", h.plan.Settle.String()}
	r, err := h.runLoadgen(ctx, "mixed", srv.addr, args, true)
	sec.addRun(r)
	if err != nil {
		return sec.fail(err)
	}
	mixedRows(sec, r.Report)
	return sec
}

func mixedRows(sec *section, rep *loadgen.Report) {
	p, a := &rep.Profiles, &rep.Aggregates
	sec.add("`POST /user_profiles` p99", "≤ "+fmtLimit(targetMixedProfileP99), fmtDur(p.Latency.P99), verdict(p.Latency.P99 <= targetMixedProfileP99))
	sec.add("`POST /aggregates` p99", "≤ "+fmtLimit(targetMixedAggP99), fmtDur(a.Latency.P99), verdict(a.Latency.P99 <= targetMixedAggP99))
	mism := p.Mismatches + a.Mismatches
	sec.add("mismatches (profiles + aggregates)", "0", fmt.Sprintf("%s (%s + %s)", fmtInt(mism), fmtInt(p.Mismatches), fmtInt(a.Mismatches)), verdict(mism == 0))
	errs := rep.Tags.ErrorCount() + p.ErrorCount() + a.ErrorCount()
	sec.add("failed requests, all endpoints", "0 (loadgen's verdict)", fmtInt(errs), verdict(errs == 0))
	sec.add("tags/s achieved", fmtRate(mixedRate)+" offered", fmtRate(rep.AchievedRate), nil)
	sec.add("`POST /user_tags` p99", "—", fmtDur(rep.Tags.Latency.P99), nil)
	sec.Tables = append(sec.Tables, endpointTable(rep))
}

// endpointTable shows each endpoint's latencies and how much real data
// its checked answers held.
func endpointTable(rep *loadgen.Report) table {
	t := table{Header: []string{"endpoint", "requests", "errors", "p50", "p90", "p99", "max", "answers checked", "non-empty", "mismatches", "skipped as unfair"}}
	for i, e := range []*loadgen.EndpointReport{&rep.Tags, &rep.Profiles, &rep.Aggregates} {
		name := [...]string{"`POST /user_tags`", "`POST /user_profiles`", "`POST /aggregates`"}[i]
		row := []string{name, fmtInt(e.Requests), fmtInt(e.ErrorCount()) + errorKinds(e.Errors),
			fmtDur(e.Latency.P50), fmtDur(e.Latency.P90), fmtDur(e.Latency.P99), fmtDur(e.Latency.Max)}
		if i == 0 {
			row = append(row, "—", "—", "—", "—")
		} else {
			var skipped int64
			for _, n := range e.Skipped {
				skipped += n
			}
			row = append(row, fmtInt(e.Compared), fmtInt(e.NonEmpty), fmtInt(e.Mismatches), fmtInt(skipped))
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// addRun links a loadgen run's command and files, whatever its outcome.
func (s *section) addRun(r *loadRun) {
	if r == nil {
		return
	}
	s.Commands = append(s.Commands, r.Command)
	s.Files = append(s.Files, r.JSON, r.Text)
	if r.Plot != "" {
		s.Files = append(s.Files, r.Plot)
		s.Images = append(s.Images, r.Plot)
	}
}

// cpuShare is CPU seconds as cores busy over the run.
func cpuShare(cpu float64, elapsed time.Duration) string {
	if elapsed <= 0 {
		return fmt.Sprintf("%.1f CPU-s", cpu)
	}
	return fmt.Sprintf("%.1f CPU-s (%.2f cores)", cpu, cpu/elapsed.Seconds())
}

// errorKinds lists the kinds of errors, e.g. " (status 503: 12)".
func errorKinds(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	s := ""
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("%s: %d", k, m[k])
	}
	return " (" + s + ")"
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
