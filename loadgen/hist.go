package loadgen

import (
	"math/bits"
	"time"
)

// histogram records latencies in fixed memory: log-linear buckets, 2^subBits
// per power of two of microseconds, so a quantile is known within 1/32
// (~3 %) and reported as its bucket's upper bound (never optimistic). The
// maximum is kept exactly.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	subBits     = 5
	subBuckets  = 1 << subBits
	histBuckets = (64 - subBits + 1) * subBuckets
)

// bucketOf maps a latency in µs to its bucket.
func bucketOf(us uint64) int { return bucketOfBits(us, subBits) }

// bucketUpper is the largest µs value of bucket b.
func bucketUpper(b int) uint64 { return bucketUpperBits(b, subBits) }

// bucketOfBits maps a value to its log-linear bucket with 2^sub buckets
// per power of two: values below 2^sub get their own bucket; above, the
// top sub+1 bits select it. Shared with the timeline's coarser sketch.
func bucketOfBits(us uint64, sub int) int {
	n := uint64(1) << uint(sub)
	if us < n {
		return int(us)
	}
	exp := bits.Len64(us) - sub - 1 // ≥ 0
	return (exp+1)*int(n) + int(us>>uint(exp)) - int(n)
}

// bucketUpperBits is the largest value of bucket b of bucketOfBits.
func bucketUpperBits(b, sub int) uint64 {
	n := 1 << uint(sub)
	if b < n {
		return uint64(b)
	}
	exp := b/n - 1
	mant := uint64(b%n + n)
	return (mant+1)<<uint(exp) - 1
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d/time.Microsecond))]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the latency below or at which a share q of the records
// lie (0 with no records), capped at the exact maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(bucketUpper(b)+1)*time.Microsecond, h.max)
		}
	}
	return h.max
}
