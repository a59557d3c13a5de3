package gateway

import (
	"bytes"
	"encoding/json"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/allezon/allezon/gateway/profiles"
	"github.com/allezon/allezon/schemas"
)

// Fuzz targets of the gateway's own input handling: the query strings of
// both query endpoints, each checked against an independent reading of
// the rules of docs/api.md, and whole HTTP requests through the real router
// and real stores. `make fuzz` runs them (and every other Fuzz function).

var digitsRE = regexp.MustCompile(`^[0-9]+$`)

// refLimit reads a limit value by docs/api.md's rule: decimal digits only, any
// number above 200 is 200.
func refLimit(v []byte) (int, bool) {
	if !digitsRE.Match(v) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil { // only a range error is left: a huge number
		return profiles.Keep, true
	}
	return int(min(n, profiles.Keep)), true
}

// refCookie decodes the cookie path segment by docs/api.md's rule, with
// net/url: percent-decoding, '+' stays '+', a raw '/' is an error, and
// the result must be non-empty valid UTF-8 without NUL.
func refCookie(raw string) (string, bool) {
	if raw == "" || strings.Contains(raw, "/") {
		return "", false
	}
	c, err := url.PathUnescape(raw)
	if err != nil || c == "" || !utf8.ValidString(c) || strings.IndexByte(c, 0) >= 0 {
		return "", false
	}
	return c, true
}

func FuzzParseProfileQuery(f *testing.F) {
	const tr = "time_range=2022-03-22T12:15:00.000_2022-03-22T12:30:00.000"
	for _, s := range [][2]string{
		{"abc", tr},
		{"abc", tr + "&limit=5"},
		{"a%2Fb%20c%E2%82%AC", tr + "&limit=1000"},
		{"a+b", tr + "&limit=99999999999999999999999"},
		{"abc", "time_range=2022-03-22T12:15:00_2022-03-22T12:30:00&limit=0"},
		{"abc", tr + "&limit=-1"},
		{"abc", tr + "&limit=%2B5"},
		{"abc", tr + "&limit=1&limit=2"},
		{"abc", tr + "&limit"},
		{"abc", tr + "&" + tr},
		{"abc", "time_range=2022-03-22T12:30:00.000_2022-03-22T12:15:00.000"},
		{"abc", "time_range=2022-03-22T12:15:00.000Z_2022-03-22T12:30:00.000Z"},
		{"a%00", tr},
		{"a/b", tr},
		{"a%2", tr},
		{"%ff", tr},
		{"", tr},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, rawCookie, query string) {
		a := args(query)
		q, err := parseProfileQuery([]byte(rawCookie), a)

		cookie, cookieOK := refCookie(rawCookie)
		var r schemas.TimeRange
		rangeOK := false
		if trs := a.PeekMulti("time_range"); len(trs) == 1 {
			var rerr error
			r, rerr = schemas.ParseTimeRange(string(trs[0]))
			rangeOK = rerr == nil
		}
		limit, limitOK := profiles.Keep, true
		if ls := a.PeekMulti("limit"); len(ls) > 0 {
			limit, limitOK = 0, false
			if len(ls) == 1 {
				limit, limitOK = refLimit(ls[0])
			}
		}
		refOK := cookieOK && rangeOK && limitOK
		if err != nil {
			if refOK {
				t.Fatalf("cookie %q query %q refused (%v); by the rules it is cookie %q range %+v limit %d", rawCookie, query, err, cookie, r, limit)
			}
			return
		}
		if !refOK {
			t.Fatalf("cookie %q query %q accepted as %+v; the rules refuse it (cookie %v, range %v, limit %v)", rawCookie, query, q, cookieOK, rangeOK, limitOK)
		}
		// SPEC's invariants of an accepted query, then the reference values.
		if q.limit < 0 || q.limit > profiles.Keep || q.r.From >= q.r.To || q.cookie == "" ||
			!utf8.ValidString(q.cookie) || strings.IndexByte(q.cookie, 0) >= 0 {
			t.Fatalf("cookie %q query %q accepted as %+v, which breaks SPEC's invariants", rawCookie, query, q)
		}
		if q.cookie != cookie || q.r != r || q.limit != limit {
			t.Fatalf("cookie %q query %q: got %+v, the rules give cookie %q range %+v limit %d", rawCookie, query, q, cookie, r, limit)
		}
		// The canonical encoding of the query parses to the same query.
		again, err := parseProfileQuery([]byte(url.PathEscape(q.cookie)),
			args("limit="+strconv.Itoa(q.limit)+"&time_range="+url.QueryEscape(string(a.Peek("time_range")))))
		if err != nil || again != q {
			t.Fatalf("re-encoded %+v parses to %+v, %v", q, again, err)
		}
	})
}

func FuzzParseAggregatesRequest(f *testing.F) {
	const tr = "time_range=2022-03-01T00:05:00_2022-03-01T00:08:00"
	for _, s := range []string{
		tr + "&action=BUY&aggregates=COUNT",
		tr + "&action=VIEW&aggregates=SUM_PRICE&aggregates=COUNT&origin=o&brand_id=b&category_id=c",
		tr + "&action=VIEW&aggregates=COUNT&origin=&brand_id=%E2%82%AC+x",
		"time_range=2022-03-01T00:00:00_2022-03-01T00:10:00&action=BUY&aggregates=COUNT",
		"time_range=2022-03-01T00:00:00.000_2022-03-01T00:10:00.000&action=BUY&aggregates=SUM_PRICE",
		"time_range=2022-03-01T00:00:00_2022-03-01T00:11:00&action=BUY&aggregates=COUNT",
		"time_range=2022-03-01T00:00:30_2022-03-01T00:05:00&action=BUY&aggregates=COUNT",
		"time_range=1969-12-31T23:55:00_1970-01-01T00:05:00&action=BUY&aggregates=COUNT",
		"time_range=0000-01-01T00:00:00_0000-01-01T00:10:00&action=VIEW&aggregates=COUNT",
		tr + "&action=buy&aggregates=COUNT",
		tr + "&action=BUY&action=VIEW&aggregates=COUNT",
		tr + "&action=BUY&aggregates=AVG",
		tr + "&action=BUY",
		tr + "&action=BUY&aggregates=COUNT&origin=a&origin=b",
		tr + "&action=BUY&aggregates=COUNT&brand_id=a%00",
		tr + "&action=BUY&aggregates=COUNT&origin=%ff",
		tr + "&action=BUY&aggregates=COUNT&category_id=%ED%A0%80",
		tr + "&action=BUY&aggregates=COUNT&brand_id=" + strings.Repeat("b", schemas.MaxBrandIDBytes),
		tr + "&action=BUY&aggregates=COUNT&origin=" + strings.Repeat("o", schemas.MaxOriginBytes+1),
		tr + "&action=BUY&aggregates=COUNT&category_id",
		"action=BUY&aggregates=COUNT",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, query string) {
		a := args(query)
		req, err := parseAggregatesRequest(a)

		var want aggregatesRequest
		ok := true
		if trs := a.PeekMulti("time_range"); len(trs) != 1 {
			ok = false
		} else if r, err := schemas.ParseTimeRange(string(trs[0])); err != nil ||
			r.From%60000 != 0 || r.To%60000 != 0 || r.To-r.From > maxAggregateMinutes*60000 {
			ok = false
		} else {
			want.q.FromMinute, want.q.ToMinute = r.From/60000, r.To/60000
		}
		if as := a.PeekMulti("action"); len(as) != 1 {
			ok = false
		} else {
			switch string(as[0]) {
			case "VIEW":
				want.q.Action = schemas.View
			case "BUY":
				want.q.Action = schemas.Buy
			default:
				ok = false
			}
		}
		aggs := a.PeekMulti("aggregates")
		ok = ok && len(aggs) > 0
		for _, v := range aggs {
			switch string(v) {
			case "COUNT":
				want.aggs = append(want.aggs, aggCount)
			case "SUM_PRICE":
				want.aggs = append(want.aggs, aggSumPrice)
			default:
				ok = false
			}
		}
		// A filter holds a value a tag can carry (docs/api.md "Input"):
		// valid UTF-8, no NUL, within the field's limit.
		for _, fl := range []struct {
			name string
			max  int
			dim  schemas.Dims
			dst  *string
		}{
			{"origin", schemas.MaxOriginBytes, schemas.DimOrigin, &want.q.Origin},
			{"brand_id", schemas.MaxBrandIDBytes, schemas.DimBrand, &want.q.BrandID},
			{"category_id", schemas.MaxCategoryIDBytes, schemas.DimCategory, &want.q.CategoryID},
		} {
			switch vs := a.PeekMulti(fl.name); len(vs) {
			case 0:
			case 1:
				if bytes.IndexByte(vs[0], 0) >= 0 || !utf8.Valid(vs[0]) || len(vs[0]) > fl.max {
					ok = false
				}
				*fl.dst = string(vs[0])
				want.q.Filter |= fl.dim
			default:
				ok = false
			}
		}

		if err != nil {
			if ok {
				t.Fatalf("query %q refused (%v); by the rules it is %+v", query, err, want)
			}
			return
		}
		if !ok {
			t.Fatalf("query %q accepted as %+v; the rules refuse it", query, req)
		}
		// SPEC's invariants of an accepted query, then the reference values.
		if n := req.q.Minutes(); n < 1 || n > maxAggregateMinutes || len(req.aggs) == 0 ||
			(req.q.Action != schemas.View && req.q.Action != schemas.Buy) {
			t.Fatalf("query %q accepted as %+v, which breaks SPEC's invariants", query, req)
		}
		if !reflect.DeepEqual(req, want) {
			t.Fatalf("query %q: got %+v, the rules give %+v", query, req, want)
		}
		// The canonical encoding of the request parses to the same request.
		again, err := parseAggregatesRequest(args(canonicalAggregatesQuery(&req)))
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("re-encoded %+v parses to %+v, %v", req, again, err)
		}
	})
}

// canonicalAggregatesQuery writes req back as a query string.
func canonicalAggregatesQuery(req *aggregatesRequest) string {
	q := &req.q
	s := "time_range=" + string(schemas.AppendBucket(nil, q.FromMinute)) + "_" + string(schemas.AppendBucket(nil, q.ToMinute)) +
		"&action=" + q.Action.String()
	for _, k := range req.aggs {
		if k == aggCount {
			s += "&aggregates=COUNT"
		} else {
			s += "&aggregates=SUM_PRICE"
		}
	}
	if q.Filter&schemas.DimOrigin != 0 {
		s += "&origin=" + url.QueryEscape(q.Origin)
	}
	if q.Filter&schemas.DimBrand != 0 {
		s += "&brand_id=" + url.QueryEscape(q.BrandID)
	}
	if q.Filter&schemas.DimCategory != 0 {
		s += "&category_id=" + url.QueryEscape(q.CategoryID)
	}
	return s
}

// requestLineSafe percent-encodes the bytes that would end a request-line
// token (controls, space, DEL), so a fuzzed path or query cannot change the
// framing of the request it is put in.
func requestLineSafe(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// bodyCookies returns the string values of the top-level "cookie" keys of
// a JSON object body, as far as it parses: the profiles a rejected POST
// /user_tags must leave unchanged.
func bodyCookies(body []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var out []string
	for dec.More() && len(out) < 4 {
		k, err := dec.Token()
		if err != nil {
			return out
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return out
		}
		var s string
		if k == "cookie" && json.Unmarshal(v, &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// maxProfileAnswer bounds a /user_profiles answer (docs/api.md "Input"): the
// cookie at its limit in control characters, and 200 tags per action of
// at most MaxTagJSONBytes each.
const maxProfileAnswer = len(`{"cookie":"","views":[],"buys":[]}`) + 6*schemas.MaxCookieBytes +
	2*profiles.Keep*(schemas.MaxTagJSONBytes+1)

const validTagJSON = `{"time":"2022-03-22T12:15:00.123Z","cookie":"fuzz-cookie","country":"PL","device":"MOBILE","action":"BUY","origin":"o","product_info":{"product_id":"p1","brand_id":"b","category_id":"c","price":2599}}`

// FuzzGatewayRequest sends arbitrary requests (the body with a
// Content-Length or chunked) through the real router and real stores. Whatever comes in: no panic, an answer within the deadline,
// never a 5xx, only 2xx or 4xx; an error answer is short JSON, a 405 says
// Allow; only a 204 writes, and it wrote the tag of the body (stored in the
// profile, one Append and one Publish); anything else wrote nothing (no
// Append, no Publish, the profile of every cookie in the body unchanged).
func FuzzGatewayRequest(f *testing.F) {
	const (
		profileRange = "time_range=2022-03-22T12:15:00.000_2022-03-22T12:30:00.000"
		aggRange     = "time_range=2022-03-22T12:10:00_2022-03-22T12:20:00"
	)
	for _, s := range []struct {
		method, path, query, rid string
		body                     string
		chunked                  bool
	}{
		{"POST", "/user_tags", "", "", validTagJSON, false},
		{"POST", "/user_tags", "", "", strings.Replace(validTagJSON, `"o"`, `"chunked"`, 1), true},
		{"POST", "/user_tags", "", "rid-1", strings.Replace(validTagJSON, `"price":2599`, `"price":"2599"`, 1), false},
		{"POST", "/user_tags", "", "", strings.Replace(validTagJSON, `"MOBILE"`, `"PHONE"`, 1), false},
		{"POST", "/user_tags", "", "", strings.Replace(validTagJSON, `"fuzz-cookie"`, `"a\u0000b"`, 1), false},
		{"POST", "/user_tags", "", "", validTagJSON[:40], false},
		{"POST", "/user_tags", "", "", strings.Replace(validTagJSON, `"o"`, `"`+strings.Repeat("o", 6000)+`"`, 1), false},
		{"POST", "/user_tags", "", "", strings.Replace(validTagJSON, `2022-03-22T12:15:00.123Z`, `9999-12-31T23:30:00.000-23:59`, 1), false},
		{"POST", "/user_tags", "", "", strings.Replace(validTagJSON, `2022-03-22T12:15:00.123Z`, `9999-12-31T23:59:00Z`, 1), false},
		{"PUT", "/user_tags", "", "", validTagJSON, false},
		{"POST", "/user_profiles/fuzz-cookie", profileRange + "&limit=5", "", "", false},
		{"POST", "/user_profiles/fuzz%2Dcookie", profileRange, "", `{"cookie":"fuzz-cookie","views":[],"buys":[]}`, false},
		{"POST", "/user_profiles/a%00b", profileRange, "", "", false},
		{"POST", "/aggregates", aggRange + "&action=BUY&aggregates=COUNT&aggregates=SUM_PRICE&origin=o", "", "", false},
		{"POST", "/aggregates", aggRange + "&action=BUY&aggregates=COUNT&origin=o&brand_id=b", "", "", false},
		{"POST", "/aggregates", aggRange + "&action=BUY&aggregates=COUNT&origin=%C3%28", "", "", false},
		{"POST", "/aggregates", "time_range=2022-03-22T12:10:00_2022-03-22T12:21:00&action=BUY&aggregates=COUNT", "", "", false},
		{"GET", "/health", "", "", "", false},
		{"HEAD", "/health", "", "", "", false},
		{"GET", "/metrics", "", "", "", false},
		{"GET", "/nope", "", "", "", false},
	} {
		f.Add(s.method, s.path, s.query, s.rid, []byte(s.body), s.chunked)
	}
	e := newTestEnv(f)
	f.Fuzz(func(t *testing.T, method, path, query, rid string, body []byte, chunked bool) {
		method = strings.Map(func(r rune) rune {
			if r <= ' ' || r == 0x7f {
				return -1
			}
			return r
		}, method)
		if method == "" {
			method = "GET"
		}
		target := requestLineSafe(path)
		if target == "" {
			target = "/"
		}
		if query != "" {
			target += "?" + requestLineSafe(query)
		}
		var extra string
		if rid = strings.NewReplacer("\r", "", "\n", "").Replace(rid); rid != "" {
			extra = headerRequestID + ": " + rid + "\r\n"
		}

		cookies := bodyCookies(body)
		before := make([]profiles.Profile, len(cookies))
		for i, c := range cookies {
			before[i] = e.profile(t, c)
		}
		appends, publishes := e.appends.Load(), e.publishes.Load()

		head := method == "HEAD"
		raw := rawRequest(method, target, body, extra)
		if chunked {
			raw = chunkedRequest(method, target, body, extra)
		}
		resp, err := e.roundTrip(raw, head)
		if err != nil {
			t.Fatalf("%s %q: %v", method, target, err)
		}
		status := resp.StatusCode()
		switch {
		case status >= 500:
			t.Fatalf("%s %q: %d %s", method, target, status, resp.Body())
		case status < 200 || (status >= 300 && status < 400):
			t.Fatalf("%s %q: status %d, want 2xx or 4xx", method, target, status)
		case status >= 400 && !head:
			checkErrorBody(t, resp.Header.ContentType(), resp.Body(), 512+6*len(target))
		}
		if status == 413 && method == "POST" && target == "/user_tags" {
			t.Fatalf("POST /user_tags answered 413; SPEC §1: an oversized tag body is a 400")
		}
		if status == 405 && len(resp.Header.Peek("Allow")) == 0 {
			t.Fatalf("%s %q: 405 without Allow", method, target)
		}
		if status == 200 && strings.HasPrefix(target, userProfilesPrefix) && len(resp.Body()) > maxProfileAnswer {
			t.Fatalf("%s %q: an answer of %d bytes, above the bound of %d", method, target, len(resp.Body()), maxProfileAnswer)
		}

		dA, dP := e.appends.Load()-appends, e.publishes.Load()-publishes
		if status != 204 {
			if dA != 0 || dP != 0 {
				t.Fatalf("%s %q answered %d but wrote: %d appends, %d publishes", method, target, status, dA, dP)
			}
			for i, c := range cookies {
				if after := e.profile(t, c); !reflect.DeepEqual(after, before[i]) {
					t.Fatalf("%s %q answered %d but the profile of %q changed:\nbefore %q\nafter  %q", method, target, status, c, before[i], after)
				}
			}
			return
		}
		var tag schemas.UserTag
		if err := schemas.DecodeUserTag(body, &tag); err != nil {
			t.Fatalf("%s %q answered 204 to a body that is not a tag (%v): %q", method, target, err, body)
		}
		if dA != 1 || dP != 1 {
			t.Fatalf("%s %q answered 204 after %d appends, %d publishes; want 1 and 1", method, target, dA, dP)
		}
		if schemas.CheckNotFuture(tag.TimeMs, time.Now().UnixMilli(), schemas.DefaultMaxFuture) != nil {
			t.Fatalf("%s %q answered 204 to a tag beyond the horizon: %q", method, target, body)
		}
		want := schemas.AppendUserTagJSON(nil, &tag)
		p := e.profile(t, tag.Cookie)
		list := p.Views
		if tag.Action == schemas.Buy {
			list = p.Buys
		}
		for _, got := range list {
			if bytes.Equal(got, want) {
				return
			}
		}
		// Only the newest 200 per action are kept: an older tag may be gone.
		if len(list) < profiles.Keep {
			t.Fatalf("accepted tag %s is not in the profile of %q", want, tag.Cookie)
		}
	})
}
