package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/allezon/allezon/broker"
	"github.com/allezon/allezon/diskfloor"
	"github.com/allezon/allezon/gateway"
	"github.com/allezon/allezon/gateway/profiles"
	"github.com/allezon/allezon/gateway/publish"
	"github.com/allezon/allezon/pipeline"
	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/services/postgres"
)

// closers shuts down what a command started, in reverse order of starting.
type closers struct {
	names []string
	fns   []func() error
}

func (c *closers) add(name string, fn func() error) {
	c.names = append(c.names, name)
	c.fns = append(c.fns, fn)
}

func (c *closers) close(log *slog.Logger) {
	for i := len(c.fns) - 1; i >= 0; i-- {
		if err := c.fns[i](); err != nil {
			log.Error("shutdown", "component", c.names[i], "err", err)
		}
	}
}

// runAll runs every component in one process: the embedded broker (unless
// --events names a Kafka), the stores, a stream worker and the gateway.
func runAll(ctx context.Context, args []string) error {
	var c config
	fs := newFlagSet("all")
	c.commonFlags(fs, ":8088")
	c.eventsFlags(fs)
	c.gatewayFlags(fs)
	c.aggregatesFlags(fs)
	c.pipelineFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	return run(ctx, &c, true, true)
}

// runGateway runs the gateway alone.
func runGateway(ctx context.Context, args []string) error {
	var c config
	fs := newFlagSet("gateway")
	c.commonFlags(fs, ":8088")
	c.eventsFlags(fs)
	c.gatewayFlags(fs)
	c.aggregatesFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	return run(ctx, &c, true, false)
}

// runPipeline runs a stream worker alone, with /health and /metrics.
func runPipeline(ctx context.Context, args []string) error {
	var c config
	fs := newFlagSet("pipeline")
	c.commonFlags(fs, ":8089")
	c.eventsFlags(fs)
	c.aggregatesFlags(fs)
	c.pipelineFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	return run(ctx, &c, false, true)
}

// run starts the chosen components and blocks until ctx ends or one fails.
func run(ctx context.Context, c *config, withGateway, withPipeline bool) error {
	c.resolve()
	if err := c.applyPasswordFile(); err != nil {
		return err
	}
	if withGateway {
		if err := c.checkLimits(); err != nil {
			return err
		}
	}
	log, err := c.logger()
	if err != nil {
		return err
	}
	var cl closers
	defer cl.close(log)
	startAdmin(c.AdminAddr, log, &cl)
	health := map[string]gateway.Pinger{}
	disk, err := startDiskFloor(c, log, withGateway, withPipeline)
	if err != nil {
		return err
	}
	if disk != nil {
		cl.add("diskfloor", func() error { disk.Close(); return nil })
		health["disk"] = diskHealth{disk}
	}

	var stored storedOffsets
	brokers, topic, err := startEvents(c, log, &cl, stored.committed)
	if err != nil {
		return err
	}
	agg, err := openAggregates(ctx, c, log, withPipeline)
	if err != nil {
		return err
	}
	cl.add("aggregates", agg.Close)
	stored.set(agg, topic)
	cl.add("broker retention bound", func() error { stored.set(nil, ""); return nil })
	health["aggregates"] = agg
	if withGateway && !withPipeline && strings.HasPrefix(c.Aggregates, "pebble://") {
		log.Warn("the gateway alone reads a Pebble aggregates store that only a pipeline in the same process writes; use --aggregates postgres://... with a separate pipeline")
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if withPipeline {
		stop := startPipeline(ctx, c, log, brokers, topic, agg, disk, cancel)
		cl.add("pipeline", stop)
	}

	b := gateway.Backends{Health: health}
	if disk != nil {
		b.Writes = disk
	}
	if withGateway {
		prof, err := profiles.Open(ctx, c.Profiles, profiles.Options{Logger: log})
		if err != nil {
			return fmt.Errorf("profile store: %w", err)
		}
		cl.add("profiles", prof.Close)
		pub, err := publish.New(publish.Config{Brokers: brokers, Topic: topic, Timeout: c.BackendTimeout, Logger: log})
		if err != nil {
			return fmt.Errorf("event publisher: %w", err)
		}
		cl.add("publisher", pub.Close)
		b.Profiles, b.Events, b.Aggregates = prof, pub, agg
		health["profiles"], health["events"] = prof, pub
	}
	return serveHTTP(ctx, c, log, b, cancel)
}

// startDiskFloor watches the free space under the embedded data this
// process writes; nil when there is none, or --min-free-disk is 0.
func startDiskFloor(c *config, log *slog.Logger, withGateway, withPipeline bool) (*diskfloor.Watcher, error) {
	floor, err := diskfloor.ParseFloor(c.MinFreeDisk)
	if err != nil {
		return nil, fmt.Errorf("min-free-disk: %w", err)
	}
	paths := c.diskPaths(withGateway, withPipeline)
	if floor.Off() || len(paths) == 0 {
		return nil, nil
	}
	if floor.Bytes < pebbleWALReserve && floor.Percent == 0 {
		log.Warn("min-free-disk is below what the Pebble stores preallocate at once for new WALs: a preallocation may fill the disk and crash the process",
			"min_free_disk", floor.String(), "recommended_at_least", diskfloor.FormatBytes(pebbleWALReserve))
	}
	return diskfloor.Start(diskfloor.Config{Paths: paths, Floor: floor, Logger: log}), nil
}

// diskHealth is the disk floor as a /health check: the API port says only
// that space is short, the ops listener also where and how much (paths
// stay off the public port).
type diskHealth struct{ w *diskfloor.Watcher }

func (d diskHealth) Ping(ctx context.Context) error {
	err := d.w.Ping(ctx)
	if errors.Is(err, diskfloor.ErrBelowFloor) {
		return gateway.PublicHealthError("free disk space below the floor: tags refused", err)
	}
	return err
}

// pebbleWALReserve is what both Pebble stores preallocate when each
// starts a new WAL: 110 % of its memtable (64 MiB profiles, 32 MiB
// aggregates), in one go. Above the floor it must fit.
const pebbleWALReserve = 128 << 20

// startEvents starts the embedded broker when asked to, and says where the
// event log is.
func startEvents(c *config, log *slog.Logger, cl *closers, committed func(context.Context) (map[int32]int64, error)) ([]string, string, error) {
	if !c.embeddedEvents() {
		return kafkaURL(c.Events)
	}
	b, err := broker.Start(broker.Config{
		Dir:        filepath.Join(c.DataDir, "events"),
		Addr:       c.BrokerAddr,
		Topic:      defaultTopic,
		Partitions: int32(c.Partitions),
		Retention:  c.EventsRetention,
		Committed:  committed,
		Logger:     log,
	})
	if err != nil {
		return nil, "", fmt.Errorf("embedded broker: %w", err)
	}
	cl.add("broker", func() error { b.Close(); return nil })
	return b.Addrs(), defaultTopic, nil
}

// storedOffsets bounds the embedded broker's retention by the offsets in
// the aggregates store: the pipeline's own record of what it counted, which
// it resumes from (Kafka's group offsets may run ahead of it after a
// PostgreSQL failover lost commits). Until the store is open, and once it
// closes, it names no partition, so nothing is deleted.
type storedOffsets struct {
	mu    sync.Mutex
	store interface {
		Offsets(ctx context.Context, topic string) (map[int32]int64, error)
	}
	topic string
}

func (s *storedOffsets) set(store aggregates.Store, topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.store, s.topic = store, topic
}

func (s *storedOffsets) committed(ctx context.Context) (map[int32]int64, error) {
	s.mu.Lock()
	store, topic := s.store, s.topic
	s.mu.Unlock()
	if store == nil {
		return map[int32]int64{}, nil
	}
	offs, err := store.Offsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("stored offsets of %s: %w", topic, err)
	}
	return offs, nil
}

// openAggregates opens the aggregates store; the pipeline migrates a
// PostgreSQL schema before it writes.
func openAggregates(ctx context.Context, c *config, log *slog.Logger, migrate bool) (aggregates.Store, error) {
	if migrate && isPostgres(c.Aggregates) {
		if err := postgres.Migrate(ctx, c.Aggregates); err != nil {
			return nil, fmt.Errorf("migrate aggregates schema: %w", err)
		}
	}
	s, err := aggregates.Open(ctx, c.Aggregates, aggregates.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("aggregates store: %w", err)
	}
	return s, nil
}

func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// startPipeline runs a stream worker; a worker that fails stops the whole
// process (fail cancels it). The returned func stops it and waits for its
// drain and last commit. It does not stop when ctx ends: in allezon all the
// gateway drains its requests and the producer flushes first (closers run
// in reverse order), so the worker's drain then reaches every event of the
// log.
func startPipeline(ctx context.Context, c *config, log *slog.Logger, brokers []string, topic string,
	sink pipeline.Sink, disk *diskfloor.Watcher, fail context.CancelCauseFunc) func() error {
	session := c.SessionTimeout
	if session <= 0 {
		session = 10 * time.Second
		if c.embeddedEvents() {
			session = time.Second
		}
	}
	pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cfg := pipeline.Config{
			Brokers: brokers, Topic: topic, Group: c.Group,
			FlushInterval: c.FlushInterval, Retention: c.Retention,
			RetentionSettle: c.RetentionSettle, DropInterval: c.RetentionInterval,
			SessionTimeout: session, HeartbeatInterval: session / 3,
			DrainTimeout: c.ShutdownTimeout / 2,
			Logger:       log,
		}
		if disk != nil {
			cfg.Writes = disk
		}
		err := pipeline.Run(pctx, cfg, sink)
		if err != nil {
			fail(fmt.Errorf("pipeline: %w", err))
		}
	}()
	return func() error { stop(); wg.Wait(); return nil }
}

// serveHTTP serves the gateway (or, without stores, health and metrics)
// until ctx ends, then drains requests in flight. With --ops-http, health
// and metrics move to that listener; a pipeline then opens no other.
func serveHTTP(ctx context.Context, c *config, log *slog.Logger, b gateway.Backends, fail context.CancelCauseFunc) error {
	srv := gateway.New(gateway.Config{
		SeparateOps:    c.OpsAddr != "",
		Addr:           c.HTTPAddr,
		BackendTimeout: c.BackendTimeout,
		ReadTimeout:    c.ReadTimeout, WriteTimeout: c.WriteTimeout, IdleTimeout: c.IdleTimeout,
		MaxTagBytes: c.MaxTagBytes, MaxQueryBytes: c.MaxQueryBytes,
		MaxHeaderBytes: c.MaxHeaderBytes, MaxCookieBytes: c.MaxCookieBytes, MaxFuture: c.MaxFuture,
		MaxConns: c.MaxConns, MaxConnsPerIP: c.MaxConnsPerIP,
		BreakerFailures: c.BreakerFailures, BreakerCooldown: c.BreakerCooldown,
		Logger: log,
	}, b)
	if c.OpsAddr != "" {
		if err := listen(c.OpsAddr, "ops (/health, /metrics)", log, srv.ServeOps, fail); err != nil {
			return err
		}
	}
	if b.Profiles != nil || c.OpsAddr == "" {
		if err := listen(c.HTTPAddr, "HTTP", log, srv.Serve, fail); err != nil {
			return err
		}
	}
	<-ctx.Done()
	// Half of --shutdown-timeout for requests in flight, half for the
	// pipeline's drain (startPipeline).
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout/2)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("HTTP shutdown", "err", err)
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	log.Info("shutting down")
	return nil
}

// listen opens addr and serves it in the background; a serve that fails
// stops the process.
func listen(addr, what string, log *slog.Logger, serve func(net.Listener) error, fail context.CancelCauseFunc) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s (%s): %w", addr, what, err)
	}
	log.Info("serving "+what, "addr", ln.Addr().String(), "version", version, "query_debug", gateway.DebugBuild)
	go func() {
		if err := serve(ln); err != nil {
			fail(err)
		}
	}()
	return nil
}
