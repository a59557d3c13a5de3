// Package gateway is Allezon's HTTP front: it accepts user tags and answers
// the two query endpoints of SPEC.md. A request's path reads top to bottom:
// the router below picks a handler; usertags.go, userprofiles.go and
// aggregates.go each validate, call their store through a small interface
// declared here, and write the answer.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/allezon/allezon/gateway/profiles"
	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

// ProfileStore keeps each cookie's recent tags (satisfied by profiles.Store).
type ProfileStore interface {
	Append(ctx context.Context, t *schemas.UserTag, tagJSON []byte) error
	Read(ctx context.Context, cookie string, r schemas.TimeRange, limit int) (profiles.Profile, error)
}

// Publisher puts a tag's event on the event log and returns once the broker
// acknowledged it (satisfied by publish.Publisher).
type Publisher interface {
	Publish(ctx context.Context, key, value []byte) error
}

// AggregateReader answers per-minute totals (satisfied by aggregates.Store).
type AggregateReader interface {
	Query(ctx context.Context, q *schemas.AggregateQuery) ([]schemas.Totals, error)
}

// Pinger reports whether a backend is reachable; a background loop asks
// each one every HealthInterval and /health reports the last answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

// WriteGate says whether the gateway may write now (satisfied by
// diskfloor.Watcher): a non-nil Err, such as free disk space below its
// floor, refuses tags with 503 before any store is touched.
type WriteGate interface {
	Err() error
}

// Backends are the stores and the event log the gateway talks to. Health
// names every backend to ping under the name /health reports it by. With
// no Profiles the server is an ops server: only /health and /metrics, as
// the pipeline component runs it.
type Backends struct {
	Profiles   ProfileStore
	Events     Publisher
	Aggregates AggregateReader
	Health     map[string]Pinger
	// Writes, when set, is asked before each tag is stored.
	Writes WriteGate
}

// Config holds the gateway's HTTP settings.
type Config struct {
	Addr string
	// BackendTimeout bounds each request's work on the stores and the
	// broker, so a slow dependency gives a 503 instead of a hang.
	BackendTimeout time.Duration
	ReadTimeout    time.Duration
	WriteTimeout   time.Duration
	IdleTimeout    time.Duration
	// MaxTagBytes bounds a POST /user_tags body (400 above, SPEC §1). Queries carry
	// their expected answer as the body in debug mode, up to 400 tags, so
	// they get the larger MaxQueryBytes.
	MaxTagBytes   int
	MaxQueryBytes int
	// MaxHeaderBytes bounds the request line and the headers together
	// (fasthttp's ReadBufferSize, allocated per connection): a request
	// whose head does not fit gets 431, a long URI included.
	MaxHeaderBytes int
	// MaxCookieBytes bounds a cookie: a tag with a longer one is a 400
	// and is not stored; a /user_profiles path with a longer one is a
	// 414 (no tag can be stored under it). schemas.MaxCookieBytes, the
	// default, is also the ceiling: the bounds on answers and records
	// rest on it, so a larger value is lowered to it.
	MaxCookieBytes int
	// MaxFuture is how far ahead of the gateway's clock a tag's time may
	// lie (schemas.CheckNotFuture); beyond it the tag is a 400. 0, the
	// zero Config's value, turns the check off; allezon's --max-future
	// defaults to schemas.DefaultMaxFuture.
	MaxFuture time.Duration
	// MaxConns bounds the connections served at once (fasthttp's
	// Concurrency; a keep-alive connection counts while it is open).
	// fasthttp answers a connection beyond it with its own plain-text 503
	// and closes it.
	MaxConns int
	// MaxConnsPerIP bounds the connections of one IPv4 address (fasthttp
	// answers 429 and closes); 0 is no limit. fasthttp does not count
	// IPv6 peers.
	MaxConnsPerIP int
	// BreakerFailures is how many consecutive failed calls of a backend
	// open its circuit breaker (breakers.go). 0, the zero Config's
	// value, disables the breakers; allezon's --breaker-failures
	// defaults to 5.
	BreakerFailures int
	// BreakerCooldown is how long an open breaker fails calls at once
	// before it lets probes through; default 2s.
	BreakerCooldown time.Duration
	// SeparateOps moves /health and /metrics to the listener given to
	// ServeOps: the API listener then answers them 404.
	SeparateOps bool
	// HealthInterval is how often each backend is pinged for /health;
	// default 1s.
	HealthInterval time.Duration
	Logger         *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = ":8088"
	}
	if c.BackendTimeout <= 0 {
		c.BackendTimeout = 2 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxTagBytes <= 0 {
		c.MaxTagBytes = 64 << 10
	}
	if c.MaxQueryBytes <= 0 {
		c.MaxQueryBytes = 4 << 20
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 8 << 10
	}
	if c.MaxCookieBytes <= 0 || c.MaxCookieBytes > schemas.MaxCookieBytes {
		c.MaxCookieBytes = schemas.MaxCookieBytes
	}
	c.MaxFuture = max(c.MaxFuture, 0)
	if c.MaxConns <= 0 {
		c.MaxConns = 4096
	}
	c.MaxConnsPerIP = max(c.MaxConnsPerIP, 0)
	c.BreakerFailures = max(c.BreakerFailures, 0)
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = 2 * time.Second
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server is the gateway: a fasthttp server over the backends.
type Server struct {
	cfg Config
	b   Backends
	// breakers guard the calls to b's three backends, one each.
	breakers breakers
	log      *slog.Logger
	http     *fasthttp.Server
	// ops serves /health and /metrics apart from the API (SeparateOps).
	ops     *fasthttp.Server
	checks  *healthCache
	metrics fasthttp.RequestHandler
}

// New builds a gateway over the given backends.
func New(cfg Config, b Backends) *Server {
	cfg.setDefaults()
	s := &Server{cfg: cfg, b: b, log: cfg.Logger, metrics: metricsHandler()}
	s.breakers = newBreakers(&cfg)
	s.checks = newHealthCache(b.Health, cfg.HealthInterval, s.log)
	s.http = &fasthttp.Server{
		Handler:      s.route,
		Name:         "allezon",
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cfg.WriteTimeout,
		IdleTimeout:  cfg.IdleTimeout,
		// The limits that bound the memory of requests (docs/operations.md
		// "What bounds memory under overload"): head and body per
		// connection, connections.
		ReadBufferSize: cfg.MaxHeaderBytes,
		// Bodies are streamed and read by the router as they arrive
		// (body.go), under each route's limit. A streaming fasthttp
		// pre-reads min(limit, Content-Length, 8 KiB) before the
		// handler; a limit of one byte makes that pre-read one byte,
		// and a larger body goes to the handler as a stream.
		StreamRequestBody:            true,
		MaxRequestBodySize:           1,
		Concurrency:                  cfg.MaxConns,
		MaxConnsPerIP:                cfg.MaxConnsPerIP,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		ErrorHandler:                 s.transportError,
		Logger:                       fasthttpLogger{s.log},
	}
	s.ops = &fasthttp.Server{
		Handler:      s.routeOps,
		Name:         "allezon",
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cfg.WriteTimeout,
		IdleTimeout:  cfg.IdleTimeout,
		// Scrapers and health checks: small requests, few connections.
		ReadBufferSize:               cfg.MaxHeaderBytes,
		MaxRequestBodySize:           4 << 10,
		Concurrency:                  opsMaxConns,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		ErrorHandler:                 s.transportError,
		Logger:                       fasthttpLogger{s.log},
	}
	return s
}

// opsMaxConns bounds the ops listener's connections.
const opsMaxConns = 64

// Serve answers requests on ln until Shutdown. The health checks start
// with the first Serve or ServeOps.
func (s *Server) Serve(ln net.Listener) error {
	s.checks.run()
	if err := s.http.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("gateway: serve: %w", err)
	}
	return nil
}

// ServeOps answers /health (with each failure's text) and /metrics on ln,
// apart from the API, until Shutdown.
func (s *Server) ServeOps(ln net.Listener) error {
	s.checks.run()
	if err := s.ops.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("gateway: serve ops: %w", err)
	}
	return nil
}

// ListenAndServe listens on the configured address and serves.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listen %s: %w", s.cfg.Addr, err)
	}
	s.log.Info("gateway listening", "addr", ln.Addr().String())
	return s.Serve(ln)
}

// Shutdown stops accepting connections, waits for requests in flight and
// stops the health checks.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.checks.close()
	return errors.Join(s.http.ShutdownWithContext(ctx), s.ops.ShutdownWithContext(ctx))
}

// route is the router: every request enters here. It reads the body first,
// as the route needs it (body.go), so every route answers a slow or
// oversized body alike, then hands the request to its handler.
func (s *Server) route(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	rid := requestID(ctx)
	path := ctx.Request.URI().PathOriginal()
	rt := s.routeOf(path)
	buf := bodyPool.Get().(*[]byte)
	body, err := readBody(ctx, (*buf)[:0], s.bodyLimit(rt), keepsBody(rt))
	if err != nil {
		bodyError(ctx, rt, err)
	} else {
		s.dispatch(ctx, rid, rt, path, body)
	}
	if cap(body) <= maxPooledBody {
		*buf = body[:0]
		bodyPool.Put(buf)
	}
	observe(rt, ctx.Response.StatusCode(), time.Since(start))
}

// routeOf names the route of path; an ops-only server (the pipeline's)
// serves health and metrics only, and with SeparateOps the API listener
// serves them not at all.
func (s *Server) routeOf(path []byte) route {
	switch {
	case string(path) == "/health" && !s.cfg.SeparateOps:
		return routeHealth
	case string(path) == "/metrics" && !s.cfg.SeparateOps:
		return routeMetrics
	case s.b.Profiles == nil:
		return routeOther
	case string(path) == "/user_tags":
		return routeUserTags
	case hasPrefix(path, userProfilesPrefix):
		return routeUserProfiles
	case string(path) == "/aggregates":
		return routeAggregates
	}
	return routeOther
}

// dispatch checks the method and calls rt's handler with the body read.
func (s *Server) dispatch(ctx *fasthttp.RequestCtx, rid string, rt route, path, body []byte) {
	switch rt {
	case routeUserTags:
		if s.allow(ctx, rid, fasthttp.MethodPost) {
			s.userTags(ctx, rid, body)
		}
	case routeUserProfiles:
		if s.allow(ctx, rid, fasthttp.MethodPost) {
			s.userProfiles(ctx, rid, path[len(userProfilesPrefix):], body)
		}
	case routeAggregates:
		if s.allow(ctx, rid, fasthttp.MethodPost) {
			s.aggregates(ctx, rid, body)
		}
	case routeHealth:
		if s.allow(ctx, rid, fasthttp.MethodGet) {
			// The API port shows failures' texts only where it is
			// no API: the pipeline's ops-only server.
			s.health(ctx, s.b.Profiles == nil)
		}
	case routeMetrics:
		if s.allow(ctx, rid, fasthttp.MethodGet) {
			s.metrics(ctx)
		}
	case routeOther:
		if s.b.Profiles == nil {
			writeError(ctx, fasthttp.StatusNotFound, "no such endpoint on this component")
		} else {
			writeError(ctx, fasthttp.StatusNotFound, "no such endpoint")
		}
	}
}

// routeOps is the ops listener's router: /health, /metrics, nothing else.
func (s *Server) routeOps(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	rid := requestID(ctx)
	rt := routeOther
	switch path := ctx.Request.URI().PathOriginal(); string(path) {
	case "/health":
		rt = routeHealth
		if s.allow(ctx, rid, fasthttp.MethodGet) {
			s.health(ctx, true)
		}
	case "/metrics":
		rt = routeMetrics
		if s.allow(ctx, rid, fasthttp.MethodGet) {
			s.metrics(ctx)
		}
	default:
		writeError(ctx, fasthttp.StatusNotFound, "no such endpoint on the ops listener")
	}
	observe(rt, ctx.Response.StatusCode(), time.Since(start))
}

// allow answers 405 unless the request uses method (HEAD is fine for GET).
func (s *Server) allow(ctx *fasthttp.RequestCtx, rid, method string) bool {
	m := ctx.Method()
	if string(m) == method || (method == fasthttp.MethodGet && string(m) == fasthttp.MethodHead) {
		return true
	}
	ctx.Response.Header.Set(fasthttp.HeaderAllow, method)
	writeError(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed; use "+method)
	return false
}

// backendContext bounds the work one request may do on the backends.
func (s *Server) backendContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
}

// transportError answers requests fasthttp could not read (bodies are the
// router's, body.go): a request line and headers longer than
// MaxHeaderBytes 431 (fasthttp reads them into one
// buffer and fails before it parsed the request line, so a long URI is a
// 431 too, not a 414), a client slower than ReadTimeout 408, anything else
// 400.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge): // not with streamed bodies; kept as a guard
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "request body too large")
	case errors.As(err, &small):
		writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large")
	case errors.As(err, &netErr) && netErr.Timeout():
		writeError(ctx, fasthttp.StatusRequestTimeout, "request not received in time")
	default:
		writeError(ctx, fasthttp.StatusBadRequest, "malformed HTTP request")
	}
	observe(routeOther, ctx.Response.StatusCode(), 0)
}

func hasPrefix(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}
