package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/allezon/allezon/gateway"
	"github.com/valyala/fasthttp/fasthttputil"
)

// BenchmarkTagHandlerPath measures POST /user_tags through the real
// fasthttp server (request reading included) on one keep-alive connection
// over an in-memory listener, with backends that do nothing: the cost of
// the HTTP path alone, not of the stores.
func BenchmarkTagHandlerPath(b *testing.B) {
	_, backends := newFakes()
	srv := gateway.New(gateway.Config{Logger: quietLog()}, backends)
	ln := fasthttputil.NewInmemoryListener()
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown(context.Background()); ln.Close() })
	c, err := ln.Dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := tagJSON("bench-cookie")
	req := fmt.Appendf(nil, "POST /user_tags HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	r := bufio.NewReader(c)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if err := readNoContent(r); err != nil {
			b.Fatal(err)
		}
	}
}

// readNoContent reads one bodiless answer's head and checks it is a 204.
func readNoContent(r *bufio.Reader) error {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 204 ")) {
		return fmt.Errorf("answer %q", line)
	}
	for {
		line, err = r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
	}
}
