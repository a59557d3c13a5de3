package profiles

import (
	"encoding/binary"
	"math"

	"github.com/allezon/allezon/schemas"
)

// entryIDLen is the length of an entry id: the sortable part of a tag's key
// in both backends.
const entryIDLen = 16

// appendEntryID appends the 16-byte id of a tag: the big-endian event time,
// inverted so that newer tags sort first bytewise, then the big-endian
// xxhash of the tag's canonical JSON. Ordering by id is ordering by
// (time descending, hash ascending); the hash separates distinct tags of one
// millisecond and maps an identical retry onto the same id.
func appendEntryID(dst []byte, timeMs int64, hash uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(dst, invertTime(timeMs)), hash)
}

// invertTime maps event times to uint64 so that a newer time is a smaller
// number: flipping the sign bit makes int64 order unsigned order (negative
// times included), and complementing reverses it; together that is an XOR
// with 0x7fff_ffff_ffff_ffff.
func invertTime(ms int64) uint64 { return uint64(ms) ^ math.MaxInt64 }

// idTime is the event time of an entry id (the inverse of invertTime).
func idTime(id []byte) int64 { return int64(binary.BigEndian.Uint64(id) ^ math.MaxInt64) }

// idRange gives the entry ids that bound the times [r.From, r.To): every
// tag in the range has start <= id < end. end is nil when r.From is the
// smallest time (no id is beyond it). ok is false when the range is empty.
func idRange(r schemas.TimeRange) (start, end []byte, ok bool) {
	if r.To <= r.From {
		return nil, nil, false
	}
	start = appendEntryID(make([]byte, 0, 2*entryIDLen), r.To-1, 0)
	if r.From == math.MinInt64 {
		return start, nil, true
	}
	// The smallest id of time From-1 is one past the largest id of From.
	end = appendEntryID(start[entryIDLen:], r.From-1, 0)
	return start, end, true
}

// appendCookiePrefix appends the Pebble key prefix of a cookie's tags of one
// action: 'p', the uvarint length of the cookie, the cookie, the action.
// The length makes "a" and "ab" disjoint prefixes whatever bytes a cookie
// holds.
func appendCookiePrefix(dst []byte, cookie string, a schemas.Action) []byte {
	dst = append(dst, 'p')
	dst = binary.AppendUvarint(dst, uint64(len(cookie)))
	dst = append(dst, cookie...)
	return append(dst, byte(a))
}
