package gateway

import (
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

// writeJSON answers 200 with a JSON body.
func writeJSON(ctx *fasthttp.RequestCtx, body []byte) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(body)
}
