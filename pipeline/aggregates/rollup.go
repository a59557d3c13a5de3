package aggregates

import (
	"cmp"
	"math"
	"strings"
	"sync"

	"github.com/allezon/allezon/schemas"
)

// rollup is one table of totals, keyed by (minute, action) plus a subset of
// the dimensions.
//
// A query may filter on any of the 8 subsets of {origin, brand, category}
// over up to 10 minutes, and must never scan a day. Both backends therefore
// key every row by (minute, action, dims...): retention is a range delete on
// the minute prefix, and a query is at most one point read or one short
// prefix scan per minute. Commit expands each full-cell delta into six
// rollups: {}, {origin}, {brand}, {category}, {brand, category} and the full
// cell {origin, brand, category}. The two remaining filter sets are answered
// from the full-cell rows: {origin, brand} by the key prefix (minute, action,
// origin, brand) and {origin, category} by the prefix (minute, action,
// origin), skipping other categories, then summed.
//
// Why not roll up {origin, brand} and {origin, category} too: with the
// SPEC's data shape (1,000 origins x 250 brands x 67 categories) both have
// nearly one row per tag, so they would about double what is stored for
// little gain, while a prefix of one origin in one minute is short. Measured
// with a throwaway program drawing uniformly random dimensions (math/rand/v2
// PCG seed 1,2), distinct rows in one minute, all tags of one action (the
// worst case; real traffic splits them between VIEW and BUY):
//
//	tags/min  {}  {o}    {b}  {c}  {b,c}   {o,b}    {o,c}   {o,b,c}
//	60,000    1   1,000  250  67   16,286  53,281   39,738  59,901
//	600,000   1   1,000  250  67   16,750  227,194  66,991  589,381
//
// At 1,000 tags/s the six rollups hold 77,505 rows a minute; the two origin
// pairs would add 93,019 more (2.2x the rows). Meanwhile one origin's prefix
// holds about 60 full-cell rows a minute (600 at 10,000 tags/s), so the
// slowest query reads about 600 rows (6,000) over its 10 minutes.
type rollup uint8

const (
	rollTotal rollup = iota
	rollOrigin
	rollBrand
	rollCategory
	rollBrandCategory
	rollCell
	numRollups
)

// rollupDims are the dimensions each rollup keys by.
var rollupDims = [numRollups]schemas.Dims{
	rollTotal:         0,
	rollOrigin:        schemas.DimOrigin,
	rollBrand:         schemas.DimBrand,
	rollCategory:      schemas.DimCategory,
	rollBrandCategory: schemas.DimBrand | schemas.DimCategory,
	rollCell:          schemas.AllDims,
}

// queryPlan says how a filter set is answered: a point read per minute in
// rollup, or (prefix) a prefix scan of the full-cell rollup per minute.
type queryPlan struct {
	rollup rollup
	prefix bool
}

// planQuery maps a query's filter set to the rollup that answers it.
func planQuery(filter schemas.Dims) queryPlan {
	filter &= schemas.AllDims
	for r, d := range rollupDims {
		if d == filter {
			return queryPlan{rollup: rollup(r)}
		}
	}
	return queryPlan{rollup: rollCell, prefix: true} // {origin, brand} or {origin, category}
}

// project returns c with the dimensions outside d cleared: its key in a
// rollup keyed by d.
func project(c schemas.Cell, d schemas.Dims) schemas.Cell {
	if d&schemas.DimOrigin == 0 {
		c.Origin = ""
	}
	if d&schemas.DimBrand == 0 {
		c.BrandID = ""
	}
	if d&schemas.DimCategory == 0 {
		c.CategoryID = ""
	}
	return c
}

// expand sums full-cell deltas into every rollup, one entry per rollup key
// (Postgres's ON CONFLICT DO UPDATE needs unique keys; Pebble gets fewer
// merge operands). The full-cell rollup is deltas itself, not a copy.
func expand(deltas map[schemas.Cell]schemas.Totals) [numRollups]map[schemas.Cell]schemas.Totals {
	var out [numRollups]map[schemas.Cell]schemas.Totals
	for r := range rollCell {
		out[r] = make(map[schemas.Cell]schemas.Totals, min(len(deltas), 1024))
	}
	out[rollCell] = deltas
	for c, t := range deltas {
		for r := range rollCell {
			k := project(c, rollupDims[r])
			sum := out[r][k]
			sum.Add(t)
			out[r][k] = sum
		}
	}
	return out
}

// compareCells orders cells by (minute, action, origin, brand, category):
// the primary-key order of every rollup table.
func compareCells(a, b *schemas.Cell) int {
	return cmp.Or(
		cmp.Compare(a.Minute, b.Minute),
		cmp.Compare(a.Action, b.Action),
		strings.Compare(a.Origin, b.Origin),
		strings.Compare(a.BrandID, b.BrandID),
		strings.Compare(a.CategoryID, b.CategoryID),
	)
}

// minMinute is the oldest minute among the deltas (MaxInt64 if none).
func minMinute(deltas map[schemas.Cell]schemas.Totals) int64 {
	m := int64(math.MaxInt64)
	for c := range deltas {
		m = min(m, c.Minute)
	}
	return m
}

// dropMemo remembers the retention cutoff already applied, so that
// DropBefore, which the pipeline may call every second with the same cutoff,
// writes nothing (Pebble: no new range tombstone; Postgres: no DELETEs)
// until the cutoff advances or this process commits a minute below it. It
// tracks this process's commits only; another process's late commits are
// dropped by that process's own DropBefore.
type dropMemo struct {
	mu   sync.Mutex
	done int64  // every minute < done is deleted
	gen  uint64 // bumped by every commit
}

func newDropMemo() *dropMemo { return &dropMemo{done: math.MinInt64} }

// needed reports whether deleting below cutoff may delete anything, and the
// generation to hand back to dropped.
func (m *dropMemo) needed(cutoff int64) (gen uint64, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen, cutoff > m.done
}

// dropped records a finished delete below cutoff, unless a commit ran
// meanwhile: its rows may have escaped the delete, so the next call deletes
// again.
func (m *dropMemo) dropped(cutoff int64, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen == gen {
		m.done = max(m.done, cutoff)
	}
}

// wrote records a commit (called after it, whatever its outcome) whose
// oldest minute is oldest.
func (m *dropMemo) wrote(oldest int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done = min(m.done, oldest)
	m.gen++
}
