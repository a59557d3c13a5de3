package profiles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/allezon/allezon/schemas"
	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
)

// trimEvery is how many appends a cookie+action gets between two trims
// (see pebbleStore for the resulting bound), and trimSlots the size of the
// table that counts them.
const (
	trimEvery = 32
	trimSlots = 1 << 20
)

// defaultMemTableBytes is Pebble's memtable size here. Pebble's 4 MiB
// default flushes (and so compacts) the profile stream's ~300 bytes a tag
// every few thousand tags; 64 MiB cuts that work to a sixteenth for at
// most 2 x 64 MiB of memory (MemTableStopWritesThreshold stays 2).
const defaultMemTableBytes = 64 << 20

const defaultPebbleCacheBytes = 64 << 20

// pebbleStore keeps one key per tag:
//
//	'p' | uvarint(len(cookie)) | cookie | action | ^time (8, big-endian, sign bit kept) | xxhash(tagJSON) (8)
//
// with the tag's canonical JSON as value, so an append writes one small key
// instead of rewriting the cookie's history, and a read is one forward scan
// per action from the range's newest end.
//
// Storage bound: appends are counted per cookie+action in a fixed table of
// trimSlots counters (hashed; lost on restart). When a counter reaches
// trimEvery, that append range-deletes everything after the Keep newest
// keys of its cookie+action, and the counter restarts. So a cookie+action
// holds at most Keep + trimEvery keys on disk, plus what collisions on its
// slot or a restart delay by one more round; the extra keys are never
// visible (a read takes at most Keep, newest first) and a trim only
// removes keys with Keep newer ones present. Counting, rather than
// sampling appends at random, spares the many cookies with only a few
// tags (most of SPEC's million) any trim scan: one trim iterator costs
// tens of microseconds, the scan up to Keep steps. A trim needs no
// durability of its own: a lost one is redone by the next.
type pebbleStore struct {
	db     *pebble.DB
	log    *slog.Logger
	closed atomic.Bool
	// appends counts appends per cookie+action slot since its last trim.
	appends []atomic.Uint32
}

func openPebble(dir string, o Options) (*pebbleStore, error) {
	log := o.logger().With("component", "profiles", "backend", "pebble")
	cacheBytes := o.PebbleCacheBytes
	if cacheBytes <= 0 {
		cacheBytes = defaultPebbleCacheBytes
	}
	cache := pebble.NewCache(cacheBytes)
	defer cache.Unref() // the DB holds its own reference
	opts := &pebble.Options{
		Cache:              cache,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{log},
		MemTableSize:       defaultMemTableBytes,
	}
	if d := o.PebbleWALMinSyncInterval; d > 0 {
		opts.WALMinSyncInterval = func() time.Duration { return d }
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("profiles: open pebble at %q: %w", dir, err)
	}
	log.Info("profile store open", "dir", dir, "cache_bytes", cacheBytes, "wal_min_sync_interval", o.PebbleWALMinSyncInterval)
	return &pebbleStore{db: db, log: log, appends: make([]atomic.Uint32, trimSlots)}, nil
}

// keyBufLen is a key buffer size that fits the keys of usual cookies
// without a heap allocation.
const keyBufLen = 128

// Append implements Store. The key is written with pebble.Sync: Pebble's
// NoSync returns before the WAL record even reaches the OS, so a kill -9
// could lose an acknowledged tag. Concurrent Sync commits share an fsync.
func (s *pebbleStore) Append(ctx context.Context, t *schemas.UserTag, tagJSON []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("profiles: append: %w", err)
	}
	var buf [keyBufLen]byte
	h := xxhash.Sum64(tagJSON)
	key := appendCookiePrefix(buf[:0], t.Cookie, t.Action)
	prefixLen := len(key)
	key = appendEntryID(key, t.TimeMs, h)
	if err := s.db.Set(key, tagJSON, pebble.Sync); err != nil {
		return fmt.Errorf("profiles: append tag of cookie %q: %w", t.Cookie, err)
	}
	if s.dueForTrim(key[:prefixLen]) {
		if err := s.trim(key[:prefixLen]); err != nil {
			// The tag is stored; a failed trim only delays reclaiming space.
			s.log.Warn("trim failed", "cookie", t.Cookie, "action", t.Action.String(), "err", err)
		}
	}
	return nil
}

// dueForTrim counts an append to prefix (one cookie+action) and reports
// whether it is the one that trims.
func (s *pebbleStore) dueForTrim(prefix []byte) bool {
	slot := &s.appends[xxhash.Sum64(prefix)%trimSlots]
	if slot.Add(1) < trimEvery {
		return false
	}
	slot.Store(0)
	return true
}

// trim range-deletes the keys after the Keep newest under prefix (one
// cookie+action). prefix ends with the action byte, so the prefix with
// that byte incremented bounds it from above.
func (s *pebbleStore) trim(prefix []byte) error {
	upper := append(make([]byte, 0, len(prefix)), prefix...)
	upper[len(upper)-1]++
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("trim iterator: %w", err)
	}
	var cut []byte
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n++; n > Keep {
			cut = append([]byte(nil), it.Key()...)
			break
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("trim scan: %w", err)
	}
	if cut == nil {
		return nil
	}
	if err := s.db.DeleteRange(cut, upper, pebble.NoSync); err != nil {
		return fmt.Errorf("trim delete: %w", err)
	}
	return nil
}

// Read implements Store with one iterator (one snapshot) whose bounds are
// set to each action's id range in turn. Values are copied into a few
// shared chunks (valueArena), so a read of 400 tags costs a handful of
// allocations rather than one per tag.
func (s *pebbleStore) Read(ctx context.Context, cookie string, r schemas.TimeRange, limit int) (Profile, error) {
	if err := ctx.Err(); err != nil {
		return Profile{}, fmt.Errorf("profiles: read: %w", err)
	}
	limit = min(limit, Keep)
	start, end, ok := idRange(r)
	if !ok || limit <= 0 {
		return Profile{}, nil
	}
	var kb [4 * keyBufLen]byte
	bounds := kb[:0]
	var lo, hi [schemas.NumActions][]byte
	for a := range schemas.Action(schemas.NumActions) {
		n := len(bounds)
		bounds = append(appendCookiePrefix(bounds, cookie, a), start...)
		lo[a] = bounds[n:len(bounds):len(bounds)]
		n = len(bounds)
		if end != nil {
			bounds = append(appendCookiePrefix(bounds, cookie, a), end...)
		} else {
			bounds = appendCookiePrefix(bounds, cookie, a+1)
		}
		hi[a] = bounds[n:len(bounds):len(bounds)]
	}

	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo[schemas.View], UpperBound: hi[schemas.View]})
	if err != nil {
		return Profile{}, fmt.Errorf("profiles: read cookie %q: %w", cookie, err)
	}
	var (
		vals   [schemas.NumActions * Keep][]byte
		counts [schemas.NumActions]int
		n      int
		arena  valueArena
	)
	for a := range schemas.Action(schemas.NumActions) {
		if a != schemas.View {
			it.SetBounds(lo[a], hi[a])
		}
		for valid := it.First(); valid && counts[a] < limit; valid = it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				_ = it.Close()
				return Profile{}, fmt.Errorf("profiles: read cookie %q: value: %w", cookie, err)
			}
			vals[n] = arena.copy(v)
			n++
			counts[a]++
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return Profile{}, fmt.Errorf("profiles: read cookie %q: %w", cookie, err)
	}
	if n == 0 {
		return Profile{}, nil
	}
	all := make([][]byte, n)
	copy(all, vals[:n])
	var p Profile
	nv := counts[schemas.View]
	if nv > 0 {
		p.Views = all[:nv:nv]
	}
	if nv < n {
		p.Buys = all[nv:]
	}
	return p, nil
}

// valueArena copies values into chunks that double from arenaFirstChunk
// to arenaMaxChunk bytes: a small profile costs one small allocation, a
// full one a few, and unlike one growing buffer no value is copied twice.
// Returned slices are capped at their length, so appending to one cannot
// overwrite its neighbour.
type valueArena struct {
	chunk []byte
	next  int // size of the next chunk
}

const (
	arenaFirstChunk = 1 << 10
	arenaMaxChunk   = 16 << 10
)

func (a *valueArena) copy(v []byte) []byte {
	if len(a.chunk)+len(v) > cap(a.chunk) {
		if a.next == 0 {
			a.next = arenaFirstChunk
		}
		for a.next < len(v) && a.next < arenaMaxChunk {
			a.next *= 2
		}
		a.chunk = make([]byte, 0, max(a.next, len(v)))
		a.next = min(2*a.next, arenaMaxChunk)
	}
	n := len(a.chunk)
	a.chunk = append(a.chunk, v...)
	return a.chunk[n:len(a.chunk):len(a.chunk)]
}

// Ping implements Store: a point lookup outside the tag key space proves
// the DB answers reads.
func (s *pebbleStore) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("profiles: ping: %w", err)
	}
	if s.closed.Load() {
		return errors.New("profiles: ping: store closed")
	}
	_, closer, err := s.db.Get([]byte("\x00ping"))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("profiles: ping: %w", err)
	}
	return closer.Close()
}

// Close implements Store.
func (s *pebbleStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("profiles: close pebble: %w", err)
	}
	return nil
}

// pebbleLogger routes Pebble's own logs to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Info(fmt.Sprintf(format, args...), "source", "pebble")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "source", "pebble")
}

// Fatalf is called by Pebble for unrecoverable states (e.g. corruption);
// like Pebble's default logger it does not return.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg, "source", "pebble", "fatal", true)
	panic("pebble: " + msg)
}
