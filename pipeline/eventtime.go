package pipeline

import (
	"math"
	"sync"

	"github.com/allezon/allezon/schemas"
)

// maxPendingMinutes bounds the minutes eventClock tracks above the
// confirmed one, so a flood of tags scattered over distant times cannot
// grow it without end.
const maxPendingMinutes = 4096

// eventClock tells retention how far event time has got. It does not trust
// a single event: SPEC keeps "the last 24 hours of event time relative to
// the newest tag", and one accepted tag stamped in the year 9999 would
// otherwise move the cut-off past every real minute and drop them all. A
// minute counts as reached once committed events in it number at least
// quorum; at SPEC's rate a real minute holds tens of thousands.
type eventClock struct {
	quorum int64

	mu        sync.Mutex
	confirmed int64           // newest minute with quorum events; MinInt64 before
	pending   map[int64]int64 // events seen per minute above confirmed
}

func newEventClock(quorum int) *eventClock {
	return &eventClock{quorum: int64(max(quorum, 1)), confirmed: math.MinInt64, pending: map[int64]int64{}}
}

// add records the events of one committed flush.
func (c *eventClock) add(deltas map[schemas.Cell]schemas.Totals) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for cell, t := range deltas {
		if cell.Minute <= c.confirmed {
			continue
		}
		n := c.pending[cell.Minute] + t.Count
		if n >= c.quorum {
			c.confirmed = cell.Minute
		}
		c.pending[cell.Minute] = n
	}
	for m := range c.pending {
		if m <= c.confirmed {
			delete(c.pending, m)
		}
	}
	if len(c.pending) > maxPendingMinutes {
		clear(c.pending) // only delays retention; never drops data
	}
}

// newest is the newest confirmed minute, false before there is one.
func (c *eventClock) newest() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.confirmed, c.confirmed != math.MinInt64
}
