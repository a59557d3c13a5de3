package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/allezon/allezon/schemas"
)

// config is every setting of every component; each subcommand registers
// the flags it uses.
type config struct {
	HTTPAddr   string
	OpsAddr    string
	AdminAddr  string
	DataDir    string
	Profiles   string
	Events     string
	Aggregates string
	// AggregatesPasswordFile, when set, holds the password of the
	// postgres:// aggregates DSN (a Swarm secret), so it is never in the
	// environment or on the command line.
	AggregatesPasswordFile string

	// Embedded broker.
	BrokerAddr      string
	Partitions      int
	EventsRetention time.Duration

	// Gateway.
	BackendTimeout  time.Duration
	MaxTagBytes     int
	MaxQueryBytes   int
	MaxHeaderBytes  int
	MaxCookieBytes  int
	MaxFuture       time.Duration
	MaxConns        int
	MaxConnsPerIP   int
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	IdleTimeout     time.Duration
	BreakerFailures int
	BreakerCooldown time.Duration

	// Pipeline.
	Group          string
	FlushInterval  time.Duration
	Retention      time.Duration
	SessionTimeout time.Duration
	// RetentionSettle and RetentionInterval: see pipeline.Config.
	RetentionSettle   time.Duration
	RetentionInterval time.Duration

	// MinFreeDisk is the free space kept on the data directories' file
	// systems (diskfloor.ParseFloor); below it writes stop.
	MinFreeDisk string

	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string
}

const defaultTopic = "allezon-events"

func (c *config) commonFlags(fs *flagSet, httpDefault string) {
	fs.String(&c.HTTPAddr, "http", "ALLEZON_HTTP_ADDR", httpDefault, "HTTP listen address")
	fs.String(&c.OpsAddr, "ops-http", "ALLEZON_OPS_HTTP", "", "listener of /metrics and /health apart from the API, which then answers them 404 (empty: both on --http)")
	fs.String(&c.AdminAddr, "admin", "ALLEZON_ADMIN_ADDR", "127.0.0.1:6060", "pprof listener, apart from the API (empty: off)")
	fs.String(&c.DataDir, "data", "ALLEZON_DATA_DIR", "./data", "data directory of the embedded backends")
	fs.String(&c.MinFreeDisk, "min-free-disk", "ALLEZON_MIN_FREE_DISK", "512MiB", "free space kept on the file systems of the embedded data (size, % of the file system, or both: the larger); below it tags get 503 and pipeline commits wait (0: off)")
	fs.Duration(&c.ShutdownTimeout, "shutdown-timeout", "ALLEZON_SHUTDOWN_TIMEOUT", 10*time.Second, "how long a SIGTERM may take: half to finish requests in flight, half for the pipeline to commit up to the log's end")
	fs.String(&c.LogLevel, "log-level", "ALLEZON_LOG_LEVEL", "info", "debug, info, warn or error")
	fs.String(&c.LogFormat, "log-format", "ALLEZON_LOG_FORMAT", "text", "text or json")
}

func (c *config) eventsFlags(fs *flagSet) {
	fs.String(&c.Events, "events", "ALLEZON_EVENTS", "embedded", "event log: embedded, or kafka://broker:9092[,broker:9092]/<topic>")
	fs.String(&c.BrokerAddr, "broker-addr", "ALLEZON_BROKER_ADDR", "127.0.0.1:0", "listen address of the embedded broker")
	fs.Int(&c.Partitions, "partitions", "ALLEZON_PARTITIONS", 2, "partitions of the embedded broker's topic")
	fs.Duration(&c.EventsRetention, "events-retention", "ALLEZON_EVENTS_RETENTION", 15*time.Minute, "how long the embedded broker keeps events (its memory grows with them)")
}

func (c *config) gatewayFlags(fs *flagSet) {
	fs.String(&c.Profiles, "profiles", "ALLEZON_PROFILES", "", "profile store: pebble://<dir> (default <data>/profiles) or aerospike://host:3000[,host:3000]/<namespace>")
	fs.Duration(&c.BackendTimeout, "backend-timeout", "ALLEZON_BACKEND_TIMEOUT", 2*time.Second, "deadline of one request's work on the backends")
	fs.Int(&c.MaxTagBytes, "max-tag-body", "ALLEZON_MAX_TAG_BODY", 64<<10, "largest POST /user_tags body (400 above, as SPEC says)")
	fs.Int(&c.MaxQueryBytes, "max-query-body", "ALLEZON_MAX_QUERY_BODY", 4<<20, "largest query body (the expected answer in debug mode; 413 above)")
	fs.Int(&c.MaxHeaderBytes, "max-header-bytes", "ALLEZON_MAX_HEADER_BYTES", 8<<10, "largest request line plus headers, a buffer per connection (431 above)")
	fs.Int(&c.MaxCookieBytes, "max-cookie-bytes", "ALLEZON_MAX_COOKIE_BYTES", schemas.MaxCookieBytes, "longest cookie: a tag's (400 above) or a /user_profiles path's (414 above); at most "+strconv.Itoa(schemas.MaxCookieBytes))
	fs.Duration(&c.MaxFuture, "max-future", "ALLEZON_MAX_FUTURE", schemas.DefaultMaxFuture, "how far ahead of the gateway's clock a tag's time may lie (400 beyond; 0: no check)")
	fs.Int(&c.MaxConns, "max-conns", "ALLEZON_MAX_CONNS", 4096, "connections served at once; fasthttp answers one more with 503 and closes it")
	fs.Int(&c.MaxConnsPerIP, "max-conns-per-ip", "ALLEZON_MAX_CONNS_PER_IP", 0, "connections of one IPv4 address, 429 beyond (0: no limit; keep 0 behind the Swarm routing mesh)")
	fs.Duration(&c.ReadTimeout, "read-timeout", "ALLEZON_READ_TIMEOUT", 10*time.Second, "time to read a request, headers and body (408 after)")
	fs.Duration(&c.WriteTimeout, "write-timeout", "ALLEZON_WRITE_TIMEOUT", 10*time.Second, "time to write a response (the connection is closed after)")
	fs.Duration(&c.IdleTimeout, "idle-timeout", "ALLEZON_IDLE_TIMEOUT", 60*time.Second, "how long an idle keep-alive connection stays open")
	fs.Int(&c.BreakerFailures, "breaker-failures", "ALLEZON_BREAKER_FAILURES", 5, "consecutive failed calls of a backend that open its circuit breaker (0: no breakers)")
	fs.Duration(&c.BreakerCooldown, "breaker-cooldown", "ALLEZON_BREAKER_COOLDOWN", 2*time.Second, "how long an open breaker answers 503 at once before it lets probes through")
}

func (c *config) aggregatesFlags(fs *flagSet) {
	fs.String(&c.Aggregates, "aggregates", "ALLEZON_AGGREGATES", "", "aggregates store: pebble://<dir> (default <data>/aggregates) or postgres://user:pass@host:port/db")
	fs.String(&c.AggregatesPasswordFile, "aggregates-password-file", "ALLEZON_AGGREGATES_PASSWORD_FILE", "", "file whose first line is the password of the postgres:// aggregates DSN (e.g. /run/secrets/<name>)")
}

// applyPasswordFile sets the password read from AggregatesPasswordFile into
// the postgres:// aggregates DSN.
func (c *config) applyPasswordFile() error {
	if c.AggregatesPasswordFile == "" {
		return nil
	}
	dsn, err := withPasswordFile(c.Aggregates, c.AggregatesPasswordFile)
	if err != nil {
		return err
	}
	c.Aggregates = dsn
	return nil
}

// withPasswordFile returns the postgres:// DSN with its password replaced by
// the first line of file (without the line ending). Errors never quote the
// DSN or the password.
func withPasswordFile(dsn, file string) (string, error) {
	if !isPostgres(dsn) {
		return "", errors.New("aggregates-password-file needs a postgres:// aggregates DSN")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("aggregates-password-file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("aggregates-password-file %s: empty password", file)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", errors.New("aggregates DSN: not a valid URL")
	}
	if u.User == nil || u.User.Username() == "" {
		return "", errors.New("aggregates-password-file: the aggregates DSN names no user (postgres://user@host/db)")
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String(), nil
}

func (c *config) pipelineFlags(fs *flagSet) {
	fs.String(&c.Group, "group", "ALLEZON_GROUP", "allezon-pipeline", "consumer group of the stream workers")
	fs.Duration(&c.FlushInterval, "flush-interval", "ALLEZON_FLUSH_INTERVAL", time.Second, "how often workers commit aggregates")
	fs.Duration(&c.Retention, "retention", "ALLEZON_RETENTION", 24*time.Hour, "event time the aggregates keep behind the retention frontier")
	fs.Duration(&c.RetentionSettle, "retention-settle", "ALLEZON_RETENTION_SETTLE", 10*time.Minute, "wall time event time must stay ahead before retention follows it (shorter bursts never move it)")
	fs.Duration(&c.RetentionInterval, "retention-interval", "ALLEZON_RETENTION_INTERVAL", time.Minute, "how often a worker samples event time and drops old minutes (at least 2 flush intervals)")
	fs.Duration(&c.SessionTimeout, "session-timeout", "ALLEZON_SESSION_TIMEOUT", 0, "consumer group session timeout (0: 1s on the embedded broker, 10s on Kafka)")
}

// checkLimits refuses input limits the gateway cannot honour.
func (c *config) checkLimits() error {
	if c.MaxCookieBytes < 1 || c.MaxCookieBytes > schemas.MaxCookieBytes {
		return fmt.Errorf("max-cookie-bytes %d: want 1 to %d, the tag schema's limit (docs/api.md \"Input\")", c.MaxCookieBytes, schemas.MaxCookieBytes)
	}
	if c.MaxFuture < 0 {
		return fmt.Errorf("max-future %v: want 0 (off) or more", c.MaxFuture)
	}
	return nil
}

// resolve fills the defaults that depend on other settings.
func (c *config) resolve() {
	if c.Profiles == "" {
		c.Profiles = "pebble://" + filepath.Join(c.DataDir, "profiles")
	}
	if c.Aggregates == "" {
		c.Aggregates = "pebble://" + filepath.Join(c.DataDir, "aggregates")
	}
}

// diskPaths are the directories of the embedded data this process writes:
// the data dir first when a default store lies in it, so a full disk is
// reported under that name, then each store's own directory (another
// mount, perhaps). diskfloor keeps one path per file system.
func (c *config) diskPaths(withGateway, withPipeline bool) []string {
	var dirs []string
	if c.embeddedEvents() {
		dirs = append(dirs, filepath.Join(c.DataDir, "events"))
	}
	if dir, ok := strings.CutPrefix(c.Profiles, "pebble://"); ok && withGateway {
		dirs = append(dirs, dir)
	}
	if dir, ok := strings.CutPrefix(c.Aggregates, "pebble://"); ok && withPipeline {
		dirs = append(dirs, dir)
	}
	for _, d := range dirs {
		if rel, err := filepath.Rel(c.DataDir, d); err == nil && !strings.HasPrefix(rel, "..") {
			return append([]string{c.DataDir}, dirs...)
		}
	}
	return dirs
}

// embeddedEvents reports whether the event log is the in-process broker.
func (c *config) embeddedEvents() bool { return c.Events == "embedded" }

// kafkaURL splits kafka://host:port[,host:port]/topic.
func kafkaURL(s string) (brokers []string, topic string, err error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "kafka" || u.Host == "" {
		return nil, "", fmt.Errorf("events %q: want embedded or kafka://host:port[,host:port]/<topic>", s)
	}
	topic = strings.Trim(u.Path, "/")
	if topic == "" {
		topic = defaultTopic
	}
	return strings.Split(u.Host, ","), topic, nil
}

func (c *config) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("log-level %q: %w", c.LogLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log-format %q: want text or json", c.LogFormat)
}
