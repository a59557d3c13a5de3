package publish

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	metricMessages = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_producer_messages_total",
		Help: "Messages published, by result: acked, error (the producer reported a failure or the publisher is closed), timeout (ctx ended or Timeout passed before the ack).",
	}, []string{"result"})
	// Resolved once: a label lookup per message would cost a map access.
	metricAcked   = metricMessages.WithLabelValues("acked")
	metricError   = metricMessages.WithLabelValues("error")
	metricTimeout = metricMessages.WithLabelValues("timeout")

	metricAckSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "allezon_producer_ack_seconds",
		Help:    "Time from Publish to the broker's ack, for acknowledged messages.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms .. ~4s
	})
	metricInflight = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "allezon_producer_inflight",
		Help: "Messages handed to the producer and not yet acknowledged or failed, including those of timed-out requests.",
	})
	metricLateAcks = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_producer_late_acks_total",
		Help: "Messages acknowledged after their Publish timed out: events that a client retry may duplicate.",
	})
	metricRestarts = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_producer_restarts_total",
		Help: "Times the publisher replaced a producer that stopped acknowledging.",
	})
)
