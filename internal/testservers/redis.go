package testservers

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server process owned by one test.
type Redis struct {
	// Addr is host:port, for redis.Options.Addr.
	Addr string
	// TLSAddr is the port that speaks TLS, with StartRedisTLS.
	TLSAddr string
	// TLS holds the certificates of StartRedisTLS.
	TLS *Certificates

	t      testing.TB
	path   string
	dir    string
	port   int
	extra  []string // more redis-server arguments
	config string   // a configuration file, first argument (Sentinel's)

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedis starts redis-server on a free loopback port, without
// persistence, in a temporary directory, and stops it when the test ends.
// It returns once the server answers PING.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := newRedis(t)
	t.Cleanup(r.Stop)
	r.Start()
	return r
}

// newRedis is a server not started yet, on a free port of its own.
func newRedis(t testing.TB) *Redis {
	r := &Redis{
		t:    t,
		path: lookBinary(t, "redis-server", "apt-get install redis-server"),
		dir:  t.TempDir(),
		port: FreePort(t),
	}
	r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
	return r
}

// StartRedisPersistent starts redis-server as StartRedis does, with an
// append-only file, as production runs it (appendonly yes): stopped and
// started again, it has its data back.
func StartRedisPersistent(t testing.TB) *Redis {
	t.Helper()
	r := newRedis(t)
	r.extra = []string{"--appendonly", "yes"}
	t.Cleanup(r.Stop)
	r.Start()
	return r
}

// StartRedisTLS starts redis-server as StartRedis does, with a second port,
// TLSAddr, that speaks TLS with a certificate of a throwaway authority
// (r.TLS) and, if clientCert, asks each client for one of that authority's.
func StartRedisTLS(t testing.TB, clientCert bool) *Redis {
	t.Helper()
	r := newRedis(t)
	tlsPort := FreePort(t)
	r.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	r.TLS = NewCertificates(t, r.dir)
	auth := "no"
	if clientCert {
		auth = "yes"
	}
	r.extra = []string{"--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", r.TLS.ServerCert,
		"--tls-key-file", r.TLS.ServerKey, "--tls-ca-cert-file", r.TLS.CA, "--tls-auth-clients", auth}
	t.Cleanup(r.Stop)
	r.Start()
	return r
}

// Start starts the server again on the same port after Stop, as a Redis
// coming back from an outage. It does nothing if the server is running.
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	logPath := filepath.Join(r.dir, "redis.log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.t.Fatalf("testservers: redis log: %v", err)
	}
	defer log.Close()
	args := append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir}, r.extra...)
	if r.config != "" {
		args = append([]string{r.config}, args...)
	}
	cmd := exec.Command(r.path, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("testservers: starting %s: %v", r.path, err)
	}
	r.cmd = cmd
	if err := waitUntil(10*time.Second, r.ping); err != nil {
		out, _ := os.ReadFile(logPath)
		r.t.Fatalf("testservers: redis-server on %s does not answer PING: %v\n%s", r.Addr, err, out)
	}
}

// Stop kills the server and waits for it to exit. The port stays reserved
// for Start.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// ping speaks just enough RESP to know the server is ready, so this package
// needs no Redis client.
func (r *Redis) ping() error {
	conn, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Reach lets the ACL user name, password "pw", reach the server with every
// key and command (on), or cuts it off (off: the user disabled, its
// connections killed): a node's outage as a partition, with Redis keeping
// its counters and nothing the node sent done late.
func (r *Redis) Reach(name string, on bool) {
	r.t.Helper()
	state := "off"
	if on {
		state = "on"
	}
	if err := r.command("ACL", "SETUSER", name, state, ">pw", "~*", "+@all"); err != nil {
		r.t.Fatalf("testservers: ACL SETUSER %s %s: %v", name, state, err)
	}
	if !on {
		_ = r.command("CLIENT", "KILL", "USER", name) // an error when it has none
	}
}

// command sends one inline command (words without spaces) and reads its
// one-line answer: an error answer is an error.
func (r *Redis) command(words ...string) error {
	conn, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(strings.Join(words, " ") + "\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "-") {
		return fmt.Errorf("%s", strings.TrimSpace(line[1:]))
	}
	return nil
}

// RedisCluster is a Redis Cluster of throwaway masters owned by one test.
type RedisCluster struct {
	// Addrs are the masters' host:port.
	Addrs []string
	nodes []*Redis
}

// StartRedisCluster starts n redis-server masters (n ≥ 3, as Redis Cluster
// wants) in cluster mode, joins them with redis-cli --cluster create, the
// slots shared among them, and returns once the cluster says it is ok.
func StartRedisCluster(t testing.TB, n int) *RedisCluster {
	t.Helper()
	cli := lookBinary(t, "redis-cli", "apt-get install redis-tools")
	c := &RedisCluster{}
	for range n {
		r := newRedis(t)
		// The cluster bus listens on a port of its own, by default the
		// client port + 10000: from a FreePort that lands in the kernel's
		// ephemeral range, where another test's connection may hold it
		// (it did, in CI: "Could not create server TCP listening socket").
		r.extra = []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(r.dir, "nodes.conf"),
			"--cluster-node-timeout", "5000", "--cluster-port", strconv.Itoa(FreePort(t))}
		t.Cleanup(r.Stop)
		r.Start()
		c.nodes = append(c.nodes, r)
		c.Addrs = append(c.Addrs, r.Addr)
	}
	args := append(append([]string{"--cluster", "create"}, c.Addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("testservers: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := waitUntil(20*time.Second, func() error {
		for _, a := range c.Addrs {
			host, port, _ := net.SplitHostPort(a)
			out, err := exec.Command(cli, "-h", host, "-p", port, "cluster", "info").Output()
			if err != nil {
				return err
			}
			if !strings.Contains(string(out), "cluster_state:ok") {
				return fmt.Errorf("%s: cluster not ok yet", a)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("testservers: redis cluster: %v", err)
	}
	return c
}

// RedisSentinel is a primary, a replica of it and one Sentinel watching
// them under the name "keygate", owned by one test.
type RedisSentinel struct {
	// Addr is the Sentinel's host:port; Primary and Replica the servers'.
	Addr             string
	Primary, Replica *Redis
}

// CutReplication stops the replica from replicating (its user on the
// primary disabled, its connection killed): what the primary takes from
// then on stays on it alone, as asynchronous replication leaves the last
// moment's writes of a primary that dies.
func (s *RedisSentinel) CutReplication() { s.Primary.Reach("replica", false) }

// StartRedisSentinel starts a primary, a replica and a Sentinel that
// watches the primary under the name "keygate", calls it down after a
// second without an answer and promotes the replica.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	s := &RedisSentinel{Primary: StartRedis(t)}
	s.Primary.Reach("replica", true)
	replica := newRedis(t)
	host, port, _ := net.SplitHostPort(s.Primary.Addr)
	replica.extra = []string{"--replicaof", host, port, "--masteruser", "replica", "--masterauth", "pw"}
	t.Cleanup(replica.Stop)
	replica.Start()
	s.Replica = replica

	sentinel := newRedis(t)
	conf := filepath.Join(sentinel.dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("sentinel monitor keygate %s %s 1\n"+
		"sentinel down-after-milliseconds keygate 1000\nsentinel failover-timeout keygate 5000\n", host, port)), 0o600); err != nil {
		t.Fatalf("testservers: %v", err)
	}
	sentinel.config = conf
	sentinel.extra = []string{"--sentinel"}
	t.Cleanup(sentinel.Stop)
	sentinel.Start()
	s.Addr = sentinel.Addr
	// A replica still in its first sync, or one the Sentinel has not
	// found yet, is no replica to fail over to: the primary's data would
	// be lost, or nothing promoted.
	cli := lookBinary(t, "redis-cli", "apt-get install redis-tools")
	_, rport, _ := net.SplitHostPort(replica.Addr)
	_, sport, _ := net.SplitHostPort(sentinel.Addr)
	if err := waitUntil(20*time.Second, func() error {
		info, err := exec.Command(cli, "-p", rport, "info", "replication").Output()
		if err != nil || !strings.Contains(string(info), "master_link_status:up") {
			return fmt.Errorf("the replica has not synced: %v %s", err, info)
		}
		known, err := exec.Command(cli, "-p", sport, "sentinel", "replicas", "keygate").Output()
		if err != nil || !strings.Contains(string(known), rport) {
			return fmt.Errorf("the Sentinel does not know the replica: %v %s", err, known)
		}
		return nil
	}); err != nil {
		t.Fatalf("testservers: redis sentinel: %v", err)
	}
	return s
}

// Pause stops the server with SIGSTOP, as a server that accepts connections
// (the kernel completes them) and never answers: a network partition, a
// host frozen. Resume ends it; the test's end resumes it too.
func (r *Redis) Pause() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		r.t.Fatal("testservers: Pause of a redis-server that is not running")
	}
	_ = r.cmd.Process.Signal(syscall.SIGSTOP)
	r.t.Cleanup(r.Resume)
}

// Resume undoes Pause.
func (r *Redis) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
	}
}
