package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// The schemas' Parsing Canonical Form, as goavro computes it. The fast
// codec in avro.go is written against exactly these; if an .avsc changes,
// this test fails until avro.go (and these constants) follow.
const (
	wantKeyCanonical   = `{"name":"allezon.EventKey","type":"record","fields":[{"name":"minute","type":"long"},{"name":"action","type":{"name":"allezon.Action","type":"enum","symbols":["VIEW","BUY"]}},{"name":"origin","type":"string"},{"name":"brand_id","type":"string"},{"name":"category_id","type":"string"}]}`
	wantValueCanonical = `{"name":"allezon.UserTag","type":"record","fields":[{"name":"time","type":{"type":"long"}},{"name":"cookie","type":"string"},{"name":"country","type":"string"},{"name":"device","type":{"name":"allezon.Device","type":"enum","symbols":["PC","MOBILE","TV"]}},{"name":"action","type":{"name":"allezon.Action","type":"enum","symbols":["VIEW","BUY"]}},{"name":"origin","type":"string"},{"name":"product_info","type":{"name":"allezon.ProductInfo","type":"record","fields":[{"name":"product_id","type":"string"},{"name":"product_id_is_number","type":"boolean"},{"name":"brand_id","type":"string"},{"name":"category_id","type":"string"},{"name":"price","type":"int"}]}}]}`
)

func TestSchemasPinned(t *testing.T) {
	if got := KeyCodec().CanonicalSchema(); got != wantKeyCanonical {
		t.Errorf("eventkey.avsc canonical form changed:\n%s", got)
	}
	if got := ValueCodec().CanonicalSchema(); got != wantValueCanonical {
		t.Errorf("usertag.avsc canonical form changed:\n%s", got)
	}
	k1, k2, v1, v2 := KeyCodec(), KeyCodec(), ValueCodec(), ValueCodec()
	if k1 != k2 || v1 != v2 {
		t.Error("codecs are compiled more than once")
	}
}

// goavro's native form of a tag and a key, and back.

func valueNative(t *UserTag) map[string]any {
	return map[string]any{
		"time":    t.TimeMs,
		"cookie":  t.Cookie,
		"country": t.Country,
		"device":  t.Device.String(),
		"action":  t.Action.String(),
		"origin":  t.Origin,
		"product_info": map[string]any{
			"product_id":           t.ProductID,
			"product_id_is_number": t.ProductIDIsNumber,
			"brand_id":             t.BrandID,
			"category_id":          t.CategoryID,
			"price":                t.Price,
		},
	}
}

func tagFromNative(v any) (t UserTag, err error) {
	defer func() {
		if r := recover(); r != nil { // a failed type assertion
			err = fmt.Errorf("unexpected native form %#v: %v", v, r)
		}
	}()
	m := v.(map[string]any)
	p := m["product_info"].(map[string]any)
	device, ok1 := ParseDevice(m["device"].(string))
	action, ok2 := ParseAction(m["action"].(string))
	if !ok1 || !ok2 {
		return t, fmt.Errorf("bad enums in %v", m)
	}
	return UserTag{
		TimeMs:            m["time"].(time.Time).UnixMilli(), // timestamp-millis
		Cookie:            m["cookie"].(string),
		Country:           m["country"].(string),
		Device:            device,
		Action:            action,
		Origin:            m["origin"].(string),
		ProductID:         p["product_id"].(string),
		ProductIDIsNumber: p["product_id_is_number"].(bool),
		BrandID:           p["brand_id"].(string),
		CategoryID:        p["category_id"].(string),
		Price:             p["price"].(int32),
	}, nil
}

func keyNative(t *UserTag) map[string]any {
	return map[string]any{
		"minute":      MinuteOf(t.TimeMs),
		"action":      t.Action.String(),
		"origin":      t.Origin,
		"brand_id":    t.BrandID,
		"category_id": t.CategoryID,
	}
}

func cellFromNative(v any) (c Cell, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unexpected native form %#v: %v", v, r)
		}
	}()
	m := v.(map[string]any)
	action, ok := ParseAction(m["action"].(string))
	if !ok {
		return c, fmt.Errorf("bad action in %v", m)
	}
	return Cell{
		Minute:     m["minute"].(int64),
		Action:     action,
		Origin:     m["origin"].(string),
		BrandID:    m["brand_id"].(string),
		CategoryID: m["category_id"].(string),
	}, nil
}

// avroTestTags are generated tags plus the extremes of every field that a
// tag may carry (TestDecodeEventValueRejects has those it may not).
func avroTestTags(n int) []UserTag {
	r := rand.New(rand.NewPCG(9, 10))
	tags := []UserTag{
		validTag,
		{TimeMs: MinTagTimeMs, Cookie: "c", Device: TV, Action: Buy, Price: math.MinInt32},
		{TimeMs: MaxTagTimeMs, Cookie: strings.Repeat("\x01", MaxCookieBytes), Country: strings.Repeat("€", MaxCountryBytes/3),
			Origin: strings.Repeat("o", MaxOriginBytes), BrandID: strings.Repeat("\"", MaxBrandIDBytes), CategoryID: strings.Repeat("😀", MaxCategoryIDBytes/4),
			Device: Mobile, Price: math.MaxInt32, ProductIDIsNumber: true, ProductID: "-0"},
		{TimeMs: -1, Cookie: "c", Price: -1, Origin: "😀", ProductIDIsNumber: true, ProductID: "1" + strings.Repeat("0", MaxProductIDBytes-1)},
	}
	for range n {
		tags = append(tags, genTag(r))
	}
	return tags
}

// TestEventValueMatchesGoavro proves the fast value codec equal to goavro
// compiled from usertag.avsc: same bytes, and each decodes the other's.
func TestEventValueMatchesGoavro(t *testing.T) {
	codec := ValueCodec()
	var fast []byte
	for _, tag := range avroTestTags(5000) {
		var err error
		fast, err = AppendEventValue(fast[:0], &tag)
		if err != nil {
			t.Fatalf("AppendEventValue(%+v): %v", tag, err)
		}
		ref, err := codec.BinaryFromNative(nil, valueNative(&tag))
		if err != nil {
			t.Fatalf("goavro encode %+v: %v", tag, err)
		}
		if !bytes.Equal(fast, ref) {
			t.Fatalf("encodings of %+v differ:\nfast   %x\ngoavro %x", tag, fast, ref)
		}

		var got UserTag
		if err := DecodeEventValue(ref, &got); err != nil || got != tag {
			t.Fatalf("DecodeEventValue(goavro bytes of %+v) = %+v, %v", tag, got, err)
		}
		native, rest, err := codec.NativeFromBinary(fast)
		if err != nil || len(rest) != 0 {
			t.Fatalf("goavro decode of %x: %v (%d bytes left)", fast, err, len(rest))
		}
		if back, err := tagFromNative(native); err != nil || back != tag {
			t.Fatalf("goavro decodes fast bytes of %+v as %+v, %v", tag, back, err)
		}
	}
}

// TestEventKeyMatchesGoavro does the same for the key codec.
func TestEventKeyMatchesGoavro(t *testing.T) {
	codec := KeyCodec()
	var fast []byte
	for _, tag := range avroTestTags(5000) {
		var err error
		fast, err = AppendEventKey(fast[:0], &tag)
		if err != nil {
			t.Fatalf("AppendEventKey(%+v): %v", tag, err)
		}
		ref, err := codec.BinaryFromNative(nil, keyNative(&tag))
		if err != nil {
			t.Fatalf("goavro encode key of %+v: %v", tag, err)
		}
		if !bytes.Equal(fast, ref) {
			t.Fatalf("key encodings of %+v differ:\nfast   %x\ngoavro %x", tag, fast, ref)
		}
		want := CellOf(&tag)
		if got, err := DecodeEventKey(ref); err != nil || got != want {
			t.Fatalf("DecodeEventKey(goavro bytes) = %+v, %v; want %+v", got, err, want)
		}
		native, rest, err := codec.NativeFromBinary(fast)
		if err != nil || len(rest) != 0 {
			t.Fatalf("goavro decode of key %x: %v (%d bytes left)", fast, err, len(rest))
		}
		if back, err := cellFromNative(native); err != nil || back != want {
			t.Fatalf("goavro decodes fast key of %+v as %+v, %v", tag, back, err)
		}
	}
}

func TestEventKeySameCellSameBytes(t *testing.T) {
	a, b := validTag, validTag
	b.TimeMs = a.TimeMs - a.TimeMs%60000 // same minute
	b.Cookie, b.Device, b.Price, b.ProductID = "other", TV, 5, "x"
	ka, _ := AppendEventKey(nil, &a)
	kb, _ := AppendEventKey(nil, &b)
	if !bytes.Equal(ka, kb) {
		t.Fatalf("tags of one cell have different keys: %x, %x", ka, kb)
	}
	b.TimeMs = a.TimeMs + 60000
	kb, _ = AppendEventKey(nil, &b)
	if bytes.Equal(ka, kb) {
		t.Fatal("tags of different minutes share a key")
	}
}

func TestAppendEventRejectsBadEnums(t *testing.T) {
	badDevice, badAction := validTag, validTag
	badDevice.Device = numDevices
	badAction.Action = NumActions
	if _, err := AppendEventValue(nil, &badDevice); err == nil {
		t.Error("AppendEventValue accepted an invalid Device")
	}
	if _, err := AppendEventValue(nil, &badAction); err == nil {
		t.Error("AppendEventValue accepted an invalid Action")
	}
	if _, err := AppendEventKey(nil, &badAction); err == nil {
		t.Error("AppendEventKey accepted an invalid Action")
	}
}

// rawValue builds a UserTag record field by field, allowing values the
// schema forbids, to feed the decoder corrupt input.
type rawValue struct {
	time                     int64
	cookie, country          string
	device, action           int64
	origin, productID        string
	isNumber                 byte
	brandID, categoryID      string
	price                    int64
	cookieLen                int64 // used instead of len(cookie) when nonzero
	overflowTime, extraTrail bool  // an 11-byte varint time; a byte after the record
}

func (v rawValue) bytes() []byte {
	var b []byte
	if v.overflowTime {
		b = append(b, bytes.Repeat([]byte{0xff}, 10)...)
		b = append(b, 0x01)
	} else {
		b = appendLong(b, v.time)
	}
	if v.cookieLen != 0 {
		b = append(appendLong(b, v.cookieLen), v.cookie...)
	} else {
		b = appendString(b, v.cookie)
	}
	b = appendString(b, v.country)
	b = appendLong(b, v.device)
	b = appendLong(b, v.action)
	b = appendString(b, v.origin)
	b = appendString(b, v.productID)
	b = append(b, v.isNumber)
	b = appendString(b, v.brandID)
	b = appendString(b, v.categoryID)
	b = appendLong(b, v.price)
	if v.extraTrail {
		b = append(b, 0)
	}
	return b
}

func TestDecodeEventValueRejects(t *testing.T) {
	ok := rawValue{time: 1, cookie: "c", country: "PL", device: 1, action: 1, origin: "o", productID: "p", brandID: "b", categoryID: "k", price: 5}
	var tag UserTag
	if err := DecodeEventValue(ok.bytes(), &tag); err != nil {
		t.Fatalf("the valid base record is rejected: %v", err)
	}
	mod := func(f func(*rawValue)) []byte {
		v := ok
		f(&v)
		return v.bytes()
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errAvroTruncated},
		{"trailing byte", mod(func(v *rawValue) { v.extraTrail = true }), errAvroTrailing},
		{"varint overflow", mod(func(v *rawValue) { v.overflowTime = true }), errAvroVarint},
		{"negative length", mod(func(v *rawValue) { v.cookieLen = -1 }), errAvroLength},
		{"length beyond input", mod(func(v *rawValue) { v.cookieLen = 1 << 40 }), errAvroTruncated},
		{"length one too many", mod(func(v *rawValue) { v.cookieLen = 100 }), errAvroTruncated},
		{"device index 3", mod(func(v *rawValue) { v.device = 3 }), errAvroEnum},
		{"device index -1", mod(func(v *rawValue) { v.device = -1 }), errAvroEnum},
		{"action index 2", mod(func(v *rawValue) { v.action = 2 }), errAvroEnum},
		{"boolean 2", mod(func(v *rawValue) { v.isNumber = 2 }), errAvroBool},
		{"price above int32", mod(func(v *rawValue) { v.price = math.MaxInt32 + 1 }), errAvroInt},
		{"price below int32", mod(func(v *rawValue) { v.price = math.MinInt32 - 1 }), errAvroInt},
		{"invalid UTF-8", mod(func(v *rawValue) { v.origin = "\xff" }), errInvalidUTF8},
		{"UTF-8 surrogate", mod(func(v *rawValue) { v.categoryID = "\xed\xa0\x80" }), errInvalidUTF8},
		// The gateway's rules (checkTag), which goavro does not know.
		{"invalid UTF-8 in the cookie", mod(func(v *rawValue) { v.cookie = "c\xc3" }), errInvalidUTF8},
		{"NUL in country", mod(func(v *rawValue) { v.country = "P\x00L" }), errNUL},
		{"empty cookie", mod(func(v *rawValue) { v.cookie = "" }), errEmpty},
		{"cookie over its limit", mod(func(v *rawValue) { v.cookie = strings.Repeat("c", MaxCookieBytes+1) }), fieldInfo[FieldCookie].tooLong},
		{"country over its limit", mod(func(v *rawValue) { v.country = strings.Repeat("P", MaxCountryBytes+1) }), fieldInfo[FieldCountry].tooLong},
		{"origin over its limit", mod(func(v *rawValue) { v.origin = strings.Repeat("o", 6000) }), fieldInfo[FieldOrigin].tooLong},
		{"product_id over its limit", mod(func(v *rawValue) { v.productID = strings.Repeat("p", MaxProductIDBytes+1) }), fieldInfo[FieldProductID].tooLong},
		{"brand_id over its limit", mod(func(v *rawValue) { v.brandID = strings.Repeat("é", MaxBrandIDBytes/2+1) }), fieldInfo[FieldBrandID].tooLong},
		{"category_id over its limit", mod(func(v *rawValue) { v.categoryID = strings.Repeat("k", MaxCategoryIDBytes+1) }), fieldInfo[FieldCategoryID].tooLong},
		{"year 10000", mod(func(v *rawValue) { v.time = MaxTagTimeMs + 1 }), errTimeYears},
		{"year -1", mod(func(v *rawValue) { v.time = MinTagTimeMs - 1 }), errTimeYears},
		{"time MaxInt64", mod(func(v *rawValue) { v.time = math.MaxInt64 }), errTimeYears},
		{"product_id flagged a number, not one", mod(func(v *rawValue) { v.productID, v.isNumber = "12a", 1 }), errNumberLit},
		{"product_id flagged a number, empty", mod(func(v *rawValue) { v.productID, v.isNumber = "", 1 }), errNumberLit},
	}
	for _, tc := range tests {
		before := UserTag{Cookie: "untouched"}
		got := before
		err := DecodeEventValue(tc.in, &got)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: DecodeEventValue(%x) error %v, want %v", tc.name, tc.in, err, tc.want)
		}
		if got != before {
			t.Errorf("%s: the tag changed on error: %+v", tc.name, got)
		}
	}
	// Every truncation of a valid record is an error, never a panic.
	full, _ := AppendEventValue(nil, &validTag)
	for n := range len(full) {
		if err := DecodeEventValue(full[:n], &tag); err == nil {
			t.Errorf("DecodeEventValue accepted %d of %d bytes", n, len(full))
		}
	}
}

func TestDecodeEventKeyRejects(t *testing.T) {
	full, _ := AppendEventKey(nil, &validTag)
	for n := range len(full) {
		if _, err := DecodeEventKey(full[:n]); err == nil {
			t.Errorf("DecodeEventKey accepted %d of %d bytes", n, len(full))
		}
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"trailing byte", append(bytes.Clone(full), 0), errAvroTrailing},
		{"action 2", appendString(appendString(appendString(appendLong(appendLong(nil, 1), 2), "o"), "b"), "k"), errAvroEnum},
		{"negative length", appendLong(appendLong(appendLong(nil, 1), 0), -3), errAvroLength},
		{"invalid UTF-8", appendString(appendString(appendString(appendLong(appendLong(nil, 1), 0), "o"), "\xc3"), "k"), errInvalidUTF8},
	}
	for _, tc := range tests {
		if c, err := DecodeEventKey(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("%s: DecodeEventKey(%x) = %+v, %v; want %v", tc.name, tc.in, c, err, tc.want)
		}
	}
}

// FuzzDecodeEventValue: no panic; whatever the fast decoder accepts,
// goavro accepts as the same tag, and it re-encodes to an equal tag.
func FuzzDecodeEventValue(f *testing.F) {
	for _, tag := range avroTestTags(3) {
		b, _ := AppendEventValue(nil, &tag)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var tag UserTag
		if err := DecodeEventValue(data, &tag); err != nil {
			return
		}
		native, rest, err := ValueCodec().NativeFromBinary(data)
		if err != nil || len(rest) != 0 {
			t.Fatalf("fast decoder accepted %x, goavro: %v, %d bytes left", data, err, len(rest))
		}
		if ref, err := tagFromNative(native); err != nil || ref != tag {
			t.Fatalf("%x: fast %+v, goavro %+v, %v", data, tag, ref, err)
		}
		enc, err := AppendEventValue(nil, &tag)
		var back UserTag
		if err != nil || DecodeEventValue(enc, &back) != nil || back != tag {
			t.Fatalf("round trip of %+v failed: %v", tag, err)
		}
		// The pipeline takes only what the gateway would have taken.
		var fromJSON UserTag
		if err := DecodeUserTag(AppendUserTagJSON(nil, &tag), &fromJSON); err != nil || fromJSON != tag {
			t.Fatalf("event %+v accepted, but the gateway refuses it as JSON: %v", tag, err)
		}
	})
}

func sampleTag(b *testing.B) UserTag {
	var tag UserTag
	if err := DecodeUserTag([]byte(sampleTagJSON), &tag); err != nil {
		b.Fatal(err)
	}
	return tag
}

func BenchmarkAppendEventValue(b *testing.B) {
	tag := sampleTag(b)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendEventValue(buf[:0], &tag)
	}
}

// BenchmarkAppendEventValueGoavro includes building the native map, which
// a caller of goavro has to do per message.
func BenchmarkAppendEventValueGoavro(b *testing.B) {
	tag := sampleTag(b)
	codec := ValueCodec()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = codec.BinaryFromNative(buf[:0], valueNative(&tag)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEventValue(b *testing.B) {
	tag := sampleTag(b)
	data, _ := AppendEventValue(nil, &tag)
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeEventValue(data, &tag); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEventValueGoavro includes converting the native map back
// to a UserTag.
func BenchmarkDecodeEventValueGoavro(b *testing.B) {
	tag := sampleTag(b)
	data, _ := AppendEventValue(nil, &tag)
	codec := ValueCodec()
	b.ReportAllocs()
	for b.Loop() {
		native, _, err := codec.NativeFromBinary(data)
		if err != nil {
			b.Fatal(err)
		}
		if tag, err = tagFromNative(native); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendEventKey(b *testing.B) {
	tag := sampleTag(b)
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendEventKey(buf[:0], &tag)
	}
}

func BenchmarkDecodeEventKey(b *testing.B) {
	tag := sampleTag(b)
	data, _ := AppendEventKey(nil, &tag)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEventKey(data); err != nil {
			b.Fatal(err)
		}
	}
}
