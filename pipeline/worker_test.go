package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/allezon/allezon/broker/brokertest"
	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/schemas"
)

// These tests run the worker against the real in-process Kafka broker
// (kfake) and the real Pebble aggregates store. Where a test injects a fault
// or watches commits, it wraps the real store (faultySink) and delegates to
// it: every count checked comes out of Pebble.

const (
	testTopic = "events"
	testDLQ   = testTopic + "-dlq"
)

// Dimension values of the generated tags: few, so every filter combination
// of a query matches many tags.
var (
	testOrigins    = []string{"o0", "o1", "o2", "o3", "o4"}
	testBrands     = []string{"b0", "b1", "b2", "b3"}
	testCategories = []string{"c0", "c1", "c2"}
)

// t0 is the event time of the first generated tag: a few seconds before a
// minute boundary, so the first minute is partial.
var t0 = time.Date(2022, 3, 22, 12, 14, 55, 0, time.UTC).UnixMilli()

// genTags makes n deterministic tags starting at event time startMs and
// advancing stepMs per tag, with prices spread over the whole int32 range
// now and then so that 64-bit sums matter.
func genTags(seed uint64, n int, startMs, stepMs int64) []schemas.UserTag {
	r := rand.New(rand.NewPCG(seed, 42))
	tags := make([]schemas.UserTag, n)
	for i := range tags {
		price := int32(r.IntN(10_000))
		if r.IntN(20) == 0 {
			price = int32(r.Uint32())
		}
		tags[i] = schemas.UserTag{
			TimeMs:     startMs + int64(i)*stepMs,
			Cookie:     fmt.Sprintf("cookie-%d", r.IntN(500)),
			Country:    "PL",
			Device:     schemas.Device(r.IntN(3)),
			Action:     schemas.Action(r.IntN(schemas.NumActions)),
			Origin:     testOrigins[r.IntN(len(testOrigins))],
			ProductID:  fmt.Sprint(r.IntN(1000)),
			BrandID:    testBrands[r.IntN(len(testBrands))],
			CategoryID: testCategories[r.IntN(len(testCategories))],
			Price:      price,
		}
	}
	return tags
}

// fixture is one broker, one store, one producer, and the record of every
// event produced: what the store must end up holding.
type fixture struct {
	t        *testing.T
	addrs    []string
	store    aggregates.Store
	producer sarama.SyncProducer
	// restartBroker closes the broker and, after down, starts it again
	// with the same options (with a data dir and fixed port: the same log).
	restartBroker func(down time.Duration)

	mu sync.Mutex
	// tags are the valid tags produced; at[p][offset] is the tag at that
	// offset of partition p (absent: an undecodable event).
	tags []schemas.UserTag
	at   map[int32]map[int64]schemas.UserTag
	// end is each partition's high watermark: the next offset the store
	// must reach.
	end map[int32]int64
}

func newFixture(t *testing.T, opts ...kfake.Opt) *fixture {
	t.Helper()
	opts = append([]kfake.Opt{kfake.SeedTopics(2, testTopic), kfake.SeedTopics(1, testDLQ), kfake.GroupMinSessionTimeout(100 * time.Millisecond)}, opts...)
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	f := &fixture{t: t, addrs: cluster.ListenAddrs(), at: map[int32]map[int64]schemas.UserTag{}, end: map[int32]int64{}}
	f.restartBroker = func(down time.Duration) {
		cluster.Close()
		time.Sleep(down)
		if cluster, err = kfake.NewCluster(opts...); err != nil {
			t.Fatalf("restart kfake: %v", err)
		}
	}
	t.Cleanup(func() { cluster.Close() })
	store, err := aggregates.Open(t.Context(), "pebble://"+t.TempDir(), aggregates.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { store.Close() })

	pc := sarama.NewConfig()
	pc.Version = sarama.V3_6_0_0
	pc.Producer.RequiredAcks = sarama.WaitForAll
	pc.Producer.Return.Successes = true
	pc.Producer.Flush.Frequency = 0
	pc.Producer.Flush.Messages = 0
	producer, err := sarama.NewSyncProducer(cluster.ListenAddrs(), pc)
	if err != nil {
		t.Fatalf("start producer: %v", err)
	}
	t.Cleanup(func() { producer.Close() })
	f.store, f.producer = store, producer
	return f
}

// produce sends tags as the gateway does (Avro key and value) and records
// where each landed. garbage events, with a value that does not decode,
// are interleaved every garbageEvery tags when it is > 0.
func (f *fixture) produce(tags []schemas.UserTag, garbageEvery int) {
	f.t.Helper()
	var msgs []*sarama.ProducerMessage
	var idx []int // index into tags, -1 for garbage
	for i := range tags {
		key, err := schemas.AppendEventKey(nil, &tags[i])
		if err != nil {
			f.t.Fatalf("encode key: %v", err)
		}
		val, err := schemas.AppendEventValue(nil, &tags[i])
		if err != nil {
			f.t.Fatalf("encode value: %v", err)
		}
		msgs = append(msgs, &sarama.ProducerMessage{Topic: testTopic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(val)})
		idx = append(idx, i)
		if garbageEvery > 0 && i%garbageEvery == 0 {
			msgs = append(msgs, &sarama.ProducerMessage{Topic: testTopic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(val[:len(val)/2])})
			idx = append(idx, -1)
		}
	}
	if err := f.producer.SendMessages(msgs); err != nil {
		f.t.Fatalf("produce %d events: %v", len(msgs), err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for j, m := range msgs {
		if f.at[m.Partition] == nil {
			f.at[m.Partition] = map[int64]schemas.UserTag{}
		}
		if i := idx[j]; i >= 0 {
			f.tags = append(f.tags, tags[i])
			f.at[m.Partition][m.Offset] = tags[i]
		}
		f.end[m.Partition] = max(f.end[m.Partition], m.Offset+1)
	}
}

// produceSlowly produces tags in chunks, pausing between them, so that a
// worker consumes while the stream goes on; it returns when all are sent.
func (f *fixture) produceSlowly(tags []schemas.UserTag, chunk int, pause time.Duration) {
	for i := 0; i < len(tags); i += chunk {
		f.produce(tags[i:min(i+chunk, len(tags))], 0)
		time.Sleep(pause)
	}
}

// produceUntil produces tags in chunks, pausing between them, until stop
// is closed or the tags run out.
func (f *fixture) produceUntil(stop <-chan struct{}, tags []schemas.UserTag, chunk int, pause time.Duration) {
	for i := 0; i < len(tags); i += chunk {
		select {
		case <-stop:
			return
		default:
		}
		f.produce(tags[i:min(i+chunk, len(tags))], 0)
		time.Sleep(pause)
	}
}

// deltasOf sums the tags at offsets [from, to) of partition p.
func (f *fixture) deltasOf(p int32, from, to int64) map[schemas.Cell]schemas.Totals {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := map[schemas.Cell]schemas.Totals{}
	for o := from; o < to; o++ {
		if tag, ok := f.at[p][o]; ok {
			c := schemas.CellOf(&tag)
			v := d[c]
			v.Add(schemas.Totals{Count: 1, SumPrice: int64(tag.Price)})
			d[c] = v
		}
	}
	return d
}

func (f *fixture) config(group string) Config {
	return Config{
		Brokers:           f.addrs,
		Topic:             testTopic,
		Group:             group,
		FlushInterval:     100 * time.Millisecond,
		SessionTimeout:    time.Second,
		HeartbeatInterval: 300 * time.Millisecond,
		Logger:            testLogger(f.t),
	}
}

// start runs a worker until the returned stop is called (or the test ends);
// stop checks that Run returns nil, promptly.
func (f *fixture) start(cfg Config, sink Sink) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, sink) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					f.t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(15 * time.Second):
				f.t.Errorf("Run did not return within 15s of cancel")
			}
		})
	}
	f.t.Cleanup(stop)
	return stop
}

// waitCommitted waits until the store's offsets reach the end of every
// partition produced to, i.e. every event produced is committed.
func (f *fixture) waitCommitted(timeout time.Duration) {
	f.t.Helper()
	f.mu.Lock()
	want := make(map[int32]int64, len(f.end))
	for p, e := range f.end {
		want[p] = e
	}
	f.mu.Unlock()
	deadline := time.Now().Add(timeout)
	var got map[int32]int64
	for time.Now().Before(deadline) {
		var err error
		got, err = f.store.Offsets(context.Background(), testTopic)
		if err != nil {
			f.t.Fatalf("read offsets: %v", err)
		}
		caught := true
		for p, e := range want {
			if got[p] != e {
				caught = false
			}
		}
		if caught {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatalf("stored offsets %v did not reach %v within %v", got, want, timeout)
}

// waitOffsets waits until cond holds of the stored offsets.
func (f *fixture) waitOffsets(timeout time.Duration, what string, cond func(map[int32]int64) bool) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		got, err := f.store.Offsets(context.Background(), testTopic)
		if err != nil {
			f.t.Fatalf("read offsets: %v", err)
		}
		if cond(got) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.t.Fatalf("stored offsets: %s: not within %v", what, timeout)
}

// reference answers q from the produced tags, as the SPEC's SQL would.
func reference(tags []schemas.UserTag, q *schemas.AggregateQuery) []schemas.Totals {
	out := make([]schemas.Totals, q.Minutes())
	for i := range tags {
		c := schemas.CellOf(&tags[i])
		if q.Matches(&c) {
			out[c.Minute-q.FromMinute].Add(schemas.Totals{Count: 1, SumPrice: int64(tags[i].Price)})
		}
	}
	return out
}

// filterQueries lists a query for every filter combination the gateway can
// send, with every value of the filtered dimensions, for both actions.
func filterQueries(from, to int64) []schemas.AggregateQuery {
	var qs []schemas.AggregateQuery
	for a := range schemas.Action(schemas.NumActions) {
		for filter := range schemas.AllDims + 1 {
			origins, brands, cats := []string{""}, []string{""}, []string{""}
			if filter&schemas.DimOrigin != 0 {
				origins = testOrigins
			}
			if filter&schemas.DimBrand != 0 {
				brands = testBrands
			}
			if filter&schemas.DimCategory != 0 {
				cats = testCategories
			}
			for _, o := range origins {
				for _, b := range brands {
					for _, c := range cats {
						qs = append(qs, schemas.AggregateQuery{Action: a, FromMinute: from, ToMinute: to, Filter: filter, Origin: o, BrandID: b, CategoryID: c})
					}
				}
			}
		}
	}
	return qs
}

// checkExact compares the store with the reference for every minute of the
// data (plus an empty minute on each side), for every filter combination,
// in windows of at most 10 minutes as the SPEC allows. minMinute drops the
// minutes before it from the comparison (retention).
func (f *fixture) checkExact(minMinute int64) {
	f.t.Helper()
	f.mu.Lock()
	tags := append([]schemas.UserTag(nil), f.tags...)
	f.mu.Unlock()
	lo, hi := schemas.MinuteOf(tags[0].TimeMs), schemas.MinuteOf(tags[0].TimeMs)
	for i := range tags {
		m := schemas.MinuteOf(tags[i].TimeMs)
		lo, hi = min(lo, m), max(hi, m)
	}
	lo = max(lo-1, minMinute)
	hi += 2
	mismatches := 0
	for from := lo; from < hi; from += 10 {
		for _, q := range filterQueries(from, min(from+10, hi)) {
			got, err := f.store.Query(context.Background(), &q)
			if err != nil {
				f.t.Fatalf("query %+v: %v", q, err)
			}
			want := reference(tags, &q)
			if len(got) != len(want) {
				f.t.Fatalf("query %+v: %d rows, want %d", q, len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					mismatches++
					if mismatches <= 5 {
						f.t.Errorf("query %+v minute %d: got %+v, want %+v", q, q.FromMinute+int64(i), got[i], want[i])
					}
				}
			}
		}
	}
	if mismatches > 5 {
		f.t.Errorf("... %d mismatching rows in all", mismatches)
	}
}

// counterValue reads a counter's current value (the metrics are shared by
// every test in the package, so tests compare differences).
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// faultySink wraps the real store to watch and disturb the worker's calls:
// it records which partitions each commit covered and can inject faults.
type faultySink struct {
	aggregates.Store

	// failOffsets makes this many Offsets calls fail.
	failOffsets atomic.Int32
	// applyThenFail makes the next commit apply and then report an error
	// (an ambiguous failure).
	applyThenFail atomic.Bool

	mu sync.Mutex
	// beforeCommit, if set, runs before each Commit is passed on; its
	// error, if any, is returned instead.
	beforeCommit func(offsets []aggregates.PartitionOffset) error
	committed    map[int32]int // successful commits per partition
	fenced       int
}

func newFaultySink(s aggregates.Store) *faultySink {
	return &faultySink{Store: s, committed: map[int32]int{}}
}

var errInjected = errors.New("injected store failure")

func (s *faultySink) Offsets(ctx context.Context, topic string) (map[int32]int64, error) {
	if s.failOffsets.Add(-1) >= 0 {
		return nil, errInjected
	}
	return s.Store.Offsets(ctx, topic)
}

func (s *faultySink) Commit(ctx context.Context, deltas map[schemas.Cell]schemas.Totals, offsets []aggregates.PartitionOffset) error {
	s.mu.Lock()
	before := s.beforeCommit
	s.mu.Unlock()
	if before != nil {
		if err := before(offsets); err != nil {
			return err
		}
	}
	err := s.Store.Commit(ctx, deltas, offsets)
	s.mu.Lock()
	defer s.mu.Unlock()
	if errors.Is(err, aggregates.ErrFenced) {
		s.fenced++
	}
	if err != nil {
		return err
	}
	for _, o := range offsets {
		s.committed[o.Partition]++
	}
	if s.applyThenFail.CompareAndSwap(true, false) {
		return errInjected
	}
	return nil
}

func (s *faultySink) setBeforeCommit(fn func([]aggregates.PartitionOffset) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeCommit = fn
}

func (s *faultySink) fencedCommits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fenced
}

func (s *faultySink) commitsOf(p int32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed[p]
}

func TestRunCountsEveryTagOnce(t *testing.T) {
	f := newFixture(t)
	tags := genTags(1, 4000, t0, 50) // 200 s of event time: 5 minutes
	f.produce(tags[:3000], 0)        // a backlog before the worker starts...
	commitsBefore := counterValue(commits)
	consumedBefore := counterValue(eventsConsumed)

	stop := f.start(f.config("g-exact"), f.store)
	f.produce(tags[3000:], 0) // ...and more while it runs
	f.waitCommitted(20 * time.Second)
	f.checkExact(0)
	stop()

	if got := counterValue(eventsConsumed) - consumedBefore; got != 4000 {
		t.Errorf("events consumed metric rose by %v, want 4000", got)
	}
	if counterValue(commits) == commitsBefore {
		t.Error("commits metric did not move")
	}
	// Starting again over the same store finds nothing new to count.
	stop = f.start(f.config("g-exact"), f.store)
	time.Sleep(time.Second)
	stop()
	f.checkExact(0)
}

func TestRunRestartsMidStreamExactly(t *testing.T) {
	f := newFixture(t)
	sink := newFaultySink(f.store)
	cfg := f.config("g-restart")
	commits := func() int { return sink.commitsOf(0) + sink.commitsOf(1) }
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 15s: %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// The stream goes on through every phase of the test.
	stopProducing := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		f.produceUntil(stopProducing, genTags(2, 40_000, t0, 20), 100, 40*time.Millisecond)
	}()

	// 1. A graceful stop mid-stream: the last flush commits what was read.
	stop := f.start(cfg, sink)
	waitFor("first commit", func() bool { return commits() > 0 })
	stop()

	// 2. A crash mid-stream: after some commits, no commit reaches the
	// store any more (the process died with its sums in memory).
	var crashed atomic.Bool
	var lost atomic.Int32
	sink.setBeforeCommit(func([]aggregates.PartitionOffset) error {
		if crashed.Load() {
			lost.Add(1)
			return errInjected
		}
		return nil
	})
	before := commits()
	stop = f.start(cfg, sink)
	waitFor("a commit after the restart", func() bool { return commits() > before })
	crashed.Store(true)
	waitFor("a lost commit", func() bool { return lost.Load() > 0 })
	stop()
	crashed.Store(false)

	// 3. Start again and let it finish the stream.
	before = commits()
	stop = f.start(cfg, sink)
	waitFor("a commit after the crash", func() bool { return commits() > before })
	close(stopProducing)
	<-produced
	f.waitCommitted(20 * time.Second)
	stop()
	f.checkExact(0)
}

func TestTwoWorkersFailOverExactly(t *testing.T) {
	f := newFixture(t)
	sinkA, sinkB := newFaultySink(f.store), newFaultySink(f.store)
	cfg := f.config("g-two")
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 15s: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	commitsOf := func(s *faultySink) [2]int { return [2]int{s.commitsOf(0), s.commitsOf(1)} }

	// The stream goes on through every phase of the test.
	stopProducing := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		f.produceUntil(stopProducing, genTags(3, 40_000, t0, 20), 100, 50*time.Millisecond)
	}()

	stopA := f.start(cfg, sinkA)
	stopB := f.start(cfg, sinkB)
	waitFor("both workers commit", func() bool {
		a, b := commitsOf(sinkA), commitsOf(sinkB)
		return a[0]+a[1] > 0 && b[0]+b[1] > 0
	})

	// A stops mid-stream: B takes over A's partition and commits to both.
	stopA()
	before := commitsOf(sinkB)
	waitFor("B commits to both partitions after A stopped", func() bool {
		now := commitsOf(sinkB)
		return now[0] > before[0] && now[1] > before[1]
	})

	// A comes back and gets a partition again.
	before = commitsOf(sinkA)
	stopA = f.start(cfg, sinkA)
	waitFor("A commits again", func() bool {
		now := commitsOf(sinkA)
		return now[0]+now[1] > before[0]+before[1]
	})

	close(stopProducing)
	<-produced
	f.waitCommitted(20 * time.Second)
	stopA()
	stopB()
	f.checkExact(0)
}

func TestRunSurvivesBrokerRestart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	f := newFixture(t, kfake.DataDir(t.TempDir()), kfake.Ports(port))
	tags := genTags(8, 3000, t0, 50)
	errsBefore := counterValue(consumerErrors)

	f.produce(tags[:1500], 0)
	stop := f.start(f.config("g-broker"), f.store)
	f.waitCommitted(20 * time.Second)
	f.restartBroker(2 * time.Second)
	f.produce(tags[1500:], 0)
	f.waitCommitted(30 * time.Second)
	stop()
	f.checkExact(0)
	if counterValue(consumerErrors) == errsBefore {
		t.Error("consumer errors metric did not move across a broker restart")
	}
}

func TestRunResumesAfterFencedCommit(t *testing.T) {
	f := newFixture(t)
	tags := genTags(4, 4000, t0, 40)
	sink := newFaultySink(f.store)
	fencedBefore := counterValue(commitErrors.WithLabelValues(reasonFenced))

	// A zombie (a worker that owned the partition before) commits the first
	// half of the worker's next interval behind its back: the worker's
	// commit is fenced, and it must resume after the zombie's offset.
	var zombieDone atomic.Bool
	sink.setBeforeCommit(func(offs []aggregates.PartitionOffset) error {
		o := offs[0]
		if o.Prev < 0 || o.Next-o.Prev < 2 || !zombieDone.CompareAndSwap(false, true) {
			return nil
		}
		mid := o.Prev + (o.Next-o.Prev)/2
		zombie := []aggregates.PartitionOffset{{Topic: o.Topic, Partition: o.Partition, Prev: o.Prev, Next: mid}}
		if err := f.store.Commit(context.Background(), f.deltasOf(o.Partition, o.Prev, mid), zombie); err != nil {
			t.Errorf("zombie commit: %v", err)
		}
		return nil
	})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		f.produceSlowly(tags, 200, 40*time.Millisecond)
	}()
	stop := f.start(f.config("g-fenced"), sink)
	<-produced
	f.waitCommitted(20 * time.Second)
	stop()
	if !zombieDone.Load() {
		t.Fatal("the zombie never committed")
	}
	if sink.fencedCommits() == 0 {
		t.Error("no commit of the worker was fenced")
	}
	if got := counterValue(commitErrors.WithLabelValues(reasonFenced)) - fencedBefore; got < 1 {
		t.Errorf("fenced commit errors metric rose by %v, want >= 1", got)
	}
	f.checkExact(0)
}

func TestRunSurvivesStoreFailures(t *testing.T) {
	f := newFixture(t)
	tags := genTags(5, 4000, t0, 40)
	sink := newFaultySink(f.store)
	storeErrsBefore := counterValue(commitErrors.WithLabelValues(reasonStore))
	offsetErrsBefore := counterValue(sinkErrors.WithLabelValues("offsets"))

	// The store is down when the worker starts: Setup must wait for it.
	sink.failOffsets.Store(3)
	f.produce(tags[:1000], 0)
	stop := f.start(f.config("g-faults"), sink)
	f.waitOffsets(15*time.Second, "first commit", func(o map[int32]int64) bool { return len(o) > 0 })

	// A commit that applies but reports a failure (the connection broke
	// during COMMIT): the worker must not count those events again.
	sink.applyThenFail.Store(true)
	f.produce(tags[1000:2000], 0)
	// A commit that fails outright: the events must be counted later.
	var failOnce atomic.Bool
	failOnce.Store(true)
	sink.setBeforeCommit(func([]aggregates.PartitionOffset) error {
		if failOnce.CompareAndSwap(true, false) {
			return errInjected
		}
		return nil
	})
	f.produce(tags[2000:], 0)
	f.waitCommitted(20 * time.Second)
	stop()
	f.checkExact(0)
	if got := counterValue(sinkErrors.WithLabelValues("offsets")) - offsetErrsBefore; got != 3 {
		t.Errorf("offsets errors metric rose by %v, want 3", got)
	}
	if got := counterValue(commitErrors.WithLabelValues(reasonStore)) - storeErrsBefore; got != 2 {
		t.Errorf("store commit errors metric rose by %v, want 2", got)
	}
}

func TestRunSkipsUndecodableEvents(t *testing.T) {
	f := newFixture(t)
	tags := genTags(6, 2000, t0, 50)
	before := counterValue(decodeErrors)
	f.produce(tags, 100) // 20 garbage events among them
	stop := f.start(f.config("g-garbage"), f.store)
	f.waitCommitted(20 * time.Second) // offsets move past the garbage too
	stop()
	f.checkExact(0)
	if got := counterValue(decodeErrors) - before; got != 20 {
		t.Errorf("decode errors metric rose by %v, want 20", got)
	}
	if n := len(brokertest.ReadAll(t, f.addrs, testDLQ)); n != 20 {
		t.Errorf("%d events in the dead-letter topic, want the 20 garbage ones", n)
	}
}

// TestRunDropsMinutesBehindRetention: a stream that moves forward for
// longer than the settle period moves the cut-off (eventClock), minutes
// behind it are dropped, and nothing within Retention of the stream is.
func TestRunDropsMinutesBehindRetention(t *testing.T) {
	f := newFixture(t)
	tags := genTags(7, 3000, t0, 200) // 600 s: 10 minutes of event time
	cfg := f.config("g-retention")
	cfg.Retention = 3 * time.Minute
	cfg.DropInterval = 200 * time.Millisecond
	cfg.RetentionSettle = 400 * time.Millisecond
	drops0 := counterValue(drops)
	stop := f.start(cfg, f.store)
	f.produceSlowly(tags, 50, 40*time.Millisecond) // ~2.5 s, longer than the settle period
	f.waitCommitted(20 * time.Second)
	time.Sleep(2 * cfg.DropInterval) // a drop after the last commit
	stop()
	if counterValue(drops) == drops0 {
		t.Fatal("retention drops metric did not move")
	}
	var g dto.Metric
	if err := retentionCutoff.Write(&g); err != nil {
		t.Fatal(err)
	}
	cutoff := int64(g.GetGauge().GetValue()) / 60
	first, newest := schemas.MinuteOf(tags[0].TimeMs), schemas.MinuteOf(tags[len(tags)-1].TimeMs)
	if cutoff <= first || cutoff > newest-3 {
		t.Fatalf("cut-off minute %d, want within (%d, %d]: the stream moved it, never past Retention behind it", cutoff, first, newest-3)
	}
	// Everything from the cut-off on is intact; before it, nothing is left.
	f.checkExact(cutoff)
	for _, q := range filterQueries(cutoff-10, cutoff) {
		got, err := f.store.Query(context.Background(), &q)
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		for i, tot := range got {
			if tot != (schemas.Totals{}) {
				t.Fatalf("query %+v minute %d: %+v after retention, want nothing", q, q.FromMinute+int64(i), tot)
			}
		}
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t"}
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }},
		{"no topic", func(c *Config) { c.Topic = "" }},
		{"negative flush interval", func(c *Config) { c.FlushInterval = -time.Second }},
		{"heartbeat not below session", func(c *Config) { c.SessionTimeout, c.HeartbeatInterval = time.Second, time.Second }},
		{"dead letters into the events topic", func(c *Config) { c.DeadLetterTopic = c.Topic }},
		{"negative retention settle", func(c *Config) { c.RetentionSettle = -time.Second }},
		{"settle period of too many ticks", func(c *Config) {
			c.RetentionSettle, c.DropInterval, c.FlushInterval = 24*time.Hour, time.Millisecond, time.Millisecond
		}},
	}
	store := newFaultySink(nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mutate(&cfg)
			if err := Run(t.Context(), cfg, store); err == nil {
				t.Error("Run accepted the config")
			}
		})
	}
	t.Run("nil sink", func(t *testing.T) {
		if err := Run(t.Context(), ok, nil); err == nil {
			t.Error("Run accepted a nil sink")
		}
	})
	t.Run("defaults", func(t *testing.T) {
		c := ok.withDefaults()
		if err := c.validate(); err != nil {
			t.Fatalf("defaults do not validate: %v", err)
		}
		if c.Group != defaultGroup || c.FlushInterval != time.Second || c.Retention != 24*time.Hour ||
			c.RetentionSettle != 10*time.Minute || c.dropTick() != time.Minute ||
			c.SessionTimeout != 10*time.Second || c.HeartbeatInterval != 3*time.Second || c.Logger == nil ||
			c.DeadLetterTopic != "t-dlq" || c.MaxFuture != schemas.DefaultMaxFuture {
			t.Errorf("defaults: %+v", c)
		}
	})
}

// gate is a WriteGate the test opens and closes.
type gate struct{ held atomic.Bool }

func (g *gate) Err() error {
	if g.held.Load() {
		return errors.New("free space below the floor")
	}
	return nil
}

// gatedSink fails every write the worker makes while the gate holds
// writes, and counts them: the worker must make none.
type gatedSink struct {
	*faultySink
	gate           *gate
	writesWhenHeld atomic.Int32
}

func (s *gatedSink) DropBefore(ctx context.Context, minute int64) error {
	if s.gate.held.Load() {
		s.writesWhenHeld.Add(1)
		return errInjected
	}
	return s.faultySink.DropBefore(ctx, minute)
}

// TestRunHoldsWritesWhileGateHolds: while the write gate holds (a full
// disk), the worker neither commits nor drops, keeps consuming and keeps
// its position; once it opens, everything held is committed, exactly once.
func TestRunHoldsWritesWhileGateHolds(t *testing.T) {
	f := newFixture(t)
	tags := genTags(8, 2000, t0, 50)
	g := &gate{}
	sink := &gatedSink{faultySink: newFaultySink(f.store), gate: g}
	sink.setBeforeCommit(func([]aggregates.PartitionOffset) error {
		if g.held.Load() {
			sink.writesWhenHeld.Add(1)
			return errInjected
		}
		return nil
	})
	cfg := f.config("g-gate")
	cfg.Writes = g
	cfg.DropInterval = 50 * time.Millisecond
	heldBefore := counterValue(commitsHeld)
	f.produce(tags[:1000], 0)
	stop := f.start(cfg, sink)
	f.waitCommitted(20 * time.Second)

	g.held.Store(true)
	before, err := f.store.Offsets(context.Background(), testTopic)
	if err != nil {
		t.Fatal(err)
	}
	f.produce(tags[1000:], 0)
	time.Sleep(time.Second) // ten flush intervals, twenty drop intervals
	after, err := f.store.Offsets(context.Background(), testTopic)
	if err != nil {
		t.Fatal(err)
	}
	if n := sink.writesWhenHeld.Load(); n != 0 {
		t.Errorf("the worker tried %d writes while the gate held them", n)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("stored offsets moved while held: %v -> %v", before, after)
	}
	if counterValue(commitsHeld) == heldBefore {
		t.Error("allezon_pipeline_commits_held_total did not rise while held")
	}

	g.held.Store(false)
	f.waitCommitted(20 * time.Second)
	stop()
	f.checkExact(0)
}
