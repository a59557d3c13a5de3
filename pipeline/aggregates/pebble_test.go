package aggregates

import (
	"bytes"
	"math"
	"slices"
	"testing"

	"github.com/allezon/allezon/schemas"
)

// TestRollupKeysSortByMinute: keys order by minute across the epoch (the
// sign-bit flip), then action, so a minute prefix is one contiguous range.
func TestRollupKeysSortByMinute(t *testing.T) {
	cells := []schemas.Cell{
		{Minute: math.MinInt64}, {Minute: -60}, {Minute: -1, Action: schemas.Buy}, {Minute: 0},
		{Minute: 0, Action: schemas.Buy}, {Minute: 1}, {Minute: 28_000_000}, {Minute: math.MaxInt64},
	}
	for r := range numRollups {
		var keys [][]byte
		for _, c := range cells {
			c.Origin, c.BrandID, c.CategoryID = "zz", "zz", "zz"
			keys = append(keys, appendRollupKey(nil, r, &c))
		}
		if !slices.IsSortedFunc(keys, bytes.Compare) {
			t.Fatalf("rollup %d: keys do not sort by (minute, action): %x", r, keys)
		}
	}
}

// TestDimPrefixesSelectExactValues: the encoding of an origin (or origin
// and brand) is a prefix of exactly the full-cell keys with those values,
// even when one value is a prefix of another or empty.
func TestDimPrefixesSelectExactValues(t *testing.T) {
	values := []string{"", "a", "ab", "a\x01", "b", "\xff\xff"}
	prefixOf := func(origin string) []byte {
		return appendDim(appendMinuteKey(nil, rollCell, 7, schemas.View), origin)
	}
	for _, o := range values {
		for _, o2 := range values {
			for _, b := range values {
				key := appendRollupKey(nil, rollCell, &schemas.Cell{Minute: 7, Origin: o2, BrandID: b, CategoryID: "c"})
				if got := bytes.HasPrefix(key, prefixOf(o)); got != (o == o2) {
					t.Fatalf("origin %q prefix matches key of origin %q: %v", o, o2, got)
				}
			}
		}
	}
}

func TestReadDim(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       []byte
		dim      string
		rest     string
		wantFail bool
	}{
		{"empty dim", []byte{0, 'x'}, "", "x", false},
		{"dim and rest", append(appendDim(nil, "brand"), 'r'), "brand", "r", false},
		{"truncated", []byte{5, 'a', 'b'}, "", "", true},
		{"no length", nil, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dim, rest, ok := readDim(tc.in)
			if ok == tc.wantFail || string(dim) != tc.dim || string(rest) != tc.rest {
				t.Fatalf("readDim(%x) = %q, %q, %v", tc.in, dim, rest, ok)
			}
		})
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want []byte }{
		{[]byte{1, 2}, []byte{1, 3}},
		{[]byte{1, 0xff}, []byte{2}},
		{[]byte{0xff, 0xff}, nil},
	} {
		if got := prefixEnd(tc.in); !bytes.Equal(got, tc.want) {
			t.Errorf("prefixEnd(%x) = %x, want %x", tc.in, got, tc.want)
		}
	}
}

func TestTotalsMerger(t *testing.T) {
	enc := func(c, s int64) []byte { return appendTotals(nil, schemas.Totals{Count: c, SumPrice: s}) }
	m, err := totalsMerger.Merge(nil, enc(1, 10))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.MergeOlder(enc(2, -30)); err != nil {
		t.Fatal(err)
	}
	if err := m.MergeNewer(enc(4, 5)); err != nil {
		t.Fatal(err)
	}
	v, _, err := m.Finish(true)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := decodeTotals(v); got != (schemas.Totals{Count: 7, SumPrice: -15}) {
		t.Fatalf("merged %+v, want {7 -15}", got)
	}
	if err := m.MergeNewer([]byte{1, 2, 3}); err == nil {
		t.Fatalf("a malformed operand was merged")
	}
}
