package aggregates

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/allezon/allezon/schemas"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgreSQL layout (services/postgres/migrations): one table per rollup,
// PRIMARY KEY (minute, action, dims...), plus offsets(topic, partition,
// next_offset).
//
// Commit is one READ COMMITTED transaction sent as one pipelined batch:
// first the offsets compare-and-set, then per rollup one
// INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO UPDATE adding the
// pre-aggregated rows. READ COMMITTED is enough to fence: a second committer
// of the same partition blocks on the offsets row lock, and when the first
// commits, PostgreSQL re-checks its WHERE next_offset = prev against the new
// row version and updates nothing; with Prev -1, the second INSERT waits on
// the unique index and then conflicts. Rows are sent in primary-key order and
// offsets sorted, so concurrent committers (two workers share rollup rows
// such as the minute's total) take row locks in one order and cannot
// deadlock.
//
// Query uses minute = ANY($1): a ScalarArrayOp index condition, one B-tree
// descent per minute (PostgreSQL 15 has no skip scan, so a minute range with
// an equality on a later key column would walk every row of those minutes
// instead). TestPostgresQueryPlans checks the plans with EXPLAIN.
// pgCommitOrder is the order of the upserts in a Commit: least shared rows
// first. Two partitions' committers share the rows of a minute's rollups
// (its total most of all) but almost never a full cell, so upserting the
// cells first and the total last keeps the shared row locks for the last
// moments of each transaction instead of its whole length; measured with
// the order of the enum, the total's upsert spent ~100 ms per commit
// waiting for the other partition's transaction (bench/fullretention).
// Every committer uses this one order, so locks are still taken in one
// global order and cannot deadlock.
var pgCommitOrder = [numRollups]rollup{rollCell, rollBrandCategory, rollOrigin, rollBrand, rollCategory, rollTotal}

var pgTables = [numRollups]string{
	rollTotal:         "agg_total",
	rollOrigin:        "agg_origin",
	rollBrand:         "agg_brand",
	rollCategory:      "agg_category",
	rollBrandCategory: "agg_brand_category",
	rollCell:          "agg_cell",
}

const (
	// insertOffsetSQL claims a partition never committed (Prev -1): a row
	// already there means another committer got it first.
	insertOffsetSQL = `INSERT INTO offsets (topic, partition, next_offset) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`
	updateOffsetSQL = `UPDATE offsets SET next_offset = $4 WHERE topic = $1 AND partition = $2 AND next_offset = $3`
	readOffsetSQL   = `SELECT next_offset FROM offsets WHERE topic = $1 AND partition = $2`
	offsetsSQL      = `SELECT partition, next_offset FROM offsets WHERE topic = $1`

	// maxMinutesPerStatement bounds the minute array of one query statement;
	// longer (unusual) ranges take several statements.
	maxMinutesPerStatement = 1440
)

var (
	upsertSQL [numRollups]string
	deleteSQL [numRollups]string
	// querySQL is indexed by the filter set (schemas.Dims).
	querySQL [schemas.AllDims + 1]string
)

func init() {
	for r := range numRollups {
		upsertSQL[r] = buildUpsert(r)
		deleteSQL[r] = "DELETE FROM " + pgTables[r] + " WHERE minute < $1"
	}
	for f := range querySQL {
		querySQL[f] = buildQuery(schemas.Dims(f))
	}
}

// dimColumns are the columns of the dimensions in d, in key order.
func dimColumns(d schemas.Dims) []string {
	var cols []string
	if d&schemas.DimOrigin != 0 {
		cols = append(cols, "origin")
	}
	if d&schemas.DimBrand != 0 {
		cols = append(cols, "brand_id")
	}
	if d&schemas.DimCategory != 0 {
		cols = append(cols, "category_id")
	}
	return cols
}

func buildUpsert(r rollup) string {
	dims := dimColumns(rollupDims[r])
	key := append([]string{"minute", "action"}, dims...)
	params := []string{"$1::bigint[]", "$2::smallint[]"}
	for i := range dims {
		params = append(params, fmt.Sprintf("$%d::text[]", i+3))
	}
	params = append(params, fmt.Sprintf("$%d::bigint[]", len(dims)+3), fmt.Sprintf("$%d::bigint[]", len(dims)+4))
	return fmt.Sprintf(`INSERT INTO %s AS t (%s, count, sum_price) SELECT * FROM unnest(%s) `+
		`ON CONFLICT (%s) DO UPDATE SET count = t.count + excluded.count, sum_price = t.sum_price + excluded.sum_price`,
		pgTables[r], strings.Join(key, ", "), strings.Join(params, ", "), strings.Join(key, ", "))
}

// buildQuery sums, per minute, the rows of the rollup answering filter; on a
// point rollup that is one row per minute, on the full-cell rollup (filters
// {origin, brand} and {origin, category}) a short key-prefix range.
func buildQuery(filter schemas.Dims) string {
	conds := []string{"minute = ANY($1)", "action = $2"}
	for i, col := range dimColumns(filter) {
		conds = append(conds, fmt.Sprintf("%s = $%d", col, i+3))
	}
	return fmt.Sprintf("SELECT minute, sum(count)::bigint, sum(sum_price)::bigint FROM %s WHERE %s GROUP BY minute",
		pgTables[planQuery(filter).rollup], strings.Join(conds, " AND "))
}

// pgStore is the PostgreSQL backend.
type pgStore struct {
	pool *pgxpool.Pool
	memo *dropMemo
}

func openPostgres(ctx context.Context, dsn string, opts Options) (*pgStore, error) {
	cfg, err := pgxpool.ParseConfig(dsn) // pgx redacts the password in its errors
	if err != nil {
		return nil, fmt.Errorf("aggregates: postgres DSN: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	// Ping every connection taken from the pool (one round trip; the store
	// makes a few calls a second): after a server restart or a failover the
	// pool's idle connections are dead, and this drops them before use
	// instead of failing the call.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("aggregates: postgres pool: %w", err)
	}
	return &pgStore{pool: pool, memo: newDropMemo()}, nil
}

func (s *pgStore) Commit(ctx context.Context, deltas map[schemas.Cell]schemas.Totals, offsets []PartitionOffset) error {
	offsets, err := sortedOffsets(offsets)
	if err != nil {
		return err
	}
	if len(deltas) == 0 && len(offsets) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, o := range offsets {
		if o.Prev < 0 {
			batch.Queue(insertOffsetSQL, o.Topic, o.Partition, o.Next)
		} else {
			batch.Queue(updateOffsetSQL, o.Topic, o.Partition, o.Prev, o.Next)
		}
	}
	rolls := expand(deltas)
	for _, r := range pgCommitOrder {
		if len(rolls[r]) > 0 {
			batch.Queue(upsertSQL[r], upsertArgs(r, rolls[r])...)
		}
	}
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		return runCommitBatch(ctx, tx, batch, offsets)
	})
	s.memo.wrote(minMinute(deltas))
	if err != nil {
		s.resetOnFailover(err)
		return fmt.Errorf("aggregates: postgres commit: %w", dataError(err))
	}
	return nil
}

// runCommitBatch sends the batch and checks each offset statement changed
// exactly one row; any failure returns an error, so the transaction rolls back.
func runCommitBatch(ctx context.Context, tx pgx.Tx, batch *pgx.Batch, offsets []PartitionOffset) error {
	br := tx.SendBatch(ctx, batch)
	for _, o := range offsets {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return fmt.Errorf("offset %s/%d: %w", o.Topic, o.Partition, err)
		}
		if tag.RowsAffected() != 1 {
			if err := br.Close(); err != nil {
				return err
			}
			stored := int64(-1)
			err := tx.QueryRow(ctx, readOffsetSQL, o.Topic, o.Partition).Scan(&stored)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%w: %s/%d is not at %d (reading it: %v)", ErrFenced, o.Topic, o.Partition, o.Prev, err)
			}
			return fenced(o, stored)
		}
	}
	for r := len(offsets); r < batch.Len(); r++ {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("upsert: %w", err)
		}
	}
	return br.Close()
}

// upsertArgs turns a rollup's rows into the column arrays of its upsert,
// sorted by primary key (see the lock-order note above).
func upsertArgs(r rollup, rows map[schemas.Cell]schemas.Totals) []any {
	type row struct {
		c schemas.Cell
		t schemas.Totals
	}
	sorted := make([]row, 0, len(rows))
	for c, t := range rows {
		sorted = append(sorted, row{c, t})
	}
	slices.SortFunc(sorted, func(a, b row) int { return compareCells(&a.c, &b.c) })
	n := len(sorted)
	minutes, actions := make([]int64, n), make([]int16, n)
	counts, sums := make([]int64, n), make([]int64, n)
	d := rollupDims[r]
	var origins, brands, categories []string
	if d&schemas.DimOrigin != 0 {
		origins = make([]string, n)
	}
	if d&schemas.DimBrand != 0 {
		brands = make([]string, n)
	}
	if d&schemas.DimCategory != 0 {
		categories = make([]string, n)
	}
	for i, x := range sorted {
		minutes[i], actions[i] = x.c.Minute, int16(x.c.Action)
		counts[i], sums[i] = x.t.Count, x.t.SumPrice
		if origins != nil {
			origins[i] = x.c.Origin
		}
		if brands != nil {
			brands[i] = x.c.BrandID
		}
		if categories != nil {
			categories[i] = x.c.CategoryID
		}
	}
	args := []any{minutes, actions}
	for _, col := range [][]string{origins, brands, categories} {
		if col != nil {
			args = append(args, col)
		}
	}
	return append(args, counts, sums)
}

func (s *pgStore) Offsets(ctx context.Context, topic string) (map[int32]int64, error) {
	rows, err := s.pool.Query(ctx, offsetsSQL, topic)
	if err != nil {
		return nil, fmt.Errorf("aggregates: read offsets of %s: %w", topic, err)
	}
	out := make(map[int32]int64)
	var p int32
	var next int64
	_, err = pgx.ForEachRow(rows, []any{&p, &next}, func() error {
		out[p] = next
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("aggregates: read offsets of %s: %w", topic, err)
	}
	return out, nil
}

func (s *pgStore) Query(ctx context.Context, q *schemas.AggregateQuery) ([]schemas.Totals, error) {
	n, err := queryLen(q)
	if err != nil {
		return nil, err
	}
	out := make([]schemas.Totals, n)
	filter := q.Filter & schemas.AllDims
	args := []any{nil, int16(q.Action)}
	if filter&schemas.DimOrigin != 0 {
		args = append(args, q.Origin)
	}
	if filter&schemas.DimBrand != 0 {
		args = append(args, q.BrandID)
	}
	if filter&schemas.DimCategory != 0 {
		args = append(args, q.CategoryID)
	}
	minutes := make([]int64, 0, min(n, maxMinutesPerStatement))
	for start := 0; start < n; start += maxMinutesPerStatement {
		minutes = minutes[:0]
		for i := start; i < min(n, start+maxMinutesPerStatement); i++ {
			minutes = append(minutes, q.FromMinute+int64(i))
		}
		args[0] = minutes
		rows, err := s.pool.Query(ctx, querySQL[filter], args...)
		if err != nil {
			return nil, fmt.Errorf("aggregates: query: %w", dataError(err))
		}
		var m int64
		var t schemas.Totals
		_, err = pgx.ForEachRow(rows, []any{&m, &t.Count, &t.SumPrice}, func() error {
			i := m - q.FromMinute
			if i < 0 || i >= int64(n) {
				return fmt.Errorf("row for minute %d outside the query", m)
			}
			out[i] = t
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("aggregates: query: %w", dataError(err))
		}
	}
	return out, nil
}

func (s *pgStore) DropBefore(ctx context.Context, minute int64) error {
	gen, ok := s.memo.needed(minute)
	if !ok {
		return nil
	}
	batch := &pgx.Batch{}
	for r := range numRollups {
		batch.Queue(deleteSQL[r], minute)
	}
	// A batch outside a transaction runs as one implicit transaction.
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		s.resetOnFailover(err)
		return fmt.Errorf("aggregates: drop before minute %d: %w", minute, err)
	}
	s.memo.dropped(minute, gen)
	return nil
}

// dataError wraps err with ErrData when PostgreSQL refused the data itself:
// a data exception (class 22: invalid UTF-8, NUL, out of range) or a
// program limit (class 54: an index row over the btree's size limit).
func dataError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "54")) {
		return fmt.Errorf("%w: %w", ErrData, err)
	}
	return err
}

// resetOnFailover empties the pool when err says the server behind a
// connection stopped being a writable primary (shut down, or demoted in a
// Patroni switchover while the connection survived): new connections then
// go through the DSN's hosts and target_session_attrs again.
func (s *pgStore) resetOnFailover(err error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "25006" || strings.HasPrefix(pgErr.Code, "57P")) {
		s.pool.Reset()
	}
}

func (s *pgStore) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("aggregates: ping postgres: %w", err)
	}
	return nil
}

func (s *pgStore) Close() error {
	s.pool.Close()
	return nil
}
