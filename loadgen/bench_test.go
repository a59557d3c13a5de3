package loadgen

import (
	"testing"
	"time"

	"github.com/allezon/allezon/schemas"
)

// The per-tag cost of the load generator itself, so that benchmarks of
// the product can tell how much of the machine loadgen takes.

func BenchmarkGeneratorTag(b *testing.B) {
	g := NewGenerator(1, DefaultStart)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = g.Tag(int64(i))
	}
}

func BenchmarkModelSentAcked(b *testing.B) {
	g := NewGenerator(1, DefaultStart)
	m := newModel(g.StartMs(), 10*time.Second, time.Minute)
	m.WatchFilters(&schemas.UserTag{Origin: "origin-0001", BrandID: "brand-0001", CategoryID: "cat-0001"}, 1<<40)
	tags := make([]schemas.UserTag, 4096)
	for i := range tags {
		tags[i] = g.Tag(int64(i))
	}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		t := tags[i%len(tags)] // recycled content, but times keep advancing
		t.TimeMs = g.TimeOf(int64(i))
		m.Sent(int64(i), &t)
		m.Acked(int64(i), &t, false, now)
	}
}
