// Package brokertest helps tests run against the real embedded broker: start
// one that closes with the test, and read a topic back in full.
package brokertest

import (
	"github.com/allezon/allezon/eventlog"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/allezon/allezon/broker"
)

// Start starts a broker that closes when the test ends. A nil cfg.Logger
// discards the broker's logs.
func Start(tb testing.TB, cfg broker.Config) *broker.Broker {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b, err := broker.Start(cfg)
	if err != nil {
		tb.Fatalf("start broker: %v", err)
	}
	tb.Cleanup(b.Close)
	return b
}

// Record is one message read back from the log.
type Record struct {
	Partition int32
	Offset    int64
	Key       string
	Value     string
	Headers   map[string]string
}

// ReadAll reads every partition of topic from its oldest offset up to its
// current high watermark, partition by partition in offset order.
func ReadAll(tb testing.TB, addrs []string, topic string) []Record {
	tb.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = eventlog.Version
	// Closing a partition consumer waits out its pending fetch.
	cfg.Consumer.MaxWaitTime = 20 * time.Millisecond
	client, err := sarama.NewClient(addrs, cfg)
	if err != nil {
		tb.Fatalf("new client: %v", err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		tb.Fatalf("new consumer: %v", err)
	}
	defer consumer.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		tb.Fatalf("partitions of %s: %v", topic, err)
	}
	var out []Record
	for _, p := range parts {
		oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			tb.Fatalf("oldest offset of %d: %v", p, err)
		}
		hwm, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			tb.Fatalf("newest offset of %d: %v", p, err)
		}
		if hwm == oldest {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, oldest)
		if err != nil {
			tb.Fatalf("consume partition %d: %v", p, err)
		}
		timeout := time.After(20 * time.Second)
		for done := false; !done; {
			select {
			case m, ok := <-pc.Messages():
				if !ok {
					tb.Fatalf("partition %d: consumer stopped before offset %d", p, hwm)
				}
				r := Record{Partition: m.Partition, Offset: m.Offset, Key: string(m.Key), Value: string(m.Value)}
				for _, h := range m.Headers {
					if r.Headers == nil {
						r.Headers = map[string]string{}
					}
					r.Headers[string(h.Key)] = string(h.Value)
				}
				out = append(out, r)
				done = m.Offset >= hwm-1
			case err := <-pc.Errors():
				tb.Fatalf("consume partition %d: %v", p, err)
			case <-timeout:
				tb.Fatalf("partition %d: timed out reading up to offset %d", p, hwm)
			}
		}
		pc.Close()
	}
	return out
}
