package gateway

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/allezon/allezon/gateway/breaker"
	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

// writesHeldRetryAfter is the Retry-After, in seconds, of a tag refused by
// the write gate: a full disk does not free itself within a second.
const writesHeldRetryAfter = "5"

// tagScratch is the per-request working memory of POST /user_tags, pooled
// so the hot path does not allocate it each time.
type tagScratch struct {
	tag  schemas.UserTag
	json []byte
}

var tagScratchPool = sync.Pool{New: func() any { return &tagScratch{json: make([]byte, 0, 512)} }}

// userTags handles POST /user_tags: decode strictly, store in the profile
// store, publish to the event log, and answer 204 only when both have
// acknowledged. The profile write comes first because it is idempotent: if
// the publish then fails, the client's retry rewrites the same profile
// entry and publishes again, whereas the other order could count a retried
// tag twice in the aggregates.
// body is the request's, read by the router under MaxTagBytes.
func (s *Server) userTags(ctx *fasthttp.RequestCtx, rid string, body []byte) {
	sc := tagScratchPool.Get().(*tagScratch)
	defer tagScratchPool.Put(sc)

	if err := schemas.DecodeUserTag(body, &sc.tag); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if len(sc.tag.Cookie) > s.cfg.MaxCookieBytes {
		writeError(ctx, fasthttp.StatusBadRequest, "cookie: longer than "+strconv.Itoa(s.cfg.MaxCookieBytes)+" bytes")
		return
	}
	// ctx.Time() is the clock fasthttp read as the request came in: the
	// horizon costs no clock read of its own.
	if err := schemas.CheckNotFuture(sc.tag.TimeMs, ctx.Time().UnixMilli(), s.cfg.MaxFuture); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error()+": at most "+s.cfg.MaxFuture.String()+" ahead")
		return
	}
	if s.b.Writes != nil {
		// Before any store is touched: a store that runs out of disk
		// may not fail cleanly (Pebble panics on a failed WAL write).
		// Counted; the gate logs its own transitions, not each tag.
		if err := s.b.Writes.Err(); err != nil {
			tagsRefusedByGate.Inc()
			writeError(ctx, fasthttp.StatusServiceUnavailable, "tag not stored, retry later: "+err.Error())
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, writesHeldRetryAfter)
			return
		}
	}
	sc.json = schemas.AppendUserTagJSON(sc.json[:0], &sc.tag)
	// The event log may keep the key and value after Publish returns (a
	// time-out leaves them queued), so they get their own memory.
	key, err := schemas.AppendEventKey(nil, &sc.tag)
	if err == nil {
		var value []byte
		value, err = schemas.AppendEventValue(nil, &sc.tag)
		if err == nil {
			err = s.storeTag(sc, key, value)
		}
	}
	if err != nil {
		if isDataError(err) {
			// Validation let through what a store refuses as data: the
			// client's input, not an outage (and not retryable).
			s.log.Warn("user tag refused by a store as data", "request_id", rid, "cookie", sc.tag.Cookie, "err", err)
			writeError(ctx, fasthttp.StatusBadRequest, "tag refused by the store as invalid data")
			return
		}
		if !errors.Is(err, breaker.ErrOpen) { // refusals are counted, not logged one by one
			s.log.Error("user tag not accepted", "request_id", rid, "cookie", sc.tag.Cookie, "err", err)
		}
		writeUnavailable(ctx, err, "tag not stored, retry: "+err.Error())
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// storeTag appends the tag to the profile store, then publishes its event.
func (s *Server) storeTag(sc *tagScratch, key, value []byte) error {
	// Both breakers admit the tag before either backend is touched: with
	// the event log down, a profile write would only be redone by the
	// client's retry.
	pt, err := s.breakers.profiles.allow()
	if err != nil {
		return err
	}
	et, err := s.breakers.events.allow()
	if err != nil {
		s.breakers.profiles.Cancel(pt)
		return err
	}
	bctx, cancel := s.backendContext()
	defer cancel()

	start := time.Now()
	err = s.b.Profiles.Append(bctx, &sc.tag, sc.json)
	opProfileAppend.done(start, err)
	s.breakers.profiles.done(pt, err)
	if err == nil && bctx.Err() != nil {
		// The profile store used up the deadline: the event log is
		// not asked, and not blamed.
		err = bctx.Err()
	}
	if err != nil {
		s.breakers.events.Cancel(et)
		return err
	}
	start = time.Now()
	err = s.b.Events.Publish(bctx, key, value)
	opEventPublish.done(start, err)
	s.breakers.events.done(et, err)
	return err
}
