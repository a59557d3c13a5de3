//go:build patroni

package patronitest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allezon/allezon/loadgen"
	"github.com/allezon/allezon/schemas"
	"github.com/jackc/pgx/v5"
)

// binary is the allezon binary under test, built by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "patronitest-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// make test-patroni as a non-root user builds the binaries first
		// and runs the test binary under sudo, without go on its PATH.
		if binary = os.Getenv("ALLEZON_TEST_BINARY"); binary != "" {
			return m.Run()
		}
		binary = filepath.Join(dir, "allezon")
		build := exec.Command("go", "build", "-o", binary, "github.com/allezon/allezon/cmd/allezon")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build allezon:", err)
			return 1
		}
		return m.Run()
	}())
}

// allezon starts `allezon args...`, killed (SIGKILL) at the end of the test
// and by the kernel if the test process dies.
func allezon(t *testing.T, logDir, name string, args ...string) {
	t.Helper()
	logPath := filepath.Join(logDir, name+".log")
	p, err := startProc("allezon "+name, logPath, nil, syscall.SIGKILL, os.Environ(), append([]string{binary}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		p.Wait(10 * time.Second)
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", p.Name, Tail(logPath, 40))
		}
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	err := waitFor(30*time.Second, addr+" healthy", nil, func() bool {
		resp, err := http.Get("http://" + addr + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Replay shape. Event time runs with the wall clock (1,000 tags/s, tag i
// at Start + i ms); Start is 15 s before a minute boundary, and the leader
// crashes 1.5 s after it, while the pipeline still holds uncommitted deltas
// of the previous minute. Aggregate queries expect a tag once it ended
// aggregateFreshness ago, longer than the failover plus the catch-up, so
// every answer compared must be exact; queries failing while no leader is
// reachable are inside the declared outage window.
const (
	rate               = 1000
	events             = 50_000
	boundaryAt         = 15 * time.Second
	crashAt            = boundaryAt + 1500*time.Millisecond
	outage             = 30 * time.Second
	aggregateFreshness = 25 * time.Second
)

// TestFailoverUnderReplay: `allezon pipeline` writes its aggregates through
// HAProxy while a replay runs; the leader node crashes in the middle;
// Patroni promotes the replica; the pipeline reconnects and resumes from the
// offsets stored with the aggregates; every answer of the replay is exact,
// and afterwards every row of every rollup table equals the reference
// computed from the acknowledged tags.
func TestFailoverUnderReplay(t *testing.T) {
	t0 := time.Now()
	c := Start(t, Options{Nodes: 2})
	first := c.Leader()
	if first == nil {
		t.Fatal("no leader after Start")
	}
	t.Logf("cluster up in %v: etcd :%d, leader %s, replica, HAProxy write :%d", time.Since(t0).Round(time.Millisecond),
		c.EtcdPort, first.Name, c.WritePort)

	// The application role and database, as post-bootstrap.sh makes them.
	ctx := context.Background()
	appPass := randHex(12)
	super, err := pgx.Connect(ctx, c.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		fmt.Sprintf("CREATE ROLE allezon LOGIN PASSWORD '%s'", appPass),
		"CREATE DATABASE allezon OWNER allezon",
		"CREATE TABLE write_probe (id int PRIMARY KEY, n bigint NOT NULL)",
		"INSERT INTO write_probe VALUES (1, 0)",
	} {
		if _, err := super.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	super.Close(ctx)

	work := t.TempDir()
	pwFile := filepath.Join(work, "db_password")
	if err := os.WriteFile(pwFile, []byte(appPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("postgres://allezon@127.0.0.1:%d/allezon?sslmode=disable", c.WritePort)
	brokerAddr, gwAddr, plAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	eventsURL := "kafka://" + brokerAddr + "/allezon-events"
	allezon(t, work, "broker", "broker", "--broker-addr", brokerAddr, "--data", filepath.Join(work, "broker"))
	allezon(t, work, "pipeline", "pipeline", "--admin", "", "--http", plAddr, "--events", eventsURL,
		"--aggregates", dsn, "--aggregates-password-file", pwFile, "--session-timeout", "1s")
	waitHealthy(t, plAddr)
	allezon(t, work, "gateway", "gateway", "--admin", "", "--http", gwAddr, "--events", eventsURL,
		"--aggregates", dsn, "--aggregates-password-file", pwFile, "--profiles", "pebble://"+filepath.Join(work, "profiles"))
	waitHealthy(t, gwAddr)

	probe := startWriteProbe(c.SuperDSN("postgres"))
	defer probe.stop()

	cfg := loadgen.Config{
		BaseURL:            "http://" + gwAddr,
		Seed:               21,
		Start:              loadgen.DefaultStart.Add(-boundaryAt),
		Rate:               rate,
		Events:             events,
		Conns:              8,
		ProfileEvery:       5,
		AggregateEvery:     40,
		ProfileFreshness:   500 * time.Millisecond,
		AggregateFreshness: aggregateFreshness,
		AggregateTimeout:   5 * time.Second,
		Settle:             aggregateFreshness + 5*time.Second,
		Outages:            []loadgen.Window{{From: crashAt - 500*time.Millisecond, To: crashAt + outage}},
	}

	// The crash, timed from the replay's start.
	type failover struct {
		crashed, promoted time.Time
		newLeader         *Node
		err               error
	}
	fo := make(chan failover, 1)
	runStart := time.Now()
	go func() {
		time.Sleep(crashAt - time.Since(runStart))
		var f failover
		leader := c.Leader()
		if leader == nil {
			f.err = fmt.Errorf("no leader to crash")
			fo <- f
			return
		}
		f.crashed = time.Now()
		if f.err = leader.Crash(); f.err != nil {
			fo <- f
			return
		}
		f.newLeader, f.err = c.WaitLeader(leader, 60*time.Second)
		f.promoted = time.Now()
		fo <- f
	}()
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := <-fo
	if f.err != nil {
		t.Fatalf("failover: %v", f.err)
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	t.Logf("replay:\n%s", buf.String())

	probe.stop()
	unavailable, failedWrites := probe.gapAfter(f.crashed)
	t.Logf("crashed leader %s at +%v of the replay; Patroni promoted %s after %v; writes through HAProxy unavailable for %v (%d failed probe writes)",
		first.Name, f.crashed.Sub(runStart).Round(time.Millisecond), f.newLeader.Name,
		f.promoted.Sub(f.crashed).Round(time.Millisecond), unavailable.Round(time.Millisecond), failedWrites)

	if !rep.OK() {
		t.Error("the replay had errors or mismatches")
	}
	if rep.TagsAcked != events || rep.TagsSent != events || rep.Retries != 0 {
		t.Fatalf("tags: %d sent, %d acknowledged, %d retries; want all %d acknowledged at the first attempt",
			rep.TagsSent, rep.TagsAcked, rep.Retries, events)
	}
	if a := rep.Aggregates; a.Compared < 100 || a.NonEmpty < 50 {
		t.Errorf("too few informative aggregate queries: %d compared, %d non-empty", a.Compared, a.NonEmpty)
	}
	if rep.Aggregates.OutageErrors == nil {
		t.Error("no aggregate query failed during the failover: did the crash hit the database?")
	}

	// Every row of every rollup table against the reference.
	db, err := pgx.Connect(ctx, c.SuperDSN("allezon"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	waitCaughtUp(t, db, events)
	ref := reference(loadgen.NewGenerator(cfg.Seed, cfg.Start), events)
	rows := checkTables(t, db, ref)

	m := scrape(t, plAddr)
	t.Logf("pipeline: %s commits ok, %s failed (store), %s fenced; %s sink errors (offsets reads), %s group sessions",
		m[`allezon_pipeline_commits_total`], m[`allezon_pipeline_commit_errors_total{reason="store"}`],
		m[`allezon_pipeline_commit_errors_total{reason="fenced"}`], m[`allezon_pipeline_sink_errors_total{op="offsets"}`],
		m[`allezon_pipeline_rebalances_total`])
	if m[`allezon_pipeline_commit_errors_total{reason="store"}`] == "0" && m[`allezon_pipeline_commit_errors_total{reason="fenced"}`] == "0" {
		t.Error("the pipeline saw no failed commit: the failover did not hit it")
	}
	if !t.Failed() {
		t.Logf("exact: %d rows in 6 rollup tables equal the reference of %d acknowledged tags (every minute, every filter value)", rows, events)
	}
}

// writeProbe updates one row through HAProxy every 100 ms (1 s time-out),
// reconnecting after an error, and remembers each attempt.
type writeProbe struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	at     []time.Time
	ok     []bool
}

func startWriteProbe(dsn string) *writeProbe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &writeProbe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for ctx.Err() == nil {
			start := time.Now()
			actx, acancel := context.WithTimeout(ctx, time.Second)
			var err error
			if conn == nil {
				conn, err = pgx.Connect(actx, dsn)
				if err != nil {
					conn = nil
				}
			}
			if err == nil {
				_, err = conn.Exec(actx, "UPDATE write_probe SET n = n + 1 WHERE id = 1")
				if err != nil {
					conn.Close(context.Background())
					conn = nil
				}
			}
			acancel()
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.at, p.ok = append(p.at, time.Now()), append(p.ok, err == nil)
			p.mu.Unlock()
			time.Sleep(100*time.Millisecond - time.Since(start))
		}
	}()
	return p
}

func (p *writeProbe) stop() {
	p.once.Do(func() {
		p.cancel()
		<-p.done
	})
}

// gapAfter is how long after t writes first succeeded again (measured from
// the last success before t), and how many attempts failed in between.
func (p *writeProbe) gapAfter(t time.Time) (time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lastOK time.Time
	failed := 0
	for i, at := range p.at {
		switch {
		case at.Before(t) && p.ok[i]:
			lastOK = at
		case !at.Before(t) && !p.ok[i]:
			failed++
		case !at.Before(t) && p.ok[i]:
			return at.Sub(lastOK), failed
		}
	}
	return -1, failed
}

// waitCaughtUp waits until agg_total counts n tags (the pipeline has read
// every event), and fails at once if it counts more.
func waitCaughtUp(t *testing.T, db *pgx.Conn, n int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got int64
		err := db.QueryRow(context.Background(), "SELECT coalesce(sum(count), 0)::bigint FROM agg_total").Scan(&got)
		if err != nil {
			t.Fatal(err)
		}
		if got > n {
			t.Fatalf("agg_total counts %d tags, more than the %d sent: double counting", got, n)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agg_total counts %d of %d tags after 60 s", got, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rollups are the six tables and their dimension columns.
var rollups = []struct {
	table string
	dims  schemas.Dims
}{
	{"agg_total", 0},
	{"agg_origin", schemas.DimOrigin},
	{"agg_brand", schemas.DimBrand},
	{"agg_category", schemas.DimCategory},
	{"agg_brand_category", schemas.DimBrand | schemas.DimCategory},
	{"agg_cell", schemas.AllDims},
}

func project(c schemas.Cell, d schemas.Dims) schemas.Cell {
	p := schemas.Cell{Minute: c.Minute, Action: c.Action}
	if d&schemas.DimOrigin != 0 {
		p.Origin = c.Origin
	}
	if d&schemas.DimBrand != 0 {
		p.BrandID = c.BrandID
	}
	if d&schemas.DimCategory != 0 {
		p.CategoryID = c.CategoryID
	}
	return p
}

// reference sums tags 0..n-1 of the stream into full cells.
func reference(g *loadgen.Generator, n int64) map[schemas.Cell]schemas.Totals {
	ref := make(map[schemas.Cell]schemas.Totals)
	for i := range n {
		tag := g.Tag(i)
		c := schemas.CellOf(&tag)
		tot := ref[c]
		tot.Add(schemas.Totals{Count: 1, SumPrice: int64(tag.Price)})
		ref[c] = tot
	}
	return ref
}

// checkTables compares every row of every rollup table with the reference
// projected on its dimensions; it returns the number of rows compared.
func checkTables(t *testing.T, db *pgx.Conn, ref map[schemas.Cell]schemas.Totals) int {
	t.Helper()
	total := 0
	for _, r := range rollups {
		want := make(map[schemas.Cell]schemas.Totals)
		for c, tot := range ref {
			p := project(c, r.dims)
			w := want[p]
			w.Add(tot)
			want[p] = w
		}
		cols := []string{"minute", "action"}
		if r.dims&schemas.DimOrigin != 0 {
			cols = append(cols, "origin")
		}
		if r.dims&schemas.DimBrand != 0 {
			cols = append(cols, "brand_id")
		}
		if r.dims&schemas.DimCategory != 0 {
			cols = append(cols, "category_id")
		}
		rows, err := db.Query(context.Background(), "SELECT "+strings.Join(append(cols, "count", "sum_price"), ", ")+" FROM "+r.table)
		if err != nil {
			t.Fatal(err)
		}
		got := make(map[schemas.Cell]schemas.Totals)
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			c := schemas.Cell{Minute: vals[0].(int64), Action: schemas.Action(vals[1].(int16))}
			k := 2
			if r.dims&schemas.DimOrigin != 0 {
				c.Origin, k = vals[k].(string), k+1
			}
			if r.dims&schemas.DimBrand != 0 {
				c.BrandID, k = vals[k].(string), k+1
			}
			if r.dims&schemas.DimCategory != 0 {
				c.CategoryID, k = vals[k].(string), k+1
			}
			got[c] = schemas.Totals{Count: vals[k].(int64), SumPrice: vals[k+1].(int64)}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		var bad []string
		for c, w := range want {
			if g, ok := got[c]; !ok || g != w {
				bad = append(bad, fmt.Sprintf("%+v: got %+v (present %v), want %+v", c, g, ok, w))
			}
		}
		for c, g := range got {
			if _, ok := want[c]; !ok {
				bad = append(bad, fmt.Sprintf("%+v: got %+v, want no row", c, g))
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			t.Errorf("%s: %d of %d rows differ, e.g.\n%s", r.table, len(bad), len(want), strings.Join(bad[:min(5, len(bad))], "\n"))
		}
		minutes := make(map[int64]bool)
		for c := range want {
			minutes[c.Minute] = true
		}
		t.Logf("%s: %d rows over %d minutes checked", r.table, len(got), len(minutes))
		total += len(got)
	}
	return total
}

// scrape reads the allezon_pipeline_* samples of /metrics: name{labels} -> value.
func scrape(t *testing.T, addr string) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := make(map[string]string)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "allezon_pipeline_") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			out[line[:i]] = line[i+1:]
		}
	}
	return out
}
