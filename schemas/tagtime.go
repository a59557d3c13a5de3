package schemas

import (
	"errors"
	"strconv"
)

// Time handling is hand-written rather than built on time.Parse/Format:
// parsing a tag's time is on the gateway's hot path (every POST), and the
// formats are fixed, so a direct digit parser is both faster and stricter.

// Errors of ParseTagTime. They carry no field name: DecodeUserTag wraps them
// as "time: ...".
var (
	errTimeLayout     = errors.New("want RFC 3339 like 2022-03-22T12:15:00.123Z")
	errTimeMonth      = errors.New("month out of range")
	errTimeDay        = errors.New("day out of range")
	errTimeHour       = errors.New("hour out of range")
	errTimeMinute     = errors.New("minute out of range")
	errTimeSecond     = errors.New("second out of range")
	errTimeFraction   = errors.New("fraction must have 1 to 9 digits")
	errTimeNoZone     = errors.New("missing zone (Z or ±HH:MM)")
	errTimeZone       = errors.New("bad zone offset")
	errTimeTrailing   = errors.New("unexpected characters after the zone")
	errTimeZoneInUTC  = errors.New("zone suffix not allowed (UTC is implied)")
	errTimeRangeShape = errors.New("want <from>_<to>, e.g. 2022-03-22T12:15:00.000_2022-03-22T12:16:00.000")
	errRangeFraction  = errors.New("fraction must have exactly 3 digits")
	errEmptyRange     = errors.New("to must be after from")
)

// byteSeq lets the datetime parser read both a request body ([]byte) and a
// query parameter (string) without converting, which would allocate.
type byteSeq interface{ ~string | ~[]byte }

// dateTimeLen is the length of "YYYY-MM-DDTHH:MM:SS".
const dateTimeLen = 19

// parseDateTime parses the "YYYY-MM-DDTHH:MM:SS" prefix of s and returns the
// seconds since the Unix epoch of that civil time read as UTC. The calendar
// is validated (proleptic Gregorian, years 0000..9999, no leap seconds).
func parseDateTime[S byteSeq](s S) (int64, error) {
	if len(s) < dateTimeLen || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return 0, errTimeLayout
	}
	y1, ok1 := digits2(s, 0)
	y2, ok2 := digits2(s, 2)
	mo, ok3 := digits2(s, 5)
	d, ok4 := digits2(s, 8)
	h, ok5 := digits2(s, 11)
	mi, ok6 := digits2(s, 14)
	sec, ok7 := digits2(s, 17)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) {
		return 0, errTimeLayout
	}
	y := y1*100 + y2
	switch {
	case mo < 1 || mo > 12:
		return 0, errTimeMonth
	case d < 1 || d > daysIn(y, mo):
		return 0, errTimeDay
	case h > 23:
		return 0, errTimeHour
	case mi > 59:
		return 0, errTimeMinute
	case sec > 59:
		return 0, errTimeSecond
	}
	return daysFromCivil(y, mo, d)*86400 + h*3600 + mi*60 + sec, nil
}

// digits2 reads two decimal digits at s[i:i+2].
func digits2[S byteSeq](s S, i int) (int64, bool) {
	a, b := s[i]-'0', s[i+1]-'0'
	if a > 9 || b > 9 {
		return 0, false
	}
	return int64(a)*10 + int64(b), true
}

// ParseTagTime parses a user tag's time, RFC 3339
// "YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)", and returns milliseconds since
// the Unix epoch, UTC. The fraction may have 1 to 9 digits and is truncated
// to milliseconds, which floors toward the past also before 1970. A zone is
// required; T and Z must be upper case (the form SPEC.md shows). The result
// may fall just outside years 0000-9999 once the offset is applied: a
// decoded tag is held to those years by checkTag.
func ParseTagTime(b []byte) (int64, error) {
	secs, err := parseDateTime(b)
	if err != nil {
		return 0, err
	}
	i := dateTimeLen
	var frac int64
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i]-'0' <= 9 {
			i++
		}
		n := i - start
		if n == 0 || n > 9 {
			return 0, errTimeFraction
		}
		for k := range 3 {
			frac *= 10
			if k < n {
				frac += int64(b[start+k] - '0')
			}
		}
	}
	if i >= len(b) {
		return 0, errTimeNoZone
	}
	switch b[i] {
	case 'Z':
		i++
	case '+', '-':
		if len(b)-i < 6 || b[i+3] != ':' {
			return 0, errTimeZone
		}
		oh, ok1 := digits2(b, i+1)
		om, ok2 := digits2(b, i+4)
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, errTimeZone
		}
		// The text is local time at the offset: UTC = local - offset.
		off := oh*3600 + om*60
		if b[i] == '+' {
			secs -= off
		} else {
			secs += off
		}
		i += 6
	default:
		return 0, errTimeNoZone
	}
	if i != len(b) {
		return 0, errTimeTrailing
	}
	return secs*1000 + frac, nil
}

// AppendTagTime appends ms (milliseconds since the Unix epoch) as the
// canonical tag time "2022-03-22T12:15:00.123Z": always three fraction
// digits and Z.
func AppendTagTime(dst []byte, ms int64) []byte {
	secs := floorDiv(ms, 1000)
	frac := ms - secs*1000
	dst = appendDateTime(dst, secs)
	return append(dst, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10), 'Z')
}

// appendDateTime appends secs (since the Unix epoch) as
// "YYYY-MM-DDTHH:MM:SS", UTC, no zone. Years outside 0000..9999 cannot come
// from a decoded tag (checkTag); they are written with a sign or more
// digits, as the time package does, rather than wrapped.
func appendDateTime(dst []byte, secs int64) []byte {
	days := floorDiv(secs, 86400)
	sod := secs - days*86400
	y, m, d := civilFromDays(days)
	if y >= 0 && y <= 9999 {
		dst = append2(dst, y/100)
		dst = append2(dst, y%100)
	} else {
		dst = strconv.AppendInt(dst, y, 10)
	}
	dst = append(dst, '-')
	dst = append2(dst, m)
	dst = append(dst, '-')
	dst = append2(dst, d)
	dst = append(dst, 'T')
	dst = append2(dst, sod/3600)
	dst = append(dst, ':')
	dst = append2(dst, sod/60%60)
	dst = append(dst, ':')
	return append2(dst, sod%60)
}

// append2 appends v (0..99) as two digits.
func append2(dst []byte, v int64) []byte {
	return append(dst, byte('0'+v/10), byte('0'+v%10))
}

// floorDiv is a/b rounded toward negative infinity (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

func isLeap(y int64) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

// daysIn is the number of days of month m (1..12) of year y.
func daysIn(y, m int64) int64 {
	switch m {
	case 2:
		if isLeap(y) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil is the number of days from 1970-01-01 to the proleptic
// Gregorian date y-m-d (H. Hinnant's days_from_civil), valid for any year.
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := floorDiv(y, 400)
	yoe := y - era*400 // [0, 399]
	mp := (m + 9) % 12 // March = 0
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy // [0, 146096]
	return era*146097 + doe - 719468
}

// civilFromDays is the inverse of daysFromCivil.
func civilFromDays(z int64) (y, m, d int64) {
	z += 719468
	era := floorDiv(z, 146097)
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	if mp < 10 {
		m = mp + 3
	} else {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}
