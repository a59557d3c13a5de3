package publish

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/allezon/allezon/broker/brokertest"
)

// producerID is the producer ID of a produce request's first batch.
func producerID(req *kmsg.ProduceRequest) int64 {
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			var b kmsg.RecordBatch
			if err := b.ReadFrom(p.Records); err == nil {
				return b.ProducerID
			}
		}
	}
	return -1
}

// rejectAll answers a produce request with err on every partition.
func rejectAll(req *kmsg.ProduceRequest, err *kerr.Error) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition = p.Partition
			rp.ErrorCode = err.Code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// TestReplacesStuckProducer makes the broker reject every batch of the
// publisher's first producer ID for good, which sarama cannot get out of
// (it only bumps the epoch of the same ID), and checks that the publisher
// replaces the producer and publishes again by itself.
func TestReplacesStuckProducer(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var stuckPID atomic.Int64
	stuckPID.Store(-1)
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		pid := producerID(req)
		if stuckPID.CompareAndSwap(-1, pid) || stuckPID.Load() == pid {
			return rejectAll(req, kerr.UnknownProducerID), nil, true
		}
		return nil, nil, false
	})

	const timeout = 500 * time.Millisecond
	p := newPublisher(t, c.ListenAddrs(), timeout)
	first := p.gen
	ctx := context.Background()
	start := time.Now()
	var failures int
	for {
		err := p.Publish(ctx, []byte("k"), []byte("v"))
		if err == nil {
			break
		}
		failures++
		if time.Since(start) > 10*timeout {
			t.Fatalf("still failing %v after the producer got stuck: %v", time.Since(start), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("published again after %v and %d failures", time.Since(start), failures)
	if failures == 0 {
		t.Fatal("the first producer was not rejected: the fault injection did not work")
	}
	p.mu.RLock()
	replaced := p.gen != first
	p.mu.RUnlock()
	if !replaced {
		t.Fatal("publishing works again but the producer was not replaced")
	}
	if recs := brokertest.ReadAll(t, c.ListenAddrs(), testTopic); len(recs) != 1 || recs[0].Value != "v" {
		t.Fatalf("log = %v, want the one accepted message", recs)
	}
}
