package gateway

import (
	"bytes"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/allezon/allezon/gateway/profiles"
	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

const userProfilesPrefix = "/user_profiles/"

// profileQuery is a parsed POST /user_profiles/{cookie} request.
type profileQuery struct {
	cookie string
	r      schemas.TimeRange
	limit  int
}

// userProfiles handles POST /user_profiles/{cookie}?time_range=..[&limit=..].
// rawCookie is the path segment as sent, still percent-encoded; body is
// the expected answer in a debug build (empty otherwise).
func (s *Server) userProfiles(ctx *fasthttp.RequestCtx, rid string, rawCookie, body []byte) {
	q, err := parseProfileQuery(rawCookie, ctx.QueryArgs())
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if len(q.cookie) > s.cfg.MaxCookieBytes {
		writeError(ctx, fasthttp.StatusRequestURITooLong, "cookie: longer than "+strconv.Itoa(s.cfg.MaxCookieBytes)+" bytes")
		return
	}
	t, err := s.breakers.profiles.allow()
	if err != nil {
		writeUnavailable(ctx, err, "profile store unavailable, retry: "+err.Error())
		return
	}
	bctx, cancel := s.backendContext()
	defer cancel()
	start := time.Now()
	p, err := s.b.Profiles.Read(bctx, q.cookie, q.r, q.limit)
	opProfileRead.done(start, err)
	s.breakers.profiles.done(t, err)
	if err != nil {
		if isDataError(err) {
			// Validation let through what the store refuses as data.
			s.log.Warn("profile read refused by the store as data", "request_id", rid, "cookie", q.cookie, "err", err)
			writeError(ctx, fasthttp.StatusBadRequest, "query refused by the profile store as invalid data")
			return
		}
		s.log.Error("profile read failed", "request_id", rid, "cookie", q.cookie, "err", err)
		writeUnavailable(ctx, err, "profile store unavailable, retry")
		return
	}
	answer := appendProfileJSON(make([]byte, 0, profileSize(q.cookie, p)), q.cookie, p)
	debugCompare(s.log, endpointUserProfiles, rid, q.limit, body, answer)
	writeJSON(ctx, answer)
}

func parseProfileQuery(rawCookie []byte, args *fasthttp.Args) (profileQuery, error) {
	var q profileQuery
	cookie, err := unescapePathSegment(rawCookie)
	if err != nil {
		return q, err
	}
	q.cookie = cookie
	tr, err := singleArg(args, "time_range")
	if err != nil {
		return q, err
	}
	if q.r, err = schemas.ParseTimeRange(string(tr)); err != nil {
		return q, err
	}
	q.limit = profiles.Keep
	if args.Has("limit") {
		l, err := singleArg(args, "limit")
		if err != nil {
			return q, err
		}
		if q.limit, err = parseLimit(l); err != nil {
			return q, err
		}
	}
	return q, nil
}

// parseLimit accepts a non-negative decimal integer; values above Keep
// (however large) mean Keep, as SPEC says.
func parseLimit(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, errors.New("limit: not a non-negative integer")
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errors.New("limit: not a non-negative integer")
		}
		if n <= profiles.Keep {
			n = n*10 + int(c-'0')
		}
	}
	return min(n, profiles.Keep), nil
}

// unescapePathSegment percent-decodes the cookie of the path. It works on
// the raw path because fasthttp's normalised path would turn an encoded
// "/" into a separator. '+' stays '+' in a path.
func unescapePathSegment(b []byte) (string, error) {
	if len(b) == 0 {
		return "", errors.New("cookie: missing in path /user_profiles/{cookie}")
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '/':
			return "", errors.New("cookie: unescaped '/' in path; percent-encode it")
		case '%':
			if i+2 >= len(b) || unhex(b[i+1]) < 0 || unhex(b[i+2]) < 0 {
				return "", errors.New("cookie: bad percent-encoding in path")
			}
			out = append(out, byte(unhex(b[i+1])<<4|unhex(b[i+2])))
			i += 2
		default:
			out = append(out, c)
		}
	}
	if !utf8.Valid(out) {
		return "", errors.New("cookie: not valid UTF-8")
	}
	if bytes.IndexByte(out, 0) >= 0 {
		return "", errors.New("cookie: NUL character not allowed")
	}
	return string(out), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// singleArg returns a required query parameter that must appear once.
func singleArg(args *fasthttp.Args, name string) ([]byte, error) {
	vs := args.PeekMulti(name)
	switch len(vs) {
	case 0:
		return nil, errors.New(name + ": required")
	case 1:
		return vs[0], nil
	}
	return nil, errors.New(name + ": given more than once")
}

// appendProfileJSON writes {"cookie":..,"views":[..],"buys":[..]}; the
// tags are already canonical JSON, so this only joins them.
func appendProfileJSON(dst []byte, cookie string, p profiles.Profile) []byte {
	dst = append(dst, `{"cookie":`...)
	dst = schemas.AppendJSONString(dst, cookie)
	dst = append(dst, `,"views":`...)
	dst = appendJSONList(dst, p.Views)
	dst = append(dst, `,"buys":`...)
	dst = appendJSONList(dst, p.Buys)
	return append(dst, '}')
}

func appendJSONList(dst []byte, items [][]byte) []byte {
	dst = append(dst, '[')
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, it...)
	}
	return append(dst, ']')
}

func profileSize(cookie string, p profiles.Profile) int {
	n := len(cookie) + 48
	for _, t := range p.Views {
		n += len(t) + 1
	}
	for _, t := range p.Buys {
		n += len(t) + 1
	}
	return n
}
