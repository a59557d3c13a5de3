package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/allezon/allezon/broker/brokertest"
	"github.com/allezon/allezon/eventlog"
	"github.com/allezon/allezon/loadgen"
	"github.com/allezon/allezon/schemas"
)

// The fault tests (faults_test.go) judge a run by its end state rather than
// by the replay's sampled queries: every tag the replay got a 204 for must
// be in the event log and in its profile, and the aggregates must equal,
// exactly, the sums over the events in the log. The log is the reference
// because SPEC's "accepted" means "in the event log": a tag whose request
// failed and was retried may be in the log twice (docs/operations.md), and
// is then rightly counted twice; what the pipeline must never do is lose an
// event of the log or count one twice.

// segment is one replay of a fault test: the tags of a loadgen stream.
type segment struct {
	seed  int64
	start time.Time
	n     int64
}

func (s segment) tags() []schemas.UserTag {
	g := loadgen.NewGenerator(s.seed, s.start)
	out := make([]schemas.UserTag, s.n)
	for i := range out {
		out[i] = g.Tag(int64(i))
	}
	return out
}

// replayConfig replays s against addr as a load driver only: the fault tests
// check the end state themselves, so the replay sends no queries, and it
// re-posts every failed tag until it gets its 204.
func replayConfig(addr string, s segment, rate int) loadgen.Config {
	return loadgen.Config{
		BaseURL:        "http://" + addr,
		Seed:           s.seed,
		Start:          s.start,
		Rate:           rate,
		Events:         s.n,
		Conns:          16,
		ProfileEvery:   -1,
		AggregateEvery: -1,
		Retry:          true,
		RetryGrace:     20 * time.Second,
	}
}

// runReplay runs cfg and fails the test unless every tag was acknowledged
// and nothing failed outside the declared outages.
func runReplay(t *testing.T, cfg loadgen.Config) *loadgen.Report {
	t.Helper()
	rep, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	if !rep.OK() || rep.TagsAcked != cfg.Events {
		t.Fatalf("replay not clean: %d of %d tags acknowledged\n%s", rep.TagsAcked, cfg.Events, buf.String())
	}
	return rep
}

// verifier checks the end state of a fault test.
type verifier struct {
	t        *testing.T
	gateway  string // host:port
	brokers  []string
	topic    string
	segments []segment // every replay so far, all acknowledged
	http     *http.Client
	// poison are events produced straight to the log that must not be
	// counted (partition, offset): the dead-letter tests' injections.
	poison map[[2]int64]bool
}

func newVerifier(t *testing.T, gateway string, brokers []string) *verifier {
	return &verifier{t: t, gateway: gateway, brokers: brokers, topic: defaultTopic,
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}}
}

// check verifies the end state after every segment so far: the log holds
// every acknowledged tag, the aggregates equal the log's sums, and the
// profile of every cookie holds its newest tags (also the cookies of
// earlier segments: a later crash must not lose them either). It returns
// the log's events, for tests that check more.
func (v *verifier) check() []schemas.UserTag {
	v.t.Helper()
	var stream []schemas.UserTag
	for _, s := range v.segments {
		stream = append(stream, s.tags()...)
	}
	events := readLogWithout(v.t, v.brokers, v.topic, v.poison)
	dups := checkLogHoldsStream(v.t, events, stream)
	v.checkAggregates(events)
	cookies := v.checkProfiles(stream)
	v.t.Logf("verified: %d acknowledged tags all in the log (%d events, %d duplicates of retried requests); aggregates exact; profiles of all %d cookies exact",
		len(stream), len(events), dups, cookies)
	return events
}

// readLog reads every event of topic, from the oldest offset to the high
// watermark of each partition.
func readLog(t *testing.T, brokers []string, topic string) []schemas.UserTag {
	return readLogWithout(t, brokers, topic, nil)
}

// readLogWithout is readLog without the events at the skip positions.
func readLogWithout(t *testing.T, brokers []string, topic string, skip map[[2]int64]bool) []schemas.UserTag {
	t.Helper()
	records := brokertest.ReadAll(t, brokers, topic)
	out := make([]schemas.UserTag, 0, len(records))
	for _, r := range records {
		if skip[[2]int64{int64(r.Partition), r.Offset}] {
			continue
		}
		var tag schemas.UserTag
		if err := schemas.DecodeEventValue([]byte(r.Value), &tag); err != nil {
			t.Fatalf("read log: partition %d offset %d: %v", r.Partition, r.Offset, err)
		}
		out = append(out, tag)
	}
	return out
}

func tagKey(t *schemas.UserTag) string { return string(schemas.AppendUserTagJSON(nil, t)) }

// checkLogHoldsStream fails unless every tag of the stream is in the log as
// often as the stream has it, and the log holds nothing else; it returns how
// many events are extra copies (of retried requests).
func checkLogHoldsStream(t *testing.T, events, stream []schemas.UserTag) int {
	t.Helper()
	want := map[string]int{}
	for i := range stream {
		want[tagKey(&stream[i])]++
	}
	got := map[string]int{}
	for i := range events {
		got[tagKey(&events[i])]++
	}
	missing, foreign, dups := 0, 0, 0
	for k, n := range want {
		if got[k] < n {
			missing += n - got[k]
			if missing <= 3 {
				t.Errorf("acknowledged tag not in the event log: %s", k)
			}
		}
	}
	for k, n := range got {
		switch w := want[k]; {
		case w == 0:
			foreign += n
			if foreign <= 3 {
				t.Errorf("event in the log that no replay sent: %s", k)
			}
		case n > w:
			dups += n - w
		}
	}
	if missing+foreign > 0 {
		t.Fatalf("event log: %d acknowledged tags missing, %d foreign events", missing, foreign)
	}
	return dups
}

// totals is a reference aggregate: count and sum of one minute.
type totals struct{ count, sum int64 }

// filter is one aggregate query's filters.
type filter struct{ origin, brand, category string }

// aggQuery is one /aggregates question and its reference answer.
type aggQuery struct {
	fromMin int64
	action  schemas.Action
	dims    schemas.Dims
	f       filter
}

// checkAggregates compares /aggregates with sums over the log: first the
// unfiltered totals of every minute, polled until the pipeline has caught
// up, then every origin, brand and category seen, and a sample of full
// cells. Ranges are the 10-minute windows covering the log.
func (v *verifier) checkAggregates(events []schemas.UserTag) {
	v.t.Helper()
	lo, hi := int64(1<<62), int64(-1<<62)
	for i := range events {
		m := schemas.MinuteOf(events[i].TimeMs)
		lo, hi = min(lo, m), max(hi, m)
	}
	var windows []int64
	for m := lo; m <= hi; m += 10 {
		windows = append(windows, m)
	}
	var unfiltered []aggQuery
	for _, w := range windows {
		for a := range schemas.Action(schemas.NumActions) {
			unfiltered = append(unfiltered, aggQuery{fromMin: w, action: a})
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		diff := v.firstAggregateDiff(events, unfiltered)
		if diff == "" {
			break
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("aggregates never reached the log's totals: %s", diff)
		}
		time.Sleep(300 * time.Millisecond)
	}
	var detailed []aggQuery
	seen := map[aggQuery]bool{}
	rng := rand.New(rand.NewPCG(uint64(len(events)), 7))
	for i := range events {
		e := &events[i]
		w := lo + (schemas.MinuteOf(e.TimeMs)-lo)/10*10
		qs := []aggQuery{
			{w, e.Action, schemas.DimOrigin, filter{origin: e.Origin}},
			{w, e.Action, schemas.DimBrand, filter{brand: e.BrandID}},
			{w, e.Action, schemas.DimCategory, filter{category: e.CategoryID}},
		}
		if rng.IntN(100) == 0 {
			all := schemas.DimOrigin | schemas.DimBrand | schemas.DimCategory
			qs = append(qs, aggQuery{w, e.Action, all, filter{e.Origin, e.BrandID, e.CategoryID}},
				aggQuery{w, e.Action, schemas.DimBrand | schemas.DimCategory, filter{brand: e.BrandID, category: e.CategoryID}})
		}
		for _, q := range qs {
			if !seen[q] {
				seen[q] = true
				detailed = append(detailed, q)
			}
		}
	}
	if diff := v.firstAggregateDiff(events, detailed); diff != "" {
		v.t.Fatalf("aggregates differ from the log (%d queries): %s", len(detailed), diff)
	}
}

// firstAggregateDiff asks every query (4 at a time) and describes the first
// answer that differs from the reference, or returns "".
func (v *verifier) firstAggregateDiff(events []schemas.UserTag, qs []aggQuery) string {
	ref := referenceAggregates(events, qs)
	return parallelFirst(len(qs), 4, func(i int) string { return v.compareAggregate(qs[i], ref[qs[i]]) })
}

// referenceAggregates sums the events into the answers of qs, whose ranges
// are 10-minute windows starting at fromMin.
func referenceAggregates(events []schemas.UserTag, qs []aggQuery) map[aggQuery]map[int64]totals {
	ref := map[aggQuery]map[int64]totals{}
	dimSets := map[schemas.Dims]bool{}
	for _, q := range qs {
		ref[q] = map[int64]totals{}
		dimSets[q.dims] = true
	}
	windowOf := map[int64]int64{} // minute -> fromMin of the query window holding it
	for _, q := range qs {
		for m := q.fromMin; m < q.fromMin+10; m++ {
			windowOf[m] = q.fromMin
		}
	}
	for i := range events {
		e := &events[i]
		m := schemas.MinuteOf(e.TimeMs)
		w, ok := windowOf[m]
		if !ok {
			continue
		}
		for dims := range dimSets {
			q := aggQuery{fromMin: w, action: e.Action, dims: dims, f: project(e, dims)}
			if sums, ok := ref[q]; ok {
				t := sums[m]
				sums[m] = totals{t.count + 1, t.sum + int64(e.Price)}
			}
		}
	}
	return ref
}

// project is the filter of dims that e matches.
func project(e *schemas.UserTag, dims schemas.Dims) filter {
	var f filter
	if dims&schemas.DimOrigin != 0 {
		f.origin = e.Origin
	}
	if dims&schemas.DimBrand != 0 {
		f.brand = e.BrandID
	}
	if dims&schemas.DimCategory != 0 {
		f.category = e.CategoryID
	}
	return f
}

// parallelFirst runs check(0..n-1) on workers goroutines and returns the
// first non-empty result (in no particular order).
func parallelFirst(n, workers int, check func(i int) string) string {
	var mu sync.Mutex
	var first string
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if d := check(i); d != "" {
					mu.Lock()
					if first == "" {
						first = d
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		mu.Lock()
		done := first != ""
		mu.Unlock()
		if done {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func minuteText(m int64) string {
	return time.UnixMilli(m * 60_000).UTC().Format("2006-01-02T15:04:05")
}

func (v *verifier) compareAggregate(q aggQuery, ref map[int64]totals) string {
	params := url.Values{}
	params.Set("time_range", minuteText(q.fromMin)+"_"+minuteText(q.fromMin+10))
	params.Set("action", q.action.String())
	params["aggregates"] = []string{"COUNT", "SUM_PRICE"}
	if q.dims&schemas.DimOrigin != 0 {
		params.Set("origin", q.f.origin)
	}
	if q.dims&schemas.DimBrand != 0 {
		params.Set("brand_id", q.f.brand)
	}
	if q.dims&schemas.DimCategory != 0 {
		params.Set("category_id", q.f.category)
	}
	var got struct {
		Rows [][]string `json:"rows"`
	}
	if err := v.post("/aggregates?"+params.Encode(), &got); err != nil {
		return err.Error()
	}
	if len(got.Rows) != 10 {
		return fmt.Sprintf("%s: %d rows, want 10", params.Encode(), len(got.Rows))
	}
	for i, row := range got.Rows {
		m := q.fromMin + int64(i)
		want := ref[m]
		c, s := row[len(row)-2], row[len(row)-1]
		if c != strconv.FormatInt(want.count, 10) || s != strconv.FormatInt(want.sum, 10) {
			return fmt.Sprintf("%s: minute %s: got count %s sum %s, the log has %d and %d",
				params.Encode(), minuteText(m), c, s, want.count, want.sum)
		}
	}
	return ""
}

// checkProfiles reads the profile of every cookie of the stream and
// compares each list with the newest 200 distinct tags of that cookie and
// action (a retried tag is stored once, docs/design-notes.md "Profiles").
// It returns how many cookies it checked.
func (v *verifier) checkProfiles(stream []schemas.UserTag) int {
	v.t.Helper()
	byCookie := map[string][]*schemas.UserTag{}
	lo, hi := int64(1<<62), int64(-1<<62)
	for i := range stream {
		tg := &stream[i]
		lo, hi = min(lo, tg.TimeMs), max(hi, tg.TimeMs)
		byCookie[tg.Cookie] = append(byCookie[tg.Cookie], tg)
	}
	const layout = "2006-01-02T15:04:05.000"
	rangeText := time.UnixMilli(lo).UTC().Format(layout) + "_" + time.UnixMilli(hi+1).UTC().Format(layout)
	list := make([]string, 0, len(byCookie))
	for c := range byCookie {
		list = append(list, c)
	}
	slices.Sort(list)
	diff := parallelFirst(len(list), 4, func(i int) string {
		c := list[i]
		return v.compareProfile(c, rangeText, byCookie[c])
	})
	if diff != "" {
		v.t.Fatalf("profiles differ from the acknowledged tags: %s", diff)
	}
	return len(list)
}

func (v *verifier) compareProfile(cookie, rangeText string, tags []*schemas.UserTag) string {
	var got struct {
		Views []json.RawMessage `json:"views"`
		Buys  []json.RawMessage `json:"buys"`
	}
	if err := v.post("/user_profiles/"+url.PathEscape(cookie)+"?time_range="+rangeText+"&limit=200", &got); err != nil {
		return err.Error()
	}
	for a, raw := range [][]json.RawMessage{got.Views, got.Buys} {
		if d := compareList(tags, schemas.Action(a), raw); d != "" {
			return fmt.Sprintf("cookie %q %s: %s", cookie, schemas.Action(a), d)
		}
	}
	return ""
}

// compareList checks one profile list against the newest 200 distinct tags
// of the action. When the 200th and 201st share a millisecond, which of
// them the store kept is unspecified, so that millisecond is compared by
// its count only.
func compareList(tags []*schemas.UserTag, a schemas.Action, raw []json.RawMessage) string {
	distinct := map[string]int64{}
	for _, tg := range tags {
		if tg.Action == a {
			distinct[tagKey(tg)] = tg.TimeMs
		}
	}
	type entry struct {
		key string
		ms  int64
	}
	var want []entry
	for k, ms := range distinct {
		want = append(want, entry{k, ms})
	}
	slices.SortFunc(want, func(x, y entry) int { return int(y.ms - x.ms) })
	cutTie := int64(-1 << 62)
	if len(want) > 200 {
		if want[199].ms == want[200].ms {
			cutTie = want[199].ms
		}
		want = want[:200]
	}
	if len(raw) != len(want) {
		return fmt.Sprintf("%d tags, want %d", len(raw), len(want))
	}
	gotKeys := map[string]bool{}
	prev := int64(1 << 62)
	for _, r := range raw {
		var tg schemas.UserTag
		if err := schemas.DecodeUserTag(r, &tg); err != nil {
			return fmt.Sprintf("undecodable tag %s: %v", r, err)
		}
		if tg.TimeMs > prev {
			return "not newest first"
		}
		prev = tg.TimeMs
		if tg.TimeMs != cutTie {
			gotKeys[tagKey(&tg)] = true
		}
	}
	for _, w := range want {
		if w.ms != cutTie && !gotKeys[w.key] {
			return "missing acknowledged tag " + w.key
		}
	}
	return ""
}

// post sends an empty POST and decodes a 200's JSON answer into out.
func (v *verifier) post(pathQuery string, out any) error {
	resp, err := v.http.Post("http://"+v.gateway+pathQuery, "application/json", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %d %s", pathQuery, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

// highWatermarks is the next offset of every partition of topic.
func highWatermarks(t *testing.T, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	client, err := sarama.NewClient(brokers, eventlog.NewSaramaConfig("allezon-verify"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	hw := map[int32]int64{}
	for _, p := range parts {
		if hw[p], err = client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
			t.Fatal(err)
		}
	}
	return hw
}

// waitBroker waits until something accepts connections on addr.
func waitBroker(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("broker %s not listening after 30 s", addr)
}

// metricValue reads an unlabelled metric from a component's /metrics.
func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+addr+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("%s has no metric %s", addr, name)
	return 0
}

// eventRecord is a tag's key and value on the events topic, as the gateway
// publishes them.
func eventRecord(t *testing.T, tag *schemas.UserTag) (key, value []byte) {
	t.Helper()
	key, err := schemas.AppendEventKey(nil, tag)
	if err != nil {
		t.Fatal(err)
	}
	value, err = schemas.AppendEventValue(nil, tag)
	if err != nil {
		t.Fatal(err)
	}
	return key, value
}
