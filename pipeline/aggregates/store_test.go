package aggregates

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/allezon/allezon/schemas"
	"github.com/allezon/allezon/services/postgres"
	"github.com/allezon/allezon/services/postgres/pgtest"
)

// The contract suite: every test runs against every backend.

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

type backend struct {
	name string
	// newURL returns the URL of a fresh, empty (migrated) store.
	newURL func(tb testing.TB) string
}

var backends = []backend{
	{"pebble", func(tb testing.TB) string { return "pebble://" + tb.TempDir() }},
	{"postgres", func(tb testing.TB) string {
		dsn := pgtest.Start(tb)
		if err := postgres.Migrate(context.Background(), dsn); err != nil {
			tb.Fatalf("migrate: %v", err)
		}
		return dsn
	}},
}

// forEachBackend runs test on a fresh store of every backend.
func forEachBackend(t *testing.T, test func(t *testing.T, url string, s Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			url := b.newURL(t)
			test(t, url, openStore(t, url))
		})
	}
}

func openStore(tb testing.TB, url string) Store {
	tb.Helper()
	s, err := Open(context.Background(), url, Options{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// allFilters are the 8 filter sets a query can have.
var allFilters = func() []schemas.Dims {
	var fs []schemas.Dims
	for f := range schemas.AllDims + 1 {
		fs = append(fs, f)
	}
	return fs
}()

func filterName(f schemas.Dims) string {
	return fmt.Sprintf("o%d_b%d_c%d", min(f&schemas.DimOrigin, 1), min(f&schemas.DimBrand, 1), min(f&schemas.DimCategory, 1))
}

// Small dimension domains so that filters hit. They include the empty
// string, a value that is a prefix of another, and non-ASCII text, which a
// key encoding could confuse.
var (
	testOrigins    = []string{"", "o", "o1", "ö", "origin-4"}
	testBrands     = []string{"b", "b1", "brand-2", "Ж"}
	testCategories = []string{"c", "", "cat-2"}
)

// randomDeltas draws n random full cells (with repeats summed) over
// [fromMinute, fromMinute+minutes).
func randomDeltas(r *rand.Rand, n int, fromMinute int64, minutes int) map[schemas.Cell]schemas.Totals {
	d := make(map[schemas.Cell]schemas.Totals)
	for range n {
		c := schemas.Cell{
			Minute:     fromMinute + r.Int64N(int64(minutes)),
			Action:     schemas.Action(r.IntN(schemas.NumActions)),
			Origin:     testOrigins[r.IntN(len(testOrigins))],
			BrandID:    testBrands[r.IntN(len(testBrands))],
			CategoryID: testCategories[r.IntN(len(testCategories))],
		}
		t := d[c]
		t.Add(schemas.Totals{Count: 1 + r.Int64N(3), SumPrice: r.Int64N(100_000)})
		d[c] = t
	}
	return d
}

// reference answers q by brute force over every delta committed.
func reference(committed []map[schemas.Cell]schemas.Totals, q *schemas.AggregateQuery) []schemas.Totals {
	out := make([]schemas.Totals, q.Minutes())
	for _, d := range committed {
		for c, t := range d {
			if q.Matches(&c) {
				out[c.Minute-q.FromMinute].Add(t)
			}
		}
	}
	return out
}

func mustCommit(tb testing.TB, s Store, d map[schemas.Cell]schemas.Totals, offs ...PartitionOffset) {
	tb.Helper()
	if err := s.Commit(context.Background(), d, offs); err != nil {
		tb.Fatalf("Commit: %v", err)
	}
}

func mustQuery(tb testing.TB, s Store, q *schemas.AggregateQuery) []schemas.Totals {
	tb.Helper()
	got, err := s.Query(context.Background(), q)
	if err != nil {
		tb.Fatalf("Query(%+v): %v", *q, err)
	}
	if len(got) != q.Minutes() {
		tb.Fatalf("Query(%+v) returned %d rows, want %d", *q, len(got), q.Minutes())
	}
	return got
}

func checkQuery(tb testing.TB, s Store, committed []map[schemas.Cell]schemas.Totals, q *schemas.AggregateQuery) {
	tb.Helper()
	got, want := mustQuery(tb, s, q), reference(committed, q)
	for i := range want {
		if got[i] != want[i] {
			tb.Fatalf("Query(%+v) minute %d: got %+v, want %+v", *q, q.FromMinute+int64(i), got[i], want[i])
		}
	}
}

func mustOffsets(tb testing.TB, s Store, topic string) map[int32]int64 {
	tb.Helper()
	got, err := s.Offsets(context.Background(), topic)
	if err != nil {
		tb.Fatalf("Offsets(%q): %v", topic, err)
	}
	return got
}

func TestEmptyStoreAnswersZeros(t *testing.T) {
	forEachBackend(t, func(t *testing.T, _ string, s Store) {
		for _, f := range allFilters {
			for _, n := range []int64{0, 1, 10, 3000} { // 3000 > one statement's minute array
				q := &schemas.AggregateQuery{Action: schemas.Buy, FromMinute: 28_000_000, ToMinute: 28_000_000 + n,
					Filter: f, Origin: "o", BrandID: "b", CategoryID: "c"}
				for i, tot := range mustQuery(t, s, q) {
					if tot != (schemas.Totals{}) {
						t.Fatalf("filter %s: minute %d of an empty store is %+v", filterName(f), i, tot)
					}
				}
			}
		}
		if _, err := s.Query(context.Background(), &schemas.AggregateQuery{FromMinute: 10, ToMinute: 9}); err == nil {
			t.Fatalf("a reversed range was accepted")
		}
		if got := mustOffsets(t, s, "events"); len(got) != 0 {
			t.Fatalf("empty store has offsets %v", got)
		}
		if err := s.Ping(context.Background()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

// TestQueriesMatchReference commits random full-cell deltas (in two commits
// that share cells, so rows are added to) and checks random queries of every
// filter combination against a brute-force reference. The minutes straddle
// the epoch so negative minutes are covered.
func TestQueriesMatchReference(t *testing.T) {
	forEachBackend(t, func(t *testing.T, _ string, s Store) {
		r := rand.New(rand.NewPCG(1, 2))
		const base, span = -5, 15
		d1, d2 := randomDeltas(r, 3000, base, span), randomDeltas(r, 1500, base, span)
		mustCommit(t, s, d1)
		mustCommit(t, s, d2)
		committed := []map[schemas.Cell]schemas.Totals{d1, d2}
		for _, f := range allFilters {
			t.Run(filterName(f), func(t *testing.T) {
				for range 12 {
					from := base - 2 + r.Int64N(span+2)
					q := &schemas.AggregateQuery{
						Action:     schemas.Action(r.IntN(schemas.NumActions)),
						FromMinute: from,
						ToMinute:   from + 1 + r.Int64N(10),
						Filter:     f,
						Origin:     testOrigins[r.IntN(len(testOrigins))],
						BrandID:    testBrands[r.IntN(len(testBrands))],
						CategoryID: testCategories[r.IntN(len(testCategories))],
					}
					if r.IntN(8) == 0 {
						q.Origin = "no-such-origin"
					}
					checkQuery(t, s, committed, q)
				}
			})
		}
	})
}

func TestCommitsAddUpInAHalfOpenRange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, _ string, s Store) {
		cell := func(m int64) schemas.Cell {
			return schemas.Cell{Minute: m, Action: schemas.View, Origin: "o", BrandID: "b", CategoryID: "c"}
		}
		mustCommit(t, s, map[schemas.Cell]schemas.Totals{cell(10): {Count: 1, SumPrice: 5}, cell(11): {Count: 2, SumPrice: 7}, cell(12): {Count: 4, SumPrice: 9}})
		mustCommit(t, s, map[schemas.Cell]schemas.Totals{cell(11): {Count: 3, SumPrice: -2}})
		for _, f := range allFilters {
			got := mustQuery(t, s, &schemas.AggregateQuery{Action: schemas.View, FromMinute: 11, ToMinute: 12,
				Filter: f, Origin: "o", BrandID: "b", CategoryID: "c"})
			if want := (schemas.Totals{Count: 5, SumPrice: 5}); got[0] != want {
				t.Fatalf("filter %s: minute 11 = %+v, want %+v", filterName(f), got[0], want)
			}
		}
		got := mustQuery(t, s, &schemas.AggregateQuery{Action: schemas.View, FromMinute: 9, ToMinute: 13})
		want := []schemas.Totals{{}, {Count: 1, SumPrice: 5}, {Count: 5, SumPrice: 5}, {Count: 4, SumPrice: 9}}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("minutes [9,13): got %+v, want %+v", got, want)
			}
		}
		if got := mustQuery(t, s, &schemas.AggregateQuery{Action: schemas.Buy, FromMinute: 10, ToMinute: 13}); got[0] != (schemas.Totals{}) || got[1] != (schemas.Totals{}) {
			t.Fatalf("BUY sees VIEW totals: %+v", got)
		}
	})
}

// TestLongRange: a range longer than one Postgres statement's minute array
// (and than retention) is still answered minute by minute.
func TestLongRange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, _ string, s Store) {
		d := make(map[schemas.Cell]schemas.Totals)
		for _, m := range []int64{0, 1439, 1440, 2999, 3000} {
			d[schemas.Cell{Minute: m, Origin: "o", BrandID: "b", CategoryID: "c"}] = schemas.Totals{Count: m + 1, SumPrice: 2 * m}
		}
		mustCommit(t, s, d)
		for _, f := range allFilters {
			checkQuery(t, s, []map[schemas.Cell]schemas.Totals{d}, &schemas.AggregateQuery{
				FromMinute: 0, ToMinute: 3000, Filter: f, Origin: "o", BrandID: "b", CategoryID: "c"})
		}
	})
}

func TestOffsetsRoundTripPerTopicAndPartition(t *testing.T) {
	forEachBackend(t, func(t *testing.T, _ string, s Store) {
		mustCommit(t, s, nil,
			PartitionOffset{Topic: "a", Partition: 0, Prev: -1, Next: 5},
			PartitionOffset{Topic: "a", Partition: 1, Prev: -1, Next: 7},
			PartitionOffset{Topic: "ab", Partition: 0, Prev: -1, Next: 9})
		mustCommit(t, s, nil, PartitionOffset{Topic: "a", Partition: 0, Prev: 5, Next: 1 << 40})
		for _, tc := range []struct {
			topic string
			want  map[int32]int64
		}{
			{"a", map[int32]int64{0: 1 << 40, 1: 7}},
			{"ab", map[int32]int64{0: 9}},
			{"b", map[int32]int64{}},
		} {
			if got := mustOffsets(t, s, tc.topic); !maps.Equal(got, tc.want) {
				t.Errorf("Offsets(%q) = %v, want %v", tc.topic, got, tc.want)
			}
		}
		err := s.Commit(context.Background(), nil, []PartitionOffset{
			{Topic: "a", Partition: 1, Prev: 7, Next: 8}, {Topic: "a", Partition: 1, Prev: 7, Next: 9}})
		if err == nil || errors.Is(err, ErrFenced) {
			t.Fatalf("a partition listed twice: err = %v, want a non-fencing error", err)
		}
	})
}

// TestFencedCommitChangesNothing: a Commit whose Prev is not the stored
// offset (of any of its partitions) fails with ErrFenced and stores neither
// deltas nor offsets.
func TestFencedCommitChangesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, _ string, s Store) {
		c := schemas.Cell{Minute: 100, Action: schemas.Buy, Origin: "o", BrandID: "b", CategoryID: "c"}
		before := map[schemas.Cell]schemas.Totals{c: {Count: 1, SumPrice: 10}}
		mustCommit(t, s, before,
			PartitionOffset{Topic: "t", Partition: 0, Prev: -1, Next: 10},
			PartitionOffset{Topic: "t", Partition: 1, Prev: -1, Next: 3})
		// Every case runs on the same store: each must leave it as it was.
		for _, tc := range []struct {
			name string
			offs []PartitionOffset
		}{
			{"never committed, Prev given", []PartitionOffset{{Topic: "t", Partition: 2, Prev: 3, Next: 4}}},
			{"committed, Prev -1", []PartitionOffset{{Topic: "t", Partition: 0, Prev: -1, Next: 4}}},
			{"stale Prev", []PartitionOffset{{Topic: "t", Partition: 0, Prev: 9, Next: 12}}},
			{"Prev ahead", []PartitionOffset{{Topic: "t", Partition: 0, Prev: 11, Next: 12}}},
			{"one of two partitions stale", []PartitionOffset{{Topic: "t", Partition: 0, Prev: 10, Next: 12}, {Topic: "t", Partition: 1, Prev: 1, Next: 2}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := s.Commit(context.Background(), randomDeltas(rand.New(rand.NewPCG(3, 4)), 200, 98, 5), tc.offs)
				if !errors.Is(err, ErrFenced) {
					t.Fatalf("Commit with %+v: err = %v, want ErrFenced", tc.offs, err)
				}
				if got, want := mustOffsets(t, s, "t"), map[int32]int64{0: 10, 1: 3}; !maps.Equal(got, want) {
					t.Fatalf("offsets moved by a fenced commit: %v, want %v", got, want)
				}
				for _, f := range allFilters {
					for _, a := range []schemas.Action{schemas.View, schemas.Buy} {
						checkQuery(t, s, []map[schemas.Cell]schemas.Totals{before}, &schemas.AggregateQuery{
							Action: a, FromMinute: 97, ToMinute: 104, Filter: f, Origin: "o", BrandID: "b", CategoryID: "c"})
					}
				}
			})
		}
	})
}

// TestConcurrentCommittersOneWins: committers racing with the same Prev
// (a zombie and the new owner of a partition): exactly one lands.
func TestConcurrentCommittersOneWins(t *testing.T) {
	forEachBackend(t, func(t *testing.T, _ string, s Store) {
		c := schemas.Cell{Minute: 7, Action: schemas.View, Origin: "o", BrandID: "b", CategoryID: "c"}
		for round, prev := range []int64{-1, 100} {
			const n = 4
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					errs[i] = s.Commit(context.Background(), map[schemas.Cell]schemas.Totals{c: {Count: 1, SumPrice: 1}},
						[]PartitionOffset{{Topic: "t", Partition: 0, Prev: prev, Next: 100 * int64(round+1)}})
				})
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, ErrFenced):
					t.Fatalf("round %d: unexpected error %v", round, err)
				}
			}
			if won != 1 {
				t.Fatalf("round %d: %d of %d racing committers won, want 1", round, won, n)
			}
		}
		got := mustQuery(t, s, &schemas.AggregateQuery{Action: schemas.View, FromMinute: 7, ToMinute: 8})
		if got[0].Count != 2 {
			t.Fatalf("count after two rounds = %d, want 2 (one winner per round)", got[0].Count)
		}
	})
}

func TestCancelledCommitLeavesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		d := randomDeltas(rand.New(rand.NewPCG(5, 6)), 100, 0, 3)
		if err := s.Commit(ctx, d, []PartitionOffset{{Topic: "t", Partition: 0, Prev: -1, Next: 1}}); err == nil {
			t.Fatalf("Commit with a cancelled context succeeded")
		}
		if got := mustOffsets(t, s, "t"); len(got) != 0 {
			t.Fatalf("a failed Commit stored offsets %v", got)
		}
		for _, f := range allFilters {
			checkQuery(t, s, nil, &schemas.AggregateQuery{FromMinute: 0, ToMinute: 3, Filter: f, Origin: "o", BrandID: "b", CategoryID: "c"})
		}
	})
}

func TestDropBeforeRemovesExactlyOlderMinutes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, _ string, s Store) {
		r := rand.New(rand.NewPCG(7, 8))
		d := randomDeltas(r, 2000, -3, 14)
		mustCommit(t, s, d)
		const cutoff = 4
		ctx := context.Background()
		for range 2 { // a repeated cutoff is fine
			if err := s.DropBefore(ctx, cutoff); err != nil {
				t.Fatalf("DropBefore: %v", err)
			}
		}
		kept := make(map[schemas.Cell]schemas.Totals)
		for c, t := range d {
			if c.Minute >= cutoff {
				kept[c] = t
			}
		}
		check := func(t *testing.T) {
			for _, f := range allFilters {
				for _, a := range []schemas.Action{schemas.View, schemas.Buy} {
					for _, o := range testOrigins[:2] {
						checkQuery(t, s, []map[schemas.Cell]schemas.Totals{kept}, &schemas.AggregateQuery{Action: a,
							FromMinute: -3, ToMinute: 11, Filter: f, Origin: o, BrandID: testBrands[1], CategoryID: testCategories[0]})
					}
				}
			}
		}
		check(t)
		// A late commit below the cutoff is dropped by the next call with
		// the same cutoff.
		mustCommit(t, s, map[schemas.Cell]schemas.Totals{{Minute: 1, Origin: "o"}: {Count: 1, SumPrice: 1}})
		if err := s.DropBefore(ctx, cutoff); err != nil {
			t.Fatalf("DropBefore: %v", err)
		}
		check(t)
	})
}

func TestDataSurvivesReopen(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			url := b.newURL(t)
			s, err := Open(context.Background(), url, Options{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			d := randomDeltas(rand.New(rand.NewPCG(9, 10)), 500, 0, 5)
			mustCommit(t, s, d, PartitionOffset{Topic: "t", Partition: 1, Prev: -1, Next: 42})
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s = openStore(t, url)
			if got := mustOffsets(t, s, "t"); !maps.Equal(got, map[int32]int64{1: 42}) {
				t.Fatalf("offsets after reopen: %v", got)
			}
			for _, f := range allFilters {
				checkQuery(t, s, []map[schemas.Cell]schemas.Totals{d}, &schemas.AggregateQuery{Action: schemas.Buy,
					FromMinute: 0, ToMinute: 5, Filter: f, Origin: "o1", BrandID: "b1", CategoryID: "c"})
			}
		})
	}
}

func TestOpenRejectsUnknownURLs(t *testing.T) {
	for _, url := range []string{"", "pebble://", "mysql://u:secret@h/db", "/tmp/dir"} {
		if s, err := Open(context.Background(), url, Options{}); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", url)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) error leaks the password: %v", url, err)
		}
	}
}

// benchDeltas draws n full cells with the SPEC's cardinalities (1,000
// origins, 250 brands, 67 categories) over two minutes.
func benchDeltas(r *rand.Rand, n int, minute int64) map[schemas.Cell]schemas.Totals {
	d := make(map[schemas.Cell]schemas.Totals, n)
	for range n {
		c := schemas.Cell{
			Minute:     minute + r.Int64N(2),
			Action:     schemas.Action(r.IntN(schemas.NumActions)),
			Origin:     fmt.Sprintf("origin-%d", r.IntN(1000)),
			BrandID:    fmt.Sprintf("brand-%d", r.IntN(250)),
			CategoryID: fmt.Sprintf("category-%d", r.IntN(67)),
		}
		t := d[c]
		t.Add(schemas.Totals{Count: 1, SumPrice: r.Int64N(10_000)})
		d[c] = t
	}
	return d
}

// BenchmarkCommit commits deltas of 5,000 random cells with one partition's
// offset, as a stream worker does every second.
func BenchmarkCommit(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := openStore(b, be.newURL(b))
			r := rand.New(rand.NewPCG(11, 12))
			batches := make([]map[schemas.Cell]schemas.Totals, 16)
			for i := range batches {
				batches[i] = benchDeltas(r, 5000, 28_000_000+int64(i))
			}
			prev := int64(-1)
			b.ResetTimer()
			for i := range b.N {
				next := int64(i+1) * 5000
				mustCommit(b, s, batches[i%len(batches)], PartitionOffset{Topic: "t", Partition: 0, Prev: prev, Next: next})
				prev = next
			}
		})
	}
}

// BenchmarkQuery asks 10-minute queries of each filter set from a store
// holding 20 commits of 5,000 cells over ~20 minutes.
func BenchmarkQuery(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := openStore(b, be.newURL(b))
			r := rand.New(rand.NewPCG(13, 14))
			for i := range 20 {
				mustCommit(b, s, benchDeltas(r, 5000, 28_000_000+int64(i)))
			}
			for _, f := range allFilters {
				b.Run(filterName(f), func(b *testing.B) {
					q := &schemas.AggregateQuery{Action: schemas.View, FromMinute: 28_000_005, ToMinute: 28_000_015,
						Filter: f, Origin: "origin-7", BrandID: "brand-7", CategoryID: "category-7"}
					for b.Loop() {
						if _, err := s.Query(context.Background(), q); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
