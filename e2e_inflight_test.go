package keygate_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowSend is a send whose body is still arriving: its headers and the
// first bytes of its body are in, the rest is written by finish.
type slowSend struct {
	t    *testing.T
	conn net.Conn
	rest []byte
}

// startSlowSend writes a send's headers and the first half of its body to g
// over a connection of its own, and waits until keygate is reading the body.
func startSlowSend(t *testing.T, g *gateway, key string) *slowSend {
	t.Helper()
	host := strings.TrimPrefix(g.siteURL, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	body := sgBody("app@shop.example", "a@x.org")
	half := len(body) / 2
	fmt.Fprintf(c, "POST /v3/mail/send HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		host, key, len(body), body[:half])
	time.Sleep(200 * time.Millisecond) // keygate has checked the key and is reading the body
	return &slowSend{t: t, conn: c, rest: body[half:]}
}

// finish writes the rest of the body and returns the answer.
func (s *slowSend) finish() *response {
	s.t.Helper()
	if _, err := s.conn.Write(s.rest); err != nil {
		s.t.Fatal(err)
	}
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(s.conn), nil)
	if err != nil {
		s.t.Fatalf("no answer to the send: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// TestASendWhoseBodyArrivesAfterAChangeIsNotForwarded: a send is checked
// when its headers arrive, and its body is then read whole before it goes
// to the provider, for as long as the client takes (Caddy sets no read_body
// timeout by default). A key revoked, disabled, narrowed or ended while
// such a body was still arriving (a slow client, a large attachment, an
// attacker with a leaked key trickling sends to outlive the revocation) is
// refused once the body is in, by the admin API or the CLI alike, and
// nothing reaches the provider. Until session 37 each was forwarded: the
// key was only checked at the headers.
func TestASendWhoseBodyArrivesAfterAChangeIsNotForwarded(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: revokeCaddyfile, upstream: up.URL})
	// waitFor waits until a new send of key is refused with code, so the
	// gateway knows of the change before the slow send's body ends.
	waitFor := func(key, code string) {
		t.Helper()
		refusedAfter(t, g, key, code, time.Now(), 5*time.Second)
	}
	var expires time.Time
	for _, c := range []struct {
		name   string
		issue  func() []string          // more flags for the key's issue
		change func(k issuedKey) string // makes the change, returns the code a new send gets
		want   string                   // the code the slow send gets
	}{
		{"revoked through the admin API", nil, func(k issuedKey) string {
			if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 200 {
				t.Fatalf("revoke: %d %s", r.Status, r.Body)
			}
			return "revoked_key"
		}, "revoked_key"},
		{"revoked with the CLI", nil, func(k issuedKey) string {
			g.keys("revoke", k.ID, "--yes")
			return "revoked_key"
		}, "revoked_key"},
		{"disabled", nil, func(k issuedKey) string {
			g.keys("update", k.ID, "--disable")
			return "disabled_key"
		}, "disabled_key"},
		{"rotated, its grace ended", nil, func(k issuedKey) string {
			g.keys("rotate", k.ID, "--grace", "1s")
			time.Sleep(1100 * time.Millisecond)
			return "expired_key"
		}, "expired_key"},
		{"expired", func() []string {
			expires = time.Now().Add(3 * time.Second).Truncate(time.Second)
			return []string{"--expires", expires.UTC().Format(time.RFC3339)}
		}, func(k issuedKey) string {
			time.Sleep(time.Until(expires)) // it expires while the body is on its way
			return "expired_key"
		}, "expired_key"},
		{"its scope taken away", nil, func(k issuedKey) string {
			g.keys("update", k.ID, "--scope", "templates.read")
			return "insufficient_scope"
		}, "insufficient_scope"},
		{"its senders narrowed", nil, func(k issuedKey) string {
			g.keys("update", k.ID, "--sender-domain", "other.example")
			return "sender_not_allowed"
		}, "sender_not_allowed"},
		{"its addresses narrowed", nil, func(k issuedKey) string {
			g.keys("update", k.ID, "--allow-ip", "203.0.113.0/24")
			return "ip_not_allowed"
		}, "ip_not_allowed"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			args := []string{"--name", "slow", "--scope", "mail.send"}
			if c.issue != nil {
				args = append(args, c.issue()...)
			}
			k := g.issue(args...)
			if r := revokeSend(g, k.Key); r.Status != 202 {
				t.Fatalf("a new key: %d %s", r.Status, r.Body)
			}
			s := startSlowSend(t, g, k.Key)
			code := c.change(k)
			waitFor(k.Key, code)
			before := up.count()
			r := s.finish()
			if r.code() != c.want {
				t.Errorf("the send whose body ended after the change: %d %s, want %s", r.Status, r.Body, c.want)
			}
			if n := up.count() - before; n != 0 {
				t.Errorf("%d sends reached the provider after the change, want none", n)
			}
		})
	}
}

// TestASendInFlightAcrossAReloadIsCheckedOnceItsBodyIsIn: a reload that
// names the store otherwise (a symlinked directory, a new password) closes
// the old handlers' cache while a slow send's body is still arriving on
// them. Once the body is in, the send is checked in the store the old
// handlers still hold open for their requests in flight: a valid key's
// send goes on (not 503 store_unavailable for a cache no longer there),
// and a key revoked meanwhile is refused.
func TestASendInFlightAcrossAReloadIsCheckedOnceItsBodyIsIn(t *testing.T) {
	_, real, rename := renamableStore(t)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: revokeCaddyfile, upstream: up.URL, store: "sqlite:" + filepath.Join(real, "keys.db")})
	valid := g.issue("--name", "valid", "--scope", "mail.send")
	revoked := g.issue("--name", "revoked", "--scope", "mail.send")
	for _, k := range []issuedKey{valid, revoked} {
		if r := revokeSend(g, k.Key); r.Status != 202 {
			t.Fatalf("a new key: %d %s", r.Status, r.Body)
		}
	}
	sv, sr := startSlowSend(t, g, valid.Key), startSlowSend(t, g, revoked.Key)
	rename(g)
	g.keys("revoke", revoked.ID, "--yes")
	refusedAfter(t, g, revoked.Key, "revoked_key", time.Now(), 5*time.Second)
	before := up.count()
	if r := sv.finish(); r.Status != 202 {
		t.Errorf("a valid key's send in flight across the reload: %d %s, want 202", r.Status, r.Body)
	}
	if r := sr.finish(); r.code() != "revoked_key" {
		t.Errorf("a send in flight across the reload, its key revoked meanwhile: %d %s, want revoked_key", r.Status, r.Body)
	}
	if n := up.count() - before; n != 1 {
		t.Errorf("%d sends reached the provider, want the valid key's one", n)
	}
}

// streamCaddyfile has a route whose requests keygate passes on as their
// bodies arrive (it reads only a send's body whole).
var streamCaddyfile = site(`
	handle {
		keygate {
			store {STORE}
			cache_ttl 1h
			mail_api sendgrid
			scope mail.send POST /v3/mail/send
			scope templates.write POST /v3/templates
		}
		reverse_proxy {UPSTREAM}
	}
`)

// TestAStreamedBodyThatEndsAfterARevocationNeverCompletes: a request keygate
// does not read whole (anything but a send: a template, a contact list
// uploaded) goes to the provider as its body arrives. Its key revoked,
// disabled or its scope taken away before the body's end, the provider
// never gets that end: the request is cut short, as a client that went
// away would leave it, and the client is told why. A body of a length
// given and one sent chunked alike. Until session 37 the provider got the
// whole request.
func TestAStreamedBodyThatEndsAfterARevocationNeverCompletes(t *testing.T) {
	// A provider's API is HTTPS, where reverse_proxy speaks HTTP/2: a body
	// cut short there is a stream reset, not a connection closed.
	for _, tlsUp := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1 upstream", true: "HTTP/2 upstream over TLS"}[tlsUp], func(t *testing.T) {
			testStreamedBodyCutShort(t, tlsUp)
		})
	}
}

func testStreamedBodyCutShort(t *testing.T, tlsUp bool) {
	var mu sync.Mutex
	complete, proto := 0, 0
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			return // cut short: an upstream acts on no part of it
		}
		mu.Lock()
		complete++
		proto = r.ProtoMajor
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	caddyfile := streamCaddyfile
	if tlsUp {
		up.EnableHTTP2 = true
		up.StartTLS()
		caddyfile = strings.Replace(caddyfile, "reverse_proxy {UPSTREAM}", "reverse_proxy {UPSTREAM} {\n\t\t\ttransport http {\n\t\t\t\ttls_insecure_skip_verify\n\t\t\t}\n\t\t}", 1)
	} else {
		up.Start()
	}
	t.Cleanup(up.Close)
	completed := func() int {
		mu.Lock()
		defer mu.Unlock()
		return complete
	}
	g := startGateway(t, gatewayConfig{caddyfile: caddyfile, upstream: up.URL})
	host := strings.TrimPrefix(g.siteURL, "http://")
	body := []byte(`{"name":"welcome","generation":"dynamic"}`)
	for _, c := range []struct {
		name    string
		chunked bool
		change  func(k issuedKey)
		want    string
	}{
		{"revoked", false, func(k issuedKey) {
			if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 200 {
				t.Fatalf("revoke: %d %s", r.Status, r.Body)
			}
		}, "revoked_key"},
		{"revoked, chunked", true, func(k issuedKey) { g.keys("revoke", k.ID, "--yes") }, "revoked_key"},
		{"disabled", false, func(k issuedKey) { g.keys("update", k.ID, "--disable") }, "disabled_key"},
		{"its scope taken away", true, func(k issuedKey) { g.keys("update", k.ID, "--scope", "mail.send") }, "insufficient_scope"},
		{"unchanged", true, nil, ""},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			k := g.issue("--name", "uploader", "--scope", "templates.write")
			if r := g.call("POST", "/v3/templates", k.Key, body); r.Status != http.StatusCreated {
				t.Fatalf("a new key: %d %s", r.Status, r.Body)
			}
			conn, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			half := len(body) / 2
			framing := fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body[:half])
			rest := string(body[half:])
			if c.chunked {
				framing = fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", half, body[:half])
				rest = fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body)-half, body[half:])
			}
			fmt.Fprintf(conn, "POST /v3/templates HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n%s", host, k.Key, framing)
			time.Sleep(200 * time.Millisecond) // passed on, its body on its way
			if c.change != nil {
				c.change(k)
				// The CLI's change is seen within the 1 s bound.
				refusedAfterCall(t, func() *response { return g.call("POST", "/v3/templates", k.Key, body) }, c.want)
			}
			before := completed()
			io.WriteString(conn, rest)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r := &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
			time.Sleep(100 * time.Millisecond) // the upstream's handler has returned
			if c.want == "" {
				if r.Status != http.StatusCreated || completed() != before+1 {
					t.Errorf("an unchanged key's streamed request: %d %s, %d completed at the provider; want 201 and 1", r.Status, r.Body, completed()-before)
				}
				mu.Lock()
				defer mu.Unlock()
				if want := map[bool]int{false: 1, true: 2}[tlsUp]; proto != want {
					t.Errorf("the upstream was reached over HTTP/%d, want HTTP/%d", proto, want)
				}
				return
			}
			if r.code() != c.want {
				t.Errorf("the request whose body ended after the change: %d %s, want %s", r.Status, r.Body, c.want)
			}
			if n := completed() - before; n != 0 {
				t.Errorf("%d requests completed at the provider after the change, want none", n)
			}
		})
	}
}

// refusedAfterCall makes call until it is refused with code, for up to 5 s.
func refusedAfterCall(t *testing.T, call func() *response, code string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if call().code() == code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not refused with %s within 5 s", code)
		}
	}
}

// TestASendRetriedAfterARevocationIsNotSent: reverse_proxy tries a send
// again after a failed dial for as long as lb_try_duration allows (the
// provider unreachable for a few seconds). A key revoked meanwhile is
// checked again before the retry, and the provider, reachable again, never
// gets the send; the client gets revoked_key. Until session 37 the retry
// sent it, seconds after the revocation.
func TestASendRetriedAfterARevocationIsNotSent(t *testing.T) {
	var mu sync.Mutex
	complete := 0
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens yet: dials fail
	g := startGateway(t, gatewayConfig{upstream: "http://" + addr, caddyfile: site(`
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM} {
		lb_try_duration 10s
		lb_try_interval 100ms
	}
`)})
	for _, c := range []struct {
		name   string
		revoke bool
		want   int
	}{{"revoked while the provider was unreachable", true, 401}, {"unchanged", false, 202}} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			k := g.issue("--name", "retried", "--scope", "mail.send")
			answered := make(chan *response, 1)
			go func() {
				req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", strings.NewReader(string(sgBody("app@shop.example", "a@x.org"))))
				req.Header.Set("Authorization", "Bearer "+k.Key)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					answered <- &response{Status: -1, Body: []byte(err.Error())}
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				answered <- &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
			}()
			time.Sleep(400 * time.Millisecond) // reverse_proxy is retrying the dial
			if c.revoke {
				if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 200 {
					t.Fatalf("revoke: %d %s", r.Status, r.Body)
				}
				time.Sleep(300 * time.Millisecond)
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, err := io.ReadAll(r.Body); err != nil {
					return // cut short: the provider acts on no part of it
				}
				mu.Lock()
				complete++
				mu.Unlock()
				w.WriteHeader(http.StatusAccepted)
			}))
			up.Listener = l
			up.Start()
			defer up.Close()
			r := <-answered
			up.Close() // its handlers have returned
			mu.Lock()
			sent := complete
			complete = 0
			mu.Unlock()
			if r.Status != c.want || c.revoke && r.code() != "revoked_key" {
				t.Errorf("the send: %d %s, want %d", r.Status, r.Body, c.want)
			}
			if want := map[bool]int{true: 0, false: 1}[c.revoke]; sent != want {
				t.Errorf("%d sends reached the provider, want %d", sent, want)
			}
		})
	}
}

// TestASlowSendIsRefusedOnANodeThatLearnsOfTheRevocation: two nodes on
// PostgreSQL. A send whose body is still arriving on node b when its key
// is revoked through node a's admin API, or with the CLI, is refused once
// its body is in, as soon as node b has the change (within the 1 s bound).
func TestASlowSendIsRefusedOnANodeThatLearnsOfTheRevocation(t *testing.T) {
	rig := startRevokeRig(t)
	for _, how := range []string{"admin API", "CLI"} {
		k := rig.cached()
		s := startSlowSend(t, rig.b, k.Key)
		if how == "CLI" {
			rig.a.keys("revoke", k.ID, "--yes")
		} else if r := rig.a.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 200 {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		took := refusedAfter(t, rig.b, k.Key, "revoked_key", time.Now(), 2*time.Second)
		t.Logf("revoked with the %s: node b refused new sends after %v", how, took.Round(time.Millisecond))
		if r := s.finish(); r.code() != "revoked_key" {
			t.Errorf("revoked with the %s, node b's send whose body ended after: %d %s, want revoked_key", how, r.Status, r.Body)
		}
	}
}

// TestAnAdminRevocationReachesHandlersNamingTheStoreOtherwise: two routes
// of one process name the same SQLite file, one through a symlinked
// directory, so each has a cache of its own. A key revoked through the
// admin API is refused by both on their very next request, not by the
// other one only at its next poll of the change log (up to 200 ms later).
func TestAnAdminRevocationReachesHandlersNamingTheStoreOtherwise(t *testing.T) {
	dir := t.TempDir()
	real, alias := filepath.Join(dir, "real"), filepath.Join(dir, "alias")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, alias); err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t)
	realStore := "sqlite:" + filepath.Join(real, "keys.db")
	g := startGateway(t, gatewayConfig{store: realStore, upstream: up.URL, caddyfile: site(`
	handle /a/* {
		keygate {
			store {STORE}
			cache_ttl 1h
			scope mail.send POST /a/send
		}
		reverse_proxy {UPSTREAM}
	}
	handle /b/* {
		keygate {
			store sqlite:` + filepath.Join(alias, "keys.db") + `
			cache_ttl 1h
			scope mail.send POST /b/send
		}
		reverse_proxy {UPSTREAM}
	}
`)})
	for i := range 5 {
		k := g.issue("--name", fmt.Sprintf("k%d", i), "--scope", "mail.send")
		for _, p := range []string{"/a/send", "/b/send"} {
			if r := g.call("POST", p, k.Key, nil); r.Status != http.StatusAccepted {
				t.Fatalf("a new key on %s: %d %s", p, r.Status, r.Body)
			}
		}
		if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke?store="+url.QueryEscape(realStore), map[string]string{"reason": "leaked"}); r.Status != 200 {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		for _, p := range []string{"/a/send", "/b/send"} {
			if r := g.call("POST", p, k.Key, nil); r.code() != "revoked_key" {
				t.Errorf("key %d on %s, the request right after the admin API revoked it: %d %s, want revoked_key", i, p, r.Status, r.Body)
			}
		}
		time.Sleep(time.Duration(37*i) * time.Millisecond) // at another moment of the poll
	}
}
