package keygate_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// quotaRoute is a SendGrid send route under /prefix/ for keys with a
// recipient quota of 100 a day, proxied to proxy (reverse_proxy's
// upstreams, and its block if any).
func quotaRoute(prefix, proxy string) string {
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

// sendTwo sends a message to two recipients with key through the route
// under /prefix/.
func sendTwo(g *gateway, key, prefix string) *response {
	return g.call("POST", "/"+prefix+"/v3/mail/send", key, sgBody("a@shop.example.com", "x@example.org", "y@example.org"),
		"Content-Type", "application/json")
}

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
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(
		quotaRoute("dial", dead) +
			quotaRoute("marked-down", dead+" {\n\t\t\tfail_duration 1m\n\t\t\tmax_fails 1\n\t\t}") +
			quotaRoute("unhealthy", dead+" {\n\t\t\thealth_uri /health\n\t\t\thealth_interval 100ms\n\t\t}") +
			quotaRoute("fallback", dead) +
			quotaRoute("ok", "{UPSTREAM}") + `
	handle_errors {
		@fallback path /fallback/*
		reverse_proxy @fallback {UPSTREAM}
	}
`)})
	k := g.issue("--name", "outage", "--scope", "mail.send")
	send := func(prefix string) *response { return sendTwo(g, k.Key, prefix) }
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

// TestASendRetriedOnAnotherUpstreamIsCountedOnce: reverse_proxy's own
// retries happen inside the one request keygate checked, so however many
// upstreams a send is tried on, its rate, quota and usage count it once.
// A first upstream that reads the whole send and drops the connection may
// have sent it: Caddy retries a POST only when lb_retry_match says so, and
// only with request_buffers can it send the body again (without, the retry
// fails on the body the first attempt read, as with no keygate, and the
// send is counted, since the first upstream had it whole).
func TestASendRetriedOnAnotherUpstreamIsCountedOnce(t *testing.T) {
	up := newUpstream(t)
	for _, v := range []struct {
		name, opts       string
		first, second    int // the two sends' statuses
		recipients, sent int64
	}{
		// The first send is retried on the second upstream, which takes
		// it; the first upstream is then down, and the second send goes
		// to the second upstream at once.
		{"request_buffers", "request_buffers 1MB", 202, 202, 4, 2},
		// The retry fails on the body, and marks the second upstream down
		// too: the second send finds no upstream, and is not counted.
		{"no request_buffers", "", 502, 503, 2, 2},
	} {
		t.Run(v.name, func(t *testing.T) {
			drop, dropped := newDroppingUpstream(t)
			g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
		rate 100/m
		quota 100/d
	}
	reverse_proxy ` + drop + ` {UPSTREAM} {
		lb_policy first
		lb_retries 2
		lb_retry_match {
			method POST
		}
		fail_duration 1m
		` + v.opts + `
	}
`)})
			k := g.issue("--name", "retried", "--scope", "mail.send")
			body := sgBody("a@shop.example.com", "x@example.org", "y@example.org")
			send := func(want int) *response {
				t.Helper()
				r := g.call("POST", "/v3/mail/send", k.Key, body, "Content-Type", "application/json")
				if r.Status != want {
					t.Fatalf("%d %s, want %d\n%s", r.Status, r.Body, want, g.logs())
				}
				return r
			}
			send(v.first)
			if n := dropped(); n != 1 {
				t.Fatalf("the first upstream had %d sends, want the first one", n)
			}
			// The second send's own reservation, after the first send
			// counted once for its two attempts.
			r := send(v.second)
			if got := strings.Join(r.Header.Values("RateLimit"), ", "); !strings.Contains(got, `"default";r=98;`) || !strings.Contains(got, `"quota";r=96;`) {
				t.Errorf("RateLimit of the second send: %s, want 98 requests and 96 recipients left", got)
			}
			g.stop()
			if u := g.usage(k.ID); u.Recipients != v.recipients || u.Allowed != v.sent {
				t.Errorf("usage: %d recipients in %d allowed requests, want %d in %d", u.Recipients, u.Allowed, v.recipients, v.sent)
			}
		})
	}
}

// newDroppingUpstream is an upstream that reads a request's whole body and
// then closes the connection without an answer; it returns its address and
// how many requests it had.
func newDroppingUpstream(t *testing.T) (string, func() int) {
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		io.Copy(io.Discard, r.Body)
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://"), func() int { return int(n.Load()) }
}

// TestASendAnUpstreamHadWholeCountsWhateverFollows: a send an upstream read
// whole before its connection dropped may have gone out, and counts, also
// when what ends the request is a dial error that sent nothing: a retry on
// another upstream that refused the connection (lb_retry_match with
// request_buffers, as docs/deploy.md describes), or handle_errors' fallback
// provider that had it whole after the first upstream's dial failed. Before,
// keygate judged by the last error alone, and gave those recipients back.
func TestASendAnUpstreamHadWholeCountsWhateverFollows(t *testing.T) {
	up := newUpstream(t)
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens: the dial fails
	drop, dropped := newDroppingUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	handle_path /retried/* {
		keygate {
			store {STORE}
			mail_api sendgrid
			scope mail.send POST /v3/mail/send
			quota 100/d
		}
		reverse_proxy ` + drop + ` ` + dead + ` {
			lb_policy first
			lb_retries 1
			lb_retry_match {
				method POST
			}
			fail_duration 1m
			request_buffers 1MB
		}
	}
	handle_path /fallback/* {
		keygate {
			store {STORE}
			mail_api sendgrid
			scope mail.send POST /v3/mail/send
			quota 100/d
		}
		reverse_proxy ` + dead + `
	}
	handle_errors {
		@fallback path /fallback/*
		reverse_proxy @fallback ` + drop + `
	}
`)})
	k := g.issue("--name", "dropped", "--scope", "mail.send")
	for _, prefix := range []string{"retried", "fallback"} {
		n := dropped()
		r := g.call("POST", "/"+prefix+"/v3/mail/send", k.Key, sgBody("a@shop.example.com", "x@example.org", "y@example.org"),
			"Content-Type", "application/json")
		if r.Status < 500 || dropped() != n+1 {
			t.Fatalf("%s: %d %s, the dropping upstream had %d sends; want a 5xx after it had the send", prefix, r.Status, r.Body, dropped()-n)
		}
	}
	g.stop()
	if u := g.usage(k.ID); u.Recipients != 4 || u.Allowed != 2 {
		t.Errorf("usage: %d recipients in %d allowed requests, want 4 in 2: each send went to an upstream that read it whole", u.Recipients, u.Allowed)
	}
}

// TestASendNoProviderTookKeepsItsRecipientsWithRequestBuffers: with
// request_buffers, reverse_proxy reads the whole send before it picks an
// upstream, so a send whose dial then failed, or that found every upstream
// marked down, had its body read all the same; it is known by the error
// alone (a DialError, "no upstreams available"), and gives its recipients
// back. TestASendNoProviderTookKeepsItsRecipientsThroughReverseProxy, with
// no buffering, passes on the unread body alone.
func TestASendNoProviderTookKeepsItsRecipientsWithRequestBuffers(t *testing.T) {
	up := newUpstream(t)
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens: the dial fails
	buffered := " {\n\t\t\trequest_buffers 1MB\n\t\t\tfail_duration 1m\n\t\t\tmax_fails 1\n\t\t}"
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(quotaRoute("dead", dead+buffered) + quotaRoute("ok", "{UPSTREAM}"+buffered) + "\n")})
	k := g.issue("--name", "buffered", "--scope", "mail.send")
	send := func(prefix string) *response { return sendTwo(g, k.Key, prefix) }
	// The first send's dial fails and marks the upstream down; the next
	// ones find no upstream.
	for i := range 3 {
		if r := send("dead"); r.Status < 500 {
			t.Fatalf("send %d: %d %s, want the proxy's error", i+1, r.Status, r.Body)
		}
	}
	r := send("ok")
	if r.Status != 202 {
		t.Fatalf("ok: %d %s", r.Status, r.Body)
	}
	if got := strings.Join(r.Header.Values("RateLimit"), ", "); !strings.Contains(got, `"quota";r=98;`) {
		t.Errorf("RateLimit after 3 sends no provider took and 1 that went: %s, want 98 of 100 recipients left", got)
	}
	g.stop()
	if u := g.usage(k.ID); u.Recipients != 2 || u.Allowed != 4 {
		t.Errorf("usage: %d recipients in %d allowed requests, want 2 (the send that went) in 4", u.Recipients, u.Allowed)
	}
}

// TestASendBehindForwardAuthNoProviderTookKeepsItsRecipients: forward_auth
// runs after keygate and asks its auth service on the send's own context;
// that request, written whole, is not the send's, and a send whose
// provider then refused the connection gives its recipients back, also
// with request_buffers, which reads the body whole before the dial.
func TestASendBehindForwardAuthNoProviderTookKeepsItsRecipients(t *testing.T) {
	up := newUpstream(t)
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens: the dial fails
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
		quota 100/d
	}
	forward_auth {UPSTREAM} {
		uri /auth
	}
	reverse_proxy ` + dead + ` {
		request_buffers 1MB
	}
`)})
	k := g.issue("--name", "forward-auth", "--scope", "mail.send")
	for i := range 2 {
		r := g.call("POST", "/v3/mail/send", k.Key, sgBody("a@shop.example.com", "x@example.org", "y@example.org"),
			"Content-Type", "application/json")
		if r.Status < 500 {
			t.Fatalf("send %d: %d %s, want the proxy's error", i+1, r.Status, r.Body)
		}
		if got := strings.Join(r.Header.Values("RateLimit"), ", "); !strings.Contains(got, `"quota";r=98;`) {
			t.Errorf("RateLimit of send %d: %s, want 98 of 100 recipients left (its own reserved, none kept)", i+1, got)
		}
	}
	g.stop()
	if u := g.usage(k.ID); u.Recipients != 0 {
		t.Errorf("usage: %d recipients, want none: no provider had a send", u.Recipients)
	}
}
