package main

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/allezon/allezon/broker"
	"github.com/allezon/allezon/loadgen"
	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/schemas"
	"github.com/allezon/allezon/services/postgres/pgtest"
)

// Fault tests: each runs replays through the real binary, breaks something
// for real in the middle (kill -9, SIGTERM, the broker or a stream worker
// gone), and then checks the end state exactly (verify_test.go).

// faultSeed is the seed of a test's random choices (kill moments), logged
// so a failing run can be replayed with ALLEZON_FAULT_SEED.
func faultSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ALLEZON_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ALLEZON_FAULT_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("fault seed %d (ALLEZON_FAULT_SEED=%d replays these choices)", seed, seed)
	return seed
}

// crashRounds is how many kill -9 rounds TestCrashRounds runs: 10, or
// ALLEZON_CRASH_ROUNDS.
func crashRounds(t *testing.T) int {
	if s := os.Getenv("ALLEZON_CRASH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("ALLEZON_CRASH_ROUNDS=%q: want a positive integer", s)
		}
		return n
	}
	return 10
}

// TestCrashRounds kills allezon all with SIGKILL at a random moment of each
// of ten replays (while tags are posted, or while the pipeline is still
// flushing them) and restarts it at once on the same data. After each
// round it checks the end state exactly: every acknowledged tag is in the
// log and in its profile, and the aggregates equal the log's sums.
// Each replay starts 1.5 s before a minute boundary, so a kill often
// falls while the pipeline holds uncommitted deltas of two minutes.
func TestCrashRounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(faultSeed(t), 1))
	addr, brokerAddr, data := freeAddr(t), freeAddr(t), t.TempDir()
	p := start(t, "all", "all", "--http", addr, "--broker-addr", brokerAddr, "--data", data)
	waitHealthy(t, addr)
	v := newVerifier(t, addr, []string{brokerAddr})

	const perRound = 3000 // 3 s at 1,000 tags/s
	for round := range crashRounds(t) {
		seg := segment{seed: int64(100 + round), n: perRound,
			start: loadgen.DefaultStart.Add(time.Duration(round)*time.Minute - 1500*time.Millisecond)}
		v.segments = append(v.segments, seg)
		// Anywhere in the 3 s of posting or the 0.6 s after it.
		killAt := time.Duration(200+rng.IntN(3400)) * time.Millisecond
		cfg := replayConfig(addr, seg, 1000)
		cfg.Outages = []loadgen.Window{{From: killAt - 100*time.Millisecond, To: killAt + 15*time.Second}}
		restarted := make(chan struct{})
		go func() {
			defer close(restarted)
			time.Sleep(killAt)
			p.kill()
			p.start()
		}()
		rep := runReplay(t, cfg)
		<-restarted // the kill may come after the replay's last answer
		waitHealthy(t, addr)
		t.Logf("round %d: killed at %v; %d retried attempts", round+1, killAt, rep.Retries)
		v.check()
	}
	checkDebugMismatches(t, addr)
}

// TestGracefulShutdown sends SIGTERM in the middle of a replay: the process
// must exit 0 within its --shutdown-timeout, every request it took must be
// answered (so no event in the log is a duplicate: a request answered with
// its 204 is never retried), and the pipeline must have committed every
// event of the log before exiting (its stored offsets equal the log's high
// watermarks). Then it restarts and the replay's retries of the requests
// refused during the stop complete; the end state is exact.
func TestGracefulShutdown(t *testing.T) {
	addr, brokerAddr, data := freeAddr(t), freeAddr(t), t.TempDir()
	const shutdownTimeout = 10 * time.Second
	p := start(t, "all", "all", "--http", addr, "--broker-addr", brokerAddr, "--data", data,
		"--shutdown-timeout", shutdownTimeout.String())
	waitHealthy(t, addr)
	v := newVerifier(t, addr, []string{brokerAddr})
	seg := segment{seed: 200, start: loadgen.DefaultStart, n: 8000}
	v.segments = append(v.segments, seg)

	const termAt = 3 * time.Second
	cfg := replayConfig(addr, seg, 2000)
	cfg.Outages = []loadgen.Window{{From: termAt - 50*time.Millisecond, To: termAt + 25*time.Second}}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		time.Sleep(termAt)
		sent := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Error(err)
			return
		}
		err := p.cmd.Wait()
		took := time.Since(sent)
		p.cmd = nil
		t.Logf("SIGTERM: exited after %v (%v)", took.Round(time.Millisecond), err)
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
		if took > shutdownTimeout+2*time.Second {
			t.Errorf("SIGTERM took %v, more than --shutdown-timeout %v", took, shutdownTimeout)
		}
		checkOffsetsCommitted(t, data)
		p.start()
	}()
	runReplay(t, cfg)
	<-stopped
	waitHealthy(t, addr)
	events := v.check()
	if len(events) != int(seg.n) {
		t.Fatalf("the log holds %d events for %d tags: a request taken before the SIGTERM went unanswered and was retried", len(events), seg.n)
	}
}

// checkOffsetsCommitted opens the stopped process's data: the aggregates
// store's offsets must equal the embedded broker's high watermarks.
func checkOffsetsCommitted(t *testing.T, data string) {
	t.Helper()
	b, err := broker.Start(broker.Config{Dir: filepath.Join(data, "events"), Addr: "127.0.0.1:0", Topic: defaultTopic, Partitions: 2})
	if err != nil {
		t.Fatalf("reopen the broker's data: %v", err)
	}
	defer b.Close()
	events := readLog(t, b.Addrs(), defaultTopic)
	hw := highWatermarks(t, b.Addrs(), defaultTopic)
	ctx := context.Background()
	agg, err := aggregates.Open(ctx, "pebble://"+filepath.Join(data, "aggregates"), aggregates.Options{})
	if err != nil {
		t.Fatalf("reopen the aggregates store: %v", err)
	}
	defer agg.Close()
	stored, err := agg.Offsets(ctx, defaultTopic)
	if err != nil {
		t.Fatal(err)
	}
	for p, w := range hw {
		if stored[p] != w {
			t.Errorf("partition %d: stored offset %d, high watermark %d: the pipeline did not commit everything before exiting", p, stored[p], w)
		}
	}
	t.Logf("after SIGTERM: %d events in the log, stored offsets %v equal the high watermarks", len(events), stored)
}

// TestBrokerRestart runs the broker as its own process and kills it (-9)
// in the middle of a replay, restarting it 2 s later on its data dir: the
// gateway's producer and the pipeline's consumer must reconnect by
// themselves, requests during the outage get 503 (and are retried), and
// nothing acknowledged is lost.
func TestBrokerRestart(t *testing.T) {
	addr, brokerAddr := freeAddr(t), freeAddr(t)
	br := start(t, "broker", "broker", "--broker-addr", brokerAddr, "--data", t.TempDir())
	waitBroker(t, brokerAddr)
	start(t, "all", "all", "--http", addr, "--data", t.TempDir(),
		"--events", "kafka://"+brokerAddr+"/"+defaultTopic, "--session-timeout", "1s")
	waitHealthy(t, addr)
	v := newVerifier(t, addr, []string{brokerAddr})
	seg := segment{seed: 300, start: loadgen.DefaultStart.Add(-2 * time.Second), n: 10000}
	v.segments = append(v.segments, seg)

	const killAt, down = 4 * time.Second, 2 * time.Second
	cfg := replayConfig(addr, seg, 1000)
	cfg.Outages = []loadgen.Window{{From: killAt - 100*time.Millisecond, To: killAt + down + 15*time.Second}}
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(killAt)
		br.kill()
		time.Sleep(down)
		br.start()
	}()
	rep := runReplay(t, cfg)
	<-restarted
	t.Logf("broker down %v: %d tag requests failed and were retried", down, rep.Retries)
	if rep.Retries == 0 {
		t.Fatal("no request failed while the broker was down: the test proved nothing")
	}
	v.check()
}

// TestRebalance runs two stream workers in one group on PostgreSQL, kills
// one (-9) mid-replay, and starts it again later: the survivor must take
// over its partition, the restarted one must get a partition back, and the
// aggregates must be exact.
func TestRebalance(t *testing.T) {
	dsn := pgtest.Start(t)
	brokerAddr, gwAddr := freeAddr(t), freeAddr(t)
	events := "kafka://" + brokerAddr + "/" + defaultTopic
	start(t, "broker", "broker", "--broker-addr", brokerAddr, "--data", t.TempDir())
	waitBroker(t, brokerAddr)
	workers := make([]*proc, 2)
	workerAddrs := []string{freeAddr(t), freeAddr(t)}
	for i := range workers {
		workers[i] = start(t, "pipeline"+strconv.Itoa(i), "pipeline", "--http", workerAddrs[i],
			"--events", events, "--aggregates", dsn, "--session-timeout", "1s")
		waitHealthy(t, workerAddrs[i])
	}
	start(t, "gateway", "gateway", "--http", gwAddr, "--events", events, "--aggregates", dsn,
		"--profiles", "pebble://"+t.TempDir())
	waitHealthy(t, gwAddr)
	v := newVerifier(t, gwAddr, []string{brokerAddr})
	seg := segment{seed: 400, start: loadgen.DefaultStart.Add(-3 * time.Second), n: 15000}
	v.segments = append(v.segments, seg)

	const killAt, restartAt = 4 * time.Second, 9 * time.Second
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(killAt)
		workers[0].kill()
		time.Sleep(restartAt - killAt)
		workers[0].start()
	}()
	runReplay(t, replayConfig(gwAddr, seg, 1000))
	<-restarted
	v.check()
	if n := metricValue(t, workerAddrs[1], "allezon_pipeline_rebalances_total"); n < 2 {
		t.Errorf("the surviving worker joined %v times: it never took over", n)
	}
	if n := metricValue(t, workerAddrs[0], "allezon_pipeline_events_consumed_total"); n == 0 {
		t.Error("the restarted worker consumed nothing: it never got a partition back")
	}
}

// stallProbe is what one request saw while a backend was stalled.
type stallProbe struct {
	status     int
	retryAfter string
	took       time.Duration
}

// TestBackendStall freezes each backend of a gateway as a hung host would
// (SIGSTOP: connections stay open, nothing answers) and checks the gateway
// answers every request within its deadline with a 503 and Retry-After,
// never a 204; that the backend's circuit breaker opens, so later requests
// are refused at once; and that all of it recovers by itself once the
// backend thaws. The tags refused during the stall are then re-posted
// until accepted, and the end state is exact.
func TestBackendStall(t *testing.T) {
	pg := pgtest.Private(t)
	dsn := pg.NewDatabase(t)
	brokerAddr, gwAddr, plAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	events := "kafka://" + brokerAddr + "/" + defaultTopic
	br := start(t, "broker", "broker", "--broker-addr", brokerAddr, "--data", t.TempDir())
	waitBroker(t, brokerAddr)
	start(t, "pipeline", "pipeline", "--http", plAddr, "--events", events, "--aggregates", dsn, "--session-timeout", "1s")
	waitHealthy(t, plAddr)
	const deadline = time.Second
	start(t, "gateway", "gateway", "--http", gwAddr, "--events", events, "--aggregates", dsn,
		"--profiles", "pebble://"+t.TempDir(), "--backend-timeout", deadline.String(),
		"--breaker-failures", "5", "--breaker-cooldown", "1s")
	waitHealthy(t, gwAddr)
	v := newVerifier(t, gwAddr, []string{brokerAddr})
	seg := segment{seed: 500, start: loadgen.DefaultStart, n: 400}
	v.segments = append(v.segments, seg)
	tags := seg.tags()
	next := 0 // tags[:next] were sent at least once
	var refused []int

	send := func(n int) []stallProbe {
		probes := make([]stallProbe, n)
		parallelFirst(n, 4, func(i int) string {
			probes[i] = v.postTag(&tags[next+i])
			return ""
		})
		for i, p := range probes {
			if p.status != 204 {
				refused = append(refused, next+i)
			}
		}
		next += n
		return probes
	}
	for _, p := range send(50) {
		if p.status != 204 {
			t.Fatalf("before the stall: %d", p.status)
		}
	}

	// The event log hangs.
	if err := br.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	probes := send(100)
	if err := br.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	checkStalled(t, "events", probes, deadline)
	if s := metricValue(t, gwAddr, `allezon_breaker_state{backend="events"}`); s == 0 {
		t.Error("the event log's breaker is closed right after the stall")
	}
	nRefused := len(refused)
	recovered := v.repostUntilAccepted(tags, &refused, 30*time.Second)
	t.Logf("event log stall: %d tags refused, all accepted %v after the thaw", nRefused, recovered.Round(time.Millisecond))
	waitMetric(t, gwAddr, `allezon_breaker_state{backend="events"}`, 0)

	// The aggregates store hangs.
	if err := pg.Pause(); err != nil {
		t.Fatal(err)
	}
	var aggProbes []stallProbe
	for range 12 {
		aggProbes = append(aggProbes, v.postAggregates(seg.start))
	}
	if err := pg.Resume(); err != nil {
		t.Fatal(err)
	}
	checkStalled(t, "aggregates", aggProbes, deadline)
	waitFor(t, "aggregates answer again after the thaw", 30*time.Second, func() bool {
		return v.postAggregates(seg.start).status == 200
	})
	waitMetric(t, gwAddr, `allezon_breaker_state{backend="aggregates"}`, 0)

	send(len(tags) - next)
	v.repostUntilAccepted(tags, &refused, 30*time.Second)
	v.check()
}

// checkStalled: every answer during a stall is a 503 with Retry-After
// within the deadline (plus scheduling slack), and once the breaker opened
// the answers come at once.
func checkStalled(t *testing.T, backend string, probes []stallProbe, deadline time.Duration) {
	t.Helper()
	fast := 0
	for i, p := range probes {
		if p.status != 503 || p.retryAfter == "" {
			t.Fatalf("%s stalled: request %d got %d (Retry-After %q), want 503 with Retry-After", backend, i, p.status, p.retryAfter)
		}
		if p.took > deadline+500*time.Millisecond {
			t.Errorf("%s stalled: request %d took %v, beyond the %v deadline", backend, i, p.took, deadline)
		}
		if p.took < 50*time.Millisecond {
			fast++
		}
	}
	if fast < len(probes)/2 {
		t.Errorf("%s stalled: only %d of %d answers were immediate: the breaker did not open", backend, fast, len(probes))
	}
	t.Logf("%s stalled: %d requests, all 503 with Retry-After within the deadline, %d of them refused at once by the open breaker", backend, len(probes), fast)
}

func (v *verifier) postTag(tag *schemas.UserTag) stallProbe {
	body := schemas.AppendUserTagJSON(nil, tag)
	began := time.Now()
	resp, err := v.http.Post("http://"+v.gateway+"/user_tags", "application/json", bytes.NewReader(body))
	if err != nil {
		return stallProbe{status: -1, took: time.Since(began)}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return stallProbe{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), took: time.Since(began)}
}

func (v *verifier) postAggregates(from time.Time) stallProbe {
	q := "/aggregates?time_range=" + from.Format("2006-01-02T15:04:05") + "_" + from.Add(time.Minute).Format("2006-01-02T15:04:05") +
		"&action=VIEW&aggregates=COUNT"
	began := time.Now()
	resp, err := v.http.Post("http://"+v.gateway+q, "application/json", nil)
	if err != nil {
		return stallProbe{status: -1, took: time.Since(began)}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return stallProbe{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), took: time.Since(began)}
}

// repostUntilAccepted re-posts the refused tags, honouring Retry-After as a
// client should, until each got its 204; it returns how long that took.
func (v *verifier) repostUntilAccepted(tags []schemas.UserTag, refused *[]int, limit time.Duration) time.Duration {
	v.t.Helper()
	began := time.Now()
	for len(*refused) > 0 {
		if time.Since(began) > limit {
			v.t.Fatalf("%d tags still refused %v after the backend came back", len(*refused), limit)
		}
		var still []int
		for _, i := range *refused {
			if p := v.postTag(&tags[i]); p.status != 204 {
				still = append(still, i)
			}
		}
		*refused = still
		if len(still) > 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	return time.Since(began)
}

func waitMetric(t *testing.T, addr, series string, want float64) {
	t.Helper()
	waitFor(t, series+" = "+strconv.FormatFloat(want, 'g', -1, 64), 15*time.Second, func() bool {
		return metricValue(t, addr, series) == want
	})
}

func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
