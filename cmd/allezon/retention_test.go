package main

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/allezon/allezon/eventlog"
	"github.com/allezon/allezon/loadgen"
	"github.com/allezon/allezon/schemas"
)

// TestRetentionIgnoresFarFutureFloods (issue #9, item 1) runs allezon all
// with minutes of retention and seconds of settle period, posts an honest
// stream whose event time moves 60 times faster than the wall clock, and
// between its segments floods the system with far-future tags: 1, 300 and
// 10,000 events in the year 9999 produced straight to the events topic (the
// gateway's horizon would refuse them), and 1, 300 and 3,000 posted through
// the gateway 3 hours ahead of the wall clock. After every flood the
// minutes within --retention of the honest stream's newest must equal the
// log's sums, and no drop may jump; at the end the stream itself must have
// moved the cut-off past its first minutes, which read zero.
func TestRetentionIgnoresFarFutureFloods(t *testing.T) {
	const retentionMinutes = 3
	addr, brokerAddr := freeAddr(t), freeAddr(t)
	start(t, "all", "all", "--http", addr, "--broker-addr", brokerAddr, "--data", t.TempDir(),
		"--retention", fmt.Sprintf("%dm", retentionMinutes), "--retention-settle", "3s",
		"--retention-interval", "500ms", "--flush-interval", "200ms")
	waitHealthy(t, addr)
	brokers := []string{brokerAddr}
	v := newVerifier(t, addr, brokers)
	s := &honestStream{t: t, addr: addr, gen: loadgen.NewGenerator(91, loadgen.DefaultStart), http: v.http}

	s.run(4 * time.Second) // long enough for the frontier to be set
	future := time.Now().Add(3 * time.Hour)
	floods := []struct {
		name string
		run  func()
	}{
		{"1 tag in 9999 on the topic", func() { produceFlood(t, brokers, 1) }},
		{"300 tags in 9999 on the topic", func() { produceFlood(t, brokers, 300) }},
		{"10,000 tags in 9999 on the topic", func() { produceFlood(t, brokers, 10_000) }},
		{"1 tag at +3h through the gateway", func() { s.postFlood(future, 1) }},
		{"300 tags at +3h through the gateway", func() { s.postFlood(future, 300) }},
		{"3,000 tags at +3h through the gateway", func() { s.postFlood(future, 3_000) }},
	}
	for _, f := range floods {
		began := time.Now()
		f.run()
		took := time.Since(began)
		s.run(time.Second) // two drop ticks with the flood committed
		newest := schemas.MinuteOf(s.newestMs())
		checkMinutesExact(t, v, newest-retentionMinutes)
		t.Logf("after %s (sent in %v): minutes from %s on exact", f.name, took.Round(time.Millisecond), minuteText(newest-retentionMinutes))
	}

	newest := schemas.MinuteOf(s.newestMs())
	first := schemas.MinuteOf(loadgen.DefaultStart.UnixMilli())
	cutoff := checkCutoff(t, v, first, newest)
	if cutoff <= first+1 || cutoff > newest-retentionMinutes {
		t.Fatalf("cut-off %s: the stream from %s to %s should have moved it past %s, and never past %s",
			minuteText(cutoff), minuteText(first), minuteText(newest), minuteText(first+1), minuteText(newest-retentionMinutes))
	}
	if j := metricValue(t, addr, "allezon_pipeline_retention_jumps_total"); j != 0 {
		t.Errorf("%v retention jumps, want none", j)
	}
	t.Logf("stream from %s to %s: cut-off at %s, the minutes before it dropped", minuteText(first), minuteText(newest), minuteText(cutoff))
}

// honestStream posts tags whose event time moves 300 ms a tag, at 200 tags
// a second of wall time: 60 s of event time a second.
type honestStream struct {
	t    *testing.T
	addr string
	gen  *loadgen.Generator
	http *http.Client
	next int64 // index of the next tag
}

const honestStepMs = 300

func (s *honestStream) newestMs() int64 { return s.gen.StartMs() + (s.next-1)*honestStepMs }

// run posts the stream for d of wall time, 20 tags every 100 ms.
func (s *honestStream) run(d time.Duration) {
	s.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		tags := make([]schemas.UserTag, 20)
		for i := range tags {
			tags[i] = s.gen.Tag(s.next)
			tags[i].TimeMs = s.gen.StartMs() + s.next*honestStepMs
			s.next++
		}
		s.post(tags)
		time.Sleep(100 * time.Millisecond)
	}
}

// postFlood posts n tags at time at through the gateway.
func (s *honestStream) postFlood(at time.Time, n int) {
	tags := make([]schemas.UserTag, n)
	for i := range tags {
		tags[i] = s.gen.Tag(int64(-1 - i))
		tags[i].TimeMs = at.UnixMilli() + int64(i%1000)
	}
	s.post(tags)
}

// post sends every tag on 16 connections and fails unless each got 204.
func (s *honestStream) post(tags []schemas.UserTag) {
	s.t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(tags)); i = next.Add(1) - 1 {
				resp, err := s.http.Post("http://"+s.addr+"/user_tags", "application/json",
					bytes.NewReader(schemas.AppendUserTagJSON(nil, &tags[i])))
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusNoContent {
						err = fmt.Errorf("POST /user_tags: %d", resp.StatusCode)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Fatal(err)
	}
}

// produceFlood writes n tags of 9999-12-31T23:59Z straight to the topic.
func produceFlood(t *testing.T, brokers []string, n int) {
	t.Helper()
	cfg := eventlog.NewSaramaConfig("allezon-flood")
	cfg.Producer.Return.Successes = true
	cfg.Producer.Flush.Frequency, cfg.Producer.Flush.Messages = 0, 0
	p, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	g := loadgen.NewGenerator(92, time.Date(9999, 12, 31, 23, 59, 0, 0, time.UTC))
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		tag := g.Tag(int64(i % 60_000))
		key, val := eventRecord(t, &tag)
		msgs[i] = &sarama.ProducerMessage{Topic: defaultTopic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(val)}
	}
	if err := p.SendMessages(msgs); err != nil {
		t.Fatalf("produce the flood: %v", err)
	}
}

// checkMinutesExact waits until the unfiltered aggregates of the ten
// minutes from from on equal the log's sums (15 s at most).
func checkMinutesExact(t *testing.T, v *verifier, from int64) {
	t.Helper()
	var qs []aggQuery
	for a := range schemas.Action(schemas.NumActions) {
		qs = append(qs, aggQuery{fromMin: from, action: a})
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		diff := v.firstAggregateDiff(readLog(t, v.brokers, v.topic), qs)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("real minutes lost: %s", diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkCutoff reads the retention cut-off from /metrics and checks the
// honest minutes against it: zero before it, the log's sums from it on. It
// returns the cut-off minute.
func checkCutoff(t *testing.T, v *verifier, first, newest int64) int64 {
	t.Helper()
	var qs []aggQuery
	for from := first; from <= newest; from += 10 {
		for a := range schemas.Action(schemas.NumActions) {
			qs = append(qs, aggQuery{fromMin: from, action: a})
		}
	}
	events := readLog(t, v.brokers, v.topic)
	deadline := time.Now().Add(5 * time.Second)
	for {
		cutoff := int64(metricValue(t, v.gateway, "allezon_pipeline_retention_cutoff_seconds")) / 60
		var kept []schemas.UserTag
		for _, e := range events {
			if schemas.MinuteOf(e.TimeMs) >= cutoff {
				kept = append(kept, e)
			}
		}
		diff := v.firstAggregateDiff(kept, qs)
		if diff == "" {
			return cutoff
		}
		if time.Now().After(deadline) {
			t.Fatalf("with the cut-off at %s: %s", minuteText(cutoff), diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
