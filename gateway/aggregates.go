package gateway

import (
	"errors"
	"strconv"
	"time"

	"github.com/allezon/allezon/schemas"
	"github.com/valyala/fasthttp"
)

// maxAggregateMinutes is SPEC's longest /aggregates range.
const maxAggregateMinutes = 10

// aggregateKind is one requested aggregate column.
type aggregateKind uint8

const (
	aggCount aggregateKind = iota
	aggSumPrice
)

// aggregatesRequest is a parsed POST /aggregates request.
type aggregatesRequest struct {
	q    schemas.AggregateQuery
	aggs []aggregateKind // columns in the order asked
}

// aggregates handles POST /aggregates; body is the expected answer in a
// debug build (empty otherwise).
func (s *Server) aggregates(ctx *fasthttp.RequestCtx, rid string, body []byte) {
	req, err := parseAggregatesRequest(ctx.QueryArgs())
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	t, err := s.breakers.aggregates.allow()
	if err != nil {
		writeUnavailable(ctx, err, "aggregates store unavailable, retry: "+err.Error())
		return
	}
	bctx, cancel := s.backendContext()
	defer cancel()
	start := time.Now()
	totals, err := s.b.Aggregates.Query(bctx, &req.q)
	opAggregateQuery.done(start, err)
	s.breakers.aggregates.done(t, err)
	if err == nil && len(totals) != req.q.Minutes() {
		err = errors.New("aggregates store returned " + strconv.Itoa(len(totals)) + " minutes, want " + strconv.Itoa(req.q.Minutes()))
	}
	if err != nil {
		if isDataError(err) {
			// Validation let through what the store refuses as data.
			s.log.Warn("aggregates query refused by the store as data", "request_id", rid, "err", err)
			writeError(ctx, fasthttp.StatusBadRequest, "query refused by the aggregates store as invalid data")
			return
		}
		s.log.Error("aggregates query failed", "request_id", rid, "err", err)
		writeUnavailable(ctx, err, "aggregates store unavailable, retry")
		return
	}
	answer := appendAggregatesJSON(make([]byte, 0, 256+64*len(totals)), &req, totals)
	debugCompare(s.log, endpointAggregates, rid, 0, body, answer)
	writeJSON(ctx, answer)
}

func parseAggregatesRequest(args *fasthttp.Args) (aggregatesRequest, error) {
	var req aggregatesRequest
	tr, err := singleArg(args, "time_range")
	if err != nil {
		return req, err
	}
	r, err := schemas.ParseTimeRange(string(tr))
	if err != nil {
		return req, err
	}
	if r.From%60000 != 0 || r.To%60000 != 0 {
		return req, errors.New("time_range: from and to must be whole minutes")
	}
	req.q.FromMinute, req.q.ToMinute = schemas.MinuteOf(r.From), schemas.MinuteOf(r.To)
	if req.q.ToMinute-req.q.FromMinute > maxAggregateMinutes {
		return req, errors.New("time_range: longer than 10 minutes")
	}
	a, err := singleArg(args, "action")
	if err != nil {
		return req, err
	}
	var ok bool
	if req.q.Action, ok = schemas.ParseAction(string(a)); !ok {
		return req, errors.New("action: must be VIEW or BUY")
	}
	if req.aggs, err = parseAggregateKinds(args.PeekMulti("aggregates")); err != nil {
		return req, err
	}
	return req, parseFilters(args, &req.q)
}

func parseAggregateKinds(vs [][]byte) ([]aggregateKind, error) {
	if len(vs) == 0 {
		return nil, errors.New("aggregates: at least one of COUNT, SUM_PRICE required")
	}
	kinds := make([]aggregateKind, len(vs))
	for i, v := range vs {
		switch string(v) {
		case "COUNT":
			kinds[i] = aggCount
		case "SUM_PRICE":
			kinds[i] = aggSumPrice
		default:
			return nil, errors.New("aggregates: unknown aggregate " + strconv.Quote(string(v)) + "; use COUNT or SUM_PRICE")
		}
	}
	return kinds, nil
}

// parseFilters reads the optional equality filters; an empty value is a
// filter on the empty string, which a tag may carry. A value no tag can
// carry (invalid UTF-8, NUL, longer than the field's limit) is a 400 by
// the tag's own rule (schemas.CheckValue), before any store is asked.
func parseFilters(args *fasthttp.Args, q *schemas.AggregateQuery) error {
	filters := [...]struct {
		field schemas.Field
		dim   schemas.Dims
		dst   *string
	}{
		{schemas.FieldOrigin, schemas.DimOrigin, &q.Origin},
		{schemas.FieldBrandID, schemas.DimBrand, &q.BrandID},
		{schemas.FieldCategoryID, schemas.DimCategory, &q.CategoryID},
	}
	for _, f := range filters {
		name := f.field.String()
		if !args.Has(name) {
			continue
		}
		v, err := singleArg(args, name)
		if err != nil {
			return err
		}
		if err := schemas.CheckValue(f.field, string(v)); err != nil {
			return err
		}
		*f.dst = string(v)
		q.Filter |= f.dim
	}
	return nil
}

// appendAggregatesJSON writes SPEC's {"columns": [...], "rows": [...]}: one
// row per minute of the range, zeros included, every value a string.
func appendAggregatesJSON(dst []byte, req *aggregatesRequest, totals []schemas.Totals) []byte {
	q := &req.q
	dst = append(dst, `{"columns":["1m_bucket","action"`...)
	if q.Filter&schemas.DimOrigin != 0 {
		dst = append(dst, `,"origin"`...)
	}
	if q.Filter&schemas.DimBrand != 0 {
		dst = append(dst, `,"brand_id"`...)
	}
	if q.Filter&schemas.DimCategory != 0 {
		dst = append(dst, `,"category_id"`...)
	}
	for _, k := range req.aggs {
		if k == aggCount {
			dst = append(dst, `,"count"`...)
		} else {
			dst = append(dst, `,"sum_price"`...)
		}
	}
	dst = append(dst, `],"rows":[`...)
	for i, t := range totals {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendAggregateRow(dst, req, q.FromMinute+int64(i), t)
	}
	return append(dst, "]}"...)
}

func appendAggregateRow(dst []byte, req *aggregatesRequest, minute int64, t schemas.Totals) []byte {
	q := &req.q
	dst = append(dst, `["`...)
	dst = schemas.AppendBucket(dst, minute)
	dst = append(dst, `","`...)
	dst = append(dst, q.Action.String()...)
	dst = append(dst, '"')
	if q.Filter&schemas.DimOrigin != 0 {
		dst = append(dst, ',')
		dst = schemas.AppendJSONString(dst, q.Origin)
	}
	if q.Filter&schemas.DimBrand != 0 {
		dst = append(dst, ',')
		dst = schemas.AppendJSONString(dst, q.BrandID)
	}
	if q.Filter&schemas.DimCategory != 0 {
		dst = append(dst, ',')
		dst = schemas.AppendJSONString(dst, q.CategoryID)
	}
	for _, k := range req.aggs {
		v := t.Count
		if k == aggSumPrice {
			v = t.SumPrice
		}
		dst = append(dst, `,"`...)
		dst = strconv.AppendInt(dst, v, 10)
		dst = append(dst, '"')
	}
	return append(dst, ']')
}
