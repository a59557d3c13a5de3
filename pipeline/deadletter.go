package pipeline

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
)

// Dead-letter reasons: the values of the allezon-dlq-reason header and of
// the "reason" label of allezon_pipeline_dead_letters_total.
const (
	reasonDecode  = "decode"  // the value is not a valid event
	reasonFuture  = "future"  // the tag's time lies more than MaxFuture after the record's timestamp
	reasonRefused = "refused" // the aggregates store refused the event's sums as data (aggregates.ErrData)
)

// Headers of a dead letter. Its key and value are the source record's own
// (a value over maxDeadLetterValue is cut, see HeaderValueBytes).
const (
	HeaderReason    = "allezon-dlq-reason"    // decode, future or refused
	HeaderError     = "allezon-dlq-error"     // the error, as text
	HeaderTopic     = "allezon-dlq-topic"     // source topic
	HeaderPartition = "allezon-dlq-partition" // source partition, decimal
	HeaderOffset    = "allezon-dlq-offset"    // source offset, decimal
	HeaderTimestamp = "allezon-dlq-timestamp" // source record's timestamp, Unix ms
	// HeaderValueBytes is set only when the value was cut: its full length.
	HeaderValueBytes = "allezon-dlq-value-bytes"
)

const (
	// maxDeadLetterValue keeps a dead letter, headers included, under the
	// producer's and Kafka's default 1 MB message limit, whatever size the
	// broker accepted on the events topic: a dead letter that cannot be
	// written would stall the partition it was meant to free.
	maxDeadLetterValue = 512 << 10
	maxDeadLetterError = 1 << 10
	// maxPendingDeadLetters makes a claim flush early, so a flood of
	// poison events never piles up in memory between two flushes.
	maxPendingDeadLetters = 256
)

// errDeadLetter wraps a failed write to the dead-letter topic: an outage,
// retried as one.
var errDeadLetter = errors.New("dead letters not acknowledged")

// deadLetterSender is what the worker needs of a Kafka producer: sarama's
// SyncProducer, whose SendMessages returns once the broker acknowledged
// every message.
type deadLetterSender interface {
	SendMessages(msgs []*sarama.ProducerMessage) error
}

// deadLetter is an event on its way to the dead-letter topic.
type deadLetter struct {
	msg    *sarama.ConsumerMessage
	reason string
	err    error
}

// isolation is how a partition moves past an event the store refuses as
// data (aggregates.ErrData). A flush commits the sums of many events, so a
// refused commit does not say which event is the poison. The claim then
// ends without committing, as after any failed commit, and the worker
// remembers until, the end of the refused batch. The partition's next claim
// re-reads from the stored offset and, below until, commits one event at a
// time (sums and Prev→Next offsets of that one event, the same
// compare-and-set as always). An event whose own commit is refused as data
// is the poison: it goes to the dead-letter topic and, once the broker
// acknowledged it, its offset is committed alone, without its sums. Every
// other event of the batch is committed, once, by its own commit. Past
// until the claim batches again. Any other error still ends the claim and
// retries with backoff (an outage); the isolation is kept for the retry.
// Events are re-read in order, so a batch holding several poison events
// sends each to the dead-letter topic. A worker that takes the partition
// over without the memory finds the refusal itself and isolates likewise.
type isolation struct {
	// until is the offset below which events are committed one at a time;
	// 0: none.
	until int64
}

// active reports whether the claim commits event by event at offset next.
func (i isolation) active(next int64) bool { return next < i.until }

// partitionState is what the worker remembers of a partition across its
// claims: a claim ends at every failed commit, and the next one goes on.
type partitionState struct {
	owned bool
	// stored is the last stored offset the worker knows of (-1: none).
	stored int64
	iso    isolation
	// sent holds the offsets whose dead letters the broker acknowledged
	// and whose commit has not landed yet: a re-read after a failed
	// commit neither sends nor logs them again.
	sent map[int64]struct{}
	// lostUpTo is the offset up to which lost events were reported.
	lostUpTo int64
}

// part returns p's state; w.mu must be held.
func (w *worker) part(p int32) *partitionState {
	s := w.parts[p]
	if s == nil {
		s = &partitionState{stored: -1}
		w.parts[p] = s
	}
	return s
}

// owning records the partitions of a new session: a partition that moved
// away stops being reported (its new owner reports it); one taken over
// starts its "last flush" clock now. Partitions kept across sessions, as in
// a commit-retry loop, keep their lag and their clock.
func (w *worker) owning(parts []int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	keep := make(map[int32]bool, len(parts))
	for _, p := range parts {
		keep[p] = true
		if s := w.part(p); !s.owned {
			s.owned = true
			setNow(lastFlush.WithLabelValues(w.cfg.Topic, partLabel(p)))
		}
	}
	for p, s := range w.parts {
		if s.owned && !keep[p] {
			s.owned = false
			consumerLag.DeleteLabelValues(w.cfg.Topic, partLabel(p))
			lastFlush.DeleteLabelValues(w.cfg.Topic, partLabel(p))
		}
	}
}

// flushed records a successful commit of p up to next: the dead letters
// below next are settled, and an isolation that next reached is over.
func (w *worker) flushed(p int32, next int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.part(p)
	s.stored = next
	for o := range s.sent {
		if o < next {
			delete(s.sent, o)
		}
	}
	if s.iso.until != 0 && next >= s.iso.until {
		s.iso = isolation{}
	}
	setNow(lastFlush.WithLabelValues(w.cfg.Topic, partLabel(p)))
}

// upToDate records that p's claim has committed everything up to the high
// watermark.
func (w *worker) upToDate(p int32) {
	setNow(lastFlush.WithLabelValues(w.cfg.Topic, partLabel(p)))
}

func setNow(g prometheus.Gauge) { g.Set(float64(time.Now().UnixNano()) / 1e9) }

// isolate makes p's next claims commit event by event below until.
func (w *worker) isolate(p int32, until int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.part(p)
	s.iso.until = max(s.iso.until, until)
}

// isolationFrom is the isolation a claim of p starting at next must apply.
func (w *worker) isolationFrom(p int32, next int64) isolation {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.part(p)
	if !s.iso.active(next) {
		s.iso = isolation{}
	}
	return s.iso
}

// sentBefore reports whether p's event at offset was dead-lettered already
// by this worker, its commit still pending.
func (w *worker) sentBefore(p int32, offset int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.part(p).sent[offset]
	return ok
}

func (w *worker) markSent(p int32, dead []deadLetter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.part(p)
	if s.sent == nil {
		s.sent = make(map[int64]struct{}, len(dead))
	}
	for _, d := range dead {
		s.sent[d.msg.Offset] = struct{}{}
	}
}

// lost returns how many of p's events in [stored, oldest) were not
// reported lost yet, and records them as reported.
func (w *worker) lost(p int32, stored, oldest int64) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.part(p)
	n := oldest - max(stored, s.lostUpTo)
	s.lostUpTo = max(s.lostUpTo, oldest)
	return max(n, 0)
}

// knownStored is the last stored offset the worker knows of p, if any.
func (w *worker) knownStored(p int32) (int64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.part(p)
	return s.stored, s.stored >= 0
}

func partLabel(p int32) string { return strconv.FormatInt(int64(p), 10) }

// deadLetter queues msg for the dead-letter topic, unless this worker sent
// it already (a re-read after a failed commit).
func (c *claimState) deadLetter(msg *sarama.ConsumerMessage, reason string, err error) {
	if c.h.w.sentBefore(c.part, msg.Offset) {
		return
	}
	c.dead = append(c.dead, deadLetter{msg: msg, reason: reason, err: err})
}

// sendDeadLetters writes the queued dead letters and waits for the broker's
// acknowledgement; the flush commits past them only after it. The first of
// them is logged in full, the rest summed up.
func (c *claimState) sendDeadLetters() error {
	if len(c.dead) == 0 {
		return nil
	}
	dead := c.dead
	c.dead = c.dead[:0]
	topic := c.h.w.cfg.DeadLetterTopic
	msgs := make([]*sarama.ProducerMessage, len(dead))
	for i, d := range dead {
		msgs[i] = deadLetterMessage(topic, d)
	}
	if err := c.h.dlq.SendMessages(msgs); err != nil {
		return fmt.Errorf("%w by %s (%d events): %w", errDeadLetter, topic, len(msgs), err)
	}
	c.h.w.markSent(c.part, dead)
	for _, d := range dead {
		deadLetters.WithLabelValues(d.reason).Inc()
	}
	first := dead[0]
	c.log.Error("event moved to the dead-letter topic", "dead_letter_topic", topic,
		"reason", first.reason, "offset", first.msg.Offset, "err", first.err)
	if len(dead) > 1 {
		c.log.Error("more events moved to the dead-letter topic", "dead_letter_topic", topic,
			"count", len(dead)-1, "last_offset", dead[len(dead)-1].msg.Offset)
	}
	return nil
}

// deadLetterMessage is d as a record of the dead-letter topic.
func deadLetterMessage(topic string, d deadLetter) *sarama.ProducerMessage {
	m := d.msg
	errText := d.err.Error()
	if len(errText) > maxDeadLetterError {
		errText = errText[:maxDeadLetterError]
	}
	headers := []sarama.RecordHeader{
		{Key: []byte(HeaderReason), Value: []byte(d.reason)},
		{Key: []byte(HeaderError), Value: []byte(errText)},
		{Key: []byte(HeaderTopic), Value: []byte(m.Topic)},
		{Key: []byte(HeaderPartition), Value: strconv.AppendInt(nil, int64(m.Partition), 10)},
		{Key: []byte(HeaderOffset), Value: strconv.AppendInt(nil, m.Offset, 10)},
		{Key: []byte(HeaderTimestamp), Value: strconv.AppendInt(nil, m.Timestamp.UnixMilli(), 10)},
	}
	out := &sarama.ProducerMessage{Topic: topic, Headers: headers}
	if m.Key != nil {
		out.Key = sarama.ByteEncoder(m.Key)
	}
	if v := m.Value; v != nil {
		if len(v) > maxDeadLetterValue {
			out.Headers = append(out.Headers, sarama.RecordHeader{Key: []byte(HeaderValueBytes), Value: strconv.AppendInt(nil, int64(len(v)), 10)})
			v = v[:maxDeadLetterValue]
		}
		out.Value = sarama.ByteEncoder(v)
	}
	return out
}
