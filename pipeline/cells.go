package pipeline

import "github.com/allezon/allezon/schemas"

// minCellsHint is the smallest map an accumulator starts with. The SPEC's
// data shape puts about one tag in each full cell, so a one-second flush at
// the target rate holds tens of thousands of cells; starting small only
// costs a few early rehashes, and the map then keeps its size (see reset).
const minCellsHint = 1024

// cellSums holds one partition's per-cell deltas between two flushes. It is
// owned by a single ConsumeClaim goroutine and so has no locking.
//
// The map is reused across flushes: reset clears it in place, which keeps
// its buckets, so a steady stream stops allocating map memory after the
// first few flushes. Only a cell's strings are new per event, and those
// come from the decoded tag.
type cellSums struct {
	m map[schemas.Cell]schemas.Totals
	// events counts the tags added since the last reset.
	events int
}

func newCellSums(hint int) *cellSums {
	return &cellSums{m: make(map[schemas.Cell]schemas.Totals, max(hint, minCellsHint))}
}

// add sums one tag into its full cell.
func (s *cellSums) add(t *schemas.UserTag) {
	c := schemas.CellOf(t)
	v := s.m[c]
	v.Count++
	v.SumPrice += int64(t.Price)
	s.m[c] = v
	s.events++
}

// cells is the number of distinct cells touched since the last reset.
func (s *cellSums) cells() int { return len(s.m) }

// deltas is the map to commit. It stays owned by s: the caller must be done
// with it before the next add or reset.
func (s *cellSums) deltas() map[schemas.Cell]schemas.Totals { return s.m }

// reset forgets every delta, keeping the map's memory for the next interval.
func (s *cellSums) reset() {
	clear(s.m)
	s.events = 0
}
