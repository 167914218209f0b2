package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the master name a Sentinel set monitors.
const SentinelMaster = "pkgfleet"

// SentinelDownAfter is how long the sentinels wait before they call a
// silent master down: short, so a failover takes seconds.
const SentinelDownAfter = time.Second

// Sentinel is one Redis master, two replicas and three sentinels on
// loopback ports (Sentinel cannot replicate over unix sockets), each node
// with AOF everysec, as docs/fleet.md's failover section runs them.
type Sentinel struct {
	t         testing.TB
	dir       string
	Nodes     []*Node // Nodes[0] starts as the master
	Sentinels []*Node
	// With StartPartitionable: the only link of the sentinels and the
	// replicas (and of every client they name the master to) to
	// Nodes[0], and a sentinel on Nodes[0]'s side of that link.
	Relay    *Relay
	Minority *Node
}

// sentinelUserPassword is the test nodes' password for the set's
// sentinels (StartPartitionable): a fixed test value, guarding nothing.
const sentinelUserPassword = "sentinel-only"

// MinorityMaster is the name under which Sentinel.Minority monitors
// Nodes[0].
const MinorityMaster = "pkgfleet-minority"

// CutMaster is the name under which the sentinel of Sentinel.CutOff
// monitors Nodes[0].
const CutMaster = "pkgfleet-cut"

// CutOff starts, on a set of StartPartitionable, a sentinel of its own
// for one client: it names Nodes[0] (the master) reached through a relay
// of its own, under CutMaster, so freezing that relay cuts that client
// off from Redis while the set and its other clients go on. Like
// Minority it never fails over (down-after an hour) and the set never
// hears of it; the set's ACL keeps it from repointing the replicas at
// its relay. Returns the sentinel's address and the relay.
func (s *Sentinel) CutOff(t testing.TB) (string, *Relay) {
	t.Helper()
	if s.Relay == nil {
		t.Fatal("CutOff needs a set of StartPartitionable")
	}
	r := NewRelay(t, s.Nodes[0].Addr, 0)
	n := s.startSentinel(filepath.Join(s.dir, "cut"), FreePort(t), CutMaster, r.Addr(), 1, time.Hour, false)
	return n.Addr, r
}

// Node is one redis-server or redis-sentinel process.
type Node struct {
	Addr string
	args []string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartSentinel starts the set and waits until every sentinel knows both
// replicas and the other sentinels, so a failover can happen. Processes
// are killed when the test ends.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	return startSentinel(t, false)
}

// StartPartitionable is StartSentinel for the Jepsen case: the sentinels
// and the replicas reach the first master only through Relay, whose
// freezing cuts it off from them (and from every client that asks them
// for the master), and a fourth sentinel, Minority, monitors it directly
// under MinorityMaster: the old master's side of the partition has a
// sentinel that goes on naming it the master (as the minority's sentinel
// of a three-pod set would), so a client that asks Minority keeps
// talking to the old master while the other side fails over. Minority
// never fails over by itself (its down-after is an hour): it is not one
// of the set's quorum, which never hears of it (another master name).
func StartPartitionable(t testing.TB) *Sentinel {
	t.Helper()
	return startSentinel(t, true)
}

func startSentinel(t testing.TB, partitionable bool) *Sentinel {
	Require(t, "redis-server", "redis-sentinel")
	s := &Sentinel{t: t, dir: t.TempDir()}
	ports := freePorts(t, 7)
	master := "127.0.0.1:" + strconv.Itoa(ports[0])
	if partitionable {
		s.Relay = NewRelay(t, master, 0)
		master = s.Relay.Addr()
	}
	_, masterPort, _ := net.SplitHostPort(master)
	for i := range 3 {
		dir := filepath.Join(s.dir, fmt.Sprint("redis", i))
		args := []string{"--port", strconv.Itoa(ports[i]), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
			// docs/fleet.md: a master without a replica within 10s refuses writes.
			"--min-replicas-to-write", "1", "--min-replicas-max-lag", "10",
			"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}
		if i > 0 {
			args = append(args, "--replicaof", "127.0.0.1", masterPort)
		}
		if partitionable {
			// Only the set's sentinels (user "sentinel") may turn a node
			// into a replica: the minority's sentinel sees the replicas
			// point at the relay, not at the address it monitors, and
			// would otherwise repoint them past the relay (undoing the
			// partition it is meant to observe, not to make).
			args = append(args, "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-replicaof", "-slaveof",
				"--user", "sentinel", "on", ">"+sentinelUserPassword, "~*", "&*", "+@all")
		}
		s.Nodes = append(s.Nodes, s.start("redis-server", dir, "127.0.0.1:"+strconv.Itoa(ports[i]), args))
	}
	for i := range 3 {
		s.Sentinels = append(s.Sentinels, s.startSentinel(filepath.Join(s.dir, fmt.Sprint("sentinel", i)), ports[3+i], SentinelMaster, master, 2, SentinelDownAfter, partitionable))
	}
	if partitionable {
		s.Minority = s.startSentinel(filepath.Join(s.dir, "minority"), ports[6], MinorityMaster, s.Nodes[0].Addr, 1, time.Hour, false)
	}
	t.Cleanup(func() {
		if t.Failed() {
			all := append(slices.Clone(s.Nodes), s.Sentinels...)
			if s.Minority != nil {
				all = append(all, s.Minority)
			}
			for _, n := range all {
				out, _ := os.ReadFile(n.log)
				t.Logf("log of %s on %s:\n%s", n.args[0], n.Addr, tail(string(out), 3000))
			}
		}
	})
	s.WaitReady(t)
	return s
}

// WaitReady waits until every sentinel sees the master and two replicas
// in sync with it, and the other two sentinels: until a failover can
// happen (after one, the old master must have rejoined and synced).
func (s *Sentinel) WaitReady(t testing.TB) {
	t.Helper()
	Eventually(t, 60*time.Second, "the sentinels to know both replicas, in sync, and each other", func() bool {
		for _, sn := range s.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, MaxRetries: -1})
			reps, err1 := c.Replicas(context.Background(), SentinelMaster).Result()
			sens, err2 := c.Sentinels(context.Background(), SentinelMaster).Result()
			c.Close()
			if err1 != nil || err2 != nil || len(reps) != 2 || len(sens) != 2 {
				return false
			}
			for _, r := range reps {
				if r["flags"] != "slave" || r["master-link-status"] != "ok" {
					return false
				}
			}
		}
		return true
	})
}

// startSentinel starts a redis-sentinel on port that monitors master
// (host:port) as name; asUser: as the nodes' user "sentinel".
func (s *Sentinel) startSentinel(dir string, port int, name, master string, quorum int, downAfter time.Duration, asUser bool) *Node {
	s.t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s %d\nsentinel down-after-milliseconds %s %d\nsentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 2\n",
		port, dir, name, strings.Replace(master, ":", " ", 1), quorum, name, downAfter.Milliseconds(), name, name)
	if asUser {
		text += fmt.Sprintf("sentinel auth-user %s sentinel\nsentinel auth-pass %s %s\n", name, name, sentinelUserPassword)
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		s.t.Fatal(err)
	}
	return s.start("redis-sentinel", dir, "127.0.0.1:"+strconv.Itoa(port), []string{conf})
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// freePorts is n distinct free loopback ports.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var out []int
	for len(out) < n {
		if p := FreePort(t); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func (s *Sentinel) start(bin, dir, addr string, args []string) *Node {
	s.t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	n := &Node{Addr: addr, args: append([]string{bin}, args...), log: filepath.Join(dir, "log")}
	n.Start(s.t)
	s.t.Cleanup(func() { n.Signal(syscall.SIGKILL); n.Wait() })
	return n
}

// Start (re)starts the node with its first arguments: a restarted old
// master comes back as the master it was, and the sentinels turn it into
// a replica of the new one.
func (n *Node) Start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(n.args[0], n.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	Eventually(t, 20*time.Second, n.args[0]+" on "+n.Addr+" to answer", func() bool {
		c := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		defer c.Close()
		return c.Ping(context.Background()).Err() == nil
	})
}

// Signal sends sig to the node's process (SIGKILL, SIGSTOP, SIGCONT).
func (n *Node) Signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// Wait waits for the node's process to exit.
func (n *Node) Wait() {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Addresses is Redis.SentinelAddresses for the set.
func (s *Sentinel) Addresses() string {
	var out []string
	for _, n := range s.Sentinels {
		out = append(out, n.Addr)
	}
	return strings.Join(out, ",")
}

// Master asks the sentinels which node is the master now.
func (s *Sentinel) Master(ctx context.Context) (*Node, error) {
	var last error
	for _, sn := range s.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, MaxRetries: -1, DialTimeout: time.Second})
		addr, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		c.Close()
		if err != nil {
			last = err
			continue
		}
		named := net.JoinHostPort(addr[0], addr[1])
		if s.Relay != nil && named == s.Relay.Addr() {
			return s.Nodes[0], nil
		}
		for _, n := range s.Nodes {
			if n.Addr == named {
				return n, nil
			}
		}
		last = fmt.Errorf("the sentinels name %v, no node of the set", addr)
	}
	return nil, last
}

// Client is a failover client of the set, for the test's own checks.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMaster,
		SentinelAddrs: strings.Split(s.Addresses(), ","), MaxRetries: 5})
	t.Cleanup(func() { c.Close() })
	return c
}

// Role is the node's replication role as it says ("master", "slave"), or
// "" when it does not answer within a second.
func (n *Node) Role() string {
	c := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, ReadTimeout: time.Second})
	defer c.Close()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(info, "\r\n") {
		if r, ok := strings.CutPrefix(line, "role:"); ok {
			return r
		}
	}
	return ""
}
