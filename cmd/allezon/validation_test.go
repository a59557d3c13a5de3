package main

// Issue #9's hostile input through the real binary over TCP: field
// limits, times outside 0000-9999, the future horizon and bad aggregate
// filters are 400s that store nothing and leave every breaker closed.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/allezon/allezon/schemas"
	"github.com/allezon/allezon/services/postgres/pgtest"
)

// tagBody is a tag of the given cookie and time with fields replaced by
// raw JSON values: pairs of name (product_info's inner names too) and value.
func tagBody(cookie, tm string, set ...string) string {
	fields := map[string]string{
		"origin": `"shop"`, "country": `"PL"`, "product_id": `"p1"`, "brand_id": `"nike"`, "category_id": `"shoes"`,
	}
	for i := 0; i+1 < len(set); i += 2 {
		fields[set[i]] = set[i+1]
	}
	c, _ := json.Marshal(cookie)
	return `{"time":"` + tm + `","cookie":` + string(c) + `,"country":` + fields["country"] +
		`,"device":"PC","action":"VIEW","origin":` + fields["origin"] + `,"product_info":{"product_id":` + fields["product_id"] +
		`,"brand_id":` + fields["brand_id"] + `,"category_id":` + fields["category_id"] + `,"price":100}}`
}

// call POSTs (or GETs, when method says so) and returns status and body.
func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// emptyProfile fails unless cookie has no tag in [from, to).
func emptyProfile(t *testing.T, base, cookie, from, to string) {
	t.Helper()
	code, body := call(t, "POST", base+"/user_profiles/"+url.PathEscape(cookie)+"?time_range="+from+"_"+to, "")
	c, _ := json.Marshal(cookie)
	if want := `{"cookie":` + string(c) + `,"views":[],"buys":[]}`; code != 200 || body != want {
		t.Errorf("profile of %.40q: %d %.100s, want it empty", cookie, code, body)
	}
}

// TestHostileTagsRefused: a value over its limit in each string field, a
// time outside years 0000-9999 once its offset is applied, and a time
// beyond the --max-future horizon are each a 400 naming the reason, and
// nothing of them is stored: their profiles stay empty, and once the
// pipeline has counted an honest tag posted after them, their minutes
// count nothing. A tag just inside the horizon is a 204.
func TestHostileTagsRefused(t *testing.T) {
	addr := freeAddr(t)
	start(t, "all", "all", "--http", addr, "--data", t.TempDir())
	waitHealthy(t, addr)
	base := "http://" + addr

	long := func(n int) string { return `"` + strings.Repeat("x", n) + `"` }
	minute := func(i int) string { return "2022-03-22T12:0" + string(rune('0'+i)) + ":30.000Z" }
	cases := []struct {
		name, field, body string
	}{
		{"cookie of 1,025 bytes", "cookie", tagBody(strings.Repeat("c", 1025), minute(0))},
		{"country of 60,000 bytes", "country", tagBody("hostile-country", minute(1), "country", long(60000))},
		{"origin of 6,000 bytes", "origin", tagBody("hostile-origin", minute(2), "origin", long(6000))},
		{"product_id of 257 bytes", "product_id", tagBody("hostile-product", minute(3), "product_id", long(257))},
		{"numeric product_id of 257 digits", "product_id", tagBody("hostile-number", minute(4), "product_id", "1"+strings.Repeat("0", 256))},
		{"brand_id of 257 escaped bytes", "brand_id", tagBody("hostile-brand", minute(5), "brand_id", `"`+strings.Repeat(`\u0001`, 257)+`"`)},
		{"category_id of 257 bytes", "category_id", tagBody("hostile-category", minute(6), "category_id", long(257))},
	}
	for _, c := range cases {
		code, msg := call(t, "POST", base+"/user_tags", c.body)
		if code != 400 || !strings.Contains(msg, c.field+": longer than") {
			t.Errorf("%s: %d %.200s, want 400 %q", c.name, code, msg, c.field+": longer than")
		}
		var tag struct{ Cookie string }
		json.Unmarshal([]byte(c.body), &tag)
		if len(tag.Cookie) <= schemas.MaxCookieBytes {
			emptyProfile(t, base, tag.Cookie, "2022-03-22T12:00:00.000", "2022-03-22T13:00:00.000")
		}
	}

	for _, tm := range []string{"9999-12-31T23:30:00.000-23:59", "0000-01-01T00:00:00.000+00:01"} {
		code, msg := call(t, "POST", base+"/user_tags", tagBody("hostile-years", tm))
		if code != 400 || !strings.Contains(msg, "years 0000-9999") {
			t.Errorf("time %s: %d %.200s, want 400 about years 0000-9999", tm, code, msg)
		}
	}

	now := time.Now().UTC()
	stamp := func(t time.Time) string { return t.Format("2006-01-02T15:04:05.000Z") }
	beyond, inside := now.Add(schemas.DefaultMaxFuture+time.Hour), now.Add(schemas.DefaultMaxFuture-time.Hour)
	for _, tm := range []string{stamp(beyond), "9999-12-31T23:59:00.000Z"} {
		code, msg := call(t, "POST", base+"/user_tags", tagBody("hostile-future", tm))
		if code != 400 || !strings.Contains(msg, "time: too far in the future") {
			t.Errorf("time %s: %d %.200s, want 400 too far in the future", tm, code, msg)
		}
	}
	if code, msg := call(t, "POST", base+"/user_tags", tagBody("near-future", stamp(inside))); code != 204 {
		t.Errorf("a tag %v ahead: %d %s, want 204", schemas.DefaultMaxFuture-time.Hour, code, msg)
	}
	day := func(t time.Time) string { return t.Format("2006-01-02T") }
	emptyProfile(t, base, "hostile-future", day(now)+"00:00:00.000", day(beyond.Add(24*time.Hour))+"00:00:00.000")

	// An honest tag after the refused ones: once it is counted, the
	// pipeline has read past wherever they would be.
	if code, msg := call(t, "POST", base+"/user_tags", tagBody("honest", minute(7))); code != 204 {
		t.Fatalf("honest tag: %d %s", code, msg)
	}
	const q = "/aggregates?time_range=2022-03-22T12:00:00_2022-03-22T12:08:00&action=VIEW&aggregates=COUNT"
	var rows [][]string
	waitFor(t, "the honest tag counted", 15*time.Second, func() bool {
		code, body := call(t, "POST", base+q, "")
		var a struct{ Rows [][]string }
		if code != 200 || json.Unmarshal([]byte(body), &a) != nil || len(a.Rows) != 8 {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		rows = a.Rows
		return rows[7][2] == "1"
	})
	for i, r := range rows[:7] {
		if r[2] != "0" {
			t.Errorf("minute of %q counts %s tags, want 0", cases[i].name, r[2])
		}
	}
}

// TestBadFiltersKeepBreakersClosed: issue #9 item 5 against PostgreSQL.
// Filters no tag can carry (invalid UTF-8, over-long) are 400s before the
// store is asked; every breaker stays closed, /health stays ok and honest
// requests are served.
func TestBadFiltersKeepBreakersClosed(t *testing.T) {
	dsn := pgtest.Start(t)
	addr := freeAddr(t)
	start(t, "all", "all", "--http", addr, "--data", t.TempDir(), "--aggregates", dsn)
	waitHealthy(t, addr)
	base := "http://" + addr
	const q = "/aggregates?time_range=2022-03-22T12:10:00_2022-03-22T12:20:00&action=BUY&aggregates=COUNT"

	bad := []string{
		// The five: PostgreSQL answered SQLSTATE 22021 to each.
		"&origin=%ff", "&brand_id=%C3%28", "&category_id=%ED%A0%80", "&origin=%C0%AF", "&brand_id=ok%FE",
		"&category_id=%E2%82", "&origin=a%80b&brand_id=b", "&brand_id=%F8%88%80%80%80", "&category_id=%FF%FE%FD",
		"&origin=" + strings.Repeat("o", 257), "&brand_id=" + strings.Repeat("%C3%A9", 129), "&category_id=" + strings.Repeat("k", 6000),
	}
	for round := range 2 { // twice the breaker's 5 failures, and more
		for _, f := range bad {
			if code, msg := call(t, "POST", base+q+f, ""); code != 400 {
				t.Fatalf("round %d, filter %.60s: %d %.200s, want 400", round, f, code, msg)
			}
		}
	}
	for _, b := range []string{"profiles", "events", "aggregates"} {
		if s := metricValue(t, addr, `allezon_breaker_state{backend="`+b+`"}`); s != 0 {
			t.Errorf("breaker of %s: state %v after bad filters, want 0 (closed)", b, s)
		}
	}
	if code, body := call(t, "GET", base+"/health", ""); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Errorf("/health after bad filters: %d %s", code, body)
	}
	if code, body := call(t, "POST", base+q+"&origin=shop&brand_id=%C3%A9", ""); code != 200 || !strings.Contains(body, `"rows":[`) {
		t.Errorf("honest query: %d %.300s", code, body)
	}
	if code, msg := call(t, "POST", base+"/user_tags", tagBody("after-bad-filters", "2022-03-22T12:15:00.000Z")); code != 204 {
		t.Errorf("honest tag: %d %s", code, msg)
	}
}

// TestCheckLimits: the schema's cookie limit is the ceiling of
// --max-cookie-bytes, which may only lower it; --max-future 0 is off.
func TestCheckLimits(t *testing.T) {
	tests := []struct {
		cookie int
		future time.Duration
		ok     bool
	}{
		{schemas.MaxCookieBytes, schemas.DefaultMaxFuture, true},
		{64, 0, true},
		{1, time.Minute, true},
		{schemas.MaxCookieBytes + 1, schemas.DefaultMaxFuture, false},
		{64 << 10, schemas.DefaultMaxFuture, false},
		{0, schemas.DefaultMaxFuture, false},
		{64, -time.Second, false},
	}
	for _, tc := range tests {
		c := config{MaxCookieBytes: tc.cookie, MaxFuture: tc.future}
		if err := c.checkLimits(); (err == nil) != tc.ok {
			t.Errorf("max-cookie-bytes %d, max-future %v: %v, want ok %v", tc.cookie, tc.future, err, tc.ok)
		}
	}
}
