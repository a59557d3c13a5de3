package profiles

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/allezon/allezon/schemas"
)

// t0 is 2022-03-22T12:15:00.000Z, the epoch of most test tags.
const t0 int64 = 1647951300000

// everything is a range that holds every representable time but MaxInt64.
var everything = schemas.TimeRange{From: math.MinInt64, To: math.MaxInt64}

// harness is one backend under the contract suite: a fresh store, a
// per-test cookie namer (so runs against a shared server do not collide),
// and a way to close and re-open the same data (nil when the backend
// cannot).
type harness struct {
	store  Store
	cookie func(string) string
	reopen func(t *testing.T) Store
}

type backend struct {
	name string
	open func(t *testing.T) harness
}

func pebbleBackend() backend {
	return backend{name: "pebble", open: func(t *testing.T) harness {
		url := "pebble://" + t.TempDir()
		s := openStore(t, url)
		h := harness{store: s, cookie: func(c string) string { return c }}
		h.reopen = func(t *testing.T) Store {
			if err := s.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			s = openStore(t, url)
			return s
		}
		return h
	}}
}

func aerospikeBackend() backend {
	return backend{name: "aerospike", open: func(t *testing.T) harness {
		addr := os.Getenv("ALLEZON_TEST_AEROSPIKE")
		if addr == "" {
			t.Skip("aerospike contract suite NOT RUN: set ALLEZON_TEST_AEROSPIKE=host:port")
		}
		ns := os.Getenv("ALLEZON_TEST_AEROSPIKE_NAMESPACE")
		if ns == "" {
			ns = "test"
		}
		s := openStore(t, "aerospike://"+addr+"/"+ns)
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		run := hex.EncodeToString(rnd[:]) + "/" + t.Name() + "/"
		return harness{store: s, cookie: func(c string) string { return run + c }}
	}}
}

func openStore(t *testing.T, url string) Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, url, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// tag is a test tag: its JSON stands in for the canonical JSON (the store
// treats it as opaque) and names every field the tests tell tags apart by.
type tag struct {
	cookie string
	action schemas.Action
	timeMs int64
	n      int // distinguishes tags that share cookie, action and time
}

func (g tag) userTag() *schemas.UserTag {
	return &schemas.UserTag{TimeMs: g.timeMs, Cookie: g.cookie, Action: g.action, Country: "PL", Origin: "o", BrandID: "b", CategoryID: "c", Price: 1}
}

func (g tag) json() []byte {
	b := []byte(`{"time":`)
	b = strconv.AppendInt(b, g.timeMs, 10)
	b = append(b, `,"cookie":`...)
	b = strconv.AppendQuote(b, g.cookie)
	b = append(b, `,"action":"`...)
	b = append(b, g.action.String()...)
	b = append(b, `","n":`...)
	b = strconv.AppendInt(b, int64(g.n), 10)
	return append(b, '}')
}

func mustAppend(t *testing.T, s Store, g tag) {
	t.Helper()
	if err := s.Append(context.Background(), g.userTag(), g.json()); err != nil {
		t.Fatalf("append %+v: %v", g, err)
	}
}

// appendAll appends tags from several goroutines (order of arrival is
// irrelevant to the store, and concurrent synced appends share fsyncs,
// which keeps the tests fast).
func appendAll(t *testing.T, s Store, tags []tag) {
	t.Helper()
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(tags); i += workers {
				if err := s.Append(context.Background(), tags[i].userTag(), tags[i].json()); err != nil {
					errs <- fmt.Errorf("append %+v: %w", tags[i], err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, s Store, cookie string, r schemas.TimeRange, limit int) Profile {
	t.Helper()
	p, err := s.Read(context.Background(), cookie, r, limit)
	if err != nil {
		t.Fatalf("read %q %+v limit %d: %v", cookie, r, limit, err)
	}
	return p
}

// jsons is the expected list for tags: their JSON, newest first (ties,
// whose order is unspecified, are compared as sets by sameList).
func jsons(tags ...tag) [][]byte {
	out := make([][]byte, len(tags))
	tags = slices.Clone(tags)
	slices.SortStableFunc(tags, func(a, b tag) int { return -cmpInt(a.timeMs, b.timeMs) })
	for i, g := range tags {
		out[i] = g.json()
	}
	return out
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

// checkList compares a returned list with the expected one: same length,
// same elements, and within a run of equal times the order is free.
func checkList(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d tags, want %d\ngot:  %s\nwant: %s", what, len(got), len(want), short(got), short(want))
	}
	g := slices.Clone(got)
	w := slices.Clone(want)
	// Sort each run of equal time by bytes in both lists.
	timeOf := func(b []byte) string { return string(bytes.SplitN(b, []byte(","), 2)[0]) }
	for _, l := range [][][]byte{g, w} {
		for i := 0; i < len(l); {
			j := i
			for j < len(l) && timeOf(l[j]) == timeOf(l[i]) {
				j++
			}
			slices.SortFunc(l[i:j], bytes.Compare)
			i = j
		}
	}
	for i := range g {
		if !bytes.Equal(g[i], w[i]) {
			t.Fatalf("%s: element %d differs\ngot:  %s\nwant: %s", what, i, short(got), short(want))
		}
	}
}

func short(l [][]byte) string {
	if len(l) > 6 {
		return fmt.Sprintf("%s ... (%d more) ... %s", bytes.Join(l[:3], []byte(" ")), len(l)-6, bytes.Join(l[len(l)-3:], []byte(" ")))
	}
	return string(bytes.Join(l, []byte(" ")))
}

// series returns n tags of one cookie and action at times from, from+step, ...
func series(cookie string, a schemas.Action, from, step int64, n int) []tag {
	out := make([]tag, n)
	for i := range out {
		out[i] = tag{cookie: cookie, action: a, timeMs: from + int64(i)*step, n: i}
	}
	return out
}

func newest(tags []tag, n int) []tag {
	s := slices.Clone(tags)
	slices.SortStableFunc(s, func(a, b tag) int { return -cmpInt(a.timeMs, b.timeMs) })
	return s[:min(n, len(s))]
}

func TestContract(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, h harness)
	}{
		{"unknown cookie", func(t *testing.T, h harness) {
			mustAppend(t, h.store, tag{cookie: h.cookie("known"), timeMs: t0})
			p := mustRead(t, h.store, h.cookie("unknown"), everything, Keep)
			if len(p.Views) != 0 || len(p.Buys) != 0 {
				t.Fatalf("unknown cookie: got %d views, %d buys", len(p.Views), len(p.Buys))
			}
		}},
		{"half-open range", func(t *testing.T, h harness) {
			c := h.cookie("c")
			r := schemas.TimeRange{From: t0, To: t0 + 1000}
			tags := []tag{
				{cookie: c, timeMs: r.From - 1}, {cookie: c, timeMs: r.From}, {cookie: c, timeMs: r.From + 1},
				{cookie: c, timeMs: r.To - 1}, {cookie: c, timeMs: r.To}, {cookie: c, timeMs: r.To + 1},
			}
			appendAll(t, h.store, tags)
			p := mustRead(t, h.store, c, r, Keep)
			checkList(t, "views", p.Views, jsons(tags[1], tags[2], tags[3]))
			one := mustRead(t, h.store, c, schemas.TimeRange{From: r.To, To: r.To + 1}, Keep)
			checkList(t, "one-ms range", one.Views, jsons(tags[4]))
			empty := mustRead(t, h.store, c, schemas.TimeRange{From: r.To, To: r.To}, Keep)
			checkList(t, "empty range", empty.Views, nil)
		}},
		{"newest first", func(t *testing.T, h harness) {
			c := h.cookie("c")
			times := []int64{5, 1, 9, 3, 7, 2, 8, 6, 4, 0}
			var tags []tag
			for i, d := range times {
				g := tag{cookie: c, action: schemas.Buy, timeMs: t0 + d*1000, n: i}
				mustAppend(t, h.store, g) // one by one: arrival order must not matter
				tags = append(tags, g)
			}
			p := mustRead(t, h.store, c, everything, Keep)
			checkList(t, "buys", p.Buys, jsons(tags...))
			checkList(t, "views", p.Views, nil)
		}},
		{"limits", func(t *testing.T, h harness) {
			c := h.cookie("c")
			tags := series(c, schemas.View, t0, 10, Keep+10)
			appendAll(t, h.store, tags)
			r := schemas.TimeRange{From: t0 + 5, To: t0 + 1000000}
			for _, limit := range []int{0, 1, 2, 199, Keep} {
				var inRange []tag
				for _, g := range tags {
					if g.timeMs >= r.From && g.timeMs < r.To {
						inRange = append(inRange, g)
					}
				}
				p := mustRead(t, h.store, c, r, limit)
				checkList(t, fmt.Sprintf("limit %d", limit), p.Views, jsons(newest(inRange, limit)...))
			}
			// A range that holds fewer tags than the limit.
			p := mustRead(t, h.store, c, schemas.TimeRange{From: t0 + 2000, To: t0 + 2030}, Keep)
			checkList(t, "narrow range", p.Views, jsons(tags[200:203]...))
		}},
		{"actions kept separately", func(t *testing.T, h harness) {
			c := h.cookie("c")
			buys := series(c, schemas.Buy, t0, 1, 5)
			views := series(c, schemas.View, t0+100, 1, Keep+1)
			appendAll(t, h.store, buys)
			appendAll(t, h.store, views)
			p := mustRead(t, h.store, c, everything, Keep)
			checkList(t, "buys", p.Buys, jsons(buys...))
			checkList(t, "views", p.Views, jsons(newest(views, Keep)...))
		}},
		{"trim keeps the newest", func(t *testing.T, h harness) {
			c := h.cookie("c")
			tags := series(c, schemas.View, t0, 1, 500)
			// Shuffle deterministically so old tags also arrive late.
			for i := range tags {
				j := (i * 7919) % len(tags)
				tags[i], tags[j] = tags[j], tags[i]
			}
			appendAll(t, h.store, tags)
			p := mustRead(t, h.store, c, everything, Keep)
			checkList(t, "views", p.Views, jsons(newest(tags, Keep)...))
			// A range entirely among the oldest tags may show what a trim
			// has not reached yet, but never more than asked for.
			old := mustRead(t, h.store, c, schemas.TimeRange{From: t0, To: t0 + 100}, Keep)
			if len(old.Views) > 100 {
				t.Fatalf("old range: %d tags, want at most 100", len(old.Views))
			}
		}},
		{"same millisecond", func(t *testing.T, h harness) {
			c := h.cookie("c")
			tags := []tag{{cookie: c, timeMs: t0, n: 1}, {cookie: c, timeMs: t0, n: 2}, {cookie: c, timeMs: t0, n: 3}, {cookie: c, timeMs: t0 + 1, n: 4}}
			appendAll(t, h.store, tags)
			p := mustRead(t, h.store, c, everything, Keep)
			checkList(t, "views", p.Views, jsons(tags...))
			p = mustRead(t, h.store, c, schemas.TimeRange{From: t0, To: t0 + 1}, 2)
			if len(p.Views) != 2 {
				t.Fatalf("limit 2 within one millisecond: got %d tags", len(p.Views))
			}
		}},
		{"identical retry stored once", func(t *testing.T, h harness) {
			c := h.cookie("c")
			g := tag{cookie: c, action: schemas.Buy, timeMs: t0}
			for range 3 {
				mustAppend(t, h.store, g)
			}
			p := mustRead(t, h.store, c, everything, Keep)
			checkList(t, "buys", p.Buys, jsons(g))
		}},
		{"prefix cookies do not mix", func(t *testing.T, h harness) {
			names := []string{"a", "ab", "a\x00", "abc", "b"}
			var all []tag
			for i, n := range names {
				all = append(all, series(h.cookie(n), schemas.Action(i%2), t0+int64(i), 100, 3)...)
			}
			appendAll(t, h.store, all)
			for i, n := range names {
				p := mustRead(t, h.store, h.cookie(n), everything, Keep)
				want := jsons(all[3*i : 3*i+3]...)
				got, other := p.Views, p.Buys
				if schemas.Action(i%2) == schemas.Buy {
					got, other = p.Buys, p.Views
				}
				checkList(t, fmt.Sprintf("cookie %q", n), got, want)
				checkList(t, fmt.Sprintf("cookie %q, other action", n), other, nil)
			}
		}},
		{"odd cookie bytes", func(t *testing.T, h harness) {
			names := []string{"\x00", "\x00\x00", "a/b", "/", "zażółć gęślą jaźń", "日本語", "🍪", "\xff\xfe", "x\ny", string(make([]byte, 300))}
			for i, n := range names {
				mustAppend(t, h.store, tag{cookie: h.cookie(n), action: schemas.Buy, timeMs: t0, n: i})
			}
			for i, n := range names {
				p := mustRead(t, h.store, h.cookie(n), everything, Keep)
				checkList(t, fmt.Sprintf("cookie %q", n), p.Buys, jsons(tag{cookie: h.cookie(n), action: schemas.Buy, timeMs: t0, n: i}))
			}
		}},
		{"negative and far-future times", func(t *testing.T, h harness) {
			c := h.cookie("c")
			times := []int64{math.MinInt64, math.MinInt64 + 1, -1e15, -60001, -1, 0, 1, t0, 253402300799999, 1e15, math.MaxInt64 - 1}
			var tags []tag
			for i, ms := range times {
				tags = append(tags, tag{cookie: c, timeMs: ms, n: i})
			}
			appendAll(t, h.store, tags)
			p := mustRead(t, h.store, c, everything, Keep)
			checkList(t, "everything", p.Views, jsons(tags...))
			p = mustRead(t, h.store, c, schemas.TimeRange{From: -1, To: 1}, Keep)
			checkList(t, "around zero", p.Views, jsons(tags[4], tags[5]))
			p = mustRead(t, h.store, c, schemas.TimeRange{From: math.MinInt64, To: -1}, Keep)
			checkList(t, "negative", p.Views, jsons(tags[:4]...))
			p = mustRead(t, h.store, c, schemas.TimeRange{From: 1e15, To: math.MaxInt64}, Keep)
			checkList(t, "far future", p.Views, jsons(tags[9], tags[10]))
		}},
		{"concurrent appends lose nothing", func(t *testing.T, h harness) {
			c := h.cookie("c")
			const goroutines, each = 64, 3
			var wg sync.WaitGroup
			var mu sync.Mutex
			var tags []tag
			errs := make(chan error, goroutines)
			for w := range goroutines {
				wg.Go(func() {
					for i := range each {
						// Goroutines w and w+2 write the same action at the same
						// times: ties must survive too.
						g := tag{cookie: c, action: schemas.Action(w % 2), timeMs: t0 + int64(w/4*each+i), n: w}
						if err := h.store.Append(context.Background(), g.userTag(), g.json()); err != nil {
							errs <- err
							return
						}
						mu.Lock()
						tags = append(tags, g)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			var views, buys []tag
			for _, g := range tags {
				if g.action == schemas.View {
					views = append(views, g)
				} else {
					buys = append(buys, g)
				}
			}
			p := mustRead(t, h.store, c, everything, Keep)
			checkList(t, "views", p.Views, jsons(views...))
			checkList(t, "buys", p.Buys, jsons(buys...))
		}},
		{"results do not alias", func(t *testing.T, h harness) {
			c := h.cookie("c")
			tags := series(c, schemas.View, t0, 1, 20)
			appendAll(t, h.store, tags)
			first := mustRead(t, h.store, c, everything, Keep)
			for _, b := range first.Views {
				for i := range b {
					b[i] = 'X'
				}
			}
			appendAll(t, h.store, series(c, schemas.View, t0+1000, 1, 5))
			second := mustRead(t, h.store, c, schemas.TimeRange{From: t0, To: t0 + 20}, Keep)
			checkList(t, "after scribbling on a previous result", second.Views, jsons(tags...))
		}},
		{"ping", func(t *testing.T, h harness) {
			if err := h.store.Ping(context.Background()); err != nil {
				t.Fatalf("ping: %v", err)
			}
		}},
		{"survives reopen", func(t *testing.T, h harness) {
			if h.reopen == nil {
				t.Skip("backend keeps data in a server; nothing to re-open")
			}
			c := h.cookie("c")
			tags := append(series(c, schemas.View, t0, 1, 30), series(c, schemas.Buy, t0, 3, 30)...)
			appendAll(t, h.store, tags)
			s := h.reopen(t)
			p := mustRead(t, s, c, everything, Keep)
			checkList(t, "views", p.Views, jsons(tags[:30]...))
			checkList(t, "buys", p.Buys, jsons(tags[30:]...))
		}},
	}
	for _, b := range []backend{pebbleBackend(), aerospikeBackend()} {
		t.Run(b.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, b.open(t))
				})
			}
		})
	}
}
