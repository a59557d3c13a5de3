package main

import (
	"net"
	"net/http"
	"os"
	"testing"
)

// TestAdminDefaultIsLoopback: pprof's listener is bound to loopback by
// default.
func TestAdminDefaultIsLoopback(t *testing.T) {
	// The variable must be unset, not empty, for the built-in default.
	if old, ok := os.LookupEnv("ALLEZON_ADMIN_ADDR"); ok {
		os.Unsetenv("ALLEZON_ADMIN_ADDR")
		t.Cleanup(func() { os.Setenv("ALLEZON_ADMIN_ADDR", old) })
	}
	var c config
	fs := newFlagSet("all")
	c.commonFlags(fs, ":8088") // every component registers --admin here
	def := fs.Lookup("admin").DefValue
	host, _, err := net.SplitHostPort(def)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("--admin defaults to %q, not a loopback address", def)
	}
}

// TestPprofOnlyOnAdminListener: the API port has no /debug/pprof, the
// admin listener has it.
func TestPprofOnlyOnAdminListener(t *testing.T) {
	addr, admin := freeAddr(t), freeAddr(t)
	start(t, "all", "all", "--http", addr, "--admin", admin, "--data", t.TempDir())
	waitHealthy(t, addr)
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("http://" + addr + "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("API port: /debug/pprof/ answered %d, want 404", code)
	}
	if code := get("http://" + admin + "/debug/pprof/"); code != http.StatusOK {
		t.Errorf("admin listener: /debug/pprof/ answered %d, want 200", code)
	}
}
