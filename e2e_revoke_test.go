package keygate_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

// revokeCaddyfile: a cache_ttl of an hour, so a node that misses a change
// shows it rather than forgetting the key on its own.
var revokeCaddyfile = site(`
	` + demoConsole + `
	handle {
		keygate {
			store {STORE}
			cache_ttl 1h
			mail_api sendgrid
			whoami /keygate/whoami
			scope mail.send POST /v3/mail/send
			scope templates.read GET /v3/templates*
		}
		reverse_proxy {UPSTREAM}
	}
`)

// revokeRig is two nodes on one PostgreSQL: a reaches it directly, b
// through a proxy that can cut b off from it.
type revokeRig struct {
	t    *testing.T
	pg   *testservers.Postgres
	cut  *testservers.Proxy
	a, b *gateway
}

func startRevokeRig(t *testing.T) *revokeRig {
	t.Helper()
	needBinary(t)
	pg := testservers.StartPostgres(t)
	up := newUpstream(t)
	cut := testservers.StartProxy(t, strings.Split(strings.TrimPrefix(pg.URI, "postgres://postgres@"), "/")[0])
	a := startGateway(t, gatewayConfig{caddyfile: revokeCaddyfile, upstream: up.URL, store: pg.URI})
	viaProxy := strings.Replace(pg.URI, strings.Split(strings.TrimPrefix(pg.URI, "postgres://postgres@"), "/")[0], cut.Addr, 1)
	b := startGateway(t, gatewayConfig{caddyfile: revokeCaddyfile, upstream: up.URL, store: viaProxy})
	return &revokeRig{t: t, pg: pg, cut: cut, a: a, b: b}
}

// cached issues a key and uses it once on each node, so both cache it.
func (r *revokeRig) cached() issuedKey {
	r.t.Helper()
	return r.cachedNamed(fmt.Sprintf("k%d", time.Now().UnixNano()))
}

func (r *revokeRig) cachedNamed(name string) issuedKey {
	r.t.Helper()
	k := r.a.issue("--name", name, "--scope", "mail.send")
	for _, g := range []*gateway{r.a, r.b} {
		if res := revokeSend(g, k.Key); res.Status != 202 {
			r.t.Fatalf("a new key: %d %s", res.Status, res.Body)
		}
	}
	return k
}

func revokeSend(g *gateway, key string) *response {
	return g.call("POST", "/v3/mail/send", key, sgBody("app@shop.example", "a@x.org"))
}

// refusedAfter sends with key to g until it is refused with code (for up to
// within) and returns how long after since that was; it fails the test if
// it never is.
func refusedAfter(t *testing.T, g *gateway, key, code string, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	for {
		r := revokeSend(g, key)
		if r.code() == code {
			return time.Since(since)
		}
		if r.Status != 202 {
			t.Fatalf("want 202 or %s, got %d %s", code, r.Status, r.Body)
		}
		if time.Since(since) > within {
			t.Fatalf("still accepted %v after the change (want %s)\n%s", time.Since(since), code, g.logs())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestARevocationReachesEveryNodeWhateverHappensToItsLink: a key revoked,
// disabled, narrowed or ended on one node or by the CLI is refused by the
// other node within the 1 s bound, with a cache_ttl of an hour: when the
// node's LISTEN connection was killed just before, when PostgreSQL
// restarted around the change, and, for a node cut off from PostgreSQL
// while the change was made (its connections dead for good, as behind a
// firewall that forgot them), within 1 s of its reaching the store again:
// a poll waiting on a dead connection waited out the store's 2 s timeout,
// and the node served the revoked key 1.7-1.8 s after the partition ended.
// Whoami answers as the gateway does, and the console says revoked at once
// on both nodes.
func TestARevocationReachesEveryNodeWhateverHappensToItsLink(t *testing.T) {
	r := startRevokeRig(t)
	bound := time.Second
	check := func(t *testing.T, name string, took time.Duration) {
		t.Helper()
		t.Logf("%s: refused after %v", name, took.Round(time.Millisecond))
		if took > bound {
			t.Errorf("%s: refused %v after the change, want within %v", name, took, bound)
		}
	}

	t.Run("revoked through node a's admin API", func(t *testing.T) {
		k := r.cached()
		if res := r.a.admin("POST", "/keygate/keys/"+k.ID+"/revoke", nil); res.Status != 200 {
			t.Fatalf("revoke: %d %s", res.Status, res.Body)
		}
		ack := time.Now()
		if res := revokeSend(r.a, k.Key); res.code() != "revoked_key" {
			t.Errorf("node a, the next request: %d %s", res.Status, res.Body)
		}
		check(t, "node b", refusedAfter(t, r.b, k.Key, "revoked_key", ack, 5*time.Second))
	})

	t.Run("whoami and the console agree at once", func(t *testing.T) {
		whoami := func(g *gateway, key string) string {
			res := g.call("GET", "/keygate/whoami", key, nil)
			if res.Status == 200 {
				return "ok"
			}
			return res.code()
		}
		console := func(g *gateway, id string) bool {
			_, page := consoleUser{t: t, prefix: "/console"}.do(g, "GET", "/keys/"+id, nil)
			return strings.Contains(page, "Every request with it is refused")
		}
		k := r.cachedNamed("whoami-admin")
		if whoami(r.a, k.Key) != "ok" || whoami(r.b, k.Key) != "ok" {
			t.Fatal("whoami of a live key is not ok")
		}
		if res := r.a.admin("POST", "/keygate/keys/"+k.ID+"/revoke", nil); res.Status != 200 {
			t.Fatalf("revoke: %d %s", res.Status, res.Body)
		}
		ack := time.Now()
		if got := whoami(r.a, k.Key); got != "revoked_key" {
			t.Errorf("revoked through node a's admin API: whoami on a %q, want revoked_key", got)
		}
		for whoami(r.b, k.Key) != "revoked_key" && time.Since(ack) < 5*time.Second {
			time.Sleep(5 * time.Millisecond)
		}
		check(t, "whoami on node b", time.Since(ack))
		if !console(r.a, k.ID) || !console(r.b, k.ID) {
			t.Errorf("revoked through node a's admin API: the consoles say revoked: %v %v", console(r.a, k.ID), console(r.b, k.ID))
		}

		k = r.cachedNamed("whoami-console")
		whoami(r.b, k.Key)
		consoleRevoke(t, r.b, k.ID, "whoami-console")
		ack = time.Now()
		if got := whoami(r.b, k.Key); got != "revoked_key" {
			t.Errorf("revoked through node b's console: whoami on b %q, want revoked_key", got)
		}
		check(t, "after the console on node b, node a", refusedAfter(t, r.a, k.Key, "revoked_key", ack, 5*time.Second))
		if !console(r.a, k.ID) || !console(r.b, k.ID) {
			t.Errorf("revoked through node b's console: the consoles say revoked: %v %v", console(r.a, k.ID), console(r.b, k.ID))
		}
	})

	t.Run("revoked by the CLI", func(t *testing.T) {
		k := r.cached()
		r.a.keys("revoke", k.ID, "--yes")
		ack := time.Now()
		check(t, "node a", refusedAfter(t, r.a, k.Key, "revoked_key", ack, 5*time.Second))
		check(t, "node b", refusedAfter(t, r.b, k.Key, "revoked_key", ack, 5*time.Second))
	})

	t.Run("a rotation's grace ends", func(t *testing.T) {
		k := r.cached()
		res := r.a.admin("POST", "/keygate/keys/"+k.ID+"/rotate", map[string]string{"grace": "1s"})
		var rot struct {
			OldKeyEnds time.Time `json:"old_key_ends"`
		}
		if res.Status != 201 || json.Unmarshal(res.Body, &rot) != nil {
			t.Fatalf("rotate: %d %s", res.Status, res.Body)
		}
		check(t, "node a", refusedAfter(t, r.a, k.Key, "expired_key", rot.OldKeyEnds, 5*time.Second))
		check(t, "node b", refusedAfter(t, r.b, k.Key, "expired_key", rot.OldKeyEnds, 5*time.Second))
	})

	t.Run("narrowed through node a's admin API", func(t *testing.T) {
		for _, c := range []struct {
			patch map[string]any
			code  string
		}{
			{map[string]any{"disabled": true}, "disabled_key"},
			{map[string]any{"scopes": []string{"templates.read"}}, "insufficient_scope"},
			{map[string]any{"sender_domains": []string{"other.example"}}, "sender_not_allowed"},
			{map[string]any{"allowed_ips": []string{"203.0.113.0/24"}}, "ip_not_allowed"},
			{map[string]any{"expires": ""}, "expired_key"}, // an expiry moved earlier: set below
		} {
			k := r.cached()
			if _, ok := c.patch["expires"]; ok {
				c.patch["expires"] = time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano)
			}
			if res := r.a.admin("PATCH", "/keygate/keys/"+k.ID, c.patch); res.Status != 200 {
				t.Fatalf("PATCH %v: %d %s", c.patch, res.Status, res.Body)
			}
			ack := time.Now()
			if e, ok := c.patch["expires"].(string); ok {
				ack, _ = time.Parse(time.RFC3339Nano, e)
			}
			check(t, fmt.Sprintf("%v on node a, node a", c.patch), refusedAfter(t, r.a, k.Key, c.code, ack, 5*time.Second))
			check(t, fmt.Sprintf("%v on node a, node b", c.patch), refusedAfter(t, r.b, k.Key, c.code, ack, 5*time.Second))
		}
	})

	t.Run("node b's LISTEN connection killed just before", func(t *testing.T) {
		k := r.cached()
		db, err := sql.Open("pgx", r.pg.URI)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.QueryRow("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'").Scan(&n); err != nil || n == 0 {
			t.Fatalf("killing the listeners: %d, %v", n, err)
		}
		r.a.keys("revoke", k.ID, "--yes")
		ack := time.Now()
		check(t, "node b", refusedAfter(t, r.b, k.Key, "revoked_key", ack, 5*time.Second))
	})

	t.Run("PostgreSQL restarted just before", func(t *testing.T) {
		k := r.cached()
		r.pg.Stop()
		r.pg.Start()
		r.a.keys("revoke", k.ID, "--yes")
		ack := time.Now()
		check(t, "node a", refusedAfter(t, r.a, k.Key, "revoked_key", ack, 5*time.Second))
		check(t, "node b", refusedAfter(t, r.b, k.Key, "revoked_key", ack, 5*time.Second))
	})

	t.Run("PostgreSQL stopped just after, started a second later", func(t *testing.T) {
		k := r.cached()
		r.a.keys("revoke", k.ID, "--yes")
		r.pg.Stop()
		time.Sleep(time.Second)
		r.pg.Start()
		back := time.Now()
		check(t, "node a", refusedAfter(t, r.a, k.Key, "revoked_key", back, 5*time.Second))
		check(t, "node b", refusedAfter(t, r.b, k.Key, "revoked_key", back, 5*time.Second))
	})

	t.Run("node b cut off from PostgreSQL while node a revokes", func(t *testing.T) {
		k := r.cached()
		other := r.cached()
		r.cut.Cut()
		time.Sleep(300 * time.Millisecond) // a poll or two fails
		if res := r.a.admin("POST", "/keygate/keys/"+k.ID+"/revoke", nil); res.Status != 200 {
			t.Fatalf("revoke: %d %s", res.Status, res.Body)
		}
		time.Sleep(2 * time.Second)
		// Cut off, node b serves its cache (guarantees.md): the revoked
		// key too.
		if res := revokeSend(r.b, other.Key); res.Status != 202 {
			t.Errorf("node b cut off, a cached key: %d %s", res.Status, res.Body)
		}
		r.cut.Heal()
		back := time.Now()
		check(t, "node b, after it can reach the store again", refusedAfter(t, r.b, k.Key, "revoked_key", back, 10*time.Second))
	})
}

// TestASQLiteRevocationThroughACheckpointWhileTheGatewayWrites: a key
// revoked by the CLI while the gateway writes usage, with the write-ahead
// log checkpointed into the file (and truncated) right after, is refused
// within the 1 s bound with a cache_ttl of an hour.
func TestASQLiteRevocationThroughACheckpointWhileTheGatewayWrites(t *testing.T) {
	needBinary(t)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: revokeCaddyfile, upstream: up.URL})
	busy := g.issue("--name", "busy", "--scope", "mail.send")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // usage to flush every second
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			revokeSend(g, busy.Key)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	defer func() { close(stop); <-done }()
	db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(g.store, "sqlite:"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range 3 {
		k := g.issue("--name", fmt.Sprintf("revoked-%d", i), "--scope", "mail.send")
		if res := revokeSend(g, k.Key); res.Status != 202 {
			t.Fatalf("a new key: %d %s", res.Status, res.Body)
		}
		time.Sleep(time.Duration(300*i) * time.Millisecond) // across a usage flush
		g.keys("revoke", k.ID, "--yes")
		ack := time.Now()
		if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			t.Logf("checkpoint: %v", err) // busy: the gateway was writing
		}
		took := refusedAfter(t, g, k.Key, "revoked_key", ack, 5*time.Second)
		t.Logf("refused %v after the revoke", took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("refused %v after the revoke, want within 1 s", took)
		}
	}
}
