package pipeline

import (
	"testing"
	"time"

	"github.com/allezon/allezon/schemas"
)

// far is the minute 9999-12-31T23:59Z.
const far = int64(253_402_300_740 / 60)

// honest is a stream that reaches minute 100+k at tick k, 100 events a tick.
func honest(k int) map[int64]int64 { return map[int64]int64{100 + int64(k): 100} }

// with adds n events at minute m to a tick's events.
func with(ev map[int64]int64, m, n int64) map[int64]int64 {
	ev[m] += n
	return ev
}

func TestEventClock(t *testing.T) {
	const settle = 5 * time.Second // ticks are 1 s apart: 5 ticks a period
	burst := func(size int64, from, to int) func(k int) map[int64]int64 {
		return func(k int) map[int64]int64 {
			ev := honest(k)
			if k >= from && k <= to {
				with(ev, far, size)
			}
			return ev
		}
	}
	tests := []struct {
		name   string
		ticks  int
		events func(k int) map[int64]int64 // events committed before tick k (1-based)
		want   int64
		wantOK bool
	}{
		{"nothing", 20, func(int) map[int64]int64 { return nil }, 0, false},
		{"not before a full settle period", 5, honest, 0, false},
		// At tick k the window holds ticks k-4..k: the oldest sample rules.
		{"moving stream moves it", 10, honest, 106, true},
		{"moving stream keeps moving", 40, honest, 136, true},
		{"burst of 1, one tick", 10, burst(1, 8, 8), 106, true},
		{"burst of 300, one tick", 10, burst(300, 8, 8), 106, true},
		{"burst of 10,000, one tick", 10, burst(10_000, 8, 8), 106, true},
		{"burst of 10^9, one tick", 10, burst(1e9, 8, 8), 106, true},
		// A burst for 4 of the 5 ticks of the period: the tick outside it
		// still holds the honest minute, and nothing passes the stream.
		{"burst of 10^6 for 4 ticks", 11, burst(1e6, 7, 10), 111, true},
		{"burst of 10^6 for 4 ticks, then more stream", 20, burst(1e6, 7, 10), 116, true},
		{"bursts every other tick", 30, func(k int) map[int64]int64 {
			if k%2 == 1 {
				return with(honest(k), far, 1e6)
			}
			return honest(k)
		}, 126, true},
		{"a majority ahead for the whole period is the stream", 14, burst(1e6, 7, 14), far, true},
		{"burst into a quiet system", 30, func(k int) map[int64]int64 {
			if k == 12 {
				return map[int64]int64{far: 1e6}
			}
			return nil
		}, 0, false},
		{"burst after the stream stopped", 30, func(k int) map[int64]int64 {
			switch {
			case k <= 10:
				return honest(k)
			case k == 15:
				return map[int64]int64{far: 1e6}
			}
			return nil
		}, 106, true},
		{"a quiet tick holds the frontier for a period", 13, func(k int) map[int64]int64 {
			if k == 10 {
				return nil
			}
			return honest(k)
		}, 105, true},
		{"never moves back", 30, func(k int) map[int64]int64 {
			if k > 12 {
				return map[int64]int64{3: 1000} // a replay of older times
			}
			return honest(k)
		}, 108, true},
		{"stragglers of old minutes do not hold it back", 10, func(k int) map[int64]int64 {
			return with(honest(k), 1, 40)
		}, 106, true},
		{"flood scattered over distinct far minutes", 10, func(k int) map[int64]int64 {
			ev := honest(k)
			if k == 8 {
				for i := range int64(3 * maxTickMinutes) {
					with(ev, far+i*1000, 1)
				}
			}
			return ev
		}, 106, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newEventClock(settle)
			t0 := time.Unix(1_700_000_000, 0)
			var got int64
			var ok bool
			for k := 1; k <= tt.ticks; k++ {
				c.add(deltasOf(tt.events(k)))
				got, ok = c.tick(t0.Add(time.Duration(k) * time.Second))
				if len(c.cur.n) > 0 || len(c.samples) > int(settle/time.Second)+1 {
					t.Fatalf("tick %d: %d minutes pending, %d samples kept", k, len(c.cur.n), len(c.samples))
				}
			}
			if ok != tt.wantOK || (ok && got != tt.want) {
				t.Fatalf("frontier = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// deltasOf spreads minute counts over cells, as flushes commit them.
func deltasOf(ev map[int64]int64) map[schemas.Cell]schemas.Totals {
	d := map[schemas.Cell]schemas.Totals{}
	for m, n := range ev {
		d[schemas.Cell{Minute: m, Origin: "a"}] = schemas.Totals{Count: n - n/2}
		if n/2 > 0 {
			d[schemas.Cell{Minute: m, Origin: "b"}] = schemas.Totals{Count: n / 2}
		}
	}
	return d
}

// TestEventClockRestart: a new process keeps nothing, and drops nothing
// before it watched a full settle period of its own.
func TestEventClockRestart(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := newEventClock(3 * time.Second)
	for k := 1; k <= 10; k++ {
		c.add(deltasOf(honest(k)))
		c.tick(t0.Add(time.Duration(k) * time.Second))
	}
	if f, ok := c.tick(t0.Add(11 * time.Second)); !ok || f != 108 {
		t.Fatalf("before the restart: frontier %d, %v; want 108", f, ok)
	}
	c = newEventClock(3 * time.Second)
	for k := 11; k <= 13; k++ {
		c.add(deltasOf(with(honest(k), far, 1e6)))
		if f, ok := c.tick(t0.Add(time.Duration(k) * time.Second)); ok {
			t.Fatalf("tick %d after the restart: frontier %d before a full period", k, f)
		}
	}
	c.add(deltasOf(honest(14)))
	if f, ok := c.tick(t0.Add(14 * time.Second)); !ok || f != 114 {
		t.Fatalf("a period after the restart: frontier %d, %v; want 114", f, ok)
	}
}

func TestMinuteCountsMedian(t *testing.T) {
	tests := []struct {
		name string
		add  [][2]int64 // minute, count
		want int64
	}{
		{"empty", nil, noSample},
		{"one minute", [][2]int64{{7, 3}}, 7},
		{"lower median of an even split", [][2]int64{{7, 5}, {9, 5}}, 7},
		{"majority", [][2]int64{{7, 4}, {9, 6}}, 9},
		{"weighted", [][2]int64{{1, 1}, {2, 1}, {3, 10}, {far, 11}}, 3},
		{"negative minutes", [][2]int64{{-5, 3}, {-4, 1}}, -5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := minuteCounts{n: map[int64]int64{}}
			for _, a := range tt.add {
				h.add(a[0], a[1])
			}
			if got := h.lowerMedian(); got != tt.want {
				t.Fatalf("lowerMedian = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestMinuteCountsBounded: a flood over distinct minutes stays within
// maxTickMinutes buckets, and folding only ever lowers the median.
func TestMinuteCountsBounded(t *testing.T) {
	h := minuteCounts{n: map[int64]int64{}}
	h.add(50, 1000) // honest minute, a minority
	for i := range int64(10 * maxTickMinutes) {
		h.add(far+i, 1)
	}
	if len(h.n) > maxTickMinutes {
		t.Fatalf("%d buckets, bound is %d", len(h.n), maxTickMinutes)
	}
	if h.total != 1000+10*maxTickMinutes {
		t.Fatalf("total %d, want %d", h.total, 1000+10*maxTickMinutes)
	}
	// Unfolded, the lower median is the flood minute far+i with
	// 2*(1000+i+1) >= total; folded, it may only be lower.
	exact := far + (h.total+1)/2 - 1001
	if m := h.lowerMedian(); m < 50 || m > exact {
		t.Fatalf("median %d after folding, want within [50, %d]", m, exact)
	}
}
