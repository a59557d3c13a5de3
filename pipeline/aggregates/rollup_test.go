package aggregates

import (
	"math"
	"testing"

	"github.com/allezon/allezon/schemas"
)

func TestPlanQuery(t *testing.T) {
	const o, b, c = schemas.DimOrigin, schemas.DimBrand, schemas.DimCategory
	for _, tc := range []struct {
		filter schemas.Dims
		want   queryPlan
	}{
		{0, queryPlan{rollTotal, false}},
		{o, queryPlan{rollOrigin, false}},
		{b, queryPlan{rollBrand, false}},
		{c, queryPlan{rollCategory, false}},
		{b | c, queryPlan{rollBrandCategory, false}},
		{o | b | c, queryPlan{rollCell, false}},
		{o | b, queryPlan{rollCell, true}},
		{o | c, queryPlan{rollCell, true}},
		{0x80 | o, queryPlan{rollOrigin, false}}, // unknown bits ignored
	} {
		if got := planQuery(tc.filter); got != tc.want {
			t.Errorf("planQuery(%03b) = %+v, want %+v", tc.filter, got, tc.want)
		}
	}
}

func TestExpandSumsEveryRollup(t *testing.T) {
	cell := func(m int64, o, b, c string) schemas.Cell {
		return schemas.Cell{Minute: m, Action: schemas.Buy, Origin: o, BrandID: b, CategoryID: c}
	}
	deltas := map[schemas.Cell]schemas.Totals{
		cell(1, "o1", "b1", "c1"): {Count: 1, SumPrice: 10},
		cell(1, "o1", "b2", "c1"): {Count: 2, SumPrice: 20},
		cell(1, "o2", "b2", "c2"): {Count: 4, SumPrice: 40},
		cell(2, "o1", "b1", "c1"): {Count: 8, SumPrice: 80},
	}
	rolls := expand(deltas)
	for _, tc := range []struct {
		r    rollup
		key  schemas.Cell
		want schemas.Totals
	}{
		{rollTotal, cell(1, "", "", ""), schemas.Totals{Count: 7, SumPrice: 70}},
		{rollTotal, cell(2, "", "", ""), schemas.Totals{Count: 8, SumPrice: 80}},
		{rollOrigin, cell(1, "o1", "", ""), schemas.Totals{Count: 3, SumPrice: 30}},
		{rollBrand, cell(1, "", "b2", ""), schemas.Totals{Count: 6, SumPrice: 60}},
		{rollCategory, cell(1, "", "", "c1"), schemas.Totals{Count: 3, SumPrice: 30}},
		{rollBrandCategory, cell(1, "", "b2", "c2"), schemas.Totals{Count: 4, SumPrice: 40}},
		{rollCell, cell(2, "o1", "b1", "c1"), schemas.Totals{Count: 8, SumPrice: 80}},
	} {
		if got := rolls[tc.r][tc.key]; got != tc.want {
			t.Errorf("rollup %d key %+v = %+v, want %+v", tc.r, tc.key, got, tc.want)
		}
	}
	for r, want := range [numRollups]int{2, 3, 3, 3, 4, 4} {
		if len(rolls[r]) != want {
			t.Errorf("rollup %d has %d rows, want %d", r, len(rolls[r]), want)
		}
	}
}

func TestDropMemo(t *testing.T) {
	type step struct {
		op     string // "need", "drop" (needed then dropped), "race" (a commit between needed and dropped), "wrote"
		minute int64
		want   bool // for need
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"first call always deletes", []step{{"need", math.MinInt64 + 1, true}}},
		{"repeated cutoff is skipped", []step{{"drop", 10, false}, {"need", 10, false}, {"need", 9, false}, {"need", 11, true}}},
		{"late commit below cutoff", []step{{"drop", 10, false}, {"wrote", 5, false}, {"need", 10, true}}},
		{"commit above cutoff", []step{{"drop", 10, false}, {"wrote", 10, false}, {"need", 10, false}}},
		{"commit during the delete", []step{{"race", 10, false}, {"need", 10, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newDropMemo()
			for i, s := range tc.steps {
				switch s.op {
				case "need":
					if _, ok := m.needed(s.minute); ok != s.want {
						t.Fatalf("step %d: needed(%d) = %v, want %v", i, s.minute, ok, s.want)
					}
				case "drop":
					gen, _ := m.needed(s.minute)
					m.dropped(s.minute, gen)
				case "race":
					gen, _ := m.needed(s.minute)
					m.wrote(s.minute + 100)
					m.dropped(s.minute, gen)
				case "wrote":
					m.wrote(s.minute)
				}
			}
		})
	}
}

// TestPgCommitOrderCoversEveryRollup: a rollup missing from the commit
// order would silently never be written.
func TestPgCommitOrderCoversEveryRollup(t *testing.T) {
	seen := map[rollup]bool{}
	for _, r := range pgCommitOrder {
		if seen[r] {
			t.Fatalf("rollup %d twice in pgCommitOrder", r)
		}
		seen[r] = true
	}
	for r := range numRollups {
		if !seen[r] {
			t.Fatalf("rollup %d (%s) missing from pgCommitOrder", r, pgTables[r])
		}
	}
}
