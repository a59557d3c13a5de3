package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/allezon/allezon/broker/brokertest"
	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

// tagJSON is a user tag with the given cookie; set replaces fields by raw
// JSON values, in pairs (name, value); the value "-" drops the field. Fields
// of product_info are named as they are inside it.
func tagJSON(cookie string, set ...string) string {
	c, _ := json.Marshal(cookie)
	fields := [][2]string{
		{"time", `"2022-03-22T12:15:00.123Z"`}, {"cookie", string(c)}, {"country", `"PL"`},
		{"device", `"PC"`}, {"action", `"VIEW"`}, {"origin", `"shop"`},
		{"product_id", `"p1"`}, {"brand_id", `"nike"`}, {"category_id", `"shoes"`}, {"price", `100`},
	}
	for i := 0; i+1 < len(set); i += 2 {
		for j := range fields {
			if fields[j][0] == set[i] {
				fields[j][1] = set[i+1]
			}
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	sep := ""
	for i, f := range fields {
		if i == 6 {
			b.WriteString(sep + `"product_info":{`)
			sep = ""
		}
		if f[1] != "-" {
			b.WriteString(sep + strconv.Quote(f[0]) + ":" + f[1])
			sep = ","
		}
	}
	b.WriteString("}}")
	return b.String()
}

// batteryCase is one request and what docs/api.md says the answer is.
type batteryCase struct {
	name   string
	method string // empty: the endpoint's own
	target string // empty: the endpoint's path
	body   string
	header string // extra header lines, each ending in \r\n
	// chunked sends the body with Transfer-Encoding: chunked, in 32 KiB
	// chunks, instead of with a Content-Length.
	chunked bool
	raw     string // the whole request as sent, instead of the fields above

	status int
	errHas string // the error message must contain this
	allow  string // 405: the Allow header
	// cookie is the cookie of a /user_tags body: after the request its
	// profile holds exactly the tag (204) or nothing.
	cookie string
	check  func(t *testing.T, body []byte) // more checks of a 2xx answer
}

// The battery: malformed requests per endpoint, with a few valid ones to
// show it tells the difference, over the real router and real stores. For
// every case it checks the exact status, that an error answer is short
// JSON {"error": ...} (405 with Allow), that nothing was written unless the
// answer is 204 (no profile Append, no Publish; the profile of the body's
// cookie is empty after a rejected tag), and at the end that the event log
// holds exactly the accepted tags.
func TestMalformedRequestBattery(t *testing.T) {
	const (
		profRange = "time_range=2022-03-22T12:00:00.000_2022-03-22T13:00:00.000"
		aggRange  = "time_range=2022-03-22T12:10:00_2022-03-22T12:20:00"
	)
	big := func(n int) string { return strings.Repeat("x", n) }
	// padded is a valid tag of exactly n bytes: an unknown field holds the padding.
	padded := func(cookie string, n int) string {
		s := tagJSON(cookie)
		pre := `{"pad":"`
		return pre + big(n-len(s)-len(pre)-1) + `",` + s[1:]
	}
	bigHeader := "X-Big: " + big(32<<10) + "\r\n"
	quoted := func(s string) string { return `"` + s + `"` }
	// Tag times around the horizon (newTestEnv's MaxFuture), from the
	// wall clock the server reads too.
	ahead := func(d time.Duration) string {
		return quoted(time.Now().Add(d).UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	atLimits := tagJSON("ok-7"+big(schemas.MaxCookieBytes-4), "country", quoted(big(schemas.MaxCountryBytes)),
		"origin", quoted(strings.Repeat(`\u0001`, schemas.MaxOriginBytes)), "product_id", "1"+strings.Repeat("0", schemas.MaxProductIDBytes-1),
		"brand_id", quoted(strings.Repeat("é", schemas.MaxBrandIDBytes/2)), "category_id", quoted(big(schemas.MaxCategoryIDBytes)))

	endpoints := []struct {
		name, method, path string
		cases              []batteryCase
	}{
		{"user_tags", "POST", "/user_tags", []batteryCase{
			{name: "valid tag", body: tagJSON("ok-1"), status: 204, cookie: "ok-1"},
			{name: "valid BUY, numeric product_id, zone offset", body: tagJSON("ok-2", "action", `"BUY"`, "product_id", `12345`, "time", `"2022-03-22T13:15:00.5+01:00"`), status: 204, cookie: "ok-2"},
			{name: "valid at exactly 64 KiB", body: padded("ok-3", 64<<10), status: 204, cookie: "ok-3"},
			{name: "valid, chunked", body: tagJSON("ok-5"), chunked: true, status: 204, cookie: "ok-5"},
			{name: "valid, cookie of 1,024 bytes", body: tagJSON("ok-4" + big(1020)), status: 204, cookie: "ok-4" + big(1020)},
			{name: "valid, just inside the horizon", body: tagJSON("ok-6", "time", ahead(schemas.DefaultMaxFuture-time.Hour)), status: 204, cookie: "ok-6"},
			{name: "valid, every field at its limit", body: atLimits, status: 204, cookie: "ok-7" + big(schemas.MaxCookieBytes-4)},

			{name: "empty body", body: "", status: 400},
			{name: "not JSON", body: "hello", status: 400},
			{name: "truncated JSON", body: tagJSON("bad-trunc")[:60], status: 400, cookie: "bad-trunc"},
			{name: "array", body: "[" + tagJSON("bad-array") + "]", status: 400, cookie: "bad-array"},
			{name: "trailing data", body: tagJSON("bad-trail") + "x", status: 400, errHas: "after the object", cookie: "bad-trail"},
			{name: "two objects", body: tagJSON("bad-two") + tagJSON("bad-two"), status: 400, cookie: "bad-two"},
			{name: "quoted price", body: tagJSON("bad-qprice", "price", `"100"`), status: 400, errHas: "price", cookie: "bad-qprice"},
			{name: "numeric cookie", body: tagJSON("", "cookie", `123`), status: 400, errHas: "cookie", cookie: "123"},
			{name: "null origin", body: tagJSON("bad-null", "origin", `null`), status: 400, errHas: "origin", cookie: "bad-null"},
			{name: "product_info a string", body: strings.Replace(tagJSON("bad-pi"), `"product_info":{`, `"product_info":"x","y":{`, 1), status: 400, cookie: "bad-pi"},
			{name: "missing cookie", body: tagJSON("", "cookie", "-"), status: 400, errHas: "cookie", cookie: ""},
			{name: "empty cookie", body: tagJSON(""), status: 400, errHas: "cookie", cookie: ""},
			{name: "cookie of 1025 bytes", body: tagJSON("bad-long" + big(1017)), status: 400, errHas: "cookie", cookie: "bad-long" + big(1017)},
			{name: "country of 65 bytes", body: tagJSON("bad-len1", "country", quoted(big(65))), status: 400, errHas: "country: longer than 64 bytes", cookie: "bad-len1"},
			{name: "country of 60,000 bytes", body: tagJSON("bad-len2", "country", quoted(big(60000))), status: 400, errHas: "country: longer", cookie: "bad-len2"},
			{name: "origin of 257 bytes", body: tagJSON("bad-len3", "origin", quoted(big(257))), status: 400, errHas: "origin: longer than 256 bytes", cookie: "bad-len3"},
			{name: "origin of 6,000 bytes", body: tagJSON("bad-len4", "origin", quoted(big(6000))), status: 400, errHas: "origin: longer", cookie: "bad-len4"},
			{name: "origin of 257 escaped bytes", body: tagJSON("bad-len5", "origin", quoted(strings.Repeat(`\u0001`, 257))), status: 400, errHas: "origin: longer", cookie: "bad-len5"},
			{name: "product_id of 257 bytes", body: tagJSON("bad-len6", "product_id", quoted(big(257))), status: 400, errHas: "product_id: longer than 256 bytes", cookie: "bad-len6"},
			{name: "numeric product_id of 257 digits", body: tagJSON("bad-len7", "product_id", "1"+strings.Repeat("0", 256)), status: 400, errHas: "product_id: longer", cookie: "bad-len7"},
			{name: "brand_id of 257 bytes", body: tagJSON("bad-len8", "brand_id", quoted(strings.Repeat("é", 128)+"x")), status: 400, errHas: "brand_id: longer than 256 bytes", cookie: "bad-len8"},
			{name: "category_id of 257 bytes", body: tagJSON("bad-len9", "category_id", quoted(big(257))), status: 400, errHas: "category_id: longer than 256 bytes", cookie: "bad-len9"},
			{name: "missing price", body: tagJSON("bad-noprice", "price", "-"), status: 400, errHas: "price", cookie: "bad-noprice"},
			{name: "field name case", body: strings.Replace(tagJSON("bad-case"), `"device"`, `"Device"`, 1), status: 400, errHas: "device", cookie: "bad-case"},
			{name: "device PHONE", body: tagJSON("bad-dev", "device", `"PHONE"`), status: 400, errHas: "device", cookie: "bad-dev"},
			{name: "action CLICK", body: tagJSON("bad-act", "action", `"CLICK"`), status: 400, errHas: "action", cookie: "bad-act"},
			{name: "lower-case action", body: tagJSON("bad-act2", "action", `"view"`), status: 400, errHas: "action", cookie: "bad-act2"},
			{name: "price 2147483648", body: tagJSON("bad-p1", "price", `2147483648`), status: 400, errHas: "price", cookie: "bad-p1"},
			{name: "price -2147483649", body: tagJSON("bad-p2", "price", `-2147483649`), status: 400, errHas: "price", cookie: "bad-p2"},
			{name: "price 1.0", body: tagJSON("bad-p3", "price", `1.0`), status: 400, errHas: "price", cookie: "bad-p3"},
			{name: "price 1e2", body: tagJSON("bad-p4", "price", `1e2`), status: 400, errHas: "price", cookie: "bad-p4"},
			{name: "time without zone", body: tagJSON("bad-t1", "time", `"2022-03-22T12:15:00.123"`), status: 400, errHas: "time", cookie: "bad-t1"},
			{name: "time Feb 30", body: tagJSON("bad-t2", "time", `"2022-02-30T12:15:00Z"`), status: 400, errHas: "time", cookie: "bad-t2"},
			{name: "time with a space", body: tagJSON("bad-t3", "time", `"2022-03-22 12:15:00Z"`), status: 400, errHas: "time", cookie: "bad-t3"},
			{name: "time leap second", body: tagJSON("bad-t4", "time", `"2016-12-31T23:59:60Z"`), status: 400, errHas: "time", cookie: "bad-t4"},
			{name: "time hour 24", body: tagJSON("bad-t5", "time", `"2022-03-22T24:00:00Z"`), status: 400, errHas: "time", cookie: "bad-t5"},
			{name: "time a number", body: tagJSON("bad-t6", "time", `1647951300123`), status: 400, errHas: "time", cookie: "bad-t6"},
			{name: "time in year 10000 after the offset", body: tagJSON("bad-t7", "time", `"9999-12-31T23:30:00.000-23:59"`), status: 400, errHas: "years 0000-9999", cookie: "bad-t7"},
			{name: "time in year -1 after the offset", body: tagJSON("bad-t8", "time", `"0000-01-01T00:00:00.000+00:01"`), status: 400, errHas: "years 0000-9999", cookie: "bad-t8"},
			{name: "time beyond the horizon", body: tagJSON("bad-t9", "time", ahead(schemas.DefaultMaxFuture+time.Hour)), status: 400, errHas: "time: too far in the future", cookie: "bad-t9"},
			{name: "time 9999-12-31T23:59Z", body: tagJSON("bad-t10", "time", `"9999-12-31T23:59:00Z"`), status: 400, errHas: "time: too far in the future", cookie: "bad-t10"},
			{name: "NUL in cookie", body: tagJSON("bad\x00nul"), status: 400, errHas: "NUL", cookie: "bad\x00nul"},
			{name: "NUL in origin", body: tagJSON("bad-nul2", "origin", `"a\u0000"`), status: 400, errHas: "NUL", cookie: "bad-nul2"},
			{name: "NUL in brand_id", body: tagJSON("bad-nul3", "brand_id", `"\u0000"`), status: 400, errHas: "NUL", cookie: "bad-nul3"},
			{name: "raw control byte in a string", body: tagJSON("bad-ctl", "country", "\"P\x01L\""), status: 400, cookie: "bad-ctl"},
			{name: "invalid UTF-8", body: tagJSON("bad-utf8", "origin", "\"\xff\xfe\""), status: 400, errHas: "UTF-8", cookie: "bad-utf8"},
			{name: "lone surrogate", body: tagJSON("bad-sur", "origin", `"\ud800"`), status: 400, cookie: "bad-sur"},
			{name: "body one byte over 64 KiB", body: padded("bad-big1", 64<<10+1), status: 400, errHas: "large", cookie: "bad-big1"},
			{name: "body over 4 MiB", body: padded("bad-big2", 5<<20), status: 400, errHas: "large", cookie: "bad-big2"},
			// fasthttp resets a request whose chunked body crosses the
			// limit, path included, before the error handler runs: this
			// was a 413 until transportError took the reset path for one.
			{name: "chunked body over 64 KiB", body: padded("bad-big3", 64<<10+1), chunked: true, status: 400, errHas: "large", cookie: "bad-big3"},
			{name: "chunked body over 4 MiB", body: padded("bad-big4", 5<<20), chunked: true, status: 400, errHas: "large", cookie: "bad-big4"},
			{name: "header too large", body: tagJSON("bad-hdr"), header: bigHeader, status: 431, cookie: "bad-hdr"},
			{name: "GET", method: "GET", body: tagJSON("bad-get"), status: 405, allow: "POST", cookie: "bad-get"},
			{name: "PUT", method: "PUT", body: tagJSON("bad-put"), status: 405, allow: "POST", cookie: "bad-put"},
			{name: "HEAD", method: "HEAD", status: 405, allow: "POST"},
			{name: "trailing slash", target: "/user_tags/", body: tagJSON("bad-slash"), status: 404, cookie: "bad-slash"},
			{name: "upper case path", target: "/USER_TAGS", body: tagJSON("bad-upper"), status: 404, cookie: "bad-upper"},
		}},
		{"user_profiles", "POST", "/user_profiles/ok-1", []batteryCase{
			{name: "valid", target: "/user_profiles/ok-1?" + profRange, status: 200, check: func(t *testing.T, b []byte) {
				var tag schemas.UserTag
				if err := schemas.DecodeUserTag([]byte(tagJSON("ok-1")), &tag); err != nil {
					t.Fatal(err)
				}
				want := `{"cookie":"ok-1","views":[` + string(schemas.AppendUserTagJSON(nil, &tag)) + `],"buys":[]}`
				if string(b) != want {
					t.Fatalf("got  %s\nwant %s", b, want)
				}
			}},
			{name: "valid, limit 0", target: "/user_profiles/ok-1?" + profRange + "&limit=0", status: 200, check: wantBody(`{"cookie":"ok-1","views":[],"buys":[]}`)},
			{name: "valid, limit above 200", target: "/user_profiles/ok-2?" + profRange + "&limit=100000", status: 200, check: wantContains(`"buys":[{`)},
			{name: "valid, second precision", target: "/user_profiles/ok-1?time_range=2022-03-22T12:00:00_2022-03-22T13:00:00", status: 200, check: wantContains(`"views":[{`)},
			{name: "valid, unknown cookie", target: "/user_profiles/nobody?" + profRange, status: 200, check: wantBody(`{"cookie":"nobody","views":[],"buys":[]}`)},
			{name: "valid, 1 MiB debug body", target: "/user_profiles/nobody?" + profRange, body: big(1 << 20), status: 200},

			{name: "missing time_range", target: "/user_profiles/ok-1", status: 400, errHas: "time_range"},
			{name: "missing time_range, limit only", target: "/user_profiles/ok-1?limit=5", status: 400, errHas: "time_range"},
			{name: "time_range twice", target: "/user_profiles/ok-1?" + profRange + "&" + profRange, status: 400, errHas: "time_range"},
			{name: "reversed range", target: "/user_profiles/ok-1?time_range=2022-03-22T13:00:00.000_2022-03-22T12:00:00.000", status: 400, errHas: "time_range"},
			{name: "empty range", target: "/user_profiles/ok-1?time_range=2022-03-22T13:00:00.000_2022-03-22T13:00:00.000", status: 400, errHas: "time_range"},
			{name: "no separator", target: "/user_profiles/ok-1?time_range=2022-03-22T12:00:00.000", status: 400, errHas: "time_range"},
			{name: "zone suffix", target: "/user_profiles/ok-1?time_range=2022-03-22T12:00:00.000Z_2022-03-22T13:00:00.000Z", status: 400, errHas: "time_range"},
			{name: "two fraction digits", target: "/user_profiles/ok-1?time_range=2022-03-22T12:00:00.00_2022-03-22T13:00:00.000", status: 400, errHas: "time_range"},
			{name: "bad month", target: "/user_profiles/ok-1?time_range=2022-13-22T12:00:00.000_2022-03-22T13:00:00.000", status: 400, errHas: "time_range"},
			{name: "NUL in time_range", target: "/user_profiles/ok-1?time_range=2022-03-22T12:00:00.000%00_2022-03-22T13:00:00.000", status: 400, errHas: "time_range"},
			{name: "negative limit", target: "/user_profiles/ok-1?" + profRange + "&limit=-1", status: 400, errHas: "limit"},
			{name: "non-numeric limit", target: "/user_profiles/ok-1?" + profRange + "&limit=ten", status: 400, errHas: "limit"},
			{name: "fractional limit", target: "/user_profiles/ok-1?" + profRange + "&limit=1.5", status: 400, errHas: "limit"},
			{name: "plus limit", target: "/user_profiles/ok-1?" + profRange + "&limit=%2B5", status: 400, errHas: "limit"},
			{name: "empty limit", target: "/user_profiles/ok-1?" + profRange + "&limit=", status: 400, errHas: "limit"},
			{name: "limit twice", target: "/user_profiles/ok-1?" + profRange + "&limit=1&limit=2", status: 400, errHas: "limit"},
			{name: "%00 in cookie", target: "/user_profiles/ok%00-1?" + profRange, status: 400, errHas: "NUL"},
			{name: "raw NUL in cookie", raw: "POST /user_profiles/ok\x00-1?" + profRange + " HTTP/1.1\r\nHost: allezon\r\nContent-Length: 0\r\n\r\n", status: 400},
			{name: "invalid UTF-8 cookie", target: "/user_profiles/%ff?" + profRange, status: 400, errHas: "UTF-8"},
			{name: "bad percent-encoding", target: "/user_profiles/ok%zz?" + profRange, status: 400, errHas: "cookie"},
			{name: "truncated percent-encoding", target: "/user_profiles/ok%2?" + profRange, status: 400, errHas: "cookie"},
			{name: "raw slash in cookie", target: "/user_profiles/ok/1?" + profRange, status: 400, errHas: "cookie"},
			{name: "empty cookie", target: "/user_profiles/?" + profRange, status: 400, errHas: "cookie"},
			{name: "valid, cookie of 1,024 bytes", target: "/user_profiles/" + big(1024) + "?" + profRange, status: 200, check: wantContains(`"views":[]`)},
			{name: "cookie of 1025 bytes", target: "/user_profiles/" + big(1025) + "?" + profRange, status: 414, errHas: "cookie"},
			{name: "body over 4 MiB", target: "/user_profiles/ok-1?" + profRange, body: big(4<<20 + 1), status: 413},
			{name: "chunked body over 4 MiB", target: "/user_profiles/ok-1?" + profRange, body: big(4<<20 + 1), chunked: true, status: 400, errHas: "large"},
			{name: "valid, chunked 1 MiB debug body", target: "/user_profiles/nobody?" + profRange, body: big(1 << 20), chunked: true, status: 200},
			{name: "header too large", target: "/user_profiles/ok-1?" + profRange, header: bigHeader, status: 431},
			{name: "GET", method: "GET", target: "/user_profiles/ok-1?" + profRange, status: 405, allow: "POST"},
			{name: "DELETE", method: "DELETE", target: "/user_profiles/ok-1?" + profRange, status: 405, allow: "POST"},
			{name: "no cookie segment", target: "/user_profiles?" + profRange, status: 404},
		}},
		{"aggregates", "POST", "/aggregates", []batteryCase{
			{name: "valid, ten minutes", target: "/aggregates?" + aggRange + "&action=VIEW&aggregates=COUNT&aggregates=SUM_PRICE&origin=shop", status: 200, check: func(t *testing.T, b []byte) {
				var a struct {
					Columns []string   `json:"columns"`
					Rows    [][]string `json:"rows"`
				}
				if err := json.Unmarshal(b, &a); err != nil || len(a.Rows) != 10 ||
					strings.Join(a.Columns, ",") != "1m_bucket,action,origin,count,sum_price" || a.Rows[0][0] != "2022-03-22T12:10:00" {
					t.Fatalf("answer %s (%v): want 10 rows of columns 1m_bucket,action,origin,count,sum_price from 12:10", b, err)
				}
			}},
			{name: "valid, one minute, millisecond form", target: "/aggregates?time_range=2022-03-22T12:10:00.000_2022-03-22T12:11:00.000&action=BUY&aggregates=COUNT", status: 200,
				check: wantBody(`{"columns":["1m_bucket","action","count"],"rows":[["2022-03-22T12:10:00","BUY","0"]]}`)},
			{name: "valid, empty filter value", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&brand_id=", status: 200, check: wantContains(`"brand_id"`)},
			{name: "valid, 1 MiB debug body", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT", body: big(1 << 20), status: 200},
			{name: "valid, filters at their limits", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&origin=" + big(128) + "&brand_id=" + strings.Repeat("%C3%A9", 64) + "&category_id=" + big(128), status: 200, check: wantContains(`"0"]`)},

			{name: "missing time_range", target: "/aggregates?action=BUY&aggregates=COUNT", status: 400, errHas: "time_range"},
			{name: "eleven minutes", target: "/aggregates?time_range=2022-03-22T12:10:00_2022-03-22T12:21:00&action=BUY&aggregates=COUNT", status: 400, errHas: "10 minutes"},
			{name: "a day", target: "/aggregates?time_range=2022-03-22T00:00:00_2022-03-23T00:00:00&action=BUY&aggregates=COUNT", status: 400, errHas: "10 minutes"},
			{name: "from not on a minute", target: "/aggregates?time_range=2022-03-22T12:10:30_2022-03-22T12:15:00&action=BUY&aggregates=COUNT", status: 400, errHas: "whole minutes"},
			{name: "to not on a minute", target: "/aggregates?time_range=2022-03-22T12:10:00_2022-03-22T12:15:00.001&action=BUY&aggregates=COUNT", status: 400, errHas: "whole minutes"},
			{name: "reversed range", target: "/aggregates?time_range=2022-03-22T12:20:00_2022-03-22T12:10:00&action=BUY&aggregates=COUNT", status: 400, errHas: "time_range"},
			{name: "empty range", target: "/aggregates?time_range=2022-03-22T12:10:00_2022-03-22T12:10:00&action=BUY&aggregates=COUNT", status: 400, errHas: "time_range"},
			{name: "zone suffix", target: "/aggregates?time_range=2022-03-22T12:10:00Z_2022-03-22T12:20:00Z&action=BUY&aggregates=COUNT", status: 400, errHas: "time_range"},
			{name: "bad time", target: "/aggregates?time_range=2022-03-22T12:60:00_2022-03-22T12:20:00&action=BUY&aggregates=COUNT", status: 400, errHas: "time_range"},
			{name: "time_range twice", target: "/aggregates?" + aggRange + "&" + aggRange + "&action=BUY&aggregates=COUNT", status: 400, errHas: "time_range"},
			{name: "missing action", target: "/aggregates?" + aggRange + "&aggregates=COUNT", status: 400, errHas: "action"},
			{name: "action CLICK", target: "/aggregates?" + aggRange + "&action=CLICK&aggregates=COUNT", status: 400, errHas: "action"},
			{name: "lower-case action", target: "/aggregates?" + aggRange + "&action=buy&aggregates=COUNT", status: 400, errHas: "action"},
			{name: "action twice", target: "/aggregates?" + aggRange + "&action=BUY&action=VIEW&aggregates=COUNT", status: 400, errHas: "action"},
			{name: "missing aggregates", target: "/aggregates?" + aggRange + "&action=BUY", status: 400, errHas: "aggregates"},
			{name: "unknown aggregate", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=AVG", status: 400, errHas: "AVG"},
			{name: "lower-case aggregate", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=count", status: 400, errHas: "aggregates"},
			{name: "NUL in origin", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&origin=a%00b", status: 400, errHas: "NUL"},
			{name: "origin twice", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&origin=a&origin=b", status: 400, errHas: "origin"},
			{name: "invalid UTF-8 origin", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&origin=%ff", status: 400, errHas: "origin: invalid UTF-8"},
			{name: "invalid UTF-8 brand_id", target: "/aggregates?" + aggRange + "&action=VIEW&aggregates=SUM_PRICE&brand_id=a%C3%28", status: 400, errHas: "brand_id: invalid UTF-8"},
			{name: "surrogate in category_id", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&category_id=%ED%A0%80", status: 400, errHas: "category_id: invalid UTF-8"},
			{name: "overlong UTF-8 origin", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&origin=%C0%AF", status: 400, errHas: "origin: invalid UTF-8"},
			{name: "origin of 257 bytes", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&origin=" + big(257), status: 400, errHas: "origin: longer than 256 bytes"},
			{name: "brand_id of 6,000 bytes", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&brand_id=" + big(6000), status: 400, errHas: "brand_id: longer"},
			{name: "category_id of 257 bytes", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&category_id=" + strings.Repeat("%C3%A9", 128) + "x", status: 400, errHas: "category_id: longer"},
			{name: "body over 4 MiB", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT", body: big(4<<20 + 1), status: 413},
			{name: "chunked body over 4 MiB", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT", body: big(4<<20 + 1), chunked: true, status: 400, errHas: "large"},
			{name: "URI too large", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT&origin=" + big(32<<10), status: 431},
			{name: "GET", method: "GET", target: "/aggregates?" + aggRange + "&action=BUY&aggregates=COUNT", status: 405, allow: "POST"},
			{name: "sub-path", target: "/aggregates/x?" + aggRange + "&action=BUY&aggregates=COUNT", status: 404},
		}},
		{"health", "GET", "/health", []batteryCase{
			{name: "valid", status: 200, check: wantBody(`{"status":"ok","backends":{"aggregates":"ok","events":"ok","profiles":"ok"}}`)},
			{name: "HEAD", method: "HEAD", status: 200},
			{name: "POST", method: "POST", body: tagJSON("bad-health"), status: 405, allow: "GET", cookie: "bad-health"},
			{name: "PUT", method: "PUT", status: 405, allow: "GET"},
			{name: "body over 4 MiB", body: big(4<<20 + 1), status: 413},
			{name: "header too large", header: bigHeader, status: 431},
			{name: "trailing slash", target: "/health/", status: 404},
		}},
		{"metrics", "GET", "/metrics", []batteryCase{
			{name: "valid", status: 200, check: wantContains("allezon_http_requests_total")},
			{name: "POST", method: "POST", status: 405, allow: "GET"},
			{name: "DELETE", method: "DELETE", status: 405, allow: "GET"},
			{name: "header too large", header: bigHeader, status: 431},
			{name: "with a query", target: "/metrics?x=%00", status: 200},
		}},
		{"other", "GET", "/", []batteryCase{
			{name: "root", status: 404},
			{name: "unknown path", target: "/user_tag", status: 404},
			{name: "POST to an unknown path", method: "POST", target: "/tags", body: tagJSON("bad-unknown"), status: 404, cookie: "bad-unknown"},
			{name: "not HTTP", raw: "hello\r\n\r\n", status: 400},
			{name: "bad Content-Length", raw: "POST /user_tags HTTP/1.1\r\nHost: allezon\r\nContent-Length: ten\r\n\r\n" + tagJSON("bad-cl"), status: 400, cookie: "bad-cl"},
			{name: "space in the path", raw: "POST /user_tags x HTTP/1.1\r\nHost: allezon\r\nContent-Length: 0\r\n\r\n", status: 400},
		}},
	}

	e := newTestEnv(t)
	var accepted []string // canonical JSON of the tags answered 204
	for _, ep := range endpoints {
		for _, c := range ep.cases {
			t.Run(ep.name+"/"+c.name, func(t *testing.T) {
				method, target := cmpOr(c.method, ep.method), cmpOr(c.target, ep.path)
				raw := []byte(c.raw)
				switch {
				case c.chunked:
					raw = chunkedRequest(method, target, []byte(c.body), c.header)
				case c.raw == "":
					raw = rawRequest(method, target, []byte(c.body), c.header)
				}
				appends, publishes := e.appends.Load(), e.publishes.Load()
				resp, err := e.roundTrip(raw, method == "HEAD" && c.raw == "")
				if err != nil {
					t.Fatal(err)
				}
				body := resp.Body()
				if resp.StatusCode() != c.status {
					t.Fatalf("status %d, want %d; body %.300q", resp.StatusCode(), c.status, body)
				}
				if c.status >= 400 && method != "HEAD" {
					checkErrorBody(t, resp.Header.ContentType(), body, 200)
					if !bytes.Contains(body, []byte(c.errHas)) {
						t.Errorf("error %s does not mention %q", body, c.errHas)
					}
				}
				if got := string(resp.Header.Peek(fasthttp.HeaderAllow)); got != c.allow {
					t.Errorf("Allow %q, want %q", got, c.allow)
				}
				if c.check != nil {
					c.check(t, body)
				}

				dA, dP := e.appends.Load()-appends, e.publishes.Load()-publishes
				if c.status != 204 {
					if dA != 0 || dP != 0 {
						t.Errorf("a %d wrote: %d profile appends, %d publishes", c.status, dA, dP)
					}
					if c.cookie != "" || strings.Contains(c.body, `"cookie":""`) {
						if p := e.profile(t, c.cookie); len(p.Views)+len(p.Buys) != 0 {
							t.Errorf("a %d stored a profile for %q: %q", c.status, c.cookie, p)
						}
					}
					return
				}
				if dA != 1 || dP != 1 {
					t.Errorf("a 204 made %d profile appends, %d publishes; want 1 and 1", dA, dP)
				}
				var tag schemas.UserTag
				if err := schemas.DecodeUserTag([]byte(c.body), &tag); err != nil {
					t.Fatal(err)
				}
				want := string(schemas.AppendUserTagJSON(nil, &tag))
				accepted = append(accepted, want)
				p := e.profile(t, c.cookie)
				if got := append(p.Views, p.Buys...); len(got) != 1 || string(got[0]) != want {
					t.Errorf("profile of %q holds %q, want just %s", c.cookie, got, want)
				}
			})
		}
	}

	// The event log holds exactly the accepted tags.
	var logged []string
	for _, r := range brokertest.ReadAll(t, e.broker.Addrs(), testTopic) {
		var tag schemas.UserTag
		if err := schemas.DecodeEventValue([]byte(r.Value), &tag); err != nil {
			t.Fatalf("event %d/%d: %v", r.Partition, r.Offset, err)
		}
		logged = append(logged, string(schemas.AppendUserTagJSON(nil, &tag)))
	}
	if !sameMultiset(logged, accepted) {
		t.Fatalf("the event log holds\n%s\nwant the accepted tags\n%s", strings.Join(logged, "\n"), strings.Join(accepted, "\n"))
	}
	if len(accepted) != 7 {
		t.Fatalf("%d tags accepted, want the 7 valid ones", len(accepted))
	}
}

// chunkedRequest is rawRequest with the body in 32 KiB chunks.
func chunkedRequest(method, target string, body []byte, extra string) []byte {
	b := fmt.Appendf(nil, "%s %s HTTP/1.1\r\nHost: allezon\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n%s\r\n",
		method, target, extra)
	for len(body) > 0 {
		n := min(len(body), 32<<10)
		b = fmt.Appendf(b, "%x\r\n%s\r\n", n, body[:n])
		body = body[n:]
	}
	return append(b, "0\r\n\r\n"...)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func sameMultiset(a, b []string) bool {
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		count[s]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

func wantBody(want string) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		t.Helper()
		if string(b) != want {
			t.Fatalf("got  %s\nwant %s", b, want)
		}
	}
}

func wantContains(want string) func(*testing.T, []byte) {
	return func(t *testing.T, b []byte) {
		t.Helper()
		if !bytes.Contains(b, []byte(want)) {
			t.Fatalf("answer %.500s does not contain %q", b, want)
		}
	}
}
