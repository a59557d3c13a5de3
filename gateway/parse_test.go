package gateway

import (
	"strings"
	"testing"

	"github.com/allezon/allezon/gateway/profiles"
	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

func args(q string) *fasthttp.Args {
	var a fasthttp.Args
	a.Parse(q)
	return &a
}

// minute is the minute bucket of a SPEC datetime like 2022-03-01T00:05:00.
func minute(t *testing.T, s string) int64 {
	t.Helper()
	r, err := schemas.ParseTimeRange(s + "_9999-01-01T00:00:00")
	if err != nil {
		t.Fatal(err)
	}
	return schemas.MinuteOf(r.From)
}

func TestParseProfileQuery(t *testing.T) {
	const tr = "time_range=2022-03-22T12:15:00.000_2022-03-22T12:30:00.000"
	tests := []struct {
		name, cookie, query string
		wantCookie          string
		wantLimit           int
		wantErr             string
	}{
		{"default limit", "abc", tr, "abc", 200, ""},
		{"limit", "abc", tr + "&limit=5", "abc", 5, ""},
		{"limit zero", "abc", tr + "&limit=0", "abc", 0, ""},
		{"limit above 200", "abc", tr + "&limit=1000", "abc", 200, ""},
		{"huge limit", "abc", tr + "&limit=99999999999999999999999", "abc", 200, ""},
		{"negative limit", "abc", tr + "&limit=-1", "", 0, "limit"},
		{"non-numeric limit", "abc", tr + "&limit=ten", "", 0, "limit"},
		{"empty limit", "abc", tr + "&limit=", "", 0, "limit"},
		{"plus limit", "abc", tr + "&limit=%2B5", "", 0, "limit"},
		{"two limits", "abc", tr + "&limit=1&limit=2", "", 0, "more than once"},
		{"missing range", "abc", "limit=5", "", 0, "time_range: required"},
		{"reversed range", "abc", "time_range=2022-03-22T12:30:00.000_2022-03-22T12:15:00.000", "", 0, "time_range"},
		{"empty range", "abc", "time_range=2022-03-22T12:15:00.000_2022-03-22T12:15:00.000", "", 0, "time_range"},
		{"zone suffix", "abc", "time_range=2022-03-22T12:15:00.000Z_2022-03-22T12:30:00.000Z", "", 0, "time_range"},
		{"percent-encoded cookie", "a%2Fb%20c%E2%82%AC", tr, "a/b c€", 200, ""},
		{"plus stays plus", "a+b", tr, "a+b", 200, ""},
		{"empty cookie", "", tr, "", 0, "cookie"},
		{"raw slash", "a/b", tr, "", 0, "cookie"},
		{"bad escape", "a%2", tr, "", 0, "cookie"},
		{"bad hex", "a%zz", tr, "", 0, "cookie"},
		{"invalid utf-8", "a%ff", tr, "", 0, "cookie"},
		{"NUL", "a%00", tr, "", 0, "cookie: NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := parseProfileQuery([]byte(tt.cookie), args(tt.query))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if q.cookie != tt.wantCookie || q.limit != tt.wantLimit {
				t.Fatalf("got cookie %q limit %d, want %q %d", q.cookie, q.limit, tt.wantCookie, tt.wantLimit)
			}
		})
	}
}

func TestParseAggregatesRequest(t *testing.T) {
	const tr = "time_range=2022-03-01T00:05:00_2022-03-01T00:08:00"
	tests := []struct {
		name, query string
		wantFilter  schemas.Dims
		wantAggs    []aggregateKind
		wantErr     string
	}{
		{"count", tr + "&action=BUY&aggregates=COUNT", 0, []aggregateKind{aggCount}, ""},
		{"order kept", tr + "&action=VIEW&aggregates=SUM_PRICE&aggregates=COUNT", 0, []aggregateKind{aggSumPrice, aggCount}, ""},
		{"repeat kept", tr + "&action=VIEW&aggregates=COUNT&aggregates=COUNT", 0, []aggregateKind{aggCount, aggCount}, ""},
		{"all filters", tr + "&action=VIEW&aggregates=COUNT&category_id=c&brand_id=b&origin=o", schemas.AllDims, []aggregateKind{aggCount}, ""},
		{"empty filter value", tr + "&action=VIEW&aggregates=COUNT&origin=", schemas.DimOrigin, []aggregateKind{aggCount}, ""},
		{"ten minutes", "time_range=2022-03-01T00:00:00_2022-03-01T00:10:00&action=BUY&aggregates=COUNT", 0, []aggregateKind{aggCount}, ""},
		{"millisecond form on minutes", "time_range=2022-03-01T00:00:00.000_2022-03-01T00:10:00.000&action=BUY&aggregates=COUNT", 0, []aggregateKind{aggCount}, ""},
		{"eleven minutes", "time_range=2022-03-01T00:00:00_2022-03-01T00:11:00&action=BUY&aggregates=COUNT", 0, nil, "10 minutes"},
		{"not on minutes", "time_range=2022-03-01T00:00:30_2022-03-01T00:05:00&action=BUY&aggregates=COUNT", 0, nil, "whole minutes"},
		{"to before from", "time_range=2022-03-01T00:05:00_2022-03-01T00:00:00&action=BUY&aggregates=COUNT", 0, nil, "time_range"},
		{"missing action", tr + "&aggregates=COUNT", 0, nil, "action"},
		{"lowercase action", tr + "&action=buy&aggregates=COUNT", 0, nil, "action"},
		{"missing aggregates", tr + "&action=BUY", 0, nil, "aggregates"},
		{"unknown aggregate", tr + "&action=BUY&aggregates=AVG", 0, nil, "AVG"},
		{"two origins", tr + "&action=BUY&aggregates=COUNT&origin=a&origin=b", 0, nil, "more than once"},
		{"missing range", "action=BUY&aggregates=COUNT", 0, nil, "time_range"},
		{"NUL filter", tr + "&action=BUY&aggregates=COUNT&brand_id=a%00", 0, nil, "brand_id: NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := parseAggregatesRequest(args(tt.query))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.q.Filter != tt.wantFilter {
				t.Errorf("filter = %b, want %b", req.q.Filter, tt.wantFilter)
			}
			if len(req.aggs) != len(tt.wantAggs) {
				t.Fatalf("aggs = %v, want %v", req.aggs, tt.wantAggs)
			}
			for i := range req.aggs {
				if req.aggs[i] != tt.wantAggs[i] {
					t.Fatalf("aggs = %v, want %v", req.aggs, tt.wantAggs)
				}
			}
		})
	}
}

func TestAggregatesJSON(t *testing.T) {
	from := minute(t, "2022-03-01T00:05:00")
	tests := []struct {
		name   string
		req    aggregatesRequest
		totals []schemas.Totals
		want   string
	}{
		{
			name: "SPEC example shape, zero rows kept",
			req: aggregatesRequest{
				q:    schemas.AggregateQuery{Action: schemas.Buy, FromMinute: from, ToMinute: from + 3, Filter: schemas.DimBrand, BrandID: "Nike"},
				aggs: []aggregateKind{aggCount, aggSumPrice},
			},
			totals: []schemas.Totals{{Count: 3, SumPrice: 1000}, {}, {Count: 1, SumPrice: 1 << 40}},
			want: `{"columns":["1m_bucket","action","brand_id","count","sum_price"],"rows":[` +
				`["2022-03-01T00:05:00","BUY","Nike","3","1000"],` +
				`["2022-03-01T00:06:00","BUY","Nike","0","0"],` +
				`["2022-03-01T00:07:00","BUY","Nike","1","1099511627776"]]}`,
		},
		{
			name: "filters in SPEC order, aggregates in query order, escaping",
			req: aggregatesRequest{
				q: schemas.AggregateQuery{Action: schemas.View, FromMinute: from, ToMinute: from + 1, Filter: schemas.AllDims,
					Origin: `o"1`, BrandID: "b", CategoryID: "ć"},
				aggs: []aggregateKind{aggSumPrice, aggCount},
			},
			totals: []schemas.Totals{{Count: 2, SumPrice: -5}},
			want: `{"columns":["1m_bucket","action","origin","brand_id","category_id","sum_price","count"],"rows":[` +
				`["2022-03-01T00:05:00","VIEW","o\"1","b","ć","-5","2"]]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendAggregatesJSON(nil, &tt.req, tt.totals))
			if got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestProfileJSON(t *testing.T) {
	tests := []struct {
		name   string
		cookie string
		p      profiles.Profile
		want   string
	}{
		{"empty lists are [] not null", "c", profiles.Profile{}, `{"cookie":"c","views":[],"buys":[]}`},
		{"tags joined", "c\"", profiles.Profile{Views: [][]byte{[]byte(`{"a":1}`), []byte(`{"a":2}`)}, Buys: [][]byte{[]byte(`{"b":1}`)}},
			`{"cookie":"c\"","views":[{"a":1},{"a":2}],"buys":[{"b":1}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(appendProfileJSON(nil, tt.cookie, tt.p)); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
