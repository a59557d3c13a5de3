package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSlowBodiesBoundMemory: hundreds of connections that announce a large
// body (4 MiB queries, 64 KiB tags) and send one byte of it must not make
// the server reserve what they announce: RSS grows by far less than the
// announced sizes (docs/operations.md "What bounds memory under
// overload"), honest requests are served meanwhile, and each slow client
// gets a 408 once --read-timeout has passed.
func TestSlowBodiesBoundMemory(t *testing.T) {
	const (
		queryConns, tagConns = 240, 60
		readTimeout          = 5 * time.Second
		// 300 connections, each holding a goroutine, a read and a
		// write buffer and at most a few KiB of body: a few MiB. The
		// announced bodies would be ~964 MiB.
		maxGrowthKiB = 48 << 10
	)
	addr := freeAddr(t)
	p := start(t, "all", "all", "--http", addr, "--data", t.TempDir(), "--admin", "",
		"--read-timeout", readTimeout.String())
	waitHealthy(t, addr)
	honestRequests(t, addr) // warm up the paths before the baseline
	before := vmRSSKiB(t, p.cmd.Process.Pid)

	opened := time.Now()
	var slow []net.Conn
	for i := range queryConns + tagConns {
		head := "POST /user_profiles/slow-" + strconv.Itoa(i) + "?time_range=2022-03-22T12:00:00.000_2022-03-22T13:00:00.000 HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(4<<20) + "\r\n\r\n{"
		if i >= queryConns {
			head = "POST /user_tags HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(64<<10) + "\r\n\r\n{"
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		slow = append(slow, c)
	}
	time.Sleep(time.Second) // let the server read every head
	honestRequests(t, addr)
	during := vmRSSKiB(t, p.cmd.Process.Pid)
	t.Logf("VmRSS %d KiB before, %d KiB with %d slow connections (%+d KiB)", before, during, len(slow), during-before)
	if time.Since(opened) >= readTimeout {
		t.Fatalf("the slow connections took %v to set up, longer than --read-timeout: measured too late", time.Since(opened))
	}
	if during-before > maxGrowthKiB {
		t.Errorf("RSS grew by %d KiB for %d slow connections, bound %d KiB", during-before, len(slow), maxGrowthKiB)
	}

	for i, c := range slow {
		c.SetReadDeadline(opened.Add(readTimeout + 10*time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 408 ") {
			t.Fatalf("slow connection %d: answer %q (%v), want 408", i, line, err)
		}
	}
	if took := time.Since(opened); took < readTimeout {
		t.Fatalf("408s after %v, before --read-timeout %v", took, readTimeout)
	}
}

// honestRequests sends a tag, a profile query carrying a 300 KB expected
// answer and a health check; each must succeed.
func honestRequests(t *testing.T, addr string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	tag := `{"time":"2022-03-22T12:15:00.000Z","cookie":"honest","country":"PL","device":"PC","action":"VIEW","origin":"o",` +
		`"product_info":{"product_id":"p","brand_id":"b","category_id":"c","price":1}}`
	expected := `{"cookie":"nobody","views":[],"buys":[]}` + strings.Repeat(" ", 300_000)
	for _, r := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/user_tags", tag, 204},
		{"POST", "/user_profiles/nobody?time_range=2022-03-22T12:00:00.000_2022-03-22T13:00:00.000", expected, 200},
		{"GET", "/health", "", 200},
	} {
		req, err := http.NewRequest(r.method, "http://"+addr+r.path, strings.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("honest %s %s: %v", r.method, r.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != r.want {
			t.Fatalf("honest %s %s: %d, want %d", r.method, r.path, resp.StatusCode, r.want)
		}
	}
}

// vmRSSKiB reads a process's resident set size from /proc.
func vmRSSKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kib
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}
