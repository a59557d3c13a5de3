package schemas

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The user tag's JSON is decoded by hand: encoding/json is reflective,
// case-insensitive on field names, lenient on invalid UTF-8 and allocates per
// field, and this is the gateway's hot path (every POST /user_tags). The
// decoder below is strict per SPEC.md and allocates once per tag: pass one
// validates the whole text and records where each string field's bytes are;
// pass two copies the winning values into a single string that all the
// tag's string fields share.

// FieldError is a decoding error that names the offending field. Its text,
// e.g. "price: not an int32", is meant for a 400 response body.
type FieldError struct {
	Field string // JSON field or query parameter name, e.g. "price"
	Err   error  // what is wrong with it
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// Reasons carried by FieldError.
var (
	errMissing       = errors.New("missing")
	errEmpty         = errors.New("must not be empty")
	errNotString     = errors.New("not a string")
	errNotObject     = errors.New("not an object")
	errNotNumber     = errors.New("not a number")
	errNotInteger    = errors.New("not an integer")
	errNotInt32      = errors.New("not an int32")
	errNotStrOrNum   = errors.New("not a string or a number")
	errBadDevice     = errors.New("must be PC, MOBILE or TV")
	errBadAction     = errors.New("must be VIEW or BUY")
	errInvalidUTF8   = errors.New("invalid UTF-8")
	errLoneSurrogate = errors.New("lone UTF-16 surrogate in \\u escape")
	errBadEscape     = errors.New("invalid escape")
	errControlChar   = errors.New("unescaped control character in string")
	// errNUL rejects U+0000 in a stored field: no identifier carries it,
	// PostgreSQL text cannot hold it, and one such tag accepted would stop
	// the pipeline at its commit.
	errNUL           = errors.New("NUL character (\\u0000) not allowed")
	errUnterminated  = errors.New("unterminated string")
	errTooDeep       = errors.New("nested too deeply")
	errNumberGrammar = errors.New("invalid number")
	errUnexpectedEnd = errors.New("unexpected end of input")
	errTrailingData  = errors.New("unexpected data after the object")
	errNotJSONObject = errors.New("the body must be a JSON object")
	errTooLong       = errors.New("too long")
)

// maxSkipDepth bounds the nesting of objects and arrays, so a hostile body
// cannot exhaust the stack of the recursive skipper.
const maxSkipDepth = 64

// Indices of the string fields in tagFields.str, in the order pass two
// writes them into the shared string.
const (
	sCookie      = FieldCookie
	sCountry     = FieldCountry
	sOrigin      = FieldOrigin
	sProductID   = FieldProductID
	sBrandID     = FieldBrandID
	sCategoryID  = FieldCategoryID
	numStrFields = numFields
)

// Bits of tagFields.seen, in the order missing fields are reported.
const (
	fTime uint16 = 1 << iota
	fCookie
	fCountry
	fDevice
	fAction
	fOrigin
	fProductInfo
	fProductID
	fBrandID
	fCategoryID
	fPrice

	fProductFields = fProductID | fBrandID | fCategoryID | fPrice
	fAll           = fProductInfo<<1 - 1 | fProductFields
)

var fieldNames = [...]string{"time", "cookie", "country", "device", "action", "origin", "product_info", "product_id", "brand_id", "category_id", "price"}

// span locates a JSON string's content (between the quotes) or a number
// literal in the input.
type span struct {
	start, end int
	escaped    bool // contains backslash escapes: copy through unescape
	nonASCII   bool // contains a byte >= 0x80
	n          int  // length after unescaping
}

// tagFields is pass one's result: scalar values and where the strings are.
type tagFields struct {
	seen   uint16
	timeMs int64
	device Device
	action Action
	price  int32
	isNum  bool
	str    [numStrFields]span
}

// jsonDecoder is a cursor over the input.
type jsonDecoder struct {
	data []byte
	pos  int
}

// DecodeUserTag decodes one user tag from data, strictly (SPEC.md "Data"):
// exact field names, every field required, no null, price an int32 integer
// literal, product_id a string or a JSON number (kept as its literal text),
// valid UTF-8, nothing after the object; then the content must pass the
// rules every tag obeys (checkTag: non-empty cookie, field limits, no NUL,
// years 0000-9999). Unknown fields are skipped; of a duplicated field the
// last wins (a duplicated product_info replaces the earlier one whole, so
// it must itself be complete). On error t is left unchanged. The string
// fields of t share one allocation.
func DecodeUserTag(data []byte, t *UserTag) error {
	d := jsonDecoder{data: data}
	var f tagFields
	d.skipWS()
	if d.peek() != '{' {
		return errNotJSONObject
	}
	d.pos++
	for first := true; ; first = false {
		key, more, err := d.nextKey(first)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		switch string(key) {
		case "time":
			err = d.timeField(&f)
		case "cookie":
			err = d.stringField("cookie", &f.str[sCookie])
			f.seen |= fCookie
		case "country":
			err = d.stringField("country", &f.str[sCountry])
			f.seen |= fCountry
		case "device":
			err = d.enumField("device", &f)
			f.seen |= fDevice
		case "action":
			err = d.enumField("action", &f)
			f.seen |= fAction
		case "origin":
			err = d.stringField("origin", &f.str[sOrigin])
			f.seen |= fOrigin
		case "product_info":
			err = d.productInfo(&f)
		default:
			err = d.skipValue(1)
		}
		if err != nil {
			return err
		}
	}
	d.skipWS()
	if d.pos != len(d.data) {
		return d.syntaxError(errTrailingData)
	}
	if f.seen != fAll {
		for i, name := range fieldNames {
			if f.seen&(1<<i) == 0 {
				return &FieldError{Field: name, Err: errMissing}
			}
		}
	}
	tag := d.commit(&f)
	if err := checkTag(&tag, f.plainFields()); err != nil {
		return err
	}
	*t = tag
	return nil
}

// plainFields is the set of string fields (bit 1<<Field) whose text had
// no escape and only ASCII: the scanner has shown them free of NUL and
// control characters, so checkTag need not look at their bytes again.
func (f *tagFields) plainFields() uint8 {
	var m uint8
	for i := range f.str {
		if !f.str[i].escaped && !f.str[i].nonASCII {
			m |= 1 << i
		}
	}
	return m
}

// commit is pass two: it copies the string fields into one allocation and
// builds the tag.
func (d *jsonDecoder) commit(f *tagFields) UserTag {
	total := 0
	for i := range f.str {
		total += f.str[i].n
	}
	var sb strings.Builder
	sb.Grow(total)
	var offs [numStrFields + 1]int
	for i := range f.str {
		sp := &f.str[i]
		raw := d.data[sp.start:sp.end]
		if sp.escaped {
			var tmp [128]byte
			sb.Write(appendUnescaped(tmp[:0], raw))
		} else {
			sb.Write(raw)
		}
		offs[i+1] = sb.Len()
	}
	s := sb.String()
	return UserTag{
		TimeMs:            f.timeMs,
		Cookie:            s[offs[sCookie]:offs[sCookie+1]],
		Country:           s[offs[sCountry]:offs[sCountry+1]],
		Device:            f.device,
		Action:            f.action,
		Origin:            s[offs[sOrigin]:offs[sOrigin+1]],
		ProductID:         s[offs[sProductID]:offs[sProductID+1]],
		ProductIDIsNumber: f.isNum,
		BrandID:           s[offs[sBrandID]:offs[sBrandID+1]],
		CategoryID:        s[offs[sCategoryID]:offs[sCategoryID+1]],
		Price:             f.price,
	}
}

// productInfo decodes the product_info object. A repeated product_info
// starts over: the last one wins whole.
func (d *jsonDecoder) productInfo(f *tagFields) error {
	d.skipWS()
	if d.peek() != '{' {
		return &FieldError{Field: "product_info", Err: errNotObject}
	}
	d.pos++
	f.seen = f.seen&^fProductFields | fProductInfo
	for first := true; ; first = false {
		key, more, err := d.nextKey(first)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
		switch string(key) {
		case "product_id":
			err = d.productID(f)
			f.seen |= fProductID
		case "brand_id":
			err = d.stringField("brand_id", &f.str[sBrandID])
			f.seen |= fBrandID
		case "category_id":
			err = d.stringField("category_id", &f.str[sCategoryID])
			f.seen |= fCategoryID
		case "price":
			f.price, err = d.price()
			f.seen |= fPrice
		default:
			err = d.skipValue(2)
		}
		if err != nil {
			return err
		}
	}
}

// nextKey moves to the next member of the object being read and returns
// its key, unescaped (a key that needs unescaping and is too long to be one
// of ours comes back as nil, which matches nothing). more is false at the
// object's closing brace. On return the cursor is at the member's value.
func (d *jsonDecoder) nextKey(first bool) (key []byte, more bool, err error) {
	d.skipWS()
	c := d.peek()
	if c == '}' {
		d.pos++
		return nil, false, nil
	}
	if !first {
		if c != ',' {
			return nil, false, d.unexpected()
		}
		d.pos++
		d.skipWS()
		c = d.peek()
	}
	if c != '"' {
		return nil, false, d.unexpected()
	}
	sp, err := d.scanString()
	if err != nil {
		return nil, false, d.syntaxError(err)
	}
	key = d.data[sp.start:sp.end]
	if sp.escaped {
		key = nil
		if sp.n <= len("product_info") {
			// Rare: an escaped key such as "\u0074ime". It is short, so the
			// copy is cheap; it escapes to the heap, which is fine here.
			key = appendUnescaped(make([]byte, 0, sp.n), d.data[sp.start:sp.end])
		}
	}
	d.skipWS()
	if d.peek() != ':' {
		return nil, false, d.unexpected()
	}
	d.pos++
	d.skipWS()
	return key, true, nil
}

// stringField reads a string value into sp.
func (d *jsonDecoder) stringField(field string, sp *span) error {
	if d.peek() != '"' {
		return &FieldError{Field: field, Err: errNotString}
	}
	s, err := d.scanString()
	if err != nil {
		return &FieldError{Field: field, Err: err}
	}
	*sp = s
	return nil
}

// stringContent reads a string value and returns its unescaped content,
// which aliases the input unless the string has escapes. For the short
// fields parsed in place (time, device, action).
func (d *jsonDecoder) stringContent(field string, tmp []byte) ([]byte, error) {
	var sp span
	if err := d.stringField(field, &sp); err != nil {
		return nil, err
	}
	raw := d.data[sp.start:sp.end]
	if !sp.escaped {
		return raw, nil
	}
	if sp.n > cap(tmp) {
		return nil, &FieldError{Field: field, Err: errTooLong}
	}
	return appendUnescaped(tmp[:0], raw), nil
}

func (d *jsonDecoder) timeField(f *tagFields) error {
	var tmp [48]byte
	b, err := d.stringContent("time", tmp[:])
	if err != nil {
		return err
	}
	ms, err := ParseTagTime(b)
	if err != nil {
		return &FieldError{Field: "time", Err: err}
	}
	f.timeMs = ms
	f.seen |= fTime
	return nil
}

// enumField reads field, "device" or "action", into f.
func (d *jsonDecoder) enumField(field string, f *tagFields) error {
	var tmp [16]byte
	b, err := d.stringContent(field, tmp[:])
	if err != nil {
		return err
	}
	switch field {
	case "device":
		switch string(b) {
		case "PC":
			f.device = PC
		case "MOBILE":
			f.device = Mobile
		case "TV":
			f.device = TV
		default:
			return &FieldError{Field: field, Err: errBadDevice}
		}
	default:
		switch string(b) {
		case "VIEW":
			f.action = View
		case "BUY":
			f.action = Buy
		default:
			return &FieldError{Field: field, Err: errBadAction}
		}
	}
	return nil
}

func (d *jsonDecoder) productID(f *tagFields) error {
	c := d.peek()
	switch {
	case c == '"':
		sp, err := d.scanString()
		if err != nil {
			return &FieldError{Field: "product_id", Err: err}
		}
		f.str[sProductID], f.isNum = sp, false
	case c == '-' || c-'0' <= 9:
		start := d.pos
		if _, err := d.scanNumber(); err != nil {
			return &FieldError{Field: "product_id", Err: err}
		}
		f.str[sProductID] = span{start: start, end: d.pos, n: d.pos - start}
		f.isNum = true
	default:
		return &FieldError{Field: "product_id", Err: errNotStrOrNum}
	}
	return nil
}

// price reads an integer literal within int32.
func (d *jsonDecoder) price() (int32, error) {
	c := d.peek()
	if c != '-' && c-'0' > 9 {
		return 0, &FieldError{Field: "price", Err: errNotNumber}
	}
	start := d.pos
	isInt, err := d.scanNumber()
	if err != nil {
		return 0, &FieldError{Field: "price", Err: err}
	}
	if !isInt {
		return 0, &FieldError{Field: "price", Err: errNotInteger}
	}
	lit := d.data[start:d.pos]
	neg := lit[0] == '-'
	if neg {
		lit = lit[1:]
	}
	// No leading zeros (the grammar forbids them), so more than 10 digits
	// is out of range and 10 digits fit in int64.
	if len(lit) > 10 {
		return 0, &FieldError{Field: "price", Err: errNotInt32}
	}
	var v int64
	for _, c := range lit {
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	if v < -1<<31 || v > 1<<31-1 {
		return 0, &FieldError{Field: "price", Err: errNotInt32}
	}
	return int32(v), nil
}

// scanNumber consumes a number at the cursor and reports whether it is an
// integer literal (no fraction, no exponent).
func (d *jsonDecoder) scanNumber() (isInt bool, err error) {
	end, isInt, ok := numberEnd(d.data, d.pos)
	if !ok {
		return false, errNumberGrammar
	}
	d.pos = end
	return isInt, nil
}

// numberEnd reads the number at s[i:] per the JSON grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? and returns where it ends
// and whether it is an integer literal; ok is false when there is none.
func numberEnd[S byteSeq](data S, i int) (end int, isInt, ok bool) {
	if i < len(data) && data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i]-'1' <= 8:
		for i < len(data) && data[i]-'0' <= 9 {
			i++
		}
	default:
		return 0, false, false
	}
	isInt = true
	if i < len(data) && data[i] == '.' {
		isInt = false
		i++
		if i >= len(data) || data[i]-'0' > 9 {
			return 0, false, false
		}
		for i < len(data) && data[i]-'0' <= 9 {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		isInt = false
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || data[i]-'0' > 9 {
			return 0, false, false
		}
		for i < len(data) && data[i]-'0' <= 9 {
			i++
		}
	}
	// A digit right after the literal ("012") is not a separator; the
	// caller's structural check would catch it too, but say "invalid number".
	if i < len(data) && data[i]-'0' <= 9 {
		return 0, false, false
	}
	return i, isInt, true
}

// plainStringByte marks bytes a JSON string may contain as they are: ASCII
// but not '"', '\\' or a control character.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString consumes a string (the cursor is at its opening quote),
// validating escapes and UTF-8, and returns where its content is.
func (d *jsonDecoder) scanString() (span, error) {
	data := d.data
	start := d.pos + 1
	i := start
	shrink := 0 // input bytes minus output bytes of the escapes seen
	escaped, nonASCII := false, false
	for {
		for i < len(data) && plainStringByte[data[i]] {
			i++
		}
		if i >= len(data) {
			return span{}, errUnterminated
		}
		switch c := data[i]; {
		case c == '"':
			d.pos = i + 1
			return span{start: start, end: i, escaped: escaped, nonASCII: nonASCII, n: i - start - shrink}, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(data) {
				return span{}, errUnterminated
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
				shrink++
			case 'u':
				r, ok := hex4(data, i+2)
				if !ok {
					return span{}, errBadEscape
				}
				i += 6
				if utf16.IsSurrogate(r) {
					r2, ok := rune(0), false
					if r < 0xDC00 && i+1 < len(data) && data[i] == '\\' && data[i+1] == 'u' {
						r2, ok = hex4(data, i+2)
					}
					if !ok || r2 < 0xDC00 || r2 > 0xDFFF {
						return span{}, errLoneSurrogate
					}
					i += 6
					shrink += 12 - 4
					continue
				}
				shrink += 6 - utf8.RuneLen(r)
			default:
				return span{}, errBadEscape
			}
		case c < 0x20:
			return span{}, errControlChar
		default: // c >= 0x80
			nonASCII = true
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return span{}, errInvalidUTF8
			}
			i += size
		}
	}
}

// hex4 reads four hex digits at b[i:i+4].
func hex4(b []byte, i int) (rune, bool) {
	if len(b)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c-'0' <= 9:
			c -= '0'
		case c-'a' <= 5:
			c -= 'a' - 10
		case c-'A' <= 5:
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// appendUnescaped appends the content of a string already validated by
// scanString, with its escapes resolved.
func appendUnescaped(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		if raw[i] != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			dst = append(dst, raw[i:j]...)
			i = j
			continue
		}
		c := raw[i+1]
		i += 2
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(raw, i)
			i += 4
			if utf16.IsSurrogate(r) {
				r2, _ := hex4(raw, i+2)
				r = utf16.DecodeRune(r, r2)
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
	}
	return dst
}

// skipValue consumes any JSON value, validating it; depth is the nesting
// level of the value's container.
func (d *jsonDecoder) skipValue(depth int) error {
	switch c := d.peek(); {
	case c == '"':
		if _, err := d.scanString(); err != nil {
			return d.syntaxError(err)
		}
	case c == '{':
		if depth >= maxSkipDepth {
			return d.syntaxError(errTooDeep)
		}
		d.pos++
		for first := true; ; first = false {
			_, more, err := d.nextKey(first)
			if err != nil {
				return err
			}
			if !more {
				break
			}
			if err := d.skipValue(depth + 1); err != nil {
				return err
			}
		}
	case c == '[':
		if depth >= maxSkipDepth {
			return d.syntaxError(errTooDeep)
		}
		d.pos++
		d.skipWS()
		if d.peek() == ']' {
			d.pos++
			return nil
		}
		for {
			d.skipWS()
			if err := d.skipValue(depth + 1); err != nil {
				return err
			}
			d.skipWS()
			switch d.peek() {
			case ',':
				d.pos++
			case ']':
				d.pos++
				return nil
			default:
				return d.unexpected()
			}
		}
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || c-'0' <= 9:
		if _, err := d.scanNumber(); err != nil {
			return d.syntaxError(err)
		}
	default:
		return d.unexpected()
	}
	return nil
}

func (d *jsonDecoder) literal(lit string) error {
	if len(d.data)-d.pos < len(lit) || string(d.data[d.pos:d.pos+len(lit)]) != lit {
		return d.unexpected()
	}
	d.pos += len(lit)
	return nil
}

func (d *jsonDecoder) skipWS() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek is the byte at the cursor, or 0 at the end (0 is never valid there).
func (d *jsonDecoder) peek() byte {
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

// unexpected reports the byte at the cursor as a syntax error.
func (d *jsonDecoder) unexpected() error {
	if d.pos >= len(d.data) {
		return d.syntaxError(errUnexpectedEnd)
	}
	return fmt.Errorf("invalid JSON at offset %d: unexpected %q", d.pos, d.data[d.pos])
}

func (d *jsonDecoder) syntaxError(err error) error {
	return fmt.Errorf("invalid JSON at offset %d: %w", d.pos, err)
}

// AppendUserTagJSON appends t as compact JSON in SPEC.md's field order:
// {"time":..,"cookie":..,"country":..,"device":..,"action":..,"origin":..,
// "product_info":{"product_id":..,"brand_id":..,"category_id":..,"price":..}}.
// product_id is written as a string, or as its number literal when
// ProductIDIsNumber (which DecodeUserTag only sets for a valid literal).
func AppendUserTagJSON(dst []byte, t *UserTag) []byte {
	dst = append(dst, `{"time":"`...)
	dst = AppendTagTime(dst, t.TimeMs)
	dst = append(dst, `","cookie":`...)
	dst = AppendJSONString(dst, t.Cookie)
	dst = append(dst, `,"country":`...)
	dst = AppendJSONString(dst, t.Country)
	dst = append(dst, `,"device":"`...)
	dst = append(dst, t.Device.String()...)
	dst = append(dst, `","action":"`...)
	dst = append(dst, t.Action.String()...)
	dst = append(dst, `","origin":`...)
	dst = AppendJSONString(dst, t.Origin)
	dst = append(dst, `,"product_info":{"product_id":`...)
	if t.ProductIDIsNumber {
		dst = append(dst, t.ProductID...)
	} else {
		dst = AppendJSONString(dst, t.ProductID)
	}
	dst = append(dst, `,"brand_id":`...)
	dst = AppendJSONString(dst, t.BrandID)
	dst = append(dst, `,"category_id":`...)
	dst = AppendJSONString(dst, t.CategoryID)
	dst = append(dst, `,"price":`...)
	dst = strconv.AppendInt(dst, int64(t.Price), 10)
	return append(dst, "}}"...)
}

// AppendJSONString appends s as a JSON string, escaping only what JSON
// requires: '"', '\\' and control characters (as \n \r \t \b \f, else
// \u00XX). Valid UTF-8 passes through unchanged (no HTML escaping); an
// invalid byte, which no decoded tag contains, becomes \ufffd so the output
// is always valid JSON.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plainStringByte[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"
