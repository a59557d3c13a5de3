package pipeline

import (
	"fmt"
	"testing"

	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/schemas"
)

func TestCellSumsAdd(t *testing.T) {
	tag := func(ms int64, a schemas.Action, origin, brand, cat string, price int32) schemas.UserTag {
		return schemas.UserTag{TimeMs: ms, Cookie: "c", Action: a, Origin: origin, BrandID: brand, CategoryID: cat, Price: price}
	}
	cell := func(min int64, a schemas.Action, origin, brand, cat string) schemas.Cell {
		return schemas.Cell{Minute: min, Action: a, Origin: origin, BrandID: brand, CategoryID: cat}
	}
	tests := []struct {
		name string
		tags []schemas.UserTag
		want map[schemas.Cell]schemas.Totals
	}{
		{name: "empty", want: map[schemas.Cell]schemas.Totals{}},
		{
			name: "one tag",
			tags: []schemas.UserTag{tag(60_000, schemas.View, "o", "b", "c", 7)},
			want: map[schemas.Cell]schemas.Totals{cell(1, schemas.View, "o", "b", "c"): {Count: 1, SumPrice: 7}},
		},
		{
			name: "same cell sums, minute boundaries split",
			tags: []schemas.UserTag{
				tag(119_999, schemas.Buy, "o", "b", "c", 10),
				tag(60_000, schemas.Buy, "o", "b", "c", 5),
				tag(120_000, schemas.Buy, "o", "b", "c", 1),
				tag(-1, schemas.Buy, "o", "b", "c", 2), // before 1970: minute -1
			},
			want: map[schemas.Cell]schemas.Totals{
				cell(1, schemas.Buy, "o", "b", "c"):  {Count: 2, SumPrice: 15},
				cell(2, schemas.Buy, "o", "b", "c"):  {Count: 1, SumPrice: 1},
				cell(-1, schemas.Buy, "o", "b", "c"): {Count: 1, SumPrice: 2},
			},
		},
		{
			name: "every dimension separates cells",
			tags: []schemas.UserTag{
				tag(0, schemas.View, "o", "b", "c", 1),
				tag(0, schemas.Buy, "o", "b", "c", 2),
				tag(0, schemas.View, "o2", "b", "c", 3),
				tag(0, schemas.View, "o", "b2", "c", 4),
				tag(0, schemas.View, "o", "b", "c2", 5),
				tag(0, schemas.View, "o", "b", "c", 6),
			},
			want: map[schemas.Cell]schemas.Totals{
				cell(0, schemas.View, "o", "b", "c"):  {Count: 2, SumPrice: 7},
				cell(0, schemas.Buy, "o", "b", "c"):   {Count: 1, SumPrice: 2},
				cell(0, schemas.View, "o2", "b", "c"): {Count: 1, SumPrice: 3},
				cell(0, schemas.View, "o", "b2", "c"): {Count: 1, SumPrice: 4},
				cell(0, schemas.View, "o", "b", "c2"): {Count: 1, SumPrice: 5},
			},
		},
		{
			name: "extreme prices sum in 64 bits",
			tags: []schemas.UserTag{
				tag(0, schemas.Buy, "o", "b", "c", 2147483647),
				tag(0, schemas.Buy, "o", "b", "c", 2147483647),
				tag(0, schemas.Buy, "o", "b", "c", -2147483648),
				tag(0, schemas.View, "o", "b", "c", -2147483648),
				tag(0, schemas.View, "o", "b", "c", -2147483648),
			},
			want: map[schemas.Cell]schemas.Totals{
				cell(0, schemas.Buy, "o", "b", "c"):  {Count: 3, SumPrice: 2147483646},
				cell(0, schemas.View, "o", "b", "c"): {Count: 2, SumPrice: -4294967296},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newCellSums(0)
			for i := range tc.tags {
				s.add(&tc.tags[i])
			}
			if s.events != len(tc.tags) {
				t.Errorf("events = %d, want %d", s.events, len(tc.tags))
			}
			if s.cells() != len(tc.want) {
				t.Errorf("cells = %d, want %d", s.cells(), len(tc.want))
			}
			got := s.deltas()
			for c, w := range tc.want {
				if got[c] != w {
					t.Errorf("cell %+v = %+v, want %+v", c, got[c], w)
				}
			}
			for c := range got {
				if _, ok := tc.want[c]; !ok {
					t.Errorf("unexpected cell %+v", c)
				}
			}
		})
	}
}

func TestCellSumsResetForgetsAndReuses(t *testing.T) {
	s := newCellSums(0)
	tag := schemas.UserTag{TimeMs: 0, Action: schemas.Buy, Origin: "o", BrandID: "b", CategoryID: "c", Price: 3}
	s.add(&tag)
	s.add(&tag)
	s.reset()
	if s.cells() != 0 || s.events != 0 {
		t.Fatalf("after reset: cells %d events %d, want 0 0", s.cells(), s.events)
	}
	s.add(&tag)
	if got := s.deltas()[schemas.CellOf(&tag)]; got != (schemas.Totals{Count: 1, SumPrice: 3}) {
		t.Fatalf("after reset and one add: %+v, want count 1 sum 3", got)
	}
	// A reset map takes a same-sized interval again without allocating.
	tags := benchTags(2000, 2000)
	for i := range tags {
		s.add(&tags[i])
	}
	s.reset()
	allocs := testing.AllocsPerRun(5, func() {
		for i := range tags {
			s.add(&tags[i])
		}
		s.reset()
	})
	if allocs != 0 {
		t.Errorf("refilling a reset accumulator allocated %.0f times, want 0", allocs)
	}
}

// benchTags makes n tags spread over about `cells` distinct full cells, with
// dimension values drawn like the SPEC's data shape (1,000 origins, 250
// brands, 67 categories), so most cells get about n/cells tags.
func benchTags(n, cells int) []schemas.UserTag {
	origins := make([]string, 1000)
	for i := range origins {
		origins[i] = fmt.Sprintf("origin-%d", i)
	}
	brands := make([]string, 250)
	for i := range brands {
		brands[i] = fmt.Sprintf("brand-%d", i)
	}
	cats := make([]string, 67)
	for i := range cats {
		cats[i] = fmt.Sprintf("category-%d", i)
	}
	tags := make([]schemas.UserTag, n)
	for i := range tags {
		k := uint64(i%cells) * 0x9E3779B97F4A7C15 // scatter the cell index over the dimensions
		tags[i] = schemas.UserTag{
			TimeMs:     1_650_000_000_000 + int64(i), // 1 ms per tag, as in the replay
			Action:     schemas.Action(k >> 63),
			Origin:     origins[(k>>8)%1000],
			BrandID:    brands[(k>>24)%250],
			CategoryID: cats[(k>>40)%67],
			Price:      int32(k % 10000),
		}
	}
	return tags
}

// BenchmarkAccumulate measures summing events into cells at the SPEC's data
// shape: about one tag per full cell over a one-second flush of 20,000 events.
// It reports events/s; the map is reused across flushes as in the worker.
func BenchmarkAccumulate(b *testing.B) {
	for _, bc := range []struct {
		name         string
		events, cell int
	}{
		{"1tagPerCell", 20_000, 20_000},
		{"10tagsPerCell", 20_000, 2_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tags := benchTags(bc.events, bc.cell)
			s := newCellSums(0)
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				s.add(&tags[n])
				n++
				if n == len(tags) {
					n = 0
					s.reset()
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkDecodeAndAccumulate is the per-event work of a claim: decode the
// Avro value (one allocation for its strings) and sum it into its cell.
func BenchmarkDecodeAndAccumulate(b *testing.B) {
	tags := benchTags(20_000, 20_000)
	vals := make([][]byte, len(tags))
	for i := range tags {
		tags[i].Cookie = fmt.Sprintf("cookie-%d", i)
		tags[i].Country = "PL"
		tags[i].ProductID = fmt.Sprint(i % 5000)
		v, err := schemas.AppendEventValue(nil, &tags[i])
		if err != nil {
			b.Fatal(err)
		}
		vals[i] = v
	}
	s := newCellSums(0)
	var tag schemas.UserTag
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := schemas.DecodeEventValue(vals[n], &tag); err != nil {
			b.Fatal(err)
		}
		s.add(&tag)
		n++
		if n == len(vals) {
			n = 0
			s.reset()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkFlush measures one partition's flush into the real Pebble store:
// a second of the target rate (20,000 tags, about one per full cell)
// committed with its offsets. Each flush is a new stretch of event time, as
// in the replay, so cells are new rather than merged onto old ones.
func BenchmarkFlush(b *testing.B) {
	store, err := aggregates.Open(b.Context(), "pebble://"+b.TempDir(), aggregates.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	tags := benchTags(20_000, 20_000)
	s := newCellSums(0)
	prev := int64(-1)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		for j := range tags {
			tags[j].TimeMs += 20_000 // the next 20 s of event time
			s.add(&tags[j])
		}
		next := int64(i+1) * int64(len(tags))
		offs := []aggregates.PartitionOffset{{Topic: "bench", Partition: 0, Prev: prev, Next: next}}
		b.StartTimer()
		if err := store.Commit(b.Context(), s.deltas(), offs); err != nil {
			b.Fatal(err)
		}
		s.reset()
		prev = next
	}
	b.ReportMetric(float64(b.N*len(tags))/b.Elapsed().Seconds(), "cells/s")
}
