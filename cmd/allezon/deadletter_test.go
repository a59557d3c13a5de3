package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/allezon/allezon/broker/brokertest"
	"github.com/allezon/allezon/eventlog"
	"github.com/allezon/allezon/loadgen"
	"github.com/allezon/allezon/schemas"
	"github.com/allezon/allezon/services/postgres/pgtest"
)

// refusedOrigin is the origin whose full-cell rows the test's PostgreSQL
// refuses as data, as it would an index row over the btree limit.
const refusedOrigin = "refused-origin"

// TestPoisonEventsGoToDeadLetters runs the production shape (broker,
// pipeline on PostgreSQL, gateway as processes) and, between batches of
// honest tags posted through the gateway, produces three poison events
// straight to the events topic: bytes that are no event, a valid event a
// year ahead of its record's timestamp, and one whose full cell
// PostgreSQL refuses (a trigger raising SQLSTATE 22023), in the same flush
// batch as honest tags. Every honest tag must be counted exactly, each
// poison event must be in the dead-letter topic with its reason and source
// offset, the metric must count them, and the lag must return to 0.
func TestPoisonEventsGoToDeadLetters(t *testing.T) {
	dsn := pgtest.Start(t)
	brokerAddr, gwAddr, plAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	events := "kafka://" + brokerAddr + "/" + defaultTopic
	start(t, "broker", "broker", "--broker-addr", brokerAddr, "--data", t.TempDir())
	waitBroker(t, brokerAddr)
	start(t, "pipeline", "pipeline", "--http", plAddr, "--events", events, "--aggregates", dsn,
		"--session-timeout", "1s")
	waitHealthy(t, plAddr) // the schema is migrated
	refuseOrigin(t, dsn)
	start(t, "gateway", "gateway", "--http", gwAddr, "--events", events, "--aggregates", dsn,
		"--profiles", "pebble://"+t.TempDir())
	waitHealthy(t, gwAddr)

	brokers := []string{brokerAddr}
	v := newVerifier(t, gwAddr, brokers)
	v.poison = map[[2]int64]bool{}
	seg := segment{seed: 600, start: loadgen.DefaultStart, n: 800}
	v.segments = append(v.segments, seg)
	tags := seg.tags()
	producer := poisonProducer(t, brokers)

	want := map[[2]int64]string{} // poison event -> dead-letter reason
	inject := func(reason string, tag schemas.UserTag, garbage bool) {
		key, val := eventRecord(t, &tag)
		if garbage {
			val = []byte("\x00\xff not an Avro event")
		}
		p, off, err := producer.SendMessage(&sarama.ProducerMessage{Topic: defaultTopic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(val)})
		if err != nil {
			t.Fatalf("produce the %s poison event: %v", reason, err)
		}
		want[[2]int64{int64(p), off}] = reason
		v.poison[[2]int64{int64(p), off}] = true
	}
	post := func(from, to int) {
		if d := parallelFirst(to-from, 4, func(i int) string {
			if p := v.postTag(&tags[from+i]); p.status != 204 {
				return "POST /user_tags: " + strconv.Itoa(p.status)
			}
			return ""
		}); d != "" {
			t.Fatal(d)
		}
	}

	post(0, 200)
	inject("decode", tags[0], true)
	post(200, 400)
	future := tags[1]
	future.TimeMs = time.Now().AddDate(1, 0, 0).UnixMilli()
	inject("future", future, false)
	post(400, 600)
	refused := tags[2]
	refused.Origin = refusedOrigin
	inject("refused", refused, false)
	post(600, 800) // in the refused event's flush batch

	v.check()
	checkDeadLetterTopic(t, brokers, want)
	for _, reason := range []string{"decode", "future", "refused"} {
		waitMetric(t, plAddr, `allezon_pipeline_dead_letters_total{reason="`+reason+`"}`, 1)
	}
	// The refused event shared its commit with honest tags: the batch was
	// isolated, not just one event refused alone.
	if n := metricValue(t, plAddr, `allezon_pipeline_commit_errors_total{reason="data"}`); n < 1 {
		t.Errorf("no commit was refused as data (%v): the refused event was alone in its batch, the isolation untested", n)
	}
	for _, p := range []string{"0", "1"} {
		waitMetric(t, plAddr, `allezon_pipeline_consumer_lag{partition="`+p+`",topic="`+defaultTopic+`"}`, 0)
	}
}

// refuseOrigin makes PostgreSQL refuse, as data, every full-cell row of
// refusedOrigin.
func refuseOrigin(t *testing.T, dsn string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `
CREATE FUNCTION refuse_origin() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.origin = '`+refusedOrigin+`' THEN
		RAISE EXCEPTION 'origin % refused', NEW.origin USING ERRCODE = '22023';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_origin BEFORE INSERT OR UPDATE ON agg_cell FOR EACH ROW EXECUTE FUNCTION refuse_origin();`)
	if err != nil {
		t.Fatalf("create trigger: %v", err)
	}
}

func poisonProducer(t *testing.T, brokers []string) sarama.SyncProducer {
	cfg := eventlog.NewSaramaConfig("allezon-poison-test")
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	p, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// checkDeadLetterTopic: the dead-letter topic holds each poison event once,
// with its reason, source topic, partition and offset, and its original
// value.
func checkDeadLetterTopic(t *testing.T, brokers []string, want map[[2]int64]string) {
	t.Helper()
	source := map[[2]int64]brokertest.Record{}
	for _, r := range brokertest.ReadAll(t, brokers, defaultTopic) {
		source[[2]int64{int64(r.Partition), r.Offset}] = r
	}
	got := map[[2]int64]string{}
	for _, r := range brokertest.ReadAll(t, brokers, defaultTopic+"-dlq") {
		p, _ := strconv.ParseInt(r.Headers["allezon-dlq-partition"], 10, 32)
		off, _ := strconv.ParseInt(r.Headers["allezon-dlq-offset"], 10, 64)
		k := [2]int64{p, off}
		if _, dup := got[k]; dup {
			t.Errorf("dead letter of %v twice", k)
		}
		got[k] = r.Headers["allezon-dlq-reason"]
		if src := source[k]; r.Headers["allezon-dlq-topic"] != defaultTopic || r.Value != src.Value || r.Key != src.Key {
			t.Errorf("dead letter of %v: not the source event, or headers %v", k, r.Headers)
		}
		t.Logf("dead letter of partition %d offset %d: reason %s, error %q", p, off, got[k], r.Headers["allezon-dlq-error"])
	}
	for k, reason := range want {
		if got[k] != reason {
			t.Errorf("poison event at %v: dead-letter reason %q, want %q", k, got[k], reason)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d dead letters, want %d", len(got), len(want))
	}
}
