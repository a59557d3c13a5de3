package gateway_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allezon/allezon/gateway"
)

// countingPinger counts its pings and fails with err when set.
type countingPinger struct {
	pings atomic.Int64
	err   atomic.Pointer[error]
}

func (p *countingPinger) Ping(context.Context) error {
	p.pings.Add(1)
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (p *countingPinger) fail(err error) { p.err.Store(&err) }

// TestHealthNoFanOut: /health answers from the background checks, so many
// concurrent calls ping no backend (each /health pinged every backend
// before the cache).
func TestHealthNoFanOut(t *testing.T) {
	a, b := &countingPinger{}, &countingPinger{}
	addr := serveGateway(t, gateway.Config{}, gateway.Backends{Health: map[string]gateway.Pinger{"a": a, "b": b}}, nil)
	waitHealthOK(t, addr, "at start")
	before := a.pings.Load() + b.pings.Load()
	start := time.Now()
	const calls = 50
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			if code, body, err := fetch("http://" + addr + "/health"); code != 200 || err != nil {
				t.Errorf("/health: %d %s %v", code, body, err)
			}
		})
	}
	wg.Wait()
	pings := a.pings.Load() + b.pings.Load() - before
	// The loop pings each backend once a second, whatever the traffic.
	if limit := 2 * (int64(time.Since(start)/time.Second) + 1); pings > limit {
		t.Fatalf("%d concurrent /health calls made %d pings in %v, want at most %d (the loop's)", calls, pings, time.Since(start), limit)
	}
	t.Logf("%d concurrent /health calls, %d pings in %v", calls, pings, time.Since(start))
}

// TestHealthFollowsBackends: a backend that starts failing shows within a
// few seconds, and so does its recovery. The API port hides the error's
// text (it may name hosts) unless marked public; the ops listener shows it.
func TestHealthFollowsBackends(t *testing.T) {
	db, disk := &countingPinger{}, &countingPinger{}
	_, api, ops := serveWithOps(t, gateway.Config{HealthInterval: 100 * time.Millisecond},
		gateway.Backends{Health: map[string]gateway.Pinger{"db": db, "disk": disk}})
	db.fail(errors.New("dial tcp 10.0.0.7:5432: connection refused"))
	disk.fail(gateway.PublicHealthError("free space below the floor", errors.New("free space 3MiB below the floor 128MiB on /data")))
	waitFor(t, "degraded", 3*time.Second, func() bool {
		return strings.Contains(get(t, "http://"+ops+"/health"), `"db":"dial tcp 10.0.0.7:5432: connection refused"`)
	})
	detailed := get(t, "http://"+ops+"/health")
	if !strings.Contains(detailed, `"status":"degraded"`) || !strings.Contains(detailed, `"disk":"free space 3MiB below the floor 128MiB on /data"`) {
		t.Fatalf("ops /health: %s", detailed)
	}
	if code, body := getCode(t, "http://"+api+"/health"); code != 404 {
		t.Fatalf("API port /health with an ops listener: %d %s, want 404", code, body)
	}
	db.err.Store(nil)
	disk.err.Store(nil)
	waitFor(t, "ok again", 3*time.Second, func() bool {
		return strings.Contains(get(t, "http://"+ops+"/health"), `"status":"ok"`)
	})
}

// TestHealthPublicText: without an ops listener the API port's /health says
// "unavailable" for an error that may name a host, and shows a public one.
func TestHealthPublicText(t *testing.T) {
	db, disk := &countingPinger{}, &countingPinger{}
	db.fail(errors.New("dial tcp 10.0.0.7:5432: connection refused"))
	disk.fail(gateway.PublicHealthError("free space below the floor", errors.New("free space 3MiB below the floor 128MiB on /data")))
	_, b := newFakes() // an API server: an ops-only one shows every text
	b.Health = map[string]gateway.Pinger{"db": db, "disk": disk}
	addr := serveGateway(t, gateway.Config{}, b, nil)
	code, body := getCode(t, "http://"+addr+"/health")
	want := `{"status":"degraded","backends":{"db":"unavailable","disk":"free space below the floor"}}`
	if code != 503 || body != want {
		t.Fatalf("/health: %d %s, want 503 %s", code, body, want)
	}
}

// TestOpsListener: with SeparateOps the API port serves neither /health nor
// /metrics, the ops listener serves both and nothing of the API.
func TestOpsListener(t *testing.T) {
	_, b := newFakes()
	_, api, ops := serveWithOps(t, gateway.Config{}, b)
	for _, tt := range []struct {
		addr, path string
		code       int
	}{
		{api, "/health", 404}, {api, "/metrics", 404},
		{ops, "/health", 200}, {ops, "/metrics", 200},
		{ops, "/user_profiles/x" + profileRange, 404}, {ops, "/nothing", 404},
	} {
		if code, body := getCode(t, "http://"+tt.addr+tt.path); code != tt.code {
			t.Errorf("GET %s on %s: %d %s, want %d", tt.path, tt.addr, code, body, tt.code)
		}
	}
	if code, msg, _ := post(t, "http://"+api+"/user_tags", tagJSON("ops-test")); code != 204 {
		t.Fatalf("a tag on the API port: %d %s", code, msg)
	}
}

// serveWithOps serves a gateway with SeparateOps on two loopback listeners.
func serveWithOps(t *testing.T, cfg gateway.Config, b gateway.Backends) (*gateway.Server, string, string) {
	t.Helper()
	cfg.SeparateOps = true
	if cfg.Logger == nil {
		cfg.Logger = quietLog()
	}
	srv := gateway.New(cfg, b)
	var addrs []string
	done := make(chan error, 2)
	for _, serve := range []func(net.Listener) error{srv.Serve, srv.ServeOps} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		go func() { done <- serve(ln) }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	return srv, addrs[0], addrs[1]
}

func getCode(t *testing.T, url string) (int, string) {
	t.Helper()
	code, body, err := fetch(url)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// noKeepAlive leaves no spare connection behind, which fasthttp's
// Shutdown would wait 5 s for.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// fetch GETs url; safe from any goroutine.
func fetch(url string) (int, string, error) {
	resp, err := noKeepAlive.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
