package keygate_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Faults an operator meets in production, with the real binary: a busy key
// behind an address another client keeps failing from, a disk that fills up
// before a graceful stop, the SQLite file deleted under a running gateway.

// TestBusyKeyIsNeverLockedOutByItsNeighbour: one address (a shared NAT) has
// a valid key in constant use and another client sending bad keys, enough to
// keep the address past failed_auth_limit. The valid key's cache entry
// expires at every cache_ttl; it must be refilled, not refused, every time.
// (Before, each expiry refused it with auth_rate_limited for 2-4 s, until
// the address happened to have a token left.)
func TestBusyKeyIsNeverLockedOutByItsNeighbour(t *testing.T) {
	const (
		ttl        = 2 * time.Second
		boundaries = 6
	)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		failed_auth_limit 20/m
		cache_ttl 2s
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)})
	k := g.issue("--name", "busy", "--scope", "mail.send")
	time.Sleep(500 * time.Millisecond) // the change-log poll has seen the issue
	refills := g.metric("keygate_store_queries_total")

	var stop atomic.Bool
	var valid, refused, bad, badLimited atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() { // the neighbour: a broken integration retrying
		for !stop.Load() {
			r := g.call("POST", "/v3/mail/send", "kg_live_broken-integration", nil)
			bad.Add(1)
			if r.code() == "auth_rate_limited" {
				badLimited.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	wg.Go(func() { // the busy key
		for !stop.Load() {
			r := g.call("POST", "/v3/mail/send", k.Key, nil)
			valid.Add(1)
			if r.Status != 202 {
				refused.Add(1)
				t.Errorf("valid request %d refused: %d %s", valid.Load(), r.Status, r.Body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	time.Sleep(boundaries*ttl + ttl/2)
	stop.Store(true)
	wg.Wait()

	t.Logf("%d of %d valid requests refused over %d cache_ttl boundaries; %d of %d bad ones auth_rate_limited",
		refused.Load(), valid.Load(), boundaries, badLimited.Load(), bad.Load())
	if badLimited.Load() < bad.Load()*3/4 {
		t.Errorf("only %d of %d bad requests were auth_rate_limited: the address was not kept past its limit", badLimited.Load(), bad.Load())
	}
	if n := g.metric("keygate_store_queries_total") - refills; n < boundaries-1 {
		t.Errorf("%v store queries: the busy key's entry was not refilled at each boundary", n)
	}
}
