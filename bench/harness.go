package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// plan is how long each scenario runs. The full plan is the issue's; the
// quick plan only proves that every step of the harness works.
type plan struct {
	Limit, Ingest   time.Duration // closed-loop tag runs
	Mixed, Settle   time.Duration // the mixed run and its query-only tail
	Probes          int           // freshness probes
	MicroCount      int           // go test -count
	MicroBenchtime  string        // go test -benchtime ("": its default, 1s)
	FreshnessWarmup time.Duration // background load before the first probe
}

var (
	fullPlan  = plan{Limit: 30 * time.Second, Ingest: 60 * time.Second, Mixed: 120 * time.Second, Settle: 10 * time.Second, Probes: 30, MicroCount: 5, FreshnessWarmup: 5 * time.Second}
	quickPlan = plan{Limit: 2 * time.Second, Ingest: 3 * time.Second, Mixed: 3 * time.Second, Settle: 2 * time.Second, Probes: 3, MicroCount: 1, MicroBenchtime: "100ms", FreshnessWarmup: time.Second}
)

// scenario is one benchmark; it returns its section of the report, with
// Err set when it could not measure.
type scenario struct {
	name string
	run  func(ctx context.Context, h *harness) *section
}

func allScenarios() []scenario {
	return []scenario{
		{"limit", runLimit},
		{"ingest", runIngest},
		{"mixed", runMixed},
		{"freshness", runFreshness},
		{"micro", runMicro},
	}
}

func scenarioNames() []string {
	var names []string
	for _, s := range allScenarios() {
		names = append(names, s.name)
	}
	return names
}

// harness is the state shared by the scenarios of one run.
type harness struct {
	opt  options
	log  *slog.Logger
	root string   // module root: builds and go test run there
	tmp  string   // binaries, data directories, server logs
	bin  binaries // built for this run
	plan plan
	// limitRate is the limit scenario's tags/s, 0 until it ran: ingest
	// is judged as a share of the limit measured in the same run.
	limitRate float64
}

// run is the whole harness: machine facts, builds, the scenarios in turn,
// then the report. It returns an error when a scenario could not be
// measured (after writing the report); missed targets are not errors,
// the report states them.
func run(ctx context.Context, opt options) error {
	h := &harness{opt: opt, log: opt.Log, plan: fullPlan}
	if opt.Quick {
		h.plan = quickPlan
	}
	if opt.plan != nil {
		h.plan = *opt.plan
	}
	selected, err := selectScenarios(opt.Only)
	if err != nil {
		return err
	}
	// The load average first, before the harness adds its own builds.
	m := readMachine(ctx)
	if h.root = opt.ModuleRoot; h.root == "" {
		if h.root, err = moduleRoot(ctx); err != nil {
			return err
		}
	}
	m.addGit(ctx, h.root)
	if err := os.MkdirAll(opt.Results, 0o755); err != nil {
		return err
	}
	if h.tmp, err = os.MkdirTemp("", "allezon-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(h.tmp)
	h.log.Info("building", "dir", h.tmp)
	if h.bin, err = build(ctx, h.root, h.tmp, opt.LDFlags, !opt.devBuild); err != nil {
		return err
	}
	rep := &report{Machine: m, Quick: opt.Quick, Plot: h.bin.plot, Builds: h.bin.builds, Started: time.Now().UTC()}
	for _, sc := range selected {
		if ctx.Err() != nil {
			break
		}
		h.log.Info("scenario", "name", sc.name)
		start := time.Now()
		sec := sc.run(ctx, h)
		sec.Name = sc.name
		h.log.Info("scenario done", "name", sc.name, "took", time.Since(start).Round(time.Second), "err", sec.Err)
		rep.Sections = append(rep.Sections, sec)
	}
	rep.Sections = append(rep.Sections, h.fullRetention(ctx))
	rep.Finished = time.Now().UTC()
	if err := h.write(rep); err != nil {
		return err
	}
	return errors.Join(ctx.Err(), rep.errors())
}

func selectScenarios(only []string) ([]scenario, error) {
	all := allScenarios()
	if len(only) == 0 {
		return all, nil
	}
	var out []scenario
	for _, sc := range all {
		if slices.Contains(only, sc.name) {
			out = append(out, sc)
		}
	}
	for _, name := range only {
		if !slices.Contains(scenarioNames(), name) {
			return nil, fmt.Errorf("unknown scenario %q (have %v)", name, scenarioNames())
		}
	}
	return out, nil
}

// write saves the measured figures as bench.json (so a report can be
// checked against them) and renders the Markdown report.
func (h *harness) write(rep *report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(h.opt.Results, "bench.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	md, err := rep.markdown(h.opt.Out, h.opt.Results, h.root)
	if err != nil {
		return err
	}
	if err := os.WriteFile(h.opt.Out, md, 0o644); err != nil {
		return err
	}
	h.log.Info("report written", "file", h.opt.Out, "results", h.opt.Results)
	return nil
}

// dataDir is a fresh data directory for one server.
func (h *harness) dataDir(name string) (string, error) {
	return os.MkdirTemp(h.tmp, name+"-data-")
}

// startAllezon starts `allezon all` on a free port with a fresh data
// directory. pprof is off: its default port may be in use by someone
// profiling on this machine, and a benchmark must not disturb them.
func (h *harness) startAllezon(ctx context.Context, name string) (*server, string, error) {
	data, err := h.dataDir(name)
	if err != nil {
		return nil, "", err
	}
	// pprof on a free loopback port of its own, never the default 6060
	// that someone profiling by hand may be using.
	admin, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	s, err := startServer(ctx, h.tmp, name+"-allezon", h.bin.allezon,
		[]string{"all", "--http", "{addr}", "--admin", admin, "--data", data}, "/health")
	if err != nil {
		os.RemoveAll(data)
		return nil, "", err
	}
	s.admin = admin
	return s, data, nil
}

// stopAllezon stops the server and frees its data directory, which can
// hold gigabytes after an ingest run.
func (h *harness) stopAllezon(s *server, data string) {
	s.stop()
	if err := os.RemoveAll(data); err != nil {
		h.log.Warn("remove data dir", "dir", data, "err", err)
	}
}
