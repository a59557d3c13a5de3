package gateway

import (
	"errors"
	"strconv"
	"time"

	"github.com/allezon/allezon/gateway/breaker"
	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

const contentTypeJSON = "application/json"

// writeError answers {"error": msg} with the status. Every 4xx and 5xx the
// gateway sends goes through here, so clients can rely on the shape.
func writeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType(contentTypeJSON)
	if status == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
	}
	buf := make([]byte, 0, len(msg)+16)
	buf = append(buf, `{"error":`...)
	buf = schemas.AppendJSONString(buf, msg)
	buf = append(buf, '}')
	ctx.SetBody(buf)
}

// writeUnavailable answers 503 for a backend call that failed (err): with
// Retry-After: 1, or, when a circuit breaker refused the call, the seconds
// left of its cool-down (at least 1).
func writeUnavailable(ctx *fasthttp.RequestCtx, err error, msg string) {
	writeError(ctx, fasthttp.StatusServiceUnavailable, msg)
	var open *breaker.OpenError
	if errors.As(err, &open) {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(retryAfterSeconds(open.RetryAfter)))
	}
}

// retryAfterSeconds rounds d up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// writeJSON answers 200 with a JSON body.
func writeJSON(ctx *fasthttp.RequestCtx, body []byte) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(body)
}
