package keygate_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestASendNoProviderTookKeepsItsRecipientsThroughReverseProxy: a send
// that reverse_proxy never got to a provider (the dial failed, or every
// upstream was marked down by fail_duration or its health checks) gives its
// recipients back to the key's quota and leaves them out of its usage, as
// docs/caddyfile.md says; one that the site's handle_errors sent to a
// fallback provider, which took it, counts. Before, keygate looked for the
// dialer's *net.OpError, which reverse_proxy's DialError hides from
// errors.As, and did not know "no upstreams available": an outage used the
// quota up, two recipients per SDK retry.
func TestASendNoProviderTookKeepsItsRecipientsThroughReverseProxy(t *testing.T) {
	up := newUpstream(t)
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens: the dial fails
	route := func(prefix, proxy string) string {
		return `
	handle_path /` + prefix + `/* {
		keygate {
			store {STORE}
			mail_api sendgrid
			scope mail.send POST /v3/mail/send
			quota 100/d
		}
		reverse_proxy ` + proxy + `
	}`
	}
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(
		route("dial", dead) +
			route("marked-down", dead+" {\n\t\t\tfail_duration 1m\n\t\t\tmax_fails 1\n\t\t}") +
			route("unhealthy", dead+" {\n\t\t\thealth_uri /health\n\t\t\thealth_interval 100ms\n\t\t}") +
			route("fallback", dead) +
			route("ok", "{UPSTREAM}") + `
	handle_errors {
		@fallback path /fallback/*
		reverse_proxy @fallback {UPSTREAM}
	}
`)})
	k := g.issue("--name", "outage", "--scope", "mail.send")
	send := func(prefix string) *response {
		return g.call("POST", "/"+prefix+"/v3/mail/send", k.Key, sgBody("a@shop.example.com", "x@example.org", "y@example.org"),
			"Content-Type", "application/json")
	}
	for _, prefix := range []string{"dial", "marked-down", "unhealthy"} {
		for i := range 3 {
			if r := send(prefix); r.Status < 500 {
				t.Fatalf("%s: send %d: %d %s, want the proxy's error", prefix, i+1, r.Status, r.Body)
			}
		}
	}
	for i := range 3 {
		if r := send("fallback"); r.Status != 202 {
			t.Fatalf("fallback: send %d: %d %s, want the fallback provider's 202", i+1, r.Status, r.Body)
		}
	}
	r := send("ok")
	if r.Status != 202 {
		t.Fatalf("ok: %d %s", r.Status, r.Body)
	}
	// 3 sends through the fallback and this one, 2 recipients each.
	if got := strings.Join(r.Header.Values("RateLimit"), ", "); !strings.Contains(got, `"quota";r=92;`) {
		t.Errorf("RateLimit after 9 sends no provider took and 4 that went: %s, want 92 of 100 recipients left", got)
	}
	g.stop()
	if u := g.usage(k.ID); u.Recipients != 8 || u.Allowed != 13 {
		t.Errorf("usage: %d recipients in %d allowed requests, want 8 (the 4 sends that went) in 13", u.Recipients, u.Allowed)
	}
}
