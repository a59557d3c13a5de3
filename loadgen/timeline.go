package loadgen

import (
	"sync/atomic"
	"time"
)

// The per-second timeline shows what the summary averages away: a stall,
// a burst of errors, a latency spike after a restart. Workers record into
// it concurrently with atomic adds, since one copy per worker would
// multiply its memory by Conns.
//
// Memory: a second costs 3 endpoints × (4 counters + tlBuckets latency
// counters) × 4 bytes = 1,296 bytes, allocated 64 seconds at a time as
// the run reaches them: 4.7 MB per hour of run. Seconds past
// maxTimelineSecs (9 h 6 min, 42 MB) are not recorded and the report
// says the timeline was truncated.
const (
	// tlSubBits gives the per-second latency sketch 4 buckets per power
	// of two: a p99 reported as its bucket's upper bound is at most 25 %
	// above the true value (the run's summary keeps ~3 %).
	tlSubBits = 2
	// tlMaxExp: latencies up to 2^27 µs (134 s, above every client
	// time-out) get their bucket; longer ones share the last.
	tlMaxExp        = 27
	tlBuckets       = (tlMaxExp - tlSubBits + 1) << tlSubBits
	chunkSecs       = 64
	maxChunks       = 512
	maxTimelineSecs = chunkSecs * maxChunks
	numEndpts       = 3
	tlQuantile      = 0.99
)

// Second is one second of the run in the report's timeline. Requests are
// attributed to the second in which they ended, so a stall shows as
// seconds with nothing answered, followed by one with a latency spike.
type Second struct {
	At         int64       `json:"second"`     // since the start of the run
	TagsAcked  int64       `json:"tags_acked"` // tags that got their 204 in this second (= user_tags.ok)
	Tags       SecondStats `json:"user_tags"`
	Profiles   SecondStats `json:"user_profiles"`
	Aggregates SecondStats `json:"aggregates"`
}

// SecondStats is one endpoint's share of a second.
type SecondStats struct {
	Requests     int64 `json:"requests"` // ended in this second, whatever the outcome
	OK           int64 `json:"ok"`       // answered with the wanted status
	Errors       int64 `json:"errors"`   // failed outside declared outages
	OutageErrors int64 `json:"outage_errors,omitempty"`
	// P99 is the 99th percentile latency of the requests answered (any
	// status) in this second, as the upper bound of a bucket at most
	// 25 % wide; 0 when none was answered.
	P99 time.Duration `json:"p99_ns"`
}

func (s *Second) endpoints() []*SecondStats {
	return []*SecondStats{&s.Tags, &s.Profiles, &s.Aggregates}
}

// endpointSecond is the live, atomically updated form of SecondStats.
type endpointSecond struct {
	requests, ok, errors, outageErrors atomic.Uint32
	lat                                [tlBuckets]atomic.Uint32
}

type timelineChunk [chunkSecs][numEndpts]endpointSecond

// timeline is the run's per-second record, safe for concurrent use.
type timeline struct {
	chunks    [maxChunks]atomic.Pointer[timelineChunk]
	last      atomic.Int64 // highest second recorded, -1 before any
	truncated atomic.Bool
}

func newTimeline() *timeline {
	t := new(timeline)
	t.last.Store(-1)
	return t
}

// outcome is what became of one request, for the timeline.
type outcome uint8

const (
	outcomeOK          outcome = iota // the wanted status
	outcomeError                      // anything else, outside an outage
	outcomeOutageError                // anything else, inside a declared outage
)

// record counts a request of endpoint ep that ended at end (since the
// start of the run); answered says whether it got a response, whose
// latency is then lat.
func (t *timeline) record(ep int, end, lat time.Duration, answered bool, o outcome) {
	sec := int64(end / time.Second)
	s := t.slot(sec, ep, true)
	if s == nil {
		return
	}
	for {
		last := t.last.Load()
		if sec <= last || t.last.CompareAndSwap(last, sec) {
			break
		}
	}
	s.requests.Add(1)
	switch o {
	case outcomeOK:
		s.ok.Add(1)
	case outcomeError:
		s.errors.Add(1)
	case outcomeOutageError:
		s.outageErrors.Add(1)
	}
	if answered {
		us := uint64(max(lat, 0) / time.Microsecond)
		s.lat[min(bucketOfBits(us, tlSubBits), tlBuckets-1)].Add(1)
	}
}

// slot returns the counters of endpoint ep in second sec, allocating its
// chunk if create is set; nil beyond the covered span or not allocated.
func (t *timeline) slot(sec int64, ep int, create bool) *endpointSecond {
	if sec < 0 || sec >= maxTimelineSecs {
		if create {
			t.truncated.Store(true)
		}
		return nil
	}
	p := &t.chunks[sec/chunkSecs]
	c := p.Load()
	if c == nil {
		if !create {
			return nil
		}
		// Another worker may win the race; either way one chunk is in place.
		p.CompareAndSwap(nil, new(timelineChunk))
		c = p.Load()
	}
	return &c[sec%chunkSecs][ep]
}

// second reads second sec (zeros if nothing was recorded in it).
func (t *timeline) second(sec int64) Second {
	out := Second{At: sec}
	for ep, st := range out.endpoints() {
		s := t.slot(sec, ep, false)
		if s == nil {
			continue
		}
		st.Requests = int64(s.requests.Load())
		st.OK = int64(s.ok.Load())
		st.Errors = int64(s.errors.Load())
		st.OutageErrors = int64(s.outageErrors.Load())
		st.P99 = s.quantile(tlQuantile)
	}
	out.TagsAcked = out.Tags.OK
	return out
}

// quantile is the upper bound of the bucket holding the share q of the
// answered requests' latencies (0 with none).
func (s *endpointSecond) quantile(q float64) time.Duration {
	var counts [tlBuckets]uint32
	var n uint64
	for i := range counts {
		counts[i] = s.lat[i].Load()
		n += uint64(counts[i])
	}
	if n == 0 {
		return 0
	}
	rank := min(max(uint64(q*float64(n)+0.5), 1), n)
	var seen uint64
	for b, c := range counts {
		seen += uint64(c)
		if seen >= rank {
			return time.Duration(bucketUpperBits(b, tlSubBits)+1) * time.Microsecond
		}
	}
	return 0 // not reached: seen ends at n ≥ rank
}

// seconds returns the first n seconds, extended to the last one recorded.
func (t *timeline) seconds(n int64) []Second {
	n = min(max(n, t.last.Load()+1), maxTimelineSecs)
	out := make([]Second, n)
	for i := range out {
		out[i] = t.second(int64(i))
	}
	return out
}
