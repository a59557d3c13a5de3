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

// Pinger reports whether a backend is reachable; /health asks each one.
type Pinger interface {
	Ping(ctx context.Context) error
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
	Logger        *slog.Logger
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
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server is the gateway: a fasthttp server over the backends.
type Server struct {
	cfg     Config
	b       Backends
	log     *slog.Logger
	http    *fasthttp.Server
	metrics fasthttp.RequestHandler
}

// New builds a gateway over the given backends.
func New(cfg Config, b Backends) *Server {
	cfg.setDefaults()
	s := &Server{cfg: cfg, b: b, log: cfg.Logger, metrics: metricsHandler()}
	s.http = &fasthttp.Server{
		Handler:                      s.route,
		Name:                         "allezon",
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		MaxRequestBodySize:           max(cfg.MaxTagBytes, cfg.MaxQueryBytes),
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		ErrorHandler:                 s.transportError,
		Logger:                       fasthttpLogger{s.log},
	}
	return s
}

// Serve answers requests on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("gateway: serve: %w", err)
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

// Shutdown stops accepting connections and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.ShutdownWithContext(ctx)
}

// route is the router: every request enters here.
func (s *Server) route(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	rid := requestID(ctx)
	path := ctx.Request.URI().PathOriginal()
	var rt route
	switch {
	case s.b.Profiles == nil && !(string(path) == "/health" || string(path) == "/metrics"):
		// An ops-only server (the pipeline's) serves health and metrics.
		rt = routeOther
		writeError(ctx, fasthttp.StatusNotFound, "no such endpoint on this component")
	case string(path) == "/user_tags":
		rt = routeUserTags
		if s.allow(ctx, rid, fasthttp.MethodPost) {
			s.userTags(ctx, rid)
		}
	case hasPrefix(path, userProfilesPrefix):
		rt = routeUserProfiles
		if s.allow(ctx, rid, fasthttp.MethodPost) {
			s.userProfiles(ctx, rid, path[len(userProfilesPrefix):])
		}
	case string(path) == "/aggregates":
		rt = routeAggregates
		if s.allow(ctx, rid, fasthttp.MethodPost) {
			s.aggregates(ctx, rid)
		}
	case string(path) == "/health":
		rt = routeHealth
		if s.allow(ctx, rid, fasthttp.MethodGet) {
			s.health(ctx)
		}
	case string(path) == "/metrics":
		rt = routeMetrics
		if s.allow(ctx, rid, fasthttp.MethodGet) {
			s.metrics(ctx)
		}
	default:
		rt = routeOther
		writeError(ctx, fasthttp.StatusNotFound, "no such endpoint")
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

// transportError answers requests fasthttp could not read: an oversized
// body gets 413 (400 on /user_tags, as SPEC §1 says), a too-large header
// 431, anything else 400.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge) && string(ctx.Request.URI().PathOriginal()) == "/user_tags":
		writeError(ctx, fasthttp.StatusBadRequest, "request body too large")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "request body too large")
	case errors.As(err, &small):
		writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large")
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
