// Command limit is "the limit" of the benchmarks: a bare fasthttp server
// that answers 204 to POST /user_tags without reading the body. Loaded the
// same way as the gateway, it measures what HTTP alone costs on this
// machine, so the gateway's ingest rate can be read as a share of it.
//
// Its fasthttp.Server settings are the gateway's (gateway/server.go, with
// the defaults cmd/allezon gives it): a difference there would make the
// ratio measure configuration rather than the product's own work.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The gateway's defaults (gateway.Config.setDefaults and cmd/allezon's
// flags of the same names).
const (
	readTimeout    = 10 * time.Second
	writeTimeout   = 10 * time.Second
	idleTimeout    = 60 * time.Second
	maxTagBytes    = 64 << 10
	maxQueryBytes  = 4 << 20
	maxHeaderBytes = 8 << 10
	maxConns       = 4096
)

func main() {
	addr := flag.String("http", "127.0.0.1:8088", "listen address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := serve(*addr, log); err != nil {
		log.Error("limit server", "err", err)
		os.Exit(1)
	}
}

// serve answers until SIGINT or SIGTERM, then shuts down gracefully.
func serve(addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := newServer()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("limit server listening", "addr", ln.Addr().String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-sig:
	}
	return srv.Shutdown()
}

// newServer is the gateway's fasthttp.Server with a handler that does no
// work at all.
func newServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      handle,
		Name:                         "allezon",
		ReadTimeout:                  readTimeout,
		WriteTimeout:                 writeTimeout,
		IdleTimeout:                  idleTimeout,
		ReadBufferSize:               maxHeaderBytes,
		MaxRequestBodySize:           max(maxTagBytes, maxQueryBytes),
		HeaderReceived:               requestLimits,
		Concurrency:                  maxConns,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		Logger:                       quietLogger{},
	}
}

// requestLimits is the gateway's: POST /user_tags gets the smaller body
// limit before its body is read.
func requestLimits(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	const path = "/user_tags"
	if uri := h.RequestURI(); bytes.HasPrefix(uri, []byte(path)) && (len(uri) == len(path) || uri[len(path)] == '?') {
		return fasthttp.RequestConfig{MaxRequestBodySize: maxTagBytes}
	}
	return fasthttp.RequestConfig{}
}

// handle routes as the gateway does, on the raw path, but neither parses
// nor stores the tag.
func handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Request.URI().PathOriginal()) == "/user_tags" && ctx.IsPost() {
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNotFound)
}

// quietLogger drops fasthttp's own messages, as the gateway logs them at
// debug level only.
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}
