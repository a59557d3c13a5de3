package loadgen

import (
	"math"
	"sync"
	"time"

	"github.com/allezon/allezon/schemas"
)

// tagSource gives back the content of a tag by its id; the model keeps
// ids, not tags, so its memory stays small. *Generator is one (not safe
// for concurrent use, hence passed per call).
type tagSource interface {
	Tag(id int64) schemas.UserTag
}

// model is the ground truth: what the server must answer, built only from
// tags whose POST got its 204, and aware of the tags still in flight or
// failed (they may or may not be stored). Ids are given in send order
// starting at 0, and event times never decrease with the id (the replay
// guarantees both). It is safe for concurrent use.
type model struct {
	mu      sync.Mutex
	settle  *settleTracker
	startMs int64 // event time of tag 0; tag i is at startMs+i

	profileFresh   time.Duration
	aggregateFresh time.Duration

	profiles       profileModel
	profileHorizon int64 // ranges must start at or after it (PruneProfiles)
	aggs           aggregateModel

	// skipProfiles and skipAggregates turn off the bookkeeping of an
	// endpoint that gets no queries (an ingest-only run), so the load
	// generator spends its CPU on sending.
	skipProfiles, skipAggregates bool

	// ended says no tag beyond the first endCount (the last at endMs) will
	// ever be sent: once they all settle, the last, partial minute is as
	// complete as it will get, and aggregates may ask about it.
	ended    bool
	endCount int64
	endMs    int64
}

// newModel returns an empty model. startMs is a lower bound of every
// tag's event time; profileFresh and aggregateFresh are how old (wall
// clock) an acknowledgement must be before a query may expect its tag
// (SPEC.md: 10 s and 1 minute).
func newModel(startMs int64, profileFresh, aggregateFresh time.Duration) *model {
	return &model{
		startMs:        startMs,
		profileHorizon: math.MinInt64,
		settle:         newSettleTracker(startMs, max(profileFresh, aggregateFresh)),
		profileFresh:   profileFresh,
		aggregateFresh: aggregateFresh,
		profiles:       newProfileModel(),
		aggs:           newAggregateModel(),
	}
}

// Sent records that tag id is about to be posted for the first time. It
// must be called before the request is written: from then on the server
// may store the tag.
func (m *model) Sent(id int64, t *schemas.UserTag) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle.sent(id, t.TimeMs)
	if !m.skipProfiles {
		m.profiles.sent(id, t)
	}
	if !m.skipAggregates {
		m.aggs.sent(t)
	}
}

// Acked records the 204 of tag id at now. retry says the tag had failed
// before: its profile entry becomes certain, but it may have been counted
// by the first attempt, so its minute stays uncertain for aggregates.
func (m *model) Acked(id int64, t *schemas.UserTag, retry bool, now time.Time) {
	ns := now.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle.settled(id, ns)
	if !m.skipProfiles {
		m.profiles.acked(id, t, ns)
	}
	if !retry && !m.skipAggregates {
		m.aggs.add(t)
	}
}

// Failed records that tag id's request ended without a 204 (transport
// error, time-out, error status): the tag may or may not be stored and
// counted.
func (m *model) Failed(id int64, t *schemas.UserTag, now time.Time) {
	ns := now.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settle.settled(id, ns)
	if !m.skipProfiles {
		m.profiles.failed(id, t)
	}
	m.aggs.markUncertain(schemas.MinuteOf(t.TimeMs))
}

// ProfileWatermark is the latest `to` a /user_profiles range may have at
// now: every tag before it was acknowledged at least the profile freshness
// ago (or failed). ok is false when none is known.
func (m *model) ProfileWatermark(now time.Time) (ms int64, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.settle.watermark(m.profileFresh, now.UnixNano())
}

// AggregateWatermark is the latest minute (exclusive) an /aggregates range
// may end at, at now.
func (m *model) AggregateWatermark(now time.Time) (minute int64, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.aggregateWatermarkLocked(now.UnixNano())
}

// EndSending records that the sending phase is over after count tags, the
// last of them at event time lastMs.
func (m *model) EndSending(count, lastMs int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ended, m.endCount, m.endMs = true, count, lastMs
}

func (m *model) aggregateWatermarkLocked(now int64) (int64, bool) {
	ms, ok := m.settle.watermark(m.aggregateFresh, now)
	if !ok {
		return 0, false
	}
	if m.ended && m.endCount > 0 && m.settle.settledAll(m.endCount, m.aggregateFresh, now) {
		return schemas.MinuteOf(m.endMs) + 1, true
	}
	// Minute k is complete when all of it, [60000k, 60000(k+1)), is below ms.
	return schemas.MinuteOf(ms), true
}
