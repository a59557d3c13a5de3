package broker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/allezon/allezon/broker"
	"github.com/allezon/allezon/broker/brokertest"
)

const testTopic = "events-test"

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// producerConfig is the producer setup the gateway uses (NOTES.md):
// idempotent, acks from all in-sync replicas, one request in flight.
func producerConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V3_6_0_0
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Partitioner = sarama.NewHashPartitioner
	c.Producer.Retry.Backoff = 50 * time.Millisecond
	c.Metadata.Retry.Backoff = 50 * time.Millisecond
	return c
}

// produce sends msgs with a SyncProducer and returns them with their
// partition and offset filled in.
func produce(t *testing.T, addrs []string, msgs []*sarama.ProducerMessage) {
	t.Helper()
	p, err := sarama.NewSyncProducer(addrs, producerConfig())
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	defer p.Close()
	if err := p.SendMessages(msgs); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func messages(topic string, from, n int) []*sarama.ProducerMessage {
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		v := fmt.Sprintf("msg-%06d", from+i)
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("k" + strconv.Itoa((from+i)%37)), Value: sarama.StringEncoder(v)}
	}
	return msgs
}

func numPartitions(t *testing.T, addrs []string, topic string) int {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	client, err := sarama.NewClient(addrs, cfg)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		t.Fatalf("partitions: %v", err)
	}
	return len(parts)
}

func TestRestartKeepsLogAndAddress(t *testing.T) {
	dir := t.TempDir()
	cfg := broker.Config{Dir: dir, Topic: testTopic, Logger: quietLogger()}
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	addrs := b.Addrs()
	first := messages(testTopic, 0, 500)
	produce(t, addrs, first)
	before := brokertest.ReadAll(t, addrs, testTopic)
	if len(before) != len(first) {
		b.Close()
		t.Fatalf("read %d messages before restart, want %d", len(before), len(first))
	}
	produce(t, addrs, messages(testTopic+"-dlq", 0, 3))
	hwm := map[int32]int64{}
	for _, m := range first {
		hwm[m.Partition] = max(hwm[m.Partition], m.Offset+1)
	}
	b.Close()

	// Same dir, same address: clients that knew the old broker reconnect.
	cfg.Addr = addrs[0]
	b, err = broker.Start(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer b.Close()
	if got := b.Addrs(); len(got) != 1 || got[0] != addrs[0] {
		t.Fatalf("restarted on %v, want %v", got, addrs)
	}
	if n := numPartitions(t, addrs, testTopic); n != broker.DefaultPartitions {
		t.Fatalf("topic has %d partitions after restart, want %d", n, broker.DefaultPartitions)
	}
	// The dead-letter topic is there too, with what it held.
	if n := numPartitions(t, addrs, testTopic+"-dlq"); n != 1 {
		t.Fatalf("dead-letter topic has %d partitions after restart, want 1", n)
	}
	if dl := brokertest.ReadAll(t, addrs, testTopic+"-dlq"); len(dl) != 3 {
		t.Fatalf("dead-letter topic holds %d messages after restart, want 3", len(dl))
	}
	after := brokertest.ReadAll(t, addrs, testTopic)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("log changed across restart:\nbefore %v\nafter  %v", before[:5], after[:5])
	}

	second := messages(testTopic, len(first), 100)
	produce(t, addrs, second)
	for _, m := range second {
		if m.Offset < hwm[m.Partition] {
			t.Fatalf("new message at %d/%d, below the old high watermark %d", m.Partition, m.Offset, hwm[m.Partition])
		}
	}
	if all := brokertest.ReadAll(t, addrs, testTopic); len(all) != len(first)+len(second) {
		t.Fatalf("read %d messages, want %d", len(all), len(first)+len(second))
	}
}

func TestDataDirIsExclusive(t *testing.T) {
	dir := t.TempDir()
	b, err := broker.Start(broker.Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	_, err = broker.Start(broker.Config{Dir: dir, Logger: quietLogger()})
	if !errors.Is(err, broker.ErrDirLocked) {
		t.Fatalf("second broker on one dir: err %v, want ErrDirLocked", err)
	}
	b.Close()
	b, err = broker.Start(broker.Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("start after the first closed: %v", err)
	}
	b.Close()
	b.Close() // idempotent
}

func TestListenAddress(t *testing.T) {
	tests := []struct {
		name      string
		addr      string
		advertise string
		wantHost  string
	}{
		{"default loopback", "", "", "127.0.0.1"},
		{"other loopback host honoured", "127.0.0.2:0", "", "127.0.0.2"},
		{"wildcard advertises loopback", "0.0.0.0:0", "", "127.0.0.1"},
		{"explicit advertised host", "0.0.0.0:0", "localhost", "localhost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := broker.Start(broker.Config{Addr: tc.addr, Advertise: tc.advertise, Logger: quietLogger()})
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			defer b.Close()
			addrs := b.Addrs()
			host, port, err := net.SplitHostPort(addrs[0])
			if err != nil || host != tc.wantHost || port == "0" {
				t.Fatalf("Addrs() = %v, want host %s and a bound port", addrs, tc.wantHost)
			}
			// Reachable at the advertised address: a produce round trip.
			produce(t, addrs, messages(broker.DefaultTopic, 0, 3))
		})
	}
}

func TestStartRejectsBadAddress(t *testing.T) {
	if _, err := broker.Start(broker.Config{Addr: "no-port", Logger: quietLogger()}); err == nil {
		t.Fatal("Start with an address without a port succeeded")
	}
}

// waitOldest waits until partition 0's log starts at want (5 s at most).
func waitOldest(t *testing.T, client sarama.Client, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		oldest, err := client.GetOffset(testTopic, 0, sarama.OffsetOldest)
		if err != nil {
			t.Fatalf("oldest offset: %v", err)
		}
		if oldest == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log starts at %d, want %d", oldest, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRetentionKeepsUncommittedEvents (issue #9, item 8): events past the
// retention go only once the pipeline committed them, whatever their
// timestamps say. Batches stamped an hour and 50 years in the past are
// what a wall clock jumped forward by that much sees; kfake's own rule
// deleted all of them at its next pass.
func TestRetentionKeepsUncommittedEvents(t *testing.T) {
	var committed atomic.Pointer[map[int32]int64]
	var fail atomic.Bool
	committed.Store(&map[int32]int64{0: 4})
	b, err := broker.Start(broker.Config{Topic: testTopic, Partitions: 1, Retention: time.Second, Logger: quietLogger(),
		Committed: func(context.Context) (map[int32]int64, error) {
			if fail.Load() {
				return nil, errors.New("store down")
			}
			return *committed.Load(), nil
		}})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer b.Close()
	addrs := b.Addrs()
	old := messages(testTopic, 0, 10)
	for i, m := range old {
		m.Timestamp = time.Now().Add(-time.Hour)
		if i >= 5 {
			m.Timestamp = time.Unix(0, 0)
		}
	}
	produce(t, addrs, old)
	client, err := sarama.NewClient(addrs, producerConfig())
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	defer client.Close()

	waitOldest(t, client, 4) // expired and committed: gone
	time.Sleep(2 * time.Second)
	waitOldest(t, client, 4) // expired, not committed: kept
	fail.Store(true)
	committed.Store(&map[int32]int64{0: 10})
	time.Sleep(2 * time.Second)
	waitOldest(t, client, 4) // the store cannot say: nothing deleted
	fail.Store(false)
	waitOldest(t, client, 10)
}

// TestRetentionFollowsGroupCommits: a standalone broker, which cannot see
// the pipeline's store, deletes up to the offsets the pipeline's consumer
// group committed on it, and a fresh event is kept.
func TestRetentionFollowsGroupCommits(t *testing.T) {
	b, err := broker.Start(broker.Config{Topic: testTopic, Partitions: 1, Retention: time.Second, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer b.Close()
	addrs := b.Addrs()
	produce(t, addrs, messages(testTopic, 0, 10))
	client, err := sarama.NewClient(addrs, producerConfig())
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	defer client.Close()
	time.Sleep(2 * time.Second)
	waitOldest(t, client, 0) // nothing committed yet

	// A commit outside a group session, as a simple consumer makes one.
	coord, err := client.Coordinator(broker.DefaultGroup)
	if err != nil {
		t.Fatal(err)
	}
	req := sarama.NewOffsetCommitRequest(producerConfig(), broker.DefaultGroup)
	req.ConsumerGroupGeneration = -1
	req.AddBlock(testTopic, 0, 7, 0, "")
	resp, err := coord.CommitOffset(req)
	if err != nil {
		t.Fatal(err)
	}
	if kerr := resp.Errors[testTopic][0]; kerr != sarama.ErrNoError {
		t.Fatalf("commit: %v", kerr)
	}
	waitOldest(t, client, 7)
	fresh := messages(testTopic, 10, 5)
	produce(t, addrs, fresh)
	if got := brokertest.ReadAll(t, addrs, testTopic); len(got) != 8 || got[0].Offset != 7 {
		t.Fatalf("read %d events from offset %d, want the 8 from offset 7", len(got), got[0].Offset)
	}
}

// TestOlderDataDirGetsNoTimeRetention: an events topic created before the
// rule gets retention.ms=-1 at start, so kfake stops deleting it by time.
func TestOlderDataDirGetsNoTimeRetention(t *testing.T) {
	dir := t.TempDir()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateTopic(testTopic, 1, nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	b, err := broker.Start(broker.Config{Dir: dir, Topic: testTopic, Partitions: 1, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	b.Close()
	c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v := c.TopicInfo(testTopic).Configs["retention.ms"]; v == nil || *v != "-1" {
		t.Fatalf("retention.ms of the reloaded topic: %v, want -1", v)
	}
}

const crashEnv = "ALLEZON_BROKER_CRASH_DIR"

// TestCrashHelper is the subprocess of TestKill9LosesNothingAcked: it runs
// a broker and a producer in one process and prints the index of every
// acknowledged message until it is killed.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("subprocess of TestKill9LosesNothingAcked")
	}
	b, err := broker.Start(broker.Config{Dir: dir, Topic: testTopic, Logger: quietLogger()})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	cfg := producerConfig()
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond
	cfg.Producer.Flush.Messages = 1000
	p, err := sarama.NewAsyncProducer(b.Addrs(), cfg)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	go func() {
		for i := 0; ; i++ {
			p.Input() <- &sarama.ProducerMessage{Topic: testTopic, Key: sarama.StringEncoder(strconv.Itoa(i % 101)),
				Value: sarama.StringEncoder(strconv.Itoa(i)), Metadata: i}
		}
	}()
	out := bufio.NewWriter(os.Stdout)
	for {
		select {
		case m := <-p.Successes():
			fmt.Fprintf(out, "acked %d\n", m.Metadata.(int))
			if len(p.Successes()) == 0 {
				out.Flush()
			}
		case err := <-p.Errors():
			fmt.Fprintln(out, "error", err)
			out.Flush()
		}
	}
}

func TestKill9LosesNothingAcked(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a subprocess")
	}
	const killAfter = 20000
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	acked := map[int]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && len(acked) < killAfter {
		line := sc.Text()
		idx, ok := strings.CutPrefix(line, "acked ")
		if !ok {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper: %s", line)
		}
		i, _ := strconv.Atoi(idx)
		acked[i] = true
	}
	if err := cmd.Process.Signal(os.Kill); err != nil {
		t.Fatalf("kill helper: %v", err)
	}
	// The kill lands while the helper keeps producing; acks it printed
	// after our last read are not counted, which only makes the check
	// weaker, never wrong.
	io.Copy(io.Discard, stdout)
	cmd.Wait()
	if len(acked) < killAfter {
		t.Fatalf("helper acknowledged only %d messages", len(acked))
	}

	b, err := broker.Start(broker.Config{Dir: dir, Topic: testTopic, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("restart after kill -9: %v", err)
	}
	defer b.Close()
	seen := map[int]int{}
	for _, r := range brokertest.ReadAll(t, b.Addrs(), testTopic) {
		i, err := strconv.Atoi(r.Value)
		if err != nil {
			t.Fatalf("bad value %q at %d/%d", r.Value, r.Partition, r.Offset)
		}
		seen[i]++
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("message %d is in the log %d times", i, n)
		}
	}
	for i := range acked {
		if seen[i] != 1 {
			t.Fatalf("acknowledged message %d lost in the crash", i)
		}
	}
	t.Logf("%d acknowledged before the kill, %d in the log after the restart", len(acked), len(seen))
}
