package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allezon/allezon/broker"
	"github.com/allezon/allezon/broker/brokertest"
	"github.com/allezon/allezon/gateway/profiles"
	"github.com/allezon/allezon/gateway/publish"
	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// testTopic is the events topic of the test broker.
const testTopic = "gateway-test-events"

// testEnv is the real gateway over real stores, served in process: Pebble
// profile and aggregate stores in temporary directories, a publisher to the
// embedded broker, the fasthttp server on an in-memory listener. The
// backends are wrapped only to count the calls that write, so a test can
// tell that a rejected request wrote nothing.
type testEnv struct {
	srv    *Server
	ln     *fasthttputil.InmemoryListener
	broker *broker.Broker
	prof   profiles.Store
	agg    aggregates.Store

	appends   atomic.Int64 // profile store Append calls
	publishes atomic.Int64 // event log Publish calls
}

type countingProfiles struct {
	profiles.Store
	n *atomic.Int64
}

func (c countingProfiles) Append(ctx context.Context, t *schemas.UserTag, tagJSON []byte) error {
	c.n.Add(1)
	return c.Store.Append(ctx, t, tagJSON)
}

type countingPublisher struct {
	*publish.Publisher
	n *atomic.Int64
}

func (c countingPublisher) Publish(ctx context.Context, key, value []byte) error {
	c.n.Add(1)
	return c.Publisher.Publish(ctx, key, value)
}

// newTestEnv starts the environment; everything stops when tb ends.
func newTestEnv(tb testing.TB) *testEnv {
	tb.Helper()
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	e := &testEnv{broker: brokertest.Start(tb, broker.Config{Topic: testTopic})}

	prof, err := profiles.Open(ctx, "pebble://"+tb.TempDir(), profiles.Options{Logger: log})
	if err != nil {
		tb.Fatalf("open profile store: %v", err)
	}
	tb.Cleanup(func() { prof.Close() })
	e.prof = prof

	agg, err := aggregates.Open(ctx, "pebble://"+tb.TempDir(), aggregates.Options{Logger: log})
	if err != nil {
		tb.Fatalf("open aggregates store: %v", err)
	}
	tb.Cleanup(func() { agg.Close() })
	e.agg = agg

	pub, err := publish.New(publish.Config{Brokers: e.broker.Addrs(), Topic: testTopic, Timeout: 30 * time.Second, Logger: log})
	if err != nil {
		tb.Fatalf("new publisher: %v", err)
	}
	tb.Cleanup(func() { pub.Close() })

	// A generous backend timeout: the machine is shared, and a 503 from
	// a slow fsync would read as a failed property.
	e.srv = New(Config{BackendTimeout: 30 * time.Second, MaxFuture: schemas.DefaultMaxFuture, Logger: log}, Backends{
		Profiles:   countingProfiles{prof, &e.appends},
		Events:     countingPublisher{pub, &e.publishes},
		Aggregates: agg,
		Health:     map[string]Pinger{"profiles": prof, "events": pub, "aggregates": agg},
	})
	e.ln = fasthttputil.NewInmemoryListener()
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(e.ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		e.ln.Close()
		<-served
	})
	return e
}

// roundTrip sends raw (a whole HTTP/1.1 request) on a new connection and
// reads the answer. head says the request was a HEAD (no body follows).
func (e *testEnv) roundTrip(raw []byte, head bool) (*fasthttp.Response, error) {
	conn, err := e.ln.Dial()
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, err
	}
	// The server may answer (and close) before it read all of a large
	// body, so write while reading.
	go conn.Write(raw) // its error shows as the answer's
	resp := &fasthttp.Response{}
	resp.SkipBody = head
	if err := resp.Read(bufio.NewReader(conn)); err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	return resp, nil
}

// rawRequest builds an HTTP/1.1 request with a Content-Length body; extra
// holds additional header lines, each ending in \r\n.
func rawRequest(method, target string, body []byte, extra string) []byte {
	b := fmt.Appendf(nil, "%s %s HTTP/1.1\r\nHost: allezon\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n",
		method, target, len(body), extra)
	return append(b, body...)
}

// allTime covers every time a tag can carry.
var allTime = schemas.TimeRange{From: math.MinInt64, To: math.MaxInt64}

// profile reads everything the profile store holds for cookie.
func (e *testEnv) profile(tb testing.TB, cookie string) profiles.Profile {
	tb.Helper()
	p, err := e.prof.Read(context.Background(), cookie, allTime, profiles.Keep)
	if err != nil {
		tb.Fatalf("read profile of %q: %v", cookie, err)
	}
	return p
}

// checkErrorBody checks an error answer is SPEC's short JSON error:
// {"error": "<message>"}, nothing else. limit bounds its length.
func checkErrorBody(t *testing.T, ct, body []byte, limit int) {
	t.Helper()
	var m map[string]json.RawMessage
	var msg string
	if string(ct) != contentTypeJSON || json.Unmarshal(body, &m) != nil || len(m) != 1 ||
		json.Unmarshal(m["error"], &msg) != nil || msg == "" {
		t.Fatalf("error answer is not {\"error\": message}: Content-Type %q, body %q", ct, body)
	}
	if len(body) > limit {
		t.Fatalf("error answer of %d bytes, want at most %d: %q", len(body), limit, body)
	}
}
