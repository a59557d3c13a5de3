package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allezon/allezon/gateway/breaker"
	"github.com/allezon/allezon/schemas"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/valyala/fasthttp"
)

// healthTimeout bounds each backend's ping, so a hanging backend is
// reported within a second.
const healthTimeout = time.Second

// errNotChecked is a backend's state before its first ping ended, or when
// its last answer is too old (a ping that ignores its deadline).
var errNotChecked = errors.New("no recent health check")

var (
	backendUp = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "allezon_backend_up",
		Help: "1 when the backend's last health check passed, 0 otherwise.",
	}, []string{"backend"})
	healthCheckFailures = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "allezon_health_check_failures_total",
		Help: "Background health checks (pings) that failed, by backend.",
	}, []string{"backend"})
)

// PublicHealthError gives a health check's error a text for the API port,
// public, which must name no host, address or path. Other errors show
// there as "unavailable"; the ops listener and the log always have err's
// full text.
func PublicHealthError(public string, err error) error { return publicError{err, public} }

type publicError struct {
	error
	public string
}

func (e publicError) Unwrap() error { return e.error }

// checkResult is one backend's last health check.
type checkResult struct {
	err error
	at  time.Time
}

// healthCache holds the last check of each backend. A goroutine per backend
// pings it every interval under healthTimeout and stores the result, so
// /health only reads: no request reaches a backend, however many come.
type healthCache struct {
	names    []string // sorted
	pingers  []Pinger
	results  []atomic.Pointer[checkResult]
	interval time.Duration
	log      *slog.Logger

	start sync.Once
	stop  context.CancelFunc
	done  sync.WaitGroup
}

func newHealthCache(pingers map[string]Pinger, interval time.Duration, log *slog.Logger) *healthCache {
	h := &healthCache{interval: interval, log: log}
	for n := range pingers {
		h.names = append(h.names, n)
	}
	sort.Strings(h.names)
	for _, n := range h.names {
		h.pingers = append(h.pingers, pingers[n])
	}
	h.results = make([]atomic.Pointer[checkResult], len(h.names))
	return h
}

// run checks every backend once, then goes on in the background until
// close. Only the first call does anything.
func (h *healthCache) run() {
	h.start.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		h.stop = cancel
		var first sync.WaitGroup
		for i := range h.names {
			first.Add(1)
			h.done.Add(1)
			go func() {
				defer h.done.Done()
				h.loop(ctx, i, &first)
			}()
		}
		// /health is exact from the first request, unless a ping
		// ignores its deadline.
		checked := make(chan struct{})
		go func() { first.Wait(); close(checked) }()
		select {
		case <-checked:
		case <-time.After(healthTimeout + 100*time.Millisecond):
		}
	})
}

// close stops the checks and waits for them, so no ping outlives the server
// (the backends close after it).
func (h *healthCache) close() {
	h.start.Do(func() {}) // a cache never run stays so
	if h.stop != nil {
		h.stop()
	}
	h.done.Wait()
}

// loop pings backend i every interval; first is released after the first ping.
func (h *healthCache) loop(ctx context.Context, i int, first *sync.WaitGroup) {
	name := h.names[i]
	up := backendUp.WithLabelValues(name)
	failures := healthCheckFailures.WithLabelValues(name)
	t := time.NewTicker(h.interval)
	defer t.Stop()
	var prev error = errNotChecked
	for {
		pctx, cancel := context.WithTimeout(ctx, healthTimeout)
		err := h.pingers[i].Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			if first != nil {
				first.Done()
			}
			return
		}
		h.results[i].Store(&checkResult{err: err, at: time.Now()})
		if err != nil {
			failures.Inc()
			up.Set(0)
			if prev == nil || prev == errNotChecked {
				h.log.Warn("backend health check failed", "backend", name, "err", err)
			}
		} else {
			up.Set(1)
			if prev != nil && prev != errNotChecked {
				h.log.Info("backend health check passes again", "backend", name)
			}
		}
		prev = err
		if first != nil {
			first.Done()
			first = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// result is backend i's last check; one older than a few intervals is
// errNotChecked, as a ping stuck past its deadline leaves it.
func (h *healthCache) result(i int, now time.Time) error {
	r := h.results[i].Load()
	if r == nil || now.Sub(r.at) > 3*h.interval+healthTimeout {
		return errNotChecked
	}
	return r.err
}

// health handles GET /health: {"status":"ok|degraded","backends":{name:"ok"|error}},
// 200 when every backend passed its last check and 503 otherwise, from the
// cache (checked every HealthInterval). A backend whose circuit breaker is
// open is not ok either, whatever its ping says: the gateway refuses its
// calls until the cool-down ends. detailed shows each error's text (the
// ops listener); otherwise only texts marked public are shown, any other
// failure reads "unavailable".
func (s *Server) health(ctx *fasthttp.RequestCtx, detailed bool) {
	h := s.checks
	now := time.Now()
	errs := make([]error, len(h.names))
	status, code := "ok", fasthttp.StatusOK
	for i, n := range h.names {
		errs[i] = h.result(i, now)
		if bb := s.breakers.byName(n); bb != nil && bb.State() == breaker.Open {
			errs[i] = breakerOpenError{ping: errs[i]}
		}
		if errs[i] != nil {
			status, code = "degraded", fasthttp.StatusServiceUnavailable
		}
	}
	body := append(make([]byte, 0, 128), `{"status":"`...)
	body = append(body, status...)
	body = append(body, `","backends":{`...)
	for i, n := range h.names {
		if i > 0 {
			body = append(body, ',')
		}
		body = schemas.AppendJSONString(body, n)
		body = append(body, ':')
		if errs[i] == nil {
			body = append(body, `"ok"`...)
		} else {
			body = schemas.AppendJSONString(body, healthText(errs[i], detailed))
		}
	}
	body = append(body, "}}"...)
	ctx.SetStatusCode(code)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(body)
}

// healthText is how /health shows a failed check.
func healthText(err error, detailed bool) string {
	var open breakerOpenError
	var public publicError
	switch {
	case detailed:
		return err.Error()
	case errors.As(err, &open):
		return "circuit breaker open"
	case errors.As(err, &public):
		return public.public
	case errors.Is(err, errNotChecked):
		return err.Error()
	}
	return "unavailable"
}

// breakerOpenError is how /health reports a backend whose breaker is open,
// with its ping's error when the ping failed too.
type breakerOpenError struct{ ping error }

func (e breakerOpenError) Error() string {
	if e.ping == nil {
		return "circuit breaker open"
	}
	return "circuit breaker open; ping: " + e.ping.Error()
}
