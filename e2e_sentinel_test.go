package keygate_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

var sentinelCaddyfile = site(`
	handle {
		keygate {
			store {STORE}
			ratelimit redis {env.REDIS_URL} {
				sentinel keygate
				MODE
			}
			mail_api sendgrid
			scope mail.send POST /v3/mail/send
		}
		reverse_proxy {UPSTREAM}
	}
`)

// TestASentinelFailover runs two real nodes, one in each mode (leased and
// exact), on a primary watched by Sentinel, through the failovers an
// operator meets: the primary killed with its last writes not replicated
// (the replica promoted a few seconds later), then the old primary back as
// a replica and a manual failover to it (SENTINEL FAILOVER: a primary
// demoted while connections to it are open). No request fails, each node
// goes back to Redis's limits, and it logs a few lines with no password.
func TestASentinelFailover(t *testing.T) {
	needBinary(t)
	rs := testservers.StartRedisSentinel(t)
	up := newUpstream(t)
	url := "redis://" + rs.Addr + "/0"
	modes := []string{"leased", "exact"}
	nodes := map[string]*gateway{}
	keys := map[string]string{}
	for _, m := range modes {
		cf := strings.Replace(sentinelCaddyfile, "MODE", map[string]string{"leased": "", "exact": "exact"}[m], 1)
		nodes[m] = startGateway(t, gatewayConfig{caddyfile: cf, upstream: up.URL, env: []string{"REDIS_URL=" + url}})
		keys[m] = nodes[m].issue("--name", m, "--scope", "mail.send", "--quota", "100/d").Key
	}
	ctx := context.Background()
	sent := map[string]int{}
	send := func(m string) string {
		r := nodes[m].call("POST", "/v3/mail/send", keys[m], sgBody("app@shop.example", "a@x.org"))
		if r.Status >= 500 {
			t.Errorf("%s node: %d %s", m, r.Status, r.Body)
		}
		if r.Status == 202 {
			sent[m]++
		}
		return r.code()
	}
	for range 10 {
		for _, m := range modes {
			send(m)
		}
	}
	// What the primary takes from now on never reaches the replica.
	rs.CutReplication()
	for range 5 {
		for _, m := range modes {
			send(m)
		}
	}
	time.Sleep(1500 * time.Millisecond) // the usage counts written to each node's store
	back := func(m, since string) bool {
		l := nodes[m].logs()
		i := strings.LastIndex(l, since)
		return i >= 0 && strings.Contains(l[i:], "reachable again")
	}

	counters := func(addr string) map[string]string {
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		out := map[string]string{}
		ks, _ := c.Keys(ctx, "keygate:*").Result()
		for _, k := range ks {
			out[k], _ = c.Get(ctx, k).Result()
		}
		return out
	}
	// counted is the sum of the quota counters at addr.
	counted := func(addr string) int {
		n := 0
		for k, v := range counters(addr) {
			if strings.HasPrefix(k, "keygate:quota:") {
				c, _ := strconv.Atoi(v)
				n += c
			}
		}
		return n
	}
	if p, r := counted(rs.Primary.Addr), counted(rs.Replica.Addr); p != 30 || r != 20 {
		t.Fatalf("the primary counted %d, the replica %d; want 30 and 20 (the last 10 not replicated)", p, r)
	}
	t.Run("the primary killed", func(t *testing.T) {
		killed := time.Now()
		rs.Primary.Stop()
		took := map[string]time.Duration{}
		for time.Since(killed) < 30*time.Second && len(took) < len(modes) {
			for _, m := range modes {
				send(m)
				if _, ok := took[m]; !ok && back(m, "redis unreachable") {
					took[m] = time.Since(killed)
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		for _, m := range modes {
			if _, ok := took[m]; !ok {
				t.Errorf("%s node: still on its own limits 30 s after the primary was killed:\n%s", m, nodes[m].logs())
			}
		}
		t.Logf("back on the promoted replica after %v (sent %v)", took, sent)
		// Each node's first send after its outage checked the counter
		// against its store, which held the 5 sends the old primary had
		// counted alone (before, the counter went on without them).
		if c := counted(rs.Replica.Addr); c < sent["exact"]+sent["leased"] {
			t.Errorf("the promoted replica counted %d, %v sent", c, sent)
		}
	})

	t.Run("quota counts across the failover", func(t *testing.T) {
		for _, m := range modes {
			for i := 0; i < 200 && send(m) != "quota_exceeded"; i++ {
			}
			// Leased, a block held may be refused a little early.
			if sent[m] > 100 || sent[m] < 95 {
				t.Errorf("%s node: %d sent on a quota of 100/d across a failover that lost 5 counted sends, want 95-100", m, sent[m])
			}
		}
		t.Logf("sent before quota_exceeded: %v", sent)
	})

	t.Run("the old primary back as a replica, and a failover to it", func(t *testing.T) {
		rs.Primary.Start()
		old := redis.NewClient(&redis.Options{Addr: rs.Primary.Addr})
		defer old.Close()
		if eventually(t, 30*time.Second, func() bool {
			info, _ := old.Info(ctx, "replication").Result()
			return strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up")
		}) < 0 {
			t.Fatal("the old primary did not become the new one's replica within 30 s")
		}
		sentinel := redis.NewSentinelClient(&redis.Options{Addr: rs.Addr})
		defer sentinel.Close()
		mark := map[string]int{}
		for _, m := range modes {
			mark[m] = len(nodes[m].logs())
		}
		// Keys with room left, sending before it, so that each node's
		// connections are open.
		for _, m := range modes {
			keys[m] = nodes[m].issue("--name", m+"-2", "--scope", "mail.send", "--quota", "1000/d").Key
			send(m)
		}
		started := time.Now()
		if err := sentinel.Failover(ctx, "keygate").Err(); err != nil {
			t.Fatalf("SENTINEL FAILOVER: %v", err)
		}
		var moved time.Duration
		for time.Since(started) < 20*time.Second {
			for _, m := range modes {
				send(m)
			}
			if moved == 0 {
				if a, err := sentinel.GetMasterAddrByName(ctx, "keygate").Result(); err == nil && len(a) == 2 && a[0]+":"+a[1] == rs.Primary.Addr {
					moved = time.Since(started)
				}
			}
			if moved > 0 && time.Since(started) > moved+3*time.Second {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if moved == 0 {
			t.Fatal("Sentinel did not fail over to the old primary within 20 s")
		}
		before := counted(rs.Primary.Addr)
		for _, m := range modes {
			send(m)
		}
		if c := counted(rs.Primary.Addr); c <= before {
			t.Errorf("sends after the manual failover not counted on the new primary (%d, then %d)", before, c)
		}
		for _, m := range modes {
			after := nodes[m].logs()[mark[m]:]
			if strings.Contains(after, "fall back") && !strings.Contains(after[strings.LastIndex(after, "fall back"):], "reachable again") {
				t.Errorf("%s node: still on its own limits 3 s after the failover:\n%s", m, after)
			}
			t.Logf("%s node after the manual failover (Sentinel moved in %v):\n%s", m, moved, redisLines(after))
		}
	})

	for _, m := range modes {
		t.Logf("%s node's log:\n%s", m, redisLines(nodes[m].logs()))
	}
}

// redisLines are the lines of a log about Redis.
func redisLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "redis") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
