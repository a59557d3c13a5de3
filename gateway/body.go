package gateway

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/valyala/fasthttp"
)

// Request bodies are streamed (fasthttp's StreamRequestBody): the gateway
// reads each one as it arrives and never reserves what Content-Length
// announces, so a client that announces 4 MiB and sends one byte costs a
// few KiB, not 4 MiB (docs/operations.md "What bounds memory under
// overload").

// errBodyTooLarge is a body over its route's limit: announced by its
// Content-Length, or crossed while a chunked body was read.
var errBodyTooLarge = errors.New("request body too large")

// maxPooledBody is the largest body buffer put back in the pool; a larger
// one, from a rare big body, is left to the GC.
const maxPooledBody = 16 << 10

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// keepsBody reports whether rt's handler needs the body's bytes: a tag's
// always, a query's (its expected answer) only in a debug build.
func keepsBody(rt route) bool {
	return rt == routeUserTags || (DebugBuild && (rt == routeUserProfiles || rt == routeAggregates))
}

// bodyLimit is rt's largest body.
func (s *Server) bodyLimit(rt route) int {
	if rt == routeUserTags {
		return s.cfg.MaxTagBytes
	}
	return s.cfg.MaxQueryBytes
}

// readBody appends the request body to dst when keep is set, or discards
// it, reading it as it arrives in either case; it fails with
// errBodyTooLarge past limit and with the connection's error (a timeout
// once ReadTimeout has passed) when the client stops short.
func readBody(ctx *fasthttp.RequestCtx, dst []byte, limit int, keep bool) ([]byte, error) {
	stream := ctx.RequestBodyStream()
	if stream == nil { // a request built in memory, or none
		body := ctx.Request.Body()
		if len(body) > limit {
			return dst, errBodyTooLarge
		}
		if keep {
			dst = append(dst, body...)
		}
		return dst, nil
	}
	announced := ctx.Request.Header.ContentLength() // -1: chunked
	if announced > limit {
		return dst, errBodyTooLarge
	}
	if !keep {
		// io.Discard reads in chunks of 8 KiB from a pool of its own.
		n, err := io.Copy(io.Discard, io.LimitReader(stream, int64(limit)+1))
		if err == nil && n > int64(limit) {
			err = errBodyTooLarge
		}
		return dst, err
	}
	return appendStream(dst, stream, limit)
}

// appendStream reads r to its end into dst, growing dst only as bytes
// arrive (doubling, at most to limit+1, which tells a body over limit).
func appendStream(dst []byte, r io.Reader, limit int) ([]byte, error) {
	start := len(dst)
	for {
		if len(dst) == cap(dst) {
			if len(dst)-start > limit {
				return dst, errBodyTooLarge
			}
			grown := make([]byte, len(dst), min(max(2*cap(dst), 512), start+limit+1))
			copy(grown, dst)
			dst = grown
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if errors.Is(err, io.EOF) {
			if len(dst)-start > limit {
				return dst, errBodyTooLarge
			}
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// bodyError answers a body that could not be read: too large is a 400 for
// a tag (SPEC §1) and for any chunked body (as fasthttp answered those
// before bodies were streamed), a 413 otherwise; a client slower than
// ReadTimeout gets 408; a body cut short or malformed 400. fasthttp closes
// the connection after a failed read or with much of a body left unread.
func bodyError(ctx *fasthttp.RequestCtx, rt route, err error) {
	var netErr net.Error
	switch {
	case errors.Is(err, errBodyTooLarge) && (rt == routeUserTags || ctx.Request.Header.ContentLength() < 0):
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
	case errors.Is(err, errBodyTooLarge):
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, err.Error())
	case errors.As(err, &netErr) && netErr.Timeout():
		writeError(ctx, fasthttp.StatusRequestTimeout, "request not received in time")
	default:
		writeError(ctx, fasthttp.StatusBadRequest, "malformed request body")
	}
}
