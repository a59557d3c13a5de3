//go:build benchfull

package fullretention

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/allezon/allezon/broker"
	"github.com/allezon/allezon/loadgen"
	"github.com/allezon/allezon/pipeline/aggregates"
	"github.com/allezon/allezon/schemas"
	"github.com/allezon/allezon/services/postgres"
	"github.com/allezon/allezon/services/postgres/pgtest"
	"github.com/cockroachdb/pebble/v2"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const (
	topic      = broker.DefaultTopic
	partitions = broker.DefaultPartitions
	// fullTags is the full run: 24 h at 1,000 tags/s.
	fullTags = 24 * 3600 * 1000
	// commitTimeout bounds one Commit, as the worker's storeTimeout does
	// (with room: a slow commit is measured, not cut).
	commitTimeout = 60 * time.Second
	queryTimeout  = 60 * time.Second
	// maxRangeMinutes is SPEC's longest /aggregates range.
	maxRangeMinutes = 10
)

// params are the benchmark's knobs (see the package doc).
type params struct {
	Hours        float64  `json:"hours"`
	Rate         int64    `json:"rate_tags_per_s"`
	Queries      int      `json:"queries"`
	Backends     []string `json:"backends"`
	Seed         int64    `json:"seed"`
	FlushSeconds int64    `json:"flush_event_seconds"`
	CheckEvery   int      `json:"check_one_block_of_8_in"`
	PGStatements bool     `json:"pg_stat_statements"`
	SettleSec    int64    `json:"settle_s_between_query_passes"`
	Out          string   `json:"-"`
}

func loadParams(t *testing.T) params {
	p := params{Hours: 24, Rate: 1000, Queries: 1000, Backends: []string{"pebble", "postgres"}, Seed: 1, FlushSeconds: 10, CheckEvery: 10, SettleSec: 60}
	envFloat := func(name string, dst *float64) {
		if v := os.Getenv(name); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f > 0) {
				t.Fatalf("%s=%q: want a positive number", name, v)
			}
			*dst = f
		}
	}
	envInt := func(name string, dst *int64) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				t.Fatalf("%s=%q: want a positive integer", name, v)
			}
			*dst = n
		}
	}
	envFloat("ALLEZON_BENCH_HOURS", &p.Hours)
	envInt("ALLEZON_BENCH_RATE", &p.Rate)
	q := int64(p.Queries)
	envInt("ALLEZON_BENCH_QUERIES", &q)
	p.Queries = int(q)
	if v := os.Getenv("ALLEZON_BENCH_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("ALLEZON_BENCH_SEED=%q: want an integer", v)
		}
		p.Seed = n
	}
	envInt("ALLEZON_BENCH_FLUSH", &p.FlushSeconds)
	c := int64(p.CheckEvery)
	envInt("ALLEZON_BENCH_CHECK", &c)
	p.CheckEvery = int(c)
	if v := os.Getenv("ALLEZON_BENCH_BACKENDS"); v != "" {
		p.Backends = nil
		for b := range strings.SplitSeq(v, ",") {
			b = strings.TrimSpace(b)
			if b != "pebble" && b != "postgres" {
				t.Fatalf("ALLEZON_BENCH_BACKENDS: unknown backend %q (want pebble, postgres)", b)
			}
			p.Backends = append(p.Backends, b)
		}
	}
	p.Out = os.Getenv("ALLEZON_BENCH_OUT")
	p.PGStatements = os.Getenv("ALLEZON_BENCH_PG_STATEMENTS") == "1"
	if v := os.Getenv("ALLEZON_BENCH_SETTLE"); v != "" { // 0 is allowed
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			t.Fatalf("ALLEZON_BENCH_SETTLE=%q: want seconds >= 0", v)
		}
		p.SettleSec = n
	}
	return p
}

// stream is the generated tags: tag i has loadgen's content for index i
// and event time start + floor(i*1000/rate) ms (at 1,000 tags/s exactly the
// generator's own time, 1 ms per tag).
type stream struct {
	seed    int64
	startMs int64
	rate    int64
	n       int64 // number of tags
}

func newStream(p params) *stream {
	g := loadgen.NewGenerator(p.Seed, loadgen.DefaultStart)
	return &stream{seed: p.Seed, startMs: g.StartMs(), rate: p.Rate, n: int64(math.Round(p.Hours * 3600 * float64(p.Rate)))}
}

func (s *stream) timeOf(i int64) int64 { return s.startMs + i*1000/s.rate }

// firstAt is the index of the first tag at or after event time ms, within
// [0, n].
func (s *stream) firstAt(ms int64) int64 {
	d := ms - s.startMs
	if d <= 0 {
		return 0
	}
	return min((d*s.rate+999)/1000, s.n)
}

// tag is tag i; g must come from newGen (one per goroutine: generators are
// not safe for concurrent use).
func (s *stream) tag(g *loadgen.Generator, i int64) schemas.UserTag {
	t := g.Tag(i)
	t.TimeMs = s.timeOf(i)
	return t
}

func (s *stream) newGen() *loadgen.Generator {
	return loadgen.NewGenerator(s.seed, time.UnixMilli(s.startMs))
}

// firstMinute and endMinute bound the filled minutes [first, end).
func (s *stream) firstMinute() int64 { return schemas.MinuteOf(s.startMs) }
func (s *stream) endMinute() int64   { return schemas.MinuteOf(s.timeOf(s.n-1)) + 1 }

// ---------------------------------------------------------------- results

type results struct {
	Benchmark string        `json:"benchmark"`
	Started   time.Time     `json:"started"`
	Params    params        `json:"params"`
	Machine   machine       `json:"machine"`
	WritePath string        `json:"write_path"`
	Tags      int64         `json:"tags"`
	Minutes   int64         `json:"minutes"`
	Backends  []backendRes  `json:"backends"`
	CrossDiff *crossBackend `json:"cross_backend,omitempty"`
}

type machine struct {
	NumCPU      int    `json:"nproc"`
	MemTotalKiB int64  `json:"mem_total_kib"`
	CPUModel    string `json:"cpu_model"`
	GoVersion   string `json:"go_version"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	Postgres    string `json:"postgres_version,omitempty"`
	LoadStart   string `json:"loadavg_start"`
	LoadEnd     string `json:"loadavg_end"`
}

type backendRes struct {
	Backend string  `json:"backend"`
	Fill    fillRes `json:"fill"`
	Size    sizeRes `json:"size"`
	// Queries is the pass after the store settled (ALLEZON_BENCH_SETTLE
	// seconds after the fill): the steady state, the headline.
	// AfterFill is the same queries right after the fill, while the store
	// may still be compacting (Pebble) or vacuuming (PostgreSQL).
	Queries   queryRes        `json:"queries"`
	AfterFill queryRes        `json:"queries_right_after_fill"`
	Estimate  estimate        `json:"full_run_estimate"`
	Postgres  *postgresDetail `json:"postgres,omitempty"`
	Pebble    *pebbleDetail   `json:"pebble,omitempty"`
}

// pebbleDetail is the LSM's shape after the queries (what a Get has to
// look through: every Get of a merge-only key reads every level).
type pebbleDetail struct {
	ReadAmp        int     `json:"read_amp"`
	L0Sublevels    int32   `json:"l0_sublevels"`
	L0Tables       int64   `json:"l0_tables"`
	TablesByLevel  []int64 `json:"tables_by_level"`
	BytesByLevel   []int64 `json:"bytes_by_level"`
	CompactionDebt uint64  `json:"compaction_debt_bytes"`
	Metrics        string  `json:"metrics"`
}

type fillRes struct {
	Seconds      float64 `json:"seconds"`
	Tags         int64   `json:"tags"`
	TagsPerSec   float64 `json:"tags_per_s"`
	Commits      int     `json:"commits"`
	CellsWritten int64   `json:"cells_written"`
	// RollupRows is what the commits asked the store to upsert (merge):
	// per commit, the distinct keys of each of the six rollups.
	RollupRows       int64          `json:"rollup_rows_written"`
	RollupRowsByName map[string]int `json:"rollup_rows_written_by_rollup"`
	RollupRowsPerSec float64        `json:"rollup_rows_per_s"`
	CommitMs         percentiles    `json:"commit_ms"`
	// CommitBusy is the committers' summed time inside Commit over (wall
	// time x partitions): near 1 means the store is the bottleneck.
	CommitBusy float64 `json:"commit_busy_share"`
	// GenBusy is the share of wall time the generating goroutine worked
	// (the rest it waited for a committer).
	GenBusy float64 `json:"generator_busy_share"`
	// ProcessCPU is this test process's CPU time during the fill (the
	// benchmark, the store client, and for Pebble the store itself).
	ProcessCPUSec float64 `json:"process_cpu_s"`
	// ProcessWrote is what this process wrote with write(2) during the
	// fill (/proc/self/io wchar): for Pebble every byte the store wrote
	// (WAL, flushes, compactions); for PostgreSQL only the client side.
	ProcessWrote int64      `json:"process_write_bytes"`
	Progress     []progress `json:"progress"`
}

type progress struct {
	Done       float64 `json:"done"` // share of tags
	ElapsedSec float64 `json:"elapsed_s"`
	TagsPerSec float64 `json:"tags_per_s_in_slice"`
}

type sizeRes struct {
	Bytes   int64            `json:"bytes"`
	What    string           `json:"what"`
	ByTable map[string]int64 `json:"by_table,omitempty"`
	Rows    map[string]int64 `json:"rows_by_table,omitempty"`
}

type percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type queryRes struct {
	Overall       percentiles            `json:"latency_ms"`
	ByCombination map[string]percentiles `json:"latency_ms_by_filters"`
	NonEmptyShare float64                `json:"non_empty_share"`
	Checked       int                    `json:"checked_against_reference"`
	Mismatches    int                    `json:"mismatches"`
	Seconds       float64                `json:"seconds"`
	Explain       map[string]string      `json:"explain_slowest_by_filters,omitempty"`
	lat           []time.Duration
}

type estimate struct {
	Tags       int64   `json:"tags"`
	FillSecLin float64 `json:"fill_seconds_linear"`
	Note       string  `json:"note"`
}

type postgresDetail struct {
	Tables map[string]pgTableStats `json:"tables"`
	// Statements is pg_stat_statements over the fill (with
	// ALLEZON_BENCH_PG_STATEMENTS=1), by total execution time.
	Statements []pgStatement `json:"fill_statements,omitempty"`
}

type pgStatement struct {
	Query   string  `json:"query"`
	Calls   int64   `json:"calls"`
	TotalMs float64 `json:"total_ms"`
	MeanMs  float64 `json:"mean_ms"`
	Rows    int64   `json:"rows"`
}

type pgTableStats struct {
	LiveTuples      int64  `json:"n_live_tup"`
	LastAutovacuum  string `json:"last_autovacuum"`
	LastAutoanalyze string `json:"last_autoanalyze"`
}

type crossBackend struct {
	Compared   int `json:"compared_queries"`
	Mismatches int `json:"mismatches"`
}

func pctl(ds []time.Duration) percentiles {
	if len(ds) == 0 {
		return percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) float64 {
		k := max(int(math.Ceil(p*float64(len(s))))-1, 0)
		return ms(s[k])
	}
	return percentiles{N: len(s), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// ------------------------------------------------------------------- test

const writePath = "pipeline write path minus Kafka: loadgen tags in event-time order, routed to 2 partitions " +
	"by sarama's hash partitioner over the Avro EventKey (as the gateway's producer), summed per partition into " +
	"full cells (schemas.CellOf, count/price added, as the worker), committed per partition every " +
	"flush_event_seconds of event time with Store.Commit(deltas, offsets) including the offset compare-and-set, " +
	"one committer goroutine per partition; no Kafka, no Avro decode, no retention drops"

func TestFullRetention(t *testing.T) {
	p := loadParams(t)
	s := newStream(p)
	if s.n <= 0 {
		t.Fatal("no tags to fill")
	}
	res := &results{
		Benchmark: "fullretention", Started: time.Now().UTC(), Params: p, Machine: machineInfo(),
		WritePath: writePath, Tags: s.n, Minutes: s.endMinute() - s.firstMinute(),
	}
	t.Logf("fill: %d tags (%.4g h at %d tags/s of event time), %d minutes; %d queries; backends %v",
		s.n, p.Hours, p.Rate, res.Minutes, p.Queries, p.Backends)
	qs := makeQueries(s, p)
	answers := make(map[string][][]schemas.Totals)
	for _, b := range p.Backends {
		var br backendRes
		if !t.Run(b, func(t *testing.T) {
			br = runBackend(t, b, p, s, qs, res, answers)
		}) && br.Backend == "" {
			continue // it failed before it had figures
		}
		res.Backends = append(res.Backends, br)
	}
	if len(answers) == 2 {
		a, b := answers["pebble"], answers["postgres"]
		cb := &crossBackend{}
		for i := range min(len(a), len(b)) {
			if a[i] == nil || b[i] == nil {
				continue
			}
			cb.Compared++
			if !slices.Equal(a[i], b[i]) {
				cb.Mismatches++
				if cb.Mismatches <= 5 {
					t.Errorf("query %d (%s): pebble %v, postgres %v", i, describe(&qs[i].q), a[i], b[i])
				}
			}
		}
		res.CrossDiff = cb
		t.Logf("pebble vs postgres: %d queries compared, %d differ", cb.Compared, cb.Mismatches)
	}
	res.Machine.LoadEnd = loadavg()
	logTable(t, res)
	if p.Out != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(p.Out), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p.Out, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("results written to %s", p.Out)
	} else {
		t.Log("ALLEZON_BENCH_OUT not set: no results JSON written")
	}
}

func runBackend(t *testing.T, backend string, p params, s *stream, qs []benchQuery, res *results, answers map[string][][]schemas.Totals) backendRes {
	ctx := context.Background()
	br := backendRes{Backend: backend}
	var url, pebbleDir, dsn string
	switch backend {
	case "pebble":
		pebbleDir = filepath.Join(t.TempDir(), "aggregates")
		url = "pebble://" + pebbleDir
	case "postgres":
		dsn = pgtest.Start(t)
		if err := postgres.Migrate(ctx, dsn); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		url = dsn
		res.Machine.Postgres = pgVersion(t, dsn)
		if p.PGStatements {
			enableStatements(t, dsn)
		}
	}
	store, err := aggregates.Open(ctx, url, aggregates.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", backend, err)
	}
	closed := false
	defer func() {
		if !closed {
			store.Close()
		}
	}()

	br.Fill = fill(t, store, p, s)
	t.Logf("%s fill: %.1f s, %d tags (%.0f tags/s), %d commits, %d cells, %d rollup rows (%.0f rows/s), commit p50 %.1f ms p99 %.1f ms, committers busy %.0f%%, generator busy %.0f%%",
		backend, br.Fill.Seconds, br.Fill.Tags, br.Fill.TagsPerSec, br.Fill.Commits, br.Fill.CellsWritten,
		br.Fill.RollupRows, br.Fill.RollupRowsPerSec, br.Fill.CommitMs.P50, br.Fill.CommitMs.P99,
		100*br.Fill.CommitBusy, 100*br.Fill.GenBusy)
	br.Estimate = estimate{
		Tags:       fullTags,
		FillSecLin: math.Round(br.Fill.Seconds * float64(fullTags) / float64(br.Fill.Tags)),
		Note: "this run's fill time scaled linearly to 86.4 M tags, not a measurement: it holds only if the per-tag " +
			"cost stays what it was here (see fill.progress for its trend within this run)",
	}
	switch backend {
	case "pebble":
		br.Size = sizeRes{Bytes: dirSize(t, pebbleDir), What: "Pebble directory (sstables, WAL, manifest) right after the fill"}
	case "postgres":
		br.Size, br.Postgres = pgSize(t, dsn)
		if p.PGStatements {
			br.Postgres.Statements = statements(t, dsn)
			for _, st := range br.Postgres.Statements {
				t.Logf("pg_stat_statements: %8.0f ms total, %6d calls, %8.2f ms mean, %9d rows: %.90s", st.TotalMs, st.Calls, st.MeanMs, st.Rows, st.Query)
			}
		}
	}
	t.Logf("%s size: %.1f MiB (%s)", backend, float64(br.Size.Bytes)/(1<<20), br.Size.What)

	var first [][]schemas.Totals
	t.Log("query pass 1, right after the fill:")
	br.AfterFill, first = runQueries(t, store, s, qs)
	t.Logf("waiting %d s for the store to settle (ALLEZON_BENCH_SETTLE)", p.SettleSec)
	time.Sleep(time.Duration(p.SettleSec) * time.Second)
	t.Log("query pass 2, settled (the headline):")
	br.Queries, answers[backend] = runQueries(t, store, s, qs)
	for i := range qs {
		if !slices.Equal(first[i], answers[backend][i]) {
			t.Errorf("query %d (%s): pass 1 answered %v, pass 2 %v", i, describe(&qs[i].q), first[i], answers[backend][i])
		}
	}
	switch backend {
	case "postgres":
		br.Queries.Explain = explainSlowest(t, dsn, qs, br.Queries)
	case "pebble":
		closed = true
		if err := store.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		br.Pebble = pebbleShape(t, pebbleDir)
		t.Logf("pebble LSM after the queries: read amp %d, L0 %d tables in %d sublevels, compaction debt %.1f MiB\n%s",
			br.Pebble.ReadAmp, br.Pebble.L0Tables, br.Pebble.L0Sublevels, float64(br.Pebble.CompactionDebt)/(1<<20), br.Pebble.Metrics)
	}
	return br
}

// ------------------------------------------------------------------- fill

type batch struct {
	deltas map[schemas.Cell]schemas.Totals
	next   int64 // the partition's next offset after this batch
}

type commitStats struct {
	durs    []time.Duration
	busy    time.Duration
	commits int
	cells   int64
}

var rollupNames = [6]string{"total", "origin", "brand", "category", "brand_category", "cell"}

// rollupDims mirrors the store's six rollups (pipeline/aggregates/rollup.go),
// only to count the rows each commit writes.
var rollupDims = [5]schemas.Dims{0, schemas.DimOrigin, schemas.DimBrand, schemas.DimCategory, schemas.DimBrand | schemas.DimCategory}

func project(c schemas.Cell, d schemas.Dims) schemas.Cell {
	if d&schemas.DimOrigin == 0 {
		c.Origin = ""
	}
	if d&schemas.DimBrand == 0 {
		c.BrandID = ""
	}
	if d&schemas.DimCategory == 0 {
		c.CategoryID = ""
	}
	return c
}

func fill(t *testing.T, store aggregates.Store, p params, s *stream) fillRes {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		errOnce sync.Once
		fillErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { fillErr = err; cancel() })
	}

	// One committer per partition, as the worker has one claim goroutine
	// per partition; each keeps its own Prev for the compare-and-set.
	work := make([]chan batch, partitions)
	free := make([]chan map[schemas.Cell]schemas.Totals, partitions)
	stats := make([]commitStats, partitions)
	var wg sync.WaitGroup
	for part := range int32(partitions) {
		work[part] = make(chan batch, 1)
		free[part] = make(chan map[schemas.Cell]schemas.Totals, 3)
		for range 3 {
			free[part] <- make(map[schemas.Cell]schemas.Totals, 8192)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[part]
			prev := int64(-1)
			for b := range work[part] {
				if ctx.Err() == nil {
					cctx, ccancel := context.WithTimeout(ctx, commitTimeout)
					start := time.Now()
					err := store.Commit(cctx, b.deltas, []aggregates.PartitionOffset{{Topic: topic, Partition: part, Prev: prev, Next: b.next}})
					d := time.Since(start)
					ccancel()
					if err != nil {
						fail(fmt.Errorf("commit %s/%d %d->%d: %w", topic, part, prev, b.next, err))
					} else {
						prev = b.next
						st.durs = append(st.durs, d)
						st.busy += d
						st.commits++
						st.cells += int64(len(b.deltas))
					}
				}
				clear(b.deltas)
				free[part] <- b.deltas
			}
		}()
	}

	g := s.newGen()
	hash := sarama.NewHashPartitioner(topic)
	msg := &sarama.ProducerMessage{Topic: topic}
	var (
		key      []byte
		next     [partitions]int64
		sums     [partitions]map[schemas.Cell]schemas.Totals
		rowsBy   [6]int64
		sets     [5]map[schemas.Cell]struct{}
		genBusy  time.Duration
		progs    []progress
		cpuStart = cpuTime()
		wStart   = wchar()
	)
	for r := range sets {
		sets[r] = make(map[schemas.Cell]struct{}, 8192)
	}
	windowMs := p.FlushSeconds * 1000
	windows := (s.timeOf(s.n-1)-s.startMs)/windowMs + 1
	start := time.Now()
	lastProg, lastTags := start, int64(0)
	for w := int64(0); w < windows && ctx.Err() == nil; w++ {
		for part := range partitions {
			sums[part] = <-free[part]
		}
		busyFrom := time.Now()
		lo, hi := s.firstAt(s.startMs+w*windowMs), s.firstAt(s.startMs+(w+1)*windowMs)
		for i := lo; i < hi; i++ {
			tag := s.tag(g, i)
			key, _ = schemas.AppendEventKey(key[:0], &tag)
			msg.Key = sarama.ByteEncoder(key)
			part, err := hash.Partition(msg, partitions)
			if err != nil {
				t.Fatalf("partition: %v", err)
			}
			// As pipeline.cellSums.add.
			c := schemas.CellOf(&tag)
			v := sums[part][c]
			v.Add(schemas.Totals{Count: 1, SumPrice: int64(tag.Price)})
			sums[part][c] = v
			next[part]++
		}
		var toSend [partitions]bool
		for part := range partitions {
			m := sums[part]
			if len(m) == 0 {
				free[part] <- m
				continue
			}
			toSend[part] = true
			rowsBy[5] += int64(len(m))
			for r, d := range rollupDims {
				for c := range m {
					sets[r][project(c, d)] = struct{}{}
				}
				rowsBy[r] += int64(len(sets[r]))
				clear(sets[r])
			}
		}
		genBusy += time.Since(busyFrom)
		for part := range partitions {
			if toSend[part] {
				select {
				case work[part] <- batch{deltas: sums[part], next: next[part]}:
				case <-ctx.Done():
				}
			}
		}
		if (w+1)*10/windows != w*10/windows || w == windows-1 {
			now := time.Now()
			progs = append(progs, progress{
				Done:       math.Round(float64(hi)/float64(s.n)*1000) / 1000,
				ElapsedSec: math.Round(now.Sub(start).Seconds()*10) / 10,
				TagsPerSec: math.Round(float64(hi-lastTags) / now.Sub(lastProg).Seconds()),
			})
			t.Logf("fill %3.0f%%: %.0f s, %.0f tags/s in this slice", 100*float64(hi)/float64(s.n), now.Sub(start).Seconds(), progs[len(progs)-1].TagsPerSec)
			lastProg, lastTags = now, hi
		}
	}
	for part := range partitions {
		close(work[part])
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := cpuTime() - cpuStart
	wrote := wchar() - wStart
	if fillErr != nil {
		t.Fatalf("fill: %v", fillErr)
	}

	// The stored offsets must be exactly the tags routed to each partition.
	stored, err := store.Offsets(context.Background(), topic)
	if err != nil {
		t.Fatalf("offsets: %v", err)
	}
	var total int64
	for part := range int32(partitions) {
		if stored[part] != next[part] {
			t.Fatalf("stored offset of partition %d = %d, want %d", part, stored[part], next[part])
		}
		total += next[part]
	}
	if total != s.n {
		t.Fatalf("routed %d tags, want %d", total, s.n)
	}

	fr := fillRes{Seconds: round3(wall.Seconds()), Tags: s.n, TagsPerSec: math.Round(float64(s.n) / wall.Seconds()),
		RollupRowsByName: map[string]int{}, GenBusy: round3(genBusy.Seconds() / wall.Seconds()),
		ProcessCPUSec: round3(cpu.Seconds()), ProcessWrote: wrote, Progress: progs}
	var all []time.Duration
	var busy time.Duration
	for _, st := range stats {
		all = append(all, st.durs...)
		busy += st.busy
		fr.Commits += st.commits
		fr.CellsWritten += st.cells
	}
	fr.CommitMs = pctl(all)
	fr.CommitBusy = round3(busy.Seconds() / (wall.Seconds() * partitions))
	for r, n := range rowsBy {
		fr.RollupRows += n
		fr.RollupRowsByName[rollupNames[r]] = int(n)
	}
	fr.RollupRowsPerSec = math.Round(float64(fr.RollupRows) / wall.Seconds())
	if fr.CellsWritten != rowsBy[5] {
		t.Fatalf("committed %d cells, counted %d", fr.CellsWritten, rowsBy[5])
	}
	return fr
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// ---------------------------------------------------------------- queries

type benchQuery struct {
	q     schemas.AggregateQuery
	check bool
	// want is the reference answer (checked queries), computed once and
	// shared by the backends.
	want []schemas.Totals
}

var comboNames = [8]string{"none", "origin", "brand", "origin+brand", "category", "origin+category", "brand+category", "origin+brand+category"}

func describe(q *schemas.AggregateQuery) string {
	var b strings.Builder
	fmt.Fprintf(&b, "minutes [%d,%d) %s", q.FromMinute, q.ToMinute, q.Action)
	if q.Filter&schemas.DimOrigin != 0 {
		fmt.Fprintf(&b, " origin=%s", q.Origin)
	}
	if q.Filter&schemas.DimBrand != 0 {
		fmt.Fprintf(&b, " brand=%s", q.BrandID)
	}
	if q.Filter&schemas.DimCategory != 0 {
		fmt.Fprintf(&b, " category=%s", q.CategoryID)
	}
	return b.String()
}

// makeQueries draws the query set, the same for every backend: query i uses
// filter set i%8; one block of 8 consecutive queries in CheckEvery is
// checked against the reference.
func makeQueries(s *stream, p params) []benchQuery {
	rng := rand.New(rand.NewPCG(uint64(p.Seed), 0xa66e_6a7e))
	g := s.newGen()
	first, end := s.firstMinute(), s.endMinute()
	span := end - first
	qlen := min(int64(maxRangeMinutes), span)
	qs := make([]benchQuery, p.Queries)
	for i := range qs {
		from := first + rng.Int64N(span-qlen+1)
		q := schemas.AggregateQuery{FromMinute: from, ToMinute: from + qlen, Action: schemas.Action(rng.IntN(schemas.NumActions)), Filter: schemas.Dims(i % 8)}
		lo, hi := s.firstAt(q.FromMinute*60000), s.firstAt(q.ToMinute*60000)
		// Filter values from a tag of the query's action inside the range.
		for try := 0; try < 1000 && hi > lo; try++ {
			tag := s.tag(g, lo+rng.Int64N(hi-lo))
			if tag.Action == q.Action {
				q.Origin, q.BrandID, q.CategoryID = tag.Origin, tag.BrandID, tag.CategoryID
				break
			}
		}
		if q.Filter&schemas.DimOrigin == 0 {
			q.Origin = ""
		}
		if q.Filter&schemas.DimBrand == 0 {
			q.BrandID = ""
		}
		if q.Filter&schemas.DimCategory == 0 {
			q.CategoryID = ""
		}
		qs[i] = benchQuery{q: q, check: (i/8)%p.CheckEvery == 0}
	}
	return qs
}

// reference sums every tag of the query's range that matches it: SPEC's
// SQL, re-computed from the generator.
func reference(s *stream, g *loadgen.Generator, q *schemas.AggregateQuery) []schemas.Totals {
	out := make([]schemas.Totals, q.Minutes())
	lo, hi := s.firstAt(q.FromMinute*60000), s.firstAt(q.ToMinute*60000)
	for i := lo; i < hi; i++ {
		tag := s.tag(g, i)
		c := schemas.CellOf(&tag)
		if q.Matches(&c) {
			out[c.Minute-q.FromMinute].Add(schemas.Totals{Count: 1, SumPrice: int64(tag.Price)})
		}
	}
	return out
}

func runQueries(t *testing.T, store aggregates.Store, s *stream, qs []benchQuery) (queryRes, [][]schemas.Totals) {
	lat := make([]time.Duration, len(qs))
	got := make([][]schemas.Totals, len(qs))
	start := time.Now()
	for i := range qs {
		ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
		t0 := time.Now()
		ans, err := store.Query(ctx, &qs[i].q)
		lat[i] = time.Since(t0)
		cancel()
		if err != nil {
			t.Fatalf("query %d (%s): %v", i, describe(&qs[i].q), err)
		}
		got[i] = ans
	}
	qr := queryRes{Overall: pctl(lat), ByCombination: map[string]percentiles{}, Seconds: round3(time.Since(start).Seconds()), lat: lat}
	var byCombo [8][]time.Duration
	nonEmpty := 0
	for i := range qs {
		byCombo[qs[i].q.Filter] = append(byCombo[qs[i].q.Filter], lat[i])
		if slices.ContainsFunc(got[i], func(x schemas.Totals) bool { return x.Count != 0 }) {
			nonEmpty++
		}
	}
	for c, ds := range byCombo {
		if len(ds) > 0 {
			qr.ByCombination[comboNames[c]] = pctl(ds)
		}
	}
	qr.NonEmptyShare = round3(float64(nonEmpty) / float64(len(qs)))

	// Check the sample against the reference, outside the timed loop, on
	// every core (the references are computed once for all backends).
	var idx []int
	for i := range qs {
		if qs[i].check {
			idx = append(idx, i)
		}
	}
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := s.newGen()
			for i := range jobs {
				if qs[i].want == nil {
					qs[i].want = reference(s, g, &qs[i].q)
				}
			}
		}()
	}
	for _, i := range idx {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for _, i := range idx {
		qr.Checked++
		if !slices.Equal(got[i], qs[i].want) {
			qr.Mismatches++
			if qr.Mismatches <= 5 {
				t.Errorf("query %d (%s): got %v, want %v", i, describe(&qs[i].q), got[i], qs[i].want)
			}
		}
	}
	t.Logf("queries: %d in %.1f s, p50 %.2f ms p90 %.2f ms p99 %.2f ms max %.2f ms, %.1f%% non-empty, %d checked against the reference, %d mismatches",
		len(qs), qr.Seconds, qr.Overall.P50, qr.Overall.P90, qr.Overall.P99, qr.Overall.Max, 100*qr.NonEmptyShare, qr.Checked, qr.Mismatches)
	return qr, got
}

// ------------------------------------------------------------- postgres

func pgConnect(t *testing.T, dsn string) *pgx.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return conn
}

func pgVersion(t *testing.T, dsn string) string {
	conn := pgConnect(t, dsn)
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(context.Background(), "SHOW server_version").Scan(&v); err != nil {
		t.Fatalf("server_version: %v", err)
	}
	return v
}

var pgTables = []string{"agg_total", "agg_origin", "agg_brand", "agg_category", "agg_brand_category", "agg_cell", "offsets"}

// pgSize sums pg_total_relation_size (heap, indexes, TOAST) of the
// aggregates tables, and counts their rows.
func pgSize(t *testing.T, dsn string) (sizeRes, *postgresDetail) {
	ctx := context.Background()
	conn := pgConnect(t, dsn)
	defer conn.Close(ctx)
	sr := sizeRes{What: "sum of pg_total_relation_size (heap + indexes + TOAST) of the six agg_* tables and offsets, right after the fill",
		ByTable: map[string]int64{}, Rows: map[string]int64{}}
	det := &postgresDetail{Tables: map[string]pgTableStats{}}
	for _, tbl := range pgTables {
		var size, rows int64
		if err := conn.QueryRow(ctx, "SELECT pg_total_relation_size($1::regclass)", tbl).Scan(&size); err != nil {
			t.Fatalf("size of %s: %v", tbl, err)
		}
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+tbl).Scan(&rows); err != nil {
			t.Fatalf("rows of %s: %v", tbl, err)
		}
		sr.ByTable[tbl], sr.Rows[tbl] = size, rows
		sr.Bytes += size
		var st pgTableStats
		var vac, ana *time.Time
		if err := conn.QueryRow(ctx, "SELECT n_live_tup, last_autovacuum, last_autoanalyze FROM pg_stat_user_tables WHERE relname = $1", tbl).
			Scan(&st.LiveTuples, &vac, &ana); err != nil {
			t.Fatalf("stats of %s: %v", tbl, err)
		}
		st.LastAutovacuum, st.LastAutoanalyze = fmtTime(vac), fmtTime(ana)
		det.Tables[tbl] = st
	}
	return sr, det
}

// enableStatements loads pg_stat_statements into the private cluster (a
// restart: it must be preloaded) and creates it in the database, so the
// fill's time can be split by statement. It costs the server a little.
func enableStatements(t *testing.T, dsn string) {
	ctx := context.Background()
	conn := pgConnect(t, dsn)
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"); err != nil {
		t.Fatalf("preload pg_stat_statements: %v", err)
	}
	conn.Close(ctx)
	if err := pgtest.Shared(t).Restart(); err != nil {
		t.Fatalf("restart postgres: %v", err)
	}
	conn = pgConnect(t, dsn)
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()"); err != nil {
		t.Fatalf("create pg_stat_statements: %v", err)
	}
}

func statements(t *testing.T, dsn string) []pgStatement {
	ctx := context.Background()
	conn := pgConnect(t, dsn)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT query, calls, total_exec_time, mean_exec_time, rows FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 12`)
	if err != nil {
		t.Fatalf("pg_stat_statements: %v", err)
	}
	var out []pgStatement
	for rows.Next() {
		var st pgStatement
		if err := rows.Scan(&st.Query, &st.Calls, &st.TotalMs, &st.MeanMs, &st.Rows); err != nil {
			t.Fatalf("pg_stat_statements: %v", err)
		}
		st.TotalMs, st.MeanMs = round3(st.TotalMs), round3(st.MeanMs)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("pg_stat_statements: %v", err)
	}
	return out
}

func fmtTime(p *time.Time) string {
	if p == nil {
		return "never"
	}
	return p.UTC().Format(time.RFC3339)
}

// pgQuerySQL mirrors the statement the PostgreSQL store sends for a filter
// set (pipeline/aggregates/postgres.go, buildQuery), for EXPLAIN only.
func pgQuerySQL(filter schemas.Dims) (string, string) {
	table := map[schemas.Dims]string{
		0: "agg_total", schemas.DimOrigin: "agg_origin", schemas.DimBrand: "agg_brand",
		schemas.DimCategory: "agg_category", schemas.DimBrand | schemas.DimCategory: "agg_brand_category",
	}[filter]
	if table == "" {
		table = "agg_cell"
	}
	conds := []string{"minute = ANY($1)", "action = $2"}
	n := 3
	for _, d := range []struct {
		dim schemas.Dims
		col string
	}{{schemas.DimOrigin, "origin"}, {schemas.DimBrand, "brand_id"}, {schemas.DimCategory, "category_id"}} {
		if filter&d.dim != 0 {
			conds = append(conds, fmt.Sprintf("%s = $%d", d.col, n))
			n++
		}
	}
	return table, "SELECT minute, sum(count)::bigint, sum(sum_price)::bigint FROM " + table + " WHERE " + strings.Join(conds, " AND ") + " GROUP BY minute"
}

// explainSlowest runs EXPLAIN (ANALYZE, BUFFERS) on the slowest query of
// each filter set (after the timed run: caches are warmer by now).
func explainSlowest(t *testing.T, dsn string, qs []benchQuery, qr queryRes) map[string]string {
	ctx := context.Background()
	conn := pgConnect(t, dsn)
	defer conn.Close(ctx)
	out := map[string]string{}
	for f := range schemas.Dims(8) {
		i := -1
		for j := range qs {
			if qs[j].q.Filter == f && (i < 0 || qr.lat[j] > qr.lat[i]) {
				i = j
			}
		}
		if i < 0 {
			continue
		}
		q := &qs[i].q
		_, sql := pgQuerySQL(f)
		minutes := make([]int64, 0, q.Minutes())
		for m := q.FromMinute; m < q.ToMinute; m++ {
			minutes = append(minutes, m)
		}
		args := []any{minutes, int16(q.Action)}
		if f&schemas.DimOrigin != 0 {
			args = append(args, q.Origin)
		}
		if f&schemas.DimBrand != 0 {
			args = append(args, q.BrandID)
		}
		if f&schemas.DimCategory != 0 {
			args = append(args, q.CategoryID)
		}
		rows, err := conn.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+sql, args...)
		if err != nil {
			t.Fatalf("explain: %v", err)
		}
		var lines []string
		for rows.Next() {
			var l string
			if err := rows.Scan(&l); err != nil {
				t.Fatalf("explain: %v", err)
			}
			lines = append(lines, l)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("explain: %v", err)
		}
		out[comboNames[f]] = fmt.Sprintf("query %d (%s), %.2f ms in the timed run:\n%s", i, describe(q), ms(qr.lat[i]), strings.Join(lines, "\n"))
	}
	return out
}

// ---------------------------------------------------------------- pebble

// pebbleShape opens the closed store's directory read-only and reads its
// LSM metrics. The merger only has to carry the store's name (the store
// refuses another); nothing is read, so nothing is merged.
func pebbleShape(t *testing.T, dir string) *pebbleDetail {
	db, err := pebble.Open(dir, &pebble.Options{
		ReadOnly: true,
		Merger:   &pebble.Merger{Name: "allezon.totals.v1", Merge: pebble.DefaultMerger.Merge},
		Logger:   quietLogger{t},
	})
	if err != nil {
		t.Fatalf("open pebble read-only: %v", err)
	}
	defer db.Close()
	m := db.Metrics()
	d := &pebbleDetail{ReadAmp: m.ReadAmp(), L0Sublevels: m.Levels[0].Sublevels, L0Tables: m.Levels[0].TablesCount,
		CompactionDebt: m.Compact.EstimatedDebt, Metrics: m.String()}
	for _, l := range m.Levels {
		d.TablesByLevel = append(d.TablesByLevel, l.TablesCount)
		d.BytesByLevel = append(d.BytesByLevel, l.TablesSize)
	}
	return d
}

type quietLogger struct{ t *testing.T }

func (quietLogger) Infof(string, ...any)           {}
func (l quietLogger) Errorf(f string, args ...any) { l.t.Logf("pebble: "+f, args...) }
func (l quietLogger) Fatalf(f string, args ...any) { l.t.Fatalf("pebble: "+f, args...) }

// ------------------------------------------------------------- machine

func machineInfo() machine {
	m := machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, LoadStart: loadavg()}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				m.MemTotalKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// wchar is the bytes this process has passed to write(2) and similar
// (/proc/self/io; -1 if unknown).
func wchar() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

func dirSize(t *testing.T, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed by a compaction meanwhile
			}
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("size of %s: %v", dir, err)
	}
	return n
}

// ---------------------------------------------------------------- table

func logTable(t *testing.T, res *results) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nfull retention: %d tags, %d minutes (%.4g h at %d tags/s), flush every %d s of event time per partition; %s, %d CPUs, %.1f GiB, %s\n",
		res.Tags, res.Minutes, res.Params.Hours, res.Params.Rate, res.Params.FlushSeconds, res.Machine.CPUModel, res.Machine.NumCPU,
		float64(res.Machine.MemTotalKiB)/(1<<20), res.Machine.GoVersion)
	fmt.Fprintf(&b, "%-9s %9s %10s %8s %11s %12s %10s %10s %12s\n", "backend", "fill s", "tags/s", "commits", "cells", "rollup rows", "commit p99", "size MiB", "24h est. s")
	for _, br := range res.Backends {
		f := br.Fill
		fmt.Fprintf(&b, "%-9s %9.1f %10.0f %8d %11d %12d %8.1fms %10.1f %12.0f\n", br.Backend, f.Seconds, f.TagsPerSec, f.Commits,
			f.CellsWritten, f.RollupRows, f.CommitMs.P99, float64(br.Size.Bytes)/(1<<20), br.Estimate.FillSecLin)
	}
	fmt.Fprintf(&b, "\n%-9s %-22s %5s %9s %9s %9s %9s\n", "backend", "filters", "n", "p50 ms", "p90 ms", "p99 ms", "max ms")
	for _, br := range res.Backends {
		for _, c := range comboNames {
			if p, ok := br.Queries.ByCombination[c]; ok {
				fmt.Fprintf(&b, "%-9s %-22s %5d %9.2f %9.2f %9.2f %9.2f\n", br.Backend, c, p.N, p.P50, p.P90, p.P99, p.Max)
			}
		}
		p := br.Queries.Overall
		fmt.Fprintf(&b, "%-9s %-22s %5d %9.2f %9.2f %9.2f %9.2f   non-empty %.1f%%, checked %d, mismatches %d\n", br.Backend, "ALL", p.N, p.P50, p.P90, p.P99, p.Max,
			100*br.Queries.NonEmptyShare, br.Queries.Checked, br.Queries.Mismatches)
		p = br.AfterFill.Overall
		fmt.Fprintf(&b, "%-9s %-22s %5d %9.2f %9.2f %9.2f %9.2f   (pass 1, right after the fill; the rows above are pass 2, %d s later)\n",
			br.Backend, "ALL right after fill", p.N, p.P50, p.P90, p.P99, p.Max, res.Params.SettleSec)
	}
	t.Log(b.String())
}
