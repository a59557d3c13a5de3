// Package publish is the gateway's producer into the event log: POST
// /user_tags answers 204 only once the broker acknowledged the tag, so
// Publish blocks until that ack while batching the concurrent requests'
// messages into shared produce requests.
//
// Delivery is at-least-once for a request that times out: when Publish gives
// up (ctx ended or Timeout passed) the message may still reach the log later.
// The gateway answers 503, a client retry publishes the event again, the
// profile store deduplicates it but the aggregates count it twice. Messages
// that Publish reports acknowledged are in the log exactly once: the producer
// is idempotent, so sarama's own retries never duplicate.
package publish

import (
	"context"
	"errors"
	"fmt"
	"github.com/allezon/allezon/eventlog"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// Defaults for the zero values of Config.
const (
	DefaultFlushMessages = 1000
	DefaultTimeout       = 5 * time.Second
)

var (
	// ErrTimeout is returned (wrapping the context's error when it was the
	// context) when Publish gave up before the ack. The message may still
	// be delivered.
	ErrTimeout = errors.New("publish: no ack in time")
	// ErrClosed is returned by Publish after Close.
	ErrClosed = errors.New("publish: publisher closed")
)

// Config configures a Publisher.
type Config struct {
	// Brokers are the seed brokers, "host:port".
	Brokers []string
	// Topic receives every message.
	Topic string
	// FlushFrequency is how long a batch lingers for more messages
	// before it is sent. 0 (the default) lingers not at all: the batch
	// goes as soon as the previous produce request to the broker
	// returned, and since there is one request in flight per broker
	// (idempotence), the messages of concurrent requests that arrive
	// meanwhile form the next batch by themselves. Every Publish waits
	// for its ack, so a linger adds to each request's latency and caps a
	// closed loop of N concurrent callers at N/linger messages/s:
	// measured with 64 callers against the embedded broker on the shared
	// 2-core machine, 5ms gave ~10k msgs/s, no linger 55k-95k.
	FlushFrequency time.Duration
	// FlushMessages sends a lingering batch early once it holds that
	// many messages, default 1000. Unused without a linger.
	FlushMessages int
	// Timeout bounds every Publish, default 5s; a ctx deadline still
	// applies when it is earlier.
	Timeout time.Duration
	// Logger, nil is slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("publish: no brokers configured")
	}
	if c.Topic == "" {
		return errors.New("publish: no topic configured")
	}
	c.FlushFrequency = max(c.FlushFrequency, 0)
	if c.FlushMessages <= 0 {
		c.FlushMessages = DefaultFlushMessages
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// saramaConfig is the producer setup: idempotent with acks from all
// in-sync replicas, so sarama's retries never duplicate a message, and one
// request in flight per broker, which sarama requires for idempotence.
func saramaConfig(c *Config) *sarama.Config {
	sc := eventlog.NewSaramaConfig("allezon-gateway")

	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	// With no flush trigger at all sarama sends whatever is buffered as
	// soon as it can; a message count alone would hold a batch until
	// that many messages came.
	if c.FlushFrequency > 0 {
		sc.Producer.Flush.Frequency = c.FlushFrequency
		sc.Producer.Flush.Messages = c.FlushMessages
	}
	// Room for bursts of many concurrent requests in front of the batcher.
	sc.ChannelBufferSize = 4096

	// The broker may wait for replicas up to the Timeout; the connection
	// must outlive that wait.
	sc.Producer.Timeout = c.Timeout
	sc.Net.DialTimeout = c.Timeout
	sc.Net.ReadTimeout = c.Timeout + 5*time.Second
	sc.Net.WriteTimeout = c.Timeout + 5*time.Second

	// sarama's retries are free of duplicates (idempotent), a client's
	// retry after a 503 is not: retry within sarama for about as long as
	// a caller waits, backing off 50ms, 100ms, ... up to 1s.
	sc.Producer.Retry.Max = 8
	sc.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		return min(50*time.Millisecond<<min(retries, 5), time.Second)
	}
	sc.Metadata.Retry.Max = 3
	sc.Metadata.Retry.Backoff = 100 * time.Millisecond
	sc.Metadata.Timeout = c.Timeout
	sc.Metadata.Full = false
	// Getting a producer ID is what connects the producer first (in New,
	// and when the watchdog replaces a stuck one); sarama's default of 50
	// tries 100ms apart would hold New for 5s with no broker up.
	sc.Producer.Transaction.Retry.Max = 5
	sc.Producer.Transaction.Retry.Backoff = 100 * time.Millisecond
	return sc
}

// Publisher publishes messages to one topic and reports each one's ack.
// It is safe for concurrent use.
type Publisher struct {
	cfg     Config
	sarama  *sarama.Config
	log     *slog.Logger
	pending sync.Pool // *pending

	// mu guards gen and closed. Publish holds it shared while it hands a
	// message to the producer, so that a producer is never closed (its
	// input channel closed) under a sender.
	mu     sync.RWMutex
	gen    *generation
	closed bool

	// ping coalesces concurrent Pings into one metadata request.
	pingMu sync.Mutex
	ping   *pingCall

	stop      chan struct{}
	watchDone chan struct{}
	retired   sync.WaitGroup // closing of replaced generations
}

// generation is one sarama client and producer with the goroutine that
// drains its results. The publisher replaces a generation that stopped
// acknowledging (see watch).
type generation struct {
	client   sarama.Client
	producer sarama.AsyncProducer
	drained  chan struct{}
	health   health
}

// New connects to the brokers and starts the producer. It fails when no
// broker is reachable.
func New(cfg Config) (*Publisher, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	p := &Publisher{
		cfg:       cfg,
		sarama:    saramaConfig(&cfg),
		log:       cfg.Logger,
		stop:      make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	if err := p.sarama.Validate(); err != nil {
		return nil, fmt.Errorf("publish: producer config: %w", err)
	}
	p.pending.New = func() any { return newPending() }
	g, err := p.newGeneration()
	if err != nil {
		return nil, err
	}
	p.gen = g
	go p.watch()
	return p, nil
}

func (p *Publisher) newGeneration() (*generation, error) {
	client, err := sarama.NewClient(p.cfg.Brokers, p.sarama)
	if err != nil {
		return nil, fmt.Errorf("publish: connect to %v: %w", p.cfg.Brokers, err)
	}
	producer, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("publish: start producer: %w", err)
	}
	g := &generation{client: client, producer: producer, drained: make(chan struct{})}
	go p.drain(g)
	return g, nil
}

// drain completes every message of a generation with its result, until
// the producer is closed.
func (p *Publisher) drain(g *generation) {
	defer close(g.drained)
	successes, errs := g.producer.Successes(), g.producer.Errors()
	for successes != nil || errs != nil {
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			g.health.onAck(m.Partition, time.Now().UnixNano())
			p.complete(m, nil)
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			g.health.onError(pe.Msg.Partition, time.Now().UnixNano())
			p.complete(pe.Msg, pe.Err)
		}
	}
}

// complete hands a result to the waiting Publish, or, when that caller
// already gave up, accounts for the late result and recycles the message.
func (p *Publisher) complete(m *sarama.ProducerMessage, err error) {
	pm, ok := m.Metadata.(*pending)
	if !ok {
		return
	}
	metricInflight.Dec()
	if err != nil {
		pm.msg = nil // sarama may still read it, see pending.msg
	}
	if pm.state.CompareAndSwap(stateWaiting, stateDone) {
		pm.result <- err
		return
	}
	// The caller timed out and returned; sarama no longer holds the
	// buffers, so the message can be reused.
	if err != nil {
		p.log.Debug("publish: message of a timed-out request failed", "err", err)
	} else {
		metricLateAcks.Inc()
	}
	p.putPending(pm)
}

// Publish sends one message and blocks until the broker acknowledged it
// (acks from all in-sync replicas, idempotent producer), or ctx ends, or
// Timeout passes. key and value are copied: the caller may reuse them as
// soon as Publish returns.
//
// After an ErrTimeout the message may still be delivered later, see the
// package comment.
func (p *Publisher) Publish(ctx context.Context, key, value []byte) error {
	if err := ctx.Err(); err != nil {
		metricTimeout.Inc()
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	start := time.Now()
	pm := p.getPending()
	pm.fill(p.cfg.Topic, key, value)
	pm.timer.Reset(p.cfg.Timeout)

	if err := p.send(ctx, pm); err != nil {
		pm.timer.Stop()
		p.putPending(pm)
		return err
	}

	select {
	case err := <-pm.result:
		return p.finish(pm, start, err)
	case <-ctx.Done():
		return p.abandon(pm, start, ctx.Err())
	case <-pm.timer.C:
		return p.abandon(pm, start, nil)
	}
}

// send hands the message to the current producer.
func (p *Publisher) send(ctx context.Context, pm *pending) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		metricError.Inc()
		return ErrClosed
	}
	pm.gen = p.gen
	// Counted before the hand-over so that complete's decrement, which
	// may come first, never takes the gauge below zero.
	metricInflight.Inc()
	select {
	case pm.gen.producer.Input() <- pm.msg:
		return nil
	case <-ctx.Done():
		metricInflight.Dec()
		metricTimeout.Inc()
		return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	case <-pm.timer.C:
		metricInflight.Dec()
		metricTimeout.Inc()
		return fmt.Errorf("%w: producer queue full for %v", ErrTimeout, p.cfg.Timeout)
	}
}

func (p *Publisher) finish(pm *pending, start time.Time, err error) error {
	pm.timer.Stop()
	p.putPending(pm)
	if err != nil {
		metricError.Inc()
		return fmt.Errorf("publish: %w", err)
	}
	metricAcked.Inc()
	metricAckSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// abandon gives up waiting, unless the result raced in. Once it marks the
// message abandoned the message belongs to complete, which recycles it when
// sarama is done with it, so abandon must not touch it after the CAS.
func (p *Publisher) abandon(pm *pending, start time.Time, ctxErr error) error {
	g := pm.gen
	pm.timer.Stop()
	if !pm.state.CompareAndSwap(stateWaiting, stateAbandoned) {
		return p.finish(pm, start, <-pm.result)
	}
	g.health.onTimeout(time.Now().UnixNano())
	metricTimeout.Inc()
	if ctxErr != nil {
		return fmt.Errorf("%w: %w", ErrTimeout, ctxErr)
	}
	return fmt.Errorf("%w: waited %v", ErrTimeout, p.cfg.Timeout)
}

// Ping reports whether the topic's metadata can be fetched from a broker.
// Concurrent calls share one request.
func (p *Publisher) Ping(ctx context.Context) error {
	p.mu.RLock()
	closed, g := p.closed, p.gen
	p.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	p.pingMu.Lock()
	call := p.ping
	if call == nil {
		call = &pingCall{done: make(chan struct{})}
		p.ping = call
		go func() {
			call.err = g.client.RefreshMetadata(p.cfg.Topic)
			if call.err == nil {
				var parts []int32
				if parts, call.err = g.client.Partitions(p.cfg.Topic); call.err == nil && len(parts) == 0 {
					call.err = fmt.Errorf("topic %s has no partitions", p.cfg.Topic)
				}
			}
			p.pingMu.Lock()
			p.ping = nil
			p.pingMu.Unlock()
			close(call.done)
		}()
	}
	p.pingMu.Unlock()
	select {
	case <-call.done:
		if call.err != nil {
			return fmt.Errorf("publish: ping %v: %w", p.cfg.Brokers, call.err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish: ping %v: %w", p.cfg.Brokers, ctx.Err())
	}
}

type pingCall struct {
	done chan struct{}
	err  error
}

// Close waits for the messages in flight to be acknowledged or to fail,
// then closes the producer. Publish calls after Close fail with ErrClosed.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	g := p.gen
	p.mu.Unlock()
	close(p.stop)
	<-p.watchDone
	err := p.closeGeneration(g)
	p.retired.Wait()
	return err
}

func (p *Publisher) closeGeneration(g *generation) error {
	// Not producer.Close: it would consume the results itself, and the
	// callers waiting for them would only time out. AsyncClose flushes,
	// drain completes every result and returns once both result channels
	// are closed.
	g.producer.AsyncClose()
	<-g.drained
	if err := g.client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
		return fmt.Errorf("publish: close client: %w", err)
	}
	return nil
}
