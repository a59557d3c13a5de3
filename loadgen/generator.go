package loadgen

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/allezon/allezon/schemas"
)

// DefaultStart is the event time of the first tag when Config.Start is
// zero: the instant SPEC.md's examples use, on a whole minute so that
// event minutes and tag indices line up (minute k holds tags
// 60000k..60000k+59999).
var DefaultStart = time.Date(2022, 3, 22, 12, 0, 0, 0, time.UTC)

// Shape of the generated stream (SPEC.md, "Data").
const (
	// CookiePopulation is the number of ordinary cookies.
	CookiePopulation = 1_000_000
	// hotCookies is the size of the hot set: cookie indices 0..hotCookies-1
	// of the population, drawn with a Zipf law.
	hotCookies = 1000
	// hotShare is the share of tags that go to the hot set; the rest pick
	// uniformly from the whole population. With s = 1.1 the hottest cookie
	// gets ~4.5 % of all tags, so at 1,000 tags/s a handful of cookies pass
	// 200 VIEWs (and the top two 200 BUYs) within a minute, which exercises
	// the per-cookie trimming, while a minute still holds ~45,000 distinct
	// cookies.
	hotShare = 0.25
	hotZipfS = 1.1
	// oddShare is the share of tags that go to the unusual cookies.
	oddShare = 0.004
	// buyOneIn makes BUY the rarer action.
	buyOneIn = 5
)

// oddCookies are valid but unusual cookies: non-ASCII, URL-reserved
// characters and JSON escapes. In a /user_profiles path they must be
// percent-encoded and the server must decode them back.
var oddCookies = [...]string{
	"ünïcødé-çøøkié",
	"slash/in/cookie",
	"100%-percent",
	"plus+sign",
	"with space",
	"日本語クッキー",
	"emoji-🍪",
	"query?and#hash&x=1",
	`quote"back\slash`,
}

// Value tables: fixed for every seed, so two runs share their dimensions.
var (
	countries  = makeCountries()
	origins    = makeNames("origin-", 1000)
	brands     = makeNames("brand-", 250)
	categories = makeNames("cat-", 67)
	devices    = [...]schemas.Device{schemas.PC, schemas.PC, schemas.Mobile, schemas.Mobile, schemas.Mobile, schemas.TV}
)

func makeNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}

// makeCountries returns 100 two-letter codes: real ISO 3166 codes, so
// the data looks like the lab's.
func makeCountries() []string {
	const codes = "PLDEFRGBUSESITNLBESECHATCZSKHUROBGGRPTIEDKNOFIEELTLVUAMDBYRUTRILEGMAZADZTNNGKECNJPKRINIDTHVNPHMYSGAUNZCAMXBRARCLCOPEVEUYPYBOECISLUMTCYSIHRBARSMEMKALGEAMAZKZUZPKBDLKNPIRIQSAAEQAKWOMJOLBSYYEAFMNKHLAMLNE"
	out := make([]string, 0, len(codes)/2)
	for i := 0; i+1 < len(codes); i += 2 {
		out = append(out, codes[i:i+2])
	}
	return out
}

// Generator produces the replayed stream: Tag(i) is a pure function of the
// seed, the start instant and i, so any tag can be re-created at any time
// (the model stores indices, not tags) and a retried tag has exactly the
// content of its first attempt. A Generator is not safe for concurrent use;
// give each goroutine its own (they are cheap).
type Generator struct {
	seed    uint64
	startMs int64
	src     rand.PCG
	rng     *rand.Rand
	hot     *rand.Zipf
}

// NewGenerator returns the generator for seed whose tag 0 has event time
// start (truncated to the millisecond).
func NewGenerator(seed int64, start time.Time) *Generator {
	g := &Generator{seed: uint64(seed), startMs: start.UnixMilli()}
	g.rng = rand.New(&g.src)
	g.hot = rand.NewZipf(g.rng, hotZipfS, 1, hotCookies-1)
	return g
}

// StartMs is the event time of tag 0, in ms since the Unix epoch.
func (g *Generator) StartMs() int64 { return g.startMs }

// TimeOf is the event time of tag i: exactly 1 ms per tag (SPEC.md).
func (g *Generator) TimeOf(i int64) int64 { return g.startMs + i }

// IndexAt is the index of the tag with event time ms (it may be negative
// or beyond the end of the run).
func (g *Generator) IndexAt(ms int64) int64 { return ms - g.startMs }

// splitmix64 is a strong 64-bit mixer; it turns (seed, i) into
// uncorrelated PCG states.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// Tag returns tag i of the stream.
func (g *Generator) Tag(i int64) schemas.UserTag {
	g.src.Seed(splitmix64(g.seed^0x5bd1e995), splitmix64(g.seed+uint64(i)*0x9e3779b97f4a7c15))
	r := g.rng
	t := schemas.UserTag{TimeMs: g.TimeOf(i)}
	switch p := r.Float64(); {
	case p < oddShare:
		t.Cookie = oddCookies[r.IntN(len(oddCookies))]
	case p < oddShare+hotShare:
		t.Cookie = g.cookie(g.hot.Uint64())
	default:
		t.Cookie = g.cookie(r.Uint64N(CookiePopulation))
	}
	t.Country = countries[r.IntN(len(countries))]
	t.Device = devices[r.IntN(len(devices))]
	if r.IntN(buyOneIn) == 0 {
		t.Action = schemas.Buy
	}
	t.Origin = origins[r.IntN(len(origins))]
	t.BrandID = brands[r.IntN(len(brands))]
	t.CategoryID = categories[r.IntN(len(categories))]
	t.ProductID, t.ProductIDIsNumber = productID(r)
	t.Price = price(r)
	return t
}

// cookie is the name of population member u: 16 hex digits derived from
// the seed, so different seeds have different (but equally shaped)
// populations.
func (g *Generator) cookie(u uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], splitmix64(g.seed*0xff51afd7ed558ccd^u))
	return hex.EncodeToString(b[:])
}

// oddNumbers are valid JSON number literals that are not plain integers;
// the server must give each back exactly as it came.
var oddNumbers = [...]string{"0", "-7", "12.50", "1.5e3", "2E-2", "-0.0"}

// productID is mostly a string, sometimes an integer literal and rarely an
// unusual number literal.
func productID(r *rand.Rand) (string, bool) {
	var buf [16]byte
	switch p := r.IntN(100); {
	case p < 85:
		// "P" and 7 digits, zero-padded.
		b := strconv.AppendInt(append(buf[:0], "P0000000"...), int64(r.IntN(10_000_000)), 10)
		return string(append(b[:1], b[len(b)-7:]...)), false
	case p < 99:
		return string(strconv.AppendInt(buf[:0], int64(1+r.IntN(9_999_999)), 10)), true
	default:
		return oddNumbers[r.IntN(len(oddNumbers))], true
	}
}

// price is mostly below 10,000, sometimes up to a million, and in 1 % of
// tags near the top of int32, so a minute's sums overflow 32 bits.
func price(r *rand.Rand) int32 {
	switch p := r.IntN(100); {
	case p < 2:
		return 0
	case p < 95:
		return int32(1 + r.IntN(9999))
	case p < 99:
		return int32(10_000 + r.IntN(990_000))
	default:
		return int32(1<<31 - 1 - r.IntN(1<<28))
	}
}
