// Package broker runs the embedded Kafka-protocol broker Allezon uses when no
// real Kafka is deployed: inside `allezon all`, or standalone as `allezon
// broker` so that `allezon gateway` and `allezon pipeline` can run as
// separate processes on one machine.
//
// It is a single kfake node with its log persisted to a data directory: every
// acknowledged batch has been written to its segment file before the ack, so a
// crash of the process loses nothing acknowledged (an OS crash can, unless
// SyncWrites is set). A restart over the same directory brings the topic back
// with its data and offsets.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Defaults for the zero values of Config.
const (
	DefaultAddr       = "127.0.0.1:0"
	DefaultTopic      = "allezon-events"
	DefaultPartitions = 2
	DefaultRetention  = 24 * time.Hour
	DefaultGroup      = "allezon-pipeline"

	// SegmentBytes bounds one segment file. Retention drops whole
	// segments only, and a reload after a crash reads every retained
	// segment into memory, so the segment size is the slack on top of the
	// retained data, both on disk and in memory after a crash.
	SegmentBytes = 64 << 20

	// groupMinSessionTimeout lets consumer groups use sessions far below
	// kfake's 6 s default, so a pipeline worker's partitions move to the
	// survivor within about a second when it dies (NOTES.md).
	groupMinSessionTimeout = 100 * time.Millisecond

	// lockFileName is the file in Dir whose flock keeps a second broker
	// from writing the same segments.
	lockFileName = "allezon-broker.lock"
)

// Config configures the embedded broker. The zero value runs an in-memory
// broker on a free loopback port.
type Config struct {
	// Dir is the data directory. Empty keeps the log in memory only (tests
	// and throwaway runs); otherwise every acked batch is on disk before
	// the ack and a restart over Dir resumes the log.
	Dir string
	// Addr is the listen address, default "127.0.0.1:0" (loopback, any
	// free port). The host is honoured; to come back on the same port
	// after a restart, pass the port Addrs reported.
	Addr string
	// Advertise is the host clients are told to connect to, default the
	// host of Addr, or 127.0.0.1 when Addr's host is a wildcard (0.0.0.0,
	// ::, empty). The port is always the bound one.
	Advertise string
	// Topic is the events topic, created with Partitions partitions when
	// the data dir does not hold it yet. Default "allezon-events".
	Topic string
	// Partitions of a newly created Topic, default 2. An existing topic
	// keeps its partition count.
	Partitions int32
	// DeadLetterTopic is the pipeline's dead-letter topic, created with one
	// partition next to Topic. Default Topic + "-dlq" (the pipeline's
	// default). Its batches are dropped by kfake's own rule after Retention.
	DeadLetterTopic string
	// Retention is how long events are kept, default 24h: an event of
	// Topic is deleted once it was appended longer ago AND Committed says
	// the pipeline has it (see eventsRetention). Other topics follow
	// kfake's rule: batches whose producer timestamp is older are dropped.
	Retention time.Duration
	// Committed reports, per partition of Topic, the next offset the
	// pipeline committed (in allezon all, the aggregates store's offsets).
	// Retention never deletes an event at or past it; a partition it does
	// not name keeps everything, and a failed call deletes nothing. Nil:
	// the offsets Group committed on this broker.
	Committed func(context.Context) (map[int32]int64, error)
	// Group is the consumer group whose offsets bound retention when
	// Committed is nil, default "allezon-pipeline".
	Group string
	// SyncWrites fsyncs every batch before the ack, to survive an OS
	// crash as well; a process crash loses nothing without it.
	SyncWrites bool
	// Logger receives kfake's errors and warnings; nil is slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = c.Topic + "-dlq"
	}
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
}

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	log     *slog.Logger
	unlock  func()

	retention *eventsRetention

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// Start starts the broker, reloading Dir's log when there is one, and
// returns once it accepts connections.
func Start(cfg Config) (*Broker, error) {
	cfg.withDefaults()
	advertise, err := advertisedHost(cfg.Addr, cfg.Advertise)
	if err != nil {
		return nil, err
	}

	unlock := func() {}
	if cfg.Dir != "" {
		if unlock, err = lockDir(cfg.Dir); err != nil {
			return nil, err
		}
	}

	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake always asks for 127.0.0.1:<port>; bind what was
		// configured instead and advertise the host clients can reach.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, cfg.Addr)
			if err != nil {
				return nil, err
			}
			return &advertisedListener{Listener: ln, host: advertise}, nil
		}),
		kfake.GroupMinSessionTimeout(groupMinSessionTimeout),
		kfake.WithLogger(slogLogger{cfg.Logger}),
		// Broker-level defaults rather than topic configs: kfake
		// re-applies option-given broker configs over the persisted ones
		// at every start, so the retention follows Config across
		// restarts, whereas a topic config would stay frozen at the
		// topic's creation (kfake has no in-process config alter).
		kfake.BrokerConfigs(map[string]string{
			"log.retention.ms":    strconv.FormatInt(cfg.Retention.Milliseconds(), 10),
			"log.retention.bytes": "-1",
			"log.segment.bytes":   strconv.Itoa(SegmentBytes),
		}),
	}
	if cfg.Dir != "" {
		opts = append(opts, kfake.DataDir(cfg.Dir))
	}
	if cfg.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("broker: start kfake on %s (dir %q): %w", cfg.Addr, cfg.Dir, err)
	}

	b := &Broker{
		cluster: cluster,
		log:     cfg.Logger,
		unlock:  unlock,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	b.retention = &eventsRetention{topic: cfg.Topic, retention: cfg.Retention, committed: cfg.Committed, log: cfg.Logger}
	if b.retention.committed == nil {
		b.retention.committed = groupCommitted(cluster, cfg.Group, cfg.Topic)
	}
	err = b.ensureTopic(cfg.Topic, cfg.Partitions)
	if err == nil {
		err = b.noTimeRetention(cfg.Topic)
	}
	if err == nil {
		err = b.ensureTopic(cfg.DeadLetterTopic, 1)
	}
	if err != nil {
		cluster.Close()
		unlock()
		return nil, err
	}
	// A reload restores the log but not kfake's retention timer (NOTES.md),
	// and kfake only runs it for topic-level retention configs anyway.
	cluster.ApplyRetention()
	go b.retentionLoop(retentionInterval(cfg.Retention))

	b.log.Info("embedded broker started", "addrs", b.Addrs(), "topic", cfg.Topic,
		"dead_letter_topic", cfg.DeadLetterTopic, "dir", cfg.Dir, "retention", cfg.Retention, "sync_writes", cfg.SyncWrites)
	return b, nil
}

// ensureTopic creates the topic unless the reloaded data dir already holds
// it: recreating it would give it a new ID and an empty log.
func (b *Broker) ensureTopic(topic string, partitions int32) error {
	if b.cluster.TopicInfo(topic) == nil {
		// retention.ms=-1: eventsRetention, not kfake, deletes its events.
		if err := b.cluster.CreateTopic(topic, partitions, map[string]string{"retention.ms": "-1"}); err != nil {
			return fmt.Errorf("broker: create topic %s: %w", topic, err)
		}
		return nil
	}
	if have := int32(len(b.cluster.PartitionInfos(topic))); have != partitions {
		b.log.Warn("broker: existing topic keeps its partition count",
			"topic", topic, "partitions", have, "configured", partitions)
	}
	return nil
}

// retentionInterval is how often retention is applied: often enough that
// the log never holds much more than Retention, rarely enough to cost
// nothing (it walks the in-memory batch index).
func retentionInterval(retention time.Duration) time.Duration {
	return min(max(retention/10, time.Second), time.Minute)
}

func (b *Broker) retentionLoop(every time.Duration) {
	defer close(b.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-b.stop
		cancel() // a slow Committed must not hold up Close
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			b.cluster.ApplyRetention()
			cctx, cancelPass := context.WithTimeout(ctx, every)
			b.retention.pass(cctx, b.cluster, now)
			cancelPass()
		}
	}
}

// Addrs returns the advertised "host:port" of each broker node (one).
func (b *Broker) Addrs() []string { return b.cluster.ListenAddrs() }

// Close stops accepting connections, persists the broker's state and
// releases the data dir. It is safe to call more than once.
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		// The retention loop must be gone first: once the cluster is
		// closed, its admin calls would block forever.
		close(b.stop)
		<-b.done
		b.cluster.Close()
		b.unlock()
		b.log.Info("embedded broker stopped")
	})
}

// advertisedHost picks the host clients are told to use.
func advertisedHost(addr, advertise string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("broker: listen address %q: %w", addr, err)
	}
	if advertise != "" {
		return advertise, nil
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return "127.0.0.1", nil
	}
	return host, nil
}

// advertisedListener reports the advertised host with the bound port as its
// address: kfake puts that address into metadata responses.
type advertisedListener struct {
	net.Listener
	host string
}

func (l *advertisedListener) Addr() net.Addr {
	a := l.Listener.Addr()
	_, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a
	}
	return hostPortAddr{network: a.Network(), hostport: net.JoinHostPort(l.host, port)}
}

type hostPortAddr struct{ network, hostport string }

func (a hostPortAddr) Network() string { return a.network }
func (a hostPortAddr) String() string  { return a.hostport }

// slogLogger routes kfake's log lines to slog. kfake's Info level logs
// every request, so it goes to Debug; Debug is dropped.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var lvl slog.Level
	switch level {
	case kfake.LogLevelError:
		lvl = slog.LevelError
	case kfake.LogLevelWarn:
		lvl = slog.LevelWarn
	case kfake.LogLevelInfo:
		lvl = slog.LevelDebug
	default:
		return
	}
	ctx := context.Background()
	if !s.l.Enabled(ctx, lvl) {
		return
	}
	s.l.Log(ctx, lvl, "kfake: "+fmt.Sprintf(format, args...))
}

// ErrDirLocked reports a data dir already used by a running broker.
var ErrDirLocked = errors.New("data dir is in use by another broker")
