package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestStartGivesFreshDatabases(t *testing.T) {
	ctx := context.Background()
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("two Start calls returned the same DSN %s", a)
	}
	ca := connect(t, a)
	if _, err := ca.Exec(ctx, "CREATE TABLE x (v int); INSERT INTO x VALUES (1)"); err != nil {
		t.Fatalf("write to first database: %v", err)
	}
	var n int
	if err := connect(t, b).QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
		t.Fatalf("query second database: %v", err)
	}
	if n != 0 {
		t.Fatalf("second database has %d tables, want an empty one", n)
	}
	var user string
	if err := ca.QueryRow(ctx, "SELECT current_setting('fsync')").Scan(&user); err != nil || user != "off" {
		t.Fatalf("fsync = %q (%v), want off", user, err)
	}
}

func TestRestartKeepsDataAndDSN(t *testing.T) {
	ctx := context.Background()
	dsn := Start(t)
	c := Shared(t)
	conn := connect(t, dsn)
	if _, err := conn.Exec(ctx, "CREATE TABLE x (v int); INSERT INTO x VALUES (42)"); err != nil {
		t.Fatalf("write: %v", err)
	}
	for _, tc := range []struct {
		name string
		down func() error
	}{
		{"stop", c.Stop},
		{"kill", c.Kill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.down(); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if _, err := pgx.Connect(ctx, dsn); err == nil {
				t.Fatalf("connected to a server that is down")
			}
			if err := c.Start(); err != nil {
				t.Fatalf("start after %s: %v", tc.name, err)
			}
			var v int
			if err := connect(t, dsn).QueryRow(ctx, "SELECT v FROM x").Scan(&v); err != nil || v != 42 {
				t.Fatalf("after %s read v = %d (%v), want 42", tc.name, v, err)
			}
		})
	}
	if err := c.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := connect(t, dsn).Ping(ctx); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
}

// TestServerDiesWithTestProcess runs a test binary that starts a cluster and
// exits without Main's cleanup (as a panicking or killed test would): its
// postmaster must go away with it.
func TestServerDiesWithTestProcess(t *testing.T) {
	if os.Getenv("PGTEST_ORPHAN_CHILD") == "1" {
		c := Shared(t)
		fmt.Printf("pid=%d dir=%s\n", c.proc.Pid, c.dir)
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithTestProcess$")
	cmd.Env = append(os.Environ(), "PGTEST_ORPHAN_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child test process: %v\n%s", err, out)
	}
	var pid int
	var dir string
	if _, err := fmt.Sscanf(string(out), "pid=%d dir=%s", &pid, &dir); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	deadline := time.Now().Add(15 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("postmaster %d outlived its test process by 15s", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// TestPauseFreezesAndResumeThaws: a paused server answers nothing, on open
// connections and new ones alike, until Resume.
func TestPauseFreezesAndResumeThaws(t *testing.T) {
	c := Private(t)
	dsn := c.NewDatabase(t)
	conn := connect(t, dsn)
	ping := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var one int
		return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	}
	if err := ping(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := ping(500 * time.Millisecond); err == nil {
		t.Fatal("a paused server answered")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	if fresh, err := pgx.Connect(ctx, dsn); err == nil {
		fresh.Close(context.Background())
		t.Fatal("a paused server accepted a new session")
	}
	cancel()
	if err := c.Resume(); err != nil {
		t.Fatal(err)
	}
	fresh := connect(t, dsn)
	var one int
	if err := fresh.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("after Resume: %v", err)
	}
}
