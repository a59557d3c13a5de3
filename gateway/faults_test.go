package gateway_test

// The gateway's handling of failing backends: deadlines and circuit
// breakers. The backends here are small fakes whose only job is to be slow
// or to fail on demand (and to count calls); what the stores themselves do
// is tested against the real ones in their packages.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allezon/allezon/gateway"
	"github.com/allezon/allezon/gateway/profiles"
	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/schemas"
)

// Behaviours of a fake backend.
const (
	healthy  int32 = iota
	hanging        // answers nothing until the caller's deadline
	failing        // answers an error at once
	refusing       // refuses the request's data: an error wrapping refuse
)

// fakeBackend is one backend's behaviour and the calls it got.
type fakeBackend struct {
	mode   atomic.Int32
	calls  atomic.Int64
	refuse error // the store's ErrData, for mode refusing
}

func (f *fakeBackend) call(ctx context.Context) error {
	f.calls.Add(1)
	switch f.mode.Load() {
	case hanging:
		<-ctx.Done()
		return ctx.Err()
	case failing:
		return fmt.Errorf("backend down")
	case refusing:
		return fmt.Errorf("invalid byte sequence: %w", f.refuse)
	}
	return nil
}

func (f *fakeBackend) Ping(ctx context.Context) error {
	if m := f.mode.Load(); m != healthy && m != refusing {
		return fmt.Errorf("backend down")
	}
	return nil
}

type fakeProfiles struct{ *fakeBackend }

func (f fakeProfiles) Append(ctx context.Context, _ *schemas.UserTag, _ []byte) error {
	return f.call(ctx)
}

func (f fakeProfiles) Read(ctx context.Context, _ string, _ schemas.TimeRange, _ int) (profiles.Profile, error) {
	return profiles.Profile{}, f.call(ctx)
}

type fakeEvents struct{ *fakeBackend }

func (f fakeEvents) Publish(ctx context.Context, _, _ []byte) error { return f.call(ctx) }

type fakeAggregates struct{ *fakeBackend }

func (f fakeAggregates) Query(ctx context.Context, q *schemas.AggregateQuery) ([]schemas.Totals, error) {
	return make([]schemas.Totals, q.Minutes()), f.call(ctx)
}

type fakes struct{ profiles, events, aggregates *fakeBackend }

func newFakes() (fakes, gateway.Backends) {
	f := fakes{&fakeBackend{refuse: profiles.ErrData}, &fakeBackend{}, &fakeBackend{refuse: aggregates.ErrData}}
	return f, gateway.Backends{
		Profiles:   fakeProfiles{f.profiles},
		Events:     fakeEvents{f.events},
		Aggregates: fakeAggregates{f.aggregates},
		Health:     map[string]gateway.Pinger{"profiles": f.profiles, "events": f.events, "aggregates": f.aggregates},
	}
}

// endpoint is one API request, and the backend it needs.
type endpoint struct {
	name, path, body string
	backend          func(fakes) *fakeBackend
}

var endpoints = []endpoint{
	{"tag, profile store", "/user_tags", tagJSON("c"), func(f fakes) *fakeBackend { return f.profiles }},
	{"tag, event log", "/user_tags", tagJSON("c"), func(f fakes) *fakeBackend { return f.events }},
	{"profile", "/user_profiles/c" + profileRange, "", func(f fakes) *fakeBackend { return f.profiles }},
	{"aggregates", "/aggregates?time_range=2022-03-22T12:00:00_2022-03-22T12:05:00&action=BUY&aggregates=COUNT",
		"", func(f fakes) *fakeBackend { return f.aggregates }},
}

// TestSlowBackendGives503InTime: a backend that hangs costs a request
// BackendTimeout and a 503 with Retry-After: 1, never a hang and never a
// 204 for a tag that was not stored; with breakers off, every request
// waits for its own deadline.
func TestSlowBackendGives503InTime(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, ep := range endpoints {
		t.Run(ep.name, func(t *testing.T) {
			f, b := newFakes()
			addr := serveGateway(t, gateway.Config{BackendTimeout: timeout}, b, nil)
			ep.backend(f).mode.Store(hanging)
			for range 3 {
				start := time.Now()
				code, msg, h := post(t, "http://"+addr+ep.path, ep.body)
				took := time.Since(start)
				if code != 503 || h.Get("Retry-After") != "1" {
					t.Fatalf("%d (Retry-After %q) %s, want 503 with Retry-After 1", code, h.Get("Retry-After"), msg)
				}
				if took < timeout || took > timeout+time.Second {
					t.Fatalf("503 after %v, BackendTimeout is %v", took, timeout)
				}
			}
			if n := ep.backend(f).calls.Load(); n != 3 {
				t.Fatalf("backend called %d times, want 3 (no breaker)", n)
			}
		})
	}
}

// TestBreakerCycle walks every endpoint's breaker through its states: N
// requests that wait out the deadline open it; then 503s come back at once
// without calling the backend, with Retry-After the rest of the cool-down;
// /health and the metrics show it open; after the cool-down it is
// half-open, a probe that fails opens it again, and once the backend
// recovers a probe closes it.
//
// The endpoints of different backends run in parallel (the metrics are
// per backend); the two on the profile store one after the other.
func TestBreakerCycle(t *testing.T) {
	for _, wave := range [][]endpoint{
		{endpoints[0], endpoints[1], endpoints[3]}, // profiles, events, aggregates
		{endpoints[2]}, // profiles again, by a read
	} {
		t.Run("wave", func(t *testing.T) {
			for _, ep := range wave {
				t.Run(ep.name, func(t *testing.T) {
					t.Parallel()
					testBreakerCycle(t, ep)
				})
			}
		})
	}
}

func testBreakerCycle(t *testing.T, ep endpoint) {
	const (
		timeout  = 100 * time.Millisecond
		failures = 3
		// Long enough for the checks of the open state on a loaded
		// machine.
		cooldown = 2 * time.Second
	)
	f, b := newFakes()
	addr := serveGateway(t, gateway.Config{BackendTimeout: timeout, BreakerFailures: failures, BreakerCooldown: cooldown}, b, nil)
	base := "http://" + addr
	be := ep.backend(f)
	name := backendName(f, be)
	m0 := scrape(t, base)

	be.mode.Store(hanging)
	for range failures {
		start := time.Now()
		if code, msg, _ := post(t, base+ep.path, ep.body); code != 503 {
			t.Fatalf("%d %s, want 503", code, msg)
		}
		if took := time.Since(start); took < timeout {
			t.Fatalf("503 after %v, before the deadline: the breaker opened early", took)
		}
	}
	m := scrape(t, base)
	wantMetric(t, m, `allezon_breaker_state{backend="`+name+`"}`, 2)
	wantDelta(t, m0, m, `allezon_breaker_transitions_total{backend="`+name+`",to="open"}`, 1)

	// Open: fast 503s that do not reach the backend.
	calls := be.calls.Load()
	const rejected = 20
	took := make([]time.Duration, rejected)
	for i := range rejected {
		start := time.Now()
		code, msg, h := post(t, base+ep.path, ep.body)
		took[i] = time.Since(start)
		// The rest of a 2 s cool-down, rounded up.
		if ra := h.Get("Retry-After"); code != 503 || (ra != "1" && ra != "2") {
			t.Fatalf("request %d while open: %d (Retry-After %q) %s, want 503 with Retry-After 1 or 2", i, code, ra, msg)
		}
	}
	if n := be.calls.Load() - calls; n != 0 {
		t.Fatalf("the backend got %d calls while its breaker was open", n)
	}
	slices.Sort(took)
	median := took[rejected/2]
	t.Logf("%d refusals over HTTP on loopback: median %v, slowest %v (the deadline is %v)", rejected, median, took[rejected-1], timeout)
	if median >= timeout/10 {
		t.Fatalf("refusals took %v (median): not fast", median)
	}
	m = scrape(t, base)
	wantDelta(t, m0, m, `allezon_breaker_rejected_total{backend="`+name+`"}`, rejected)
	// The API port names the open breaker, not the ping's error text.
	health := get(t, base+"/health")
	if !strings.Contains(health, `"`+name+`":"circuit breaker open"`) || !strings.Contains(health, `"status":"degraded"`) {
		t.Fatalf("/health while open: %s", health)
	}

	// Half-open after the cool-down, with no request needed;
	// a failing probe opens it again.
	waitState(t, base, name, 1, cooldown+2*time.Second)
	if code, _, _ := post(t, base+ep.path, ep.body); code != 503 {
		t.Fatalf("failing probe: %d, want 503", code)
	}
	wantMetric(t, scrape(t, base), `allezon_breaker_state{backend="`+name+`"}`, 2)

	// The backend recovers: the next probe closes the breaker.
	be.mode.Store(healthy)
	waitState(t, base, name, 1, cooldown+2*time.Second)
	want := 200
	if ep.path == "/user_tags" {
		want = 204
	}
	if code, msg, _ := post(t, base+ep.path, ep.body); code != want {
		t.Fatalf("probe to the recovered backend: %d %s, want %d", code, msg, want)
	}
	m = scrape(t, base)
	wantMetric(t, m, `allezon_breaker_state{backend="`+name+`"}`, 0)
	wantDelta(t, m0, m, `allezon_breaker_transitions_total{backend="`+name+`",to="open"}`, 2)
	wantDelta(t, m0, m, `allezon_breaker_transitions_total{backend="`+name+`",to="half-open"}`, 2)
	wantDelta(t, m0, m, `allezon_breaker_transitions_total{backend="`+name+`",to="closed"}`, 1)
	// /health reads checks made every second.
	waitFor(t, "/health ok after recovery", 3*time.Second, func() bool {
		return strings.Contains(get(t, base+"/health"), `"status":"ok"`)
	})
	for range 5 {
		if code, msg, _ := post(t, base+ep.path, ep.body); code != want {
			t.Fatalf("after recovery: %d %s, want %d", code, msg, want)
		}
	}
}

// TestDataErrorsAreNotFailures: a store that refuses the request's data
// (an error wrapping aggregates.ErrData or profiles.ErrData) gives a 400,
// counted in allezon_backend_data_errors_total, and never moves its
// breaker: only outages and timeouts do.
func TestDataErrorsAreNotFailures(t *testing.T) {
	const failures = 2
	for _, ep := range []endpoint{endpoints[0], endpoints[2], endpoints[3]} {
		t.Run(ep.name, func(t *testing.T) {
			f, b := newFakes()
			addr := serveGateway(t, gateway.Config{BackendTimeout: time.Second, BreakerFailures: failures, BreakerCooldown: time.Minute}, b, nil)
			base := "http://" + addr
			be := ep.backend(f)
			name := backendName(f, be)
			op := map[string]string{"/user_tags": "append", "/user_profiles/c" + profileRange: "read"}[ep.path]
			if op == "" {
				op = "query"
			}
			series := `allezon_backend_data_errors_total{backend="` + name + `",op="` + op + `"}`
			m0 := scrape(t, base)
			be.mode.Store(refusing)
			const n = 5 * failures
			for i := range n {
				if code, msg, _ := post(t, base+ep.path, ep.body); code != 400 || !strings.Contains(msg, "invalid data") {
					t.Fatalf("request %d: %d %s, want 400 about invalid data", i, code, msg)
				}
			}
			if c := be.calls.Load(); c != n {
				t.Fatalf("the store got %d of %d calls: the breaker refused some", c, n)
			}
			if f.events.calls.Load() != 0 {
				t.Fatal("a tag the profile store refused was published")
			}
			// The state gauge is per process, shared with the other
			// subtests' gateways: the transitions tell.
			m := scrape(t, base)
			wantDelta(t, m0, m, `allezon_breaker_transitions_total{backend="`+name+`",to="open"}`, 0)
			wantDelta(t, m0, m, series, n)
			if health := get(t, base+"/health"); !strings.Contains(health, `"status":"ok"`) {
				t.Fatalf("/health after refusals: %s", health)
			}
			// The same breaker still opens on an outage.
			be.mode.Store(failing)
			for range failures {
				post(t, base+ep.path, ep.body)
			}
			wantDelta(t, m0, scrape(t, base), `allezon_breaker_transitions_total{backend="`+name+`",to="open"}`, 1)
		})
	}
}

// TestOpenEventBreakerSkipsProfileWrite: while the event log's breaker is
// open a tag is refused before the profile store is written, since the
// client's retry would write it again.
func TestOpenEventBreakerSkipsProfileWrite(t *testing.T) {
	f, b := newFakes()
	addr := serveGateway(t, gateway.Config{BackendTimeout: time.Second, BreakerFailures: 2, BreakerCooldown: time.Minute}, b, nil)
	f.events.mode.Store(failing)
	for range 2 {
		post(t, "http://"+addr+"/user_tags", tagJSON("c"))
	}
	appends := f.profiles.calls.Load()
	code, msg, h := post(t, "http://"+addr+"/user_tags", tagJSON("c"))
	if code != 503 || h.Get("Retry-After") != "60" {
		t.Fatalf("%d (Retry-After %q) %s, want 503 with Retry-After 60", code, h.Get("Retry-After"), msg)
	}
	if n := f.profiles.calls.Load() - appends; n != 0 {
		t.Fatalf("%d profile appends while the event log's breaker was open", n)
	}
	// The profile store's breaker is untouched: profile reads go on.
	if code, msg, _ := post(t, "http://"+addr+"/user_profiles/c"+profileRange, ""); code != 200 {
		t.Fatalf("profile read: %d %s", code, msg)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serveGateway serves a gateway over b on 127.0.0.1:0 (through wrap, when
// set) until the test ends, and returns its address.
func serveGateway(t *testing.T, cfg gateway.Config, b gateway.Backends, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLog()
	}
	srv := gateway.New(cfg, b)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		// fasthttp counts a connection that never sent a request as idle
		// (and closes it at shutdown) only 5 s after accepting it, and
		// net/http's client may leave such a spare connection behind.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return addr
}

func tagJSON(cookie string) string {
	return `{"time":"2022-03-22T12:15:00.123Z","cookie":"` + cookie + `","country":"PL","device":"PC","action":"VIEW","origin":"o",` +
		`"product_info":{"product_id":"p","brand_id":"b","category_id":"c","price":1}}`
}

const profileRange = "?time_range=2022-03-22T12:00:00.000_2022-03-22T13:00:00.000"

// post sends a POST and returns the status and body.
func post(t *testing.T, url, body string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func backendName(f fakes, be *fakeBackend) string {
	switch be {
	case f.profiles:
		return "profiles"
	case f.events:
		return "events"
	}
	return "aggregates"
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		sb.WriteString(sc.Text())
		sb.WriteByte('\n')
	}
	return sb.String()
}

// scrape reads /metrics into series → value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, line := range strings.Split(get(t, base+"/metrics"), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

func wantMetric(t *testing.T, m map[string]float64, series string, want float64) {
	t.Helper()
	got, ok := m[series]
	if !ok || got != want {
		t.Fatalf("%s = %v (present %v), want %v", series, got, ok, want)
	}
}

func wantDelta(t *testing.T, before, after map[string]float64, series string, want float64) {
	t.Helper()
	if _, ok := after[series]; !ok {
		t.Fatalf("no series %s", series)
	}
	if d := after[series] - before[series]; d != want {
		t.Fatalf("%s grew by %v, want %v", series, d, want)
	}
}

// waitState waits until the breaker's gauge shows state.
func waitState(t *testing.T, base, name string, state float64, within time.Duration) {
	t.Helper()
	series := `allezon_breaker_state{backend="` + name + `"}`
	deadline := time.Now().Add(within)
	for {
		if m := scrape(t, base); m[series] == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became %v within %v", series, state, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
