package keygate_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
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
