// Package fullretention benchmarks the aggregates store at full retention:
// a store holding 24 h of event time at 1,000 tags/s (86.4 M tags), filled
// through the pipeline's own write path, then random 10-minute queries over
// all 8 filter combinations, on Pebble and on PostgreSQL.
//
// The benchmark is a test behind the benchfull build tag, so that `make
// test` never runs it:
//
//	go test -tags benchfull -run TestFullRetention -timeout 4h -v ./bench/fullretention
//
// Parameters (environment, with defaults):
//
//	ALLEZON_BENCH_HOURS      24          hours of event time to fill (fractions allowed: 0.25)
//	ALLEZON_BENCH_RATE       1000        tags per second of event time
//	ALLEZON_BENCH_QUERIES    1000        random queries per backend
//	ALLEZON_BENCH_BACKENDS   pebble,postgres
//	ALLEZON_BENCH_OUT        (none)      path of the results JSON
//	ALLEZON_BENCH_SEED       1           generator and query seed
//	ALLEZON_BENCH_FLUSH      10          seconds of event time per commit and partition
//	ALLEZON_BENCH_CHECK      10          check one block of 8 queries (one per filter set) in this many
//	ALLEZON_BENCH_SETTLE     60          seconds between the two query passes
//	ALLEZON_BENCH_PG_STATEMENTS  (off)   1: load pg_stat_statements and report the fill's time per statement
//
// # Fill: the pipeline's write path minus Kafka
//
// Tags come from loadgen.NewGenerator (SPEC's data shape) in event-time
// order. Each is routed to one of 2 partitions exactly as the gateway's
// producer does (sarama's hash partitioner over the Avro EventKey) and
// gets that partition's next offset; each partition's tags are summed into
// full cells as the worker does (schemas.CellOf, count and price added),
// and every ALLEZON_BENCH_FLUSH seconds of event time each partition's sums
// are written with the store's own Commit(deltas, offsets), the offsets
// being a compare-and-set on the partition's previous offset, by one
// committer goroutine per partition, concurrently, as the worker's claims
// do. What is left out: Kafka (produce, fetch, Avro decoding), the
// worker's wall-clock flush ticker (it flushes every second of wall time,
// whatever the event time), and retention (DropBefore drops nothing
// within 24 h). At the end the stored offsets must equal the number of
// tags routed to each partition.
//
// # Queries
//
// Each query is a random whole-minute 10-minute range inside the filled
// span, a random action, the filter sets in turn ({}, {origin}, {brand},
// {origin, brand}, {category}, ...), and filter values taken from one tag
// of that action inside the range, so the answer is non-empty. Store.Query
// is called directly (the gateway adds only JSON formatting), one query at
// a time, each timed, in two passes: right after the fill (Pebble may still
// be compacting, PostgreSQL's autovacuum starting), and again
// ALLEZON_BENCH_SETTLE seconds later, the steady state reported as the
// headline. The same queries run on every backend; their answers
// must agree between backends, and a sample (ALLEZON_BENCH_CHECK) is
// checked against a reference re-computed by regenerating every tag of the
// query's range.
//
// # Results
//
// A readable table goes to the test log (run with -v); ALLEZON_BENCH_OUT
// gets the JSON: per backend the fill (time, commits, cells, rollup rows,
// commit latency, progress), the size on disk (Pebble directory;
// pg_total_relation_size of the aggregates tables), both query passes
// (p50/p90/p99/max overall and per filter set, share of non-empty answers,
// reference checks), a linear estimate of the 24 h fill, for PostgreSQL
// EXPLAIN (ANALYZE, BUFFERS) of each filter set's slowest query and for
// Pebble the LSM's shape; and the machine (nproc, memory, Go and
// PostgreSQL versions, load average before and after: the figures are only
// as quiet as the machine was).
package fullretention
