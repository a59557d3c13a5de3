package publish

import (
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

// States of a pending message; the waiting Publish and the drain goroutine
// race to move it out of stateWaiting, and the winner decides who recycles
// it.
const (
	stateWaiting   uint32 = iota
	stateDone             // drain posted the result; Publish recycles
	stateAbandoned        // Publish gave up; drain recycles on the result
)

// maxPooledBuf keeps an occasional huge message from pinning its buffer in
// the pool.
const maxPooledBuf = 64 << 10

// pending is one message on its way to the broker and the means to report
// its result. It is pooled: an acknowledged Publish allocates nothing in the
// steady state (the message, its copy of key and value, the result channel
// and the timer are all reused).
type pending struct {
	// msg is reused only after an ack: sarama may still read a message it
	// returned with an error (it backs off by msg.retries after handing it
	// back), so complete drops the message of a failure.
	msg    *sarama.ProducerMessage
	key    bytesEncoder
	value  bytesEncoder
	buf    []byte
	state  atomic.Uint32
	result chan error
	timer  *time.Timer
	gen    *generation // the producer it was handed to
}

func newPending() *pending {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &pending{result: make(chan error, 1), timer: t}
}

// fill prepares the message, copying key and value into the pending's own
// buffer: sarama reads them when it builds a request, possibly again on a
// retry, and possibly after a timed-out Publish returned.
func (pm *pending) fill(topic string, key, value []byte) {
	pm.buf = append(append(pm.buf[:0], key...), value...)
	pm.key.b = pm.buf[:len(key):len(key)]
	pm.value.b = pm.buf[len(key):]
	pm.state.Store(stateWaiting)
	// Assigning a fresh struct also clears sarama's unexported
	// per-attempt fields (retries, sequence number, flags).
	if pm.msg == nil {
		pm.msg = new(sarama.ProducerMessage)
	}
	*pm.msg = sarama.ProducerMessage{Topic: topic, Metadata: pm}
	if key != nil {
		pm.msg.Key = &pm.key
	}
	if value != nil {
		pm.msg.Value = &pm.value
	}
}

func (p *Publisher) getPending() *pending { return p.pending.Get().(*pending) }

func (p *Publisher) putPending(pm *pending) {
	if cap(pm.buf) > maxPooledBuf {
		return
	}
	pm.gen = nil
	p.pending.Put(pm)
}

// bytesEncoder is sarama.ByteEncoder behind a pointer: a pointer to a
// pooled field converts to the sarama.Encoder interface without allocating,
// a []byte does not.
type bytesEncoder struct{ b []byte }

func (e *bytesEncoder) Encode() ([]byte, error) { return e.b, nil }
func (e *bytesEncoder) Length() int             { return len(e.b) }
