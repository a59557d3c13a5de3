package gateway_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/allezon/allezon/gateway"
)

// fakeGate holds writes while err is set.
type fakeGate struct{ err atomic.Pointer[error] }

func (g *fakeGate) Err() error {
	if e := g.err.Load(); e != nil {
		return *e
	}
	return nil
}

// TestWriteGate: while the gate holds writes (free disk below its floor), a
// tag gets 503 with Retry-After and touches neither store, a malformed tag
// is still a 400, reads go on; once it opens, tags are stored again.
func TestWriteGate(t *testing.T) {
	f, b := newFakes()
	gate := &fakeGate{}
	b.Writes = gate
	base := "http://" + serveGateway(t, gateway.Config{BreakerFailures: 1}, b, nil)
	m0 := scrape(t, base)

	held := errors.New("free space 3MiB below the floor 16MiB on /data")
	gate.err.Store(&held)
	steps := []struct {
		name, path, body string
		want             int
		retryAfter       string
		msg              string
	}{
		{"tag held", "/user_tags", tagJSON("c"), 503, "5", "below the floor 16MiB on /data"},
		{"tag held again", "/user_tags", tagJSON("d"), 503, "5", "below the floor"},
		{"malformed tag", "/user_tags", "{", 400, "", ""},
		{"profile read", "/user_profiles/c" + profileRange, "", 200, "", ""},
		{"aggregates read", "/aggregates?time_range=2022-03-22T12:00:00_2022-03-22T12:05:00&action=BUY&aggregates=COUNT", "", 200, "", ""},
	}
	for _, s := range steps {
		code, msg, h := post(t, base+s.path, s.body)
		if code != s.want || h.Get("Retry-After") != s.retryAfter || !strings.Contains(msg, s.msg) {
			t.Errorf("%s: %d (Retry-After %q) %s; want %d (Retry-After %q) containing %q",
				s.name, code, h.Get("Retry-After"), msg, s.want, s.retryAfter, s.msg)
		}
	}
	// Only the profile read reached a store.
	if p, e := f.profiles.calls.Load(), f.events.calls.Load(); p != 1 || e != 0 {
		t.Errorf("while held: %d profile calls, %d publishes; want 1 (the read) and 0", p, e)
	}
	m := scrape(t, base)
	wantDelta(t, m0, m, "allezon_tags_refused_disk_floor_total", 2)

	// Refusals are not backend failures: with BreakerFailures 1, one
	// counted as a failure would have opened a breaker, and this tag
	// would get a 503.
	gate.err.Store(nil)
	if code, msg, _ := post(t, base+"/user_tags", tagJSON("c")); code != 204 {
		t.Fatalf("gate open: %d %s, want 204 (no breaker opened by the refusals)", code, msg)
	}
	if e := f.events.calls.Load(); e != 1 {
		t.Fatalf("gate open: %d publishes, want 1", e)
	}
}
