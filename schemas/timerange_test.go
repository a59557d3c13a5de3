package schemas

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestParseTimeRange(t *testing.T) {
	ms := func(s string) int64 {
		tm, err := time.Parse("2006-01-02T15:04:05.999", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	tests := []struct {
		in   string
		want TimeRange
		err  error
	}{
		{in: "2022-03-22T12:15:00.000_2022-03-22T12:16:00.000", want: TimeRange{ms("2022-03-22T12:15:00"), ms("2022-03-22T12:16:00")}},
		{in: "2022-03-22T12:15:00.123_2022-03-22T12:15:00.124", want: TimeRange{ms("2022-03-22T12:15:00.123"), ms("2022-03-22T12:15:00.124")}},
		{in: "2022-03-01T00:05:00_2022-03-01T00:15:00", want: TimeRange{ms("2022-03-01T00:05:00"), ms("2022-03-01T00:15:00")}},
		{in: "2022-03-01T00:05:00_2022-03-01T00:05:00.001", want: TimeRange{ms("2022-03-01T00:05:00"), ms("2022-03-01T00:05:00.001")}},
		{in: "1969-12-31T23:59:00_1970-01-01T00:01:00", want: TimeRange{-60000, 60000}},
		{in: "1969-12-31T23:59:59.999_1970-01-01T00:00:00.000", want: TimeRange{-1, 0}},

		{in: "2022-03-22T12:16:00_2022-03-22T12:15:00", err: errEmptyRange},
		{in: "2022-03-22T12:15:00_2022-03-22T12:15:00", err: errEmptyRange},
		{in: "2022-03-22T12:15:00.000Z_2022-03-22T12:16:00.000Z", err: errTimeZoneInUTC},
		{in: "2022-03-22T12:15:00Z_2022-03-22T12:16:00Z", err: errTimeZoneInUTC},
		{in: "2022-03-22T12:15:00_2022-03-22T12:16:00+01:00", err: errTimeZoneInUTC},
		{in: "2022-03-22T12:15:00.000-01:00_2022-03-22T12:16:00", err: errTimeZoneInUTC},
		{in: "2022-03-22T12:15:00.12_2022-03-22T12:16:00", err: errRangeFraction},
		{in: "2022-03-22T12:15:00.1234_2022-03-22T12:16:00", err: errRangeFraction},
		{in: "2022-03-22T12:15:00._2022-03-22T12:16:00", err: errRangeFraction},
		{in: "2022-03-22T12:15:00", err: errTimeRangeShape},
		{in: "", err: errTimeRangeShape},
		{in: "_", err: errTimeLayout},
		{in: "2022-03-22T12:15:00_", err: errTimeLayout},
		{in: "2022-03-22T12:15:00 2022-03-22T12:16:00", err: errTimeRangeShape},
		{in: "2022-03-22T12:15:00__2022-03-22T12:16:00", err: errTimeLayout},
		{in: "2022-03-22T12:15:00_2022-03-22T12:16:00_", err: errTimeRangeShape},
		{in: "2022-02-30T12:15:00_2022-03-22T12:16:00", err: errTimeDay},
		{in: "2022-03-22T12:15:00_2022-03-22T25:16:00", err: errTimeHour},
		{in: "2022-03-22T12:15:00,000_2022-03-22T12:16:00", err: errTimeRangeShape},
	}
	for _, tc := range tests {
		got, err := ParseTimeRange(tc.in)
		if tc.err != nil {
			var fe *FieldError
			if !errors.Is(err, tc.err) || !errors.As(err, &fe) || fe.Field != "time_range" {
				t.Errorf("ParseTimeRange(%q) = %v, %v; want time_range error %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTimeRange(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestAppendBucket(t *testing.T) {
	tests := []struct {
		minute int64
		want   string
	}{
		{0, "1970-01-01T00:00:00"},
		{-1, "1969-12-31T23:59:00"},
		{-1440, "1969-12-31T00:00:00"},
		{1646092800 / 60, "2022-03-01T00:00:00"},
		{1646092800/60 + 5, "2022-03-01T00:05:00"},
		{1646092800/60 - 1, "2022-02-28T23:59:00"},
	}
	for _, tc := range tests {
		if got := string(AppendBucket(nil, tc.minute)); got != tc.want {
			t.Errorf("AppendBucket(%d) = %q, want %q", tc.minute, got, tc.want)
		}
	}
}

// TestMinuteOfFloor pins the floor semantics of MinuteOf that buckets
// depend on, before 1970 too, and checks that a bucket parses back to its
// minute's start.
func TestMinuteOfFloor(t *testing.T) {
	tests := []struct{ ms, minute int64 }{
		{0, 0}, {59999, 0}, {60000, 1}, {-1, -1}, {-59999, -1}, {-60000, -1}, {-60001, -2},
	}
	for _, tc := range tests {
		if got := MinuteOf(tc.ms); got != tc.minute {
			t.Errorf("MinuteOf(%d) = %d, want %d", tc.ms, got, tc.minute)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		ms := genTimeMs(r)
		m := MinuteOf(ms)
		bucket := AppendBucket(nil, m)
		// Truncate rounds down (from the zero time, year 1), also before 1970.
		want := time.UnixMilli(ms).UTC().Truncate(time.Minute)
		if string(bucket) != want.Format("2006-01-02T15:04:05") {
			t.Fatalf("AppendBucket(MinuteOf(%d)) = %s, want %s", ms, bucket, want.Format("2006-01-02T15:04:05"))
		}
		tr, err := ParseTimeRange(string(bucket) + "_" + string(AppendBucket(nil, m+1)))
		if err != nil || tr.From != m*60000 || tr.To != (m+1)*60000 || ms < tr.From || ms >= tr.To {
			t.Fatalf("bucket range of %d: %v, %v", ms, tr, err)
		}
	}
}

func BenchmarkParseTimeRange(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseTimeRange("2022-03-22T12:15:00.000_2022-03-22T12:16:00.000"); err != nil {
			b.Fatal(err)
		}
	}
}
