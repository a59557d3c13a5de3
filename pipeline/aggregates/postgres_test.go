package aggregates

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/allezon/allezon/schemas"
	"github.com/allezon/allezon/services/postgres"
	"github.com/allezon/allezon/services/postgres/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var pgBackend = backends[1]

// TestPostgresFailureMidwayLeavesNothing makes the LAST statement of a
// Commit's transaction fail (the full-cell upsert overflows bigint) after
// the offsets update and the five other rollup upserts ran: nothing of it
// may remain.
func TestPostgresFailureMidwayLeavesNothing(t *testing.T) {
	url := pgBackend.newURL(t)
	s := openStore(t, url)
	// Eight cells over 2 origins x 2 brands x 2 categories whose sums have
	// alternating signs: every rollup but the full cell sums to 0, and the
	// full cell (o1, b1, c1) holds nearly MaxInt64.
	const big = math.MaxInt64 - 10
	before := make(map[schemas.Cell]schemas.Totals)
	for i := range 8 {
		sign := int64(1)
		if (i&1)^(i>>1&1)^(i>>2&1) == 1 {
			sign = -1
		}
		c := schemas.Cell{Minute: 50, Origin: []string{"o1", "o2"}[i&1], BrandID: []string{"b1", "b2"}[i>>1&1], CategoryID: []string{"c1", "c2"}[i>>2&1]}
		before[c] = schemas.Totals{Count: 1, SumPrice: sign * big}
	}
	mustCommit(t, s, before, PartitionOffset{Topic: "t", Partition: 0, Prev: -1, Next: 8})

	failing := map[schemas.Cell]schemas.Totals{
		{Minute: 50, Origin: "o1", BrandID: "b1", CategoryID: "c1"}: {Count: 1, SumPrice: 20},
		{Minute: 60, Origin: "o1", BrandID: "b1", CategoryID: "c1"}: {Count: 1, SumPrice: 1},
	}
	err := s.Commit(context.Background(), failing, []PartitionOffset{{Topic: "t", Partition: 0, Prev: 8, Next: 10}})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22003" {
		t.Fatalf("Commit: err = %v, want bigint out of range (22003) from the full-cell upsert", err)
	}
	if got := mustOffsets(t, s, "t"); got[0] != 8 {
		t.Fatalf("offset after a failed commit = %d, want 8", got[0])
	}
	for _, f := range allFilters {
		for _, o := range []string{"o1", "o2"} {
			checkQuery(t, s, []map[schemas.Cell]schemas.Totals{before}, &schemas.AggregateQuery{
				FromMinute: 49, ToMinute: 61, Filter: f, Origin: o, BrandID: "b1", CategoryID: "c1"})
		}
	}
}

// TestPostgresQueryPlans checks with EXPLAIN that every filter set is an
// index scan with minute = ANY(...) in its index condition (one descent per
// minute), never a sequential scan, for custom and generic plans alike.
func TestPostgresQueryPlans(t *testing.T) {
	url := pgBackend.newURL(t)
	s := openStore(t, url)
	r := rand.New(rand.NewPCG(15, 16))
	mustCommit(t, s, benchDeltas(r, 5000, 28_000_005))
	// A day of minutes, so the small rollups have the size they reach with
	// 24 hours of retention.
	day := make(map[schemas.Cell]schemas.Totals)
	for m := range int64(1440) {
		for a := range schemas.Action(schemas.NumActions) {
			day[schemas.Cell{Minute: 27_998_000 + m, Action: a, Origin: "o", BrandID: "b", CategoryID: "c"}] = schemas.Totals{Count: 1}
		}
	}
	mustCommit(t, s, day)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		t.Fatalf("analyze: %v", err)
	}
	var minutes []string
	for i := range int64(10) {
		minutes = append(minutes, fmt.Sprint(28_000_001+i))
	}
	minutesLiteral := "'{" + strings.Join(minutes, ",") + "}'"
	for _, f := range allFilters {
		// EXPLAIN EXECUTE takes no bind parameters: literals.
		args := []string{minutesLiteral, "0"}
		types := []string{"bigint[]", "smallint"}
		for range dimColumns(f) {
			args = append(args, "'x-7'")
			types = append(types, "text")
		}
		// A custom plan (the values known), then a generic one (the plan
		// PostgreSQL may switch to for a statement pgx prepared).
		name := "q_" + filterName(f)
		if _, err := conn.Exec(ctx, "PREPARE "+name+"("+strings.Join(types, ", ")+") AS "+querySQL[f]); err != nil {
			t.Fatalf("prepare %s: %v", filterName(f), err)
		}
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			if _, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode); err != nil {
				t.Fatalf("set %s: %v", mode, err)
			}
			rows, err := conn.Query(ctx, "EXPLAIN EXECUTE "+name+"("+strings.Join(args, ", ")+")")
			if err != nil {
				t.Fatalf("explain: %v", err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatalf("explain %s: %v", filterName(f), err)
			}
			plan := strings.Join(lines, "\n")
			table := pgTables[planQuery(f).rollup]
			if strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, table+"_pkey") ||
				!strings.Contains(plan, "Index Cond: ((minute = ANY (") {
				t.Errorf("%s, filter %s: want an index scan of %s_pkey on minute = ANY, got\n%s", mode, filterName(f), table, plan)
			}
		}
	}
}

// TestPostgresSurvivesServerRestart: while the server is down calls fail
// (they do not hang past their context); once it is back, the very next
// call works on fresh connections.
func TestPostgresSurvivesServerRestart(t *testing.T) {
	cluster := pgtest.Shared(t)
	for _, tc := range []struct {
		name string
		down func() error
		// After a SIGKILL of the postmaster its backends live on until
		// they notice, and may still answer: no failure to check then.
		failsWhileDown bool
	}{
		{"immediate shutdown", cluster.Stop, true},
		{"postmaster killed", cluster.Kill, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := pgBackend.newURL(t)
			s := openStore(t, url)
			c := schemas.Cell{Minute: 5, Origin: "o", BrandID: "b", CategoryID: "c"}
			mustCommit(t, s, map[schemas.Cell]schemas.Totals{c: {Count: 1, SumPrice: 2}}, PartitionOffset{Topic: "t", Partition: 0, Prev: -1, Next: 1})
			q := &schemas.AggregateQuery{FromMinute: 5, ToMinute: 6}
			mustQuery(t, s, q)

			if err := tc.down(); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if tc.failsWhileDown {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := s.Query(ctx, q)
				cancel()
				if err == nil {
					t.Fatalf("Query succeeded while the server was down")
				}
			}
			if err := cluster.Start(); err != nil {
				t.Fatalf("start: %v", err)
			}
			if got := mustQuery(t, s, q); got[0] != (schemas.Totals{Count: 1, SumPrice: 2}) {
				t.Fatalf("after restart: %+v", got)
			}
			mustCommit(t, s, map[schemas.Cell]schemas.Totals{c: {Count: 1, SumPrice: 2}}, PartitionOffset{Topic: "t", Partition: 0, Prev: 1, Next: 2})
			if got := mustQuery(t, s, q); got[0] != (schemas.Totals{Count: 2, SumPrice: 4}) {
				t.Fatalf("commit after restart: %+v", got)
			}
		})
	}
}

// TestPostgresMultiHostDSN opens the store with a Patroni-style multi-host
// DSN whose first host is down: pgx must skip it and find the writable one
// (target_session_attrs=read-write), for migrations, commits and queries.
func TestPostgresMultiHostDSN(t *testing.T) {
	cluster := pgtest.Shared(t)
	single := pgBackend.newURL(t) // a fresh, migrated database
	db := single[strings.LastIndex(single, "/")+1 : strings.Index(single, "?")]
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now
	dsn := fmt.Sprintf("postgres://postgres@%s,127.0.0.1:%d/%s?sslmode=disable&target_session_attrs=read-write&connect_timeout=2",
		deadAddr, cluster.Port(), db)

	if err := postgres.Migrate(context.Background(), dsn); err != nil {
		t.Fatalf("migrate through a multi-host DSN: %v", err)
	}
	s := openStore(t, dsn)
	c := schemas.Cell{Minute: 9, Action: schemas.Buy, Origin: "o", BrandID: "b", CategoryID: "c"}
	mustCommit(t, s, map[schemas.Cell]schemas.Totals{c: {Count: 3, SumPrice: 30}}, PartitionOffset{Topic: "t", Partition: 1, Prev: -1, Next: 7})
	got := mustQuery(t, s, &schemas.AggregateQuery{Action: schemas.Buy, FromMinute: 9, ToMinute: 10, Filter: schemas.DimOrigin, Origin: "o"})
	if got[0] != (schemas.Totals{Count: 3, SumPrice: 30}) {
		t.Fatalf("query through a multi-host DSN: %+v", got)
	}
}

// TestPostgresDataErrors checks that what PostgreSQL refuses as data, not as
// an outage, is reported as ErrData, and that it changes nothing: an index
// row over the btree's limit (54000), invalid UTF-8 in a filter (22021)
// and an overflowing sum (22003).
func TestPostgresDataErrors(t *testing.T) {
	s := openStore(t, pgBackend.newURL(t))
	// Random text: PostgreSQL compresses a repetitive index row under the limit.
	var origin strings.Builder
	rng := rand.New(rand.NewPCG(1, 2))
	for origin.Len() < 6000 {
		fmt.Fprintf(&origin, "%016x", rng.Uint64())
	}
	long := schemas.Cell{Minute: 5, Origin: origin.String(), BrandID: "b", CategoryID: "c"}
	err := s.Commit(context.Background(), map[schemas.Cell]schemas.Totals{long: {Count: 1, SumPrice: 1}},
		[]PartitionOffset{{Topic: "t", Partition: 0, Prev: -1, Next: 1}})
	if !errors.Is(err, ErrData) {
		t.Fatalf("commit of a 6,000-byte origin: err = %v, want ErrData", err)
	}
	if got := mustOffsets(t, s, "t"); len(got) != 0 {
		t.Fatalf("offsets after a refused commit = %v, want none", got)
	}
	_, err = s.Query(context.Background(), &schemas.AggregateQuery{FromMinute: 0, ToMinute: 10, Filter: schemas.DimOrigin, Origin: "\xff\xfe"})
	if !errors.Is(err, ErrData) {
		t.Fatalf("query with invalid UTF-8: err = %v, want ErrData", err)
	}
	big := schemas.Cell{Minute: 6, Origin: "o", BrandID: "b", CategoryID: "c"}
	mustCommit(t, s, map[schemas.Cell]schemas.Totals{big: {Count: 1, SumPrice: math.MaxInt64}}, PartitionOffset{Topic: "t", Partition: 0, Prev: -1, Next: 1})
	err = s.Commit(context.Background(), map[schemas.Cell]schemas.Totals{big: {Count: 1, SumPrice: 1}},
		[]PartitionOffset{{Topic: "t", Partition: 0, Prev: 1, Next: 2}})
	if !errors.Is(err, ErrData) {
		t.Fatalf("overflowing commit: err = %v, want ErrData", err)
	}
	// An outage is not a data error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Query(ctx, &schemas.AggregateQuery{FromMinute: 0, ToMinute: 1}); err == nil || errors.Is(err, ErrData) {
		t.Fatalf("query on a cancelled context: err = %v, want an error that is not ErrData", err)
	}
}
