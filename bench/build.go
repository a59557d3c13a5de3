package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// binaries are the programs the scenarios run, built for this run.
type binaries struct {
	allezon string
	limit   string
	plot    bool     // allezon loadgen has --plot
	builds  []string // the go build commands, as run
}

// build compiles allezon (with the Makefile's flags, so the benchmark runs
// what `make build` ships) and the limit server into dir. trimpath is the
// Makefile's -trimpath; the smoke test leaves it out, since a -trimpath
// build recompiles every dependency on a machine that has only built
// without it (a fresh CI machine: minutes of CPU for no benefit there).
func build(ctx context.Context, root, dir, ldflags string, trimpath bool) (binaries, error) {
	b := binaries{allezon: filepath.Join(dir, "allezon"), limit: filepath.Join(dir, "limit")}
	if ldflags == "" {
		ldflags = "-s -w -X main.version=" + gitDescribe(ctx, root)
	}
	for _, args := range [][]string{
		{"build", "-o", b.allezon, "-trimpath", "-ldflags", ldflags, "./cmd/allezon"},
		{"build", "-o", b.limit, "-trimpath", "./bench/limit"},
	} {
		if !trimpath {
			args = slices.DeleteFunc(args, func(a string) bool { return a == "-trimpath" })
		}
		b.builds = append(b.builds, shellJoin(append([]string{"go"}, args...)))
		if err := goBuild(ctx, root, args); err != nil {
			return b, err
		}
	}
	b.plot = hasFlag(ctx, b.allezon, "plot", "loadgen", "-h")
	return b, nil
}

func goBuild(ctx context.Context, root string, args []string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// hasFlag reports whether the usage text of bin args lists -name: a newer
// loadgen may plot its run, and the report links the plots when it can.
func hasFlag(ctx context.Context, bin, name string, args ...string) bool {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run() // -h exits 0 or 2 depending on the flag package
	return regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(name) + `\b`).Match(out.Bytes())
}

func gitDescribe(ctx context.Context, root string) string {
	out, err := gitOutput(ctx, root, "describe", "--always", "--dirty")
	if err != nil || out == "" {
		return "dev"
	}
	return out
}

func gitOutput(ctx context.Context, root string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = root
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// moduleRoot is the directory of the module's go.mod, so the harness works
// from any directory inside the tree (go test runs it from bench/).
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == "/dev/null" {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}
