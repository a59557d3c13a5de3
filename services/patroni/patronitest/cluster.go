// Package patronitest runs a real Patroni cluster on loopback for tests,
// from Debian's packages (patroni, etcd-server, haproxy, postgresql): one
// etcd member, N Patroni nodes (PostgreSQL 15) and HAProxy in front, whose
// write port goes to the current leader (option httpchk GET /primary on
// Patroni's REST port), as in services/haproxy/haproxy.cfg.
//
// The failover test itself is behind the build tag "patroni" (make
// test-patroni); this file only holds the helpers.
//
// Processes run as the packages' users: etcd as etcd, Patroni (and so
// PostgreSQL) as postgres. The test must run as root to switch to them. The
// switch is done by the Go runtime (SysProcAttr.Credential, with the user's
// supplementary groups like setpriv --init-groups), not by setpriv: a
// credential change made by the child clears its parent-death signal,
// whereas Go sets Pdeathsig after switching. So etcd and HAProxy get SIGKILL
// and Patroni SIGTERM (it then stops its PostgreSQL) if the test process
// dies, whatever way. Normally Start's cleanup stops everything: Patroni by
// SIGTERM, then its postmaster through postmaster.pid if still alive, and
// removes the directory.
package patronitest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/allezon/allezon/services/postgres/pgtest"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDir is PostgreSQL's bin directory, as in services/patroni/patroni.yml.
const BinDir = "/usr/lib/postgresql/15/bin"

// InstallHint says how to get what the cluster needs.
const InstallHint = "apt-get install -y patroni etcd-server etcd-client haproxy postgresql-15 (make test-patroni does it)"

// DCS timings (NOTES.md): loop_wait + 2*retry_timeout <= ttl; a dead
// leader's key expires after ttl, so a crash fails over in ~ttl seconds.
const (
	TTL          = 10
	LoopWait     = 2
	RetryTimeout = 3
)

// Proc is one process started by the cluster.
type Proc struct {
	Name   string
	Log    string
	cmd    *exec.Cmd
	exited <-chan struct{}
}

// Alive reports whether the process has not exited yet.
func (p *Proc) Alive() bool {
	if p == nil || p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process, if it is still running.
func (p *Proc) Signal(sig syscall.Signal) {
	if p.Alive() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Wait waits up to d for the process to exit; it reports whether it did.
func (p *Proc) Wait(d time.Duration) bool {
	if p == nil || p.cmd == nil {
		return true
	}
	select {
	case <-p.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// stop sends sig, waits up to grace, then SIGKILLs and waits.
func (p *Proc) stop(sig syscall.Signal, grace time.Duration) {
	p.Signal(sig)
	if !p.Wait(grace) {
		p.Signal(syscall.SIGKILL)
		p.Wait(10 * time.Second)
	}
}

// startProc starts argv with its output appended to logPath, as the user of
// cred (nil: ours), with parent-death signal pdeath. The forking goroutine
// keeps its OS thread until the process exits: the kernel sends Pdeathsig
// when the forking thread dies, not the process.
func startProc(name, logPath string, cred *syscall.Credential, pdeath syscall.Signal, env []string, argv ...string) (*Proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	bin, err := binPath(argv[0])
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: pdeath, Setpgid: true}
	exited, err := pgtest.StartTied(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &Proc{Name: name, Log: logPath, cmd: cmd, exited: exited}, nil
}

// Node is one Patroni node and its PostgreSQL.
type Node struct {
	Name     string
	Dir      string // owned by postgres: patroni.yml, data/, the socket, patroni.log
	PGPort   int
	RESTPort int
	Patroni  *Proc
	cluster  *Cluster
}

// DataDir is the node's PostgreSQL data directory.
func (n *Node) DataDir() string { return filepath.Join(n.Dir, "data") }

// role asks Patroni's REST API: GET /primary answers 200 on the leader
// only, GET /replica 200 on a running replica only.
func (n *Node) check(path string) bool {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", n.RESTPort, path))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// IsPrimary reports whether Patroni says this node is the writable leader.
func (n *Node) IsPrimary() bool { return n.check("/primary") }

// IsReplica reports whether Patroni says this node is a running replica.
func (n *Node) IsReplica() bool { return n.check("/replica") }

// PostmasterPID is the running postmaster of data/postmaster.pid (0: none).
func (n *Node) PostmasterPID() int {
	b, err := os.ReadFile(filepath.Join(n.DataDir(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	if pid <= 0 {
		return 0
	}
	// A stale file may name a pid reused since: only ours has our data
	// directory on its command line.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), n.DataDir()) {
		return 0
	}
	return pid
}

// Crash takes the node down like a machine failure: SIGKILL to Patroni (so
// it neither demotes nor releases the leader key; the key expires after
// TTL), then an immediate shutdown (SIGQUIT) of the postmaster it leaves
// behind, found through postmaster.pid; waits until the postmaster is gone.
func (n *Node) Crash() error {
	pid := n.PostmasterPID()
	n.Patroni.Signal(syscall.SIGKILL)
	if !n.Patroni.Wait(10 * time.Second) {
		return fmt.Errorf("%s: patroni did not die", n.Name)
	}
	if pid == 0 {
		return fmt.Errorf("%s: no running postmaster", n.Name)
	}
	return stopPID(pid, syscall.SIGQUIT, 10*time.Second)
}

// stop stops the node: SIGTERM to Patroni (which shuts its PostgreSQL
// down), SIGKILL after grace, then whatever postmaster is left.
func (n *Node) stop(grace time.Duration) {
	n.Patroni.stop(syscall.SIGTERM, grace)
	if pid := n.PostmasterPID(); pid != 0 {
		_ = stopPID(pid, syscall.SIGQUIT, 10*time.Second)
	}
}

// stopPID signals pid (not our child: the postmaster's parent was
// Patroni), escalating to SIGKILL, and waits until it is gone or a zombie.
func stopPID(pid int, sig syscall.Signal, grace time.Duration) error {
	if !pidAlive(pid) {
		return nil
	}
	_ = syscall.Kill(pid, sig)
	deadline := time.Now().Add(grace)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			time.Sleep(500 * time.Millisecond)
			if pidAlive(pid) {
				return fmt.Errorf("postmaster %d did not exit", pid)
			}
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// pidAlive: the process exists and is not a zombie waiting to be reaped.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, so cut at the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// Cluster is etcd, the Patroni nodes and HAProxy.
type Cluster struct {
	Dir        string
	Scope      string
	EtcdPort   int // client port
	Etcd       *Proc
	Nodes      []*Node
	HAProxy    *Proc
	WritePort  int // HAProxy: the leader
	ReadPort   int // HAProxy: the replicas
	SuperPass  string
	ReplPass   string
	stopOnce   sync.Once
	pgCred     *syscall.Credential
	etcdCred   *syscall.Credential
	etcdPeerPt int
}

// Options of Start.
type Options struct {
	Nodes int // default 2
}

// Start starts etcd, the Patroni nodes and HAProxy, waits until the cluster
// has a leader, every other node is a running replica and HAProxy's write
// port reaches the leader. Everything is stopped and removed when the test
// ends (tb.Cleanup), also when Start fails half-way.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	if err := Prerequisites(); err != nil {
		tb.Fatalf("patronitest: %v", err)
	}
	c := &Cluster{Scope: "allezon-test-" + randHex(4), SuperPass: randHex(12), ReplPass: randHex(12)}
	var err error
	if c.pgCred, err = credential("postgres"); err != nil {
		tb.Fatal(err)
	}
	if c.etcdCred, err = credential("etcd"); err != nil {
		tb.Fatal(err)
	}
	if c.Dir, err = os.MkdirTemp("", "patronitest-"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			c.DumpLogs(tb)
		}
		c.Stop()
		if err := os.RemoveAll(c.Dir); err != nil {
			tb.Errorf("remove %s: %v", c.Dir, err)
		}
	})
	// The postgres and etcd users must traverse it.
	if err := os.Chmod(c.Dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := c.startEtcd(); err != nil {
		tb.Fatal(err)
	}
	for i := range opts.Nodes {
		n, err := c.startNode(fmt.Sprintf("node%d", i+1))
		if err != nil {
			tb.Fatal(err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	if err := c.waitHealthy(60 * time.Second); err != nil {
		tb.Fatal(err)
	}
	if err := c.startHAProxy(); err != nil {
		tb.Fatal(err)
	}
	return c
}

// Prerequisites checks the machine has what Start needs.
func Prerequisites() error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: etcd and Patroni are started as the users etcd and postgres")
	}
	for _, bin := range []string{"patroni", "etcd", "haproxy"} {
		if _, err := binPath(bin); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(BinDir, "postgres")); err != nil {
		return fmt.Errorf("no %s/postgres: %s", BinDir, InstallHint)
	}
	return nil
}

// binPath finds a package's program on PATH or in /usr/sbin, /usr/bin (a
// PATH without sbin misses haproxy).
func binPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: %s", name, InstallHint)
}

func credential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w (%s)", name, err, InstallHint)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", name, err)
	}
	for _, g := range gids {
		if id, err := strconv.Atoi(g); err == nil {
			cred.Groups = append(cred.Groups, uint32(id))
		}
	}
	return cred, nil
}

// mkdirFor creates dir owned by cred's user, mode 0700.
func mkdirFor(dir string, cred *syscall.Credential) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	return os.Chown(dir, int(cred.Uid), int(cred.Gid))
}

func (c *Cluster) startEtcd() error {
	dir := filepath.Join(c.Dir, "etcd")
	if err := mkdirFor(dir, c.etcdCred); err != nil {
		return err
	}
	var err error
	if c.EtcdPort, err = FreePort(); err != nil {
		return err
	}
	if c.etcdPeerPt, err = FreePort(); err != nil {
		return err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", c.etcdPeerPt)
	c.Etcd, err = startProc("etcd", filepath.Join(c.Dir, "etcd.log"), c.etcdCred, syscall.SIGKILL,
		[]string{"PATH=/usr/bin:/bin", "HOME=" + dir},
		"etcd", "--name", "etcd1", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "etcd1="+peer, "--initial-cluster-state", "new",
		"--initial-cluster-token", c.Scope)
	if err != nil {
		return err
	}
	return waitFor(30*time.Second, "etcd healthy", c.Etcd, func() bool {
		resp, err := (&http.Client{Timeout: time.Second}).Get(client + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// patroniYAML is one node's configuration: the settings of NOTES.md
// (ttl 10, loop_wait 2, retry_timeout 3, etcd3, explicit pg_hba), small
// memory, every address on loopback.
const patroniYAML = `scope: %[1]s
namespace: /allezon-test/
name: %[2]s

restapi:
  listen: 127.0.0.1:%[3]d
  connect_address: 127.0.0.1:%[3]d

etcd3:
  hosts: 127.0.0.1:%[4]d
  protocol: http

bootstrap:
  dcs:
    ttl: %[9]d
    loop_wait: %[10]d
    retry_timeout: %[11]d
    maximum_lag_on_failover: 16777216
    synchronous_mode: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 100
        shared_buffers: 32MB
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
        password_encryption: scram-sha-256
  initdb:
    - encoding: UTF8
    - locale: C
  pg_hba:
    - local all all peer
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256

postgresql:
  listen: 127.0.0.1:%[5]d
  connect_address: 127.0.0.1:%[5]d
  data_dir: %[6]s/data
  bin_dir: %[12]s
  pgpass: %[6]s/pgpass
  authentication:
    superuser:
      username: postgres
      password: %[7]s
    replication:
      username: replicator
      password: %[8]s
    rewind:
      username: postgres
      password: %[7]s
  pg_hba:
    - local all all peer
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
  parameters:
    unix_socket_directories: %[6]s
    # Only an OS crash needs fsync; a killed server keeps its commits.
    fsync: "off"

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
`

func (c *Cluster) startNode(name string) (*Node, error) {
	n := &Node{Name: name, Dir: filepath.Join(c.Dir, name), cluster: c}
	if err := mkdirFor(n.Dir, c.pgCred); err != nil {
		return nil, err
	}
	var err error
	if n.PGPort, err = FreePort(); err != nil {
		return nil, err
	}
	if n.RESTPort, err = FreePort(); err != nil {
		return nil, err
	}
	cfg := filepath.Join(n.Dir, "patroni.yml")
	text := fmt.Sprintf(patroniYAML, c.Scope, name, n.RESTPort, c.EtcdPort, n.PGPort, n.Dir,
		c.SuperPass, c.ReplPass, TTL, LoopWait, RetryTimeout, BinDir)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	if err := os.Chown(cfg, int(c.pgCred.Uid), int(c.pgCred.Gid)); err != nil {
		return nil, err
	}
	n.Patroni, err = startProc("patroni "+name, filepath.Join(c.Dir, name+".log"), c.pgCred, syscall.SIGTERM,
		[]string{"PATH=/usr/bin:/bin", "HOME=" + n.Dir, "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"},
		"patroni", cfg)
	return n, err
}

// waitHealthy waits for one leader and every other node a running replica.
func (c *Cluster) waitHealthy(d time.Duration) error {
	return waitFor(d, "a leader and running replicas", nil, func() bool {
		primaries, replicas := 0, 0
		for _, n := range c.Nodes {
			if !n.Patroni.Alive() {
				return false
			}
			if n.IsPrimary() {
				primaries++
			} else if n.IsReplica() {
				replicas++
			}
		}
		return primaries == 1 && replicas == len(c.Nodes)-1
	})
}

const haproxyCfg = `# services/haproxy/haproxy.cfg on loopback: no resolvers, fixed ports.
global
    maxconn 500

defaults
    mode tcp
    retries 2
    timeout connect 4s
    timeout client 30m
    timeout server 30m
    timeout check 3s

listen primary
    bind 127.0.0.1:%d
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
%s
listen replicas
    bind 127.0.0.1:%d
    balance roundrobin
    option httpchk GET /replica
    http-check expect status 200
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
%s`

func (c *Cluster) startHAProxy() error {
	var err error
	if c.WritePort, err = FreePort(); err != nil {
		return err
	}
	if c.ReadPort, err = FreePort(); err != nil {
		return err
	}
	var servers strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&servers, "    server %s 127.0.0.1:%d check port %d\n", n.Name, n.PGPort, n.RESTPort)
	}
	cfg := filepath.Join(c.Dir, "haproxy.cfg")
	text := fmt.Sprintf(haproxyCfg, c.WritePort, servers.String(), c.ReadPort, servers.String())
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return err
	}
	// -db: foreground, no daemon.
	c.HAProxy, err = startProc("haproxy", filepath.Join(c.Dir, "haproxy.log"), nil, syscall.SIGKILL,
		[]string{"PATH=/usr/sbin:/usr/bin:/bin"}, "haproxy", "-db", "-f", cfg)
	if err != nil {
		return err
	}
	// HAProxy starts with every server up until its checks fail (fall 2,
	// inter 1s): a new connection may still reach the replica for ~2 s.
	// Wait until every connection for 3 s in a row reaches the leader.
	var since time.Time
	return waitFor(30*time.Second, "only the leader through HAProxy for 3 s", c.HAProxy, func() bool {
		if ok, _ := c.Writable(context.Background()); !ok {
			since = time.Time{}
			return false
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) >= 3*time.Second
	})
}

// SuperDSN is the DSN of database db as the superuser through HAProxy's
// write port.
func (c *Cluster) SuperDSN(db string) string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/%s?sslmode=disable", c.SuperPass, c.WritePort, db)
}

// Writable reports whether HAProxy's write port reaches a server that is
// not in recovery.
func (c *Cluster) Writable(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.SuperDSN("postgres"))
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return false, err
	}
	return !inRecovery, nil
}

// Leader is the node whose Patroni answers 200 on GET /primary (nil: none).
func (c *Cluster) Leader() *Node {
	for _, n := range c.Nodes {
		if n.Patroni.Alive() && n.IsPrimary() {
			return n
		}
	}
	return nil
}

// WaitLeader waits up to d for a leader other than not (nil: any).
func (c *Cluster) WaitLeader(not *Node, d time.Duration) (*Node, error) {
	var leader *Node
	err := waitFor(d, "a new leader", nil, func() bool {
		leader = c.Leader()
		return leader != nil && leader != not
	})
	return leader, err
}

// Stop stops HAProxy, the nodes (in parallel) and etcd. Idempotent.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		c.HAProxy.stop(syscall.SIGTERM, 5*time.Second)
		var wg sync.WaitGroup
		for _, n := range c.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.stop(30 * time.Second)
			}()
		}
		wg.Wait()
		c.Etcd.stop(syscall.SIGTERM, 10*time.Second)
	})
}

// DumpLogs logs the last lines of every process's log.
func (c *Cluster) DumpLogs(tb testing.TB) {
	procs := []*Proc{c.Etcd, c.HAProxy}
	for _, n := range c.Nodes {
		procs = append(procs, n.Patroni)
	}
	for _, p := range procs {
		if p != nil {
			tb.Logf("last lines of %s:\n%s", p.Name, Tail(p.Log, 40))
		}
	}
}

// Tail is the last n lines of a file.
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond every 100 ms for up to d; it gives up early when p
// (if not nil) exits.
func waitFor(d time.Duration, what string, p *Proc, cond func() bool) error {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return nil
		}
		if p != nil && !p.Alive() {
			return fmt.Errorf("waiting for %s: %s exited:\n%s", what, p.Name, Tail(p.Log, 30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %v", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FreePort is a free TCP port on 127.0.0.1 (free when probed).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("probe free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
