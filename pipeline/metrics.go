package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Commit error reasons, the values of the "reason" label of
// allezon_pipeline_commit_errors_total.
const (
	reasonFenced = "fenced" // another writer moved the partition's offset: this worker is a zombie
	reasonStore  = "store"  // the store failed or timed out: the commit may or may not have applied
)

// The pipeline's metrics live on the default registry, which the binary
// serves on /metrics. They are package-level because a process runs one
// pipeline; several Run calls in one process (tests) share them.
var (
	eventsConsumed = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_events_consumed_total",
		Help: "Events read from the events topic (decoded or not).",
	})
	decodeErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_decode_errors_total",
		Help: "Events skipped because their Avro value did not decode.",
	})
	commits = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_commits_total",
		Help: "Successful commits of one partition's deltas and next offset.",
	})
	commitErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_pipeline_commit_errors_total",
		Help: "Failed commits by reason (fenced: the stored offset moved; store: the store failed). The deltas are dropped and re-read.",
	}, []string{"reason"})
	commitsHeld = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_commits_held_total",
		Help: "Flushes of a partition not committed because the write gate held writes (free disk below --min-free-disk); the sums wait for a later flush.",
	})
	flushDuration = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "allezon_pipeline_flush_duration_seconds",
		Help:    "Time one partition's commit to the aggregates store took.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms .. ~8 s
	})
	cellsPerFlush = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "allezon_pipeline_cells_per_flush",
		Help:    "Distinct full cells in one partition's commit.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 10), // 1 .. ~262k
	})
	consumerLag = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "allezon_pipeline_consumer_lag",
		Help: "Events in the partition not yet consumed by this worker (high watermark - next offset), at the last flush tick.",
	}, []string{"topic", "partition"})
	rebalances = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_rebalances_total",
		Help: "Consumer group sessions set up (each join or rejoin after a rebalance or an error).",
	})
	consumerErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_consumer_errors_total",
		Help: "Errors reported by the Kafka consumer group (fetch, offset, session errors) and failed joins.",
	})
	sinkErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_pipeline_sink_errors_total",
		Help: "Failed reads of stored offsets and failed retention drops on the aggregates store, by operation.",
	}, []string{"op"})
	drops = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_retention_drops_total",
		Help: "Retention drops that moved the cut-off (minutes older than the retention window deleted).",
	})
)

func init() {
	// Every error series exists from the start at 0, so dashboards and
	// alerts see "no errors" rather than "no data".
	for _, r := range []string{reasonFenced, reasonStore} {
		commitErrors.WithLabelValues(r)
	}
	for _, op := range []string{"offsets", "drop"} {
		sinkErrors.WithLabelValues(op)
	}
}
