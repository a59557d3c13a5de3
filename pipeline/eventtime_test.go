package pipeline

import (
	"testing"

	"github.com/allezon/allezon/schemas"
)

func TestEventClock(t *testing.T) {
	cell := func(minute int64) schemas.Cell { return schemas.Cell{Minute: minute, Origin: "o"} }
	type flush map[schemas.Cell]schemas.Totals
	tests := []struct {
		name    string
		quorum  int
		flushes []flush
		want    int64
		wantOK  bool
	}{
		{"nothing yet", 10, nil, 0, false},
		{"below quorum", 10, []flush{{cell(5): {Count: 9}}}, 0, false},
		{"quorum over two flushes", 10, []flush{{cell(5): {Count: 6}}, {cell(5): {Count: 4}}}, 5, true},
		{"quorum over cells of one minute", 10, []flush{{cell(5): {Count: 6}, {Minute: 5, Origin: "p"}: {Count: 4}}}, 5, true},
		{"one far-future tag does not move it", 10, []flush{{cell(5): {Count: 10}}, {cell(5_000_000): {Count: 1}}}, 5, true},
		{"newest confirmed wins", 10, []flush{{cell(5): {Count: 10}, cell(7): {Count: 10}, cell(6): {Count: 10}}}, 7, true},
		{"older minutes never move it back", 10, []flush{{cell(7): {Count: 10}}, {cell(3): {Count: 100}}}, 7, true},
		{"quorum 1 trusts every event", 1, []flush{{cell(-3): {Count: 1}}}, -3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newEventClock(tt.quorum)
			for _, f := range tt.flushes {
				c.add(f)
			}
			got, ok := c.newest()
			if ok != tt.wantOK || (ok && got != tt.want) {
				t.Fatalf("newest = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestEventClockBoundsPending(t *testing.T) {
	c := newEventClock(1000)
	f := map[schemas.Cell]schemas.Totals{}
	for m := range int64(maxPendingMinutes + 10) {
		f[schemas.Cell{Minute: m}] = schemas.Totals{Count: 1}
	}
	c.add(f)
	if len(c.pending) > maxPendingMinutes {
		t.Fatalf("pending holds %d minutes, bound is %d", len(c.pending), maxPendingMinutes)
	}
}
