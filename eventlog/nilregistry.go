package eventlog

import metrics "github.com/rcrowley/go-metrics"

// nilRegistry gives sarama no-op meters, counters and histograms. sarama
// updates its go-metrics on every request (locked sample reservoirs, EWMA
// meters ticked by a global goroutine) and Allezon never reads them: the
// producer is measured by this package's Prometheus metrics. Unlike
// metrics.UseNilMetrics it is per client, so it does not silence go-metrics
// for other packages.
type nilRegistry struct{}

// GetOrRegister returns the no-op kind of the metric that would be created;
// anything else it is given (a metric value) is returned as is.
func (nilRegistry) GetOrRegister(_ string, metric any) any {
	switch m := metric.(type) {
	case func() metrics.Meter:
		return metrics.NilMeter{}
	case func() metrics.Counter:
		return metrics.NilCounter{}
	case func() metrics.Histogram:
		return metrics.NilHistogram{}
	case func() metrics.Gauge:
		return metrics.NilGauge{}
	case func() metrics.GaugeFloat64:
		return metrics.NilGaugeFloat64{}
	case func() metrics.Timer:
		return metrics.NilTimer{}
	default:
		return m
	}
}

func (nilRegistry) Each(func(string, any))            {}
func (nilRegistry) Get(string) any                    { return nil }
func (nilRegistry) GetAll() map[string]map[string]any { return nil }
func (nilRegistry) Register(string, any) error        { return nil }
func (nilRegistry) RunHealthchecks()                  {}
func (nilRegistry) Unregister(string)                 {}
func (nilRegistry) UnregisterAll()                    {}
