package breaker

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable clock for the state machine tests.
type clock struct{ t atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Unix(1e9, 0).UnixNano())
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func parseDur(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestStateMachine runs scripts against a breaker on a fake clock. Steps:
//
//	allow X      Allow admits; its ticket is kept as X
//	reject D     Allow rejects with RetryAfter D
//	ok X/fail X  Done(X) as a success / failure
//	cancel X     Cancel(X)
//	wait D       the clock moves on by D
//	state S      State() is S
//
// The cool-down is 2s throughout; the cool-down timer of the real clock
// never fires within a test.
func TestStateMachine(t *testing.T) {
	tests := []struct {
		name        string
		failures    int
		probes      int
		steps       string
		transitions string
	}{
		{
			name: "opens after N consecutive failures", failures: 3,
			steps:       "allow a; fail a; allow b; fail b; state closed; allow c; fail c; state open; reject 2s",
			transitions: "closed>open",
		},
		{
			name: "a success resets the count", failures: 3,
			steps:       "allow a; fail a; allow b; fail b; allow c; ok c; allow d; fail d; allow e; fail e; state closed; allow f; fail f; state open",
			transitions: "closed>open",
		},
		{
			name: "concurrent calls' failures add up", failures: 3,
			steps:       "allow a; allow b; allow c; allow d; fail a; ok d; fail b; fail c; state closed; allow e; fail e; state open",
			transitions: "closed>open",
		},
		{
			name: "open rejects for the rest of the cool-down", failures: 1,
			steps:       "allow a; fail a; reject 2s; wait 1500ms; reject 500ms; state open; wait 499ms; reject 1ms",
			transitions: "closed>open",
		},
		{
			name: "half-open after the cool-down, a probe's success closes", failures: 1,
			steps:       "allow a; fail a; wait 2s; state half-open; allow p; reject 0s; ok p; state closed; allow b; ok b",
			transitions: "closed>open open>half-open half-open>closed",
		},
		{
			name: "a probe's failure re-opens for a new cool-down", failures: 1,
			steps:       "allow a; fail a; wait 2s; allow p; wait 1s; fail p; state open; reject 2s; wait 2s; allow q; ok q; state closed",
			transitions: "closed>open open>half-open half-open>open open>half-open half-open>closed",
		},
		{
			name: "half-open admits Probes probes, the first verdict decides", failures: 1, probes: 2,
			steps:       "allow a; fail a; wait 2s; allow p; allow q; reject 0s; fail q; state open; ok p; state open",
			transitions: "closed>open open>half-open half-open>open",
		},
		{
			name: "cancel frees a probe slot without a verdict", failures: 1,
			steps:       "allow a; fail a; wait 2s; allow p; reject 0s; cancel p; state half-open; allow q; ok q; state closed",
			transitions: "closed>open open>half-open half-open>closed",
		},
		{
			name: "a call admitted before the breaker opened has no say while half-open", failures: 2,
			steps:       "allow slow; allow a; fail a; allow b; fail b; state open; wait 2s; allow p; fail slow; state half-open; ok p; state closed",
			transitions: "closed>open open>half-open half-open>closed",
		},
		{
			name: "nor a late success: only the probe closes", failures: 2,
			steps:       "allow slow; allow a; fail a; allow b; fail b; wait 2s; allow p; ok slow; state half-open; fail p; state open",
			transitions: "closed>open open>half-open half-open>open",
		},
		{
			name: "a stale failure does not count in a new closed period", failures: 2,
			steps:       "allow slow; allow a; fail a; allow b; fail b; wait 2s; allow p; ok p; fail slow; allow c; fail c; state closed; allow d; fail d; state open",
			transitions: "closed>open open>half-open half-open>closed closed>open",
		},
		{
			name: "cancel in the closed state counts nothing", failures: 2,
			steps:       "allow a; fail a; allow b; cancel b; allow c; fail c; state open",
			transitions: "closed>open",
		},
		{
			name: "0 failures disables it", failures: 0,
			steps:       "allow a; fail a; allow b; fail b; allow c; fail c; state closed; allow d; ok d",
			transitions: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			var log []string
			b := New(Config{
				Name: "test", Failures: tt.failures, Probes: tt.probes, Cooldown: 2 * time.Second, Now: clk.now,
				OnTransition: func(from, to State) { log = append(log, from.String()+">"+to.String()) },
			})
			tickets := map[string]Ticket{}
			for _, step := range strings.Split(tt.steps, ";") {
				op, arg, _ := strings.Cut(strings.TrimSpace(step), " ")
				switch op {
				case "allow":
					tk, err := b.Allow()
					if err != nil {
						t.Fatalf("%s: rejected: %v", step, err)
					}
					tickets[arg] = tk
				case "reject":
					_, err := b.Allow()
					var oe *OpenError
					if !errors.As(err, &oe) || !errors.Is(err, ErrOpen) {
						t.Fatalf("%s: err = %v, want an *OpenError", step, err)
					}
					if want := parseDur(t, arg); oe.RetryAfter != want {
						t.Fatalf("%s: RetryAfter = %v, want %v", step, oe.RetryAfter, want)
					}
					if oe.Error() != "test: circuit breaker open" {
						t.Fatalf("%s: Error() = %q", step, oe.Error())
					}
				case "ok", "fail", "cancel":
					tk, ok := tickets[arg]
					if !ok {
						t.Fatalf("%s: no ticket %q", step, arg)
					}
					if op == "cancel" {
						b.Cancel(tk)
					} else {
						b.Done(tk, op == "fail")
					}
				case "wait":
					clk.advance(parseDur(t, arg))
				case "state":
					if got := b.State().String(); got != arg {
						t.Fatalf("%s: state is %s", step, got)
					}
				default:
					t.Fatalf("bad step %q", step)
				}
			}
			if got := strings.Join(log, " "); got != tt.transitions {
				t.Fatalf("transitions %q, want %q", got, tt.transitions)
			}
		})
	}
}

// TestCooldownEndsWithoutCalls: an idle breaker goes half-open by itself
// when the cool-down is over, so what reports its state is not stuck at
// open.
func TestCooldownEndsWithoutCalls(t *testing.T) {
	changed := make(chan string, 4)
	b := New(Config{Failures: 1, Cooldown: 20 * time.Millisecond, OnTransition: func(from, to State) {
		changed <- from.String() + ">" + to.String()
	}})
	tk, _ := b.Allow()
	start := time.Now()
	b.Done(tk, true)
	for _, want := range []string{"closed>open", "open>half-open"} {
		select {
		case got := <-changed:
			if got != want {
				t.Fatalf("transition %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s transition", want)
		}
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("half-open after %v, before the cool-down", d)
	}
}

// TestCooldownTimerEarly: when the cool-down timer fires before the
// breaker's clock says the cool-down is over, the breaker waits for the
// rest instead of staying open until a call comes.
func TestCooldownTimerEarly(t *testing.T) {
	clk := newClock()
	halfOpen := make(chan struct{})
	b := New(Config{Failures: 1, Cooldown: 30 * time.Millisecond, Now: clk.now, OnTransition: func(from, to State) {
		if to == HalfOpen {
			close(halfOpen)
		}
	}})
	tk, _ := b.Allow()
	b.Done(tk, true)
	time.Sleep(45 * time.Millisecond) // the timer fired; the clock did not move
	if got := b.State(); got != Open {
		t.Fatalf("state %v while the clock says the cool-down is not over", got)
	}
	clk.advance(30 * time.Millisecond)
	select {
	case <-halfOpen:
	case <-time.After(5 * time.Second):
		t.Fatal("still open with no call after the cool-down")
	}
}

// TestConcurrent hammers one breaker from many goroutines (run with
// -race): every call admitted gets its Done, the breaker ends in a state
// its history allows, and a last success run closes it.
func TestConcurrent(t *testing.T) {
	clk := newClock()
	var opened atomic.Int64
	b := New(Config{Failures: 5, Probes: 3, Cooldown: time.Second, Now: clk.now, OnTransition: func(from, to State) {
		if to == Open {
			opened.Add(1)
		}
	}})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				tk, err := b.Allow()
				if err != nil {
					if i%50 == 0 {
						clk.advance(100 * time.Millisecond)
					}
					continue
				}
				b.Done(tk, (i/20+g)%2 == 0) // runs of 20 failures, then 20 successes
			}
		}()
	}
	wg.Wait()
	if opened.Load() == 0 {
		t.Fatal("never opened")
	}
	clk.advance(2 * time.Second)
	for i := 0; b.State() != Closed; i++ {
		if i > 10 {
			t.Fatalf("state %v after 10 successful calls", b.State())
		}
		if tk, err := b.Allow(); err == nil {
			b.Done(tk, false)
		}
	}
}

// BenchmarkClosedAllowDone is the cost the breaker adds to every backend
// call while the backend is healthy.
func BenchmarkClosedAllowDone(b *testing.B) {
	br := New(Config{Failures: 5})
	b.ReportAllocs()
	for b.Loop() {
		tk, err := br.Allow()
		if err != nil {
			b.Fatal(err)
		}
		br.Done(tk, false)
	}
}

// BenchmarkClosedAllowDoneParallel is the same from every core at once:
// the closed-state success path only reads the shared word, so cores do
// not fight over its cache line.
func BenchmarkClosedAllowDoneParallel(b *testing.B) {
	br := New(Config{Failures: 5})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk, err := br.Allow()
			if err != nil {
				b.Error(err)
				return
			}
			br.Done(tk, false)
		}
	})
}
