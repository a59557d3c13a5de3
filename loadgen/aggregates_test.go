package loadgen

import (
	"math"
	"testing"
	"time"

	"github.com/allezon/allezon/schemas"
)

// aggHarness: tags in minutes m0 (the start's) and m0+1, all acknowledged
// at wall, queried a minute and a bit later.
func aggHarness(t *testing.T, tags ...schemas.UserTag) *harness {
	h := newHarness(t, tags...)
	h.query = wall.Add(time.Minute + time.Second)
	return h
}

func (h *harness) aggregate(q aggregateQuery) (string, bool, string) {
	body, nonEmpty, reason := h.m.AggregateExpected(nil, &q, h.query)
	return string(body), nonEmpty, reason
}

func TestAggregatesBody(t *testing.T) {
	m0 := schemas.MinuteOf(t0ms)
	big := mkTag("c", 10, schemas.Buy, math.MaxInt32)
	big.Origin, big.BrandID = "Nike \"shop\"", "b2"
	big2 := big
	big2.TimeMs++
	other := mkTag("d", 12, schemas.Buy, 7)
	view := mkTag("e", 13, schemas.View, 100)
	next := mkTag("f", 60_000, schemas.Buy, 1) // minute m0+1, after the range
	h := aggHarness(t, big, big2, other, view, next)
	h.m.WatchFilters(&big, m0+10) // before anything is sent
	h.sendAndAckAll()

	tests := []struct {
		name string
		q    aggregateQuery
		want string
	}{
		{
			name: "no filter, both aggregates, 64-bit sum",
			q:    aggregateQuery{AggregateQuery: schemas.AggregateQuery{Action: schemas.Buy, FromMinute: m0 - 1, ToMinute: m0 + 1}, Aggs: []aggKind{aggCount, aggSumPrice}},
			want: `{"columns":["1m_bucket","action","count","sum_price"],"rows":[` +
				`["2022-03-22T11:59:00","BUY","0","0"],["2022-03-22T12:00:00","BUY","3","4294967301"]]}`,
		},
		{
			name: "filters in SPEC order, aggregates in query order, repeated",
			q: aggregateQuery{AggregateQuery: schemas.AggregateQuery{Action: schemas.Buy, FromMinute: m0, ToMinute: m0 + 1,
				Filter: schemas.DimOrigin | schemas.DimBrand, Origin: big.Origin, BrandID: "b2"}, Aggs: []aggKind{aggSumPrice, aggCount, aggSumPrice}},
			want: `{"columns":["1m_bucket","action","origin","brand_id","sum_price","count","sum_price"],"rows":[` +
				`["2022-03-22T12:00:00","BUY","Nike \"shop\"","b2","4294967294","2","4294967294"]]}`,
		},
		{
			name: "category filter, VIEW",
			q: aggregateQuery{AggregateQuery: schemas.AggregateQuery{Action: schemas.View, FromMinute: m0, ToMinute: m0 + 1,
				Filter: schemas.DimCategory, CategoryID: "c1"}, Aggs: []aggKind{aggCount}},
			want: `{"columns":["1m_bucket","action","category_id","count"],"rows":[["2022-03-22T12:00:00","VIEW","c1","1"]]}`,
		},
	}
	for _, tt := range tests {
		body, nonEmpty, reason := h.aggregate(tt.q)
		if reason != "" || body != tt.want || !nonEmpty {
			t.Errorf("%s:\n got %s (nonEmpty %v, reason %q)\nwant %s", tt.name, body, nonEmpty, reason, tt.want)
		}
	}
}

func TestAggregatesFairness(t *testing.T) {
	m0 := schemas.MinuteOf(t0ms)
	a := mkTag("c", 10, schemas.View, 5)
	b := mkTag("c", 60_010, schemas.View, 5) // minute m0+1
	c := mkTag("c", 120_010, schemas.View, 5)
	count := []aggKind{aggCount}
	q := func(from, to int64, f schemas.Dims) aggregateQuery {
		return aggregateQuery{AggregateQuery: schemas.AggregateQuery{Action: schemas.View, FromMinute: from, ToMinute: to, Filter: f, Origin: "o1"}, Aggs: count}
	}

	h := aggHarness(t, a, b, c)
	h.sendAll()
	h.ackRange(0, 1, wall)
	h.m.Failed(1, &h.src[1], wall) // minute m0+1 uncertain
	h.ackRange(2, 3, wall)
	h.m.WatchFilters(&a, m0+10) // after the first tags were sent

	tests := []struct {
		name  string
		q     aggregateQuery
		query time.Time
		want  string // reason, "" = fair
	}{
		{"complete minute", q(m0, m0+1, 0), h.query, ""},
		{"not a minute old", q(m0, m0+1, 0), wall.Add(59 * time.Second), unfairWatermark},
		{"minute holding a failed tag", q(m0, m0+2, 0), h.query, unfairUncertain},
		{"minute still open", q(m0+2, m0+3, 0), h.query, unfairWatermark},
		{"filter watched too late", q(m0, m0+1, schemas.DimOrigin), h.query, unfairUnwatched},
	}
	for _, tt := range tests {
		_, _, reason := h.m.AggregateExpected(nil, &tt.q, tt.query)
		if reason != tt.want {
			t.Errorf("%s: reason %q, want %q", tt.name, reason, tt.want)
		}
	}
	// A watched filter covers the minutes after the newest one sent.
	if w := h.m.aggs.watched[projection(&a, schemas.DimOrigin)]; w.since != m0+2 {
		t.Errorf("filter watched since minute %d, want %d", w.since, m0+2)
	}

	// A retried tag stays uncertain for aggregates even once acknowledged.
	h.m.Acked(1, &h.src[1], true, wall)
	if _, _, reason := h.aggregate(q(m0+1, m0+2, 0)); reason != unfairUncertain {
		t.Errorf("retried tag's minute: reason %q, want %q", reason, unfairUncertain)
	}

	// Pruning forgets the minutes before the horizon.
	h.m.PruneAggregates(m0 + 1)
	if _, _, reason := h.aggregate(q(m0, m0+1, 0)); reason != unfairPruned {
		t.Errorf("pruned minute: reason %q, want %q", reason, unfairPruned)
	}
}

func TestAggregatesRetention(t *testing.T) {
	m0 := schemas.MinuteOf(t0ms)
	day := int64(24 * 60 * 60_000)
	h := aggHarness(t, mkTag("c", 0, schemas.View, 1), mkTag("c", day+60_000, schemas.View, 1), mkTag("c", day+120_000, schemas.View, 1))
	h.sendAndAckAll()
	q := aggregateQuery{AggregateQuery: schemas.AggregateQuery{Action: schemas.View, FromMinute: m0, ToMinute: m0 + 1}, Aggs: []aggKind{aggCount}}
	if _, _, reason := h.aggregate(q); reason != unfairRetention {
		t.Errorf("minute a day before the newest tag: reason %q, want %q", reason, unfairRetention)
	}
}
