package loadgen

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

// Query shapes.
const (
	// recentWindow: a profile query asks about the cookie of one of the
	// last recentWindow tags below the watermark (so answers are mostly
	// non-empty).
	recentWindow = 5000
	// maxProfileSpan is the longest /user_profiles range asked for.
	maxProfileSpan = 2 * time.Minute
	// maxAggregateBack is how many minutes before the watermark an
	// aggregate range may end.
	maxAggregateBack = 3
	// planTries is how many candidate queries are planned before one is
	// skipped as unfair.
	planTries = 3
	// maxLogged bounds the mismatches and errors written to the log.
	maxLogged = 20
	// maxErrorKinds bounds the error map; further kinds count as "other".
	maxErrorKinds = 16
	// exampleBytes truncates bodies kept in mismatch examples.
	exampleBytes = 4096
)

// worker sends one request at a time; there are Conns of them.
type worker struct {
	r    *runner
	gen  *Generator
	rng  *rand.Rand
	req  *fasthttp.Request
	resp *fasthttp.Response
	uri  []byte
	body []byte
	ep   [numEndpts]EndpointReport // by epTags, epProfiles, epAggregates
}

func newWorker(r *runner, i int) *worker {
	return &worker{
		r:    r,
		gen:  NewGenerator(r.cfg.Seed, r.cfg.Start),
		rng:  rand.New(rand.NewPCG(uint64(r.cfg.Seed), uint64(i)+1)),
		req:  fasthttp.AcquireRequest(),
		resp: fasthttp.AcquireResponse(),
		ep:   [numEndpts]EndpointReport{{Limit: TagLimit}, {Limit: ProfileLimit}, {Limit: AggregateLimit}},
	}
}

func (w *worker) loop() {
	defer fasthttp.ReleaseRequest(w.req)
	defer fasthttp.ReleaseResponse(w.resp)
	for it := range w.r.work {
		switch it.kind {
		case kindTag:
			w.postTag(it.id, it.attempt)
			w.r.tagsInFlight.Add(-1)
		case kindProfile:
			w.queryProfile()
		case kindAggregate:
			w.queryAggregates()
		}
	}
}

// post sends a POST to uri with body and returns when it started, the
// latency, the status (0 on a transport error) and the transport error.
// The response body stays in w.resp.
func (w *worker) post(uri, body []byte, timeout time.Duration) (time.Time, time.Duration, int, error) {
	req := w.req
	req.Reset()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURIBytes(uri)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(body)
	w.resp.Reset()
	start := time.Now()
	err := w.r.client.DoTimeout(req, w.resp, timeout)
	lat := time.Since(start)
	if err != nil {
		return start, lat, 0, err
	}
	return start, lat, w.resp.StatusCode(), nil
}

// Endpoint indexes of worker.ep, runner.errors and the timeline.
const (
	epTags = iota
	epProfiles
	epAggregates
)

// record counts one request's outcome on endpoint ep (epTags, ...) and in
// the timeline, and reports whether it got the wanted status.
func (w *worker) record(ep int, start time.Time, lat time.Duration, status int, err error, want int) bool {
	e := &w.ep[ep]
	e.Requests++
	at := start.Sub(w.r.t0)
	outage := w.r.inOutage(at) || w.r.inOutage(at+lat)
	if lat > e.Limit {
		if outage {
			e.OutageTimeOuts++
		} else {
			e.TimeOuts++
		}
	}
	var kind string
	if err != nil {
		kind = errorKind(err)
	} else {
		e.hist.record(lat)
		if status != want {
			kind = "status " + strconv.Itoa(status)
		}
	}
	o := outcomeOK
	switch {
	case kind == "":
	case outage:
		o = outcomeOutageError
	default:
		o = outcomeError
	}
	w.r.timeline.record(ep, at+lat, lat, err == nil, o)
	switch o {
	case outcomeOK:
		e.OK++
		return true
	case outcomeOutageError:
		e.OutageErrors = countKind(e.OutageErrors, kind)
		return false
	}
	e.Errors = countKind(e.Errors, kind)
	w.r.errors[ep].Add(1)
	if w.r.logged.Add(1) <= maxLogged {
		w.r.cfg.Logger.Warn("loadgen: request failed", "uri", string(w.req.RequestURI()), "kind", kind,
			"status", status, "err", err, "latency", lat, "body", truncate(w.resp.Body()))
	}
	return false
}

func countKind(m map[string]int64, kind string) map[string]int64 {
	if m == nil {
		m = make(map[string]int64)
	}
	if _, ok := m[kind]; !ok && len(m) >= maxErrorKinds {
		kind = "other"
	}
	m[kind]++
	return m
}

// errorKind names a transport error by its cause, without addresses, so
// the report's error map stays small.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, fasthttp.ErrDialTimeout):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "no free connection"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "transport error"
}

func truncate(b []byte) string {
	if len(b) <= exampleBytes {
		return string(b)
	}
	return string(b[:exampleBytes]) + "…(" + strconv.Itoa(len(b)) + " bytes)"
}

// postTag posts tag id. The model learns of it before the request is
// written, and of its outcome right after.
func (w *worker) postTag(id int64, attempt int) {
	r := w.r
	t := w.gen.Tag(id)
	if attempt == 0 {
		r.model.Sent(id, &t)
		r.sent.Add(1)
	}
	w.uri = append(append(w.uri[:0], r.baseURL...), "/user_tags"...)
	w.body = schemas.AppendUserTagJSON(w.body[:0], &t)
	start, lat, status, err := w.post(w.uri, w.body, r.cfg.Timeout)
	if w.record(epTags, start, lat, status, err, fasthttp.StatusNoContent) {
		r.model.Acked(id, &t, attempt > 0, time.Now())
		r.acked.Add(1) // a tag is acknowledged once: a retry follows a failure
		r.tagAcked(id, attempt)
		return
	}
	r.model.Failed(id, &t, time.Now())
	retryable := err != nil || status >= 500 || status == fasthttp.StatusTooManyRequests
	r.tagFailed(id, attempt, retryable)
}

// queryProfile plans a fair /user_profiles query, sends it with its
// expected answer and compares.
func (w *worker) queryProfile() {
	r, e := w.r, &w.ep[epProfiles]
	var (
		q        profileQuery
		expected []byte
		nonEmpty bool
		reason   string
		planned  time.Time
	)
	for range planTries {
		planned = time.Now()
		q = w.planProfile(planned)
		expected, nonEmpty, reason = r.model.ProfileExpected(nil, &q, planned, w.gen)
		if reason == "" {
			break
		}
	}
	if reason != "" {
		e.Skipped = countKind(e.Skipped, reason)
		return
	}
	w.uri = appendProfileURI(append(w.uri[:0], r.baseURL...), &q)
	start, lat, status, err := w.post(w.uri, expected, r.cfg.Timeout)
	if !w.record(epProfiles, start, lat, status, err, fasthttp.StatusOK) {
		return
	}
	got := w.resp.Body()
	if ok, diff := compareProfiles(expected, got); !ok {
		// Newer tags of the cookie sent while the query ran may have
		// pushed an expected tag out of the 200 the server must keep.
		again, _, reason := r.model.ProfileExpected(nil, &q, planned, w.gen)
		if reason != "" || string(again) != string(expected) {
			e.Skipped = countKind(e.Skipped, unfairChanged)
			return
		}
		w.mismatch(e, start, diff, expected, got)
	}
	e.Compared++
	if nonEmpty {
		e.NonEmpty++
	}
}

// planProfile picks a cookie seen shortly before the watermark, a range
// ending at or before it, and a limit.
func (w *worker) planProfile(now time.Time) profileQuery {
	rng := w.rng
	var q profileQuery
	wm, ok := w.r.model.ProfileWatermark(now)
	if !ok {
		wm = w.gen.StartMs()
	}
	wmIdx := w.gen.IndexAt(wm)
	q.ToMs = wm
	if wmIdx <= 0 {
		// Nothing old enough yet: ask about a cookie of the first tags;
		// the answer must be empty.
		t := w.gen.Tag(rng.Int64N(1000))
		q.Cookie = t.Cookie
	} else {
		j := wmIdx - 1 - rng.Int64N(min(wmIdx, recentWindow))
		t := w.gen.Tag(j)
		q.Cookie = t.Cookie
		if rng.IntN(10) < 3 {
			q.ToMs = t.TimeMs + 1 + rng.Int64N(wm-t.TimeMs)
		}
	}
	var span int64
	switch p := rng.IntN(100); {
	case p < 50:
		span = 1 + rng.Int64N(10_000)
	case p < 85:
		span = 10_000 + rng.Int64N(50_000)
	default:
		span = 60_000 + rng.Int64N(maxProfileSpan.Milliseconds()-60_000)
	}
	q.FromMs = q.ToMs - span
	switch p := rng.IntN(100); {
	case p < 70:
	case p < 90:
		q.HasLimit, q.Limit = true, 1+rng.IntN(defaultLimit-1)
	case p < 95:
		q.HasLimit, q.Limit = true, 0
	default:
		q.HasLimit, q.Limit = true, defaultLimit
	}
	return q
}

// appendProfileURI appends the path and query of q.
func appendProfileURI(dst []byte, q *profileQuery) []byte {
	dst = append(dst, "/user_profiles/"...)
	dst = appendPathSegment(dst, q.Cookie)
	dst = append(dst, "?time_range="...)
	dst = appendRangeTime(dst, q.FromMs, true)
	dst = append(dst, '_')
	dst = appendRangeTime(dst, q.ToMs, true)
	if q.HasLimit {
		dst = append(dst, "&limit="...)
		dst = strconv.AppendInt(dst, int64(q.Limit), 10)
	}
	return dst
}

// appendPathSegment percent-encodes every byte but RFC 3986's unreserved
// ones, so '/', '%', '+', '?', '#', spaces and UTF-8 all arrive as data.
func appendPathSegment(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

// appendRangeTime appends a range bound: UTC, no zone, with milliseconds
// for /user_profiles and whole seconds for /aggregates.
func appendRangeTime(dst []byte, ms int64, millis bool) []byte {
	t := time.UnixMilli(ms).UTC()
	if millis {
		return t.AppendFormat(dst, "2006-01-02T15:04:05.000")
	}
	return t.AppendFormat(dst, "2006-01-02T15:04:05")
}

// queryAggregates plans a fair /aggregates query, sends it with its
// expected answer and compares.
func (w *worker) queryAggregates() {
	r, e := w.r, &w.ep[epAggregates]
	var (
		q        aggregateQuery
		expected []byte
		nonEmpty bool
		reason   string
	)
	for range planTries {
		now := time.Now()
		q, reason = w.planAggregate(now)
		if reason == "" {
			expected, nonEmpty, reason = r.model.AggregateExpected(nil, &q, now)
		}
		if reason == "" {
			break
		}
	}
	if reason != "" {
		e.Skipped = countKind(e.Skipped, reason)
		return
	}
	w.uri = appendAggregateURI(append(w.uri[:0], r.baseURL...), &q)
	start, lat, status, err := w.post(w.uri, expected, r.cfg.AggregateTimeout)
	if !w.record(epAggregates, start, lat, status, err, fasthttp.StatusOK) {
		return
	}
	got := w.resp.Body()
	if ok, diff := compareAggregates(expected, got); !ok {
		w.mismatch(e, start, diff, expected, got)
	}
	e.Compared++
	if nonEmpty {
		e.NonEmpty++
	}
}

// planAggregate picks a range of 1..10 whole minutes ending at or a little
// before the watermark and clear of uncertain minutes, an action, one or
// two aggregates, and a filter with values of a probe tag in the range.
func (w *worker) planAggregate(now time.Time) (aggregateQuery, string) {
	rng, m := w.rng, w.r.model
	var q aggregateQuery
	wm, ok := m.AggregateWatermark(now)
	if !ok {
		return q, unfairWatermark
	}
	to := wm
	if rng.IntN(5) == 0 {
		to -= 1 + rng.Int64N(maxAggregateBack)
	}
	n := 1 + rng.Int64N(10)
	for tries := 0; ; tries++ {
		u := int64(-1 << 63)
		for k := to - 1; k >= to-n; k-- {
			if m.UncertainMinute(k) {
				u = k
				break
			}
		}
		if u == -1<<63 {
			break
		}
		if tries == 10 {
			return q, unfairUncertain
		}
		if u == to-1 {
			to--
			continue
		}
		n = to - 1 - u
	}
	q.FromMinute, q.ToMinute = to-n, to
	if rng.IntN(2) == 0 {
		q.Action = schemas.Buy
	}
	switch p := rng.IntN(100); {
	case p < 30:
		q.Aggs = []aggKind{aggCount}
	case p < 55:
		q.Aggs = []aggKind{aggSumPrice}
	case p < 75:
		q.Aggs = []aggKind{aggCount, aggSumPrice}
	case p < 95:
		q.Aggs = []aggKind{aggSumPrice, aggCount}
	case p < 98:
		q.Aggs = []aggKind{aggCount, aggCount}
	default:
		q.Aggs = []aggKind{aggSumPrice, aggSumPrice}
	}
	if dims := schemas.Dims(rng.IntN(int(schemas.AllDims) + 1)); dims != 0 {
		if t, ok := w.pickProbe(&q); ok {
			q.Filter = dims
			q.Origin, q.BrandID, q.CategoryID = t.Origin, t.BrandID, t.CategoryID
		}
	}
	return q, ""
}

// pickProbe finds a probe tag within q's range, of q's action if one turns
// up in a few draws.
func (w *worker) pickProbe(q *aggregateQuery) (schemas.UserTag, bool) {
	var fallback schemas.UserTag
	found := false
	for range 16 {
		minute := q.FromMinute + w.rng.Int64N(int64(q.Minutes()))
		pid := probeID(w.gen, minute, w.rng.IntN(probesPerMinute))
		if pid < 0 || w.r.cfg.Events > 0 && pid >= w.r.cfg.Events {
			continue
		}
		t := w.gen.Tag(pid)
		if t.Action == q.Action {
			return t, true
		}
		fallback, found = t, true
	}
	return fallback, found
}

// appendAggregateURI appends the path and query of q.
func appendAggregateURI(dst []byte, q *aggregateQuery) []byte {
	dst = append(dst, "/aggregates?time_range="...)
	dst = appendRangeTime(dst, q.FromMinute*60000, false)
	dst = append(dst, '_')
	dst = appendRangeTime(dst, q.ToMinute*60000, false)
	dst = append(dst, "&action="...)
	dst = append(dst, q.Action.String()...)
	for _, k := range q.Aggs {
		dst = append(dst, "&aggregates="...)
		dst = append(dst, k.param()...)
	}
	for _, f := range filterColumns {
		if q.Filter&f.dim != 0 {
			dst = append(dst, '&')
			dst = append(dst, f.param...)
			dst = append(dst, '=')
			dst = appendPathSegment(dst, f.value(q))
		}
	}
	return dst
}

// mismatch records a wrong answer.
func (w *worker) mismatch(e *EndpointReport, start time.Time, diff string, expected, got []byte) {
	e.Mismatches++
	w.r.mismatches.Add(1)
	uri := string(w.req.RequestURI())
	if len(e.Examples) < maxExamples {
		e.Examples = append(e.Examples, Mismatch{
			At: start.Sub(w.r.t0), Query: uri, Diff: diff, Expected: truncate(expected), Got: truncate(got),
		})
	}
	if w.r.logged.Add(1) <= maxLogged {
		w.r.cfg.Logger.Warn("loadgen: mismatch", "uri", uri, "diff", diff)
	}
}
