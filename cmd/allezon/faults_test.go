package main

import (
	"context"
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
		go func() {
			time.Sleep(killAt)
			p.kill()
			p.start()
		}()
		rep := runReplay(t, cfg)
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
	go func() {
		time.Sleep(killAt)
		br.kill()
		time.Sleep(down)
		br.start()
	}()
	rep := runReplay(t, cfg)
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
	go func() {
		time.Sleep(killAt)
		workers[0].kill()
		time.Sleep(restartAt - killAt)
		workers[0].start()
	}()
	runReplay(t, replayConfig(gwAddr, seg, 1000))
	v.check()
	if n := metricValue(t, workerAddrs[1], "allezon_pipeline_rebalances_total"); n < 2 {
		t.Errorf("the surviving worker joined %v times: it never took over", n)
	}
	if n := metricValue(t, workerAddrs[0], "allezon_pipeline_events_consumed_total"); n == 0 {
		t.Error("the restarted worker consumed nothing: it never got a partition back")
	}
}
