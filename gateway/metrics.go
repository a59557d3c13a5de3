package gateway

import (
	"strconv"
	"time"

	"github.com/allezon/allezon/gateway/breaker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// route names a group of requests in the metrics.
type route uint8

const (
	routeUserTags route = iota
	routeUserProfiles
	routeAggregates
	routeHealth
	routeMetrics
	routeOther
	numRoutes
)

var routeNames = [numRoutes]string{"user_tags", "user_profiles", "aggregates", "health", "metrics", "other"}

var (
	httpRequests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_http_requests_total",
		Help: "HTTP requests answered by the gateway, by route and status code.",
	}, []string{"route", "code"})
	httpDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "allezon_http_request_duration_seconds",
		Help:    "Time from reading a request to writing its answer, by route.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .2, .5, 1, 2.5, 5},
	}, []string{"route"})
	backendDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "allezon_backend_duration_seconds",
		Help:    "Latency of the gateway's calls to its backends, by backend and operation.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"backend", "op"})
	backendErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_backend_errors_total",
		Help: "Failed calls of the gateway to its backends, by backend and operation.",
	}, []string{"backend", "op"})
	backendDataErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_backend_data_errors_total",
		Help: "Calls a backend refused for the request's data (answered 400, not counted as failures), by backend and operation.",
	}, []string{"backend", "op"})
	breakerState = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "allezon_breaker_state",
		Help: "State of the circuit breaker of each backend: 0 closed, 1 half-open, 2 open.",
	}, []string{"backend"})
	breakerTransitions = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_breaker_transitions_total",
		Help: "Changes of state of the circuit breakers, by backend and new state (closed, half-open, open).",
	}, []string{"backend", "to"})
	breakerRejected = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_breaker_rejected_total",
		Help: "Backend calls an open or half-open circuit breaker refused (answered 503 at once), by backend.",
	}, []string{"backend"})
	tagsRefusedByGate = promauto.NewCounter(prometheus.CounterOpts{
		Name: "allezon_tags_refused_disk_floor_total",
		Help: "Tags refused with 503 before any store was touched, because free disk space was below --min-free-disk.",
	})
	debugMismatches = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_debug_mismatches_total",
		Help: "Queries whose answer differed from the expected answer in the request body (builds with -tags querydebug).",
	}, []string{"endpoint"})
)

// durationByRoute holds the histogram of each route, resolved once, so the
// hot path does not hash label values.
var durationByRoute = func() (h [numRoutes]prometheus.Observer) {
	for r := range h {
		h[r] = httpDuration.WithLabelValues(routeNames[r])
	}
	return h
}()

// The common status codes of the hot routes, resolved once.
var commonCodes = []int{200, 204, 400, 404, 405, 413, 503}

var requestsByRoute = func() (m [numRoutes]map[int]prometheus.Counter) {
	for r := range m {
		m[r] = make(map[int]prometheus.Counter, len(commonCodes))
		for _, c := range commonCodes {
			m[r][c] = httpRequests.WithLabelValues(routeNames[r], strconv.Itoa(c))
		}
	}
	return m
}()

func init() {
	// Both series exist from the start, so dashboards and alerts see a 0
	// rather than no data.
	debugMismatches.WithLabelValues(endpointUserProfiles)
	debugMismatches.WithLabelValues(endpointAggregates)
	for _, b := range backendNames {
		breakerState.WithLabelValues(b)
		breakerRejected.WithLabelValues(b)
		for _, st := range breaker.States {
			breakerTransitions.WithLabelValues(b, st.String())
		}
	}
}

func observe(r route, status int, d time.Duration) {
	if c, ok := requestsByRoute[r][status]; ok {
		c.Inc()
	} else {
		httpRequests.WithLabelValues(routeNames[r], strconv.Itoa(status)).Inc()
	}
	durationByRoute[r].Observe(d.Seconds())
}

// backendOp is one kind of call to a backend, with its metrics resolved.
type backendOp struct {
	duration   prometheus.Observer
	errors     prometheus.Counter
	dataErrors prometheus.Counter
}

func newBackendOp(backend, op string) backendOp {
	return backendOp{
		duration:   backendDuration.WithLabelValues(backend, op),
		errors:     backendErrors.WithLabelValues(backend, op),
		dataErrors: backendDataErrors.WithLabelValues(backend, op),
	}
}

var (
	opProfileAppend  = newBackendOp("profiles", "append")
	opProfileRead    = newBackendOp("profiles", "read")
	opEventPublish   = newBackendOp("events", "publish")
	opAggregateQuery = newBackendOp("aggregates", "query")
)

// done records one call that started at start and ended with err.
func (o backendOp) done(start time.Time, err error) {
	o.duration.Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
	case isDataError(err):
		o.dataErrors.Inc()
	default:
		o.errors.Inc()
	}
}

func metricsHandler() fasthttp.RequestHandler {
	return fasthttpadaptor.NewFastHTTPHandler(promhttp.Handler())
}

// Endpoint names of allezon_debug_mismatches_total.
const (
	endpointUserProfiles = "user_profiles"
	endpointAggregates   = "aggregates"
)
