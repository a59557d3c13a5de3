package profiles

import (
	"bytes"
	"math"
	"testing"

	"github.com/allezon/allezon/schemas"
)

func TestEntryIDOrder(t *testing.T) {
	// Each pair: a must sort strictly before b (a is newer, or the same
	// time with a smaller hash).
	type entry struct {
		ms   int64
		hash uint64
	}
	cases := []struct {
		name string
		a, b entry
	}{
		{"newer first", entry{t0 + 1, 0}, entry{t0, 0}},
		{"newer first despite hash", entry{t0 + 1, math.MaxUint64}, entry{t0, 0}},
		{"same time by hash", entry{t0, 1}, entry{t0, 2}},
		{"zero before negative", entry{0, 0}, entry{-1, 0}},
		{"positive before negative", entry{1, 0}, entry{-1, 0}},
		{"max first", entry{math.MaxInt64, 0}, entry{math.MaxInt64 - 1, 0}},
		{"min last", entry{math.MinInt64 + 1, 0}, entry{math.MinInt64, 0}},
		{"far apart", entry{1e15, 0}, entry{-1e15, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := appendEntryID(nil, tc.a.ms, tc.a.hash)
			b := appendEntryID(nil, tc.b.ms, tc.b.hash)
			if len(a) != entryIDLen || len(b) != entryIDLen {
				t.Fatalf("id lengths %d, %d; want %d", len(a), len(b), entryIDLen)
			}
			if bytes.Compare(a, b) >= 0 {
				t.Fatalf("id(%v) = %x does not sort before id(%v) = %x", tc.a, a, tc.b, b)
			}
			if got := idTime(a); got != tc.a.ms {
				t.Fatalf("idTime(id(%d)) = %d", tc.a.ms, got)
			}
			if got := idTime(b); got != tc.b.ms {
				t.Fatalf("idTime(id(%d)) = %d", tc.b.ms, got)
			}
		})
	}
}

func TestIDRange(t *testing.T) {
	cases := []struct {
		name    string
		r       schemas.TimeRange
		ok      bool
		in, out []int64 // times whose ids (any hash) must fall inside / outside
	}{
		{"ordinary", schemas.TimeRange{From: t0, To: t0 + 10}, true, []int64{t0, t0 + 9}, []int64{t0 - 1, t0 + 10}},
		{"one ms", schemas.TimeRange{From: -1, To: 0}, true, []int64{-1}, []int64{-2, 0}},
		{"from min", schemas.TimeRange{From: math.MinInt64, To: 0}, true, []int64{math.MinInt64, -1}, []int64{0}},
		{"to max", schemas.TimeRange{From: 0, To: math.MaxInt64}, true, []int64{0, math.MaxInt64 - 1}, []int64{-1, math.MaxInt64}},
		{"empty", schemas.TimeRange{From: 5, To: 5}, false, nil, nil},
		{"reversed", schemas.TimeRange{From: 6, To: 5}, false, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start, end, ok := idRange(tc.r)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			inside := func(id []byte) bool {
				return bytes.Compare(id, start) >= 0 && (end == nil || bytes.Compare(id, end) < 0)
			}
			for _, ms := range tc.in {
				for _, h := range []uint64{0, 1, math.MaxUint64} {
					if id := appendEntryID(nil, ms, h); !inside(id) {
						t.Errorf("time %d hash %x: id %x outside [%x, %x)", ms, h, id, start, end)
					}
				}
			}
			for _, ms := range tc.out {
				for _, h := range []uint64{0, 1, math.MaxUint64} {
					if id := appendEntryID(nil, ms, h); inside(id) {
						t.Errorf("time %d hash %x: id %x inside [%x, %x)", ms, h, id, start, end)
					}
				}
			}
		})
	}
}

func TestCookiePrefixesDisjoint(t *testing.T) {
	cookies := []string{"a", "ab", "a\x00", "\x00", "\x00\x00", "b", string(make([]byte, 200)), string(make([]byte, 201))}
	for _, c1 := range cookies {
		for _, c2 := range cookies {
			for a1 := range schemas.Action(schemas.NumActions) {
				for a2 := range schemas.Action(schemas.NumActions) {
					if c1 == c2 && a1 == a2 {
						continue
					}
					p1 := appendCookiePrefix(nil, c1, a1)
					p2 := appendCookiePrefix(nil, c2, a2)
					if bytes.HasPrefix(p1, p2) || bytes.HasPrefix(p2, p1) {
						t.Errorf("prefix of (%q, %v) = %x and of (%q, %v) = %x overlap", c1, a1, p1, c2, a2, p2)
					}
				}
			}
		}
	}
}
