package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestOpsListener: with --ops-http, the API port of allezon all serves the
// API and answers /health and /metrics 404; the ops port serves both. A
// pipeline with --ops-http serves them there and opens no --http port.
func TestOpsListener(t *testing.T) {
	api, ops := freeAddr(t), freeAddr(t)
	start(t, "all", "all", "--http", api, "--ops-http", ops, "--data", t.TempDir(), "--admin", "")
	waitHealthy(t, ops)
	for _, tt := range []struct {
		addr, path string
		code       int
		has        string
	}{
		{api, "/health", 404, ""},
		{api, "/metrics", 404, ""},
		{ops, "/health", 200, `"status":"ok"`},
		{ops, "/metrics", 200, "allezon_backend_up"},
		{ops, "/user_profiles/x?time_range=2022-03-22T12:00:00.000_2022-03-22T13:00:00.000", 404, ""},
	} {
		code, body := httpGet(t, "http://"+tt.addr+tt.path)
		if code != tt.code || !strings.Contains(body, tt.has) {
			t.Errorf("GET %s on %s: %d %.200s, want %d with %q", tt.path, tt.addr, code, body, tt.code, tt.has)
		}
	}
	resp, err := http.Post("http://"+api+"/user_profiles/x?time_range=2022-03-22T12:00:00.000_2022-03-22T13:00:00.000", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a query on the API port: %d", resp.StatusCode)
	}

	plHTTP, plOps := freeAddr(t), freeAddr(t)
	start(t, "pipeline", "pipeline", "--http", plHTTP, "--ops-http", plOps, "--data", t.TempDir(), "--admin", "")
	waitHealthy(t, plOps)
	if c, err := net.DialTimeout("tcp", plHTTP, time.Second); err == nil {
		c.Close()
		t.Fatalf("the pipeline listens on --http %s although --ops-http is set", plHTTP)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
