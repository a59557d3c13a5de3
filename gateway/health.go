package gateway

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/allezon/allezon/gateway/breaker"
	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

// healthTimeout bounds each backend's ping, so /health answers fast even
// when a backend hangs.
const healthTimeout = time.Second

// health handles GET /health: {"status":"ok|degraded","backends":{name:"ok"|error}},
// 200 when every backend answers and 503 otherwise. A backend whose
// circuit breaker is open is not ok either, whatever its ping says: the
// gateway refuses its calls until the cool-down ends.
func (s *Server) health(ctx *fasthttp.RequestCtx) {
	names := make([]string, 0, len(s.b.Health))
	for n := range s.b.Health {
		names = append(names, n)
	}
	sort.Strings(names)
	results := pingAll(s.b.Health, names)
	for i, n := range names {
		if bb := s.breakers.byName(n); bb != nil && bb.State() == breaker.Open {
			results[i] = breakerOpenError{ping: results[i]}
		}
	}

	status, code := "ok", fasthttp.StatusOK
	for _, err := range results {
		if err != nil {
			status, code = "degraded", fasthttp.StatusServiceUnavailable
		}
	}
	body := append(make([]byte, 0, 128), `{"status":"`...)
	body = append(body, status...)
	body = append(body, `","backends":{`...)
	for i, n := range names {
		if i > 0 {
			body = append(body, ',')
		}
		body = schemas.AppendJSONString(body, n)
		body = append(body, ':')
		if results[i] == nil {
			body = append(body, `"ok"`...)
		} else {
			body = schemas.AppendJSONString(body, results[i].Error())
		}
	}
	body = append(body, "}}"...)
	ctx.SetStatusCode(code)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(body)
}

func pingAll(pingers map[string]Pinger, names []string) []error {
	ctx, cancel := context.WithTimeout(context.Background(), healthTimeout)
	defer cancel()
	results := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = pingers[n].Ping(ctx)
		}()
	}
	wg.Wait()
	return results
}

// breakerOpenError is how /health reports a backend whose breaker is open,
// with its ping's error when the ping failed too.
type breakerOpenError struct{ ping error }

func (e breakerOpenError) Error() string {
	if e.ping == nil {
		return "circuit breaker open"
	}
	return "circuit breaker open; ping: " + e.ping.Error()
}
