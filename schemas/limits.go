package schemas

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The rules every tag obeys, whatever format it came in (docs/api.md "Input").
// DecodeUserTag (the gateway's JSON) and DecodeEventValue (the pipeline's
// Avro) both end in checkTag, so the pipeline accepts exactly what the
// gateway accepts: anything that can produce to the topic is held to the
// same rules as a client.

// Longest value of each string field of a tag, in bytes of UTF-8 (after
// unescaping; a numeric product_id counts its literal). No honest ad-tech
// identifier comes near: a UUID is 36 bytes, a SHA-512 in hex 128. The
// sizes bound every tag's canonical JSON (MaxTagJSONBytes), hence every
// /user_profiles answer and every Aerospike profile record, and keep the
// aggregates' (origin, brand_id, category_id) well under PostgreSQL's
// btree row limit.
const (
	MaxCookieBytes     = 1024
	MaxCountryBytes    = 64
	MaxOriginBytes     = 256
	MaxProductIDBytes  = 256
	MaxBrandIDBytes    = 256
	MaxCategoryIDBytes = 256
)

// MaxTagJSONBytes bounds the canonical JSON of one tag (AppendUserTagJSON):
// the fixed text, the longest time, device, action and price, and every
// string field at its limit made of control characters, which JSON writes
// as \u00XX, 6 bytes per byte (TestMaxTagJSONBytes builds that tag).
const MaxTagJSONBytes = len(`{"time":"0000-01-01T00:00:00.000Z","cookie":"","country":"","device":"MOBILE","action":"VIEW","origin":"",`+
	`"product_info":{"product_id":"","brand_id":"","category_id":"","price":-2147483648}}`) +
	6*(MaxCookieBytes+MaxCountryBytes+MaxOriginBytes+MaxProductIDBytes+MaxBrandIDBytes+MaxCategoryIDBytes)

// Tag times are those RFC 3339 can write: years 0000 to 9999, UTC, once
// the zone offset is applied (TestTagTimeBounds checks the values).
const (
	MinTagTimeMs = -62167219200000 // 0000-01-01T00:00:00.000Z
	MaxTagTimeMs = 253402300799999 // 9999-12-31T23:59:59.999Z
)

// Field is a string field of a tag, in the order of the JSON.
type Field uint8

const (
	FieldCookie Field = iota
	FieldCountry
	FieldOrigin
	FieldProductID
	FieldBrandID
	FieldCategoryID
	numFields
)

var fieldInfo = [numFields]struct {
	name    string
	max     int
	tooLong error // preformatted, so a refusal does not format
}{
	{name: "cookie", max: MaxCookieBytes},
	{name: "country", max: MaxCountryBytes},
	{name: "origin", max: MaxOriginBytes},
	{name: "product_id", max: MaxProductIDBytes},
	{name: "brand_id", max: MaxBrandIDBytes},
	{name: "category_id", max: MaxCategoryIDBytes},
}

func init() {
	for i := range fieldInfo {
		fieldInfo[i].tooLong = errors.New("longer than " + strconv.Itoa(fieldInfo[i].max) + " bytes")
	}
}

// String is the field's JSON name, e.g. "brand_id".
func (f Field) String() string { return fieldInfo[f].name }

// MaxBytes is the longest value of the field, in bytes of UTF-8.
func (f Field) MaxBytes() int { return fieldInfo[f].max }

var (
	errTimeYears = errors.New("outside years 0000-9999 once the zone offset is applied")
	errNumberLit = errors.New("flagged as a number but not a JSON number literal")
)

// CheckValue applies the rules of tag field f to v, a value given outside a
// tag (an /aggregates filter, the cookie of a /user_profiles path): valid
// UTF-8, no NUL, at most f.MaxBytes() bytes. The error is a *FieldError
// naming the field. An empty value passes: only a tag's cookie must not be
// empty.
func CheckValue(f Field, v string) error {
	if len(v) > fieldInfo[f].max {
		return &FieldError{Field: fieldInfo[f].name, Err: fieldInfo[f].tooLong}
	}
	return checkContent(f, v)
}

// checkContent is CheckValue without the length.
func checkContent(f Field, v string) error {
	switch {
	case plainASCII(v):
		return nil
	case !utf8.ValidString(v):
		return &FieldError{Field: fieldInfo[f].name, Err: errInvalidUTF8}
	case strings.IndexByte(v, 0) >= 0:
		return &FieldError{Field: fieldInfo[f].name, Err: errNUL}
	}
	return nil
}

// checkTag is the one validation of a decoded tag's content, shared by the
// JSON and the Avro decoder: time within years 0000-9999, a non-empty
// cookie, every string field per CheckValue, enums in range, and a
// product_id flagged as a number that is a JSON number literal. plain is
// the set of fields (bit 1<<Field) the decoder already saw to be ASCII
// without NUL, whose bytes need no second look (the JSON scanner knows it
// for free; DecodeEventValue passes 0).
func checkTag(t *UserTag, plain uint8) error {
	if t.TimeMs < MinTagTimeMs || t.TimeMs > MaxTagTimeMs {
		return &FieldError{Field: "time", Err: errTimeYears}
	}
	if t.Cookie == "" {
		return &FieldError{Field: "cookie", Err: errEmpty}
	}
	values := [numFields]string{t.Cookie, t.Country, t.Origin, t.ProductID, t.BrandID, t.CategoryID}
	for f, v := range values {
		if len(v) > fieldInfo[f].max {
			return &FieldError{Field: fieldInfo[f].name, Err: fieldInfo[f].tooLong}
		}
		if plain&(1<<f) == 0 {
			if err := checkContent(Field(f), v); err != nil {
				return err
			}
		}
	}
	switch {
	case t.Device >= numDevices:
		return &FieldError{Field: "device", Err: errBadDevice}
	case t.Action >= NumActions:
		return &FieldError{Field: "action", Err: errBadAction}
	case t.ProductIDIsNumber && !isNumberLiteral(t.ProductID):
		return &FieldError{Field: "product_id", Err: errNumberLit}
	}
	return nil
}

// isNumberLiteral reports whether s is exactly one JSON number.
func isNumberLiteral(s string) bool {
	end, _, ok := numberEnd(s, 0)
	return ok && end == len(s)
}

// plainASCII reports whether s is ASCII without NUL, 8 bytes at a time:
// the common case, which passes CheckValue without a UTF-8 decode or a
// search for NUL.
func plainASCII(s string) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		// A byte >= 0x80, or a zero byte (w-lo sets its high bit
		// where w had none).
		if (w|(w-lo))&hi != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c == 0 || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
