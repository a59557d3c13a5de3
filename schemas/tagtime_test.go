package schemas

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestParseTagTime(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi, s, ms int) int64 {
		return time.Date(y, mo, d, h, mi, s, ms*1e6, time.UTC).UnixMilli()
	}
	tests := []struct {
		in   string
		want int64
		err  error
	}{
		{in: "2022-03-22T12:15:00Z", want: utc(2022, 3, 22, 12, 15, 0, 0)},
		{in: "2022-03-22T12:15:00.1Z", want: utc(2022, 3, 22, 12, 15, 0, 100)},
		{in: "2022-03-22T12:15:00.12Z", want: utc(2022, 3, 22, 12, 15, 0, 120)},
		{in: "2022-03-22T12:15:00.123Z", want: utc(2022, 3, 22, 12, 15, 0, 123)},
		{in: "2022-03-22T12:15:00.123999Z", want: utc(2022, 3, 22, 12, 15, 0, 123)},
		{in: "2022-03-22T12:15:00.999999999Z", want: utc(2022, 3, 22, 12, 15, 0, 999)},
		{in: "2022-03-22T12:15:00.000000001Z", want: utc(2022, 3, 22, 12, 15, 0, 0)},
		{in: "2022-03-22T13:15:00.5+01:00", want: utc(2022, 3, 22, 12, 15, 0, 500)},
		{in: "2022-03-22T06:45:00-05:30", want: utc(2022, 3, 22, 12, 15, 0, 0)},
		{in: "2022-03-22T12:15:00+00:00", want: utc(2022, 3, 22, 12, 15, 0, 0)},
		{in: "2022-03-22T12:15:00-00:00", want: utc(2022, 3, 22, 12, 15, 0, 0)},
		{in: "2022-03-23T00:14:00+23:59", want: utc(2022, 3, 22, 0, 15, 0, 0)},
		{in: "2022-01-01T00:30:00+01:00", want: utc(2021, 12, 31, 23, 30, 0, 0)},
		{in: "1970-01-01T00:00:00Z", want: 0},
		{in: "1969-12-31T23:59:59.999Z", want: -1},
		{in: "1969-12-31T23:59:59.9999Z", want: -1}, // floor, not toward zero
		{in: "1969-12-31T23:59:59.0001Z", want: -1000},
		{in: "0000-01-01T00:00:00Z", want: utc(0, 1, 1, 0, 0, 0, 0)},
		{in: "9999-12-31T23:59:59.999Z", want: utc(9999, 12, 31, 23, 59, 59, 999)},
		{in: "2024-02-29T00:00:00Z", want: utc(2024, 2, 29, 0, 0, 0, 0)},
		{in: "2000-02-29T00:00:00Z", want: utc(2000, 2, 29, 0, 0, 0, 0)},
		{in: "2022-12-31T23:59:59Z", want: utc(2022, 12, 31, 23, 59, 59, 0)},

		{in: "2023-02-29T00:00:00Z", err: errTimeDay},
		{in: "1900-02-29T00:00:00Z", err: errTimeDay},
		{in: "2022-02-30T00:00:00Z", err: errTimeDay},
		{in: "2022-04-31T00:00:00Z", err: errTimeDay},
		{in: "2022-01-00T00:00:00Z", err: errTimeDay},
		{in: "2022-13-01T00:00:00Z", err: errTimeMonth},
		{in: "2022-00-10T00:00:00Z", err: errTimeMonth},
		{in: "2022-03-22T24:00:00Z", err: errTimeHour},
		{in: "2022-03-22T12:60:00Z", err: errTimeMinute},
		{in: "2022-03-22T12:15:60Z", err: errTimeSecond},
		{in: "2022-03-22T12:15:00", err: errTimeNoZone},
		{in: "2022-03-22T12:15:00.123", err: errTimeNoZone},
		{in: "2022-03-22T12:15:00.Z", err: errTimeFraction},
		{in: "2022-03-22T12:15:00.1234567890Z", err: errTimeFraction},
		{in: "2022-03-22T12:15:00z", err: errTimeNoZone},
		{in: "2022-03-22t12:15:00Z", err: errTimeLayout},
		{in: "2022-03-22 12:15:00Z", err: errTimeLayout},
		{in: "2022-03-22T12:15:00+0100", err: errTimeZone},
		{in: "2022-03-22T12:15:00+01", err: errTimeZone},
		{in: "2022-03-22T12:15:00+24:00", err: errTimeZone},
		{in: "2022-03-22T12:15:00+01:60", err: errTimeZone},
		{in: "2022-03-22T12:15:00+0a:00", err: errTimeZone},
		{in: "2022-03-22T12:15:00ZZ", err: errTimeTrailing},
		{in: "2022-03-22T12:15:00+01:00 ", err: errTimeTrailing},
		{in: " 2022-03-22T12:15:00Z", err: errTimeLayout},
		{in: "2022-3-22T12:15:00Z", err: errTimeLayout},
		{in: "+2022-03-22T12:15:00Z", err: errTimeLayout},
		{in: "２022-03-22T12:15:00Z", err: errTimeLayout},
		{in: "", err: errTimeLayout},
		{in: "2022-03-22T12:15:0", err: errTimeLayout},
	}
	for _, tc := range tests {
		got, err := ParseTagTime([]byte(tc.in))
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParseTagTime(%q) = %d, %v; want error %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTagTime(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestAppendTagTime(t *testing.T) {
	tests := []struct {
		ms   int64
		want string
	}{
		{0, "1970-01-01T00:00:00.000Z"},
		{-1, "1969-12-31T23:59:59.999Z"},
		{-1000, "1969-12-31T23:59:59.000Z"},
		{-86400000, "1969-12-31T00:00:00.000Z"},
		{1647951300123, "2022-03-22T12:15:00.123Z"},
		{1709164800000, "2024-02-29T00:00:00.000Z"},
		{MinTagTimeMs, "0000-01-01T00:00:00.000Z"},
		{MaxTagTimeMs, "9999-12-31T23:59:59.999Z"},
	}
	for _, tc := range tests {
		if got := string(AppendTagTime([]byte("x"), tc.ms)); got != "x"+tc.want {
			t.Errorf("AppendTagTime(%d) = %q, want %q", tc.ms, got, "x"+tc.want)
		}
	}
}

// TestTagTimeAgainstTimePackage checks formatting and parsing of random
// instants over years 0000..9999 against the time package, with random
// precision and zone offsets.
func TestTagTimeAgainstTimePackage(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		ms := genTimeMs(r)
		tm := time.UnixMilli(ms).UTC()
		got := AppendTagTime(nil, ms)
		if want := tm.Format("2006-01-02T15:04:05.000Z"); string(got) != want {
			t.Fatalf("AppendTagTime(%d) = %s, want %s", ms, got, want)
		}
		if back, err := ParseTagTime(got); err != nil || back != ms {
			t.Fatalf("ParseTagTime(%s) = %d, %v; want %d", got, back, err, ms)
		}

		// The same instant with extra sub-ms digits at some offset.
		ns := tm.Add(time.Duration(r.IntN(1e6)))
		off := (r.IntN(94) - 46) * 1800 // -23:00..+23:30 in half hours
		local := ns.In(time.FixedZone("", off))
		digits := 1 + r.IntN(9)
		layout := "2006-01-02T15:04:05." + "000000000"[:digits] + "Z07:00"
		s := local.Format(layout)
		if local.Year() < 0 || local.Year() > 9999 {
			continue
		}
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("time.Parse(%q): %v", s, err)
		}
		got2, err := ParseTagTime([]byte(s))
		if err != nil || got2 != want.UnixMilli() {
			t.Fatalf("ParseTagTime(%q) = %d, %v; want %d", s, got2, err, want.UnixMilli())
		}
	}
}

// FuzzParseTagTime: whatever ParseTagTime accepts, time.Parse accepts too,
// as the same millisecond.
func FuzzParseTagTime(f *testing.F) {
	for _, s := range []string{"2022-03-22T12:15:00.123Z", "1969-12-31T23:59:59.9999+01:30", "2024-02-29T23:59:59-23:59", "0000-01-01T00:00:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTagTime([]byte(s))
		if err != nil {
			return
		}
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("ParseTagTime accepted %q = %d, time.Parse rejects it: %v", s, got, err)
		}
		if got != want.UnixMilli() {
			t.Fatalf("ParseTagTime(%q) = %d, time.Parse gives %d", s, got, want.UnixMilli())
		}
	})
}

func BenchmarkParseTagTime(b *testing.B) {
	in := []byte("2022-03-22T12:15:00.123Z")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseTagTime(in); err != nil {
			b.Fatal(err)
		}
	}
}
