package schemas

import (
	_ "embed" // the .avsc files are the schemas' single source of truth
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/linkedin/goavro/v2"
)

// The event log carries each tag as Avro binary: the key is an EventKey
// (eventkey.avsc), the value a UserTag (usertag.avsc). The .avsc files,
// compiled by goavro, are the authority on the format. goavro's native-map
// API costs a map, boxed values and a time.Time per message, on the
// gateway's path and the pipeline's, so the Append*/Decode* functions below
// encode and decode these two fixed schemas directly; avro_test.go proves
// them byte-for-byte equal to goavro on generated tags, and pins the
// schemas' canonical form so that editing an .avsc without updating this
// file fails the tests.

var (
	//go:embed eventkey.avsc
	eventKeySchema string
	//go:embed usertag.avsc
	userTagSchema string

	keyCodec   = sync.OnceValue(func() *goavro.Codec { return mustCodec("eventkey.avsc", eventKeySchema) })
	valueCodec = sync.OnceValue(func() *goavro.Codec { return mustCodec("usertag.avsc", userTagSchema) })
)

// mustCodec compiles an embedded schema. A failure is a bug in a file
// shipped inside the binary, caught by the tests, hence the panic.
func mustCodec(name, schema string) *goavro.Codec {
	c, err := goavro.NewCodec(schema)
	if err != nil {
		panic(fmt.Sprintf("schemas: compile %s: %v", name, err))
	}
	return c
}

// KeyCodec is the goavro codec of the event key schema (eventkey.avsc),
// compiled once on first use: for tools, schema registries and tests. The
// hot paths use AppendEventKey and DecodeEventKey.
func KeyCodec() *goavro.Codec { return keyCodec() }

// ValueCodec is the goavro codec of the event value schema (usertag.avsc),
// compiled once on first use. The hot paths use AppendEventValue and
// DecodeEventValue.
func ValueCodec() *goavro.Codec { return valueCodec() }

// numDevices is the number of Device symbols in usertag.avsc.
const numDevices = 3

// Reasons of Avro decoding errors, carried by FieldError.
var (
	errAvroTruncated = errors.New("truncated")
	errAvroVarint    = errors.New("varint overflows 64 bits")
	errAvroLength    = errors.New("negative string length")
	errAvroEnum      = errors.New("enum index out of range")
	errAvroBool      = errors.New("boolean byte is neither 0 nor 1")
	errAvroInt       = errors.New("int out of int32 range")
	errAvroTrailing  = errors.New("trailing bytes after the record")
)

// AppendEventKey appends the Avro EventKey of t: its full aggregate cell
// (minute bucket, action, origin, brand, category). Equal cells give equal
// bytes, so the key both partitions and identifies the cell. The error
// reports an Action out of range.
func AppendEventKey(dst []byte, t *UserTag) ([]byte, error) {
	if t.Action >= NumActions {
		return dst, &FieldError{Field: "action", Err: errBadAction}
	}
	dst = appendLong(dst, MinuteOf(t.TimeMs))
	dst = appendLong(dst, int64(t.Action))
	dst = appendString(dst, t.Origin)
	dst = appendString(dst, t.BrandID)
	return appendString(dst, t.CategoryID), nil
}

// AppendEventValue appends t as an Avro UserTag. Strings are written as
// they are: they must be valid UTF-8, as DecodeUserTag guarantees. The
// error reports a Device or Action out of range.
func AppendEventValue(dst []byte, t *UserTag) ([]byte, error) {
	if t.Device >= numDevices {
		return dst, &FieldError{Field: "device", Err: errBadDevice}
	}
	if t.Action >= NumActions {
		return dst, &FieldError{Field: "action", Err: errBadAction}
	}
	dst = appendLong(dst, t.TimeMs)
	dst = appendString(dst, t.Cookie)
	dst = appendString(dst, t.Country)
	dst = appendLong(dst, int64(t.Device))
	dst = appendLong(dst, int64(t.Action))
	dst = appendString(dst, t.Origin)
	dst = appendString(dst, t.ProductID)
	if t.ProductIDIsNumber {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	dst = appendString(dst, t.BrandID)
	dst = appendString(dst, t.CategoryID)
	// Avro int and long share the zigzag varint; an int32 sign-extended
	// to int64 encodes to the same bytes.
	return appendLong(dst, int64(t.Price)), nil
}

// DecodeEventKey decodes an Avro EventKey into the cell it names. The
// cell's strings share one allocation. Truncated or malformed input,
// invalid UTF-8 and trailing bytes are errors.
func DecodeEventKey(b []byte) (Cell, error) {
	r := avroReader{b: b}
	minute := r.long("minute")
	action := r.enum("action", NumActions)
	os, oe := r.utf8Str("origin")
	bs, be := r.utf8Str("brand_id")
	cs, ce := r.utf8Str("category_id")
	r.end()
	if r.err != nil {
		return Cell{}, fmt.Errorf("decode event key: %w", r.err)
	}
	s := string(b[os:ce])
	return Cell{
		Minute:     minute,
		Action:     Action(action),
		Origin:     s[:oe-os],
		BrandID:    s[bs-os : be-os],
		CategoryID: s[cs-os:],
	}, nil
}

// DecodeEventValue decodes an Avro UserTag into t; on error t is left
// unchanged. The tag's strings share one allocation. Truncated or
// malformed input and trailing bytes are errors, and so is a tag the
// gateway would have refused (checkTag: invalid UTF-8, NUL, an empty
// cookie, a field over its limit, a time outside years 0000-9999, which
// goavro would all let through and which would poison the stores
// downstream): whoever can produce to the topic is held to the gateway's
// rules.
func DecodeEventValue(b []byte, t *UserTag) error {
	r := avroReader{b: b}
	ms := r.long("time")
	ks, ke := r.str("cookie")
	ns, ne := r.str("country")
	device := r.enum("device", numDevices)
	action := r.enum("action", NumActions)
	os, oe := r.str("origin")
	ps, pe := r.str("product_id")
	isNum := r.boolean("product_id_is_number")
	bs, be := r.str("brand_id")
	cs, ce := r.str("category_id")
	price := r.int32("price")
	r.end()
	if r.err != nil {
		return fmt.Errorf("decode event value: %w", r.err)
	}
	// Every string lies in b[ks:ce]; one copy serves them all.
	s := string(b[ks:ce])
	tag := UserTag{
		TimeMs:            ms,
		Cookie:            s[:ke-ks],
		Country:           s[ns-ks : ne-ks],
		Device:            Device(device),
		Action:            Action(action),
		Origin:            s[os-ks : oe-ks],
		ProductID:         s[ps-ks : pe-ks],
		ProductIDIsNumber: isNum,
		BrandID:           s[bs-ks : be-ks],
		CategoryID:        s[cs-ks:],
		Price:             price,
	}
	if err := checkTag(&tag, 0); err != nil {
		return fmt.Errorf("decode event value: %w", err)
	}
	*t = tag
	return nil
}

// appendLong appends v as an Avro long: zigzag, then a little-endian
// base-128 varint.
func appendLong(dst []byte, v int64) []byte {
	return binary.AppendUvarint(dst, uint64(v<<1)^uint64(v>>63))
}

// appendString appends s as an Avro string: its length as a long, then
// its bytes.
func appendString(dst []byte, s string) []byte {
	return append(appendLong(dst, int64(len(s))), s...)
}

// avroReader reads Avro binary primitives from b. The first error sticks:
// later reads return zero values, so a decoder reads every field and checks
// err once.
type avroReader struct {
	b   []byte
	off int
	err error
}

func (r *avroReader) fail(field string, err error) {
	if r.err == nil {
		r.err = &FieldError{Field: field, Err: err}
	}
}

func (r *avroReader) long(field string) int64 {
	if r.err != nil {
		return 0
	}
	u, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		if n == 0 {
			r.fail(field, errAvroTruncated)
		} else {
			r.fail(field, errAvroVarint)
		}
		return 0
	}
	r.off += n
	return int64(u>>1) ^ -int64(u&1)
}

func (r *avroReader) int32(field string) int32 {
	v := r.long(field)
	if v != int64(int32(v)) {
		r.fail(field, errAvroInt)
		return 0
	}
	return int32(v)
}

// enum reads an enum index, which must be below n.
func (r *avroReader) enum(field string, n int64) uint8 {
	v := r.long(field)
	if v < 0 || v >= n {
		r.fail(field, errAvroEnum)
		return 0
	}
	return uint8(v)
}

func (r *avroReader) boolean(field string) bool {
	if r.err != nil {
		return false
	}
	if r.off >= len(r.b) {
		r.fail(field, errAvroTruncated)
		return false
	}
	c := r.b[r.off]
	if c > 1 {
		r.fail(field, errAvroBool)
		return false
	}
	r.off++
	return c == 1
}

// str reads a string and returns where its bytes are in b. The length is
// checked against the remaining input before anything is sliced, so a
// hostile length cannot cause a panic or a large allocation. The content is
// not validated: DecodeEventValue leaves that to checkTag.
func (r *avroReader) str(field string) (start, end int) {
	n := r.long(field)
	if r.err != nil {
		return r.off, r.off
	}
	if n < 0 {
		r.fail(field, errAvroLength)
		return r.off, r.off
	}
	if n > int64(len(r.b)-r.off) {
		r.fail(field, errAvroTruncated)
		return r.off, r.off
	}
	start = r.off
	r.off += int(n)
	return start, r.off
}

// utf8Str is str for a string that must be valid UTF-8.
func (r *avroReader) utf8Str(field string) (start, end int) {
	start, end = r.str(field)
	if r.err == nil && !utf8.Valid(r.b[start:end]) {
		r.fail(field, errInvalidUTF8)
	}
	return start, end
}

// end checks that the record used all of b.
func (r *avroReader) end() {
	if r.err == nil && r.off != len(r.b) {
		r.err = errAvroTrailing
	}
}
