package main

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// busyLoad is the 1-minute load average above which the report warns that
// the machine was not quiet when the run started.
const busyLoad = 0.5

// machine is what the figures depend on besides the code.
type machine struct {
	CPUs        int     `json:"cpus"`
	CPUModel    string  `json:"cpu_model"`
	MemoryBytes int64   `json:"memory_bytes"`
	Kernel      string  `json:"kernel"`
	GoVersion   string  `json:"go_version"`
	Commit      string  `json:"commit"`
	Dirty       bool    `json:"dirty"`
	Load1       float64 `json:"load1"` // before the run started
}

// readMachine reads the machine's facts from /proc; a fact it cannot read
// stays empty rather than failing the benchmark.
func readMachine(ctx context.Context) machine {
	m := machine{CPUs: runtime.NumCPU(), Load1: loadAverage()}
	m.CPUModel = procField("/proc/cpuinfo", "model name", ":")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal", ":"), " kB"), 10, 64); err == nil {
		m.MemoryBytes = kb << 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	// The toolchain that builds the binaries, which under `go run` is
	// also the one running this harness.
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimPrefix(strings.TrimSpace(string(out)), "go version ")
	} else {
		m.GoVersion = runtime.Version()
	}
	return m
}

// addGit records the commit benchmarked and whether the tree differed from
// it (then the figures belong to no commit).
func (m *machine) addGit(ctx context.Context, root string) {
	if out, err := gitOutput(ctx, root, "rev-parse", "--short=12", "HEAD"); err == nil {
		m.Commit = out
	} else {
		m.Commit = "unknown"
	}
	out, err := gitOutput(ctx, root, "status", "--porcelain", "--untracked-files=no")
	m.Dirty = err != nil || out != ""
}

func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// procField is the value of the first "key<sep> value" line of a /proc file.
func procField(path, key, sep string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
