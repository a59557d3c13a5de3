// Package pgtest runs a real, private PostgreSQL for tests: no mocks. One
// cluster is started per test process, on first use, from the Debian
// packages' binaries (/usr/lib/postgresql/*/bin), initdb'd into a temporary
// directory and listening on a free loopback port; every Start call gets a
// fresh empty database on it, so tests stay independent without paying for
// an initdb each.
//
// Use it from TestMain, so the cluster is stopped and its directory removed
// when the tests end:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// Even without that, the postmaster is started with a parent-death signal
// (SIGQUIT, PostgreSQL's immediate shutdown), so no postgres process outlives
// the test binary, whatever way it exits.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// installHint is what a test says when the machine has no PostgreSQL: the
// tests must not silently skip the backend they are about.
const installHint = "install PostgreSQL: apt-get install -y postgresql"

// Cluster is one private PostgreSQL server (a data directory plus its
// postmaster). Its methods are safe for concurrent use.
type Cluster struct {
	binDir  string
	dir     string // temp dir: data/, the unix socket, the server log
	dataDir string
	logPath string
	port    int
	cred    *syscall.Credential // set when we are root: PostgreSQL refuses to run as root
	dbSeq   atomic.Int64

	mu     sync.Mutex
	proc   *os.Process
	exited <-chan struct{} // closed when proc has been reaped
}

var (
	sharedOnce sync.Once
	shared     *Cluster
	sharedErr  error
)

// Start returns the DSN of a fresh, empty database on the test process's
// shared cluster, starting the cluster on first use.
func Start(tb testing.TB) string {
	tb.Helper()
	return Shared(tb).NewDatabase(tb)
}

// Shared returns the test process's cluster, starting it on first use. Tests
// that crash or restart the server (failover, reconnect) use it directly.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	sharedOnce.Do(func() { shared, sharedErr = newCluster() })
	if sharedErr != nil {
		tb.Fatalf("pgtest: %v", sharedErr)
	}
	return shared
}

// Private starts a cluster of the test's own, destroyed when the test ends:
// for tests that freeze or crash the server, which must not stall the
// other tests' shared one.
func Private(tb testing.TB) *Cluster {
	tb.Helper()
	c, err := newCluster()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		_ = c.Resume()
		if err := c.destroy(); err != nil {
			tb.Logf("pgtest: %v", err)
		}
	})
	return c
}

// Main runs the tests and then stops the shared cluster (if one was started)
// and removes its directory. Its result is the exit code for os.Exit.
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		if err := shared.destroy(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}
	return code
}

// Port is the TCP port the cluster listens on (127.0.0.1).
func (c *Cluster) Port() int { return c.port }

// DSN is the connection URL of database db on the cluster, as the
// superuser "postgres" (trust authentication on loopback).
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// NewDatabase creates an empty database t_N and returns its DSN.
func (c *Cluster) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t_%d", c.dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		tb.Fatalf("pgtest: connect to create %s: %v", name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	return c.DSN(name)
}

// Stop shuts the server down in immediate mode (SIGQUIT: no checkpoint, the
// next start replays the WAL, as after a crash) and waits for it to exit.
func (c *Cluster) Stop() error { return c.signalAndWait(syscall.SIGQUIT) }

// Kill crashes the server: SIGKILL to the postmaster. Its backends notice
// their parent's death and exit on their own; Start waits for them.
func (c *Cluster) Kill() error { return c.signalAndWait(syscall.SIGKILL) }

// Pause freezes the server as a hung host would: SIGSTOP to the postmaster
// and every backend. Connections stay open and nothing answers, new ones
// are not accepted, until Resume.
func (c *Cluster) Pause() error { return c.signalTree(syscall.SIGSTOP) }

// Resume thaws a paused server (SIGCONT); on a running one it does nothing.
func (c *Cluster) Resume() error { return c.signalTree(syscall.SIGCONT) }

// signalTree sends sig to the postmaster, then to each of its children.
func (c *Cluster) signalTree(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running() {
		return errors.New("pgtest: the server is not running")
	}
	if err := c.proc.Signal(sig); err != nil {
		return fmt.Errorf("pgtest: signal postmaster: %w", err)
	}
	children, err := childrenOf(c.proc.Pid)
	if err != nil {
		return err
	}
	for _, pid := range children {
		// A backend may have exited meanwhile: ESRCH is fine.
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("pgtest: signal backend %d: %w", pid, err)
		}
	}
	return nil
}

// childrenOf lists the processes whose parent is ppid, from /proc.
func childrenOf(ppid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("pgtest: list processes: %w", err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	return out, nil
}

// Restart is Stop then Start, on the same port and data: DSNs stay valid.
func (c *Cluster) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.Start()
}

// Start starts a stopped server again and waits until it accepts
// connections. Starting a running server is a no-op.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running() {
		return nil
	}
	// After a Kill, orphaned backends may hold the old shared memory for a
	// moment and the postmaster refuses to start: retry for a while.
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := c.launch()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func newCluster() (*Cluster, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	c := &Cluster{binDir: binDir, dir: dir, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "server.log")}
	if err := c.init(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) init() error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root needs the postgres user (%s): %w", installHint, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(c.dir, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", c.dir, err)
		}
	}
	initdb := exec.Command(filepath.Join(c.binDir, "initdb"), "-D", c.dataDir, "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	var lastErr error
	for range 3 { // the free port may be taken between probe and bind
		if c.port, lastErr = freePort(); lastErr != nil {
			return lastErr
		}
		if lastErr = c.launch(); lastErr == nil {
			return nil
		}
	}
	return lastErr
}

// launch starts the postmaster as a child process and waits until it
// accepts connections. Callers hold c.mu (or own c exclusively).
func (c *Cluster) launch() error {
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("server log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), "-D", c.dataDir,
		"-p", strconv.Itoa(c.port), "-k", c.dir,
		"-c", "listen_addresses=127.0.0.1",
		// Skip every fsync: that only guards against an OS crash. Commits
		// stay synchronous, so a killed server keeps what it acknowledged,
		// as crash tests expect.
		"-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=32MB", "-c", "max_connections=100")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: c.cred,
		// The kernel sends Pdeathsig when the forking *thread* dies; Go
		// sets it after switching credentials, so it survives the uid change.
		Pdeathsig: syscall.SIGQUIT,
		Setpgid:   true, // a ^C to go test must not reach the server first
	}
	exited, err := StartTied(cmd)
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	c.proc, c.exited = cmd.Process, exited
	if err := c.waitReady(exited); err != nil {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-exited
		c.proc = nil
		return err
	}
	return nil
}

func (c *Cluster) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("postgres exited during startup:\n%s", c.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after 30s: %w\n%s", err, c.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) running() bool {
	if c.proc == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

func (c *Cluster) signalAndWait(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running() {
		return nil
	}
	if err := c.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal postgres: %w", err)
	}
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		return errors.New("postgres did not exit within 30s")
	}
	c.proc = nil
	return nil
}

func (c *Cluster) destroy() error {
	stopErr := c.Stop()
	if err := os.RemoveAll(c.dir); err != nil {
		return errors.Join(stopErr, fmt.Errorf("remove %s: %w", c.dir, err))
	}
	return stopErr
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// findBinDir picks the newest installed major version's bin directory.
func findBinDir() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) == 0 {
		return "", errors.New("no PostgreSQL under /usr/lib/postgresql: " + installHint)
	}
	version := func(p string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return v
	}
	best := slices.MaxFunc(matches, func(a, b string) int { return version(a) - version(b) })
	dir := filepath.Dir(best)
	if _, err := os.Stat(filepath.Join(dir, "initdb")); err != nil {
		return "", fmt.Errorf("no initdb beside %s: %s", best, installHint)
	}
	return dir, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("probe free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartTied starts cmd from an OS thread kept alive for as long as the
// child runs, and returns a channel closed when the child has exited.
// Linux delivers a Pdeathsig set in cmd.SysProcAttr when the thread that
// forked the child ends, not the process: a child forked from a goroutine's
// borrowed thread could be killed the moment Go retires that thread. So
// servers a test starts this way die with the test binary, and only then.
func StartTied(cmd *exec.Cmd) (<-chan struct{}, error) {
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			runtime.UnlockOSThread()
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(exited)
		// Leave the thread locked: it exits with this goroutine.
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return exited, nil
}
