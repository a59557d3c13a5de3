// Command bench is the benchmark harness behind `make bench`: it builds
// allezon and the bare-fasthttp "limit" server, runs the benchmark
// scenarios one after another on this machine (each against freshly
// started processes on loopback, with fresh data directories), and writes
// BENCHMARKS.md from what it measured, with the raw reports under
// bench/results.
//
// Scenarios run strictly one at a time, and each starts its own processes:
// two loads at once on a 2-core machine would measure each other, and a
// store warmed by a previous scenario would not be the state a fresh
// deployment starts from.
//
// --quick scales every scenario down to a few seconds to check the harness
// itself; its output says "QUICK MODE: not a benchmark" and its figures
// mean nothing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// options are the harness's flags.
type options struct {
	Out        string   // the Markdown file written
	Results    string   // directory of raw reports, linked from Out
	Quick      bool     // every scenario a few seconds: checks the harness, measures nothing
	Full       bool     // also run bench/fullretention when present
	Only       []string // scenario names to run (empty: all)
	LDFlags    string   // -ldflags of the allezon build (the Makefile's)
	devBuild   bool     // tests: build without -trimpath (see build)
	ModuleRoot string   // the module's directory (default: found with go env GOMOD)
	Progress   io.Writer
	Log        *slog.Logger
	plan       *plan // overrides the quick or full plan (tests)
}

func main() {
	opt, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, opt)
	stop()
	if err != nil {
		opt.Log.Error("bench failed", "err", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var opt options
	var only string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&opt.Out, "out", "BENCHMARKS.md", "Markdown report to write")
	fs.StringVar(&opt.Results, "results", "bench/results", "directory for the raw reports (loadgen JSON, plots, micro.txt)")
	fs.BoolVar(&opt.Quick, "quick", false, "scale every scenario to a few seconds (checks the harness; not a benchmark)")
	fs.BoolVar(&opt.Full, "full", false, "also run bench/fullretention, when present, and include its results")
	fs.StringVar(&only, "only", "", "comma-separated scenarios to run, of "+strings.Join(scenarioNames(), ",")+" (default: all)")
	fs.StringVar(&opt.LDFlags, "ldflags", "", "-ldflags for the allezon build (default: the Makefile's, with git describe as the version)")
	if err := fs.Parse(args); err != nil {
		return opt, err
	}
	if fs.NArg() > 0 {
		return opt, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if only != "" {
		opt.Only = strings.Split(only, ",")
	}
	opt.Progress = os.Stderr
	opt.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	return opt, nil
}
