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
	// reasonData: the store refused the sums of several events as data; they are re-read one at a time (isolation).
	reasonData = "data"
	// reasonDeadLetter: the dead-letter topic did not acknowledge; nothing was committed.
	reasonDeadLetter = "dead_letter"
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
		Help: "Failed commits by reason (fenced: the stored offset moved; store: the store failed; data: the store refused several events' sums as data; dead_letter: the dead-letter topic did not acknowledge). The deltas are dropped and re-read.",
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
		Help: "Events of the partition not yet committed to the aggregates (high watermark - stored offset), for every partition this worker owns or last owned; it stays while the partition is stuck.",
	}, []string{"topic", "partition"})
	lastFlush = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "allezon_pipeline_last_flush_timestamp_seconds",
		Help: "Unix time the partition last made progress: its last successful commit, the last flush tick that found it caught up, or when this worker took it. A stuck partition's value stops moving.",
	}, []string{"topic", "partition"})
	deadLetters = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_pipeline_dead_letters_total",
		Help: "Events moved to the dead-letter topic instead of being counted, by reason (decode, future, refused).",
	}, []string{"reason"})
	eventsLost = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_events_lost_total",
		Help: "Events deleted by the broker before the pipeline counted them (a partition resumed behind Kafka's oldest offset).",
	})
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
	retentionCutoff = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "allezon_pipeline_retention_cutoff_seconds",
		Help: "Event time (Unix seconds) of the first minute the aggregates keep, as of the last drop that moved it.",
	})
	retentionJumps = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_retention_jumps_total",
		Help: "Retention drops that moved the cut-off by more than 5 minutes at once (each logged at WARN).",
	})
	drops = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_pipeline_retention_drops_total",
		Help: "Retention drops that moved the cut-off (minutes older than the retention window deleted).",
	})
)

func init() {
	// Every error series exists from the start at 0, so dashboards and
	// alerts see "no errors" rather than "no data".
	for _, r := range []string{reasonFenced, reasonStore, reasonData, reasonDeadLetter} {
		commitErrors.WithLabelValues(r)
	}
	for _, r := range []string{reasonDecode, reasonFuture, reasonRefused} {
		deadLetters.WithLabelValues(r)
	}
	for _, op := range []string{"offsets", "drop"} {
		sinkErrors.WithLabelValues(op)
	}
}
