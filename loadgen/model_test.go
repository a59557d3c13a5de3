package loadgen

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/allezon/allezon/schemas"
)

// Hand-made sequences: a sliceSource holds the tags by id, and the model
// is driven with explicit wall-clock times.

type sliceSource []schemas.UserTag

func (s sliceSource) Tag(id int64) schemas.UserTag { return s[id] }

var (
	t0ms = DefaultStart.UnixMilli()
	wall = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // wall clock of the hand-made runs
)

const fresh = 10 * time.Second

func mkTag(cookie string, offMs int64, action schemas.Action, price int32) schemas.UserTag {
	return schemas.UserTag{
		TimeMs: t0ms + offMs, Cookie: cookie, Country: "PL", Device: schemas.PC, Action: action,
		Origin: "o1", ProductID: fmt.Sprint("p", offMs), BrandID: "b1", CategoryID: "c1", Price: price,
	}
}

// harness feeds a model with a source of tags.
type harness struct {
	t     *testing.T
	m     *model
	src   sliceSource
	query time.Time // when queries are asked
}

func newHarness(t *testing.T, tags ...schemas.UserTag) *harness {
	return &harness{t: t, m: newModel(t0ms, fresh, time.Minute), src: tags, query: wall.Add(fresh + time.Second)}
}

func (h *harness) sendAll()       { h.sendRange(0, len(h.src)) }
func (h *harness) ackAll()        { h.ackRange(0, len(h.src), wall) }
func (h *harness) sendAndAckAll() { h.sendAll(); h.ackAll() }
func (h *harness) sendRange(a, b int) {
	for i := a; i < b; i++ {
		h.m.Sent(int64(i), &h.src[i])
	}
}
func (h *harness) ackRange(a, b int, at time.Time) {
	for i := a; i < b; i++ {
		h.m.Acked(int64(i), &h.src[i], false, at)
	}
}

// profile asks for cookie's tags in [from, to) (offsets from t0ms), limit
// < 0 meaning no limit parameter.
func (h *harness) profile(cookie string, from, to int64, limit int) (string, bool, string) {
	q := profileQuery{Cookie: cookie, FromMs: t0ms + from, ToMs: t0ms + to, Limit: max(limit, 0), HasLimit: limit >= 0}
	body, nonEmpty, reason := h.m.ProfileExpected(nil, &q, h.query, h.src)
	return string(body), nonEmpty, reason
}

// ids lists the ids of the tags in a profile body, in order, by their
// product ids ("p<offset>").
func tagOffsets(body string) string {
	var out []string
	for _, part := range strings.Split(body, `"product_id":"p`)[1:] {
		out = append(out, part[:strings.IndexByte(part, '"')])
	}
	return strings.Join(out, ",")
}

func TestSettleWatermark(t *testing.T) {
	s := newSettleTracker(1000, time.Minute)
	ns := func(d time.Duration) int64 { return wall.Add(d).UnixNano() }
	for id := int64(0); id < 5; id++ {
		s.sent(id, 1000+id)
	}
	// Out of order: 1, 3 and 4 end first; the prefix stays empty.
	s.settled(1, ns(0))
	s.settled(3, ns(0))
	s.settled(4, ns(0))
	if wm, ok := s.watermark(10*time.Second, ns(20*time.Second)); !ok || wm != 1000 {
		t.Errorf("watermark with tag 0 in flight = %d, %v; want 1000 (nothing before the first tag)", wm, ok)
	}
	s.settled(0, ns(time.Second))
	// Prefix 0,1 and tag 2 sent: times < 1002 are settled.
	tests := []struct {
		fresh time.Duration
		now   time.Duration
		want  int64
	}{
		{10 * time.Second, 10 * time.Second, 1000}, // tag 0 settled 9 s ago only
		{10 * time.Second, 11 * time.Second, 1002}, // now 10 s
		{10 * time.Second, time.Hour, 1002},        // tag 2 still in flight
		{time.Minute, 60*time.Second + 1, 1000},    // not yet for the longer freshness
		{time.Minute, 61*time.Second + 10*time.Millisecond, 1002},
	}
	for _, tt := range tests {
		if wm, ok := s.watermark(tt.fresh, ns(tt.now)); !ok || wm != tt.want {
			t.Errorf("watermark(%v) at +%v = %d, %v; want %d", tt.fresh, tt.now, wm, ok, tt.want)
		}
	}
	s.settled(2, ns(2*time.Second)) // a failure settles too
	// All settled and nothing more sent: a next tag may share tag 4's
	// millisecond, so the bound excludes it.
	if wm, _ := s.watermark(10*time.Second, ns(12*time.Second+10*time.Millisecond)); wm != 1004 {
		t.Errorf("watermark after all settled = %d, want 1004", wm)
	}
}

func TestProfileBasic(t *testing.T) {
	h := newHarness(t,
		mkTag("c", 0, schemas.View, 1),
		mkTag("other", 1, schemas.View, 1),
		mkTag("c", 2, schemas.Buy, 5),
		mkTag("c", 3, schemas.View, 2),
		mkTag("c", 4, schemas.View, 3),
	)
	h.sendAndAckAll()
	tests := []struct {
		name      string
		cookie    string
		from, to  int64
		limit     int
		views     string // offsets, newest first
		nonEmpty  bool
		wantEmpty bool
	}{
		{name: "all", cookie: "c", from: -1000, to: 4, limit: -1, views: "3,0", nonEmpty: true},
		{name: "half-open range", cookie: "c", from: 3, to: 4, limit: -1, views: "3", nonEmpty: true},
		{name: "limit", cookie: "c", from: 0, to: 4, limit: 1, views: "3", nonEmpty: true},
		{name: "limit 0", cookie: "c", from: 0, to: 4, limit: 0, views: ""},
		{name: "unknown cookie", cookie: "nobody", from: 0, to: 4, limit: -1, views: ""},
		{name: "before the stream", cookie: "c", from: -5000, to: -1000, limit: -1, views: ""},
	}
	for _, tt := range tests {
		body, nonEmpty, reason := h.profile(tt.cookie, tt.from, tt.to, tt.limit)
		if reason != "" {
			t.Errorf("%s: unfair: %s", tt.name, reason)
			continue
		}
		views := body[:strings.Index(body, `"buys"`)]
		if got := tagOffsets(views); got != tt.views || nonEmpty != tt.nonEmpty {
			t.Errorf("%s: views %q nonEmpty %v, want %q %v; body %s", tt.name, got, nonEmpty, tt.views, tt.nonEmpty, body)
		}
	}
	// Byte layout of a whole answer.
	body, _, _ := h.profile("c", 2, 4, -1)
	want := `{"cookie":"c","views":[` + string(schemas.AppendUserTagJSON(nil, &h.src[3])) + `],"buys":[` +
		string(schemas.AppendUserTagJSON(nil, &h.src[2])) + `]}`
	if body != want {
		t.Errorf("body\n got %s\nwant %s", body, want)
	}
	// The last tag's own millisecond is beyond the watermark.
	if _, _, reason := h.profile("c", 0, 5, -1); reason != unfairWatermark {
		t.Errorf("range up to the newest tag: reason %q, want %q", reason, unfairWatermark)
	}
}

func TestProfileFreshness(t *testing.T) {
	h := newHarness(t, mkTag("c", 0, schemas.View, 1), mkTag("c", 1, schemas.View, 1), mkTag("c", 2, schemas.View, 1))
	h.sendAll()
	h.ackRange(0, 1, wall)
	h.ackRange(1, 3, wall.Add(5*time.Second))
	// At wall+11s, tag 0 is old enough, tags 1 and 2 are not.
	if body, _, reason := h.profile("c", 0, 1, -1); reason != "" || tagOffsets(body) != "0" {
		t.Errorf("old enough tag: %q %q", body, reason)
	}
	if _, _, reason := h.profile("c", 0, 2, -1); reason != unfairWatermark {
		t.Errorf("fresh tag: reason %q, want %q", reason, unfairWatermark)
	}
	h.query = wall.Add(16 * time.Second)
	if body, _, reason := h.profile("c", 0, 2, -1); reason != "" || tagOffsets(body) != "1,0" {
		t.Errorf("later: %q %q", body, reason)
	}
}

func TestProfileInFlightBlocksWatermark(t *testing.T) {
	h := newHarness(t, mkTag("c", 0, schemas.View, 1), mkTag("d", 1, schemas.View, 1), mkTag("c", 2, schemas.View, 1))
	h.sendAll()
	h.ackRange(0, 1, wall)
	h.ackRange(2, 3, wall) // tag 1 still in flight: nothing after it is certain
	if _, _, reason := h.profile("c", 0, 2, -1); reason != unfairWatermark {
		t.Errorf("range past an in-flight tag: reason %q, want %q", reason, unfairWatermark)
	}
	if body, _, reason := h.profile("c", 0, 1, -1); reason != "" || tagOffsets(body) != "0" {
		t.Errorf("range before it: %q %q", body, reason)
	}
}

// many returns n VIEWs of cookie c at offsets 0..n-1.
func many(c string, n int) []schemas.UserTag {
	tags := make([]schemas.UserTag, n)
	for i := range tags {
		tags[i] = mkTag(c, int64(i), schemas.View, 1)
	}
	return tags
}

func TestProfileTrimming(t *testing.T) {
	tests := []struct {
		name     string
		sent     int // tags sent; all but the last acknowledged
		from, to int64
		limit    int
		want     string // offsets, or the reason
	}{
		{name: "untrimmed", sent: 150, from: 0, to: 149, limit: -1, want: "148..0"},
		{name: "200 sent", sent: 200, from: 0, to: 199, limit: -1, want: "198..0"},
		{name: "201 sent: the oldest may go", sent: 201, from: 0, to: 200, limit: -1, want: unfairTrimmed},
		// 205 sent: the 5 oldest may be trimmed.
		{name: "range reaches trimmed tags", sent: 205, from: 0, to: 200, limit: -1, want: unfairTrimmed},
		{name: "range starts after them", sent: 205, from: 5, to: 200, limit: -1, want: "199..5"},
		{name: "limit keeps to the newest", sent: 205, from: 0, to: 200, limit: 100, want: "199..100"},
		{name: "limit 199 reaches rank 200", sent: 205, from: 0, to: 204, limit: 199, want: "203..5"},
		{name: "limit 200 reaches rank 204", sent: 205, from: 0, to: 204, limit: -1, want: unfairTrimmed},
		// The model itself drops entries beyond keepEntries.
		{name: "dropped by the model", sent: 600, from: 0, to: 599, limit: 10, want: "598..589"},
		{name: "range over dropped entries", sent: 600, from: 0, to: 20, limit: -1, want: unfairTrimmed},
	}
	for _, tt := range tests {
		h := newHarness(t, many("c", tt.sent)...)
		h.sendAll()
		h.ackRange(0, tt.sent-1, wall) // the newest stays in flight but counts for the 200
		body, _, reason := h.profile("c", tt.from, tt.to, tt.limit)
		got := reason
		if reason == "" {
			got = rangeText(tagOffsets(body))
		}
		if got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}

// rangeText shortens "5,4,3" to "5..3" for long runs.
func rangeText(s string) string {
	parts := strings.Split(s, ",")
	if len(parts) < 3 {
		return s
	}
	return parts[0] + ".." + parts[len(parts)-1]
}

func TestProfileTies(t *testing.T) {
	// Two VIEWs in the same millisecond, then one later.
	h := newHarness(t, mkTag("c", 0, schemas.View, 1), mkTag("c", 1, schemas.View, 1), mkTag("c", 1, schemas.View, 2), mkTag("c", 2, schemas.View, 1), mkTag("x", 3, schemas.View, 1))
	h.src[2].ProductID = "p1b"
	h.sendAndAckAll()
	if _, _, reason := h.profile("c", 0, 3, 2); reason != unfairTie {
		t.Errorf("limit cutting a same-ms pair: reason %q, want %q", reason, unfairTie)
	}
	// Equal times: either order is right; the model lists them by id.
	if body, _, reason := h.profile("c", 0, 3, 3); reason != "" || tagOffsets(body) != "2,1b,1" {
		t.Errorf("limit above the pair: %q %q", tagOffsets(body), reason)
	}
	if body, _, reason := h.profile("c", 0, 2, 2); reason != "" || tagOffsets(body) != "1b,1" {
		t.Errorf("limit equal to the pair: %q %q", tagOffsets(body), reason)
	}

	// A tie at the 200 boundary: a pair at ms 0, 198 newer tags, and one
	// more in flight: the pair ranks 200-201, so neither is sure to be kept.
	tags := []schemas.UserTag{mkTag("c", 0, schemas.View, 1), mkTag("c", 0, schemas.View, 2)}
	for i := 1; i <= 199; i++ {
		tags = append(tags, mkTag("c", int64(i), schemas.View, 1))
	}
	h = newHarness(t, tags...)
	h.sendAll()
	h.ackRange(0, len(tags)-1, wall)
	if _, _, reason := h.profile("c", 0, 199, -1); reason != unfairTrimmed {
		t.Errorf("pair at rank 200-201: reason %q, want %q", reason, unfairTrimmed)
	}
	if _, _, reason := h.profile("c", 0, 199, 199); reason != unfairTie {
		t.Errorf("limit 199 cutting the pair: reason %q, want %q", reason, unfairTie)
	}
	if body, _, reason := h.profile("c", 0, 199, 198); reason != "" || rangeText(tagOffsets(body)) != "198..1" {
		t.Errorf("the 198 newest: %q %q", rangeText(tagOffsets(body)), reason)
	}
}

func TestProfileFailedAndRetried(t *testing.T) {
	h := newHarness(t, mkTag("c", 0, schemas.View, 1), mkTag("c", 1, schemas.View, 1), mkTag("c", 2, schemas.View, 1), mkTag("x", 3, schemas.View, 1))
	h.sendAll()
	h.ackRange(0, 1, wall)
	h.m.Failed(1, &h.src[1], wall)
	h.ackRange(2, 4, wall)
	if _, _, reason := h.profile("c", 0, 3, -1); reason != unfairPending {
		t.Errorf("range holding a failed tag: reason %q, want %q", reason, unfairPending)
	}
	if body, _, reason := h.profile("c", 2, 3, -1); reason != "" || tagOffsets(body) != "2" {
		t.Errorf("range after it: %q %q", tagOffsets(body), reason)
	}
	if body, _, reason := h.profile("c", 0, 3, 1); reason != "" || tagOffsets(body) != "2" {
		t.Errorf("limit stopping before it: %q %q", tagOffsets(body), reason)
	}
	// Retried and acknowledged: expected again once old enough.
	h.m.Acked(1, &h.src[1], true, wall.Add(5*time.Second))
	if _, _, reason := h.profile("c", 0, 3, -1); reason != unfairPending {
		t.Errorf("retry acknowledged 6 s ago: reason %q, want %q", reason, unfairPending)
	}
	h.query = wall.Add(20 * time.Second)
	if body, _, reason := h.profile("c", 0, 3, -1); reason != "" || tagOffsets(body) != "2,1,0" {
		t.Errorf("retry acknowledged 15 s ago: %q %q", tagOffsets(body), reason)
	}
	// The aggregates stay uncertain for the failed tag's minute.
	if !h.m.UncertainMinute(schemas.MinuteOf(h.src[1].TimeMs)) {
		t.Error("the failed tag's minute is not uncertain")
	}
}

func TestProfilePrune(t *testing.T) {
	h := newHarness(t, mkTag("old", 0, schemas.View, 1), mkTag("new", 60_000, schemas.View, 1), mkTag("x", 60_001, schemas.View, 1))
	h.sendAndAckAll()
	h.m.PruneProfiles(t0ms + 30_000)
	if _, _, reason := h.profile("old", 0, 60_001, -1); reason != unfairPruned {
		t.Errorf("range before the horizon: reason %q, want %q", reason, unfairPruned)
	}
	if n := len(h.m.profiles.cookies); n != 2 {
		t.Errorf("%d cookies kept, want 2 (old one pruned)", n)
	}
	if body, _, reason := h.profile("new", 30_000, 60_001, -1); reason != "" || tagOffsets(body) != "60000" {
		t.Errorf("after the horizon: %q %q", body, reason)
	}
}

// TestAggregateWatermarkAfterSendingEnds: while tags keep coming, the minute
// the stream is in is not complete; once sending ended and every tag is
// older than the freshness, that last partial minute may be asked about.
func TestAggregateWatermarkAfterSendingEnds(t *testing.T) {
	var tags []schemas.UserTag
	for i := range int64(5) { // minute 0 of the run, 10 ms apart
		tags = append(tags, mkTag("c", i*10, schemas.View, 1))
	}
	// Tag ids must match times 1 ms apart from t0ms for EndSending's lastMs.
	h := newHarness(t, tags...)
	h.sendAndAckAll()
	minute0 := schemas.MinuteOf(t0ms)
	late := wall.Add(2 * time.Minute)

	if wm, ok := h.m.AggregateWatermark(late); !ok || wm != minute0 {
		t.Fatalf("before the end: watermark %d (ok %v), want %d: the running minute is not complete", wm, ok, minute0)
	}
	h.m.EndSending(int64(len(tags)), tags[len(tags)-1].TimeMs)
	if wm, ok := h.m.AggregateWatermark(wall.Add(30 * time.Second)); !ok || wm != minute0 {
		t.Fatalf("ended but not yet fresh: watermark %d, want %d", wm, minute0)
	}
	if wm, ok := h.m.AggregateWatermark(late); !ok || wm != minute0+1 {
		t.Fatalf("ended and fresh: watermark %d (ok %v), want %d", wm, ok, minute0+1)
	}
}
