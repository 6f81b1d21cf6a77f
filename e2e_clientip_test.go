package keygate_test

import (
	"fmt"
	"testing"
)

// Behind a proxy that appends to X-Forwarded-For (load balancers and CDNs
// do), the left-most address is whatever the client wrote. Caddy's
// client_ip is that address unless trusted_proxies_strict is set, so a
// key's allow_ip and failed_auth_limit must not take it from there.
// 127.0.0.1, where the test connects from, plays the trusted proxy.
func TestClientAddressIsNotTheOneTheClientWrote(t *testing.T) {
	for _, strict := range []bool{false, true} {
		name := "trusted_proxies"
		opt := ""
		if strict {
			name, opt = "trusted_proxies_strict", "\n\t\ttrusted_proxies_strict"
		}
		t.Run(name, func(t *testing.T) {
			up := newUpstream(t)
			g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: `{
	admin {ADMIN}
	servers {
		trusted_proxies static 127.0.0.1/32` + opt + `
	}
}
http://127.0.0.1:{PORT} {
	bind 127.0.0.1
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
		failed_auth_limit 3/h
	}
	reverse_proxy {UPSTREAM}
}
`})
			office := g.issue("--name", "office", "--scope", "mail.send", "--allow-ip", "10.0.0.1")
			send := func(key string, xff ...string) *response {
				var hdr []string
				for _, v := range xff {
					hdr = append(hdr, "X-Forwarded-For", v)
				}
				return g.call("POST", "/v3/mail/send", key, []byte(`{}`), hdr...)
			}

			// The proxy forwards a request of 10.0.0.1 that sent no
			// X-Forwarded-For of its own: allowed.
			if r := send(office.Key, "10.0.0.1"); r.Status != 202 {
				t.Fatalf("from 10.0.0.1: %d %s", r.Status, r.Body)
			}
			// A client at 198.51.100.7 writes 10.0.0.1 itself; the
			// proxy appends the address it saw, in the same header or
			// in another line of it.
			// Caddy's strict reading skips an IPv6 address with a port
			// after ", " (its parser sees " [2001:db8::7]"), and one in
			// brackets without a port, and goes on to the client's own
			// entry: keygate reads them (strictByPeer).
			chains := [][]string{{"10.0.0.1, 198.51.100.7"}, {"10.0.0.1", "198.51.100.7"}, {"10.0.0.1:443, 198.51.100.7:55000"},
				{"10.0.0.1:443, [2001:db8::7]:55000"}, {"10.0.0.1, [2001:db8::7]"}}
			for _, xff := range chains {
				n := up.count()
				if r := send(office.Key, xff...); r.Status != 403 || r.code() != "ip_not_allowed" || up.count() != n {
					t.Errorf("X-Forwarded-For %q: %d %s, upstream saw %d requests", xff, r.Status, r.Body, up.count()-n)
				}
			}

			// Made-up keys from 198.51.100.8, which names 192.0.2.1 in
			// front: they count against 198.51.100.8, whatever address
			// it writes in front next...
			for i := range 3 {
				if r := send("kg_live_made-up", "192.0.2.1, 198.51.100.8"); r.Status != 401 {
					t.Fatalf("made-up key %d: %d %s", i, r.Status, r.Body)
				}
			}
			fresh := g.issue("--name", "fresh", "--scope", "mail.send")
			if r := send(fresh.Key, "192.0.2.9, 198.51.100.8"); r.Status != 429 || r.code() != "auth_rate_limited" {
				t.Errorf("198.51.100.8 past its limit, behind a fresh X-Forwarded-For: %d %s", r.Status, r.Body)
			}
			// ...and not against the address they named: 192.0.2.1's
			// own client is not locked out by them.
			other := g.issue("--name", "other", "--scope", "mail.send") // not cached by the request above
			if r := send(other.Key, "192.0.2.1"); r.Status != 202 {
				t.Errorf("192.0.2.1, named by another client's failures: %d %s", r.Status, r.Body)
			}
		})
	}
}

// Behind a trusted proxy, the clients failed_auth_limit tracks are the
// addresses the proxy saw, an IPv6 one by its /64, however many addresses
// a client writes in front or picks inside its /64; the real binary shows
// them as keygate_failed_auth_clients (at most 65,536 a store: the bound
// itself is TestFailedAuthClientsAreBounded's, in-process, as reaching it
// takes some 65,000 requests).
func TestFailedAuthClientsBehindAProxyAreCountedByTheAddressItSaw(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: `{
	admin {ADMIN}
	servers {
		trusted_proxies static 127.0.0.1/32
	}
}
http://127.0.0.1:{PORT} {
	bind 127.0.0.1
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
		failed_auth_limit 3/h
	}
	reverse_proxy {UPSTREAM}
}
`})
	if n := g.metric("keygate_failed_auth_clients"); n != 0 {
		t.Fatalf("keygate_failed_auth_clients before any failure: %v", n)
	}
	const v6, v4 = 40, 20
	for i := range v6 {
		for j := range 3 { // three addresses of one /64, each behind another made-up one
			xff := fmt.Sprintf("203.0.113.%d, 2001:db8:%x::%x", i*3+j, i, j+1)
			if r := g.call("POST", "/v3/mail/send", "kg_live_made-up", []byte(`{}`), "X-Forwarded-For", xff); r.Status != 401 {
				t.Fatalf("X-Forwarded-For %s: %d %s", xff, r.Status, r.Body)
			}
		}
	}
	for i := range v4 {
		xff := fmt.Sprintf("[2001:db8:ffff:%x::1], 198.51.100.%d", i, i+1)
		if r := g.call("POST", "/v3/mail/send", "kg_live_made-up", []byte(`{}`), "X-Forwarded-For", xff); r.Status != 401 {
			t.Fatalf("X-Forwarded-For %s: %d %s", xff, r.Status, r.Body)
		}
	}
	if r := g.call("POST", "/v3/mail/send", "kg_live_made-up", []byte(`{}`), "X-Forwarded-For", "2001:db8:7::99"); r.Status != 429 {
		t.Errorf("a fourth address of 2001:db8:7::/64, past its 3 failures: %d %s", r.Status, r.Body)
	}
	if n := g.metric("keygate_failed_auth_clients"); n != v6+v4 {
		t.Errorf("keygate_failed_auth_clients %v, want %d (%d /64s, %d IPv4 addresses)", n, v6+v4, v6, v4)
	}
}
