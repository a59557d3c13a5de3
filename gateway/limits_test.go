package gateway_test

// In-process tests of the gateway's limits: each one is crossed over a real
// TCP connection on 127.0.0.1 and the status code checked. Raw net.Conn
// writes where a client library would refuse or hide the crossing (huge
// heads, stalls, many connections).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/allezon/allezon/broker"
	"github.com/allezon/allezon/gateway"
	"github.com/allezon/allezon/gateway/profiles"
	"github.com/allezon/allezon/gateway/publish"
	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/schemas"
)

// realBackends are the embedded production backends: a Pebble profile
// store, the embedded broker with the real publisher, a Pebble aggregates
// store.
func realBackends(t *testing.T) (gateway.Backends, profiles.Store) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	prof, err := profiles.Open(ctx, "pebble://"+filepath.Join(dir, "profiles"), profiles.Options{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prof.Close() })
	br, err := broker.Start(broker.Config{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(br.Close)
	pub, err := publish.New(publish.Config{Brokers: br.Addrs(), Topic: "allezon-events", Timeout: 2 * time.Second, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	agg, err := aggregates.Open(ctx, "pebble://"+filepath.Join(dir, "aggregates"), aggregates.Options{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agg.Close() })
	return gateway.Backends{Profiles: prof, Events: pub, Aggregates: agg}, prof
}

// rawExchange writes req on a fresh connection and returns the status
// line of the answer (empty if the server closed without one) and how long
// it took.
func rawExchange(t *testing.T, addr, req string) (string, time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return readStatus(t, c), time.Since(start)
}

// readStatus reads the status line from c within 10s.
func readStatus(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("reading the answer: %v", err)
	}
	return strings.TrimSpace(line)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}

func wantStatus(t *testing.T, line string, code int) {
	t.Helper()
	if !strings.HasPrefix(line, fmt.Sprintf("HTTP/1.1 %d ", code)) {
		t.Fatalf("answer %q, want %d", line, code)
	}
}

// TestHeaderLimit: a request line plus headers longer than MaxHeaderBytes
// is a 431; fasthttp reads the head into one buffer of that size and fails
// before it parsed the request line, so a long URI is a 431 as well.
func TestHeaderLimit(t *testing.T) {
	addr := serveGateway(t, gateway.Config{MaxHeaderBytes: 4096}, gateway.Backends{}, nil)
	tests := []struct {
		name, req string
		code      int
	}{
		{"head that fits", "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 3500) + "\r\n\r\n", 200},
		{"long header", "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 5000) + "\r\n\r\n", 431},
		{"many headers", "GET /health HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Pad: aaaaaaaaaaaaaaaaaaaa\r\n", 200) + "\r\n", 431},
		{"long URI", "POST /user_profiles/" + strings.Repeat("c", 5000) + profileRange + " HTTP/1.1\r\nHost: x\r\n\r\n", 431},
		{"long URI, no headers at all yet", "GET /health?" + strings.Repeat("q", 10000), 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line, _ := rawExchange(t, addr, tt.req)
			wantStatus(t, line, tt.code)
		})
	}
}

// TestReadTimeout: a client that stalls mid-request gets 408 once
// ReadTimeout has passed, and the connection is closed.
func TestReadTimeout(t *testing.T) {
	const readTimeout = 300 * time.Millisecond
	addr := serveGateway(t, gateway.Config{ReadTimeout: readTimeout}, gateway.Backends{}, nil)
	tests := []struct{ name, req string }{
		{"nothing sent", ""},
		{"half a head", "POST /aggregates HTTP/1.1\r\nHost: x\r\n"},
		{"half a body", "POST /aggregates HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line, took := rawExchange(t, addr, tt.req)
			wantStatus(t, line, 408)
			if took < readTimeout || took > readTimeout+2*time.Second {
				t.Fatalf("408 after %v, ReadTimeout is %v", took, readTimeout)
			}
		})
	}
}

// TestIdleTimeout: a keep-alive connection with no next request is closed
// after IdleTimeout, without an answer.
func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	addr := serveGateway(t, gateway.Config{IdleTimeout: idle, ReadTimeout: 10 * time.Second}, gateway.Backends{}, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := r.Read(make([]byte, 1))
	took := time.Since(start)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes, err %v; want the server to close", n, err)
	}
	if took < idle-50*time.Millisecond || took > idle+2*time.Second {
		t.Fatalf("closed after %v, IdleTimeout is %v", took, idle)
	}
}

// smallSendBuffers makes the server's socket send buffers tiny, so a
// client that does not read blocks the server's writes at once.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// TestWriteTimeout: a client that does not read its answers makes the
// server's write block; after WriteTimeout the server gives up and closes
// the connection (there is no status to send any more).
func TestWriteTimeout(t *testing.T) {
	const writeTimeout = 300 * time.Millisecond
	addr := serveGateway(t, gateway.Config{WriteTimeout: writeTimeout}, gateway.Backends{},
		func(ln net.Listener) net.Listener { return smallSendBuffers{ln} })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	// 2,000 pipelined requests: their answers are far more than the two
	// 4 KiB buffers hold.
	const n = 2000
	go io.WriteString(c, strings.Repeat("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", n))
	time.Sleep(writeTimeout + time.Second)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	answers := 0
	for ; answers < n; answers++ {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			break
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if answers == n {
		t.Fatalf("all %d answers arrived: the server never timed out writing", n)
	}
	t.Logf("the server closed the connection after %d of %d answers", answers, n)
}

// TestMaxConns: beyond MaxConns connections fasthttp itself answers a new
// connection "503 Service Unavailable" (plain text, Connection: close, no
// Retry-After) and closes it; once a connection ends, a new one is served.
func TestMaxConns(t *testing.T) {
	addr := serveGateway(t, gateway.Config{MaxConns: 2}, gateway.Backends{}, nil)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A served connection: its answer proves it holds a worker.
		io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d: %v %v", len(held), resp, err)
		}
		held = append(held, c)
	}
	line, _ := rawExchange(t, addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	wantStatus(t, line, 503)

	held[0].Close()
	waitHealthOK(t, addr, "after a connection closed")
}

// waitHealthOK polls GET /health on fresh connections until one gets a 200.
func waitHealthOK(t *testing.T, addr, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		line, _ := rawExchange(t, addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if strings.HasPrefix(line, "HTTP/1.1 200 ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q, want 200", when, line)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMaxConnsPerIP: one address's connection beyond MaxConnsPerIP gets
// fasthttp's "429 Too Many Requests" and is closed; once the first
// connection ends, the address may connect again.
func TestMaxConnsPerIP(t *testing.T) {
	addr := serveGateway(t, gateway.Config{MaxConnsPerIP: 1}, gateway.Backends{}, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	wantStatus(t, readStatus(t, c), 200)
	line, _ := rawExchange(t, addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	wantStatus(t, line, 429)

	c.Close()
	waitHealthOK(t, addr, "after the first connection closed")
}

// TestBodyAndCookieLimits crosses the request limits of the three
// endpoints against the embedded backends: a tag body above MaxTagBytes
// is a 400 (SPEC §1), a query body above MaxQueryBytes a 413, a tag whose
// cookie is longer than MaxCookieBytes a 400 and not stored, and a
// /user_profiles path with such a cookie a 414.
func TestBodyAndCookieLimits(t *testing.T) {
	const maxCookie = 64
	b, store := realBackends(t)
	addr := serveGateway(t, gateway.Config{MaxTagBytes: 1024, MaxQueryBytes: 2048, MaxCookieBytes: maxCookie}, b, nil)
	base := "http://" + addr
	okCookie, longCookie := strings.Repeat("k", maxCookie), strings.Repeat("l", maxCookie+1)

	t.Run("tag body at the limit", func(t *testing.T) {
		body := tagJSON(okCookie)
		body += strings.Repeat(" ", 1024-len(body))
		if code, msg, _ := post(t, base+"/user_tags", body); code != 204 {
			t.Fatalf("%d %s, want 204", code, msg)
		}
	})
	t.Run("tag body above the limit", func(t *testing.T) {
		body := tagJSON("big") + strings.Repeat(" ", 1024)
		code, msg, _ := post(t, base+"/user_tags", body)
		if code != 400 || !strings.Contains(msg, "too large") {
			t.Fatalf("%d %s, want 400 too large", code, msg)
		}
	})
	t.Run("query body above the limit", func(t *testing.T) {
		code, msg, _ := post(t, base+"/user_profiles/k"+profileRange, strings.Repeat("x", 2049))
		if code != 413 {
			t.Fatalf("%d %s, want 413", code, msg)
		}
		code, msg, _ = post(t, base+"/aggregates?time_range=2022-03-22T12:00:00_2022-03-22T12:01:00&action=VIEW&aggregates=COUNT", strings.Repeat("x", 2049))
		if code != 413 {
			t.Fatalf("%d %s, want 413", code, msg)
		}
	})
	t.Run("tag cookie above the limit", func(t *testing.T) {
		code, msg, _ := post(t, base+"/user_tags", tagJSON(longCookie))
		if code != 400 || !strings.Contains(msg, "cookie") {
			t.Fatalf("%d %s, want 400 about the cookie", code, msg)
		}
		r, _ := schemas.ParseTimeRange(profileRange[len("?time_range="):])
		p, err := store.Read(context.Background(), longCookie, r, 200)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Views)+len(p.Buys) != 0 {
			t.Fatalf("the refused tag was stored: %d views", len(p.Views))
		}
	})
	t.Run("profile path cookie at the limit", func(t *testing.T) {
		code, msg, _ := post(t, base+"/user_profiles/"+okCookie+profileRange, "")
		if code != 200 || !strings.Contains(msg, `"views":[{`) {
			t.Fatalf("%d %s, want 200 with the tag stored above", code, msg)
		}
	})
	t.Run("profile path cookie above the limit", func(t *testing.T) {
		code, msg, _ := post(t, base+"/user_profiles/"+longCookie+profileRange, "")
		if code != 414 {
			t.Fatalf("%d %s, want 414", code, msg)
		}
	})
}

// TestQueryBodyKeepAlive: a query carrying a large expected answer (more
// than the 256 KiB fasthttp drains by itself after a handler) is answered,
// and the connection stays usable for the next request: the gateway reads
// or discards the whole body as it arrives.
func TestQueryBodyKeepAlive(t *testing.T) {
	_, b := newFakes()
	addr := serveGateway(t, gateway.Config{}, b, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expected := `{"columns":["1m_bucket","action","count"],"rows":[]}` + strings.Repeat(" ", 600_000)
	target := "/aggregates?time_range=2022-03-22T12:00:00_2022-03-22T12:01:00&action=VIEW&aggregates=COUNT"
	go fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%sGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
		target, len(expected), expected)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for _, want := range []int{200, 200} {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("reading the answers: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || resp.Close {
			t.Fatalf("answer %d (close %v), want %d on a kept-alive connection", resp.StatusCode, resp.Close, want)
		}
	}
}
