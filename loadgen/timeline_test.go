package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// TestTimelineMemory holds the bound the timeline's doc comment states.
func TestTimelineMemory(t *testing.T) {
	if got := unsafe.Sizeof(timelineChunk{}) / chunkSecs; got != 1296 {
		t.Errorf("a second takes %d bytes, the doc says 1,296", got)
	}
	if got := time.Duration(maxTimelineSecs) * time.Second; got.Truncate(time.Minute) != 9*time.Hour+6*time.Minute {
		t.Errorf("the timeline covers %v, the doc says 9 h 6 min", got)
	}
}

func TestTimelineRecord(t *testing.T) {
	type rec struct {
		ep       int
		end, lat time.Duration
		answered bool
		o        outcome
	}
	ms := time.Millisecond
	tests := []struct {
		name      string
		recs      []rec
		n         int64 // seconds asked for
		want      []Second
		truncated bool
	}{
		{"empty run keeps its seconds", nil, 2, []Second{{At: 0}, {At: 1}}, false},
		{"by end time, per endpoint", []rec{
			{epTags, 900 * ms, 5 * ms, true, outcomeOK},
			{epTags, 1100 * ms, 300 * ms, true, outcomeOK}, // started in second 0, ended in 1
			{epTags, 1200 * ms, 2 * ms, true, outcomeError},
			{epProfiles, 1300 * ms, 0, false, outcomeOutageError},
			{epAggregates, 1999 * ms, 40 * ms, true, outcomeOK},
		}, 1, []Second{
			{At: 0, TagsAcked: 1, Tags: SecondStats{Requests: 1, OK: 1, P99: 5120 * time.Microsecond}},
			{At: 1, TagsAcked: 1, Tags: SecondStats{Requests: 2, OK: 1, Errors: 1, P99: 327680 * time.Microsecond},
				Profiles:   SecondStats{Requests: 1, OutageErrors: 1},
				Aggregates: SecondStats{Requests: 1, OK: 1, P99: 40960 * time.Microsecond}},
		}, false},
		{"beyond the covered span", []rec{{epTags, time.Duration(maxTimelineSecs) * time.Second, ms, true, outcomeOK}},
			1, []Second{{At: 0}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTimeline()
			for _, r := range tt.recs {
				tl.record(r.ep, r.end, r.lat, r.answered, r.o)
			}
			got := tl.seconds(tt.n)
			if len(got) != len(tt.want) {
				t.Fatalf("%d seconds, want %d: %+v", len(got), len(tt.want), got)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("second %d:\n got %+v\nwant %+v", i, got[i], tt.want[i])
				}
			}
			if tl.truncated.Load() != tt.truncated {
				t.Errorf("truncated %v, want %v", tl.truncated.Load(), tt.truncated)
			}
		})
	}
}

// TestTimelineQuantile: the p99 of a second is never below the true one
// and at most 25 % above it.
func TestTimelineQuantile(t *testing.T) {
	for _, base := range []time.Duration{3 * time.Microsecond, 700 * time.Microsecond, 13 * time.Millisecond, 1500 * time.Millisecond} {
		tl := newTimeline()
		for i := 1; i <= 1000; i++ {
			tl.record(epTags, 0, base*time.Duration(i)/100, true, outcomeOK)
		}
		want := base * 990 / 100
		got := tl.second(0).Tags.P99
		if got < want || float64(got) > 1.25*float64(want)+float64(time.Microsecond) {
			t.Errorf("p99 of %v..%v = %v, want %v to +25 %%", base/100, base*10, got, want)
		}
	}
}

// TestRunTimeline: the timeline of a real run adds up to the summary, is
// in the JSON report and not in the text.
func TestRunTimeline(t *testing.T) {
	rep, err := Run(context.Background(), quickConfig(startEcho(t, &echoServer{})))
	if err != nil {
		t.Fatal(err)
	}
	if want := int((rep.Elapsed + rep.Settle + time.Second - 1) / time.Second); len(rep.Timeline) < want {
		t.Errorf("%d seconds in the timeline, the run took %v + %v", len(rep.Timeline), rep.Elapsed, rep.Settle)
	}
	var sums [numEndpts]SecondStats
	var acked int64
	for i, s := range rep.Timeline {
		if s.At != int64(i) {
			t.Fatalf("entry %d is second %d", i, s.At)
		}
		acked += s.TagsAcked
		for ep, st := range s.endpoints() {
			sums[ep].Requests += st.Requests
			sums[ep].OK += st.OK
			sums[ep].Errors += st.Errors
		}
	}
	if acked != rep.TagsAcked {
		t.Errorf("timeline acknowledges %d tags, the report %d", acked, rep.TagsAcked)
	}
	for ep, e := range rep.endpoints() {
		if sums[ep].Requests != e.Requests || sums[ep].OK != e.OK || sums[ep].Errors != e.ErrorCount() {
			t.Errorf("endpoint %d: timeline %+v, report %d requests %d ok %d errors", ep, sums[ep], e.Requests, e.OK, e.ErrorCount())
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		Timeline []Second `json:"timeline"`
	}
	if err := json.Unmarshal(js.Bytes(), &decoded); err != nil || len(decoded.Timeline) != len(rep.Timeline) || decoded.Timeline[0] != rep.Timeline[0] {
		t.Errorf("JSON timeline %d seconds (%v), want %d", len(decoded.Timeline), err, len(rep.Timeline))
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	if strings.Contains(text.String(), "p99_ns") || strings.Count(text.String(), "\n") > 20 {
		t.Errorf("the text report shows the timeline:\n%s", text.String())
	}
}

// TestProgressLine: the live line gives, per endpoint, the last complete
// second's answers and p99 and the errors so far.
func TestProgressLine(t *testing.T) {
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cfg.Progress = &out
	r, _ := newRunner(cfg)
	r.t0 = time.Now().Add(-2500 * time.Millisecond)
	r.sent.Store(1200)
	r.acked.Store(1100)
	for range 3 {
		r.timeline.record(epTags, 1500*time.Millisecond, 12*time.Millisecond, true, outcomeOK)
	}
	r.timeline.record(epTags, 2100*time.Millisecond, 900*time.Millisecond, true, outcomeOK) // current second: not shown
	r.timeline.record(epProfiles, 1700*time.Millisecond, 0, false, outcomeError)
	r.errors[epProfiles].Store(4)
	r.writeProgress(500)
	want := "sent 1200 (500/s) acked 1100 | tags 3/s p99 12ms err 0 | profiles 1/s p99 - err 4 | aggregates 0/s p99 - err 0 | mismatches 0"
	if !strings.Contains(out.String(), want) {
		t.Errorf("progress line %q\nwant it to hold %q", out.String(), want)
	}
}
