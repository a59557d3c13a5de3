package loadgen

import (
	"container/heap"
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

// Scheduling bounds.
const (
	// maxLag is how far the open-loop schedule may fall behind before it
	// gives up the missed slots instead of bursting to catch up (a burst
	// is also bounded by Conns requests in flight).
	maxLag = 200 * time.Millisecond
	// minSleep: a wait shorter than this is not slept (timers are coarse);
	// the tag goes out a little early instead.
	minSleep = 200 * time.Microsecond
	// pollEvery is how often the settle and grace phases look at retries.
	pollEvery = 10 * time.Millisecond
	// probeAhead is how many minutes ahead of the newest tag sent the
	// filters of probe tags are registered (an aggregate range is at most
	// 10 minutes long).
	probeAhead = 10
	// probesPerMinute is how many tags of each minute lend their values
	// to aggregate filters.
	probesPerMinute = 64
)

type itemKind uint8

const (
	kindTag itemKind = iota
	kindProfile
	kindAggregate
)

// workItem is one request for a worker: tag id (attempt > 0 is a retry)
// or a query to plan and send.
type workItem struct {
	kind    itemKind
	id      int64
	attempt int
}

// Run replays the stream described by cfg against the gateway and judges
// the answers. It returns an error only if cfg is invalid; everything the
// server does wrong is in the report. Cancelling ctx ends the run early
// with a report marked Interrupted.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r, err := newRunner(cfg)
	if err != nil {
		return nil, err
	}
	return r.run(ctx), nil
}

// runner holds the shared state of one run.
type runner struct {
	cfg     Config
	client  *fasthttp.HostClient
	baseURL string // scheme://host[:port][/path] without a trailing slash
	model   *model
	t0      time.Time

	work chan workItem

	retryMu sync.Mutex
	retryQ  retryHeap
	unacked map[int64]struct{} // tags whose every attempt so far failed
	// tagsInFlight counts tag attempts dispatched and not yet recorded,
	// so the retry grace does not end while one of them may still fail.
	tagsInFlight atomic.Int64

	// Live counters (also for the progress line); errors by endpoint,
	// outside declared outages.
	sent, acked, retries atomic.Int64
	errors               [numEndpts]atomic.Int64
	mismatches           atomic.Int64
	logged               atomic.Int64
	timeline             *timeline

	probedUpTo int64 // probe filters are registered up to this minute
}

func newRunner(cfg Config) (*runner, error) {
	u, _ := url.Parse(cfg.BaseURL) // validated by withDefaults
	addr := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	base := cfg.BaseURL
	for len(base) > 0 && base[len(base)-1] == '/' {
		base = base[:len(base)-1]
	}
	startMs := cfg.Start.UnixMilli()
	m := newModel(startMs, cfg.ProfileFreshness, cfg.AggregateFreshness)
	m.skipProfiles, m.skipAggregates = cfg.ProfileEvery < 0, cfg.AggregateEvery < 0
	return &runner{
		cfg: cfg,
		client: &fasthttp.HostClient{
			Addr:                     addr,
			Name:                     "allezon-loadgen",
			IsTLS:                    u.Scheme == "https",
			MaxConns:                 cfg.Conns,
			MaxIdleConnDuration:      10 * time.Second,
			MaxResponseBodySize:      64 << 20,
			DisablePathNormalizing:   true, // cookies are percent-encoded by us, keep them so
			NoDefaultUserAgentHeader: false,
			// A POST is never repeated behind our back: a failed tag is
			// recorded as such and retried (if at all) by the runner.
			RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		},
		baseURL:    base,
		model:      m,
		work:       make(chan workItem, cfg.Conns),
		unacked:    make(map[int64]struct{}),
		timeline:   newTimeline(),
		probedUpTo: schemas.MinuteOf(startMs) - 1,
	}, nil
}

func (r *runner) run(ctx context.Context) *Report {
	r.t0 = time.Now()
	workers := make([]*worker, r.cfg.Conns)
	var wg sync.WaitGroup
	for i := range workers {
		workers[i] = newWorker(r, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			workers[i].loop()
		}()
	}
	stopProgress := r.startProgress()

	sent, sendElapsed, interrupted := r.send(ctx)
	settleStart := time.Now()
	if !interrupted {
		interrupted = r.settle(ctx, sent, sendElapsed)
	}
	if !interrupted && r.cfg.Retry {
		interrupted = r.graceForRetries(ctx)
	}
	settleElapsed := time.Since(settleStart)
	close(r.work)
	wg.Wait()
	r.client.CloseIdleConnections()
	stopProgress()

	rep := &Report{
		BaseURL:     r.cfg.BaseURL,
		Seed:        r.cfg.Seed,
		Start:       r.cfg.Start,
		Rate:        r.cfg.Rate,
		Conns:       r.cfg.Conns,
		Elapsed:     sendElapsed,
		Settle:      settleElapsed,
		TagsSent:    sent,
		TagsAcked:   r.acked.Load(),
		Retries:     r.retries.Load(),
		Interrupted: interrupted,
		Tags:        EndpointReport{Limit: TagLimit},
		Profiles:    EndpointReport{Limit: ProfileLimit},
		Aggregates:  EndpointReport{Limit: AggregateLimit},
		Outages:     r.cfg.Outages,
	}
	rep.Timeline = r.timeline.seconds(int64((sendElapsed + settleElapsed + time.Second - 1) / time.Second))
	rep.TimelineTruncated = r.timeline.truncated.Load()
	if sendElapsed > 0 {
		rep.AchievedRate = float64(sent) / sendElapsed.Seconds()
	}
	if r.cfg.Retry {
		rep.Unacknowledged = int64(len(r.unacked))
	}
	for _, w := range workers {
		for i, e := range rep.endpoints() {
			e.merge(&w.ep[i])
		}
	}
	for _, e := range rep.endpoints() {
		e.summarize()
	}
	return rep
}

// dispatch hands it to a worker; false if ctx ended first.
func (r *runner) dispatch(ctx context.Context, it workItem) bool {
	if it.kind == kindTag {
		r.tagsInFlight.Add(1)
	}
	select {
	case r.work <- it:
		return true
	case <-ctx.Done():
		if it.kind == kindTag {
			r.tagsInFlight.Add(-1)
		}
		return false
	}
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, t *time.Timer, d time.Duration) bool {
	t.Reset(d)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		if !t.Stop() {
			<-t.C
		}
		return false
	}
}

// send is the sending phase: tags on an open-loop schedule (or closed loop
// at Rate 0), queries interleaved by count. It returns how many tags were
// dispatched and for how long.
func (r *runner) send(ctx context.Context) (sent int64, elapsed time.Duration, interrupted bool) {
	cfg := &r.cfg
	gen := NewGenerator(cfg.Seed, cfg.Start)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	anchor, anchorID := r.t0, int64(0)
	var id int64
	for {
		if ctx.Err() != nil {
			interrupted = true
			break
		}
		if cfg.Events > 0 && id >= cfg.Events || cfg.Duration > 0 && time.Since(r.t0) >= cfg.Duration {
			break
		}
		if cfg.Rate > 0 {
			due := anchor.Add(time.Duration(float64(id-anchorID) * float64(time.Second) / float64(cfg.Rate)))
			if cfg.Duration > 0 && due.Sub(r.t0) >= cfg.Duration {
				break
			}
			now := time.Now()
			if wait := due.Sub(now); wait > minSleep {
				if !sleep(ctx, timer, wait) {
					interrupted = true
					break
				}
			} else if -wait > maxLag {
				anchor, anchorID = now.Add(-maxLag), id
			}
		}
		if !r.dispatchRetries(ctx) {
			interrupted = true
			break
		}
		r.registerProbes(gen, id)
		if !r.dispatch(ctx, workItem{kind: kindTag, id: id}) {
			interrupted = true
			break
		}
		id++
		if cfg.ProfileEvery > 0 && id%int64(cfg.ProfileEvery) == 0 && !r.dispatch(ctx, workItem{kind: kindProfile}) ||
			cfg.AggregateEvery > 0 && id%int64(cfg.AggregateEvery) == 0 && !r.dispatch(ctx, workItem{kind: kindAggregate}) {
			interrupted = true
			break
		}
		if id%10_000 == 0 {
			r.prune()
		}
	}
	return id, time.Since(r.t0), interrupted
}

// settle keeps sending queries (no tags) for cfg.Settle at the cadence the
// sending phase had, so the tail of the stream is checked once it is old
// enough.
func (r *runner) settle(ctx context.Context, sent int64, elapsed time.Duration) (interrupted bool) {
	cfg := &r.cfg
	if sent > 0 {
		r.model.EndSending(sent, r.model.startMs+sent-1)
	}
	if cfg.Settle <= 0 {
		return false
	}
	rate := float64(cfg.Rate)
	if rate == 0 && elapsed > 0 {
		rate = float64(sent) / elapsed.Seconds()
	}
	rate = max(rate, 1)
	interval := func(every int) time.Duration {
		if every <= 0 {
			return time.Duration(1<<63 - 1)
		}
		return time.Duration(float64(every) / rate * float64(time.Second))
	}
	profEvery, aggEvery := interval(cfg.ProfileEvery), interval(cfg.AggregateEvery)
	start := time.Now()
	end := start.Add(cfg.Settle)
	nextProf, nextAgg, nextPrune := start.Add(profEvery), start.Add(aggEvery), start.Add(time.Second)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		if !now.Before(end) {
			return false
		}
		for ; !nextProf.After(now); nextProf = nextProf.Add(profEvery) {
			if !r.dispatch(ctx, workItem{kind: kindProfile}) {
				return true
			}
		}
		for ; !nextAgg.After(now); nextAgg = nextAgg.Add(aggEvery) {
			if !r.dispatch(ctx, workItem{kind: kindAggregate}) {
				return true
			}
		}
		if !r.dispatchRetries(ctx) {
			return true
		}
		if !nextPrune.After(now) {
			r.prune()
			nextPrune = now.Add(time.Second)
		}
		wait := min(nextProf.Sub(now), nextAgg.Sub(now), end.Sub(now), pollEvery)
		if !sleep(ctx, timer, max(wait, 0)) {
			return true
		}
	}
}

// graceForRetries waits, still retrying, until every failed tag got its
// 204 or cfg.RetryGrace has passed.
func (r *runner) graceForRetries(ctx context.Context) (interrupted bool) {
	end := time.Now().Add(r.cfg.RetryGrace)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for time.Now().Before(end) {
		// A tag still in flight may fail yet: it is not done until its
		// attempt ended (tagFailed runs before the count drops).
		inFlight := r.tagsInFlight.Load()
		r.retryMu.Lock()
		pending := len(r.unacked)
		r.retryMu.Unlock()
		if pending == 0 && inFlight == 0 {
			return false
		}
		if !r.dispatchRetries(ctx) || !sleep(ctx, timer, pollEvery) {
			return true
		}
	}
	return false
}

// registerProbes makes sure the filters of the probe tags of every minute
// up to probeAhead minutes after tag id's are watched by the model before
// tag id is sent. An aggregate query over a range takes its filter values
// from a probe inside the range, and the model has then summed that filter
// since before the range's first tag.
func (r *runner) registerProbes(gen *Generator, id int64) {
	minute := schemas.MinuteOf(gen.TimeOf(id))
	for r.probedUpTo < minute+probeAhead {
		r.probedUpTo++
		for j := range probesPerMinute {
			pid := probeID(gen, r.probedUpTo, j)
			if pid < 0 || r.cfg.Events > 0 && pid >= r.cfg.Events {
				continue
			}
			t := gen.Tag(pid)
			r.model.WatchFilters(&t, r.probedUpTo+probeAhead)
		}
	}
}

// probeID is the id of the j-th probe tag of minute: a fixed pseudo-random
// position within the minute (it may fall outside the stream).
func probeID(gen *Generator, minute int64, j int) int64 {
	off := splitmix64(gen.seed^uint64(minute)*0x2545f4914f6cdd1d^uint64(j)<<48) % 60000
	return gen.IndexAt(minute*60000) + int64(off)
}

// prune lets the model forget what no future query can ask about.
func (r *runner) prune() {
	now := time.Now()
	if pw, ok := r.model.ProfileWatermark(now); ok {
		r.model.PruneProfiles(pw - 2*maxProfileSpan.Milliseconds())
	}
	if aw, ok := r.model.AggregateWatermark(now); ok {
		r.model.PruneAggregates(aw - maxAggregateBack - 10 - 1)
	}
}

// Retry bookkeeping.

type retryItem struct {
	due     time.Time
	id      int64
	attempt int
}

type retryHeap []retryItem

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retryItem)) }
func (h *retryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// backoff is the wait before attempt (1, 2, ...): 100 ms doubling, at
// most 2 s.
func backoff(attempt int) time.Duration {
	return min(100*time.Millisecond<<min(attempt-1, 5), 2*time.Second)
}

// tagFailed records a failed attempt and schedules the next one if
// retrying.
func (r *runner) tagFailed(id int64, attempt int, retryable bool) {
	r.retryMu.Lock()
	defer r.retryMu.Unlock()
	r.unacked[id] = struct{}{}
	if r.cfg.Retry && retryable {
		heap.Push(&r.retryQ, retryItem{due: time.Now().Add(backoff(attempt + 1)), id: id, attempt: attempt + 1})
	}
}

func (r *runner) tagAcked(id int64, attempt int) {
	if attempt == 0 {
		return
	}
	r.retryMu.Lock()
	delete(r.unacked, id)
	r.retryMu.Unlock()
}

// dispatchRetries hands every due retry to the workers.
func (r *runner) dispatchRetries(ctx context.Context) bool {
	now := time.Now()
	for {
		r.retryMu.Lock()
		if len(r.retryQ) == 0 || r.retryQ[0].due.After(now) {
			r.retryMu.Unlock()
			return true
		}
		it := heap.Pop(&r.retryQ).(retryItem)
		r.retryMu.Unlock()
		r.retries.Add(1)
		if !r.dispatch(ctx, workItem{kind: kindTag, id: it.id, attempt: it.attempt}) {
			return false
		}
	}
}

// inOutage reports whether d (since the start) falls in a declared outage.
func (r *runner) inOutage(d time.Duration) bool {
	for _, w := range r.cfg.Outages {
		if w.contains(d) {
			return true
		}
	}
	return false
}

// startProgress writes a status line every second until the returned
// function is called.
func (r *runner) startProgress() (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastSent, perSecond int64
		for {
			select {
			case <-done:
				r.writeProgress(perSecond)
				fmt.Fprintln(r.cfg.Progress)
				return
			case <-t.C:
				s := r.sent.Load()
				perSecond, lastSent = s-lastSent, s
				r.writeProgress(perSecond)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// writeProgress rewrites the status line: tags sent, their rate over the
// last second and how many were acknowledged; then per endpoint the
// answers, p99 latency and errors of the last complete second (the
// current one is still filling) and the errors so far; then mismatches.
func (r *runner) writeProgress(perSecond int64) {
	elapsed := time.Since(r.t0)
	sec := r.timeline.second(int64(elapsed/time.Second) - 1)
	fmt.Fprintf(r.cfg.Progress, "\r%4.0fs sent %d (%d/s) acked %d", elapsed.Seconds(), r.sent.Load(), perSecond, r.acked.Load())
	for ep, st := range sec.endpoints() {
		name := [...]string{"tags", "profiles", "aggregates"}[ep]
		fmt.Fprintf(r.cfg.Progress, " | %s %d/s p99 %s err %d", name, st.Requests, progressLatency(st.P99), r.errors[ep].Load())
	}
	fmt.Fprintf(r.cfg.Progress, " | mismatches %d   ", r.mismatches.Load())
}

// progressLatency is d in two or three significant digits, "-" for none.
func progressLatency(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d <= 0:
		return "-"
	case ms < 10:
		return fmt.Sprintf("%.1fms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0fms", ms)
	}
	return fmt.Sprintf("%.1fs", ms/1000)
}
