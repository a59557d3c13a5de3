package aggregates

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/allezon/allezon/schemas"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// Pebble layout. Rollup rows:
//
//	key   = table (1 + rollup) | minute (8 bytes big-endian, sign bit flipped,
//	        so keys sort by minute also before 1970) | action (1 byte) |
//	        each of the rollup's dimensions as uvarint length + bytes
//	value = count | sum (8 bytes big-endian each)
//
// Length-prefixed dimensions make the encoding of (origin) a prefix of
// exactly the keys with that origin, which the {origin, brand} and
// {origin, category} scans rely on. Values are only ever written as Merge
// operands that totalsMerger adds up, so Commit is blind writes in one batch,
// no read-modify-write.
//
// Offsets: key = tableOffsets | topic (uvarint length + bytes) | partition
// (4 bytes big-endian); value = next offset (8 bytes big-endian), written
// with Set.
const tableOffsets byte = 0x80

const totalsLen = 16

// totalsMerger adds (count, sum) operands. The name is stored in the
// database: a store written with another merger will not open.
var totalsMerger = &pebble.Merger{
	Name: "allezon.totals.v1",
	Merge: func(_, value []byte) (pebble.ValueMerger, error) {
		m := &totalsMerge{}
		return m, m.add(value)
	},
}

type totalsMerge struct {
	sum schemas.Totals
	buf [totalsLen]byte
}

func (m *totalsMerge) add(v []byte) error {
	t, err := decodeTotals(v)
	if err != nil {
		return err
	}
	m.sum.Add(t)
	return nil
}

func (m *totalsMerge) MergeNewer(v []byte) error { return m.add(v) }
func (m *totalsMerge) MergeOlder(v []byte) error { return m.add(v) }

// Finish returns the sum; addition is associative, so a partial merge during
// compaction (includesBase false) is a valid operand too.
func (m *totalsMerge) Finish(bool) ([]byte, io.Closer, error) {
	return appendTotals(m.buf[:0], m.sum), nil, nil
}

func appendTotals(b []byte, t schemas.Totals) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Count))
	return binary.BigEndian.AppendUint64(b, uint64(t.SumPrice))
}

func decodeTotals(v []byte) (schemas.Totals, error) {
	if len(v) != totalsLen {
		return schemas.Totals{}, fmt.Errorf("aggregates: totals value of %d bytes, want %d", len(v), totalsLen)
	}
	return schemas.Totals{
		Count:    int64(binary.BigEndian.Uint64(v)),
		SumPrice: int64(binary.BigEndian.Uint64(v[8:])),
	}, nil
}

// appendMinuteKey appends the (table, minute, action) prefix of a rollup key.
func appendMinuteKey(b []byte, r rollup, minute int64, a schemas.Action) []byte {
	b = append(b, byte(r)+1)
	b = binary.BigEndian.AppendUint64(b, uint64(minute)^(1<<63))
	return append(b, byte(a))
}

func appendDim(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendRollupKey appends c's key in rollup r (c's other dimensions ignored).
func appendRollupKey(b []byte, r rollup, c *schemas.Cell) []byte {
	b = appendMinuteKey(b, r, c.Minute, c.Action)
	d := rollupDims[r]
	if d&schemas.DimOrigin != 0 {
		b = appendDim(b, c.Origin)
	}
	if d&schemas.DimBrand != 0 {
		b = appendDim(b, c.BrandID)
	}
	if d&schemas.DimCategory != 0 {
		b = appendDim(b, c.CategoryID)
	}
	return b
}

// readDim splits a length-prefixed dimension off the front of b.
func readDim(b []byte) (dim, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return nil, nil, false
	}
	return b[w : w+int(n)], b[w+int(n):], true
}

func appendOffsetPrefix(b []byte, topic string) []byte {
	return appendDim(append(b, tableOffsets), topic)
}

func appendOffsetKey(b []byte, topic string, partition int32) []byte {
	return binary.BigEndian.AppendUint32(appendOffsetPrefix(b, topic), uint32(partition))
}

// prefixEnd is the smallest key greater than every key with prefix p (nil:
// none, p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// pebbleStore is the embedded backend.
type pebbleStore struct {
	db     *pebble.DB
	closed atomic.Bool
	// commitMu serialises Commits: the offsets check and the batch that
	// moves them must not interleave with another Commit's.
	commitMu sync.Mutex
	memo     *dropMemo
}

func openPebble(dir string, opts Options) (*pebbleStore, error) {
	if dir == "" {
		return nil, errors.New("aggregates: pebble URL without a directory")
	}
	cache := pebble.NewCache(pebbleCacheBytes)
	defer cache.Unref() // the DB holds its own reference
	po := &pebble.Options{
		Merger:       totalsMerger,
		Logger:       pebbleLogger{opts.Logger.With("component", "aggregates-pebble")},
		Cache:        cache,
		MemTableSize: pebbleMemTableBytes,
	}
	// Queries are Gets of rollup keys, many of them for keys that do not
	// exist (a filter value absent in a minute): bloom filters answer those
	// without reading data blocks. Levels below L0 inherit the policy.
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("aggregates: open pebble %s: %w", dir, err)
	}
	return &pebbleStore{db: db, memo: newDropMemo()}, nil
}

// Pebble's defaults (8 MiB cache, 4 MiB memtables) made a bulk fill slow
// down as the store grew and stall commits for hundreds of milliseconds
// in compactions (bench/fullretention); a day of aggregates at 1,000
// tags/s is ~1.8 GB on disk.
const (
	pebbleCacheBytes    = 64 << 20
	pebbleMemTableBytes = 32 << 20
)

var errClosed = errors.New("aggregates: store is closed")

func (s *pebbleStore) Commit(ctx context.Context, deltas map[schemas.Cell]schemas.Totals, offsets []PartitionOffset) error {
	offsets, err := sortedOffsets(offsets)
	if err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	rolls := expand(deltas)
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	for _, o := range offsets {
		stored, err := s.offset(o.Topic, o.Partition)
		if err != nil {
			return err
		}
		if stored != o.Prev {
			return fenced(o, stored)
		}
	}
	b := s.db.NewBatch()
	defer b.Close()
	var key []byte
	var val [totalsLen]byte
	for r := range numRollups {
		for c, t := range rolls[r] {
			key = appendRollupKey(key[:0], r, &c)
			if err := b.Merge(key, appendTotals(val[:0], t), nil); err != nil {
				return fmt.Errorf("aggregates: batch merge: %w", err)
			}
		}
	}
	for _, o := range offsets {
		key = appendOffsetKey(key[:0], o.Topic, o.Partition)
		if err := b.Set(key, binary.BigEndian.AppendUint64(val[:0], uint64(o.Next)), nil); err != nil {
			return fmt.Errorf("aggregates: batch set offset: %w", err)
		}
	}
	// The last point where giving up leaves nothing behind.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("aggregates: commit: %w", err)
	}
	err = b.Commit(pebble.Sync)
	s.memo.wrote(minMinute(deltas))
	if err != nil {
		return fmt.Errorf("aggregates: pebble commit: %w", err)
	}
	return nil
}

// offset reads one stored next offset, -1 if none.
func (s *pebbleStore) offset(topic string, partition int32) (int64, error) {
	v, closer, err := s.db.Get(appendOffsetKey(nil, topic, partition))
	if errors.Is(err, pebble.ErrNotFound) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("aggregates: read offset %s/%d: %w", topic, partition, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("aggregates: offset %s/%d: value of %d bytes", topic, partition, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func (s *pebbleStore) Offsets(ctx context.Context, topic string) (map[int32]int64, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	lo := appendOffsetPrefix(nil, topic)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, fmt.Errorf("aggregates: offsets iterator: %w", err)
	}
	defer it.Close()
	out := make(map[int32]int64)
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key()[len(lo):], it.Value()
		if len(k) != 4 || len(v) != 8 {
			return nil, fmt.Errorf("aggregates: malformed offset entry %x", it.Key())
		}
		out[int32(binary.BigEndian.Uint32(k))] = int64(binary.BigEndian.Uint64(v))
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("aggregates: read offsets of %s: %w", topic, err)
	}
	return out, nil
}

func (s *pebbleStore) Query(ctx context.Context, q *schemas.AggregateQuery) ([]schemas.Totals, error) {
	n, err := queryLen(q)
	if err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	out := make([]schemas.Totals, n)
	plan := planQuery(q.Filter)
	if plan.prefix {
		return out, s.scanCells(ctx, q, out)
	}
	c := schemas.Cell{Action: q.Action, Origin: q.Origin, BrandID: q.BrandID, CategoryID: q.CategoryID}
	key := make([]byte, 0, 64)
	for i := range out {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("aggregates: query: %w", err)
		}
		c.Minute = q.FromMinute + int64(i)
		key = appendRollupKey(key[:0], plan.rollup, &c)
		v, closer, err := s.db.Get(key)
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("aggregates: get: %w", err)
		}
		out[i], err = decodeTotals(v)
		closer.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scanCells answers {origin, brand} and {origin, category}: per minute, a
// scan of the full-cell keys under (minute, action, origin[, brand]).
func (s *pebbleStore) scanCells(ctx context.Context, q *schemas.AggregateQuery, out []schemas.Totals) error {
	it, err := s.db.NewIterWithContext(ctx, nil)
	if err != nil {
		return fmt.Errorf("aggregates: query iterator: %w", err)
	}
	defer it.Close()
	byBrand := q.Filter&schemas.DimBrand != 0
	byCategory := q.Filter&schemas.DimCategory != 0
	var lo []byte
	for i := range out {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("aggregates: query: %w", err)
		}
		lo = appendDim(appendMinuteKey(lo[:0], rollCell, q.FromMinute+int64(i), q.Action), q.Origin)
		if byBrand {
			lo = appendDim(lo, q.BrandID)
		}
		it.SetBounds(lo, prefixEnd(lo)) // copies the bounds
		for ok := it.First(); ok; ok = it.Next() {
			if byCategory && !byBrand {
				_, rest, ok1 := readDim(it.Key()[len(lo):])
				cat, _, ok2 := readDim(rest)
				if !ok1 || !ok2 {
					return fmt.Errorf("aggregates: malformed cell key %x", it.Key())
				}
				if string(cat) != q.CategoryID {
					continue
				}
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return fmt.Errorf("aggregates: read cell: %w", err)
			}
			t, err := decodeTotals(v)
			if err != nil {
				return err
			}
			out[i].Add(t)
		}
		if err := it.Error(); err != nil {
			return fmt.Errorf("aggregates: scan cells: %w", err)
		}
	}
	return nil
}

func (s *pebbleStore) DropBefore(ctx context.Context, minute int64) error {
	if s.closed.Load() {
		return errClosed
	}
	gen, ok := s.memo.needed(minute)
	if !ok {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for r := range numRollups {
		// From the table's first possible key to its first key of minute.
		start := []byte{byte(r) + 1}
		end := appendMinuteKey(nil, r, minute, 0)
		if err := b.DeleteRange(start, end, nil); err != nil {
			return fmt.Errorf("aggregates: delete range: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("aggregates: drop: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("aggregates: drop before minute %d: %w", minute, err)
	}
	s.memo.dropped(minute, gen)
	return nil
}

func (s *pebbleStore) Ping(context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	return nil
}

func (s *pebbleStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.commitMu.Lock() // let a running Commit finish
	defer s.commitMu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("aggregates: close pebble: %w", err)
	}
	return nil
}

// pebbleLogger sends Pebble's log lines to slog. Its info lines (flushes,
// compactions) are routine: Debug.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}

// Fatalf reports corruption or an invariant broken inside Pebble: it must
// not return, like Pebble's default logger (which exits).
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic("pebble: " + msg)
}
