// Package aggregates stores the per-minute totals (count, sum of prices) of
// user tags and answers /aggregates queries from them. The pipeline writes
// full-cell deltas together with the event-log offsets they cover, in one
// atomic commit, which makes the pipeline exactly-once; the gateway reads.
//
// Two backends behind one Store interface: Pebble (embedded, for one-machine
// runs) and PostgreSQL (production, under Patroni). Both keep the same
// rollups (see rollup.go) and pass the same contract tests (store_test.go).
package aggregates

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/allezon/allezon/schemas"
)

// PartitionOffset is the next offset to consume of one partition: stored
// with the deltas it covers. Prev is the next offset the committer believes
// is stored now (-1: none stored yet). Commit is a compare-and-set on it: if
// the stored value differs (a zombie worker that lost its partition in a
// rebalance, or a Postgres failover that lost the last commits), Commit
// stores nothing and returns an error wrapping ErrFenced, so the worker
// re-reads the offsets and resumes from them: never a double count.
type PartitionOffset struct {
	Topic     string
	Partition int32
	Prev      int64
	Next      int64
}

// ErrFenced is wrapped by Commit's error when a partition's stored offset is
// not the committer's Prev.
var ErrFenced = errors.New("aggregates: offsets moved under this committer")

// ErrData is wrapped by Commit's and Query's errors when the backend refused
// the data itself (PostgreSQL's data exceptions, SQLSTATE class 22, and
// program limits, class 54, such as an index row too large): retrying the
// same call fails the same way, so it is the caller's input, not an outage.
// Callers must neither retry it forever nor count it against a backend's
// health.
var ErrData = errors.New("aggregates: the store refused the data")

// Store is an aggregates backend. Its methods are safe for concurrent use.
type Store interface {
	// Commit adds deltas (keyed by FULL cells: every dimension set) and
	// stores the partitions' next offsets, all in ONE atomic transaction
	// (Postgres transaction; Pebble batch): after a crash either all of it is
	// there or none of it. This is what makes the pipeline exactly-once.
	//
	// An error other than ErrFenced may leave the outcome unknown (the
	// connection broke during COMMIT): the committer re-reads Offsets, which
	// tell exactly whether the commit landed.
	Commit(ctx context.Context, deltas map[schemas.Cell]schemas.Totals, offsets []PartitionOffset) error
	// Offsets returns the stored next offsets of a topic's partitions
	// (absent partition = never committed).
	Offsets(ctx context.Context, topic string) (map[int32]int64, error)
	// Query returns one Totals per minute of [q.FromMinute, q.ToMinute)
	// (index i = minute FromMinute+i), zero for minutes without tags.
	Query(ctx context.Context, q *schemas.AggregateQuery) ([]schemas.Totals, error)
	// DropBefore deletes every bucket with minute < minute (retention: the
	// pipeline calls it with newest event - 24h). Calling it again with a
	// cutoff already applied is cheap: it writes nothing unless a Commit
	// stored a minute below the cutoff since.
	DropBefore(ctx context.Context, minute int64) error
	// Ping checks the backend is reachable.
	Ping(ctx context.Context) error
	// Close releases the backend; the Store must not be used afterwards.
	Close() error
}

// Options tune a backend; the zero value is fine.
type Options struct {
	// Logger receives the backend's own log lines; nil means slog.Default().
	Logger *slog.Logger
	// MaxConns caps the Postgres connection pool; 0 keeps the DSN's
	// pool_max_conns or pgxpool's default (max(4, number of CPUs)).
	MaxConns int32
}

const (
	pebbleScheme = "pebble://"
)

// Open opens a backend by URL: "pebble:///abs/dir" / "pebble://rel/dir", or
// a Postgres DSN "postgres://user:pass@host:port/db?..." (multi-host DSNs
// with target_session_attrs=read-write work: pgx resolves them). Open does
// not migrate (services/postgres.Migrate does), and does not wait for
// Postgres to be reachable: connections are made on use, so a gateway can
// start before its database; Ping tells when it is there.
func Open(ctx context.Context, url string, opts Options) (Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	switch {
	case strings.HasPrefix(url, pebbleScheme):
		return openPebble(strings.TrimPrefix(url, pebbleScheme), opts)
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return openPostgres(ctx, url, opts)
	}
	// Never echo the URL: it may hold a password.
	scheme, _, _ := strings.Cut(url, ":")
	return nil, fmt.Errorf("aggregates: unsupported store URL scheme %q (want pebble:// or postgres://)", scheme)
}

// sortedOffsets returns offsets ordered by (topic, partition), so every
// committer takes the offset rows' locks in one order, and rejects a
// partition listed twice.
func sortedOffsets(offsets []PartitionOffset) ([]PartitionOffset, error) {
	s := slices.Clone(offsets)
	slices.SortFunc(s, func(a, b PartitionOffset) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	for i := 1; i < len(s); i++ {
		if s[i].Topic == s[i-1].Topic && s[i].Partition == s[i-1].Partition {
			return nil, fmt.Errorf("aggregates: commit lists %s/%d twice", s[i].Topic, s[i].Partition)
		}
	}
	return s, nil
}

// fenced is the error of a failed offset compare-and-set.
func fenced(o PartitionOffset, stored int64) error {
	return fmt.Errorf("%w: %s/%d is at %d, committer expected %d", ErrFenced, o.Topic, o.Partition, stored, o.Prev)
}

// queryLen validates q's range and returns its number of minutes.
func queryLen(q *schemas.AggregateQuery) (int, error) {
	if q.ToMinute < q.FromMinute {
		return 0, fmt.Errorf("aggregates: query range [%d, %d) is reversed", q.FromMinute, q.ToMinute)
	}
	return q.Minutes(), nil
}
