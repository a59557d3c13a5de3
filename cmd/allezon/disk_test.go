package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allezon/allezon/loadgen"
	"github.com/allezon/allezon/schemas"
)

// TestDiskFull runs allezon all on a 512 MiB tmpfs with a 128 MiB floor and
// fills the file system while tags are posted: first to 1 MiB below the
// floor (as a disk fills: the writes in flight when the watcher trips
// still fit), then, once /health says so, to the last byte. The
// process must stay up (same PID), refuse tags with 503 and Retry-After,
// go on answering /user_profiles, /aggregates and /health (with the
// reason), hold the pipeline's commits rather than crash on them, and once
// the fillers are deleted take tags again by itself; in the end every
// acknowledged tag is in the log, in its profile and counted exactly once.
// The floor is given through the environment, so the same test runs
// against a binary without the flag (it died: pebble's fatal commit error).
func TestDiskFull(t *testing.T) {
	// The floor must hold Pebble's WAL preallocations (110 % of a
	// memtable: 70 MiB for profiles, 35 MiB for aggregates), made at once
	// when a store starts a new WAL (docs/operations.md "Disk full"); the
	// WAL files and their preallocations take ~180 MiB after these tags. A fresh
	// store starts with small memtables that double at each new WAL, so
	// the first 2,000 tags go in before the disk fills: past the early
	// rotations, the writes in flight when the floor trips start at
	// most one more WAL per store, which the floor holds.
	const size, floor = 512 << 20, 128 << 20
	data := mountTmpfs(t, size)
	t.Setenv("ALLEZON_MIN_FREE_DISK", strconv.Itoa(floor))
	addr, brokerAddr := freeAddr(t), freeAddr(t)
	p := start(t, "all", "all", "--http", addr, "--broker-addr", brokerAddr, "--data", data, "--admin", "")
	waitHealthy(t, addr)
	pid := p.cmd.Process.Pid
	v := newVerifier(t, addr, []string{brokerAddr})
	seg := segment{seed: 600, start: loadgen.DefaultStart.Add(-2 * time.Second), n: 4000}
	v.segments = append(v.segments, seg)
	tags := seg.tags()
	held := len(tags) - 100

	// Post every tag once, 8 at a time; the disk fills after 2,200 are
	// in. The last 100 are kept for when the disk is full.
	var (
		mu      sync.Mutex
		acked   []schemas.UserTag
		refused []int
		bad     []string
	)
	trigger, posted := make(chan struct{}), make(chan struct{})
	var triggerOnce sync.Once
	post := func(from, to int) {
		parallelFirst(to-from, 8, func(i int) string {
			i += from
			pr := v.postTag(&tags[i])
			mu.Lock()
			defer mu.Unlock()
			switch {
			case pr.status == 204:
				acked = append(acked, tags[i])
			case pr.status == 503 && pr.retryAfter != "":
				refused = append(refused, i)
			default:
				refused = append(refused, i)
				bad = append(bad, "status "+strconv.Itoa(pr.status)+" Retry-After "+strconv.Quote(pr.retryAfter))
			}
			if len(acked) == 2200 {
				triggerOnce.Do(func() { close(trigger) })
			}
			return ""
		})
	}
	post(0, 2000)
	waitFor(t, "the pipeline commits the first tags", 10*time.Second, func() bool {
		return metricValue(t, addr, "allezon_pipeline_commits_total") >= 2
	})
	go func() {
		defer close(posted)
		post(2000, held)
	}()
	select {
	case <-trigger:
		fill(t, filepath.Join(data, "filler1"), freeBytes(t, data)-(floor-1<<20))
	case <-posted:
		t.Fatal("fewer than 2,200 tags acknowledged before the disk filled")
	}
	<-posted
	if len(bad) > 0 {
		t.Errorf("%d tag requests got neither 204 nor 503 with Retry-After, first: %s", len(bad), bad[0])
	}
	t.Logf("first pass: %d tags acknowledged, %d refused", len(acked), len(refused))
	if len(refused) == 0 {
		t.Error("no tag was refused below the floor")
	}

	health := waitHealthReason(t, addr, 3*time.Second)
	// Now nothing may be written at all.
	fill(t, filepath.Join(data, "filler2"), -1)
	t.Logf("disk full: %d bytes free; /health: %s", freeBytes(t, data), health)
	time.Sleep(2500 * time.Millisecond) // two flushes of the pipeline

	checkAlive(t, p, pid)
	// Enough tags to overflow what the stores' files hold in reserve: a
	// binary without the floor acknowledged some (2, 26), refused the
	// rest, and in some runs died of pebble's fatal commit error.
	answers := map[string]int{}
	for i := held; i < len(tags); i++ {
		pr := v.postTag(&tags[i])
		if pr.status != 503 || pr.retryAfter == "" {
			answers[strconv.Itoa(pr.status)+" Retry-After "+strconv.Quote(pr.retryAfter)]++
		}
		refused = append(refused, i)
	}
	if len(answers) > 0 {
		checkAlive(t, p, pid)
		t.Fatalf("tags while the disk is full: %v (-1: no answer), want 503 with Retry-After", answers)
	}
	if n := v.checkProfiles(acked); n == 0 {
		t.Fatal("no profile read while the disk is full")
	}
	if pr := v.postAggregates(seg.start.Truncate(time.Minute)); pr.status != 200 {
		t.Fatalf("/aggregates while the disk is full: %d, want 200", pr.status)
	}
	if got := metricValue(t, addr, `allezon_disk_below_floor{path="`+data+`"}`); got != 1 {
		t.Errorf("allezon_disk_below_floor = %v while the disk is full, want 1", got)
	}
	t.Logf("disk full: process %d up, tags refused with 503, reads answered; %v pipeline flushes held, %v tags refused",
		pid, metricValue(t, addr, "allezon_pipeline_commits_held_total"), metricValue(t, addr, "allezon_tags_refused_disk_floor_total"))
	checkAlive(t, p, pid)

	for _, f := range []string{"filler1", "filler2"} {
		if err := os.Remove(filepath.Join(data, f)); err != nil {
			t.Fatal(err)
		}
	}
	took := v.repostUntilAccepted(tags, &refused, 15*time.Second)
	t.Logf("space back: every refused tag accepted %v later", took.Round(time.Millisecond))
	v.check()
	checkAlive(t, p, pid)
}

// mountTmpfs mounts a tmpfs of size bytes and unmounts it when the test
// ends (after the processes that use it are killed: cleanups run in
// reverse). It needs root, as CI has; it skips only when not root.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs the tests as root)")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Fatalf("mount a %d-byte tmpfs on %s as root: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v; detaching it", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fill writes n bytes of zeros to a new file, or (n < 0) as many as fit.
func fill(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for n != 0 {
		chunk := buf
		if n > 0 && n < int64(len(chunk)) {
			chunk = chunk[:n]
		}
		w, err := f.Write(chunk)
		n -= int64(w)
		if errors.Is(err, syscall.ENOSPC) && n < 0 {
			if len(buf) == 4096 {
				return // full to the last page
			}
			buf = buf[:4096]
			continue
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}

// waitHealthReason waits for /health to answer 503 with the disk below its
// floor (the API port's public text), and returns its body. A process that never
// says so fails the test, which goes on, to show what a full disk then does.
func waitHealthReason(t *testing.T, addr string, limit time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = strconv.Itoa(resp.StatusCode) + " " + string(b)
			if resp.StatusCode == 503 && strings.Contains(last, `"disk":"free disk space below the floor: tags refused"`) {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("/health never reported the disk below its floor within %v; last answer: %s", limit, last)
	return last
}

// checkAlive fails the test unless the process started as pid is still
// running (not exited, not a zombie).
func checkAlive(t *testing.T, p *proc, pid int) {
	t.Helper()
	if p.cmd == nil || p.cmd.Process.Pid != pid {
		t.Fatalf("process %d was replaced", pid)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	// The state follows the command name in parentheses.
	if s := string(stat); strings.HasPrefix(strings.TrimSpace(s[strings.LastIndexByte(s, ')')+1:]), "Z") {
		t.Fatalf("process %d died", pid)
	}
}
