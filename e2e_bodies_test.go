package keygate_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestSendBodiesReachTheUpstreamThroughRetries: keygate hands reverse_proxy
// the inspected send body from a pooled buffer. Whatever reverse_proxy does
// with a body (retry after a failed dial, buffer it with request_buffers),
// every send must reach the upstream exactly once and byte for byte, even
// with many sends at once whose buffers are returned and reused. With
// lb_policy first, at least the first send dials the dead upstream and is
// retried on the live one (fail_duration then keeps the dead one out).
func TestSendBodiesReachTheUpstreamThroughRetries(t *testing.T) {
	for _, variant := range []struct{ name, proxyOpts string }{
		{"a dead first upstream, then a retry", "lb_policy first\n\t\tlb_retries 3\n\t\tfail_duration 1m"},
		{"request_buffers larger than the body, and a retry", "lb_policy first\n\t\tlb_retries 3\n\t\tfail_duration 1m\n\t\trequest_buffers 8KB"},
		{"request_buffers smaller than the body, and a retry", "lb_policy first\n\t\tlb_retries 3\n\t\tfail_duration 1m\n\t\trequest_buffers 1KB"},
	} {
		t.Run(variant.name, func(t *testing.T) {
			up := newUpstream(t)
			dead := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens: the dial fails
			g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy ` + dead + ` {UPSTREAM} {
		` + variant.proxyOpts + `
	}
`)})
			k := g.issue("--name", "bodies", "--scope", "mail.send")

			const sends = 48
			bodies := make([][]byte, sends)
			for i := range bodies {
				// Bodies of different sizes (about 0.3 to 3 KB), so pooled
				// buffers are reused across lengths.
				to := make([]string, 1+i%24)
				for j := range to {
					to[j] = fmt.Sprintf("r%d-%d@example.org", i, j)
				}
				bodies[i] = sgBody(fmt.Sprintf("s%d@shop.example.com", i), to...)
			}
			var wg sync.WaitGroup
			errs := make(chan string, sends)
			for i := range bodies {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", bytes.NewReader(bodies[i]))
					req.Header.Set("Authorization", "Bearer "+k.Key)
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						errs <- err.Error()
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 202 {
						errs <- fmt.Sprintf("send %d: %d %s", i, resp.StatusCode, b)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}

			up.mu.Lock()
			defer up.mu.Unlock()
			if len(up.reqs) != sends {
				t.Errorf("the upstream got %d sends, want %d", len(up.reqs), sends)
			}
			got := map[string]int{}
			for _, r := range up.reqs {
				got[string(r.Body)]++
			}
			for i, b := range bodies {
				if got[string(b)] != 1 {
					t.Errorf("send %d arrived %d times intact", i, got[string(b)])
				}
			}
			if t.Failed() {
				t.Logf("gateway log:\n%s", g.logs())
				for _, r := range up.reqs {
					if !strings.HasPrefix(string(r.Body), `{"personalizations"`) {
						t.Logf("a body the upstream got: %.200q", r.Body)
					}
				}
			}
		})
	}
}

// TestCaddysRequestBodyLimitIsPayloadTooLarge: an operator who caps bodies
// with Caddy's own request_body max_size, below keygate's max_body: Caddy
// refuses a declared length past it itself (413, before keygate), and a
// chunked body that runs past it reaches keygate's reader, which must
// answer payload_too_large in the provider's error shape and count it as
// such; not invalid_payload, which says the client's SDK sent something
// malformed.
func TestCaddysRequestBodyLimitIsPayloadTooLarge(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	request_body {
		max_size 1KB
	}
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)})
	k := g.issue("--name", "capped", "--scope", "mail.send")
	small := sgBody("orders@shop.example.com", "ann@example.org")
	if r := g.call("POST", "/v3/mail/send", k.Key, small, "Content-Type", "application/json"); r.Status != http.StatusAccepted {
		t.Fatalf("a send under the cap: %d %s", r.Status, r.Body)
	}
	to := make([]string, 60)
	for i := range to {
		to[i] = fmt.Sprintf("reader%d@example.org", i)
	}
	large := sgBody("orders@shop.example.com", to...)
	if r := g.call("POST", "/v3/mail/send", k.Key, large, "Content-Type", "application/json"); r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("a send declaring %d bytes past request_body's 1KB: %d %s; want Caddy's 413", len(large), r.Status, r.Body)
	}
	// Chunked (a reader of unknown length): the length is not known until
	// the body runs past the cap.
	req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", io.MultiReader(bytes.NewReader(large)))
	req.Header.Set("Authorization", "Bearer "+k.Key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := &response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if r.Status != http.StatusRequestEntityTooLarge || r.code() != "payload_too_large" ||
		!strings.Contains(string(r.Body), `"errors":[{"message"`) {
		t.Errorf("a chunked send running past request_body's 1KB: %d %s; want 413 payload_too_large in SendGrid's shape", r.Status, r.Body)
	}
	if n := g.metric(`keygate_requests_total{decision="payload_too_large"}`); n != 1 {
		t.Errorf("keygate_requests_total{decision=\"payload_too_large\"} = %v, want 1", n)
	}
}
