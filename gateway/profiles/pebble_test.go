package profiles

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/allezon/allezon/schemas"
	"github.com/cockroachdb/pebble/v2"
)

func openPebbleT(tb testing.TB, dir string, o Options) *pebbleStore {
	tb.Helper()
	o.Logger = slog.New(slog.DiscardHandler)
	s, err := openPebble(dir, o)
	if err != nil {
		tb.Fatalf("open pebble: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// countKeys counts the keys Pebble holds for one cookie+action (trimmed
// overshoot included, which Read never shows).
func countKeys(t *testing.T, s *pebbleStore, cookie string, a schemas.Action) int {
	t.Helper()
	lo := appendCookiePrefix(nil, cookie, a)
	hi := appendCookiePrefix(nil, cookie, a+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		n++
	}
	return n
}

// TestPebbleTrimBound checks the storage bound of the counted trim: after
// many appends a cookie+action holds at most Keep + trimEvery keys, and a
// trim of one cookie+action leaves its neighbours alone.
func TestPebbleTrimBound(t *testing.T) {
	s := openPebbleT(t, t.TempDir(), Options{})
	const n = 1000
	tags := series("c", schemas.View, t0, 1, n)
	tags = append(tags, series("c", schemas.Buy, t0, 1, Keep/2)...)
	tags = append(tags, series("c\x00", schemas.View, t0, 1, Keep/2)...)
	appendAll(t, s, tags)
	got := countKeys(t, s, "c", schemas.View)
	t.Logf("cookie with %d appends holds %d keys (Keep %d)", n, got, Keep)
	if got < Keep || got > Keep+trimEvery {
		t.Fatalf("cookie with %d appends holds %d keys, want between %d and %d", n, got, Keep, Keep+trimEvery)
	}
	if got := countKeys(t, s, "c", schemas.Buy); got != Keep/2 {
		t.Fatalf("other action holds %d keys, want %d", got, Keep/2)
	}
	if got := countKeys(t, s, "c\x00", schemas.View); got != Keep/2 {
		t.Fatalf("other cookie holds %d keys, want %d", got, Keep/2)
	}
}

func TestPebbleClosedPing(t *testing.T) {
	s := openPebbleT(t, t.TempDir(), Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(context.Background()); err == nil {
		t.Fatal("ping of a closed store succeeded")
	}
}

func TestPebbleCanceledContext(t *testing.T) {
	s := openPebbleT(t, t.TempDir(), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g := tag{cookie: "c", timeMs: t0}
	if err := s.Append(ctx, g.userTag(), g.json()); err == nil {
		t.Fatal("append with a canceled context succeeded")
	}
	if _, err := s.Read(ctx, "c", everything, Keep); err == nil {
		t.Fatal("read with a canceled context succeeded")
	}
}

const crashDirEnv = "ALLEZON_PROFILES_CRASH_DIR"

// crashTag is the i-th tag the crash child appends: 64 cookies, so each
// holds far fewer than Keep tags and nothing acknowledged is trimmed.
func crashTag(i int) tag {
	return tag{cookie: "crash" + strconv.Itoa(i%64), action: schemas.Action(i / 64 % 2), timeMs: t0 + int64(i), n: i}
}

// TestPebbleCrashChild is the subprocess of TestPebbleCrashKeepsAcknowledged:
// it appends tags from 8 goroutines and prints "ack <i>" once Append(i)
// has returned, until it is killed.
func TestPebbleCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper of TestPebbleCrashKeepsAcknowledged; runs only as its subprocess")
	}
	s, err := openPebble(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= 64*Keep/2 {
					return // the parent should have killed us long before
				}
				g := crashTag(i)
				if err := s.Append(context.Background(), g.userTag(), g.json()); err != nil {
					fmt.Fprintf(os.Stdout, "error %v\n", err)
					return
				}
				fmt.Fprintf(os.Stdout, "ack %d\n", i) // one write(2): lands whole in the pipe
			}
		})
	}
	wg.Wait()
}

// TestPebbleCrashKeepsAcknowledged kills a process that is appending with
// SIGKILL and checks that every append it acknowledged is in the store.
func TestPebbleCrashKeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a subprocess")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPebbleCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const killAfter = 300
	var acked []int
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "ack "); ok {
			i, err := strconv.Atoi(rest)
			if err != nil {
				t.Fatalf("bad line %q", line)
			}
			acked = append(acked, i)
		} else if strings.HasPrefix(line, "error ") {
			t.Fatalf("child: %s", line)
		}
		if !killed && len(acked) >= killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("kill child: %v", err)
			}
			killed = true // keep reading: acks already in the pipe count too
		}
	}
	werr := cmd.Wait()
	if !killed {
		t.Fatalf("child ended before it was killed (%d acks): %v", len(acked), werr)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v", werr)
	}

	s := openPebbleT(t, dir, Options{})
	stored := map[string]bool{}
	maxAck := 0
	for c := range 64 {
		cookie := "crash" + strconv.Itoa(c)
		p := mustRead(t, s, cookie, everything, Keep)
		for _, l := range [][][]byte{p.Views, p.Buys} {
			for _, b := range l {
				stored[string(b)] = true
			}
		}
	}
	for _, i := range acked {
		maxAck = max(maxAck, i)
		if !stored[string(crashTag(i).json())] {
			t.Errorf("acknowledged tag %d lost", i)
		}
	}
	t.Logf("killed after %d acks (highest index %d); %d tags found after reopen", len(acked), maxAck, len(stored))
}

// BenchmarkAppend measures synced appends of distinct tags to many cookies
// from 1 goroutine and from ~64 (SetParallelism(32) on 2 CPUs), with and
// without a WAL minimum sync interval.
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name        string
		parallelism int
		minSync     time.Duration
	}{
		{"serial", 0, 0},
		{"parallel64", 32, 0},
		{"parallel64-minsync500us", 32, 500 * time.Microsecond},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := openPebbleT(b, b.TempDir(), Options{PebbleWALMinSyncInterval: bc.minSync})
			var seq atomic.Int64
			appendOne := func(tagJSON []byte) []byte {
				i := seq.Add(1)
				g := tag{cookie: "cookie-" + strconv.FormatInt(i%100000, 10), action: schemas.Action(i % 2), timeMs: t0 + i, n: int(i)}
				tagJSON = append(tagJSON[:0], g.json()...)
				tagJSON = append(tagJSON, benchPadding...)
				if err := s.Append(context.Background(), g.userTag(), tagJSON); err != nil {
					b.Fatal(err)
				}
				return tagJSON
			}
			b.ReportAllocs()
			start := time.Now()
			if bc.parallelism == 0 {
				var buf []byte
				for b.Loop() {
					buf = appendOne(buf)
				}
			} else {
				b.SetParallelism(bc.parallelism)
				b.RunParallel(func(pb *testing.PB) {
					var buf []byte
					for pb.Next() {
						buf = appendOne(buf)
					}
				})
			}
			b.ReportMetric(float64(seq.Load())/time.Since(start).Seconds(), "appends/s")
		})
	}
}

// benchPadding brings a benchmark tag to about the size of a real one.
var benchPadding = []byte(`                                                                                                                                          `)

// BenchmarkRead reads a cookie holding 200 views and 200 buys, limit 200,
// over the full range: the worst /user_profiles read. "memtable" reads
// fresh data, "flushed" the same data from sstables (in the block cache).
func BenchmarkRead(b *testing.B) {
	for _, flushed := range []bool{false, true} {
		name := "memtable"
		if flushed {
			name = "flushed"
		}
		b.Run(name, func(b *testing.B) {
			s := openPebbleT(b, b.TempDir(), Options{})
			tags := append(series("reader", schemas.View, t0, 1, Keep), series("reader", schemas.Buy, t0, 1, Keep)...)
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Go(func() {
					for i := w; i < len(tags); i += 16 {
						js := append(tags[i].json(), benchPadding...)
						if err := s.Append(context.Background(), tags[i].userTag(), js); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if flushed {
				if err := s.db.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			r := schemas.TimeRange{From: t0 - 1000, To: t0 + 1000}
			b.ReportAllocs()
			for b.Loop() {
				p, err := s.Read(context.Background(), "reader", r, Keep)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Views) != Keep || len(p.Buys) != Keep {
					b.Fatalf("read %d views, %d buys", len(p.Views), len(p.Buys))
				}
			}
		})
	}
}
