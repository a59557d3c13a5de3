package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/allezon/allezon/loadgen"
)

// runLoadgen is the testing platform: it replays a deterministic stream
// against a running server, checks every answer against its own model, and
// exits non-zero on any mismatch or error.
func runLoadgen(ctx context.Context, args []string) error {
	var (
		c                         loadgen.Config
		rate, start, outages, out string
		plotPath                  string
		seed, events              int
		logLevel                  string
	)
	fs := newFlagSet("loadgen")
	fs.String(&c.BaseURL, "url", "ALLEZON_LOADGEN_URL", "http://127.0.0.1:8088", "base URL of the gateway")
	fs.Int(&seed, "seed", "ALLEZON_LOADGEN_SEED", 1, "stream seed: the same seed replays the same tags")
	fs.String(&start, "start", "ALLEZON_LOADGEN_START", "", "event time of the first tag, RFC 3339 (default: loadgen's fixed instant)")
	fs.String(&rate, "rate", "ALLEZON_LOADGEN_RATE", "1000", "tags per second, open loop, or max (closed loop)")
	fs.Duration(&c.Duration, "duration", "ALLEZON_LOADGEN_DURATION", 60*time.Second, "how long to send tags (0: until --events)")
	fs.Int(&events, "events", "ALLEZON_LOADGEN_EVENTS", 0, "how many tags to send (0: until --duration)")
	fs.Int(&c.Conns, "conns", "ALLEZON_LOADGEN_CONNS", 16, "keep-alive connections")
	fs.Int(&c.ProfileEvery, "profile-every", "ALLEZON_LOADGEN_PROFILE_EVERY", 10, "one /user_profiles query per this many tags (-1: none)")
	fs.Int(&c.AggregateEvery, "aggregate-every", "ALLEZON_LOADGEN_AGGREGATE_EVERY", 1000, "one /aggregates query per this many tags (-1: none)")
	fs.Duration(&c.ProfileFreshness, "profile-freshness", "ALLEZON_LOADGEN_PROFILE_FRESHNESS", 10*time.Second, "how old a tag must be to be expected in /user_profiles (SPEC: 10s)")
	fs.Duration(&c.AggregateFreshness, "aggregate-freshness", "ALLEZON_LOADGEN_AGGREGATE_FRESHNESS", time.Minute, "how old a tag must be to be expected in /aggregates (SPEC: 1m)")
	fs.Duration(&c.Settle, "settle", "ALLEZON_LOADGEN_SETTLE", 0, "keep querying this long after the last tag, so the tail is checked too")
	fs.Bool(&c.Retry, "retry", "ALLEZON_LOADGEN_RETRY", false, "re-post failed tags until acknowledged (for crash and restart runs)")
	fs.String(&outages, "outages", "ALLEZON_LOADGEN_OUTAGES", "", "declared outage windows from the run's start, e.g. 20s-35s,70s-80s: failures inside do not fail the run")
	fs.String(&out, "json", "ALLEZON_LOADGEN_JSON", "", "also write the report as JSON to this file")
	fs.String(&plotPath, "plot", "ALLEZON_LOADGEN_PLOT", "", "also draw throughput and p99 latency per second to this file (.png, .svg or .pdf)")
	fs.String(&logLevel, "log-level", "ALLEZON_LOG_LEVEL", "info", "debug, info, warn or error")
	if err := fs.parse(args); err != nil {
		return err
	}
	cfgLog := config{LogLevel: logLevel, LogFormat: "text"}
	log, err := cfgLog.logger()
	if err != nil {
		return err
	}
	c.Logger, c.Progress, c.Seed, c.Events = log, os.Stderr, int64(seed), int64(events)
	if c.Rate, err = parseRate(rate); err != nil {
		return err
	}
	if start != "" {
		if c.Start, err = time.Parse(time.RFC3339Nano, start); err != nil {
			return fmt.Errorf("start: %w", err)
		}
	}
	if c.Outages, err = parseWindows(outages); err != nil {
		return err
	}
	rep, err := loadgen.Run(ctx, c)
	if err != nil {
		return err
	}
	rep.WriteText(os.Stdout)
	if out != "" {
		if err := writeReport(out, rep); err != nil {
			return err
		}
	}
	if plotPath != "" {
		if err := rep.WritePlot(plotPath); err != nil {
			return err
		}
	}
	if !rep.OK() {
		return errors.New("loadgen: the run had errors or mismatches")
	}
	return nil
}

func parseRate(s string) (int, error) {
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("rate %q: want a positive number or max", s)
	}
	return n, nil
}

// parseWindows reads "20s-35s,70s-80s".
func parseWindows(s string) ([]loadgen.Window, error) {
	if s == "" {
		return nil, nil
	}
	var ws []loadgen.Window
	for _, part := range strings.Split(s, ",") {
		from, to, ok := strings.Cut(part, "-")
		f, err1 := time.ParseDuration(from)
		t, err2 := time.ParseDuration(to)
		if !ok || err1 != nil || err2 != nil || t <= f {
			return nil, fmt.Errorf("outages %q: want windows like 20s-35s", part)
		}
		ws = append(ws, loadgen.Window{From: f, To: t})
	}
	return ws, nil
}

func writeReport(path string, rep *loadgen.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("json report: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("json report: %w", err)
	}
	return f.Close()
}
