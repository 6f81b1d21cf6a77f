package testservers

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from a loopback port of its own to a
// server, and can cut one client off from it as a network partition does:
// point one node at Proxy.Addr and the others at the server itself.
type Proxy struct {
	// Addr is the proxy's host:port.
	Addr string

	target string
	ln     net.Listener

	closed chan struct{}

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]*proxied // client side → its pair
}

type proxied struct {
	server net.Conn // nil until dialled
	dead   bool     // cut off: bytes are read and dropped, nothing is closed
}

// StartProxy forwards a free loopback port to target until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", FreePort(t)))
	if err != nil {
		t.Fatalf("testservers: proxy: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, closed: make(chan struct{}), conns: map[net.Conn]*proxied{}}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// Cut drops every byte between the clients and the server from now on,
// without closing anything, as packets dropped by a partition whose end the
// connections open now do not survive (a firewall or NAT that forgot them):
// their calls wait for their own timeouts, and so does a connection made
// while the cut lasts (its handshake never answers). Heal lets new
// connections through again; those open during the cut stay dead.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, pc := range p.conns {
		pc.dead = true
	}
}

// Retarget sends the connections made from now on to another server, as a
// DNS name that moves to a new primary at a failover: those already open
// stay with the old one.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Heal ends a Cut for connections made from now on.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		pc := &proxied{dead: p.cut}
		p.conns[c] = pc
		p.mu.Unlock()
		go p.handle(c, pc)
	}
}

func (p *Proxy) handle(c net.Conn, pc *proxied) {
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}()
	if p.isDead(pc) {
		io.Copy(io.Discard, c)
		return
	}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	p.mu.Lock()
	pc.server = s
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.pipe(s, c, pc); done <- struct{}{} }()
	go func() { p.pipe(c, s, pc); done <- struct{}{} }()
	<-done
}

// pipe copies from src to dst until either side closes; once pc is cut off
// it reads on and drops what it reads.
func (p *Proxy) pipe(dst, src net.Conn, pc *proxied) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.isDead(pc) {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if p.isDead(pc) {
				// A dead connection is never closed for the other side:
				// it hears nothing at all.
				<-p.closed
			}
			return
		}
	}
}

func (p *Proxy) isDead(pc *proxied) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pc.dead
}

func (p *Proxy) close() {
	p.ln.Close()
	close(p.closed)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, pc := range p.conns {
		c.Close()
		if pc.server != nil {
			pc.server.Close()
		}
	}
}
