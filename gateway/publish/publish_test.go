package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/allezon/allezon/broker"
	"github.com/allezon/allezon/broker/brokertest"
)

const testTopic = "publish-test"

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newPublisher(t testing.TB, addrs []string, timeout time.Duration) *Publisher {
	t.Helper()
	p, err := New(Config{Brokers: addrs, Topic: testTopic, Timeout: timeout, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("new publisher: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func keyOf(i int) string { return "key-" + strconv.Itoa(i%503) }

func TestConcurrentPublishesLandExactlyOnceOnTheKeysPartition(t *testing.T) {
	const (
		workers  = 64
		messages = 20000
	)
	b := brokertest.Start(t, broker.Config{Topic: testTopic})
	p := newPublisher(t, b.Addrs(), 0)

	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			// One buffer per worker, overwritten right after each
			// Publish: the publisher must have copied it.
			var key, value []byte
			for {
				i := int(next.Add(1)) - 1
				if i >= messages {
					return
				}
				key = append(key[:0], keyOf(i)...)
				value = strconv.AppendInt(append(value[:0], "value-"...), int64(i), 10)
				if err := p.Publish(context.Background(), key, value); err != nil {
					errs <- fmt.Errorf("publish %d: %w", i, err)
					return
				}
				clear(key)
				clear(value)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	hash := sarama.NewHashPartitioner(testTopic)
	seen := make([]bool, messages)
	records := brokertest.ReadAll(t, b.Addrs(), testTopic)
	for _, r := range records {
		i, err := strconv.Atoi(r.Value[len("value-"):])
		if err != nil || i < 0 || i >= messages {
			t.Fatalf("unexpected value %q at %d/%d", r.Value, r.Partition, r.Offset)
		}
		if seen[i] {
			t.Fatalf("message %d is in the log twice", i)
		}
		seen[i] = true
		if r.Key != keyOf(i) {
			t.Fatalf("message %d has key %q, want %q", i, r.Key, keyOf(i))
		}
		want, err := hash.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(r.Key)}, broker.DefaultPartitions)
		if err != nil {
			t.Fatal(err)
		}
		if r.Partition != want {
			t.Fatalf("message %d with key %q on partition %d, the hash partitioner chooses %d", i, r.Key, r.Partition, want)
		}
	}
	if len(records) != messages {
		t.Fatalf("read %d messages, want %d", len(records), messages)
	}
}

func TestPublishWithEndedContextReturnsPromptly(t *testing.T) {
	b := brokertest.Start(t, broker.Config{Topic: testTopic})
	p := newPublisher(t, b.Addrs(), 0)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	tests := []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"deadline passed", expired, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := p.Publish(tc.ctx, []byte("k"), []byte("v"))
			if !errors.Is(err, ErrTimeout) || !errors.Is(err, tc.want) {
				t.Fatalf("Publish = %v, want ErrTimeout wrapping %v", err, tc.want)
			}
			if d := time.Since(start); d > 50*time.Millisecond {
				t.Fatalf("Publish with an ended context took %v", d)
			}
		})
	}
	if err := p.Publish(context.Background(), []byte("k"), []byte("v")); err != nil {
		t.Fatalf("Publish after the ended-context calls: %v", err)
	}
}

// TestBrokerOutage stops the broker under a running publisher and starts
// it again on the same dir and address.
func TestBrokerOutage(t *testing.T) {
	dir := t.TempDir()
	b, err := broker.Start(broker.Config{Dir: dir, Topic: testTopic, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	addrs := b.Addrs()
	const timeout = time.Second
	p := newPublisher(t, addrs, timeout)
	ctx := context.Background()
	if err := p.Publish(ctx, []byte("k"), []byte("before")); err != nil {
		t.Fatalf("Publish before the outage: %v", err)
	}

	b.Close()
	// Publish for longer than Timeout while the broker is down, so the
	// watchdog sees a failing producer and tries (and fails) to replace it.
	outageEnd := time.Now().Add(5 * timeout / 2)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 8 {
		wg.Go(func() {
			for j := 0; time.Now().Before(outageEnd); j++ {
				start := time.Now()
				err := p.Publish(ctx, []byte("k"), []byte(fmt.Sprintf("during-%d-%d", i, j)))
				d := time.Since(start)
				if err == nil {
					t.Errorf("Publish succeeded with the broker down")
					return
				}
				failed.Add(1)
				if d > timeout+500*time.Millisecond {
					t.Errorf("Publish took %v with the broker down, Timeout is %v: %v", d, timeout, err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d publishes failed during the outage", failed.Load())
	if err := p.Ping(ctx); err == nil {
		t.Errorf("Ping succeeded with the broker down")
	}

	b = brokertest.Start(t, broker.Config{Dir: dir, Addr: addrs[0], Topic: testTopic})
	start := time.Now()
	for {
		err := p.Publish(ctx, []byte("k"), []byte("after"))
		if err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("Publish still fails 20 s after the broker came back: %v", err)
		}
	}
	t.Logf("publishing again %v after the restart", time.Since(start))
	if err := p.Ping(ctx); err != nil {
		t.Errorf("Ping after the restart: %v", err)
	}
	var got []string
	for _, r := range brokertest.ReadAll(t, b.Addrs(), testTopic) {
		got = append(got, r.Value)
	}
	t.Logf("log after the outage: %v", got)
	if len(got) < 2 || got[0] != "before" || got[len(got)-1] != "after" {
		t.Fatalf("log after the outage = %v, want before, [timed-out ones], after", got)
	}
}

func TestCloseFlushesInFlightAndRejectsLaterPublishes(t *testing.T) {
	b := brokertest.Start(t, broker.Config{Topic: testTopic})
	p, err := New(Config{Brokers: b.Addrs(), Topic: testTopic, FlushFrequency: 50 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	const n = 200
	var acked atomic.Int64
	var wg sync.WaitGroup
	var started sync.WaitGroup
	started.Add(n)
	for i := range n {
		wg.Go(func() {
			started.Done()
			err := p.Publish(context.Background(), []byte("k"), []byte(strconv.Itoa(i)))
			switch {
			case err == nil:
				acked.Add(1)
			case !errors.Is(err, ErrClosed):
				t.Errorf("Publish during Close: %v", err)
			}
		})
	}
	started.Wait()
	time.Sleep(10 * time.Millisecond) // within the 50ms flush window
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	if err := p.Publish(context.Background(), []byte("k"), []byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
	if err := p.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close = %v, want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := len(brokertest.ReadAll(t, b.Addrs(), testTopic)); int64(got) != acked.Load() {
		t.Fatalf("%d messages in the log, %d acknowledged", got, acked.Load())
	}
	t.Logf("%d of %d acknowledged by Close's flush", acked.Load(), n)
}

func TestNewRejects(t *testing.T) {
	// A port nothing listens on: bind one and close it.
	b := brokertest.Start(t, broker.Config{})
	dead := b.Addrs()
	b.Close()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no brokers", Config{Topic: testTopic}},
		{"no topic", Config{Brokers: []string{"127.0.0.1:9092"}}},
		{"unreachable broker", Config{Brokers: dead, Topic: testTopic, Timeout: 200 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = quietLogger()
			if p, err := New(tc.cfg); err == nil {
				p.Close()
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestPendingFillCopiesKeyAndValue(t *testing.T) {
	tests := []struct {
		name       string
		key, value []byte
	}{
		{"both", []byte("key"), []byte("value")},
		{"nil key is a null key", nil, []byte("value")},
		{"empty key stays empty, not null", []byte{}, []byte("v")},
		{"nil value is a null value", []byte("k"), nil},
	}
	pm := newPending()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, value := clone(tc.key), clone(tc.value)
			pm.fill(testTopic, key, value)
			clear(key)
			clear(value)
			check := func(what string, enc interface{ Encode() ([]byte, error) }, want []byte) {
				if want == nil {
					if enc != nil {
						t.Errorf("%s = %v, want nil", what, enc)
					}
					return
				}
				got, _ := enc.Encode()
				if string(got) != string(want) {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			var k, v interface{ Encode() ([]byte, error) }
			if pm.msg.Key != nil {
				k = pm.msg.Key
			}
			if pm.msg.Value != nil {
				v = pm.msg.Value
			}
			check("key", k, tc.key)
			check("value", v, tc.value)
			if pm.msg.Topic != testTopic || pm.msg.Metadata != any(pm) {
				t.Errorf("topic %q metadata %v", pm.msg.Topic, pm.msg.Metadata)
			}
		})
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// TestPendingIsPooled checks the publisher's own per-message work, taking
// a pooled message, copying key and value into it, recycling it,
// allocates nothing.
func TestPendingIsPooled(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	p := &Publisher{}
	p.pending.New = func() any { return newPending() }
	key, value := []byte("key"), make([]byte, 200)
	p.putPending(p.getPending())
	allocs := testing.AllocsPerRun(100, func() {
		pm := p.getPending()
		pm.fill(testTopic, key, value)
		pm.timer.Reset(time.Hour)
		pm.timer.Stop()
		p.putPending(pm)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per pooled message, want 0", allocs)
	}
}

// BenchmarkPublishParallel publishes 200-byte messages from 64 concurrent
// callers, each waiting for its ack as the gateway's handlers do, with no
// linger (the default) and with a 5ms one.
func BenchmarkPublishParallel(b *testing.B) {
	br := brokertest.Start(b, broker.Config{Topic: testTopic})
	for _, linger := range []time.Duration{0, 5 * time.Millisecond} {
		b.Run("linger="+linger.String(), func(b *testing.B) {
			p, err := New(Config{Brokers: br.Addrs(), Topic: testTopic, FlushFrequency: linger, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			value := make([]byte, 200)
			b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				key := []byte("bench-key-000")
				ctx := context.Background()
				for i := 0; pb.Next(); i++ {
					key[len(key)-1] = byte('0' + i%10)
					if err := p.Publish(ctx, key, value); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkPendingCycle compares the publisher's own per-message work with
// a pooled pending (the implementation) and with a fresh one per message
// (a new message, buffer, result channel and timer every call).
func BenchmarkPendingCycle(b *testing.B) {
	key, value := []byte("key"), make([]byte, 200)
	b.Run("pooled", func(b *testing.B) {
		p := &Publisher{}
		p.pending.New = func() any { return newPending() }
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				pm := p.getPending()
				pm.fill(testTopic, key, value)
				pm.timer.Reset(time.Hour)
				pm.result <- nil
				<-pm.result
				pm.timer.Stop()
				p.putPending(pm)
			}
		})
	})
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				pm := newPending()
				pm.fill(testTopic, key, value)
				pm.timer.Reset(time.Hour)
				pm.result <- nil
				<-pm.result
				pm.timer.Stop()
			}
		})
	})
}
