package gateway

import (
	"bytes"
	"errors"
	"testing"
	"testing/iotest"
)

// TestAppendStream: a body is read to its end whatever its chunks, a body
// over the limit is refused, and the buffer grows only with the bytes that
// arrived (at most doubling), never to what a client announced.
func TestAppendStream(t *testing.T) {
	const limit = 5000
	for _, tt := range []struct {
		name string
		size int
		err  error
	}{
		{"empty", 0, nil},
		{"one byte", 1, nil},
		{"a tag's size", 400, nil},
		{"at the limit", limit, nil},
		{"one byte over", limit + 1, errBodyTooLarge},
		{"far over", 3 * limit, errBodyTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := bytes.Repeat([]byte("x"), tt.size)
			// One byte per Read, as a slow client sends it.
			got, err := appendStream(make([]byte, 0, 16), iotest.OneByteReader(bytes.NewReader(body)), limit)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err == nil && !bytes.Equal(got, body) {
				t.Fatalf("read %d bytes, want %d", len(got), len(body))
			}
			if cap(got) > max(512, 2*len(got)) || cap(got) > limit+1 {
				t.Fatalf("buffer of %d bytes for %d received (limit %d)", cap(got), len(got), limit)
			}
		})
	}
}

// TestAppendStreamKeepsPrefix: the body goes after what dst already holds.
func TestAppendStreamKeepsPrefix(t *testing.T) {
	got, err := appendStream([]byte("ab"), bytes.NewReader([]byte("cd")), 2)
	if err != nil || string(got) != "abcd" {
		t.Fatalf("%q %v, want abcd", got, err)
	}
}
