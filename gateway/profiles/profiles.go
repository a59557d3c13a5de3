// Package profiles is the profile store behind /user_profiles: the gateway
// appends every accepted tag to it and reads a cookie's recent history back.
//
// Two backends implement one contract (Store): Pebble, embedded, for a
// single machine with no external services, and Aerospike, for the
// production cluster. Both keep, per cookie and action, the tags ordered by
// (time descending, xxhash of the tag's canonical JSON), so that
//
//   - a read is a short forward scan from the range's newest end,
//   - two distinct tags with the same millisecond are two entries,
//   - a client retry of the very same tag lands on the same entry and is
//     stored once,
//   - trimming to the Keep newest tags is a cut at the Keep-th entry.
//
// Values are the tags' canonical JSON, stored as given and returned as
// stored, so /user_profiles never re-encodes a tag.
package profiles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/allezon/allezon/schemas"
)

// Keep is how many tags per cookie and action must be kept (SPEC: the 200
// most recent).
const Keep = 200

// ErrData is wrapped by Append's and Read's errors when the store refused
// the request's data itself (Aerospike: a parameter error, a record over
// its size limit): a retry fails the same way, so it is the client's
// input, not an outage, and must not count against the store's health.
var ErrData = errors.New("profiles: the store refused the data")

// Store is a profile store. Implementations are safe for concurrent use.
type Store interface {
	// Append stores one tag; tagJSON is its canonical JSON
	// (schemas.AppendUserTagJSON), stored as the value so reads need no
	// re-encoding. Appending the very same tag again (a client retry:
	// identical tagJSON) stores it once; two different tags of one cookie
	// with the same millisecond are both kept. When Append returns nil the
	// tag is durable (survives a kill -9 of the process right after).
	// Append does not keep tagJSON after it returns: the gateway reuses it.
	Append(ctx context.Context, t *schemas.UserTag, tagJSON []byte) error
	// Read returns the cookie's tags with r.From <= time < r.To, per
	// action, newest first, at most limit each (limit is 0..Keep; the
	// caller clamps, larger values are treated as Keep). An unknown cookie
	// gives both lists empty (nil). The returned slices do not alias
	// buffers the store reuses.
	Read(ctx context.Context, cookie string, r schemas.TimeRange, limit int) (Profile, error)
	// Ping reports whether the store can serve requests.
	Ping(ctx context.Context) error
	// Close releases the store; it must not be used afterwards.
	Close() error
}

// Profile is a cookie's history as Read returns it: each element is one
// tag's canonical JSON, newest first.
type Profile struct{ Views, Buys [][]byte }

// Options are the knobs of the backends. The zero value is a sensible
// default for every field.
type Options struct {
	// Logger receives the store's own logs (and Pebble's). Default:
	// slog.Default().
	Logger *slog.Logger

	// PebbleCacheBytes is Pebble's block cache size. Default 64 MiB.
	PebbleCacheBytes int64
	// PebbleWALMinSyncInterval, when positive, makes Pebble wait at least
	// this long between two WAL fsyncs, so more concurrent appends share
	// one fsync. Every Append still waits for the fsync covering it, so
	// durability is unchanged; single-append latency grows by up to the
	// interval. Default 0 (fsync as soon as a commit asks for it; Pebble
	// still groups the commits that queue up while an fsync runs).
	PebbleWALMinSyncInterval time.Duration

	// AerospikeTimeout is the total time budget of one Aerospike call
	// (retries included); a context deadline that is sooner wins.
	// Default 300 ms.
	AerospikeTimeout time.Duration
	// AerospikeConnectTimeout bounds connecting to the seed nodes in Open.
	// Default 10 s.
	AerospikeConnectTimeout time.Duration
	// AerospikeConnectionsPerNode is the connection pool size per server
	// node. Default 256.
	AerospikeConnectionsPerNode int
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Open opens a backend by URL:
//
//	pebble:///abs/dir or pebble://rel/dir               a Pebble directory (created if missing)
//	aerospike://host:3000[,host2:3000]/namespace          set "profiles", one record per cookie
func Open(ctx context.Context, url string, opts Options) (Store, error) {
	switch {
	case strings.HasPrefix(url, "pebble://"):
		dir := strings.TrimPrefix(url, "pebble://")
		if dir == "" {
			return nil, fmt.Errorf("profiles: open %q: empty directory", url)
		}
		return openPebble(dir, opts)
	case strings.HasPrefix(url, "aerospike://"):
		seeds, ns, err := parseAerospikeURL(strings.TrimPrefix(url, "aerospike://"))
		if err != nil {
			return nil, fmt.Errorf("profiles: open %q: %w", url, err)
		}
		return openAerospike(ctx, seeds, ns, opts)
	default:
		return nil, fmt.Errorf("profiles: open %q: unknown scheme (want pebble:// or aerospike://)", url)
	}
}
