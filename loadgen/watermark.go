package loadgen

import (
	"math"
	"time"
)

// settleTracker computes the event-time watermarks behind which queries are
// fair. Tags get consecutive ids in send order and their event times never
// decrease with the id. A tag is settled when its request ended (204 or
// failure). The settled prefix is the longest run of ids 0..k-1 that are all
// settled; for a freshness F, the watermark is the event time below which
// every tag was settled at least F ago. Requests run concurrently and finish
// out of order, which is why the prefix, not the newest acknowledgement,
// decides.
//
// Memory stays bounded: only the unsettled window of ids and one checkpoint
// per checkpointGrain of wall time (pruned beyond the largest freshness) are
// kept.
type settleTracker struct {
	// pending holds ids base..base+len(pending)-1; the prefix ends at base.
	pending []pendingSlot
	head    int // pending[head] is id base
	base    int64

	prefixMax int64 // latest settle time (unix ns) within the prefix

	// checkpoints, in increasing order of both fields: after prefix end
	// endID, every tag with event time < timeMs was settled by settledAt.
	checkpoints []checkpoint
	maxFresh    time.Duration
}

type pendingSlot struct {
	timeMs    int64
	sent      bool
	settledAt int64 // unix ns; 0 = not yet
}

type checkpoint struct {
	endID     int64
	timeMs    int64 // exclusive event-time bound
	settledAt int64 // unix ns, rounded up to checkpointGrain
}

// checkpointGrain coalesces checkpoints: rounding settle times up keeps the
// watermark conservative (a little late, never early).
const checkpointGrain = int64(10 * time.Millisecond)

// newSettleTracker starts with nothing sent. startMs bounds the event times
// of all tags (none is earlier), so before anything settles the watermark is
// startMs: a query about earlier times is fair and must come back empty.
// maxFresh is the largest freshness ever asked for (older checkpoints are
// dropped).
func newSettleTracker(startMs int64, maxFresh time.Duration) *settleTracker {
	return &settleTracker{
		checkpoints: []checkpoint{{endID: 0, timeMs: startMs, settledAt: math.MinInt64}},
		maxFresh:    maxFresh,
	}
}

// slot returns the slot of id, growing the window as needed, or nil for an
// id already in the settled prefix.
func (s *settleTracker) slot(id int64) *pendingSlot {
	off := id - s.base
	if off < 0 {
		return nil
	}
	for int64(len(s.pending)-s.head) <= off {
		s.pending = append(s.pending, pendingSlot{})
	}
	return &s.pending[s.head+int(off)]
}

// sent records that tag id (event time timeMs) is about to be sent.
func (s *settleTracker) sent(id, timeMs int64) {
	if sl := s.slot(id); sl != nil {
		sl.timeMs, sl.sent = timeMs, true
	}
}

// settled records that tag id's request ended at now (unix ns) and advances
// the prefix.
func (s *settleTracker) settled(id, now int64) {
	sl := s.slot(id)
	if sl == nil || sl.settledAt != 0 {
		return
	}
	if now <= 0 {
		now = 1
	}
	sl.settledAt = now
	advanced := false
	var lastTime int64
	for s.head < len(s.pending) && s.pending[s.head].sent && s.pending[s.head].settledAt != 0 {
		p := s.pending[s.head]
		s.prefixMax = max(s.prefixMax, p.settledAt)
		lastTime = p.timeMs
		s.head++
		s.base++
		advanced = true
	}
	if !advanced {
		return
	}
	if s.head > 1024 && s.head*2 > len(s.pending) {
		n := copy(s.pending, s.pending[s.head:])
		clear(s.pending[n:])
		s.pending = s.pending[:n]
		s.head = 0
	}
	// The bound is the event time of the next tag (times never decrease
	// with the id, so every later tag is at least as late); if it is not
	// sent yet, later tags may share the last settled tag's millisecond,
	// and the bound excludes that millisecond.
	bound := lastTime
	if s.head < len(s.pending) && s.pending[s.head].sent {
		bound = s.pending[s.head].timeMs
	}
	at := (s.prefixMax + checkpointGrain - 1) / checkpointGrain * checkpointGrain
	cp := checkpoint{endID: s.base, timeMs: bound, settledAt: at}
	if n := len(s.checkpoints); n > 0 && s.checkpoints[n-1].settledAt == at {
		s.checkpoints[n-1] = cp
	} else {
		s.checkpoints = append(s.checkpoints, cp)
	}
	s.prune(now)
}

// prune drops checkpoints superseded for every freshness up to maxFresh.
func (s *settleTracker) prune(now int64) {
	limit := now - int64(s.maxFresh)
	i := 0
	for i+1 < len(s.checkpoints) && s.checkpoints[i+1].settledAt <= limit {
		i++
	}
	if i > 0 {
		n := copy(s.checkpoints, s.checkpoints[i:])
		s.checkpoints = s.checkpoints[:n]
	}
}

// watermark is the event time (ms, exclusive) below which every tag was
// settled at least fresh before now (unix ns). ok is false when no such
// time is known (fresh beyond the pruning horizon, or now going backwards).
func (s *settleTracker) watermark(fresh time.Duration, now int64) (ms int64, ok bool) {
	cp, ok := s.lastSettled(fresh, now)
	return cp.timeMs, ok
}

// settledAll reports whether tags 0..n-1 all settled at least fresh before
// now.
func (s *settleTracker) settledAll(n int64, fresh time.Duration, now int64) bool {
	cp, ok := s.lastSettled(fresh, now)
	return ok && cp.endID >= n
}

// lastSettled is the newest checkpoint reached at least fresh before now.
func (s *settleTracker) lastSettled(fresh time.Duration, now int64) (checkpoint, bool) {
	limit := now - int64(fresh)
	// Binary search for the last checkpoint settled by limit.
	lo, hi := 0, len(s.checkpoints)
	for lo < hi {
		m := (lo + hi) / 2
		if s.checkpoints[m].settledAt <= limit {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return checkpoint{}, false
	}
	return s.checkpoints[lo-1], true
}
