package loadgen

import (
	"math"
	"slices"
	"time"

	"github.com/allezon/allezon/schemas"
)

// SPEC.md: the server must keep at least the 200 most recent tags per
// cookie and action, and returns at most 200 per list.
const (
	keptPerAction = 200
	defaultLimit  = 200
	// keepEntries is how many entries per cookie and action the model
	// keeps; older ones can never be expected (their rank exceeds 200), so
	// only the newest dropped time is remembered.
	keepEntries = 256
)

// Reasons a query is not fair, for the report's skipped counts.
const (
	unfairWatermark = "range ends after the freshness watermark"
	unfairPending   = "an expected tag is not acknowledged long enough ago (in flight, failed or fresh)"
	unfairTrimmed   = "an expected tag may have been trimmed (beyond the 200 most recent sent)"
	unfairTie       = "the limit cuts between tags of the same millisecond"
	unfairUncertain = "a minute holds a tag whose request failed"
	unfairRetention = "the range is older than the 24 h retention"
	unfairPruned    = "the model no longer holds the range"
	unfairUnwatched = "the filter was not tracked from the range's start"
	unfairChanged   = "newer tags sent while the query ran made it unfair"
)

// Entry states (profileEntry.ackAt).
const (
	inFlight int64 = 0
	failed   int64 = -1
)

// profileEntry is one sent tag in a cookie's list.
type profileEntry struct {
	id     int64
	timeMs int64
	ackAt  int64 // unix ns of the 204; inFlight or failed otherwise
}

// profileList is one cookie's tags of one action, ascending by (time, id).
type profileList struct {
	entries []profileEntry
	// trimmedMs is the newest event time among dropped entries
	// (math.MinInt64 when none was dropped).
	trimmedMs int64
}

type profileModel struct {
	cookies map[string]*[schemas.NumActions]profileList
}

func newProfileModel() profileModel {
	return profileModel{cookies: make(map[string]*[schemas.NumActions]profileList)}
}

func (p *profileModel) list(t *schemas.UserTag, create bool) *profileList {
	c := p.cookies[t.Cookie]
	if c == nil {
		if !create {
			return nil
		}
		c = new([schemas.NumActions]profileList)
		for i := range c {
			c[i].trimmedMs = math.MinInt64
		}
		p.cookies[t.Cookie] = c
	}
	return &c[t.Action]
}

func (p *profileModel) sent(id int64, t *schemas.UserTag) {
	l := p.list(t, true)
	e := profileEntry{id: id, timeMs: t.TimeMs}
	// Sends arrive nearly in order: insert from the end.
	i := len(l.entries)
	for i > 0 && (l.entries[i-1].timeMs > e.timeMs || l.entries[i-1].timeMs == e.timeMs && l.entries[i-1].id > id) {
		i--
	}
	l.entries = slices.Insert(l.entries, i, e)
	if len(l.entries) >= 2*keepEntries {
		drop := len(l.entries) - keepEntries
		l.trimmedMs = max(l.trimmedMs, l.entries[drop-1].timeMs)
		l.entries = append(l.entries[:0], l.entries[drop:]...)
	}
}

// find returns the entry of id, or nil if it was dropped.
func (l *profileList) find(id int64, timeMs int64) *profileEntry {
	for i := len(l.entries) - 1; i >= 0; i-- {
		e := &l.entries[i]
		if e.id == id {
			return e
		}
		if e.timeMs < timeMs {
			break
		}
	}
	return nil
}

func (p *profileModel) acked(id int64, t *schemas.UserTag, now int64) {
	if l := p.list(t, false); l != nil {
		if e := l.find(id, t.TimeMs); e != nil {
			e.ackAt = now
		}
	}
}

func (p *profileModel) failed(id int64, t *schemas.UserTag) {
	if l := p.list(t, false); l != nil {
		if e := l.find(id, t.TimeMs); e != nil && e.ackAt == inFlight {
			e.ackAt = failed
		}
	}
}

// expected selects the entries a query over [from, to) with limit must
// return from l, newest first, or says why the answer is not determined:
//
//   - E, the answer, is the newest `limit` entries of the range;
//   - every entry of E must have been acknowledged at least fresh before
//     now (failed and in-flight entries may or may not be stored);
//   - the limit must not cut between two entries of the same millisecond
//     (their order is unspecified, so either could be returned);
//   - every entry of E must be among the 200 most recent of the list
//     counting every tag sent so far, acknowledged or not: the server may
//     trim anything older. Ties count against the entry (rank = number of
//     sent entries at the same time or newer), so an entry that might be
//     cut is never expected. When the range holds fewer than `limit`
//     entries E is the whole range, so this also says that none of the
//     range's entries may have been trimmed.
func (l *profileList) expected(from, to int64, limit int, now int64, fresh time.Duration, dst []profileEntry) ([]profileEntry, string) {
	// R = entries[lo:hi].
	lo, _ := slices.BinarySearchFunc(l.entries, from, func(e profileEntry, t int64) int { return cmpInt(e.timeMs, t) })
	hi, _ := slices.BinarySearchFunc(l.entries, to, func(e profileEntry, t int64) int { return cmpInt(e.timeMs, t) })
	if limit == 0 {
		return dst, ""
	}
	n := hi - lo
	if n < limit && from <= l.trimmedMs {
		// E is the whole range, which may hold dropped entries.
		return dst, unfairTrimmed
	}
	first := lo
	if n > limit {
		first = hi - limit
		if l.entries[first-1].timeMs == l.entries[first].timeMs {
			return dst, unfairTie
		}
	}
	if first == hi {
		return dst, ""
	}
	// Rank of E's oldest entry among everything sent.
	oldest := l.entries[first].timeMs
	k, _ := slices.BinarySearchFunc(l.entries, oldest, func(e profileEntry, t int64) int { return cmpInt(e.timeMs, t) })
	if len(l.entries)-k > keptPerAction {
		return dst, unfairTrimmed
	}
	limitNs := now - int64(fresh)
	for i := hi - 1; i >= first; i-- {
		e := l.entries[i]
		if e.ackAt <= 0 || e.ackAt > limitNs {
			return dst, unfairPending
		}
		dst = append(dst, e)
	}
	return dst, ""
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// PruneProfiles forgets the tags older than horizonMs (event time) that
// no query may ask about any more: a range must then start at or after
// horizonMs. It bounds the model's memory on long runs.
func (m *model) PruneProfiles(horizonMs int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if horizonMs <= m.profileHorizon {
		return
	}
	m.profileHorizon = horizonMs
	m.profiles.pruneBefore(horizonMs)
}

// pruneBefore forgets cookies whose every entry is settled and older than
// horizonMs: a range starting at or after horizonMs can never touch them,
// and they do not change the rank of newer tags.
func (p *profileModel) pruneBefore(horizonMs int64) {
	for cookie, lists := range p.cookies {
		old := true
		for i := range lists {
			if n := len(lists[i].entries); n > 0 {
				last := lists[i].entries[n-1]
				if last.timeMs >= horizonMs || last.ackAt == inFlight {
					old = false
				}
			}
		}
		if old {
			delete(p.cookies, cookie)
		}
	}
}

// profileQuery is one /user_profiles question.
type profileQuery struct {
	Cookie   string
	FromMs   int64 // inclusive
	ToMs     int64 // exclusive
	Limit    int   // 0..200
	HasLimit bool  // false: no limit parameter, the server's default 200 applies
}

// ProfileExpected returns the exact body SPEC.md requires for q at now,
// whether it holds any tag, and an empty reason; or, when the answer is
// not determined by what the server must keep and show, the reason. It
// appends to dst; src re-creates the tags (each goroutine passes its own).
func (m *model) ProfileExpected(dst []byte, q *profileQuery, now time.Time, src tagSource) (body []byte, nonEmpty bool, reason string) {
	ns := now.UnixNano()
	limit := defaultLimit
	if q.HasLimit {
		limit = min(q.Limit, defaultLimit)
	}
	var picked [schemas.NumActions][]profileEntry
	m.mu.Lock()
	wm, ok := m.settle.watermark(m.profileFresh, ns)
	if !ok || q.ToMs > wm {
		m.mu.Unlock()
		return dst, false, unfairWatermark
	}
	if q.FromMs < m.profileHorizon {
		m.mu.Unlock()
		return dst, false, unfairPruned
	}
	if lists := m.profiles.cookies[q.Cookie]; lists != nil {
		for a := range lists {
			picked[a], reason = lists[a].expected(q.FromMs, q.ToMs, limit, ns, m.profileFresh, nil)
			if reason != "" {
				m.mu.Unlock()
				return dst, false, reason
			}
		}
	}
	m.mu.Unlock()

	dst = append(dst, `{"cookie":`...)
	dst = schemas.AppendJSONString(dst, q.Cookie)
	for a, name := range [...]string{`,"views":[`, `],"buys":[`} {
		dst = append(dst, name...)
		for i, e := range picked[a] {
			if i > 0 {
				dst = append(dst, ',')
			}
			t := src.Tag(e.id)
			dst = schemas.AppendUserTagJSON(dst, &t)
		}
	}
	dst = append(dst, "]}"...)
	return dst, len(picked[0])+len(picked[1]) > 0, ""
}
