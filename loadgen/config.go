package loadgen

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"
)

// SPEC.md's latency limits: a request slower than these counts as a
// time-out in the report.
const (
	TagLimit       = 200 * time.Millisecond
	ProfileLimit   = 200 * time.Millisecond
	AggregateLimit = 60 * time.Second
)

// Config says what to replay, how fast, and how to judge it. Zero values
// take the defaults noted per field.
type Config struct {
	// BaseURL of the gateway, default "http://127.0.0.1:8088".
	BaseURL string
	// Seed selects the stream; the same seed and Start replay the same tags.
	Seed int64
	// Start is the event time of tag 0; zero means DefaultStart. Against a
	// store that already holds a run, use a later Start (e.g. a day later),
	// or the old tags change the expected answers.
	Start time.Time
	// Rate is the target in tags per second, open loop; 0 is closed loop:
	// as fast as Conns connections allow.
	Rate int
	// Duration and Events bound the sending phase (whichever comes first;
	// both zero: until the context ends).
	Duration time.Duration
	Events   int64
	// Conns is the number of keep-alive connections, and the bound on
	// requests in flight; default 128, so that at 1,000 tags/s a stall of
	// the server up to ~130 ms (+ maxLag) does not slip the schedule.
	Conns int
	// ProfileEvery and AggregateEvery interleave one query per that many
	// tags; defaults 10 and 1000 (SPEC.md), negative disables.
	ProfileEvery, AggregateEvery int
	// ProfileFreshness and AggregateFreshness are how long after its 204 a
	// tag may be expected in answers; defaults are SPEC.md's 10 s and 1
	// minute. Set them lower only to test a product that promises more.
	ProfileFreshness, AggregateFreshness time.Duration
	// Settle keeps sending queries (no tags) this long after the last tag,
	// so that the tail of the stream gets checked too.
	Settle time.Duration
	// Timeout is the client's time-out for tags and profile queries
	// (default 2 s) and AggregateTimeout for aggregate queries (default
	// 65 s): generous, so that slow answers are measured, not cut.
	Timeout, AggregateTimeout time.Duration
	// Retry re-posts, with the same content, a tag whose request failed
	// (transport error, time-out, 5xx or 429), with a growing back-off,
	// until it is acknowledged or RetryGrace after the sending phase and
	// Settle have ended (default 10 s). See the package doc for how failed
	// tags change what queries may expect.
	Retry      bool
	RetryGrace time.Duration
	// Outages are declared windows, relative to the run's start, in which
	// the server is expected to be down (a kill -9 and restart): failures
	// and time-outs of requests that start or end inside one are reported
	// apart and do not fail the verdict.
	Outages []Window
	// Logger gets notable events (mismatches, first errors); default
	// slog.Default().
	Logger *slog.Logger
	// Progress, when set, gets a live status line every second.
	Progress io.Writer
}

// Window is a span of time relative to the run's start.
type Window struct {
	From time.Duration `json:"from_ns"`
	To   time.Duration `json:"to_ns"`
}

func (w Window) contains(d time.Duration) bool { return d >= w.From && d < w.To }

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	if c.BaseURL == "" {
		c.BaseURL = "http://127.0.0.1:8088"
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil {
		return c, fmt.Errorf("loadgen: base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return c, fmt.Errorf("loadgen: base URL %q: want http://host:port", c.BaseURL)
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	c.Start = c.Start.UTC().Truncate(time.Millisecond)
	if c.Rate < 0 || c.Duration < 0 || c.Events < 0 || c.Conns < 0 || c.Settle < 0 {
		return c, errors.New("loadgen: rate, duration, events, conns and settle must not be negative")
	}
	if c.Conns == 0 {
		c.Conns = 128
	}
	if c.ProfileEvery == 0 {
		c.ProfileEvery = 10
	}
	if c.AggregateEvery == 0 {
		c.AggregateEvery = 1000
	}
	if c.ProfileFreshness <= 0 {
		c.ProfileFreshness = 10 * time.Second
	}
	if c.AggregateFreshness <= 0 {
		c.AggregateFreshness = time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	if c.AggregateTimeout <= 0 {
		c.AggregateTimeout = AggregateLimit + 5*time.Second
	}
	if c.RetryGrace <= 0 {
		c.RetryGrace = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
