package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allezon/allezon/gateway"
	"github.com/allezon/allezon/loadgen"
	"github.com/allezon/allezon/services/postgres/pgtest"
)

// binary is the allezon binary under test, built once by TestMain with the
// same build tags as this test binary (so `go test -tags querydebug` runs
// the end-to-end tests against a debug build, which checks every answer
// itself too).
var binary string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "allezon-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "allezon")
		args := []string{"build", "-o", binary}
		if gateway.DebugBuild {
			args = append(args, "-tags", "querydebug")
		}
		build := exec.Command("go", append(args, ".")...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build allezon:", err)
			return 1
		}
		return pgtest.Main(m)
	}())
}

// proc is one allezon process of a test, restartable on the same flags.
type proc struct {
	t    *testing.T
	name string
	args []string
	cmd  *exec.Cmd
	log  string
}

func start(t *testing.T, name string, args ...string) *proc {
	p := &proc{t: t, name: name, args: args, log: filepath.Join(t.TempDir(), name+".log")}
	p.start()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.dumpLog()
		}
	})
	return p
}

func (p *proc) start() {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	p.cmd = exec.Command(binary, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
}

// kill is kill -9: no flush, no goodbye.
func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		p.cmd = nil
	}
}

func (p *proc) dumpLog() {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	p.t.Logf("last lines of %s:\n%s", p.name, strings.Join(lines, "\n"))
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHealthy polls GET /health until it answers 200.
func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not healthy after 30 s", addr)
}

// replay is a short run of the testing platform tuned for a test: more
// queries per tag than SPEC's replay, and the product's real freshness
// (profiles are written before the 204; aggregates commit every second)
// rather than SPEC's 10 s / 60 s, so every answer is checked within
// seconds. The stream starts 2 s before a minute boundary, so one
// event-time minute is complete early and the aggregates checks have data.
func replay(addr string, seed int64) loadgen.Config {
	return loadgen.Config{
		BaseURL:            "http://" + addr,
		Seed:               seed,
		Start:              loadgen.DefaultStart.Add(-2 * time.Second),
		Rate:               1000,
		Events:             5000,
		Conns:              8,
		ProfileEvery:       5,
		AggregateEvery:     40,
		ProfileFreshness:   500 * time.Millisecond,
		AggregateFreshness: 5 * time.Second,
		Settle:             7 * time.Second,
	}
}

// checkReport fails the test unless the run was clean and its queries
// really checked data (non-empty expected answers).
func checkReport(t *testing.T, rep *loadgen.Report) {
	t.Helper()
	var buf bytes.Buffer
	rep.WriteText(&buf)
	t.Log("\n" + buf.String())
	if !rep.OK() {
		t.Fatal("the replay had errors or mismatches")
	}
	if rep.TagsAcked < rep.TagsSent || rep.TagsAcked == 0 {
		t.Fatalf("%d of %d tags acknowledged", rep.TagsAcked, rep.TagsSent)
	}
	// Profiles: most answers hold tags. Aggregates: only the complete
	// first minute can be non-empty in a 5 s run, and only once it is
	// older than the freshness, so fewer do.
	if p := rep.Profiles; p.Compared < 1000 || p.NonEmpty*2 < p.Compared {
		t.Fatalf("too few informative profile queries: %d compared, %d non-empty", p.Compared, p.NonEmpty)
	}
	if a := rep.Aggregates; a.Compared < 100 || a.NonEmpty < 50 {
		t.Fatalf("too few informative aggregate queries: %d compared, %d non-empty", a.Compared, a.NonEmpty)
	}
}

// checkDebugMismatches reads the server's own count of answers that
// differed from the expected answer in the body (debug builds only).
func checkDebugMismatches(t *testing.T, addr string) {
	t.Helper()
	if !gateway.DebugBuild {
		return
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	seen := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "allezon_debug_mismatches_total{") {
			continue
		}
		seen++
		f := strings.Fields(line)
		if v, _ := strconv.ParseFloat(f[len(f)-1], 64); v != 0 {
			t.Errorf("server counted debug mismatches: %s", line)
		}
	}
	if seen != 2 {
		t.Fatalf("allezon_debug_mismatches_total: %d series, want 2", seen)
	}
}

func TestAllEndToEnd(t *testing.T) {
	addr := freeAddr(t)
	start(t, "all", "all", "--http", addr, "--data", t.TempDir())
	waitHealthy(t, addr)
	rep, err := loadgen.Run(context.Background(), replay(addr, 11))
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep)
	checkDebugMismatches(t, addr)
}

// TestAllCrashRestart kills allezon all with SIGKILL in the middle of a
// replay and restarts it on the same data: every acknowledged tag must
// still be in its profile and the aggregates must still be exact (the
// replay's model knows only acknowledged tags; tags whose request failed
// are re-posted and kept out of aggregate checks, see package loadgen).
func TestAllCrashRestart(t *testing.T) {
	addr := freeAddr(t)
	p := start(t, "all", "all", "--http", addr, "--data", t.TempDir())
	waitHealthy(t, addr)

	cfg := replay(addr, 12)
	cfg.Retry = true
	const killAt, outage = 2500 * time.Millisecond, 5 * time.Second
	cfg.Outages = []loadgen.Window{{From: killAt - 100*time.Millisecond, To: killAt + outage}}
	go func() {
		time.Sleep(killAt)
		p.kill()
		time.Sleep(300 * time.Millisecond)
		p.start()
	}()
	rep, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep)
	if rep.Tags.OutageErrors == nil && rep.Retries == 0 {
		t.Fatal("the kill did not interrupt the replay: the test proved nothing")
	}
	checkDebugMismatches(t, addr)
}

// TestSplitProcesses runs the production shape on one machine: a broker,
// a pipeline and a gateway as three processes, aggregates in a real
// PostgreSQL, and checks the same replay gives exact answers.
func TestSplitProcesses(t *testing.T) {
	dsn := pgtest.Start(t)
	brokerAddr, gwAddr, plAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	events := "kafka://" + brokerAddr + "/allezon-events"

	start(t, "broker", "broker", "--broker-addr", brokerAddr, "--data", t.TempDir())
	start(t, "pipeline", "pipeline", "--http", plAddr, "--events", events, "--aggregates", dsn, "--session-timeout", "1s")
	waitHealthy(t, plAddr)
	start(t, "gateway", "gateway", "--http", gwAddr, "--events", events, "--aggregates", dsn,
		"--profiles", "pebble://"+t.TempDir())
	waitHealthy(t, gwAddr)

	rep, err := loadgen.Run(context.Background(), replay(gwAddr, 13))
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep)
	checkDebugMismatches(t, gwAddr)
}
