package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

// The runner is tested against a tiny server that does not implement the
// product: it answers each query with the expected answer the query
// carries (debug mode), deliberately corrupted in one way. The echo
// without corruption is the control: it shows the plumbing (URIs,
// percent-encoding, bodies, statistics) works, so that the mismatches of
// each corruption come from the corruption.

type corruption int

const (
	echo       corruption = iota
	truncate32            // sums as 32-bit integers
	unsorted              // views oldest first
	dropTag               // the oldest view left out
)

type echoServer struct {
	mode corruption
	// failTags makes tag requests number failFrom.. failFrom+failTags-1
	// fail, alternately with a 503 and a closed connection.
	failFrom, failTags int64
	// failAfter delays those failures, so they come after the sending ended.
	failAfter time.Duration
	tags      atomic.Int64
}

func (s *echoServer) handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case path == "/user_tags":
		n := s.tags.Add(1) - 1
		if n >= s.failFrom && n < s.failFrom+s.failTags {
			time.Sleep(s.failAfter)
			if n%2 == 0 {
				ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			} else {
				ctx.Conn().Close()
			}
			return
		}
		var t schemas.UserTag
		if err := schemas.DecodeUserTag(ctx.PostBody(), &t); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	case strings.HasPrefix(path, "/user_profiles/"):
		var body struct {
			Cookie string `json:"cookie"`
			Views  []json.RawMessage
			Buys   []json.RawMessage
		}
		if err := json.Unmarshal(ctx.PostBody(), &body); err != nil || body.Cookie != strings.TrimPrefix(path, "/user_profiles/") {
			ctx.Error("cookie in path and body differ", fasthttp.StatusBadRequest)
			return
		}
		switch {
		case s.mode == unsorted:
			for i, j := 0, len(body.Views)-1; i < j; i, j = i+1, j-1 {
				body.Views[i], body.Views[j] = body.Views[j], body.Views[i]
			}
		case s.mode == dropTag && len(body.Views) > 0:
			body.Views = body.Views[:len(body.Views)-1]
		}
		if body.Views == nil {
			body.Views = []json.RawMessage{}
		}
		if body.Buys == nil {
			body.Buys = []json.RawMessage{}
		}
		out, _ := json.Marshal(map[string]any{"cookie": body.Cookie, "views": body.Views, "buys": body.Buys})
		ctx.SetContentType("application/json")
		ctx.SetBody(out)
	case path == "/aggregates":
		var body struct {
			Columns []string   `json:"columns"`
			Rows    [][]string `json:"rows"`
		}
		if err := json.Unmarshal(ctx.PostBody(), &body); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
			return
		}
		if s.mode == truncate32 {
			for c, name := range body.Columns {
				if name != "sum_price" {
					continue
				}
				for _, row := range body.Rows {
					v, _ := strconv.ParseInt(row[c], 10, 64)
					row[c] = strconv.Itoa(int(int32(v)))
				}
			}
		}
		out, _ := json.Marshal(body)
		ctx.SetContentType("application/json")
		ctx.SetBody(out)
	default:
		ctx.Error("not found", fasthttp.StatusNotFound)
	}
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

func startEcho(t *testing.T, s *echoServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: s.handle, Logger: quietLogger{}}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	return "http://" + ln.Addr().String()
}

// quickConfig is a short run: 3,000 tags at 6,000/s starting 1.5 s before
// a minute, with freshness rules short enough that the first minute is
// complete, and queried, half-way through.
func quickConfig(base string) Config {
	return Config{
		BaseURL:            base,
		Seed:               3,
		Start:              DefaultStart.Add(-1500 * time.Millisecond),
		Rate:               6000,
		Events:             3000,
		Conns:              8,
		AggregateEvery:     20,
		ProfileFreshness:   20 * time.Millisecond,
		AggregateFreshness: 50 * time.Millisecond,
		Settle:             200 * time.Millisecond,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func TestRunAgainstCorruptingServers(t *testing.T) {
	tests := []struct {
		name                  string
		mode                  corruption
		profileBad, aggregBad bool
	}{
		{"echo", echo, false, false},
		{"32-bit sums", truncate32, false, true},
		{"unsorted views", unsorted, true, false},
		{"dropped tag", dropTag, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rep, err := Run(context.Background(), quickConfig(startEcho(t, &echoServer{mode: tt.mode})))
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			rep.WriteText(&text)
			if rep.TagsSent != 3000 || rep.TagsAcked != 3000 || rep.Tags.ErrorCount() != 0 {
				t.Fatalf("tags: sent %d acked %d errors %v\n%s", rep.TagsSent, rep.TagsAcked, rep.Tags.Errors, text.String())
			}
			for _, c := range []struct {
				e   *EndpointReport
				bad bool
			}{{&rep.Profiles, tt.profileBad}, {&rep.Aggregates, tt.aggregBad}} {
				if c.e.ErrorCount() != 0 || c.e.Compared == 0 || c.e.NonEmpty == 0 {
					t.Errorf("errors %v, %d compared, %d non-empty\n%s", c.e.Errors, c.e.Compared, c.e.NonEmpty, text.String())
				}
				if got := c.e.Mismatches > 0; got != c.bad {
					t.Errorf("%d mismatches, want some: %v\n%s", c.e.Mismatches, c.bad, text.String())
				}
				if c.bad && (len(c.e.Examples) == 0 || c.e.Examples[0].Diff == "") {
					t.Errorf("mismatches without examples\n%s", text.String())
				}
			}
			if rep.OK() == (tt.profileBad || tt.aggregBad) {
				t.Errorf("verdict %v\n%s", rep.OK(), text.String())
			}
			var js bytes.Buffer
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var decoded struct {
				OK   bool  `json:"ok"`
				Sent int64 `json:"tags_sent"`
			}
			if err := json.Unmarshal(js.Bytes(), &decoded); err != nil || decoded.OK != rep.OK() || decoded.Sent != rep.TagsSent {
				t.Errorf("JSON report %s: %v", js.String(), err)
			}
		})
	}
}

func TestRunThroughOutage(t *testing.T) {
	tests := []struct {
		name     string
		outages  []Window
		retry    bool
		wantOK   bool
		outageEr bool
	}{
		{"declared, retried", []Window{{0, time.Hour}}, true, true, true},
		{"declared, not retried", []Window{{0, time.Hour}}, false, true, true},
		{"undeclared", nil, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := quickConfig(startEcho(t, &echoServer{failFrom: 1000, failTags: 40}))
			cfg.Outages, cfg.Retry, cfg.RetryGrace = tt.outages, tt.retry, 2*time.Second
			rep, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			rep.WriteText(&text)
			if rep.OK() != tt.wantOK {
				t.Errorf("verdict %v, want %v\n%s", rep.OK(), tt.wantOK, text.String())
			}
			failures := rep.Tags.OutageErrors
			if !tt.outageEr {
				failures = rep.Tags.Errors
			}
			if failures["status 503"] != 20 || failures["connection closed"]+failures["connection reset"] != 20 {
				t.Errorf("failures %v, want 20 × 503 and 20 closed connections\n%s", failures, text.String())
			}
			if tt.retry && (rep.Retries != 40 || rep.Unacknowledged != 0 || rep.TagsAcked != 3000) {
				t.Errorf("%d retries, %d acked, %d unacknowledged; want 40, 3000, 0\n%s", rep.Retries, rep.TagsAcked, rep.Unacknowledged, text.String())
			}
			if !tt.retry && rep.TagsAcked != 2960 {
				t.Errorf("%d acked, want 2960\n%s", rep.TagsAcked, text.String())
			}
			// The failed tags fall in the first minute: aggregate queries
			// avoid it. The second, last minute holds none, and once
			// sending ended and it aged, queries may expect its tags.
			if rep.Aggregates.Compared == 0 || rep.Aggregates.NonEmpty == rep.Aggregates.Compared || rep.Aggregates.Mismatches+rep.Profiles.Mismatches != 0 {
				t.Errorf("aggregates: %d compared, %d non-empty; mismatches %d/%d\n%s", rep.Aggregates.Compared, rep.Aggregates.NonEmpty,
					rep.Profiles.Mismatches, rep.Aggregates.Mismatches, text.String())
			}
		})
	}
}

// TestRunRetriesLateFailures: the last tags fail only after the sending
// ended, with no settle; the run must still wait for them, retry them and
// get them acknowledged (it once ended with them unacknowledged and unretried).
func TestRunRetriesLateFailures(t *testing.T) {
	cfg := quickConfig(startEcho(t, &echoServer{failFrom: 2990, failTags: 10, failAfter: 300 * time.Millisecond}))
	cfg.Settle, cfg.Retry, cfg.RetryGrace = 0, true, 5*time.Second
	cfg.Outages = []Window{{0, time.Hour}}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Retries != 10 || rep.TagsAcked != 3000 {
		var text bytes.Buffer
		rep.WriteText(&text)
		t.Fatalf("%d retries, %d of 3000 acknowledged; want 10 retries and all\n%s", rep.Retries, rep.TagsAcked, text.String())
	}
}

func TestRunNoServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := quickConfig("http://" + addr)
	cfg.Events, cfg.Settle = 5, 0
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Tags.Errors["connection refused"] != 5 {
		t.Errorf("verdict %v, errors %v; want 5 refused connections", rep.OK(), rep.Tags.Errors)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{{BaseURL: "localhost:8088"}, {BaseURL: "ftp://x"}, {Rate: -1}} {
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("Run(%+v) accepted the config", c)
		}
	}
}

// TestWireURI checks that an unusual cookie reaches the server
// percent-encoded, unchanged by the client, and decodes back.
func TestWireURI(t *testing.T) {
	type seen struct{ raw, path string }
	got := make(chan seen, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		got <- seen{string(ctx.Request.Header.RequestURI()), string(ctx.Path())}
	}}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	defer srv.Shutdown()
	cfg, err := quickConfig("http://" + ln.Addr().String()).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	r, _ := newRunner(cfg)
	w := newWorker(r, 0)
	for _, cookie := range oddCookies {
		q := profileQuery{Cookie: cookie, FromMs: t0ms, ToMs: t0ms + 1500, HasLimit: true, Limit: 7}
		uri := appendProfileURI([]byte(r.baseURL), &q)
		if _, _, _, err := w.post(uri, nil, time.Second); err != nil {
			t.Fatal(err)
		}
		s := <-got
		wantRaw := "/user_profiles/" + string(appendPathSegment(nil, cookie)) + "?time_range=2022-03-22T12:00:00.000_2022-03-22T12:00:01.500&limit=7"
		if s.raw != wantRaw || s.path != "/user_profiles/"+cookie {
			t.Errorf("cookie %q: server saw %q (path %q), want %q", cookie, s.raw, s.path, wantRaw)
		}
	}
	q := aggregateQuery{AggregateQuery: schemas.AggregateQuery{Action: schemas.Buy, FromMinute: t0ms / 60000, ToMinute: t0ms/60000 + 2,
		Filter: schemas.DimOrigin | schemas.DimCategory, Origin: "a b", CategoryID: "c/d"}, Aggs: []aggKind{aggSumPrice, aggCount}}
	if _, _, _, err := w.post(appendAggregateURI([]byte(r.baseURL), &q), nil, time.Second); err != nil {
		t.Fatal(err)
	}
	want := "/aggregates?time_range=2022-03-22T12:00:00_2022-03-22T12:02:00&action=BUY&aggregates=SUM_PRICE&aggregates=COUNT&origin=a%20b&category_id=c%2Fd"
	if s := <-got; s.raw != want {
		t.Errorf("aggregates URI %q, want %q", s.raw, want)
	}
}
