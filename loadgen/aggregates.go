package loadgen

import (
	"math"
	"strconv"
	"time"

	"github.com/allezon/allezon/schemas"
)

// aggKind is one requested aggregate column.
type aggKind uint8

const (
	aggCount aggKind = iota
	aggSumPrice
)

// param is the query parameter value; column the response column name.
func (k aggKind) param() string  { return [...]string{"COUNT", "SUM_PRICE"}[k] }
func (k aggKind) column() string { return [...]string{"count", "sum_price"}[k] }

// aggregateQuery is one /aggregates question: the shared query plus the
// aggregate columns in the order asked (repeats allowed).
type aggregateQuery struct {
	schemas.AggregateQuery
	Aggs []aggKind
}

// retention is how far back (event time, from the newest tag) the server
// must keep aggregates (SPEC.md).
const retention = 24 * time.Hour

// filterKey is a filter: the dimensions it constrains and their values
// (empty for the others). The zero key is "no filter".
type filterKey struct {
	dims                    schemas.Dims
	origin, brand, category string
}

// projection is the filter with dimensions d that tag t passes.
func projection(t *schemas.UserTag, d schemas.Dims) filterKey {
	k := filterKey{dims: d}
	if d&schemas.DimOrigin != 0 {
		k.origin = t.Origin
	}
	if d&schemas.DimBrand != 0 {
		k.brand = t.BrandID
	}
	if d&schemas.DimCategory != 0 {
		k.category = t.CategoryID
	}
	return k
}

func queryKey(q *schemas.AggregateQuery) filterKey {
	return projection(&schemas.UserTag{Origin: q.Origin, BrandID: q.BrandID, CategoryID: q.CategoryID}, q.Filter)
}

// watchInfo says over which minutes a watched filter's sums are complete.
type watchInfo struct {
	since int64 // sums are complete for minutes > since
	until int64 // the filter is needed up to this minute (for pruning)
}

type sumKey struct {
	minute int64
	action schemas.Action
	key    filterKey
}

// aggregateModel keeps exact per-minute totals, not for every cell (that
// grows with every tag) but for the filters queries will use: the runner
// registers, ahead of time, the filters of a few probe tags per minute
// (watch), and each acknowledged tag adds to the sums of the watched
// filters it passes (8 map look-ups). Memory is then bounded by the number
// of probes, whatever the rate.
type aggregateModel struct {
	watched   map[filterKey]watchInfo
	sums      map[sumKey]schemas.Totals
	uncertain map[int64]bool

	maxSentMs     int64
	maxSentMinute int64
	minMinute     int64 // sums before it were pruned
}

func newAggregateModel() aggregateModel {
	return aggregateModel{
		watched:       map[filterKey]watchInfo{{}: {since: math.MinInt64, until: math.MaxInt64}},
		sums:          make(map[sumKey]schemas.Totals),
		uncertain:     make(map[int64]bool),
		maxSentMs:     math.MinInt64,
		maxSentMinute: math.MinInt64,
		minMinute:     math.MinInt64,
	}
}

func (a *aggregateModel) sent(t *schemas.UserTag) {
	if t.TimeMs > a.maxSentMs {
		a.maxSentMs = t.TimeMs
		a.maxSentMinute = schemas.MinuteOf(t.TimeMs)
	}
}

func (a *aggregateModel) add(t *schemas.UserTag) {
	m := schemas.MinuteOf(t.TimeMs)
	if m < a.minMinute {
		return
	}
	tot := schemas.Totals{Count: 1, SumPrice: int64(t.Price)}
	for d := schemas.Dims(0); d <= schemas.AllDims; d++ {
		k := projection(t, d)
		if _, ok := a.watched[k]; ok {
			sk := sumKey{minute: m, action: t.Action, key: k}
			s := a.sums[sk]
			s.Add(tot)
			a.sums[sk] = s
		}
	}
}

func (a *aggregateModel) markUncertain(minute int64) { a.uncertain[minute] = true }

// watch starts summing filter k for the minutes after the newest one sent
// so far, and keeps it until minute until.
func (a *aggregateModel) watch(k filterKey, until int64) {
	if w, ok := a.watched[k]; ok {
		w.until = max(w.until, until)
		a.watched[k] = w
		return
	}
	a.watched[k] = watchInfo{since: a.maxSentMinute, until: until}
}

// WatchFilters registers every filter tag t passes, to be answerable for
// ranges that start after the newest minute sent so far and up to minute
// until. Register a probe tag's filters before any tag of the first minute
// a query may ask about is sent.
func (m *model) WatchFilters(t *schemas.UserTag, until int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := schemas.DimOrigin; d <= schemas.AllDims; d++ {
		m.aggs.watch(projection(t, d), until)
	}
}

// UncertainMinute reports whether minute holds a tag whose request failed.
func (m *model) UncertainMinute(minute int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.aggs.uncertain[minute]
}

// PruneAggregates forgets minutes before minute: no query may start
// earlier afterwards.
func (m *model) PruneAggregates(minute int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := &m.aggs
	if minute <= a.minMinute {
		return
	}
	a.minMinute = minute
	for k := range a.sums {
		if k.minute < minute {
			delete(a.sums, k)
		}
	}
	for k, w := range a.watched {
		if w.until < minute {
			delete(a.watched, k)
		}
	}
	for k := range a.uncertain {
		if k < minute {
			delete(a.uncertain, k)
		}
	}
}

// AggregateExpected returns the exact body SPEC.md requires for q at now
// and whether any row counts a tag, with an empty reason; or the reason
// the answer is not determined: the range is not old enough (every tag of
// its minutes acknowledged at least the aggregate freshness ago), holds a
// failed tag, is beyond the retention, or its filter was not tracked. It
// appends to dst.
func (m *model) AggregateExpected(dst []byte, q *aggregateQuery, now time.Time) (body []byte, nonEmpty bool, reason string) {
	n := q.Minutes()
	if n <= 0 {
		return dst, false, "empty range"
	}
	rows := make([]schemas.Totals, n)
	m.mu.Lock()
	a := &m.aggs
	wm, ok := m.aggregateWatermarkLocked(now.UnixNano())
	key := queryKey(&q.AggregateQuery)
	w, watched := a.watched[key]
	switch {
	case !ok || q.ToMinute > wm:
		reason = unfairWatermark
	case q.FromMinute < a.minMinute:
		reason = unfairPruned
	case a.maxSentMs != math.MinInt64 && q.FromMinute*60000 < a.maxSentMs-retention.Milliseconds():
		reason = unfairRetention
	case !watched || w.since >= q.FromMinute:
		reason = unfairUnwatched
	}
	for i := range rows {
		if reason != "" {
			break
		}
		minute := q.FromMinute + int64(i)
		if a.uncertain[minute] {
			reason = unfairUncertain
		}
		rows[i] = a.sums[sumKey{minute: minute, action: q.Action, key: key}]
		nonEmpty = nonEmpty || rows[i].Count > 0
	}
	m.mu.Unlock()
	if reason != "" {
		return dst, false, reason
	}
	return appendAggregatesBody(dst, q, rows), nonEmpty, ""
}

// appendAggregatesBody writes SPEC.md's response: columns 1m_bucket,
// action, the filters present (origin, brand_id, category_id order), the
// aggregates in query order; one row per minute, every value a string.
// The bucket is formatted with the time package, independently of the
// server's code.
func appendAggregatesBody(dst []byte, q *aggregateQuery, rows []schemas.Totals) []byte {
	dst = append(dst, `{"columns":["1m_bucket","action"`...)
	for _, f := range filterColumns {
		if q.Filter&f.dim != 0 {
			dst = append(dst, `,"`...)
			dst = append(dst, f.column...)
			dst = append(dst, '"')
		}
	}
	for _, k := range q.Aggs {
		dst = append(dst, `,"`...)
		dst = append(dst, k.column()...)
		dst = append(dst, '"')
	}
	dst = append(dst, `],"rows":[`...)
	for i, tot := range rows {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `["`...)
		dst = time.Unix((q.FromMinute+int64(i))*60, 0).UTC().AppendFormat(dst, "2006-01-02T15:04:05")
		dst = append(dst, `","`...)
		dst = append(dst, q.Action.String()...)
		dst = append(dst, '"')
		for _, f := range filterColumns {
			if q.Filter&f.dim != 0 {
				dst = append(dst, ',')
				dst = schemas.AppendJSONString(dst, f.value(q))
			}
		}
		for _, k := range q.Aggs {
			dst = append(dst, `,"`...)
			v := tot.Count
			if k == aggSumPrice {
				v = tot.SumPrice
			}
			dst = strconv.AppendInt(dst, v, 10)
			dst = append(dst, '"')
		}
		dst = append(dst, ']')
	}
	return append(dst, "]}"...)
}

// filterColumns lists the filters in SPEC.md's column order.
var filterColumns = [...]struct {
	dim    schemas.Dims
	column string
	param  string
	value  func(q *aggregateQuery) string
}{
	{schemas.DimOrigin, "origin", "origin", func(q *aggregateQuery) string { return q.Origin }},
	{schemas.DimBrand, "brand_id", "brand_id", func(q *aggregateQuery) string { return q.BrandID }},
	{schemas.DimCategory, "category_id", "category_id", func(q *aggregateQuery) string { return q.CategoryID }},
}
