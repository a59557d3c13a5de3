package schemas

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// rangeSideRE is the shape of one side of a query time range (docs/api.md
// "Time ranges"): second or millisecond precision, no
// zone. Go's regexp \d is ASCII only.
var rangeSideRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?$`)

// refRangeSide is an independent reading of one side: the shape by regexp,
// the calendar and the value by the time package.
func refRangeSide(s string) (int64, bool) {
	if !rangeSideRE.MatchString(s) {
		return 0, false
	}
	// When parsing, a layout without a fraction still accepts ".mmm".
	t, err := time.Parse("2006-01-02T15:04:05", s)
	if err != nil {
		return 0, false
	}
	return t.UnixMilli(), true
}

// formatRangeSide writes ms back in the precision of a side: with
// ".mmm" (millis) or without.
func formatRangeSide(ms int64, millis bool) string {
	s := string(AppendTagTime(nil, ms)) // "YYYY-MM-DDTHH:MM:SS.mmmZ"
	if millis {
		return s[:len(s)-1]
	}
	return s[:dateTimeLen]
}

// FuzzParseTimeRange checks ParseTimeRange against an independent parser
// (regexp + time.Parse) on both precisions: the same inputs are accepted,
// with the same values; an accepted range has from < to and each side,
// formatted back in its own precision, is the input text exactly (the
// format is fixed-width, so parsing is a bijection); the millisecond form
// of an accepted range parses to the same range.
func FuzzParseTimeRange(f *testing.F) {
	for _, s := range []string{
		"2022-03-22T12:15:00.000_2022-03-22T12:16:00.000",
		"2022-03-01T00:05:00_2022-03-01T00:15:00",
		"2022-03-01T00:05:00_2022-03-01T00:05:00.001",
		"1969-12-31T23:59:59.999_1970-01-01T00:00:00.000",
		"0000-01-01T00:00:00_9999-12-31T23:59:59.999",
		"2024-02-29T23:59:59_2024-03-01T00:00:00",
		"2022-03-22T12:16:00_2022-03-22T12:15:00",
		"2022-03-22T12:15:00.000Z_2022-03-22T12:16:00.000Z",
		"2022-03-22T12:15:00.12_2022-03-22T12:16:00",
		"2022-03-22T12:15:00__2022-03-22T12:16:00",
		"2023-02-29T00:00:00_2023-03-01T00:00:00",
		"2022-03-22T12:15:60_2022-03-22T12:16:00",
		"",
		"_",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseTimeRange(s)
		fromText, toText, found := strings.Cut(s, "_")
		refFrom, ok1 := refRangeSide(fromText)
		refTo, ok2 := refRangeSide(toText)
		refOK := found && ok1 && ok2 && refFrom < refTo
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "time_range" {
				t.Fatalf("ParseTimeRange(%q): error %v is not a time_range FieldError", s, err)
			}
			if refOK {
				t.Fatalf("ParseTimeRange(%q) refused it (%v); the reference reads [%d, %d)", s, err, refFrom, refTo)
			}
			return
		}
		if !refOK {
			t.Fatalf("ParseTimeRange(%q) = %+v; the reference refuses it", s, r)
		}
		if r.From != refFrom || r.To != refTo {
			t.Fatalf("ParseTimeRange(%q) = %+v; the reference reads [%d, %d)", s, r, refFrom, refTo)
		}
		if r.From >= r.To {
			t.Fatalf("ParseTimeRange(%q) = %+v: from is not before to", s, r)
		}
		if got := formatRangeSide(r.From, len(fromText) > dateTimeLen); got != fromText {
			t.Fatalf("from of %q formats back as %q", s, got)
		}
		if got := formatRangeSide(r.To, len(toText) > dateTimeLen); got != toText {
			t.Fatalf("to of %q formats back as %q", s, got)
		}
		millis := formatRangeSide(r.From, true) + "_" + formatRangeSide(r.To, true)
		if again, err := ParseTimeRange(millis); err != nil || again != r {
			t.Fatalf("millisecond form %q of %q parses to %+v, %v; want %+v", millis, s, again, err, r)
		}
	})
}
