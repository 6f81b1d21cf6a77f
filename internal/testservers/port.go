package testservers

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// FreePort returns a loopback TCP port nothing listens on, for a server a
// test starts. It is chosen below the kernel's ephemeral range: a port the
// kernel picks for ":0" comes from that range, as do the local ports of
// outgoing connections, so such a port could be taken by another test's
// connection between the pick and the server's bind (it was, in CI). A port
// outside the range is taken only by another server.
//
// A port handed out stays the test process's until it exits, held by a lock
// file every test process on the machine checks (go test runs packages in
// parallel processes): a server stopped and started again on its port, as a
// Redis coming back from an outage, finds the port still free. Without the
// lock, another package's test picked the port while that Redis was down and
// the restart failed (it did, in CI).
//
// KEYGATE_TEST_PORTS=LO-HI picks them in that range instead, for a machine
// whose sessions each keep to a range of their own.
func FreePort(t testing.TB) int {
	t.Helper()
	first, lo := firstPort, ephemeralStart()
	if r := os.Getenv("KEYGATE_TEST_PORTS"); r != "" {
		if n, _ := fmt.Sscanf(r, "%d-%d", &first, &lo); n != 2 || lo <= first {
			t.Fatalf("testservers: KEYGATE_TEST_PORTS=%q: want LO-HI, such as 29500-29699", r)
		}
		lo++ // HI is in the range
	}
	for range 200 {
		p := first + rand.IntN(lo-first)
		if _, taken := handedOut.Load(p); taken {
			continue
		}
		lock, ok := reserve(t, p)
		if !ok {
			continue // another test process has it
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			lock.Close()
			continue // some server has it
		}
		ln.Close()
		handedOut.Store(p, lock)
		return p
	}
	t.Fatalf("testservers: no free loopback port in %d-%d", first, lo-1)
	return 0
}

// firstPort is the lowest port FreePort hands out: above the usual fixed
// ports of local services (PostgreSQL 5432, Redis 6379, 8080, …).
const firstPort = 20000

var handedOut sync.Map // port -> its lock file, every port FreePort returned

// reserve takes port's lock file, shared by the machine's test processes of
// one user, without waiting: false when another process holds it. The lock
// is the open file's (flock), let go when the file is closed or the process
// exits however it ends, so a killed test leaves no port taken.
func reserve(t testing.TB, port int) (*os.File, bool) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("keygate-test-ports-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("testservers: port locks: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("testservers: port lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// ephemeralStart is the first port of the kernel's ephemeral range
// (Linux's default 32768 when it cannot be read), kept above firstPort.
func ephemeralStart() int {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var l, h int
		if n, _ := fmt.Sscan(string(b), &l, &h); n == 2 {
			lo = l
		}
	}
	return max(lo, firstPort+1000)
}
