package pipeline

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/allezon/allezon/broker/brokertest"
	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/schemas"
	"github.com/allezon/allezon/services/postgres"
	"github.com/allezon/allezon/services/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// poisonOrigin is the origin the test stores refuse as data.
const poisonOrigin = "poison"

// Kinds of events the dead-letter tests produce; "" is an honest tag.
const (
	kindGarbage = reasonDecode
	kindFuture  = reasonFuture
	kindRefused = reasonRefused
)

// producePoison produces tags interleaved with poison events: before tag i
// comes one event of kind poison[i], if any. Honest tags are recorded as
// produce does; it returns the kind of every poison event by partition and
// offset.
func (f *fixture) producePoison(tags []schemas.UserTag, poison map[int]string) map[[2]int64]string {
	f.t.Helper()
	now := time.Now()
	var msgs []*sarama.ProducerMessage
	kinds := []string{}
	for i := range tags {
		if kind, ok := poison[i]; ok {
			bad := tags[i]
			switch kind {
			case kindFuture:
				bad.TimeMs = now.AddDate(1, 0, 0).UnixMilli()
			case kindRefused:
				bad.Origin = poisonOrigin
			}
			key, val := f.encode(&bad)
			if kind == kindGarbage {
				val = []byte("\xff\xfe not an event")
			}
			msgs = append(msgs, &sarama.ProducerMessage{Topic: testTopic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(val), Timestamp: now})
			kinds = append(kinds, kind)
		}
		key, val := f.encode(&tags[i])
		msgs = append(msgs, &sarama.ProducerMessage{Topic: testTopic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(val), Timestamp: now})
		kinds = append(kinds, "")
	}
	if err := f.producer.SendMessages(msgs); err != nil {
		f.t.Fatalf("produce %d events: %v", len(msgs), err)
	}
	out := map[[2]int64]string{}
	f.mu.Lock()
	defer f.mu.Unlock()
	next := 0
	for j, m := range msgs {
		if f.at[m.Partition] == nil {
			f.at[m.Partition] = map[int64]schemas.UserTag{}
		}
		if kinds[j] == "" {
			f.tags = append(f.tags, tags[next])
			f.at[m.Partition][m.Offset] = tags[next]
			next++
		} else {
			out[[2]int64{int64(m.Partition), m.Offset}] = kinds[j]
		}
		f.end[m.Partition] = max(f.end[m.Partition], m.Offset+1)
	}
	return out
}

func (f *fixture) encode(tag *schemas.UserTag) (key, val []byte) {
	key, err := schemas.AppendEventKey(nil, tag)
	if err != nil {
		f.t.Fatalf("encode key: %v", err)
	}
	if val, err = schemas.AppendEventValue(nil, tag); err != nil {
		f.t.Fatalf("encode value: %v", err)
	}
	return key, val
}

// checkDeadLetters reads the dead-letter topic: it must hold each poison
// event exactly once, with its reason, source and original value.
func (f *fixture) checkDeadLetters(want map[[2]int64]string) {
	f.t.Helper()
	got := map[[2]int64]string{}
	for _, r := range brokertest.ReadAll(f.t, f.addrs, testDLQ) {
		p, _ := strconv.ParseInt(r.Headers[HeaderPartition], 10, 32)
		o, _ := strconv.ParseInt(r.Headers[HeaderOffset], 10, 64)
		k := [2]int64{p, o}
		if _, dup := got[k]; dup {
			f.t.Errorf("dead letter of %v written twice", k)
		}
		got[k] = r.Headers[HeaderReason]
		if r.Headers[HeaderTopic] != testTopic || r.Headers[HeaderError] == "" {
			f.t.Errorf("dead letter of %v: headers %v", k, r.Headers)
		}
		var tag schemas.UserTag
		if want[k] != kindGarbage && schemas.DecodeEventValue([]byte(r.Value), &tag) != nil {
			f.t.Errorf("dead letter of %v: the value is not the event's", k)
		}
	}
	for k, reason := range want {
		if got[k] != reason {
			f.t.Errorf("event %v: dead letter reason %q, want %q", k, got[k], reason)
		}
	}
	if len(got) != len(want) {
		f.t.Errorf("%d dead letters, want %d: %v", len(got), len(want), got)
	}
}

// refusingSink is the Pebble store refusing, as data, any commit with a
// cell of poisonOrigin: Pebble itself refuses nothing, PostgreSQL does
// (postgresRefusing).
type refusingSink struct{ aggregates.Store }

func (s refusingSink) Commit(ctx context.Context, deltas map[schemas.Cell]schemas.Totals, offsets []aggregates.PartitionOffset) error {
	for c := range deltas {
		if c.Origin == poisonOrigin {
			return fmt.Errorf("%w: origin %q", aggregates.ErrData, c.Origin)
		}
	}
	return s.Store.Commit(ctx, deltas, offsets)
}

// postgresRefusing opens a real PostgreSQL aggregates store whose full-cell
// table refuses, with a data exception, any row of poisonOrigin.
func postgresRefusing(t *testing.T) aggregates.Store {
	dsn := pgtest.Start(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, dsn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.origin = '`+poisonOrigin+`' THEN
		RAISE EXCEPTION 'origin % refused', NEW.origin USING ERRCODE = '22023';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON agg_cell FOR EACH ROW EXECUTE FUNCTION refuse_poison();`)
	if err != nil {
		t.Fatalf("create trigger: %v", err)
	}
	store, err := aggregates.Open(ctx, dsn, aggregates.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// outageOnce fails the first commit without sums (a dead letter's offset
// committed alone) as an outage would, once.
type outageOnce struct {
	Sink
	done atomic.Bool
}

func (s *outageOnce) Commit(ctx context.Context, deltas map[schemas.Cell]schemas.Totals, offsets []aggregates.PartitionOffset) error {
	if len(deltas) == 0 && s.done.CompareAndSwap(false, true) {
		return errInjected
	}
	return s.Sink.Commit(ctx, deltas, offsets)
}

// TestRunIsolatesPoisonEvents: poison events among honest ones, in the
// same flush batches, on a real store: every honest tag is counted exactly
// once, every poison event is in the dead-letter topic once with its
// reason and source, and the partitions reach their end.
func TestRunIsolatesPoisonEvents(t *testing.T) {
	tests := []struct {
		name   string
		store  string // pebble or postgres
		poison map[int]string
		outage bool // the first offset-only commit fails once
	}{
		{"pebble: refused twice in a batch, garbage, future", "pebble",
			map[int]string{10: kindGarbage, 100: kindRefused, 101: kindRefused, 200: kindFuture, 250: kindRefused}, false},
		{"pebble: outage while isolating", "pebble", map[int]string{120: kindRefused, 121: kindGarbage}, true},
		{"postgres: refused, garbage, future, outage while isolating", "postgres",
			map[int]string{5: kindGarbage, 150: kindRefused, 151: kindFuture, 260: kindRefused}, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			var sink Sink = refusingSink{f.store}
			if tc.store == "postgres" {
				f.store = postgresRefusing(t)
				sink = f.store
			}
			if tc.outage {
				sink = &outageOnce{Sink: sink}
			}
			before := map[string]float64{}
			for _, r := range []string{reasonDecode, reasonFuture, reasonRefused} {
				before[r] = counterValue(deadLetters.WithLabelValues(r))
			}
			// 300 tags, all in one flush batch of each partition.
			tags := genTags(uint64(70+i), 300, t0, 100)
			want := f.producePoison(tags, tc.poison)
			stop := f.start(f.config("g-poison-"+strconv.Itoa(i)), sink)
			f.waitCommitted(20 * time.Second)
			stop()
			f.checkExact(0)
			f.checkDeadLetters(want)
			for _, r := range []string{reasonDecode, reasonFuture, reasonRefused} {
				n := 0
				for _, k := range want {
					if k == r {
						n++
					}
				}
				if got := counterValue(deadLetters.WithLabelValues(r)) - before[r]; got != float64(n) {
					t.Errorf("dead letters metric {reason=%s} rose by %v, want %d", r, got, n)
				}
			}
		})
	}
}

// TestRunCountsLostEventsOnce: a partition whose stored offset is behind
// the broker's oldest (its events deleted unread) is counted as lost once,
// not again at every later session.
func TestRunCountsLostEventsOnce(t *testing.T) {
	f := newFixture(t)
	f.producePoison(genTags(80, 200, t0, 100), nil)
	// Partition 0 was committed up to 10; the broker then deleted up to 50.
	if err := f.store.Commit(context.Background(), nil, []aggregates.PartitionOffset{{Topic: testTopic, Partition: 0, Prev: -1, Next: 10}}); err != nil {
		t.Fatal(err)
	}
	admin, err := sarama.NewClusterAdmin(f.addrs, f.producerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.DeleteRecords(testTopic, map[int32]int64{0: 50}); err != nil {
		t.Fatalf("delete records: %v", err)
	}
	before := counterValue(eventsLost)
	for range 2 { // the second run resumes from a stored offset past the loss
		stop := f.start(f.config("g-lost"), f.store)
		f.waitCommitted(20 * time.Second)
		stop()
	}
	if got := counterValue(eventsLost) - before; got != 40 {
		t.Errorf("events lost metric rose by %v, want 40 (offsets 10 to 50)", got)
	}
}

// TestRunKeepsLagOfStuckPartition: while every commit fails, the claims
// end and restart, and the partitions' lag stays exported and growing,
// their last-flush time frozen.
func TestRunKeepsLagOfStuckPartition(t *testing.T) {
	f := newFixture(t)
	sink := newFaultySink(f.store)
	sink.setBeforeCommit(func([]aggregates.PartitionOffset) error { return errInjected })
	stop := f.start(f.config("g-stuck"), sink)
	defer stop()
	f.producePoison(genTags(81, 100, t0, 100), nil)
	lag := func() (n float64) {
		for p := range int32(2) {
			n += gaugeValue(consumerLag.WithLabelValues(testTopic, partLabel(p)))
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for lag() != 100 {
		if time.Now().After(deadline) {
			t.Fatalf("lag of the stuck partitions is %v, want 100", lag())
		}
		time.Sleep(50 * time.Millisecond)
	}
	flushedAt := gaugeValue(lastFlush.WithLabelValues(testTopic, "0"))
	time.Sleep(1500 * time.Millisecond) // several failed commits and sessions
	if got := lag(); got != 100 {
		t.Errorf("lag of the stuck partitions went to %v, want 100", got)
	}
	if got := gaugeValue(lastFlush.WithLabelValues(testTopic, "0")); got != flushedAt {
		t.Errorf("last flush time of a stuck partition moved from %v to %v", flushedAt, got)
	}
	sink.setBeforeCommit(nil)
	f.waitCommitted(20 * time.Second)
	for lag() != 0 {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("lag is %v after the store came back, want 0", lag())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

func (f *fixture) producerConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V3_6_0_0
	return c
}
