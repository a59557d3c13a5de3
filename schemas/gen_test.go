package schemas

import (
	"math/rand/v2"
	"strings"
)

// Generators of valid but awkward tags, shared by the cross-check tests of
// the JSON and Avro formats. Deterministic per seed.

// awkwardRunes are characters that exercise escaping and UTF-8 handling:
// quotes, backslashes, control characters, multi-byte and astral runes,
// U+2028 (escaped by HTML-safe encoders, not by ours) and U+FFFD itself.
// U+0000 is left out: DecodeUserTag rejects it in stored fields.
var awkwardRunes = []rune{'"', '\\', '/', '\n', '\r', '\t', '\b', '\f', 0x1f, 0x7f, 'é', '€', '𝄞', '😀', 0x2028, 0xFFFD, '<', '&'}

func genString(r *rand.Rand, minLen int) string {
	n := minLen + r.IntN(12)
	var sb strings.Builder
	for range n {
		if r.IntN(4) == 0 {
			sb.WriteRune(awkwardRunes[r.IntN(len(awkwardRunes))])
		} else {
			sb.WriteByte(byte('a' + r.IntN(26)))
		}
	}
	return sb.String()
}

// genNumberLiteral is a random valid JSON number literal.
func genNumberLiteral(r *rand.Rand) string {
	var sb strings.Builder
	if r.IntN(3) == 0 {
		sb.WriteByte('-')
	}
	if r.IntN(4) == 0 {
		sb.WriteByte('0')
	} else {
		sb.WriteByte(byte('1' + r.IntN(9)))
		for range r.IntN(25) {
			sb.WriteByte(byte('0' + r.IntN(10)))
		}
	}
	if r.IntN(3) == 0 {
		sb.WriteByte('.')
		for range 1 + r.IntN(5) {
			sb.WriteByte(byte('0' + r.IntN(10)))
		}
	}
	if r.IntN(3) == 0 {
		sb.WriteByte("eE"[r.IntN(2)])
		if s := r.IntN(3); s > 0 {
			sb.WriteByte("+-"[s-1])
		}
		for range 1 + r.IntN(3) {
			sb.WriteByte(byte('0' + r.IntN(10)))
		}
	}
	return sb.String()
}

func genTimeMs(r *rand.Rand) int64 {
	switch r.IntN(4) {
	case 0: // anywhere in 0000..9999
		return MinTagTimeMs + r.Int64N(MaxTagTimeMs-MinTagTimeMs+1)
	case 1: // around the epoch, both sides
		return r.Int64N(4e11) - 2e11
	default: // the replay's era
		return 1646092800000 + r.Int64N(1e10)
	}
}

func genPrice(r *rand.Rand) int32 {
	switch r.IntN(5) {
	case 0:
		return [...]int32{-1 << 31, 1<<31 - 1, 0, -1, 1}[r.IntN(5)]
	case 1:
		return int32(r.Uint32())
	default:
		return int32(r.IntN(100000))
	}
}

func genTag(r *rand.Rand) UserTag {
	t := UserTag{
		TimeMs:     genTimeMs(r),
		Cookie:     genString(r, 1),
		Country:    genString(r, 0),
		Device:     Device(r.IntN(numDevices)),
		Action:     Action(r.IntN(NumActions)),
		Origin:     genString(r, 0),
		BrandID:    genString(r, 0),
		CategoryID: genString(r, 0),
		Price:      genPrice(r),
	}
	if r.IntN(3) == 0 {
		t.ProductID, t.ProductIDIsNumber = genNumberLiteral(r), true
	} else {
		t.ProductID = genString(r, 0)
	}
	return t
}
