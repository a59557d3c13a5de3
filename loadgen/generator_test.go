package loadgen

import (
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/allezon/allezon/schemas"
)

func TestGeneratorDeterministic(t *testing.T) {
	a := NewGenerator(42, DefaultStart)
	b := NewGenerator(42, DefaultStart)
	c := NewGenerator(43, DefaultStart)
	differ := 0
	for i := int64(0); i < 2000; i++ {
		ta, tb, tc := a.Tag(i), b.Tag(i), c.Tag(i)
		if ta != tb {
			t.Fatalf("seed 42 tag %d differs between generators: %+v vs %+v", i, ta, tb)
		}
		if ta != tc {
			differ++
		}
	}
	if differ < 1900 {
		t.Errorf("seeds 42 and 43 share %d of 2000 tags", 2000-differ)
	}
	// Random access: a tag does not depend on what was generated before.
	want := a.Tag(1234)
	fresh := NewGenerator(42, DefaultStart)
	if got := fresh.Tag(1234); got != want {
		t.Errorf("Tag(1234) depends on history: %+v vs %+v", got, want)
	}
}

func TestGeneratorTimes(t *testing.T) {
	start := time.Date(2022, 3, 22, 12, 15, 0, 0, time.UTC)
	g := NewGenerator(1, start)
	for _, i := range []int64{0, 1, 999, 60_000} {
		if got, want := g.Tag(i).TimeMs, start.UnixMilli()+i; got != want {
			t.Errorf("tag %d time %d, want %d", i, got, want)
		}
	}
}

// TestGeneratorShape checks a minute of the stream at 1,000 tags/s has the
// shape SPEC.md describes and the properties the tests rely on.
func TestGeneratorShape(t *testing.T) {
	const n = 60_000
	g := NewGenerator(7, DefaultStart)
	perCookie := map[string]*[2]int{}
	var buys, numericIDs, oddIDs, oddCookieTags, bigPrices int
	countries := map[string]bool{}
	origins := map[string]bool{}
	for i := int64(0); i < n; i++ {
		tag := g.Tag(i)
		c := perCookie[tag.Cookie]
		if c == nil {
			c = new([2]int)
			perCookie[tag.Cookie] = c
		}
		c[tag.Action]++
		if tag.Action == schemas.Buy {
			buys++
		}
		if tag.ProductIDIsNumber {
			numericIDs++
			for _, s := range oddNumbers {
				if tag.ProductID == s {
					oddIDs++
				}
			}
		}
		if !utf8.ValidString(tag.Cookie) || tag.Cookie == "" {
			t.Fatalf("tag %d: invalid cookie %q", i, tag.Cookie)
		}
		for _, s := range oddCookies {
			if tag.Cookie == s {
				oddCookieTags++
			}
		}
		if tag.Price < 0 {
			t.Fatalf("tag %d: negative price", i)
		}
		if tag.Price > math.MaxInt32/2 {
			bigPrices++
		}
		countries[tag.Country] = true
		origins[tag.Origin] = true
	}
	over200 := [2]int{}
	for _, c := range perCookie {
		for a := range c {
			if c[a] > keptPerAction {
				over200[a]++
			}
		}
	}
	checks := []struct {
		name     string
		got      int
		min, max int
	}{
		{"distinct cookies", len(perCookie), 30_000, n},
		{"BUY tags", buys, n / 6, n / 4},
		{"numeric product ids", numericIDs, n / 10, n / 5},
		{"unusual number literals", oddIDs, 1, n / 50},
		{"tags of unusual cookies", oddCookieTags, n / 500, n / 100},
		{"prices above 2^30", bigPrices, n / 200, n / 50},
		{"cookies with > 200 VIEWs", over200[schemas.View], 3, 50},
		{"cookies with > 200 BUYs", over200[schemas.Buy], 1, 10},
		{"countries", len(countries), 100, 100},
		{"origins", len(origins), 950, 1000},
	}
	for _, c := range checks {
		if c.got < c.min || c.got > c.max {
			t.Errorf("%s: %d, want %d..%d", c.name, c.got, c.min, c.max)
		}
	}
}

// TestTagJSON pins the request body to SPEC.md's format, written by hand,
// independently of the codec that produces it.
func TestTagJSON(t *testing.T) {
	tag := schemas.UserTag{
		TimeMs: time.Date(2022, 3, 22, 12, 15, 0, 123e6, time.UTC).UnixMilli(), Cookie: `a"b/ü`,
		Country: "PL", Device: schemas.Mobile, Action: schemas.Buy, Origin: "origin-0001",
		ProductID: "12.50", ProductIDIsNumber: true, BrandID: "brand-0002", CategoryID: "cat-0003", Price: math.MaxInt32,
	}
	want := `{"time":"2022-03-22T12:15:00.123Z","cookie":"a\"b/ü","country":"PL","device":"MOBILE","action":"BUY",` +
		`"origin":"origin-0001","product_info":{"product_id":12.50,"brand_id":"brand-0002","category_id":"cat-0003","price":2147483647}}`
	if got := string(schemas.AppendUserTagJSON(nil, &tag)); got != want {
		t.Errorf("tag JSON\n got %s\nwant %s", got, want)
	}
}

func TestPathSegment(t *testing.T) {
	tests := []struct{ in, want string }{
		{"abcXYZ019-._~", "abcXYZ019-._~"},
		{"slash/in/cookie", "slash%2Fin%2Fcookie"},
		{"100%-percent", "100%25-percent"},
		{"plus+sign with space", "plus%2Bsign%20with%20space"},
		{"query?and#hash&x=1", "query%3Fand%23hash%26x%3D1"},
		{"ü", "%C3%BC"},
	}
	for _, tt := range tests {
		if got := string(appendPathSegment(nil, tt.in)); got != tt.want {
			t.Errorf("appendPathSegment(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestProductIDFormat(t *testing.T) {
	g := NewGenerator(5, DefaultStart)
	for i := int64(0); i < 500; i++ {
		tag := g.Tag(i)
		if tag.ProductIDIsNumber {
			continue
		}
		if len(tag.ProductID) != 8 || tag.ProductID[0] != 'P' || strings.Trim(tag.ProductID[1:], "0123456789") != "" {
			t.Fatalf("tag %d: product_id %q, want P and 7 digits", i, tag.ProductID)
		}
	}
}
