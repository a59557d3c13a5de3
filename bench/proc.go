package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which Linux fixes at 100 for every architecture Go runs on, whatever
// the kernel's own tick rate.
const userHZ = 100

// stopTimeout is how long a server may take to exit after SIGTERM before
// it is killed; allezon drains within its --shutdown-timeout (10 s).
const stopTimeout = 20 * time.Second

// server is one process under test, started on a free loopback port with
// its output in a log file.
type server struct {
	name  string
	addr  string
	admin string // pprof listener, when the server has one
	args  []string
	log   string
	cmd   *exec.Cmd
	done  chan struct{} // closed when the process exited
	err   error         // its exit status, valid once done is closed
}

// startServer runs bin with args (in which "{addr}" is replaced by a free
// loopback address) and waits until it accepts connections, and, when
// healthPath is set, until GET healthPath answers 200.
func startServer(ctx context.Context, tmp, name, bin string, args []string, healthPath string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &server{name: name, addr: addr, log: filepath.Join(tmp, name+".log"), done: make(chan struct{})}
	for _, a := range args {
		s.args = append(s.args, strings.ReplaceAll(a, "{addr}", addr))
	}
	f, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = f, f
	// If the harness dies, its servers must not keep the port and the CPU.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx, healthPath); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: %w\n%s", name, err, s.logTail(20))
	}
	return s, nil
}

// commandLine is the server's command as it was run.
func (s *server) commandLine() string {
	return shellJoin(append([]string{s.cmd.Path}, s.args...))
}

// waitReady polls until the server accepts connections (and is healthy)
// or 30 s passed.
func (s *server) waitReady(ctx context.Context, healthPath string) error {
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("exited before it was ready: %v", s.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		conn, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err != nil {
			continue
		}
		conn.Close()
		if healthPath == "" {
			return nil
		}
		resp, err := client.Get("http://" + s.addr + healthPath)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	return errors.New("not ready after 30 s")
}

// stop sends SIGTERM, then SIGKILL after stopTimeout, and waits for the
// exit. It is safe to call twice.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// exited reports whether the process ended on its own, with its status.
func (s *server) exited() (bool, error) {
	select {
	case <-s.done:
		return true, s.err
	default:
		return false, nil
	}
}

// logTail is the last n lines of the server's output, for error messages.
func (s *server) logTail(n int) string {
	b, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cpuSeconds is the user plus system CPU time the process has used so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'. utime and stime are fields 14 and 15, state is field 3.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[14-3], 10, 64)
	stime, err2 := strconv.ParseUint(f[15-3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return float64(utime+stime) / userHZ, nil
}

// peakRSS is the process's high-water mark of resident memory (VmHWM), in
// bytes: the most it held at any moment since it started.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// freeAddr is a loopback address nobody listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// shellJoin quotes args so the line can be pasted into a shell.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,+@%") == "" {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
