package pipeline

import (
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/allezon/allezon/schemas"
)

// maxTickMinutes bounds the distinct minutes one tick's histogram holds, so
// a flood scattered over distant times cannot grow it without end.
const maxTickMinutes = 4096

// noSample marks a tick that committed no events, and a frontier not yet
// established.
const noSample = math.MinInt64

// eventClock tells retention how far event time has got: the retention
// frontier, behind which the aggregates keep Config.Retention.
//
// The rule is persistence in wall time. At every drop tick the worker
// takes the (lower, count-weighted) median minute of the events it
// committed since the previous tick; the frontier is the minimum of those
// samples over the last settle period (Config.RetentionSettle) of wall
// time, and never moves back. A tick that committed nothing yields no
// sample and holds the frontier until it left the period, and after a
// (re)start nothing moves it before a full period was observed.
//
// The reason: SPEC keeps "the last 24 hours of event time relative to the
// newest tag", but the topic is an open door and any client can stamp tags
// in the year 9999, or at the wall clock while a replay of 2022 runs. A
// newest-event rule, or any count quorum, lets one such burst drop every
// real minute. Under this rule a burst of any size that lasts less than
// the settle period cannot move the frontier (in every period some tick
// holds a majority of older events, or no events at all), whereas a stream
// that keeps the majority of its events ahead for the whole period is the
// stream, and moves the frontier behind it. Everything that can go wrong
// only delays retention, which keeps more: restarts, quiet ticks, a
// partition that lags, a flood folded into fewer minutes (see
// minuteCounts.add). Each worker judges from its own commits and drops for
// all; a worker that owns no partition never drops.
type eventClock struct {
	settle time.Duration

	mu       sync.Mutex
	cur      minuteCounts // events committed since the last tick
	samples  []clockSample
	since    time.Time // the first tick; zero before it
	frontier int64     // noSample until established
}

// clockSample is one tick's median minute, noSample if it committed nothing.
type clockSample struct {
	at     time.Time
	minute int64
}

func newEventClock(settle time.Duration) *eventClock {
	return &eventClock{settle: settle, frontier: noSample, cur: minuteCounts{n: map[int64]int64{}}}
}

// add records the events of one committed flush.
func (c *eventClock) add(deltas map[schemas.Cell]schemas.Totals) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for cell, t := range deltas {
		c.cur.add(cell.Minute, t.Count)
	}
}

// tick closes the sample of the events added since the previous tick, at
// wall time now (monotonic, from a ticker), and returns the frontier,
// false while there is none.
func (c *eventClock) tick(now time.Time) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.since.IsZero() {
		c.since = now
	}
	c.samples = append(c.samples, clockSample{at: now, minute: c.cur.lowerMedian()})
	c.cur.reset()
	start := now.Add(-c.settle)
	old := 0
	for old < len(c.samples)-1 && !c.samples[old].at.After(start) {
		old++
	}
	c.samples = slices.Delete(c.samples, 0, old)
	if now.Sub(c.since) >= c.settle {
		lo := int64(math.MaxInt64)
		for _, s := range c.samples {
			lo = min(lo, s.minute)
		}
		c.frontier = max(c.frontier, lo)
	}
	return c.frontier, c.frontier != noSample
}

// minuteCounts is a histogram of event minutes with at most maxTickMinutes
// buckets.
type minuteCounts struct {
	n     map[int64]int64
	total int64
}

// add counts n events at minute. When the histogram is full it first folds
// every other bucket into the one below it: events only ever move to an
// older minute, so the median can only come out lower, never higher.
func (h *minuteCounts) add(minute, n int64) {
	if n <= 0 {
		return
	}
	if _, ok := h.n[minute]; !ok && len(h.n) >= maxTickMinutes {
		keys := slices.Sorted(maps.Keys(h.n))
		for i := 1; i < len(keys); i += 2 {
			h.n[keys[i-1]] += h.n[keys[i]]
			delete(h.n, keys[i])
		}
	}
	h.n[minute] += n
	h.total += n
}

// lowerMedian is the oldest minute at or below which half the events lie,
// noSample when there are none.
func (h *minuteCounts) lowerMedian() int64 {
	if h.total == 0 {
		return noSample
	}
	var seen int64
	for _, m := range slices.Sorted(maps.Keys(h.n)) {
		seen += h.n[m]
		if 2*seen >= h.total {
			return m
		}
	}
	return noSample // unreachable: seen reaches total
}

func (h *minuteCounts) reset() {
	clear(h.n)
	h.total = 0
}
