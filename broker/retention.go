package broker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Retention of the events topic. kfake's own retention deletes every batch
// before the newest one whose producer timestamp is older than retention.ms
// by the wall clock: a clock jump forward, or a single batch a client
// stamped in the past, deletes events the pipeline has not read. The events
// topic therefore carries retention.ms=-1 (kfake leaves it alone) and
// eventsRetention deletes instead: an event goes once it was appended more
// than Config.Retention ago, by this process's monotonic clock, AND the
// pipeline committed it (Config.Committed). After a restart the count
// starts again for what the log held, which only keeps more.
type eventsRetention struct {
	topic     string
	retention time.Duration
	committed func(context.Context) (map[int32]int64, error)
	log       *slog.Logger

	marks   []appendMark // oldest first
	failing bool         // the last call of committed failed
}

// appendMark is each partition's high watermark at a moment: every event
// below it was appended before then.
type appendMark struct {
	at   time.Time
	next map[int32]int64
}

var heldEvents = promauto.NewGaugeVec(prometheus.GaugeOpts{
	Name: "allezon_broker_retention_held_events",
	Help: "Events of the events topic older than --events-retention that the embedded broker keeps because the pipeline has not committed them.",
}, []string{"partition"})

// pass marks the high watermarks at now and deletes what both expired and
// was committed.
func (r *eventsRetention) pass(ctx context.Context, c *kfake.Cluster, now time.Time) {
	parts := c.PartitionInfos(r.topic)
	hw := make(map[int32]int64, len(parts))
	for _, p := range parts {
		hw[p.Partition] = p.HighWatermark
	}
	r.marks = append(r.marks, appendMark{at: now, next: hw})
	k := -1 // the newest mark at least Retention old
	for i, m := range r.marks {
		if now.Sub(m.at) >= r.retention {
			k = i
		}
	}
	if k < 0 {
		return
	}
	r.marks = slices.Delete(r.marks, 0, k)
	committed, err := r.committed(ctx)
	if err != nil {
		if !r.failing {
			r.log.Warn("broker retention: cannot read the pipeline's committed offsets; deleting nothing until it can", "err", err)
		}
		r.failing = true
		return
	}
	if r.failing {
		r.log.Info("broker retention: committed offsets readable again")
		r.failing = false
	}
	for _, p := range parts {
		expired := r.marks[0].next[p.Partition]
		done, ok := committed[p.Partition]
		if !ok {
			done = p.LogStartOffset // nothing committed: keep everything
		}
		heldEvents.WithLabelValues(strconv.Itoa(int(p.Partition))).Set(float64(max(expired-max(done, p.LogStartOffset), 0)))
		if cut := min(expired, done); cut > p.LogStartOffset {
			if err := c.DeleteRecords(r.topic, p.Partition, cut); err != nil {
				r.log.Warn("broker retention: delete records", "partition", p.Partition, "before", cut, "err", err)
			}
		}
	}
}

// groupCommitted reads the offsets group committed on the broker itself:
// the bound of a standalone broker, which cannot see the pipeline's store.
func groupCommitted(c *kfake.Cluster, group, topic string) func(context.Context) (map[int32]int64, error) {
	return func(context.Context) (map[int32]int64, error) {
		out := map[int32]int64{}
		if gi := c.GroupInfo(group); gi != nil {
			for p, gc := range gi.Commits[topic] {
				out[p] = gc.Offset
			}
		}
		return out, nil
	}
}

// noTimeRetention gives an events topic of an older data dir, created
// before this rule, the retention.ms=-1 that keeps kfake from deleting it.
func (b *Broker) noTimeRetention(topic string) error {
	if v := b.cluster.TopicInfo(topic).Configs["retention.ms"]; v != nil && *v == "-1" {
		return nil
	}
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	admin, err := sarama.NewClusterAdmin(b.Addrs(), cfg)
	if err != nil {
		return fmt.Errorf("broker: connect to set retention.ms of %s: %w", topic, err)
	}
	defer admin.Close()
	neg := "-1"
	if err := admin.AlterConfig(sarama.TopicResource, topic, map[string]*string{"retention.ms": &neg}, false); err != nil {
		return fmt.Errorf("broker: set retention.ms of %s: %w", topic, err)
	}
	return nil
}
