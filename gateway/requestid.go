package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

const headerRequestID = "X-Request-ID"

// maxRequestIDLen bounds a client's id: it goes into every log line.
const maxRequestIDLen = 128

var (
	// idPrefix makes generated ids unique across processes and restarts;
	// the counter makes them unique within one, without a random read per
	// request.
	idPrefix  = newIDPrefix()
	idCounter atomic.Uint64
)

func newIDPrefix() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "allezon"
	}
	return hex.EncodeToString(b[:])
}

// requestID takes the client's X-Request-ID or makes one, and echoes it in
// the response so a caller can find its request in the logs.
func requestID(ctx *fasthttp.RequestCtx) string {
	id := ctx.Request.Header.Peek(headerRequestID)
	var rid string
	if len(id) > 0 && len(id) <= maxRequestIDLen && printable(id) {
		rid = string(id)
	} else {
		rid = idPrefix + "-" + strconv.FormatUint(idCounter.Add(1), 36)
	}
	ctx.Response.Header.Set(headerRequestID, rid)
	return rid
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}
