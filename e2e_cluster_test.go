package keygate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

var clusterCaddyfile = site(`
	` + demoConsole + `
	handle {
		keygate {
			store {STORE}
			ratelimit redis {env.REDIS_URL}
			cache_ttl 10m
			mail_api sendgrid
			scope mail.send POST /v3/mail/send
			whoami /keygate/whoami
			# The revocation test presents 20 revoked keys from this address.
			failed_auth_limit 1000/m
		}
		reverse_proxy {UPSTREAM}
	}
`)

// TestClusterTwoNodes runs two real caddy processes sharing a throwaway
// PostgreSQL and Redis, as two gateway nodes behind a load balancer.
func TestClusterTwoNodes(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	rd := testservers.StartRedis(t)
	up := newUpstream(t)
	cfg := gatewayConfig{caddyfile: clusterCaddyfile, upstream: up.URL, store: pg.URI,
		env: []string{"REDIS_URL=redis://" + rd.Addr + "/0"}}
	a, b := startGateway(t, cfg), startGateway(t, cfg)
	nodes := []*gateway{a, b}
	body := sgBody("app@shop.example", "a@x.org")
	send := func(g *gateway, key string) *response { return g.call("POST", "/v3/mail/send", key, body) }

	t.Run("a key issued with the CLI works on both nodes", func(t *testing.T) {
		k := a.issue("--name", "shared", "--scope", "mail.send")
		for i, g := range nodes {
			if r := send(g, k.Key); r.Status != 202 {
				t.Errorf("node %d: %d %s", i, r.Status, r.Body)
			}
		}
	})

	t.Run("the console on either node serves one person: a form and a new key cross nodes", func(t *testing.T) {
		u := consoleUser{t: t, prefix: "/console"}
		token := u.formToken(a)
		if u.formToken(b) != token {
			t.Fatal("the nodes give one person different form tokens")
		}
		// Created on a, shown by b: the load balancer may send the redirect anywhere.
		loc, cookies := u.create(a, token, "from-the-console")
		if resp, page := u.do(b, http.MethodGet, loc, nil); resp.StatusCode != http.StatusGone || keyPattern.MatchString(page) {
			t.Errorf("the reveal URL without its cookie: %d", resp.StatusCode) // and it is not spent
		}
		_, page := u.do(b, http.MethodGet, loc, nil, cookies...)
		key := keyPattern.FindString(page)
		if key == "" {
			t.Fatal("node b's reveal page of a key created on node a shows no key")
		}
		if r := send(a, key); r.Status != 202 {
			t.Errorf("the console's new key on node a: %d %s", r.Status, r.Body)
		}
		if resp, page := u.do(a, http.MethodGet, loc, nil, cookies...); resp.StatusCode != http.StatusGone || strings.Contains(page, key) {
			t.Errorf("the reveal page again, on node a: %d", resp.StatusCode)
		}
	})

	t.Run("a revoke on one node or from the CLI is enforced on the other within 1s", func(t *testing.T) {
		var took []time.Duration
		for i := 0; i < 20; i++ {
			k := a.issue("--name", fmt.Sprintf("revoke-%d", i), "--scope", "mail.send")
			if r := send(b, k.Key); r.Status != 202 {
				t.Fatalf("before revoke: %d", r.Status)
			}
			start := time.Now()
			if i%2 == 0 {
				if r := a.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "test"}); r.Status != 200 {
					t.Fatalf("revoke via node a: %d %s", r.Status, r.Body)
				}
			} else {
				a.keys("revoke", k.ID, "--yes")
				start = time.Now() // the CLI's own start-up is not propagation
			}
			if eventually(t, 3*time.Second, func() bool { return send(b, k.Key).code() == "revoked_key" }) < 0 {
				t.Fatal("node b still accepts the key after 3s")
			}
			took = append(took, time.Since(start))
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		p50, p99 := took[len(took)/2], took[len(took)*99/100]
		t.Logf("revocation propagation to the other node (n=%d): p50 %v, p99 %v, max %v", len(took), p50, p99, took[len(took)-1])
		if took[len(took)-1] > time.Second {
			t.Errorf("slowest propagation %v > 1s", took[len(took)-1])
		}
	})

	t.Run("a 10/m key sending 30 requests alternating nodes gets 10 allowed", func(t *testing.T) {
		k := a.issue("--name", "global-limit", "--scope", "mail.send", "--rate", "10/m")
		allowed := 0
		start := time.Now()
		for i := 0; i < 30; i++ {
			r := send(nodes[i%2], k.Key)
			switch r.Status {
			case 202:
				allowed++
			case 429:
			default:
				t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
			}
		}
		// Never more than one exact bucket admits (docs/cluster.md): its
		// burst of 10 and a token for each 6 s the requests took.
		most := 10 + int(time.Since(start)/(6*time.Second))
		t.Logf("global limit 10/m over two nodes: %d of 30 allowed", allowed)
		if allowed < 9 || allowed > most {
			t.Errorf("allowed %d of 30, want 9 to %d", allowed, most)
		}
	})

	t.Run("whoami on one node reports what the key spent on the other", func(t *testing.T) {
		k := a.issue("--name", "whoami-limit", "--scope", "mail.send", "--rate", "10/m")
		for i := 0; i < 4; i++ {
			if r := send(a, k.Key); r.Status != 202 {
				t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
			}
		}
		r := b.call("GET", "/keygate/whoami", k.Key, nil)
		var who struct {
			RateLimit struct{ Remaining int } `json:"rate_limit"`
		}
		if err := json.Unmarshal(r.Body, &who); r.Status != 200 || err != nil {
			t.Fatalf("whoami: %d %s", r.Status, r.Body)
		}
		// Node a may still hold tokens it leased: at most 6 are left to b.
		if who.RateLimit.Remaining > 6 {
			t.Errorf("whoami on node b: %d remaining of a 10/m key that spent 4 on node a", who.RateLimit.Remaining)
		}
	})

	t.Run("a recipient quota across both nodes is spent in blocks and never exceeded", func(t *testing.T) {
		k := a.issue("--name", "global-quota", "--scope", "mail.send", "--quota", "3200/d")
		var to []string
		for i := range 50 {
			to = append(to, fmt.Sprintf("r%d@x.org", i))
		}
		fifty := sgBody("app@shop.example", to...)
		sent := 0
		for i := 0; i < 100; i++ {
			r := nodes[i%2].call("POST", "/v3/mail/send", k.Key, fifty)
			if r.Status == 202 {
				sent += 50
				continue
			}
			if r.code() != "quota_exceeded" {
				t.Fatalf("send %d: %d %s", i, r.Status, r.Body)
			}
			break
		}
		t.Logf("quota 3200/d over two nodes, sends of 50: %d recipients sent", sent)
		// One node may hold a block the other cannot spend: at most
		// quota/64 (50) beyond the send that leased it.
		if sent > 3200 || sent < 3200-100 {
			t.Errorf("%d recipients sent, want at most 3200 and at least 3100", sent)
		}
		rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
		defer rdb.Close()
		counted := func() int {
			keys, _ := rdb.Keys(context.Background(), "keygate:quota:"+k.ID+"*").Result()
			if len(keys) != 1 {
				return -1
			}
			n, _ := rdb.Get(context.Background(), keys[0]).Int()
			return n
		}
		if eventually(t, 3*time.Second, func() bool { return counted() == sent }) < 0 {
			t.Errorf("Redis counts %d recipients once the blocks are given back, want the %d sent", counted(), sent)
		}
	})

	t.Run("killing Redis mid-run causes no 5xx", func(t *testing.T) {
		// With a quota too: its blocks, then each node's own count.
		k := a.issue("--name", "redis-outage", "--scope", "mail.send", "--rate", "1000/m", "--quota", "6400/d")
		for i := 0; i < 10; i++ {
			if i == 3 {
				rd.Stop()
			}
			if r := send(nodes[i%2], k.Key); r.Status >= 500 {
				t.Fatalf("request %d after Redis stopped: %d %s", i, r.Status, r.Body)
			}
		}
		rd.Start()
		if eventually(t, 5*time.Second, func() bool { return send(a, k.Key).Status == 202 }) < 0 {
			t.Error("no recovery after Redis came back")
		}
	})

	t.Run("stopping PostgreSQL keeps cached keys working and unknown keys get 503", func(t *testing.T) {
		k := a.issue("--name", "cached", "--scope", "mail.send")
		unknown := a.issue("--name", "never-seen", "--scope", "mail.send")
		for _, g := range nodes {
			send(g, k.Key)
		}
		time.Sleep(100 * time.Millisecond)
		pg.Stop()
		defer pg.Start()
		for i, g := range nodes {
			if r := send(g, k.Key); r.Status != 202 {
				t.Errorf("node %d, cached key with PostgreSQL down: %d %s", i, r.Status, r.Body)
			}
			if r := send(g, unknown.Key); r.Status != 503 || r.code() != "store_unavailable" {
				t.Errorf("node %d, uncached key with PostgreSQL down: %d %s", i, r.Status, r.Body)
			}
		}
	})
}

var poolerCaddyfile = site(`
	keygate {
		store {STORE}
		cache_ttl 10m
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
		failed_auth_limit 1000/m
	}
	reverse_proxy {UPSTREAM}
`)

// TestClusterBehindATransactionPooler runs two nodes and the CLI on one
// PostgreSQL reached through PgBouncer in pool_mode=transaction, as
// managed services' pooled endpoints are: every transaction may run on
// another server connection, and LISTEN is not passed on. (Before, the
// second process to open the store failed on a prepared statement the first
// had left on a server connection, and a node whose change-log poll failed
// that way kept serving a revoked key for 10 s.)
func TestClusterBehindATransactionPooler(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	bouncer := testservers.StartPgBouncer(t, pg, "transaction")
	up := newUpstream(t)
	cfg := gatewayConfig{caddyfile: poolerCaddyfile, upstream: up.URL, store: bouncer.URI}
	a, b := startGateway(t, cfg), startGateway(t, cfg)
	nodes := []*gateway{a, b}
	body := sgBody("app@shop.example", "a@x.org", "b@x.org")
	send := func(g *gateway, key string) *response { return g.call("POST", "/v3/mail/send", key, body) }

	counted := a.issue("--name", "counted", "--scope", "mail.send")
	var took []time.Duration
	for i := range 10 {
		k := a.issue("--name", fmt.Sprintf("revoke-%d", i), "--scope", "mail.send")
		for j, g := range nodes {
			if r := send(g, k.Key); r.Status != 202 {
				t.Fatalf("node %d before the revoke: %d %s", j, r.Status, r.Body)
			}
		}
		a.keys("revoke", k.ID, "--yes")
		start := time.Now()
		for j, g := range nodes {
			if eventually(t, 3*time.Second, func() bool { return send(g, k.Key).code() == "revoked_key" }) < 0 {
				t.Fatalf("node %d still accepts a key revoked 3 s ago\n%s\n---\n%s", j, a.logs(), b.logs())
			}
		}
		took = append(took, time.Since(start))
		for j, g := range nodes {
			if r := send(g, counted.Key); r.Status != 202 {
				t.Fatalf("node %d: %d %s", j, r.Status, r.Body)
			}
		}
	}
	slices.Sort(took)
	t.Logf("a revocation from the CLI refused on both nodes after: median %v, max %v", took[len(took)/2], took[len(took)-1])
	if took[len(took)-1] > time.Second {
		t.Errorf("slowest revocation took %v to reach both nodes, want within 1 s", took[len(took)-1])
	}
	a.stop()
	b.stop()
	var u usageJSON
	if err := json.Unmarshal([]byte(a.keys("usage", counted.ID, "--json")), &u); err != nil {
		t.Fatal(err)
	}
	if u.Allowed != 20 || u.Recipients != 40 {
		t.Errorf("usage after both nodes stopped: %d requests, %d recipients; want 20 and 40", u.Allowed, u.Recipients)
	}
}

// A node that counted a key's recipient quota on its own during a Redis
// outage and is stopped before a send of that key asks Redis again leaves
// what it counted in Redis's counter as it stops: the node started again
// goes on from that counter. (Before, the outage's sends were forgotten
// with the process, and a key with a quota of 10 a day sent 13.) Stopped
// while Redis still refuses it, the node says at ERROR how many recipients
// Redis's counter misses.
func TestANodeStoppedAfterARedisOutageKeepsItsQuotaCount(t *testing.T) {
	needBinary(t)
	rd := testservers.StartRedis(t)
	// The node reaches Redis as a user of its own, cut off for its outage
	// (testservers.Redis.Reach).
	rd.Reach("node", true)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	keygate {
		store {STORE}
		ratelimit redis {env.REDIS_URL}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`), upstream: up.URL, env: []string{"REDIS_URL=redis://node:pw@" + rd.Addr + "/0"}})
	k := g.issue("--name", "quota", "--scope", "mail.send", "--quota", "10/d")
	body := sgBody("app@shop.example", "a@x.org")
	sent := 0
	send := func() bool {
		t.Helper()
		r := g.call("POST", "/v3/mail/send", k.Key, body)
		switch {
		case r.Status == 202:
			sent++
			return true
		case r.code() == "quota_exceeded":
			return false
		}
		t.Fatalf("a send: %d %s", r.Status, r.Body)
		return false
	}
	for range 3 {
		send()
	}
	rd.Reach("node", false)
	for range 3 {
		send() // counted by the node alone
	}
	rd.Reach("node", true)
	g.stop() // before any send of the key asks Redis again
	if strings.Contains(g.logs(), "redis did not take") {
		t.Errorf("the stop says Redis did not take the outage's count, though it answered:\n%s", g.logs())
	}
	g.start()
	for send() && sent < 20 {
	}
	if sent != 10 {
		t.Errorf("%d sends of one recipient on a quota of 10 a day, across a Redis outage and a stop, want 10", sent)
	}

	// Stopped while Redis still refuses the node: said, with the count.
	k = g.issue("--name", "quota-2", "--scope", "mail.send", "--quota", "10/d")
	send()
	rd.Reach("node", false)
	send()
	send()
	g.stop()
	if logs := g.logs(); !strings.Contains(logs, "redis did not take the 2 recipients") {
		t.Errorf("no ERROR line says Redis's counter misses the 2 recipients sent during the outage:\n%s", logs)
	}
}

// A reload during a Redis outage that changes how keygate reaches Redis
// (here its timeout) makes new limits for that Redis: the old ones' quota
// counts of the outage, which Redis cannot take as they close, go to the
// new ones, which add them to Redis's counter when it answers. (Before,
// the old limits said at ERROR that Redis did not take them, and they were
// lost: a Redis that kept its data went on from a counter missing them.)
func TestAReloadDuringARedisOutageKeepsTheOutagesQuotaCount(t *testing.T) {
	needBinary(t)
	for _, mode := range []string{"exact", "leased"} {
		t.Run(mode, func(t *testing.T) {
			rd := testservers.StartRedisPersistent(t)
			admin := redis.NewClient(&redis.Options{Addr: rd.Addr})
			defer admin.Close()
			option := ""
			if mode == "exact" {
				option = "exact\n\t\t\t"
			}
			caddyfile := func(timeout string) string {
				return site(`
	keygate {
		store {STORE}
		ratelimit redis {env.REDIS_URL} {
			` + option + `timeout ` + timeout + `
		}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)
			}
			up := newUpstream(t)
			// Timeouts long enough for a loaded machine: a stopped Redis refuses
			// at once, and an add that timed out would be missed for good.
			g := startGateway(t, gatewayConfig{caddyfile: caddyfile("2s"), upstream: up.URL,
				env: []string{"REDIS_URL=redis://" + rd.Addr + "/0"}})
			k := g.issue("--name", "quota", "--scope", "mail.send", "--quota", "100/d")
			body := sgBody("app@shop.example", "a@x.org")
			sent := int64(0)
			send := func() {
				t.Helper()
				if r := g.call("POST", "/v3/mail/send", k.Key, body); r.Status != 202 {
					t.Fatalf("a send: %d %s", r.Status, r.Body)
				}
				sent++
			}
			for range 3 {
				send()
			}
			rd.Stop()
			for range 3 {
				send() // counted by the node alone
			}
			g.writeConfig(caddyfile("3s"), up.URL, g.port())
			g.reload()
			send() // counted by the new config's limits alone
			if logs := g.logs(); strings.Contains(logs, "stopping, redis did not take") || !strings.Contains(logs, "take them over") {
				t.Errorf("the reload did not hand the outage's count to the new config's limits:\n%s", logs)
			}
			rd.Start() // with its data
			now := time.Now().UTC()
			rkey := fmt.Sprintf("keygate:quota:%s/d:%d", k.ID, time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).Unix())
			var n int64
			// A send past the outage's retry interval finds Redis, and what
			// the outage counted goes to it. On a loaded machine the first
			// try may miss the timeout and stay in the outage: the next
			// send, a retry interval later, tries again.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
				time.Sleep(1100 * time.Millisecond)
				send()
				if n = waitCount(admin, rkey, sent, 500*time.Millisecond); n >= sent {
					break
				}
			}
			// Leased, the new limits hold a block of the key's counter
			// (quota/64), and the old ones', which they could not give
			// back, may stay counted.
			if n < sent || n > sent+2*(100/64) {
				t.Errorf("Redis counts %d of the %d recipients sent across the outage and the reload, want every one once", n, sent)
			}
		})
	}
}

// waitCount reads Redis's counter at rkey until it holds at least want or
// for up to d, and returns the last count read.
func waitCount(admin *redis.Client, rkey string, want int64, d time.Duration) int64 {
	var n int64
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n, _ = admin.Get(context.Background(), rkey).Int64(); n >= want {
			break
		}
	}
	return n
}

// TestWithoutRedisEachNodeCountsTheQuotaOnItsOwn pins what docs/cluster.md
// says of nodes sharing a PostgreSQL store without `ratelimit redis`: each
// counts a key's quota on its own, from the store's count when the key's
// first send of the period reached it, so two nodes admit up to twice the
// quota; the usage counts every send.
func TestWithoutRedisEachNodeCountsTheQuotaOnItsOwn(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	up := newUpstream(t)
	cfg := gatewayConfig{caddyfile: quotaCaddyfile, upstream: up.URL, store: pg.URI} // quota 4/d
	a, b := startGateway(t, cfg), startGateway(t, cfg)
	k := a.issue("--name", "per-node", "--scope", "mail.send")
	one := sgBody("a@example.com", "r@example.org")
	sent := 0
	for i := range 10 {
		g := []*gateway{a, b}[i%2]
		switch r := g.call("POST", "/v3/mail/send", k.Key, one); {
		case r.Status == http.StatusAccepted:
			sent++
		case r.code() != "quota_exceeded":
			t.Fatalf("send %d: %d %s", i, r.Status, r.Body)
		}
	}
	// 8: each node loaded 0 at its first send, before the other's was
	// written (a flush between the two makes it 7); never more than 4 each.
	if sent < 7 || sent > 8 {
		t.Errorf("two nodes without Redis sent %d one-recipient sends on a 4/d key, want 8 (4 each)", sent)
	}
	var u usageJSON
	if eventually(t, 5*time.Second, func() bool { u = a.usage(k.ID); return u.Recipients == int64(sent) }) < 0 {
		t.Errorf("usage counts %d recipients of the %d sent", u.Recipients, sent)
	}
}

// TestARotatedKeySharesItsQuotaAcrossNodes: with `ratelimit redis`, a
// rotated key and the key it replaced spend one quota counter in Redis,
// whichever node each sends through (docs/cli.md).
func TestARotatedKeySharesItsQuotaAcrossNodes(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	rd := testservers.StartRedis(t)
	up := newUpstream(t)
	cfg := gatewayConfig{caddyfile: clusterCaddyfile, upstream: up.URL, store: pg.URI,
		env: []string{"REDIS_URL=redis://" + rd.Addr + "/0"}}
	a, b := startGateway(t, cfg), startGateway(t, cfg)
	old := a.issue("--name", "rotated", "--scope", "mail.send", "--quota", "4/d")
	send := func(g *gateway, key string, n int) *response {
		var to []string
		for i := range n {
			to = append(to, fmt.Sprintf("r%d@example.org", i))
		}
		return g.call("POST", "/v3/mail/send", key, sgBody("a@example.com", to...))
	}
	if r := send(a, old.Key, 3); r.Status != http.StatusAccepted {
		t.Fatalf("3 of 4 with the old key on node a: %d %s", r.Status, r.Body)
	}
	var next issuedKey
	if err := json.Unmarshal([]byte(a.keys("rotate", old.ID, "--json")), &next); err != nil || next.Key == "" {
		t.Fatalf("rotate: %v", err)
	}
	if r := send(b, next.Key, 2); r.code() != "quota_exceeded" {
		t.Errorf("2 more with the new key on node b, 1 of 4 left: %d %s, want quota_exceeded", r.Status, r.Body)
	}
	if r := send(b, next.Key, 1); r.Status != http.StatusAccepted {
		t.Errorf("4 of 4 with the new key on node b: %d %s", r.Status, r.Body)
	}
	if r := send(a, old.Key, 1); r.code() != "quota_exceeded" {
		t.Errorf("5 of 4 with the old key on node a: %d %s, want quota_exceeded", r.Status, r.Body)
	}
	if r := send(a, next.Key, 1); r.code() != "quota_exceeded" {
		t.Errorf("5 of 4 with the new key on node a: %d %s, want quota_exceeded", r.Status, r.Body)
	}
	if up.count() != 2 {
		t.Errorf("the provider had %d sends, want 2", up.count())
	}
}
