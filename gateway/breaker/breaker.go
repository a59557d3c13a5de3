// Package breaker is a circuit breaker for one backend: once the backend
// keeps failing, calls fail at once instead of each waiting for its
// deadline, so a dead or hung dependency costs the caller nothing and gets
// no load while it recovers.
//
// The classic three states:
//
//	closed ──N consecutive failures──► open ──cool-down over──► half-open
//	  ▲                                 ▲                           │
//	  └───────── a probe succeeds ──────┼──── a probe fails ────────┘
//
// Closed admits every call and counts consecutive failures; open rejects
// every call until the cool-down ends; half-open admits a few probe calls,
// and the first probe's verdict decides: a success closes the breaker, a
// failure opens it for another cool-down.
//
// Why consecutive failures rather than a failure ratio over a window: the
// breaker is there for the outage (a backend down, partitioned or hung),
// not for a backend that answers most calls. An outage gives an unbroken
// run of failures within milliseconds at the gateway's rate, so a count of
// consecutive failures opens as fast as any window would, and it needs one
// counter, where a window needs buckets, a clock read on every call and a
// minimum volume to be meaningful at low rates. A backend that fails half
// its calls keeps its breaker closed: those calls still get their 503 after
// the deadline, and half the traffic still succeeds.
//
// Cost: the closed state's Allow is one atomic load and Done of a success
// one more (no store while no failure was counted), no lock, no allocation
// (BenchmarkClosedAllowDone). The mutex only orders state changes, which
// are rare.
package breaker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// State is a breaker's state. Its numeric value is what a gauge exports.
type State uint8

const (
	Closed   State = 0
	HalfOpen State = 1
	Open     State = 2
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// States lists every state, in their numeric order.
var States = [...]State{Closed, HalfOpen, Open}

// ErrOpen is what a rejected call's error wraps.
var ErrOpen = errors.New("circuit breaker open")

// OpenError is Allow's answer while the breaker rejects calls.
type OpenError struct {
	// Name is the breaker's Config.Name.
	Name string
	// RetryAfter is the rest of the cool-down: when a call has a chance
	// again. It is 0 while half-open probes are under way.
	RetryAfter time.Duration
}

func (e *OpenError) Error() string {
	if e.Name == "" {
		return ErrOpen.Error()
	}
	return e.Name + ": " + ErrOpen.Error()
}

func (e *OpenError) Unwrap() error { return ErrOpen }

// Config configures a Breaker.
type Config struct {
	// Name labels the breaker in errors.
	Name string
	// Failures is how many consecutive failures open the breaker; 0 (or
	// less) disables it: it admits every call and never opens.
	Failures int
	// Cooldown is how long the breaker stays open before it lets probes
	// through; default 2s.
	Cooldown time.Duration
	// Probes is how many calls half-open admits at once; default 1. The
	// first of them to finish decides.
	Probes int
	// Now is the clock, default time.Now; tests inject their own.
	Now func() time.Time
	// OnTransition, when set, is called on every change of state, in the
	// order of the changes, with the breaker's lock held: it must be
	// quick and must not call the breaker. The gateway sets its metrics
	// and logs there.
	OnTransition func(from, to State)
}

// Ticket is Allow's receipt for an admitted call, given back to Done. It
// names the period (closed, or one half-open round) the call was admitted
// in, so a call admitted before a change of state cannot sway the new one:
// a slow call admitted while closed that fails after the breaker already
// opened and went half-open is not taken for the probe's failure.
type Ticket uint64

// The breaker's state is one word: the state in the low 2 bits, a count
// above it (consecutive failures while closed, probes admitted while
// half-open) and an epoch in the high bits, bumped by every change of
// state. Count updates are compare-and-swaps that keep the epoch, so a
// count can never leak into another period.
const (
	stateBits  = 2
	countBits  = 30
	stateMask  = 1<<stateBits - 1
	countShift = stateBits
	countMask  = (1<<countBits - 1) << countShift
	countOne   = 1 << countShift
	epochShift = stateBits + countBits
	maxCount   = 1<<countBits - 1
)

func stateOf(w uint64) State   { return State(w & stateMask) }
func countOf(w uint64) int     { return int(w & countMask >> countShift) }
func periodOf(w uint64) Ticket { return Ticket(w &^ countMask) }

// Breaker is a circuit breaker; it is safe for concurrent use. Every call
// Allow admits must be followed by exactly one Done or Cancel, or a
// half-open breaker waits for that probe forever.
type Breaker struct {
	word     atomic.Uint64
	until    atomic.Int64 // end of the cool-down while open, as clock()
	start    time.Time    // clock's origin
	failures uint64       // Config.Failures; 0: disabled
	probes   int
	cooldown time.Duration
	now      func() time.Time
	name     string

	mu           sync.Mutex // orders changes of state and OnTransition calls
	onTransition func(from, to State)
}

// New returns a closed breaker.
func New(cfg Config) *Breaker {
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = 2 * time.Second
	}
	if cfg.Probes <= 0 {
		cfg.Probes = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Breaker{
		start:        cfg.Now(),
		failures:     uint64(min(max(cfg.Failures, 0), maxCount)),
		probes:       min(cfg.Probes, maxCount),
		cooldown:     cfg.Cooldown,
		now:          cfg.Now,
		name:         cfg.Name,
		onTransition: cfg.OnTransition,
	}
}

// Enabled reports whether the breaker can open at all.
func (b *Breaker) Enabled() bool { return b.failures > 0 }

// State is the current state. An open breaker whose cool-down is over
// reports half-open: the next call is a probe.
func (b *Breaker) State() State {
	s := stateOf(b.word.Load())
	if s == Open && b.clock() >= b.until.Load() {
		return HalfOpen
	}
	return s
}

// Allow admits a call, or rejects it with an *OpenError (wrapping
// ErrOpen) that says how long the caller should wait. The backend must not
// be called on a rejection.
func (b *Breaker) Allow() (Ticket, error) {
	if w := b.word.Load(); stateOf(w) == Closed {
		return periodOf(w), nil // inlined: the closed state costs one load
	}
	return b.allow()
}

func (b *Breaker) allow() (Ticket, error) {
	for {
		w := b.word.Load()
		switch stateOf(w) {
		case Closed:
			return periodOf(w), nil
		case Open:
			if wait := b.until.Load() - b.clock(); wait > 0 {
				return 0, &OpenError{Name: b.name, RetryAfter: time.Duration(wait)}
			}
			b.transition(w, HalfOpen)
			// Loop: take a probe slot in the new round, or lose it to
			// faster callers.
		case HalfOpen:
			if countOf(w) >= b.probes {
				return 0, &OpenError{Name: b.name}
			}
			if b.word.CompareAndSwap(w, w+countOne) {
				return periodOf(w), nil
			}
		}
	}
}

// Done reports how an admitted call ended; failed is the caller's verdict
// (the gateway counts backend errors and missed deadlines).
func (b *Breaker) Done(t Ticket, failed bool) {
	// Inlined: a success in the period it was admitted in, closed with no
	// failure counted, changes nothing. A disabled breaker never leaves
	// that word.
	if !failed && Ticket(b.word.Load()) == t {
		return
	}
	b.done(t, failed)
}

func (b *Breaker) done(t Ticket, failed bool) {
	if b.failures == 0 {
		return
	}
	for {
		w := b.word.Load()
		if periodOf(w) != t {
			return // admitted in an earlier period: no say in this one
		}
		switch stateOf(w) {
		case Closed:
			switch {
			case !failed && countOf(w) == 0:
				return
			case !failed:
				if b.word.CompareAndSwap(w, w&^countMask) {
					return
				}
			case uint64(countOf(w))+1 >= b.failures:
				b.transition(w, Open)
				return
			default:
				if b.word.CompareAndSwap(w, w+countOne) {
					return
				}
			}
		case HalfOpen:
			if failed {
				b.transition(w, Open)
			} else {
				b.transition(w, Closed)
			}
			return
		default:
			return
		}
	}
}

// Cancel gives back an admitted call that never reached the backend (the
// caller gave up before it): it frees a half-open probe slot and counts
// neither a success nor a failure.
func (b *Breaker) Cancel(t Ticket) {
	for {
		w := b.word.Load()
		if periodOf(w) != t || stateOf(w) != HalfOpen || countOf(w) == 0 {
			return
		}
		if b.word.CompareAndSwap(w, w-countOne) {
			return
		}
	}
}

// transition moves the breaker from the period of word seen to state to,
// unless another caller changed the period meanwhile.
func (b *Breaker) transition(seen uint64, to State) {
	if b.failures == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		w := b.word.Load()
		if periodOf(w) != periodOf(seen) {
			return
		}
		if to == Open {
			// Published before the word, so whoever sees the new open
			// period also sees its cool-down.
			b.until.Store(b.clock() + int64(b.cooldown))
		}
		next := (w>>epochShift+1)<<epochShift | uint64(to)
		if b.word.CompareAndSwap(w, next) {
			if to == Open {
				// Half-open when the cool-down ends even if no call
				// comes, so the state (and the gauge and /health that
				// show it) is not stuck at open on an idle gateway.
				time.AfterFunc(b.cooldown, func() { b.expire(next) })
			}
			if b.onTransition != nil {
				b.onTransition(stateOf(w), to)
			}
			return
		}
		// Only a count changed: try again in the same period.
	}
}

// expire moves an open period whose cool-down is over to half-open. A
// clock that says it is not quite over (an injected one, in tests) gets
// another timer for the rest.
func (b *Breaker) expire(open uint64) {
	if b.word.Load() != open {
		return
	}
	if wait := b.until.Load() - b.clock(); wait > 0 {
		time.AfterFunc(time.Duration(wait), func() { b.expire(open) })
		return
	}
	b.transition(open, HalfOpen)
}

// clock is the time since New in nanoseconds: on the monotonic clock with
// time.Now, so a wall-clock step cannot shorten or stretch a cool-down.
func (b *Breaker) clock() int64 { return int64(b.now().Sub(b.start)) }
