//go:build querydebug

package gateway

import (
	"strings"
	"testing"
)

func TestSameProfiles(t *testing.T) {
	const a = `{"time":"2022-03-22T12:15:00.123Z","cookie":"c","country":"PL","device":"PC","action":"VIEW","origin":"o","product_info":{"product_id":"p","brand_id":"b","category_id":"k","price":1}}`
	const b = `{"time":"2022-03-22T12:15:00.123Z","cookie":"c","country":"PL","device":"PC","action":"VIEW","origin":"o2","product_info":{"product_id":"p","brand_id":"b","category_id":"k","price":1}}`
	const older = `{"time":"2022-03-22T12:14:00.000Z","cookie":"c","country":"PL","device":"TV","action":"VIEW","origin":"o","product_info":{"product_id":7,"brand_id":"b","category_id":"k","price":1}}`
	got := `{"cookie":"c","views":[` + a + `,` + b + `,` + older + `],"buys":[]}`
	tests := []struct {
		name, expected string
		same           bool
	}{
		{"identical", got, true},
		{"ties in other order, other spacing", `{"cookie": "c", "views": [` + b + `, ` + a + `, ` + older + `], "buys": []}`, true},
		{"order across times matters", `{"cookie":"c","views":[` + older + `,` + a + `,` + b + `],"buys":[]}`, false},
		{"missing tag", `{"cookie":"c","views":[` + a + `,` + b + `],"buys":[]}`, false},
		{"other cookie", `{"cookie":"d","views":[` + a + `,` + b + `,` + older + `],"buys":[]}`, false},
		{"null is not []", `{"cookie":"c","views":[` + a + `,` + b + `,` + older + `],"buys":null}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			same, err := sameProfiles([]byte(tt.expected), []byte(got), 200)
			if err != nil {
				t.Fatal(err)
			}
			if same != tt.same {
				t.Fatalf("same = %v, want %v", same, tt.same)
			}
		})
	}
}

// TestSameProfilesCutThroughTies: when limit cuts through the tags of one
// millisecond, SPEC leaves open which of them the answer keeps; that is
// not a mismatch, while any other difference still is.
func TestSameProfilesCutThroughTies(t *testing.T) {
	tag := func(time, origin string) string {
		return `{"time":"` + time + `","cookie":"c","country":"PL","device":"PC","action":"VIEW","origin":"` + origin +
			`","product_info":{"product_id":"p","brand_id":"b","category_id":"k","price":1}}`
	}
	const t2, t1, t0 = "2022-03-22T12:15:00.002Z", "2022-03-22T12:15:00.001Z", "2022-03-22T12:15:00.000Z"
	answer := func(views ...string) string {
		return `{"cookie":"c","views":[` + strings.Join(views, ",") + `],"buys":[]}`
	}
	// The store holds t2/a, then t1/b, t1/c, t1/d; limit 3 cuts through t1.
	got := answer(tag(t2, "a"), tag(t1, "b"), tag(t1, "c"))
	tests := []struct {
		name, expected string
		limit          int
		same           bool
	}{
		{"the same tags", got, 3, true},
		{"other tags of the cut millisecond", answer(tag(t2, "a"), tag(t1, "d"), tag(t1, "b")), 3, true},
		{"all other tags of the cut millisecond", answer(tag(t2, "a"), tag(t1, "d"), tag(t1, "e")), 3, true},
		{"not cut: the last millisecond must match", answer(tag(t2, "a"), tag(t1, "d"), tag(t1, "b")), 4, false},
		{"not cut at limit 200", answer(tag(t2, "a"), tag(t1, "d"), tag(t1, "b")), 200, false},
		{"a difference before the cut", answer(tag(t2, "x"), tag(t1, "b"), tag(t1, "c")), 3, false},
		{"the cut millisecond is another", answer(tag(t2, "a"), tag(t1, "b"), tag(t0, "c")), 3, false},
		{"one tag fewer", answer(tag(t2, "a"), tag(t1, "b")), 3, false},
		{"cut list of one millisecond", answer(tag(t1, "d"), tag(t1, "e"), tag(t1, "f")), 3, false},
		{"limit 0", answer(), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			same, err := sameProfiles([]byte(tt.expected), []byte(got), tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if same != tt.same {
				t.Fatalf("same = %v, want %v", same, tt.same)
			}
		})
	}
	// A list wholly of one millisecond, cut at the limit, keeps any 3.
	oneMs := answer(tag(t1, "b"), tag(t1, "c"), tag(t1, "d"))
	if same, err := sameProfiles([]byte(answer(tag(t1, "e"), tag(t1, "b"), tag(t1, "f"))), []byte(oneMs), 3); err != nil || !same {
		t.Fatalf("one millisecond cut at the limit: same = %v, %v; want true", same, err)
	}
}

func TestSameAggregates(t *testing.T) {
	const got = `{"columns":["1m_bucket","action","count"],"rows":[["2022-03-01T00:05:00","BUY","3"]]}`
	tests := []struct {
		name, expected string
		same           bool
	}{
		{"identical", got, true},
		{"spacing", `{"columns": ["1m_bucket", "action", "count"], "rows": [["2022-03-01T00:05:00", "BUY", "3"]]}`, true},
		{"value", `{"columns":["1m_bucket","action","count"],"rows":[["2022-03-01T00:05:00","BUY","4"]]}`, false},
		{"column order", `{"columns":["action","1m_bucket","count"],"rows":[["2022-03-01T00:05:00","BUY","3"]]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			same, err := sameAggregates([]byte(tt.expected), []byte(got))
			if err != nil {
				t.Fatal(err)
			}
			if same != tt.same {
				t.Fatalf("same = %v, want %v", same, tt.same)
			}
		})
	}
}
