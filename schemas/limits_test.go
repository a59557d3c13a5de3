package schemas

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestTagTimeBounds(t *testing.T) {
	if want := daysFromCivil(0, 1, 1) * 86400000; MinTagTimeMs != want {
		t.Errorf("MinTagTimeMs = %d, want %d", int64(MinTagTimeMs), want)
	}
	if want := daysFromCivil(10000, 1, 1)*86400000 - 1; MaxTagTimeMs != want {
		t.Errorf("MaxTagTimeMs = %d, want %d", int64(MaxTagTimeMs), want)
	}
}

// worstTag is the tag with the longest canonical JSON: every string field
// at its limit in control characters (6 bytes each as \u00XX), the longest
// enums and price.
func worstTag() UserTag {
	ctl := func(n int) string { return strings.Repeat("\x01", n) }
	return UserTag{
		TimeMs: MaxTagTimeMs, Cookie: ctl(MaxCookieBytes), Country: ctl(MaxCountryBytes), Device: Mobile, Action: View,
		Origin: ctl(MaxOriginBytes), ProductID: ctl(MaxProductIDBytes), BrandID: ctl(MaxBrandIDBytes),
		CategoryID: ctl(MaxCategoryIDBytes), Price: -1 << 31,
	}
}

func TestMaxTagJSONBytes(t *testing.T) {
	worst := worstTag()
	b := AppendUserTagJSON(nil, &worst)
	if len(b) != MaxTagJSONBytes {
		t.Fatalf("the worst tag's JSON is %d bytes, MaxTagJSONBytes says %d", len(b), MaxTagJSONBytes)
	}
	var back UserTag
	if err := DecodeUserTag(b, &back); err != nil || back != worst {
		t.Fatalf("the worst valid tag does not decode back: %v", err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		tag := genTag(r)
		if n := len(AppendUserTagJSON(nil, &tag)); n > MaxTagJSONBytes {
			t.Fatalf("%+v: JSON of %d bytes, above MaxTagJSONBytes", tag, n)
		}
	}
	t.Logf("MaxTagJSONBytes = %d", MaxTagJSONBytes)
}

func TestCheckValue(t *testing.T) {
	tests := []struct {
		name string
		f    Field
		v    string
		want error // nil: accepted
	}{
		{"empty", FieldOrigin, "", nil},
		{"at the limit", FieldOrigin, strings.Repeat("o", MaxOriginBytes), nil},
		{"multi-byte at the limit", FieldBrandID, strings.Repeat("é", MaxBrandIDBytes/2), nil},
		{"one byte over", FieldOrigin, strings.Repeat("o", MaxOriginBytes+1), fieldInfo[FieldOrigin].tooLong},
		{"multi-byte over", FieldCategoryID, strings.Repeat("€", MaxCategoryIDBytes/3+1), fieldInfo[FieldCategoryID].tooLong},
		{"cookie at its limit", FieldCookie, strings.Repeat("c", MaxCookieBytes), nil},
		{"cookie over", FieldCookie, strings.Repeat("c", MaxCookieBytes+1), fieldInfo[FieldCookie].tooLong},
		{"invalid UTF-8", FieldOrigin, "a\xffb", errInvalidUTF8},
		{"truncated rune", FieldBrandID, "\xc3", errInvalidUTF8},
		{"surrogate", FieldCategoryID, "\xed\xa0\x80", errInvalidUTF8},
		{"NUL", FieldCookie, "a\x00", errNUL},
		{"control characters are fine", FieldCountry, "\x01\n\t", nil},
	}
	for _, tc := range tests {
		err := CheckValue(tc.f, tc.v)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: CheckValue(%s, %.20q) = %v, want %v", tc.name, tc.f, tc.v, err, tc.want)
			continue
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != tc.f.String()) {
			t.Errorf("%s: error %v does not name the field %s", tc.name, err, tc.f)
		}
	}
}

// TestDecodeUserTagLimits: each string field at its limit is accepted and
// one byte more is a FieldError naming it; the limit counts the bytes after
// unescaping; a tag time outside years 0000-9999 once its offset is applied
// is refused.
func TestDecodeUserTagLimits(t *testing.T) {
	fields := []struct {
		f   Field
		old string // its value in validJSON
	}{
		{FieldCookie, `"c1"`}, {FieldCountry, `"PL"`}, {FieldOrigin, `"o1"`},
		{FieldProductID, `"p1"`}, {FieldBrandID, `"b1"`}, {FieldCategoryID, `"k1"`},
	}
	var tag UserTag
	for _, fl := range fields {
		max := fl.f.MaxBytes()
		at := with(t, fl.old, `"`+strings.Repeat("x", max)+`"`)
		if err := DecodeUserTag([]byte(at), &tag); err != nil {
			t.Errorf("%s at its limit %d: %v", fl.f, max, err)
		}
		// \u00e9 is 6 bytes of JSON, 2 of UTF-8: max/2 of them fit.
		escaped := with(t, fl.old, `"`+strings.Repeat(`\u00e9`, max/2)+`"`)
		if err := DecodeUserTag([]byte(escaped), &tag); err != nil {
			t.Errorf("%s of %d escaped bytes: %v", fl.f, max, err)
		}
		for name, over := range map[string]string{
			"plain":   `"` + strings.Repeat("x", max+1) + `"`,
			"escaped": `"` + strings.Repeat(`\u0001`, max+1) + `"`,
			"6000":    `"` + strings.Repeat("y", 6000) + `"`,
		} {
			err := DecodeUserTag([]byte(with(t, fl.old, over)), &tag)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != fl.f.String() || !errors.Is(err, fieldInfo[fl.f].tooLong) {
				t.Errorf("%s over its limit (%s): error %v, want %q too long", fl.f, name, err, fl.f)
			}
		}
	}
	numAt := with(t, `"p1"`, "1"+strings.Repeat("0", MaxProductIDBytes-1))
	if err := DecodeUserTag([]byte(numAt), &tag); err != nil || !tag.ProductIDIsNumber {
		t.Errorf("numeric product_id at its limit: %v", err)
	}
	numOver := with(t, `"p1"`, "1"+strings.Repeat("0", MaxProductIDBytes))
	if err := DecodeUserTag([]byte(numOver), &tag); !errors.Is(err, fieldInfo[FieldProductID].tooLong) {
		t.Errorf("numeric product_id over its limit: %v", err)
	}

	times := []struct {
		in string
		ok bool
	}{
		{"9999-12-31T23:59:59.999Z", true},
		{"9999-12-31T23:59:59.999999999Z", true},
		{"0000-01-01T00:00:00.000Z", true},
		{"9999-12-31T23:59:59.999+00:01", true},
		{"0000-01-01T00:00:00-00:01", true},
		{"9999-12-31T23:30:00.000-23:59", false}, // the issue's: year 10000
		{"9999-12-31T23:59:59.999-00:01", false},
		{"0000-01-01T00:00:00.000+00:01", false},
		{"0000-01-01T23:58:59.999+23:59", false},
	}
	for _, tc := range times {
		before := UserTag{Cookie: "untouched"}
		got := before
		err := DecodeUserTag([]byte(with(t, "2022-03-22T12:15:00.123Z", tc.in)), &got)
		if tc.ok != (err == nil) {
			t.Errorf("time %s: error %v, want accepted %v", tc.in, err, tc.ok)
		}
		if !tc.ok && (!errors.Is(err, errTimeYears) || got != before) {
			t.Errorf("time %s: error %v (want the years error), tag %+v (want untouched)", tc.in, err, got)
		}
	}
}

// TestDecodersAgree: the JSON and the Avro decoder accept and refuse the
// same tags, for the same field: valid generated tags, and each of them
// broken in one of the ways both formats can carry.
func TestDecodersAgree(t *testing.T) {
	breaks := []func(*UserTag){
		func(u *UserTag) {},
		func(u *UserTag) { u.Cookie = "" },
		func(u *UserTag) { u.Cookie = strings.Repeat("c", MaxCookieBytes+1) },
		func(u *UserTag) { u.Country = strings.Repeat("\n", MaxCountryBytes+1) },
		func(u *UserTag) { u.Origin = strings.Repeat("o", 6000) },
		func(u *UserTag) { u.ProductID, u.ProductIDIsNumber = strings.Repeat("9", MaxProductIDBytes+1), true },
		func(u *UserTag) { u.BrandID = strings.Repeat("😀", MaxBrandIDBytes/4+1) },
		func(u *UserTag) { u.CategoryID = "a\x00" },
		func(u *UserTag) { u.Origin = "\x00" },
		func(u *UserTag) { u.TimeMs = MaxTagTimeMs + 1 },
		func(u *UserTag) { u.TimeMs = MinTagTimeMs - 1 },
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 3000 {
		tag := genTag(r)
		breaks[i%len(breaks)](&tag)
		var fromJSON, fromAvro UserTag
		jerr := DecodeUserTag(AppendUserTagJSON(nil, &tag), &fromJSON)
		avro, err := AppendEventValue(nil, &tag)
		if err != nil {
			t.Fatal(err)
		}
		aerr := DecodeEventValue(avro, &fromAvro)
		var jfe, afe *FieldError
		switch {
		case (jerr == nil) != (aerr == nil):
			t.Fatalf("break %d of %+v: JSON decoder %v, Avro decoder %v", i%len(breaks), tag, jerr, aerr)
		case jerr == nil && (fromJSON != tag || fromAvro != tag):
			t.Fatalf("%+v decodes as %+v (JSON), %+v (Avro)", tag, fromJSON, fromAvro)
		case jerr != nil && (!errors.As(jerr, &jfe) || !errors.As(aerr, &afe) || jfe.Field != afe.Field):
			t.Fatalf("break %d of %+v: JSON decoder %v, Avro decoder %v: not the same field", i%len(breaks), tag, jerr, aerr)
		case jerr == nil && i%len(breaks) != 0:
			t.Fatalf("break %d of %+v accepted", i%len(breaks), tag)
		}
	}
}
