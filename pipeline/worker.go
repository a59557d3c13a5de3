// Package pipeline is Allezon's stream worker. It consumes the events topic
// in a Kafka consumer group, sums the tags into per-minute cells, and every
// flush interval commits each partition's sums together with that
// partition's next offset, atomically, to the aggregates store.
//
// Exactly once comes from the store, not from Kafka: the offset that says
// which events are counted is written in the same transaction as their
// counts, each commit is a compare-and-set on the offset stored before it,
// and every session resumes from the offsets in the store. A crash loses
// only uncommitted sums, whose events are then re-read; a zombie that lost
// its partition is fenced by the compare-and-set and cannot count twice.
// Kafka's own committed offsets are only kept up to date for operators'
// lag tools; the worker never reads them.
//
// A poison event never stalls a partition: an event that does not decode,
// whose time lies more than MaxFuture after its record's timestamp, or
// whose sums the store refuses as data (see isolation) is written to the
// dead-letter topic, and its offset is committed only once the broker
// acknowledged that write. The dead-letter topic is at least once: a crash
// between the acknowledgement and the commit writes the dead letter again
// when the event is re-read; it is never lost.
package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/allezon/allezon/eventlog"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/schemas"
)

// Sink is what the worker needs of the aggregates store. It is declared
// here, by its user, and aggregates.Store satisfies it.
type Sink interface {
	// Commit adds the deltas and moves each partition's stored next offset
	// from Prev to Next, atomically; it fails with aggregates.ErrFenced
	// (wrapped), storing nothing, when a partition's stored offset is not Prev.
	Commit(ctx context.Context, deltas map[schemas.Cell]schemas.Totals, offsets []aggregates.PartitionOffset) error
	// Offsets is the stored next offset of every partition of the topic
	// that has one.
	Offsets(ctx context.Context, topic string) (map[int32]int64, error)
	// DropBefore deletes the aggregates of minutes before minute.
	DropBefore(ctx context.Context, minute int64) error
}

// Config configures Run. Zero fields take the defaults documented on them.
type Config struct {
	Brokers []string
	Topic   string
	Group   string // default "allezon-pipeline"
	// DeadLetterTopic receives the events that cannot be counted (package
	// comment). It must exist; while it cannot be written to, the
	// partition waits as in an outage. Default Topic + "-dlq".
	DeadLetterTopic string
	// MaxFuture is how far a tag's time may lie after its record's
	// timestamp before the event is a dead letter (the gateway's horizon,
	// measured on a clock every re-read agrees on). Default
	// schemas.DefaultMaxFuture; negative: no limit.
	MaxFuture time.Duration

	// FlushInterval is how often each partition commits its sums: the
	// bound on how stale /aggregates is, and on how much a crash re-reads.
	FlushInterval time.Duration // default 1s
	// Retention is how much event time, behind the retention frontier
	// (see eventClock), the aggregates keep; older minutes are dropped.
	Retention time.Duration // default 24h
	// DropInterval is how often (wall time) the worker samples event time
	// and drops the minutes behind the retention cut-off. It is at least
	// twice FlushInterval, so every tick of a live stream sees a commit.
	DropInterval time.Duration // default 1m
	// RetentionSettle is how long (wall time) event time must stay ahead
	// before the retention frontier follows it: a burst of far-future
	// events shorter than this cannot move it, whatever its size.
	RetentionSettle time.Duration // default 10m

	// SessionTimeout and HeartbeatInterval tune the consumer group: how
	// fast a dead worker's partitions move to a live one. Real Kafka
	// brokers refuse sessions under their group.min.session.timeout.ms
	// (6s by default); the embedded broker can be told to allow 1s/300ms.
	SessionTimeout    time.Duration // default 10s
	HeartbeatInterval time.Duration // default 3s

	// DrainTimeout bounds the drain when ctx ends: each claim goes on
	// consuming up to its partition's high watermark as of that moment,
	// commits, and only then lets go, so a graceful stop after the
	// producers stopped leaves nothing to re-read. Negative: no drain,
	// commit what was consumed and stop.
	DrainTimeout time.Duration // default 5s

	// Writes, when set, holds the worker's writes to the sink while its
	// Err is not nil (diskfloor.Watcher: free disk below the floor): no
	// commit and no retention drop then, see claimState.flush.
	Writes WriteGate

	Logger *slog.Logger // default slog.Default()
}

// WriteGate says whether the worker may write to its sink now.
type WriteGate interface {
	Err() error
}

const (
	defaultGroup             = "allezon-pipeline"
	defaultFlushInterval     = time.Second
	defaultRetention         = 24 * time.Hour
	defaultDropInterval      = time.Minute
	defaultRetentionSettle   = 10 * time.Minute
	defaultSessionTimeout    = 10 * time.Second
	defaultHeartbeatInterval = 3 * time.Second
	defaultDrainTimeout      = 5 * time.Second

	// storeTimeout bounds one call to the sink. A commit that takes longer
	// is abandoned as ambiguous: its deltas are dropped and re-read, which
	// the offset compare-and-set makes safe whether or not it applied.
	storeTimeout = 10 * time.Second

	// Backoff between attempts after an error (failed join, failed commit,
	// unreachable store): doubling from minBackoff up to maxBackoff, with
	// jitter, reset by a session that ends cleanly.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
	// minSessionLife is the shortest consumer group session after which
	// the worker rejoins without backing off.
	minSessionLife = time.Second
)

func (c Config) withDefaults() Config {
	c.Group = cmp.Or(c.Group, defaultGroup)
	if c.Topic != "" {
		c.DeadLetterTopic = cmp.Or(c.DeadLetterTopic, c.Topic+"-dlq")
	}
	c.MaxFuture = cmp.Or(c.MaxFuture, schemas.DefaultMaxFuture)
	c.FlushInterval = cmp.Or(c.FlushInterval, defaultFlushInterval)
	c.Retention = cmp.Or(c.Retention, defaultRetention)
	c.DropInterval = cmp.Or(c.DropInterval, defaultDropInterval)
	c.RetentionSettle = cmp.Or(c.RetentionSettle, defaultRetentionSettle)
	c.SessionTimeout = cmp.Or(c.SessionTimeout, defaultSessionTimeout)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, defaultHeartbeatInterval)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, defaultDrainTimeout)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("pipeline: no Kafka brokers configured")
	case c.Topic == "":
		return errors.New("pipeline: no events topic configured")
	case c.DeadLetterTopic == c.Topic:
		return fmt.Errorf("pipeline: the dead-letter topic must not be the events topic %q", c.Topic)
	case c.FlushInterval < 0, c.Retention < 0, c.DropInterval < 0, c.RetentionSettle < 0, c.SessionTimeout < 0, c.HeartbeatInterval < 0:
		return errors.New("pipeline: negative duration in config")
	case c.RetentionSettle/c.dropTick() > maxRetentionSamples:
		return fmt.Errorf("pipeline: retention settle period %v holds more than %d drop intervals of %v", c.RetentionSettle, maxRetentionSamples, c.dropTick())
	case c.HeartbeatInterval >= c.SessionTimeout:
		return fmt.Errorf("pipeline: heartbeat interval %v must be below the session timeout %v", c.HeartbeatInterval, c.SessionTimeout)
	}
	return nil
}

// maxRetentionSamples bounds the samples eventClock keeps per settle period.
const maxRetentionSamples = 100_000

// dropTick is the retention tick: DropInterval, at least two flushes.
func (c Config) dropTick() time.Duration { return max(c.DropInterval, 2*c.FlushInterval) }

func (c Config) sarama() *sarama.Config {
	sc := eventlog.NewSaramaConfig("allezon-pipeline")
	// Eager range: a rebalance ends every claim (each flushes first) before
	// any partition moves, so two live workers never own one partition.
	sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	sc.Consumer.Group.Session.Timeout = c.SessionTimeout
	sc.Consumer.Group.Heartbeat.Interval = c.HeartbeatInterval
	// Setup places every claim on an offset it checked against the
	// partition's range; if that range moves before the claim starts, the
	// claim must fail (and the next Setup re-check) rather than sarama
	// silently jumping to the oldest offset.
	sc.Consumer.Group.ResetInvalidOffsets = false
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Return.Errors = true
	// The dead-letter producer: a write counts once every in-sync replica
	// has it, before the commit that moves past its event.
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	// Fail fast on a dead broker (the default is 30 s): Run backs off and
	// reconnects on its own, and shutdown is not held up.
	sc.Net.DialTimeout = 5 * time.Second
	return sc
}

// Run consumes until ctx is cancelled, then drains (Config.DrainTimeout),
// flushes what it has and returns nil. It survives broker and store outages: it logs, counts, backs off and
// resumes from the offsets stored in the sink. It returns an error only for
// an unusable configuration.
func Run(ctx context.Context, cfg Config, sink Sink) error {
	if sink == nil {
		return errors.New("pipeline: nil sink")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	w := &worker{
		cfg:   cfg,
		sink:  sink,
		log:   cfg.Logger.With("component", "pipeline", "topic", cfg.Topic, "group", cfg.Group),
		clock: newEventClock(cfg.RetentionSettle),
		parts: map[int32]*partitionState{},
	}

	var wg sync.WaitGroup
	wg.Go(func() { w.retain(ctx) })
	defer wg.Wait()

	w.log.Info("pipeline starting", "brokers", cfg.Brokers, "flush_interval", cfg.FlushInterval, "retention", cfg.Retention,
		"retention_settle", cfg.RetentionSettle, "drop_interval", cfg.dropTick())
	bo := backoff{}
	for ctx.Err() == nil {
		if err := w.runGroup(ctx, &bo); err != nil && ctx.Err() == nil {
			consumerErrors.Inc()
			w.log.Warn("kafka consumer group failed, reconnecting", "err", err)
			sleep(ctx, bo.next())
		}
	}
	w.log.Info("pipeline stopped")
	return nil
}

// worker is one Run: its configuration and the state shared by its claims.
type worker struct {
	cfg  Config
	sink Sink
	log  *slog.Logger

	// clock is the retention frontier of committed event time.
	clock *eventClock
	// cellsHint is the largest number of cells one flush has held, so the
	// accumulators of later sessions start at that size.
	cellsHint atomic.Int64

	// mu guards parts, which the claims of several partitions update.
	mu    sync.Mutex
	parts map[int32]*partitionState
	// holding is set while the write gate holds commits, so the hold is
	// logged once per outage rather than per claim and tick.
	holding atomic.Bool
}

// held reports whether the write gate holds the sink's writes now, and
// logs the changes.
func (w *worker) held() bool {
	if w.cfg.Writes == nil {
		return false
	}
	err := w.cfg.Writes.Err()
	if was := w.holding.Swap(err != nil); was != (err != nil) {
		if err != nil {
			w.log.Warn("holding commits and retention drops: the sink cannot write now; each claim keeps its sums and position", "err", err)
		} else {
			w.log.Info("commits resume")
		}
	}
	return err != nil
}

// runGroup connects to Kafka and runs consumer group sessions until ctx
// ends (nil) or the client breaks (an error, after which Run reconnects).
func (w *worker) runGroup(ctx context.Context, bo *backoff) error {
	client, err := sarama.NewClient(w.cfg.Brokers, w.cfg.sarama())
	if err != nil {
		return fmt.Errorf("connect to kafka %v: %w", w.cfg.Brokers, err)
	}
	defer client.Close()
	dlq, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		return fmt.Errorf("create dead-letter producer: %w", err)
	}
	defer dlq.Close()
	group, err := sarama.NewConsumerGroupFromClient(w.cfg.Group, client)
	if err != nil {
		return fmt.Errorf("create consumer group %q: %w", w.cfg.Group, err)
	}
	var errsDone sync.WaitGroup
	errsDone.Go(func() {
		for err := range group.Errors() {
			if rebalanceNoise(err) {
				w.log.Debug("kafka consumer error during a rebalance", "err", err)
				continue
			}
			consumerErrors.Inc()
			w.log.Warn("kafka consumer error", "err", err)
		}
	})
	defer func() {
		// Close leaves the group, so the other workers take over at once
		// instead of after a session timeout.
		if err := group.Close(); err != nil {
			w.log.Warn("close kafka consumer group", "err", err)
		}
		errsDone.Wait()
	}()

	h := &handler{w: w, client: client, dlq: dlq, drain: newDrain()}
	// The sessions run on their own context, which ends only once the
	// claims drained after ctx ended (or the drain timed out).
	consumeCtx, stopConsuming := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsuming()
	go w.drainOnStop(ctx, consumeCtx, h.drain, stopConsuming)
	topics := []string{w.cfg.Topic}
	for ctx.Err() == nil {
		h.failed.Store(false)
		began := time.Now()
		err := group.Consume(consumeCtx, topics, h)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, sarama.ErrClosedConsumerGroup), errors.Is(err, sarama.ErrClosedClient):
			return fmt.Errorf("consume %s: %w", w.cfg.Topic, err)
		case err != nil:
			consumerErrors.Inc()
			w.log.Warn("consumer group session failed, rejoining", "err", err)
			sleep(ctx, bo.next())
		case h.failed.Load():
			// A commit failed: the claims ended to re-read from the stored
			// offsets. Back off so a store outage is not hammered.
			sleep(ctx, bo.next())
		case time.Since(began) < minSessionLife:
			// Sessions that end as soon as they start (a claim that cannot
			// start, a group that keeps rebalancing) must not spin.
			sleep(ctx, bo.next())
		default:
			// A clean rebalance after a useful session: rejoin at once.
			bo.reset()
		}
	}
	return nil
}

// drainOnStop waits for ctx to end, tells the claims to drain, and ends the
// sessions once they all did or DrainTimeout passed.
func (w *worker) drainOnStop(ctx, consumeCtx context.Context, d *drain, stopConsuming context.CancelFunc) {
	select {
	case <-ctx.Done():
	case <-consumeCtx.Done():
		return
	}
	if w.cfg.DrainTimeout < 0 {
		stopConsuming()
		return
	}
	d.begin()
	t := time.NewTimer(w.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-d.finished:
		w.log.Info("pipeline drained: every claimed partition committed up to its high watermark")
	case <-t.C:
		w.log.Warn("pipeline drain timed out; the rest is re-read on the next start", "drain_timeout", w.cfg.DrainTimeout)
	case <-consumeCtx.Done():
	}
	stopConsuming()
}

// drain tracks the claims of a stopping worker: started is closed when the
// stop begins, finished once no claim has events left below the high
// watermark it read then.
type drain struct {
	started  chan struct{}
	finished chan struct{}

	mu      sync.Mutex
	begun   bool
	pending int // claims running and not yet drained
	done    bool
}

func newDrain() *drain {
	return &drain{started: make(chan struct{}), finished: make(chan struct{})}
}

func (d *drain) begin() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.begun = true
	close(d.started)
	d.finishIfIdle()
}

// claimStarted counts a running claim; its release func (call it once it
// drained or returned, either is fine, twice is harmless) uncounts it.
func (d *drain) claimStarted() (release func()) {
	d.mu.Lock()
	d.pending++
	d.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.pending--
			d.finishIfIdle()
		})
	}
}

func (d *drain) finishIfIdle() {
	if d.begun && d.pending == 0 && !d.done {
		d.done = true
		close(d.finished)
	}
}

// rebalanceNoise reports errors that a rebalance causes by design: the
// session's last commit of Kafka-side offsets (kept for operators' lag
// tools only) is refused once the group moved to a new generation. The
// worker never reads those offsets, so nothing is lost.
func rebalanceNoise(err error) bool {
	return errors.Is(err, sarama.ErrIllegalGeneration) || errors.Is(err, sarama.ErrRebalanceInProgress) ||
		errors.Is(err, sarama.ErrUnknownMemberId)
}

// retain drops, every drop tick, the minutes that fell out of the
// retention window behind the frontier of eventClock.
func (w *worker) retain(ctx context.Context) {
	t := time.NewTicker(w.cfg.dropTick())
	defer t.Stop()
	keepMinutes := int64((w.cfg.Retention + time.Minute - 1) / time.Minute)
	dropped := int64(noSample) // the cut-off of the last successful drop
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-t.C:
		}
		frontier, ok := w.clock.tick(now)
		if !ok || w.held() {
			continue
		}
		// Minute frontier-keepMinutes still holds events within Retention
		// of the frontier, so it is the first minute kept.
		cutoff := frontier - keepMinutes
		// The drop runs again on every tick, also when the cut-off did not
		// move: a partition that lags behind another may commit sums of a
		// minute the other's progress already dropped, and those must go
		// too. Dropping nothing is one cheap range delete.
		dctx, cancel := context.WithTimeout(ctx, storeTimeout)
		err := w.sink.DropBefore(dctx, cutoff)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				sinkErrors.WithLabelValues("drop").Inc()
				w.log.Warn("retention drop failed, will retry", "before_minute", cutoff, "err", err)
			}
			continue
		}
		if cutoff > dropped {
			w.cutoffMoved(dropped, cutoff)
			dropped = cutoff
		}
	}
}

// retentionJumpMinutes is how far the cut-off may move in one drop before
// the drop is logged at WARN and counted as a jump.
const retentionJumpMinutes = 5

// cutoffMoved reports a drop that moved the cut-off from prev (noSample:
// the first of this process) to cutoff.
func (w *worker) cutoffMoved(prev, cutoff int64) {
	drops.Inc()
	retentionCutoff.Set(float64(cutoff) * 60)
	at := func(m int64) time.Time { return time.UnixMilli(m * 60_000).UTC() }
	switch {
	case prev == noSample:
		w.log.Info("retention cut-off set: minutes before it are dropped", "cutoff", at(cutoff))
	case cutoff-prev > retentionJumpMinutes:
		retentionJumps.Inc()
		w.log.Warn("retention cut-off jumped: many minutes dropped at once",
			"old_cutoff", at(prev), "new_cutoff", at(cutoff), "minutes", cutoff-prev)
	default:
		w.log.Debug("retention drop", "cutoff", at(cutoff))
	}
}

// handler is the sarama consumer group handler of one runGroup. Setup
// places each claim on the sink's offsets; ConsumeClaim sums and commits.
type handler struct {
	w      *worker
	client sarama.Client
	dlq    deadLetterSender

	// failed is set when a commit failed in the current session.
	failed atomic.Bool
	// drain coordinates the claims when the worker stops.
	drain *drain

	mu sync.Mutex
	// starts is where each claimed partition of the current session
	// resumes, set by Setup before the claims start.
	starts map[int32]partitionStart
}

// partitionStart is where a claim begins.
type partitionStart struct {
	// stored is the partition's next offset in the sink, or -1 for none:
	// the Prev of the claim's first commit.
	stored int64
	// next is the offset the claim consumes first: stored, clamped to the
	// offsets Kafka still has.
	next int64
}

// Setup reads the sink's offsets and places every claim on them. It does not
// start consuming from a guess: while the sink cannot answer, it retries
// (the session keeps heartbeating) until it does or the session ends.
func (h *handler) Setup(sess sarama.ConsumerGroupSession) error {
	rebalances.Inc()
	topic := h.w.cfg.Topic
	parts := sess.Claims()[topic]
	log := h.w.log.With("member", sess.MemberID(), "generation", sess.GenerationID())
	log.Info("session setup", "partitions", parts)
	h.w.owning(parts)

	stored, err := h.storedOffsets(sess.Context(), parts, log)
	if err != nil {
		return err
	}
	starts := make(map[int32]partitionStart, len(parts))
	for _, p := range parts {
		st, err := h.start(topic, p, stored, log)
		if err != nil {
			return err
		}
		// MarkOffset only moves the session's offset forward and ResetOffset
		// only backward: together they place it exactly, whatever Kafka had
		// committed for the group.
		sess.MarkOffset(topic, p, st.next, "")
		sess.ResetOffset(topic, p, st.next, "")
		starts[p] = st
	}
	h.mu.Lock()
	h.starts = starts
	h.mu.Unlock()
	return nil
}

// storedOffsets asks the sink for the topic's offsets until it answers or
// ctx (the session) ends. Meanwhile it keeps the lag of parts up to date.
func (h *handler) storedOffsets(ctx context.Context, parts []int32, log *slog.Logger) (map[int32]int64, error) {
	var bo backoff
	for {
		octx, cancel := context.WithTimeout(ctx, storeTimeout)
		stored, err := h.w.sink.Offsets(octx, h.w.cfg.Topic)
		cancel()
		if err == nil {
			return stored, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read stored offsets: %w (session ended: %w)", err, context.Cause(ctx))
		}
		sinkErrors.WithLabelValues("offsets").Inc()
		h.refreshLag(parts)
		d := bo.next()
		log.Warn("cannot read stored offsets, retrying", "retry_in", d, "err", err)
		if !sleep(ctx, d) {
			return nil, fmt.Errorf("read stored offsets: session ended: %w", context.Cause(ctx))
		}
	}
}

// refreshLag sets the lag of parts from the last stored offsets the worker
// knows, so it keeps growing while the store cannot be read.
func (h *handler) refreshLag(parts []int32) {
	for _, p := range parts {
		stored, ok := h.w.knownStored(p)
		if !ok {
			continue
		}
		if hw, err := h.client.GetOffset(h.w.cfg.Topic, p, sarama.OffsetNewest); err == nil {
			consumerLag.WithLabelValues(h.w.cfg.Topic, partLabel(p)).Set(float64(max(hw-stored, 0)))
		}
	}
}

// start decides where partition p resumes: at its stored offset, or at
// Kafka's oldest when none is stored. A stored offset outside the range
// Kafka still holds means events were lost outside the pipeline (retention
// deleted unread events, or the log was truncated or recreated); the claim
// then starts at the nearest end of the range, and the loss is logged and,
// for deleted events, counted once (allezon_pipeline_events_lost_total).
func (h *handler) start(topic string, p int32, stored map[int32]int64, log *slog.Logger) (partitionStart, error) {
	oldest, err := h.client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return partitionStart{}, fmt.Errorf("oldest offset of %s/%d: %w", topic, p, err)
	}
	newest, err := h.client.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		return partitionStart{}, fmt.Errorf("newest offset of %s/%d: %w", topic, p, err)
	}
	off, ok := stored[p]
	if !ok {
		log.Info("partition has no stored offset, starting at the oldest", "partition", p, "offset", oldest)
		consumerLag.WithLabelValues(topic, partLabel(p)).Set(float64(max(newest-oldest, 0)))
		return partitionStart{stored: -1, next: oldest}, nil
	}
	next := off
	switch {
	case off < oldest:
		lost := h.w.lost(p, off, oldest)
		eventsLost.Add(float64(lost))
		log.Error("stored offset is older than Kafka's oldest: the events in between were deleted unread and are not counted",
			"partition", p, "stored", off, "oldest", oldest, "events_lost", oldest-off, "newly_reported", lost)
		next = oldest
	case off > newest:
		log.Error("stored offset is past Kafka's high watermark: the log was truncated or recreated; resuming at its end",
			"partition", p, "stored", off, "high_watermark", newest)
		next = newest
	}
	consumerLag.WithLabelValues(topic, partLabel(p)).Set(float64(max(newest-next, 0)))
	return partitionStart{stored: off, next: next}, nil
}

// Cleanup runs after every claim of the session returned (and flushed).
func (h *handler) Cleanup(sess sarama.ConsumerGroupSession) error {
	h.w.log.Info("session ended", "member", sess.MemberID(), "generation", sess.GenerationID())
	return nil
}

// ConsumeClaim sums one partition's events and commits them every
// FlushInterval, and once more when the claim ends. A failed commit drops
// the sums and returns, which ends the session: the next Setup resumes from
// the offsets in the sink, so the dropped events are re-read exactly once.
func (h *handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	p := claim.Partition()
	h.mu.Lock()
	st, ok := h.starts[p]
	h.mu.Unlock()
	if !ok {
		h.failed.Store(true)
		return fmt.Errorf("claim of %s/%d was not set up", claim.Topic(), p)
	}
	if claim.InitialOffset() != st.next {
		h.failed.Store(true)
		return fmt.Errorf("claim of %s/%d starts at offset %d, but the sink's offset is %d", claim.Topic(), p, claim.InitialOffset(), st.next)
	}
	c := &claimState{
		h:       h,
		sess:    sess,
		topic:   claim.Topic(),
		part:    p,
		label:   strconv.FormatInt(int64(p), 10),
		prev:    st.stored,
		flushed: st.next,
		next:    st.next,
		sums:    newCellSums(int(h.w.cellsHint.Load())),
		log:     h.w.log.With("partition", p, "member", sess.MemberID(), "generation", sess.GenerationID()),
		iso:     h.w.isolationFrom(p, st.next),
	}
	c.log.Debug("claim started", "offset", st.next, "stored", st.stored)
	if c.iso.active(st.next) {
		c.log.Warn("re-reading the events of a commit the store refused as data, committing them one at a time",
			"from", st.next, "until", c.iso.until)
	}

	release := h.drain.claimStarted()
	defer release()
	tick := time.NewTicker(h.w.cfg.FlushInterval)
	defer tick.Stop()
	msgs := claim.Messages()
	done := sess.Context().Done()
	stopping := h.drain.started
	drainTo := int64(math.MaxInt64)
	// A stopping claim that reached its target commits and reads no more.
	stopIfDrained := func() {
		if c.next >= drainTo {
			c.flush()
			release()
			msgs = nil // wait for the session to end
		}
	}
	var tag schemas.UserTag
	for {
		select {
		case msg, ok := <-msgs:
			if !ok {
				c.flush()
				return nil
			}
			c.consume(msg, &tag)
			// While isolating, every event is its own commit; a pile of
			// dead letters is flushed before it grows.
			if c.iso.active(c.flushed) || len(c.dead) >= maxPendingDeadLetters {
				if !c.flush() {
					return nil
				}
			}
			stopIfDrained()
		case <-stopping:
			stopping = nil
			drainTo = c.drainTarget()
			stopIfDrained()
		case <-tick.C:
			ok := c.flush()
			if hw := claim.HighWaterMarkOffset(); hw > 0 {
				consumerLag.WithLabelValues(c.topic, c.label).Set(float64(max(hw-c.flushed, 0)))
				if ok && hw <= c.flushed {
					c.h.w.upToDate(c.part) // an idle partition is not a stuck one
				}
			}
			if !ok {
				return nil
			}
		case <-done:
			// Rebalance or shutdown: commit what was consumed and let go.
			// Events still buffered in the claim are re-read by the next
			// owner from the offset committed here.
			c.flush()
			return nil
		}
	}
}

// drainTarget is the partition's high watermark now: where a stopping claim
// may stop consuming. If the broker cannot say, it is where the claim is.
func (c *claimState) drainTarget() int64 {
	hw, err := c.h.client.GetOffset(c.topic, c.part, sarama.OffsetNewest)
	if err != nil {
		c.log.Warn("drain: cannot read the high watermark; committing what was consumed", "err", err)
		return c.next
	}
	return hw
}

// claimState is one claim's accumulator and offsets, owned by its
// ConsumeClaim goroutine.
type claimState struct {
	h     *handler
	sess  sarama.ConsumerGroupSession
	topic string
	part  int32
	label string // part as a metric label

	// prev is the next offset believed stored in the sink (-1: none), the
	// compare-and-set value of the next commit.
	prev int64
	// flushed is the offset up to which events are committed (or, before
	// the first commit, where the claim started); next is one past the
	// last event consumed. The claim has something to commit when they
	// differ, even if no event decoded.
	flushed, next int64

	sums     *cellSums
	consumed int64 // events since the last flush, for the metric
	// summed counts the events in sums; summedMsg is the last of them,
	// the one a refused commit of a single event names.
	summed    int
	summedMsg *sarama.ConsumerMessage
	// dead are the dead letters to write before the next commit.
	dead []deadLetter
	// iso, while active, makes every event its own commit.
	iso isolation

	log *slog.Logger
}

// consume adds one event to the sums, or to the dead letters when it can
// never be counted, and advances the offset past it.
func (c *claimState) consume(msg *sarama.ConsumerMessage, tag *schemas.UserTag) {
	if msg.Offset < c.next {
		return // already counted: sarama may hand back the start of a batch
	}
	c.next = msg.Offset + 1
	c.consumed++
	if err := schemas.DecodeEventValue(msg.Value, tag); err != nil {
		decodeErrors.Inc()
		c.deadLetter(msg, reasonDecode, err)
		return
	}
	// The record's timestamp, not the wall clock: every re-read of the
	// event must decide alike.
	if ts := msg.Timestamp.UnixMilli(); ts > 0 {
		if err := schemas.CheckNotFuture(tag.TimeMs, ts, c.h.w.cfg.MaxFuture); err != nil {
			c.deadLetter(msg, reasonFuture, err)
			return
		}
	}
	c.sums.add(tag)
	c.summed++
	c.summedMsg = msg
}

// flush writes the pending dead letters, then commits the sums and the
// next offset if anything was consumed since the last flush. It reports
// false when either failed: the sums are dropped and the claim must end,
// so its events are re-read from the offsets in the sink. A commit of
// several events that the store refuses as data starts an isolation.
func (c *claimState) flush() bool {
	if c.consumed > 0 {
		eventsConsumed.Add(float64(c.consumed))
		c.consumed = 0
	}
	if c.next == c.flushed {
		return true
	}
	if c.h.w.held() {
		// An outage, not a failure: keep the sums and the position and
		// commit them at a later tick. If the claim ends first, they are
		// dropped and re-read from the stored offsets, exactly once.
		commitsHeld.Inc()
		return true
	}
	offsets := []aggregates.PartitionOffset{{Topic: c.topic, Partition: c.part, Prev: c.prev, Next: c.next}}
	cells := c.sums.cells()
	err := c.sendDeadLetters()
	if err == nil {
		err = c.commit(c.sums.deltas(), offsets)
		if errors.Is(err, aggregates.ErrData) && c.summed == 1 {
			err = c.refuse(c.summedMsg, err, offsets)
		}
	}
	c.sums.reset()
	c.summed, c.summedMsg = 0, nil
	if err != nil {
		c.failed(err, cells)
		return false
	}
	commits.Inc()
	cellsPerFlush.Observe(float64(cells))
	if int64(cells) > c.h.w.cellsHint.Load() {
		c.h.w.cellsHint.Store(int64(cells))
	}
	c.prev, c.flushed = c.next, c.next
	c.h.w.flushed(c.part, c.next)
	if c.iso.until != 0 && !c.iso.active(c.flushed) {
		c.log.Info("isolation done: every event of the refused commit is counted or dead-lettered", "until", c.iso.until)
		c.iso = isolation{}
	}
	// For operators' lag tools only; resuming never reads it.
	c.sess.MarkOffset(c.topic, c.part, c.next, "")
	return true
}

// commit is one Commit of the sink, under its own timeout: the claim's
// context may be cancelled already (shutdown, rebalance), and the final
// commit must still run.
func (c *claimState) commit(deltas map[schemas.Cell]schemas.Totals, offsets []aggregates.PartitionOffset) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.sess.Context()), storeTimeout)
	start := time.Now()
	err := c.h.w.sink.Commit(ctx, deltas, offsets)
	cancel()
	flushDuration.Observe(time.Since(start).Seconds())
	if err == nil {
		c.h.w.clock.add(deltas)
	}
	return err
}

// refuse handles a commit of the one event msg that the store refused as
// data: msg is the poison. It goes to the dead-letter topic and its offset
// is committed without its sums.
func (c *claimState) refuse(msg *sarama.ConsumerMessage, refusal error, offsets []aggregates.PartitionOffset) error {
	c.deadLetter(msg, reasonRefused, refusal)
	if err := c.sendDeadLetters(); err != nil {
		return err
	}
	return c.commit(nil, offsets)
}

// failed counts and logs a failed flush; a refusal as data starts the
// isolation of the events it covered.
func (c *claimState) failed(err error, cells int) {
	reason := reasonStore
	switch {
	case errors.Is(err, aggregates.ErrFenced):
		reason = reasonFenced
	case errors.Is(err, aggregates.ErrData):
		reason = reasonData
		c.h.w.isolate(c.part, c.next)
	case errors.Is(err, errDeadLetter):
		reason = reasonDeadLetter
	}
	commitErrors.WithLabelValues(reason).Inc()
	c.h.failed.Store(true)
	c.dead = c.dead[:0]
	c.log.Error("commit failed: dropping the sums, resuming from the stored offsets",
		"reason", reason, "prev", c.prev, "next", c.next, "cells", cells, "err", err)
}

// backoff is a doubling delay with jitter, between minBackoff and maxBackoff.
type backoff struct{ cur time.Duration }

func (b *backoff) next() time.Duration {
	b.cur = min(max(2*b.cur, minBackoff), maxBackoff)
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends; it reports whether the full d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
