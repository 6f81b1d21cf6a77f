package testservers

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// FreePort returns a loopback TCP port nothing listens on, for a server a
// test starts. It is chosen below the kernel's ephemeral range: a port the
// kernel picks for ":0" comes from that range, as do the local ports of
// outgoing connections, so such a port could be taken by another test's
// connection between the pick and the server's bind (it was, in CI). A port
// outside the range is taken only by another server; ports are picked at
// random, so parallel test processes rarely pick the same one, and a process
// never hands out one port twice.
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
		if _, taken := handedOut.LoadOrStore(p, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // some server has it
		}
		ln.Close()
		return p
	}
	t.Fatalf("testservers: no free loopback port in %d-%d", first, lo-1)
	return 0
}

// firstPort is the lowest port FreePort hands out: above the usual fixed
// ports of local services (PostgreSQL 5432, Redis 6379, 8080, …).
const firstPort = 20000

var handedOut sync.Map // port -> true, every port FreePort returned

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
