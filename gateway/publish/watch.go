package publish

import (
	"sync/atomic"
	"time"
)

// A sarama idempotent producer can get stuck: when a broker rejects its
// producer ID for good (fenced, or its state lost and not re-accepted),
// sarama only bumps the epoch locally and keeps failing, and a hung
// connection can hold messages without any result. sarama does recover by
// itself from a plain broker restart (tested), so the publisher only steps
// in when a generation shows one of two symptoms for longer than
// Timeout:
//   - a partition gets errors and no ack, or
//   - requests time out and no result of any kind comes back.
// It then builds a new client and producer (a new producer ID) and swaps
// it in; the old one is closed in the background and still completes its
// in-flight messages.

// health is the failure evidence of a generation. The drain goroutine owns
// partFailing; the atomics are what the watchdog reads.
type health struct {
	// partFailing[p] is when partition p's current run of errors without
	// an ack began (UnixNano), 0 when its latest result was an ack.
	partFailing []int64
	// failingSince is the earliest of partFailing, 0 when none fails.
	failingSince atomic.Int64
	// timedOutSince is when a Publish first gave up waiting since the
	// latest result; the watchdog clears it when results come back.
	timedOutSince atomic.Int64
	// lastResult is when the latest ack or error came back.
	lastResult atomic.Int64
}

func (h *health) onAck(partition int32, now int64) {
	h.lastResult.Store(now)
	i := int(max(partition, 0))
	if i < len(h.partFailing) && h.partFailing[i] != 0 {
		h.partFailing[i] = 0
		h.publishFailing()
	}
}

func (h *health) onError(partition int32, now int64) {
	h.lastResult.Store(now)
	i := int(max(partition, 0))
	for len(h.partFailing) <= i {
		h.partFailing = append(h.partFailing, 0)
	}
	if h.partFailing[i] == 0 {
		h.partFailing[i] = now
		h.publishFailing()
	}
}

func (h *health) publishFailing() {
	var earliest int64
	for _, s := range h.partFailing {
		if s != 0 && (earliest == 0 || s < earliest) {
			earliest = s
		}
	}
	h.failingSince.Store(earliest)
}

func (h *health) onTimeout(now int64) {
	h.timedOutSince.CompareAndSwap(0, now)
}

// stuckFor reports how long the generation has shown a symptom, and which.
func (h *health) stuckFor(now int64) (time.Duration, string) {
	if s := h.failingSince.Load(); s != 0 {
		return time.Duration(now - s), "errors and no ack on a partition"
	}
	if s := h.timedOutSince.Load(); s != 0 {
		if h.lastResult.Load() >= s {
			h.timedOutSince.CompareAndSwap(s, 0)
			return 0, ""
		}
		return time.Duration(now - s), "timeouts and no result"
	}
	return 0, ""
}

// watch replaces the producer when it is stuck, until Close.
func (p *Publisher) watch() {
	defer close(p.watchDone)
	stuckAfter := p.cfg.Timeout
	t := time.NewTicker(min(max(stuckAfter/4, 50*time.Millisecond), time.Second))
	defer t.Stop()
	var lastAttempt time.Time
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.RLock()
			g := p.gen
			p.mu.RUnlock()
			d, why := g.health.stuckFor(now.UnixNano())
			if d < stuckAfter || now.Sub(lastAttempt) < stuckAfter {
				continue
			}
			lastAttempt = now
			p.replace(g, d, why)
		}
	}
}

// replace swaps a new generation in for g. While no broker is reachable
// it fails and the watchdog tries again a Timeout later.
func (p *Publisher) replace(g *generation, stuck time.Duration, why string) {
	p.log.Warn("publish: producer stuck, replacing it", "symptom", why, "for", stuck)
	ng, err := p.newGeneration()
	if err != nil {
		p.log.Warn("publish: cannot replace the producer yet", "err", err)
		return
	}
	p.mu.Lock()
	if p.closed || p.gen != g {
		p.mu.Unlock()
		p.closeGeneration(ng)
		return
	}
	p.gen = ng
	p.mu.Unlock()
	metricRestarts.Inc()
	p.retired.Go(func() {
		if err := p.closeGeneration(g); err != nil {
			p.log.Warn("publish: close replaced producer", "err", err)
		}
	})
}
