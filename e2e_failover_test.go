package keygate_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

// failoverSecret is the password in the failover rig's URIs: trust
// authentication ignores it; it is there to be redacted.
const failoverSecret = "failover-secret"

// TestAPostgresFailover runs two nodes on a primary and its streaming
// standby, named together as a managed service's clients name them
// (postgres://h1,h2/db?target_session_attrs=read-write), through a
// failover: the primary stops, the standby is promoted a second later.
// Cached keys keep working throughout, keys not cached get 503 until the
// promotion, key changes are refused with store_unavailable (the CLI's
// exit status 5) and never half made, every count is written, and a
// revocation made after the promotion reaches both nodes within the 1 s
// bound. A third node whose name for the database moves (a DNS name, a
// proxy) and first lands on a read-only server (a replica, the old primary
// demoted) refuses writes as an outage and goes to the primary once its
// name does.
func TestAPostgresFailover(t *testing.T) {
	needBinary(t)
	primary := testservers.StartPostgres(t)
	standby := primary.StartStandby()
	both := fmt.Sprintf("postgres://postgres:%s@%s,%s/keygate?sslmode=disable&target_session_attrs=read-write",
		failoverSecret, primary.Addr(), standby.Addr())
	up := newUpstream(t)
	a := startGateway(t, gatewayConfig{caddyfile: revokeCaddyfile, upstream: up.URL, store: both})
	b := startGateway(t, gatewayConfig{caddyfile: revokeCaddyfile, upstream: up.URL, store: both})
	nodes := []*gateway{a, b}
	query := func(pg *testservers.Postgres, q string, into ...any) {
		t.Helper()
		db, err := sql.Open("pgx", pg.URI)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRow(q).Scan(into...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	t.Run("caddy validate takes both servers", func(t *testing.T) {
		out, err := exec.Command(caddyBin, "validate", "--config", a.config, "--adapter", "caddyfile").CombinedOutput()
		if err != nil || strings.Contains(string(out), failoverSecret) {
			t.Fatalf("caddy validate: %v\n%s", err, out)
		}
	})

	t.Run("the primary stops and the standby is promoted", func(t *testing.T) {
		counted := a.issue("--name", "counted", "--scope", "mail.send")
		leaked := a.issue("--name", "leaked", "--scope", "mail.send")
		unknown := a.issue("--name", "not-cached", "--scope", "mail.send")
		sent := 0
		for _, g := range nodes {
			sent += untilSendCached(t, g, counted.Key)
			if r := revokeSend(g, leaked.Key); r.Status != 202 {
				t.Fatalf("a new key: %d %s", r.Status, r.Body)
			}
		}
		// The standby has replayed all of it (asynchronous replication
		// loses what it has not: not this test's subject).
		var lsn string
		query(primary, "SELECT pg_current_wal_lsn()::text", &lsn)
		for caught := false; !caught; time.Sleep(10 * time.Millisecond) {
			query(standby, "SELECT pg_last_wal_replay_lsn() >= '"+lsn+"'::pg_lsn", &caught)
		}

		stopped := time.Now()
		primary.Stop()
		for _, g := range nodes {
			sent += sends(t, g, counted.Key, 3) // cached: answered
			if r := revokeSend(g, unknown.Key); r.Status != 503 || r.code() != "store_unavailable" {
				t.Errorf("a key not cached while no server takes writes: %d %s", r.Status, r.Body)
			}
		}
		if r := a.admin("POST", "/keygate/keys", map[string]any{"name": "during", "scopes": []string{"mail.send"}}); r.Status != 503 ||
			r.code() != "store_unavailable" || strings.Contains(string(r.Body), failoverSecret) {
			t.Errorf("the admin API issuing while no server takes writes: %d %s", r.Status, r.Body)
		}
		_, errOut, err := a.keysRaw("issue", "--name", "during-cli")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 5 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 ||
			strings.Contains(errOut, failoverSecret) {
			t.Errorf("caddy keys issue while no server takes writes: %v\n%s", err, errOut)
		}
		t.Logf("caddy keys issue during the failover: %s", strings.TrimSpace(errOut))
		time.Sleep(time.Second - time.Since(stopped)) // a failover takes a moment

		promoted := time.Now()
		standby.Promote()
		t.Logf("pg_ctl promote took %v", time.Since(promoted).Round(time.Millisecond))
		for _, g := range nodes {
			for {
				r := revokeSend(g, unknown.Key)
				if r.Status == 202 {
					t.Logf("a key not cached: 503 for %v, %v after the promotion began",
						time.Since(stopped).Round(time.Millisecond), time.Since(promoted).Round(time.Millisecond))
					break
				}
				if r.code() != "store_unavailable" || time.Since(promoted) > 10*time.Second {
					t.Fatalf("a key not cached after the promotion: %d %s\n%s", r.Status, r.Body, g.logs())
				}
				time.Sleep(10 * time.Millisecond)
			}
			sent += sends(t, g, counted.Key, 2)
		}

		// A revocation right after the promotion, by the CLI on the
		// same URI, and one through a node's admin API.
		a.keys("revoke", leaked.ID, "--yes")
		ack := time.Now()
		for i, g := range nodes {
			took := refusedAfter(t, g, leaked.Key, "revoked_key", ack, 5*time.Second)
			t.Logf("revoked by the CLI after the promotion: node %c refused it after %v", 'a'+i, took.Round(time.Millisecond))
			if took > time.Second {
				t.Errorf("node %c refused a key revoked after the promotion %v later, want within 1s", 'a'+i, took)
			}
		}
		if r := b.admin("POST", "/keygate/keys/"+unknown.ID+"/revoke", nil); r.Status != 200 {
			t.Fatalf("revoke through the admin API after the promotion: %d %s", r.Status, r.Body)
		}
		ack = time.Now()
		if took := refusedAfter(t, a, unknown.Key, "revoked_key", ack, 5*time.Second); took > time.Second {
			t.Errorf("node a refused a key revoked on node b %v later, want within 1s", took)
		} else {
			t.Logf("revoked through node b's admin API: node a refused it after %v", took.Round(time.Millisecond))
		}
		// Both nodes LISTEN on the new primary.
		listening := func() bool {
			var n int
			query(standby, "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN keygate_changes'", &n)
			return n == len(nodes)
		}
		if took := eventually(t, 10*time.Second, listening); took < 0 {
			t.Error("the nodes do not LISTEN on the new primary")
		} else {
			t.Logf("both nodes LISTEN on the new primary %v after the promotion", time.Since(promoted).Round(time.Millisecond))
		}

		if eventually(t, 10*time.Second, func() bool { return a.usage(counted.ID).Allowed == int64(sent) }) < 0 {
			t.Errorf("usage after the failover: %d allowed, want %d", a.usage(counted.ID).Allowed, sent)
		}
		for i, g := range nodes {
			logs := g.logs()
			if strings.Contains(logs, failoverSecret) {
				t.Errorf("node %c's log holds the store's password", 'a'+i)
			}
			said := storeLines(logs)
			t.Logf("node %c said %d lines of the store: %s; %s", 'a'+i, len(said), strings.Join(said, " | "), storeErrors(g))
			// Each outage began and ended, for lookups, polls and
			// flushes: not a line per attempt.
			if len(said) > 6 {
				t.Errorf("node %c said %d lines of the failover, want a few", 'a'+i, len(said))
			}
		}
	})

	t.Run("a node whose name for the database lands on a read-only server", func(t *testing.T) {
		// The name follows the primary: now the promoted standby.
		name := testservers.StartProxy(t, standby.Addr())
		viaName := fmt.Sprintf("postgres://postgres:%s@%s/keygate?sslmode=disable", failoverSecret, name.Addr)
		c := startGateway(t, gatewayConfig{caddyfile: revokeCaddyfile, upstream: up.URL, store: viaName})
		counted := c.issue("--name", "counted-on-c", "--scope", "mail.send")
		sent := untilSendCached(t, c, counted.Key)

		// The name moves to a replica (stale DNS after a failover: the old
		// primary, demoted to a reader), and the server the node was on
		// drops its connections, as a server restarting into its new role
		// does.
		replica := standby.StartStandby()
		name.Retarget(replica.Addr())
		var n int
		query(standby, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()", &n)

		sent += sends(t, c, counted.Key, 3)
		time.Sleep(1500 * time.Millisecond) // a usage flush or two meets the replica
		r := c.admin("POST", "/keygate/keys", map[string]any{"name": "on-a-replica", "scopes": []string{"mail.send"}})
		if r.Status != 503 || r.code() != "store_unavailable" || r.Header.Get("Retry-After") == "" {
			t.Errorf("the admin API issuing on a read-only server: %d %s", r.Status, r.Body)
		}
		_, errOut, err := c.keysRaw("issue", "--name", "on-a-replica-cli")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 5 || strings.Contains(errOut, failoverSecret) {
			t.Errorf("caddy keys issue on a read-only server: %v\n%s", err, errOut)
		}
		t.Logf("caddy keys issue on a read-only server: %s", strings.TrimSpace(errOut))

		// The name follows the primary again.
		moved := time.Now()
		name.Retarget(standby.Addr())
		took := eventually(t, 10*time.Second, func() bool {
			r := c.admin("POST", "/keygate/keys", map[string]any{"name": "after-the-move", "scopes": []string{"mail.send"}})
			return r.Status == 201
		})
		if took < 0 {
			t.Fatalf("the admin API never issued once the name named the primary again:\n%s", c.logs())
		}
		// A write or two on a connection to the replica, and the pool has
		// left it: before, connections kept busy by polls stayed on it
		// (1.6-10 s, and for as long as a poll or a flush kept them busy).
		if took > time.Second {
			t.Errorf("the node issued %v after its name moved back to the primary, want within 1s", took)
		}
		t.Logf("the node issued %v after its name moved back to the primary", time.Since(moved).Round(time.Millisecond))
		if eventually(t, 10*time.Second, func() bool { return c.usage(counted.ID).Allowed == int64(sent) }) < 0 {
			t.Errorf("usage counted on a read-only server: %d allowed, want %d", c.usage(counted.ID).Allowed, sent)
		}
		if strings.Contains(c.logs(), failoverSecret) {
			t.Error("node c's log holds the store's password")
		}
		t.Logf("node c: keygate_store_errors_total: %s", storeErrors(c))
	})
}

// storeErrors is a node's keygate_store_errors_total lines, for the log.
// TestAStoreOnAStandbyIsSaidToTakeNoWrites: `caddy keys` and the admin
// API's ?store= on a PostgreSQL standby (it answers reads and refuses
// writes, SQLSTATE 25006), which opening a store writes to (its schema),
// say plainly that the server takes no writes, with exit status 5 and 503
// store_unavailable (an outage: a failover ends it). Until session 34
// both quoted the statement refused, "migrate: ERROR: cannot execute
// CREATE TABLE in a read-only transaction".
func TestAStoreOnAStandbyIsSaidToTakeNoWrites(t *testing.T) {
	needBinary(t)
	primary := testservers.StartPostgres(t)
	g := startGateway(t, gatewayConfig{caddyfile: revokeCaddyfile, upstream: newUpstream(t).URL, store: primary.URI})
	k := g.issue("--name", "crm", "--scope", "mail.send")
	standby := primary.StartStandby()
	const plain = "the server takes no writes (a standby, or a server set read-only)"
	for _, args := range [][]string{{"list"}, {"show", k.ID, "--json"}, {"revoke", k.ID, "--yes"}} {
		cmd := exec.Command(caddyBin, append(append([]string{"keys"}, args...), "--store", standby.URI)...)
		var stderr bytes.Buffer
		cmd.Env, cmd.Stderr = g.environ(), &stderr
		err := cmd.Run()
		if msg := stderr.String(); exitStatus(t, err) != 5 || !strings.Contains(msg, plain) || strings.Contains(msg, "CREATE TABLE") {
			t.Errorf("caddy keys %v on a standby: %v %q; want exit status 5 saying %q", args, err, msg, plain)
		}
	}
	r := g.admin("GET", "/keygate/keys?store="+url.QueryEscape(standby.URI), nil)
	if r.Status != 503 || r.code() != "store_unavailable" || !strings.Contains(string(r.Body), plain) || strings.Contains(string(r.Body), "CREATE TABLE") {
		t.Errorf("GET /keygate/keys?store= a standby: %d %s; want 503 store_unavailable saying %q", r.Status, r.Body, plain)
	}
}

// TestAWriteOnAServerThatTurnsReadOnlyIsSaidToTakeNoWrites: a store opened
// while its PostgreSQL server took writes, which then takes none (set
// read-only, as a failover demotes a primary), says so plainly on every
// surface that writes, as one opened on such a server does
// (TestAStoreOnAStandbyIsSaidToTakeNoWrites): the admin API's issue and
// revoke (503 store_unavailable), the console's revoke (503, its page and
// its log line), `caddy keys` (exit status 5). Until session 34 all but
// `caddy keys` quoted the statement refused, "cannot execute INSERT in a
// read-only transaction".
func TestAWriteOnAServerThatTurnsReadOnlyIsSaidToTakeNoWrites(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	g := startGateway(t, gatewayConfig{upstream: newUpstream(t).URL, store: pg.URI, caddyfile: site(`
	` + demoConsole + `
	handle {
		keygate {
			store {STORE}
			scope mail.send POST /v3/mail/send
		}
		reverse_proxy {UPSTREAM}
	}
`)})
	k := g.issue("--name", "crm", "--scope", "mail.send")
	u := consoleUser{t: t, prefix: "/console"}
	token := u.formToken(g)

	// The server takes no writes from now on, the sessions open already
	// included.
	admin, err := sql.Open("pgx", pg.URI)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, q := range []string{"ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"} {
		if _, err := admin.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // the sessions read it

	const plain = "the server takes no writes (a standby, or a server set read-only)"
	for _, c := range []struct {
		what, path string
		body       any
	}{
		{"an issue", "/keygate/keys", map[string]any{"name": "later", "scopes": []string{"mail.send"}}},
		{"a revoke", "/keygate/keys/" + k.ID + "/revoke", map[string]any{"reason": "left"}},
	} {
		r := g.admin("POST", c.path, c.body)
		if r.Status != 503 || r.code() != "store_unavailable" || !strings.Contains(string(r.Body), plain) || strings.Contains(string(r.Body), "read-only transaction") {
			t.Errorf("the admin API's %s on a server set read-only: %d %s; want 503 store_unavailable saying %q", c.what, r.Status, r.Body, plain)
		}
	}
	resp, page := u.do(g, "POST", "/keys/"+k.ID+"/revoke", url.Values{"csrf": {token}, "confirm": {"crm"}, "reason": {"left"}})
	if resp.StatusCode != 503 || !strings.Contains(page, plain) || strings.Contains(page, "read-only transaction") {
		t.Errorf("the console's revoke on a server set read-only: %d; want 503 saying %q\n%s", resp.StatusCode, plain, page)
	}
	for _, args := range [][]string{{"issue", "--name", "later", "--scope", "mail.send"}, {"revoke", k.ID, "--yes"}} {
		_, errOut, err := g.keysRaw(args...)
		if exitStatus(t, err) != 5 || !strings.Contains(errOut, plain) || strings.Contains(errOut, "read-only transaction") {
			t.Errorf("caddy keys %v on a server set read-only: %v %q; want exit status 5 saying %q", args, err, errOut, plain)
		}
	}
	if logs := g.logs(); !strings.Contains(logs, "keygate console: POST") || !strings.Contains(logs, plain) || strings.Contains(logs, "read-only transaction") {
		t.Errorf("the gateway's log does not say plainly that the server takes no writes:\n%s", logs)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
		t.Errorf("a send with the key none of the refused revokes revoked: %d %s", r.Status, r.Body)
	}
}

func storeErrors(g *gateway) string {
	var lines []string
	for _, l := range strings.Split(g.metrics(), "\n") {
		if strings.HasPrefix(l, "keygate_store_errors_total") || strings.HasPrefix(l, "keygate_usage_flush_errors_total") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// untilSendCached is untilCached for a route that takes SendGrid's sends.
func untilSendCached(t *testing.T, g *gateway, key string) (allowed int) {
	t.Helper()
	time.Sleep(1200 * time.Millisecond)
	fromCache := func() bool {
		q := g.metric("keygate_store_queries_total")
		allowed += sends(t, g, key, 2)
		return g.metric("keygate_store_queries_total") == q
	}
	if eventually(t, 15*time.Second, fromCache) < 0 {
		t.Fatalf("the gateway never answered the key from its cache:\n%s", g.logs())
	}
	return allowed
}

// sends sends n mails with key, each of which must be accepted, and returns n.
func sends(t *testing.T, g *gateway, key string, n int) int {
	t.Helper()
	for i := range n {
		if r := revokeSend(g, key); r.Status != 202 {
			t.Fatalf("send %d of %d: %d %s\n%s", i+1, n, r.Status, r.Body, g.logs())
		}
	}
	return n
}

// storeLines is the messages of a node's keygate warnings and errors, and
// of the lines that say such a fault ended.
func storeLines(logs string) []string {
	var said []string
	for _, l := range strings.Split(logs, "\n") {
		_, msg, ok := strings.Cut(l, `"msg":"keygate: `)
		if !ok || !(strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`) || strings.Contains(msg, "again")) {
			continue
		}
		msg, _, _ = strings.Cut(msg, `"`)
		said = append(said, msg)
	}
	return said
}
