package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const validJSON = `{"time":"2022-03-22T12:15:00.123Z","cookie":"c1","country":"PL","device":"PC","action":"VIEW","origin":"o1","product_info":{"product_id":"p1","brand_id":"b1","category_id":"k1","price":100}}`

var validTag = UserTag{
	TimeMs: 1647951300123, Cookie: "c1", Country: "PL", Device: PC, Action: View, Origin: "o1",
	ProductID: "p1", BrandID: "b1", CategoryID: "k1", Price: 100,
}

// with returns validJSON with each old→new pair replaced once.
func with(t *testing.T, pairs ...string) string {
	t.Helper()
	s := validJSON
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("with: %q not in %s", pairs[i], s)
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func TestDecodeUserTagAccepts(t *testing.T) {
	var indented bytes.Buffer
	if err := json.Indent(&indented, []byte(validJSON), " \r\n", "\t "); err != nil {
		t.Fatal(err)
	}
	deep := strings.Repeat("[", maxSkipDepth-1) + strings.Repeat("]", maxSkipDepth-1)
	tests := []struct {
		name string
		in   string
		edit func(*UserTag)
	}{
		{"canonical", validJSON, nil},
		{"whitespace everywhere", " \n" + indented.String() + "\t\r\n ", nil},
		{"seconds precision", with(t, `.123Z`, `Z`), func(u *UserTag) { u.TimeMs = 1647951300000 }},
		{"microseconds", with(t, `.123Z`, `.123999Z`), nil},
		{"nanoseconds", with(t, `.123Z`, `.123999999Z`), nil},
		{"offset", with(t, `12:15:00.123Z`, `13:15:00.123456+01:00`), nil},
		{"escaped time", with(t, `.123Z`, `.123\u005a`), nil},
		{"max price", with(t, `"price":100`, `"price":2147483647`), func(u *UserTag) { u.Price = 2147483647 }},
		{"min price", with(t, `"price":100`, `"price":-2147483648`), func(u *UserTag) { u.Price = -2147483648 }},
		{"zero price", with(t, `"price":100`, `"price":0`), func(u *UserTag) { u.Price = 0 }},
		{"minus zero price", with(t, `"price":100`, `"price":-0`), func(u *UserTag) { u.Price = 0 }},
		{"numeric product_id", with(t, `"p1"`, `12`), func(u *UserTag) { u.ProductID, u.ProductIDIsNumber = "12", true }},
		{"minus zero product_id", with(t, `"p1"`, `-0`), func(u *UserTag) { u.ProductID, u.ProductIDIsNumber = "-0", true }},
		{"float product_id", with(t, `"p1"`, `1.5e3`), func(u *UserTag) { u.ProductID, u.ProductIDIsNumber = "1.5e3", true }},
		{"exotic product_id", with(t, `"p1"`, `-0.0E+00`), func(u *UserTag) { u.ProductID, u.ProductIDIsNumber = "-0.0E+00", true }},
		{"huge product_id", with(t, `"p1"`, `123456789012345678901234567890`), func(u *UserTag) {
			u.ProductID, u.ProductIDIsNumber = "123456789012345678901234567890", true
		}},
		{"string product_id of digits", with(t, `"p1"`, `"12"`), func(u *UserTag) { u.ProductID = "12" }},
		{"mobile buy", with(t, `"PC"`, `"MOBILE"`, `"VIEW"`, `"BUY"`), func(u *UserTag) { u.Device, u.Action = Mobile, Buy }},
		{"tv", with(t, `"PC"`, `"TV"`), func(u *UserTag) { u.Device = TV }},
		{"escaped enum", with(t, `"PC"`, `"\u0054V"`), func(u *UserTag) { u.Device = TV }},
		{"unicode", with(t, `"c1"`, `"zażółć 𝄞 😀"`), func(u *UserTag) { u.Cookie = "zażółć 𝄞 😀" }},
		{"short escapes", with(t, `"c1"`, `"\"\\\/\b\f\n\r\t"`), func(u *UserTag) { u.Cookie = "\"\\/\b\f\n\r\t" }},
		{"unicode escapes", with(t, `"o1"`, `"\u00e9\u00E9\u20ac"`), func(u *UserTag) { u.Origin = "éé€" }},
		{"surrogate pair", with(t, `"k1"`, `"\ud83d\ude00x\uD834\uDD1E"`), func(u *UserTag) { u.CategoryID = "😀x𝄞" }},
		{"NUL escape in an ignored field", with(t, `"cookie"`, `"x":"a\u0000b","cookie"`), nil},
		{"replacement char literal", with(t, `"b1"`, `"\ufffd�"`), func(u *UserTag) { u.BrandID = "\ufffd\ufffd" }},
		{"DEL raw", with(t, `"b1"`, "\"\x7f\""), func(u *UserTag) { u.BrandID = "\x7f" }},
		{"escaped key", with(t, `"cookie"`, `"\u0063ookie"`), nil},
		{"empty strings but cookie", with(t, `"PL"`, `""`, `"o1"`, `""`, `"p1"`, `""`, `"b1"`, `""`, `"k1"`, `""`), func(u *UserTag) {
			u.Country, u.Origin, u.ProductID, u.BrandID, u.CategoryID = "", "", "", "", ""
		}},
		{"unknown fields", with(t, `"cookie"`, `"extra":{"a":[1,-2.5e-3,{"b":null}],"c":"x\u00e9","d":[],"e":{}},"t":true,"f":false,"z":null,"Cookie":5,"cookie"`,
			`"price"`, `"x":[[],[{}]],"price"`), nil},
		{"unknown deep but allowed", with(t, `"cookie"`, `"deep":`+deep+`,"cookie"`), nil},
		{"unknown top-level price", with(t, `"cookie"`, `"price":"not ours","cookie"`), nil},
		{"duplicate string, last wins", with(t, `"cookie":"c1"`, `"cookie":"first","cookie":"c1"`), nil},
		{"duplicate later wins", with(t, `"origin":"o1"`, `"origin":"o1","origin":"o2"`), func(u *UserTag) { u.Origin = "o2" }},
		{"duplicate with escapes then plain", with(t, `"origin":"o1"`, `"origin":"\u00e9\n","origin":"o1"`), nil},
		{"duplicate product_info replaces", with(t, `"product_info"`, `"product_info":{"price":5},"product_info"`), nil},
		{"fields reordered", `{"product_info":{"price":100,"category_id":"k1","brand_id":"b1","product_id":"p1"},"origin":"o1","action":"VIEW","device":"PC","country":"PL","cookie":"c1","time":"2022-03-22T12:15:00.123Z"}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := validTag
			if tc.edit != nil {
				tc.edit(&want)
			}
			var got UserTag
			if err := DecodeUserTag([]byte(tc.in), &got); err != nil {
				t.Fatalf("DecodeUserTag(%s): %v", tc.in, err)
			}
			if got != want {
				t.Fatalf("DecodeUserTag(%s)\n got %+v\nwant %+v", tc.in, got, want)
			}
		})
	}
}

func TestDecodeUserTagRejects(t *testing.T) {
	deep := strings.Repeat("[", maxSkipDepth) + strings.Repeat("]", maxSkipDepth)
	deepObj := strings.Repeat(`{"a":`, maxSkipDepth) + "1" + strings.Repeat("}", maxSkipDepth)
	tests := []struct {
		name string
		in   string
		want string // the exact error, or a prefix ending in "*"
	}{
		{"empty", "", "the body must be a JSON object"},
		{"null", "null", "the body must be a JSON object"},
		{"array", "[]", "the body must be a JSON object"},
		{"string", `"x"`, "the body must be a JSON object"},
		{"open brace", "{", "invalid JSON at offset 1: unexpected end of input"},
		{"empty object", "{}", "time: missing"},
		{"trailing garbage", validJSON + "x", fmt.Sprintf("invalid JSON at offset %d: unexpected data after the object", len(validJSON))},
		{"second object", validJSON + "{}", "invalid JSON*"},
		{"truncated", validJSON[:len(validJSON)-1], "invalid JSON*"},
		{"trailing comma", with(t, `100}}`, `100,}}`), "invalid JSON*"},
		{"missing colon", with(t, `"cookie":`, `"cookie" `), "invalid JSON*"},
		{"missing comma", with(t, `,"cookie"`, ` "cookie"`), "invalid JSON*"},
		{"single quotes", with(t, `"c1"`, `'c1'`), "cookie: not a string"},
		{"BOM", "\ufeff" + validJSON, "the body must be a JSON object"},

		{"missing time", with(t, `"time":"2022-03-22T12:15:00.123Z",`, ``), "time: missing"},
		{"missing cookie", with(t, `"cookie":"c1",`, ``), "cookie: missing"},
		{"missing country", with(t, `"country":"PL",`, ``), "country: missing"},
		{"missing device", with(t, `"device":"PC",`, ``), "device: missing"},
		{"missing action", with(t, `"action":"VIEW",`, ``), "action: missing"},
		{"missing origin", with(t, `"origin":"o1",`, ``), "origin: missing"},
		{"missing product_info", with(t, `,"product_info":{"product_id":"p1","brand_id":"b1","category_id":"k1","price":100}`, ``), "product_info: missing"},
		{"missing product_id", with(t, `"product_id":"p1",`, ``), "product_id: missing"},
		{"missing brand_id", with(t, `"brand_id":"b1",`, ``), "brand_id: missing"},
		{"missing category_id", with(t, `"category_id":"k1",`, ``), "category_id: missing"},
		{"missing price", with(t, `,"price":100`, ``), "price: missing"},
		{"field name case", with(t, `"cookie"`, `"Cookie"`), "cookie: missing"},
		{"nested field at top level", with(t, `"price":100`, `"prize":100`, `"cookie"`, `"price":1,"cookie"`), "price: missing"},
		// A mistyped value is an error even if a later duplicate would be
		// fine, as with encoding/json and Jackson.
		{"mistyped then valid duplicate", with(t, `"price":100`, `"price":"x","price":100`), "price: not a number"},
		{"bad then good time", with(t, `"time"`, `"time":"bad","time"`), "time: want RFC 3339*"},
		{"incomplete last product_info", with(t, `}}`, `},"product_info":{"price":1}}`), "product_id: missing"},

		{"null time", with(t, `"2022-03-22T12:15:00.123Z"`, `null`), "time: not a string"},
		{"null cookie", with(t, `"c1"`, `null`), "cookie: not a string"},
		{"null device", with(t, `"PC"`, `null`), "device: not a string"},
		{"null product_info", with(t, `{"product_id":"p1","brand_id":"b1","category_id":"k1","price":100}`, `null`), "product_info: not an object"},
		{"null product_id", with(t, `"p1"`, `null`), "product_id: not a string or a number"},
		{"null price", with(t, `"price":100`, `"price":null`), "price: not a number"},
		{"numeric cookie", with(t, `"c1"`, `1`), "cookie: not a string"},
		{"array country", with(t, `"PL"`, `["PL"]`), "country: not a string"},
		{"bool product_id", with(t, `"p1"`, `true`), "product_id: not a string or a number"},
		{"array product_info", with(t, `{"product_id":"p1","brand_id":"b1","category_id":"k1","price":100}`, `[]`), "product_info: not an object"},
		{"numeric time", with(t, `"2022-03-22T12:15:00.123Z"`, `1647951300123`), "time: not a string"},

		{"quoted price", with(t, `"price":100`, `"price":"100"`), "price: not a number"},
		{"fraction price", with(t, `"price":100`, `"price":100.0`), "price: not an integer"},
		{"exponent price", with(t, `"price":100`, `"price":1e2`), "price: not an integer"},
		{"price above int32", with(t, `"price":100`, `"price":2147483648`), "price: not an int32"},
		{"price below int32", with(t, `"price":100`, `"price":-2147483649`), "price: not an int32"},
		{"price 11 digits", with(t, `"price":100`, `"price":99999999999`), "price: not an int32"},
		{"price leading zero", with(t, `"price":100`, `"price":0100`), "price: invalid number"},
		{"price minus only", with(t, `"price":100`, `"price":-`), "price: invalid number"},
		{"price plus", with(t, `"price":100`, `"price":+1`), "price: not a number"},
		{"price bool", with(t, `"price":100`, `"price":true`), "price: not a number"},
		{"product_id bad number", with(t, `"p1"`, `1.`), "product_id: invalid number"},
		{"product_id bad exponent", with(t, `"p1"`, `1e`), "product_id: invalid number"},
		{"product_id leading zero", with(t, `"p1"`, `01`), "product_id: invalid number"},
		{"product_id dot first", with(t, `"p1"`, `.5`), "product_id: not a string or a number"},

		{"lower-case device", with(t, `"PC"`, `"pc"`), "device: must be PC, MOBILE or TV"},
		{"unknown device", with(t, `"PC"`, `"PHONE"`), "device: must be PC, MOBILE or TV"},
		{"lower-case action", with(t, `"VIEW"`, `"view"`), "action: must be VIEW or BUY"},
		{"unknown action", with(t, `"VIEW"`, `"CLICK"`), "action: must be VIEW or BUY"},
		{"empty cookie", with(t, `"c1"`, `""`), "cookie: must not be empty"},

		{"time without zone", with(t, `.123Z`, `.123`), "time: missing zone (Z or ±HH:MM)"},
		{"time bad calendar", with(t, `2022-03-22`, `2022-02-30`), "time: day out of range"},
		{"time bad hour", with(t, `T12`, `T24`), "time: hour out of range"},
		{"time too long escaped", with(t, `.123Z`, `.123\u005a`+strings.Repeat(`\u0020`, 30)), "time: too long"},

		{"invalid UTF-8 byte", with(t, `"c1"`, "\"c\xff\""), "cookie: invalid UTF-8"},
		{"truncated UTF-8", with(t, `"PL"`, "\"P\xc3\""), "country: invalid UTF-8"},
		{"UTF-8 surrogate", with(t, `"o1"`, "\"\xed\xa0\x80\""), "origin: invalid UTF-8"},
		{"overlong UTF-8", with(t, `"b1"`, "\"\xc0\xaf\""), "brand_id: invalid UTF-8"},
		{"invalid UTF-8 in unknown", with(t, `"cookie"`, "\"x\":\"\xff\",\"cookie\""), "invalid JSON*invalid UTF-8"},
		{"invalid UTF-8 in key", with(t, `"cookie"`, "\"\xff\":1,\"cookie\""), "invalid JSON*invalid UTF-8"},
		{"lone high surrogate", with(t, `"c1"`, `"\ud800"`), `cookie: lone UTF-16 surrogate in \u escape`},
		{"lone low surrogate", with(t, `"c1"`, `"\udc00"`), `cookie: lone UTF-16 surrogate in \u escape`},
		{"high then letter", with(t, `"c1"`, `"\ud800\u0041"`), `cookie: lone UTF-16 surrogate in \u escape`},
		{"high then raw", with(t, `"c1"`, `"\ud800x"`), `cookie: lone UTF-16 surrogate in \u escape`},
		{"two highs", with(t, `"c1"`, `"\ud800\ud800"`), `cookie: lone UTF-16 surrogate in \u escape`},
		{"NUL in brand_id", with(t, `"b1"`, `"a\u0000b"`), `brand_id: NUL character (\u0000) not allowed`},
		{"NUL in cookie", with(t, `"c1"`, `"\u0000"`), `cookie: NUL character (\u0000) not allowed`},
		{"NUL in product_id", with(t, `"p1"`, `"\u0000"`), `product_id: NUL character (\u0000) not allowed`},
		{"lone surrogate in product_id", with(t, `"p1"`, `"\udfff"`), `product_id: lone UTF-16 surrogate in \u escape`},
		{"bad escape", with(t, `"c1"`, `"\x"`), "cookie: invalid escape"},
		{"short unicode escape", with(t, `"c1"`, `"\u12"`), "cookie: invalid escape"},
		{"bad hex", with(t, `"c1"`, `"\u12G4"`), "cookie: invalid escape"},
		{"raw newline", with(t, `"c1"`, "\"c\n1\""), "cookie: unescaped control character in string"},
		{"raw tab in unknown", with(t, `"cookie"`, "\"x\":\"\t\",\"cookie\""), "invalid JSON*control character*"},
		{"unterminated", `{"cookie":"c1`, "cookie: unterminated string"},

		{"too deep array", with(t, `"cookie"`, `"deep":`+deep+`,"cookie"`), "invalid JSON*nested too deeply"},
		{"too deep object", with(t, `"cookie"`, `"deep":`+deepObj+`,"cookie"`), "invalid JSON*nested too deeply"},
		{"bad literal", with(t, `"cookie"`, `"x":tru,"cookie"`), "invalid JSON*"},
		{"array trailing comma", with(t, `"cookie"`, `"x":[1,],"cookie"`), "invalid JSON*"},
		{"object missing colon", with(t, `"cookie"`, `"x":{"a" 1},"cookie"`), "invalid JSON*"},
		{"object leading comma", with(t, `"cookie"`, `"x":{,},"cookie"`), "invalid JSON*"},
		{"unknown NaN", with(t, `"cookie"`, `"x":NaN,"cookie"`), "invalid JSON*"},
		{"unknown bad number", with(t, `"cookie"`, `"x":-,"cookie"`), "invalid JSON*invalid number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := UserTag{Cookie: "untouched", Price: 7}
			got := before
			err := DecodeUserTag([]byte(tc.in), &got)
			if err == nil {
				t.Fatalf("DecodeUserTag(%q) = %+v, want error %q", tc.in, got, tc.want)
			}
			if !matchError(err.Error(), tc.want) {
				t.Errorf("DecodeUserTag(%q) error %q, want %q", tc.in, err, tc.want)
			}
			if got != before {
				t.Errorf("DecodeUserTag(%q) changed the tag on error: %+v", tc.in, got)
			}
		})
	}
}

// matchError matches an error text against a pattern in which "*" stands
// for any text.
func matchError(got, pattern string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(got, parts[0]) {
		return false
	}
	got = got[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(got, p)
		}
		j := strings.Index(got, p)
		if j < 0 {
			return false
		}
		got = got[j+len(p):]
	}
	return got == ""
}

func TestDecodeUserTagFieldError(t *testing.T) {
	var tag UserTag
	err := DecodeUserTag([]byte(with(t, `"price":100`, `"price":2147483648`)), &tag)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "price" || !errors.Is(err, errNotInt32) {
		t.Fatalf("error %#v is not a price FieldError", err)
	}
	err = DecodeUserTag([]byte(with(t, `.123Z`, `.123`)), &tag)
	if !errors.As(err, &fe) || fe.Field != "time" || !errors.Is(err, errTimeNoZone) {
		t.Fatalf("error %#v is not a time FieldError wrapping the time error", err)
	}
}

func TestAppendUserTagJSONCanonical(t *testing.T) {
	if got := string(AppendUserTagJSON(nil, &validTag)); got != validJSON {
		t.Fatalf("AppendUserTagJSON = %s\nwant %s", got, validJSON)
	}
	tag := validTag
	tag.ProductID, tag.ProductIDIsNumber = "-0", true
	tag.Cookie = "a\"b\\c\n\x01é😀\u2028<&>"
	tag.Device, tag.Action, tag.Price, tag.TimeMs = TV, Buy, -2147483648, -1
	want := `{"time":"1969-12-31T23:59:59.999Z","cookie":"a\"b\\c\n\u0001é😀` + "\u2028" + `<&>","country":"PL","device":"TV","action":"BUY","origin":"o1","product_info":{"product_id":-0,"brand_id":"b1","category_id":"k1","price":-2147483648}}`
	if got := string(AppendUserTagJSON([]byte("prefix"), &tag)); got != "prefix"+want {
		t.Fatalf("AppendUserTagJSON = %s\nwant prefix%s", got, want)
	}
}

func TestAppendJSONString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`"\`, `"\"\\"`},
		{"\n\r\t\b\f", `"\n\r\t\b\f"`},
		{"\x00\x01\x1f\x7f", `"\u0000\u0001\u001f` + "\x7f\""},
		{"/<>&", `"/<>&"`},
		{"zażółć €𝄞\u2028\u2029", "\"zażółć €𝄞\u2028\u2029\""},
		{"a\xffb\xc3", `"a\ufffdb\ufffd"`},
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
	}
	for _, tc := range tests {
		if got := string(AppendJSONString(nil, tc.in)); got != tc.want {
			t.Errorf("AppendJSONString(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	// Any string, valid UTF-8 or not, reads back through encoding/json as
	// encoding/json's own encoding of it does.
	r := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		s := genString(r, 0)
		if r.IntN(4) == 0 {
			b := []byte(s + "xyz")
			b[r.IntN(len(b))] = byte(0x80 + r.IntN(0x80))
			s = string(b)
		}
		enc := AppendJSONString(nil, s)
		var got, want string
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("AppendJSONString(%q) = %s: %v", s, enc, err)
		}
		ref, _ := json.Marshal(s)
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if got != want || (utf8.ValidString(s) && got != s) {
			t.Fatalf("AppendJSONString(%q) = %s reads back as %q, want %q", s, enc, got, want)
		}
	}
}

// refTag is the user tag as encoding/json sees it, for cross-checking.
type refTag struct {
	Time        string `json:"time"`
	Cookie      string `json:"cookie"`
	Country     string `json:"country"`
	Device      string `json:"device"`
	Action      string `json:"action"`
	Origin      string `json:"origin"`
	ProductInfo struct {
		ProductID  json.RawMessage `json:"product_id"`
		BrandID    string          `json:"brand_id"`
		CategoryID string          `json:"category_id"`
		Price      int32           `json:"price"`
	} `json:"product_info"`
}

// TestUserTagJSONCrossCheck encodes generated awkward tags, checks that
// encoding/json reads the same values, and that DecodeUserTag gives the
// tag back.
func TestUserTagJSONCrossCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var buf []byte
	for range 5000 {
		tag := genTag(r)
		buf = AppendUserTagJSON(buf[:0], &tag)

		dec := json.NewDecoder(bytes.NewReader(buf))
		dec.DisallowUnknownFields()
		var ref refTag
		if err := dec.Decode(&ref); err != nil {
			t.Fatalf("encoding/json cannot read %s: %v", buf, err)
		}
		tm, err := time.Parse(time.RFC3339Nano, ref.Time)
		if err != nil || tm.UnixMilli() != tag.TimeMs {
			t.Fatalf("time %q of %+v: %v", ref.Time, tag, err)
		}
		pid := string(ref.ProductInfo.ProductID)
		if !tag.ProductIDIsNumber {
			if err := json.Unmarshal(ref.ProductInfo.ProductID, &pid); err != nil {
				t.Fatalf("product_id %s: %v", ref.ProductInfo.ProductID, err)
			}
		} else if ref.ProductInfo.ProductID[0] == '"' {
			t.Fatalf("numeric product_id written as a string: %s", buf)
		}
		if ref.Cookie != tag.Cookie || ref.Country != tag.Country || ref.Device != tag.Device.String() ||
			ref.Action != tag.Action.String() || ref.Origin != tag.Origin || pid != tag.ProductID ||
			ref.ProductInfo.BrandID != tag.BrandID || ref.ProductInfo.CategoryID != tag.CategoryID ||
			ref.ProductInfo.Price != tag.Price {
			t.Fatalf("encoding/json reads %s as %+v, want %+v", buf, ref, tag)
		}

		var back UserTag
		if err := DecodeUserTag(buf, &back); err != nil {
			t.Fatalf("DecodeUserTag(%s): %v", buf, err)
		}
		if back != tag {
			t.Fatalf("DecodeUserTag(%s)\n got %+v\nwant %+v", buf, back, tag)
		}
	}
}

// FuzzDecodeUserTag: no panic; whatever is accepted is valid JSON and
// valid UTF-8, and survives an encode/decode round trip unchanged.
func FuzzDecodeUserTag(f *testing.F) {
	f.Add([]byte(validJSON))
	f.Add([]byte(`{"time":"2022-03-22T12:15:00Z","cookie":"\u00e9\ud83d\ude00","country":"","device":"TV","action":"BUY","origin":"","product_info":{"product_id":-1.5e3,"brand_id":"","category_id":"","price":-2147483648},"x":[{"y":null}]}`))
	f.Add([]byte(`{"cookie":"\ud800"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tag UserTag
		if err := DecodeUserTag(data, &tag); err != nil {
			return
		}
		if !json.Valid(data) || !utf8.Valid(data) {
			t.Fatalf("accepted invalid JSON or UTF-8: %q", data)
		}
		enc := AppendUserTagJSON(nil, &tag)
		var back UserTag
		if err := DecodeUserTag(enc, &back); err != nil || back != tag {
			t.Fatalf("round trip of %q via %s: %+v, %v", data, enc, back, err)
		}
		// The tag rules hold, and the pipeline's decoder takes what the
		// gateway took.
		if len(enc) > MaxTagJSONBytes || tag.TimeMs < MinTagTimeMs || tag.TimeMs > MaxTagTimeMs {
			t.Fatalf("accepted %q: canonical JSON of %d bytes, time %d", data, len(enc), tag.TimeMs)
		}
		avro, err := AppendEventValue(nil, &tag)
		var fromAvro UserTag
		if err != nil || DecodeEventValue(avro, &fromAvro) != nil || fromAvro != tag {
			t.Fatalf("accepted %q, but not as an event: %+v, %v", data, fromAvro, err)
		}
	})
}

// sampleTagJSON is a realistic body of the replayed stream.
const sampleTagJSON = `{"time":"2022-03-22T12:15:00.123Z","cookie":"6f1e3a2b-9c4d-4e7f-8a1b-2c3d4e5f6a7b","country":"PL","device":"MOBILE","action":"BUY","origin":"origin_412","product_info":{"product_id":"184903","brand_id":"brand_77","category_id":"category_12","price":2599}}`

func BenchmarkDecodeUserTag(b *testing.B) {
	data := []byte(sampleTagJSON)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var tag UserTag
	for b.Loop() {
		if err := DecodeUserTag(data, &tag); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeUserTagEncodingJSON is the reference point: encoding/json
// into refTag, without even parsing the time or validating enums.
func BenchmarkDecodeUserTagEncodingJSON(b *testing.B) {
	data := []byte(sampleTagJSON)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var ref refTag
		if err := json.Unmarshal(data, &ref); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendUserTagJSON(b *testing.B) {
	var tag UserTag
	if err := DecodeUserTag([]byte(sampleTagJSON), &tag); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendUserTagJSON(buf[:0], &tag)
	}
	b.SetBytes(int64(len(buf)))
}
