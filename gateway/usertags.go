package gateway

import (
	"strconv"
	"sync"
	"time"

	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

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
func (s *Server) userTags(ctx *fasthttp.RequestCtx, rid string) {
	if len(ctx.PostBody()) > s.cfg.MaxTagBytes {
		// SPEC §1 lists an oversized body among the malformed inputs
		// that get a 400 (the query endpoints answer 413).
		writeError(ctx, fasthttp.StatusBadRequest, "user tag body larger than "+strconv.Itoa(s.cfg.MaxTagBytes)+" bytes")
		return
	}
	sc := tagScratchPool.Get().(*tagScratch)
	defer tagScratchPool.Put(sc)

	if err := schemas.DecodeUserTag(ctx.PostBody(), &sc.tag); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
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
		s.log.Error("user tag not accepted", "request_id", rid, "cookie", sc.tag.Cookie, "err", err)
		writeError(ctx, fasthttp.StatusServiceUnavailable, "tag not stored, retry: "+err.Error())
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (s *Server) storeTag(sc *tagScratch, key, value []byte) error {
	bctx, cancel := s.backendContext()
	defer cancel()

	start := time.Now()
	err := s.b.Profiles.Append(bctx, &sc.tag, sc.json)
	opProfileAppend.done(start, err)
	if err != nil {
		return err
	}
	start = time.Now()
	err = s.b.Events.Publish(bctx, key, value)
	opEventPublish.done(start, err)
	return err
}
