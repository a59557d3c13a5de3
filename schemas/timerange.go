package schemas

import "strings"

// TimeRange is a half-open interval [From, To) of event time, in
// milliseconds since the Unix epoch, UTC.
type TimeRange struct {
	From, To int64
}

// ParseTimeRange parses a query's time_range, "<from>_<to>", each side
// "YYYY-MM-DDTHH:MM:SS" or "YYYY-MM-DDTHH:MM:SS.mmm" (exactly three fraction
// digits), UTC with no zone suffix. Both forms are accepted on either side:
// which precision an endpoint needs (whole minutes for /aggregates) is the
// endpoint's check. to <= from is an error. Errors read "time_range: ...".
func ParseTimeRange(s string) (TimeRange, error) {
	i := strings.IndexByte(s, '_')
	if i < 0 {
		return TimeRange{}, &FieldError{Field: "time_range", Err: errTimeRangeShape}
	}
	from, err := parseRangeTime(s[:i])
	if err != nil {
		return TimeRange{}, &FieldError{Field: "time_range", Err: err}
	}
	to, err := parseRangeTime(s[i+1:])
	if err != nil {
		return TimeRange{}, &FieldError{Field: "time_range", Err: err}
	}
	if to <= from {
		return TimeRange{}, &FieldError{Field: "time_range", Err: errEmptyRange}
	}
	return TimeRange{From: from, To: to}, nil
}

// parseRangeTime parses one side of a time range to ms since the epoch.
func parseRangeTime(s string) (int64, error) {
	secs, err := parseDateTime(s)
	if err != nil {
		return 0, err
	}
	if len(s) == dateTimeLen {
		return secs * 1000, nil
	}
	i := dateTimeLen
	var ms int64
	if s[i] == '.' {
		i++
		for i < len(s) && s[i]-'0' <= 9 {
			ms = ms*10 + int64(s[i]-'0')
			i++
		}
		if i == len(s) {
			if i-dateTimeLen-1 != 3 {
				return 0, errRangeFraction
			}
			return secs*1000 + ms, nil
		}
	}
	if s[i] == 'Z' || s[i] == '+' || s[i] == '-' {
		return 0, errTimeZoneInUTC
	}
	return 0, errTimeRangeShape
}

// AppendBucket appends the start of minute bucket minute (minutes since the
// epoch, see MinuteOf) as "2022-03-01T00:05:00": second precision, UTC, no
// zone suffix, the form of /aggregates rows.
func AppendBucket(dst []byte, minute int64) []byte {
	return appendDateTime(dst, minute*60)
}
