package keygate_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// TestSendCanceledMidBodyIsClientClosed: a client on HTTP/2 (as Go's SDKs
// speak it to an HTTPS gateway; here h2c) that gives up while its send body
// is on its way resets the stream. keygate must count it client_closed,
// not invalid_payload or gateway_busy, which an operator acts on; the log
// line says so, and Caddy's access log records 499.
func TestSendCanceledMidBodyIsClientClosed(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: sendgridServerSite("protocols h1 h2c", "log {\n\t\toutput file {LOG}.access\n\t}")})
	k := g.issue("--name", "impatient", "--scope", "mail.send")
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	ctx, cancel := context.WithCancel(context.Background())
	body, w := io.Pipe()
	req, _ := http.NewRequestWithContext(ctx, "POST", g.siteURL+"/v3/mail/send", body)
	req.ContentLength = 4096
	req.Header.Set("Authorization", "Bearer "+k.Key)
	req.Header.Set("Content-Type", "application/json")
	done := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %d %s", resp.StatusCode, resp.Proto)
		}
		done <- err
	}()
	if _, err := w.Write([]byte(`{"personalizations":[{"to":[{"email":"ann@example.org"}]}],`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // keygate is reading the body
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the canceled send: %v, want context.Canceled", err)
	}
	w.Close()

	metric := `keygate_requests_total{decision="client_closed"}`
	deadline := time.Now().Add(5 * time.Second)
	for g.metric(metric) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := g.metric(metric); n != 1 {
		t.Errorf("%s = %v, want 1", metric, n)
	}
	for _, other := range []string{"invalid_payload", "gateway_busy"} {
		if n := g.metric(`keygate_requests_total{decision="` + other + `"}`); n != 0 {
			t.Errorf("the canceled send counted as %s too: %v", other, n)
		}
	}
	logs := g.logs()
	if !strings.Contains(logs, `"decision":"client_closed"`) {
		t.Errorf("no keygate request line with decision client_closed in the log:\n%s", logs)
	}
	access, _ := os.ReadFile(g.logPath + ".access")
	if !strings.Contains(string(access), `"status":499`) || !strings.Contains(string(access), `"proto":"HTTP/2.0"`) {
		t.Errorf("Caddy's access log lacks the HTTP/2 request with status 499:\n%s", access)
	}
}

// TestSendBodiesCutShort: over HTTP/1.1, a client whose send body stalls
// past the server's read_body timeout is still there, and gets keygate's
// invalid_payload with the reason, in the provider's shape; one that closes
// its connection mid-body is gone, and is counted client_closed, not as a
// malformed payload. (net/http ends the request's context in both.)
func TestSendBodiesCutShort(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: sendgridServerSite("timeouts {\n\t\t\tread_body 300ms\n\t\t}", "")})
	k := g.issue("--name", "slow", "--scope", "mail.send")
	host := strings.TrimPrefix(g.siteURL, "http://")
	start := func() net.Conn {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "POST /v3/mail/send HTTP/1.1\r\nHost: "+host+"\r\nAuthorization: Bearer "+k.Key+
			"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"personalizations\":")
		return c
	}

	c := start()
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a body stalled past read_body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := &response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if r.Status != http.StatusBadRequest || r.code() != "invalid_payload" || !strings.Contains(string(body), "reading it timed out") {
		t.Errorf("a body stalled past read_body: %d %s; want 400 invalid_payload saying the read timed out", r.Status, body)
	}

	gone := start()
	time.Sleep(50 * time.Millisecond) // keygate is reading the body
	gone.Close()
	metric := `keygate_requests_total{decision="client_closed"}`
	for deadline := time.Now().Add(5 * time.Second); g.metric(metric) != 1 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := g.metric(metric); n != 1 {
		t.Errorf("%s = %v after a client closed its connection mid-body, want 1", metric, n)
	}
	if n := g.metric(`keygate_requests_total{decision="invalid_payload"}`); n != 1 {
		t.Errorf(`keygate_requests_total{decision="invalid_payload"} = %v, want 1 (the stalled body only)`, n)
	}
}

// sendgridServerSite is a SendGrid send site (as sendgridSendSite) with
// servers options for Caddy's HTTP server, and site directives before
// keygate.
func sendgridServerSite(servers, directives string) string {
	return "{\n\tadmin {ADMIN}\n\tservers {\n\t\t" + servers + "\n\t}\n}\n" +
		"http://127.0.0.1:{PORT} {\n\tbind 127.0.0.1\n\t" + directives + sendgridSendSiteBody + "}\n"
}

// A chunked send that runs past max_body is refused once keygate has read
// max_body of it, while the client is still sending. The client reads the
// 413, not a connection reset: the denial reads what is left of the body
// first, as every denial does. Before, keygate closed the body it had
// started to read (Go's server then gives up on the rest), and a client
// that had asked for 100 Continue, and got it, was taken for one that
// withholds its body: the connection was closed under it mid-upload. curl,
// which asks for 100 Continue on every chunked upload, saw "Connection reset
// by peer" and no answer.
func TestAChunkedSendPastMaxBodyIsAnsweredNotReset(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
		max_body 64KB
	}
	reverse_proxy {UPSTREAM}
`), upstream: up.URL})
	k := g.issue("--name", "big", "--scope", "mail.send")
	addr := strings.TrimPrefix(g.siteURL, "http://")
	chunk := fmt.Sprintf("%x\r\n%s\r\n", 64<<10, bytes.Repeat([]byte("a"), 64<<10))
	for _, expect := range []bool{false, true} {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(conn)
		head := "POST /v3/mail/send HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + k.Key +
			"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
		if expect {
			head += "Expect: 100-continue\r\n"
		}
		if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
			t.Fatal(err)
		}
		if expect {
			// As curl does: the body follows the server's 100 Continue.
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusContinue {
				t.Fatalf("Expect: 100-continue: %v %v, want 100 Continue first", resp, err)
			}
		}
		// 8 MiB, written whole before the answer is read (as Ruby's
		// Net::HTTP does), then its end.
		var werr error
		for i := 0; i < 128 && werr == nil; i++ {
			_, werr = io.WriteString(conn, chunk)
		}
		if werr == nil {
			_, werr = io.WriteString(conn, "0\r\n\r\n")
		}
		resp, rerr := http.ReadResponse(br, nil)
		var r response
		if rerr == nil {
			r.Status = resp.StatusCode
			r.Body, _ = io.ReadAll(resp.Body)
		}
		if werr != nil || rerr != nil || r.Status != 413 || r.code() != "payload_too_large" {
			t.Errorf("Expect: 100-continue %v: writing the body: %v; the answer: %v %d %s; want 413 payload_too_large",
				expect, werr, rerr, r.Status, r.Body)
		}
		conn.Close()
	}
	if up.count() != 0 {
		t.Errorf("the upstream was called %d times", up.count())
	}
}

// framing is how a request reached the provider: its length, transfer
// coding, Expect header, trailers and body.
type framing struct {
	length  int64
	te      []string
	expect  string
	trailer http.Header
	body    []byte
}

// framingUpstream is a provider that answers 202 and says how each request
// reached it.
func framingUpstream(t *testing.T) (*httptest.Server, <-chan framing) {
	reqs := make(chan framing, 4)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // the trailers arrive with the body's end
		reqs <- framing{r.ContentLength, r.TransferEncoding, r.Header.Get("Expect"), r.Trailer, body}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(up.Close)
	return up, reqs
}

// TestAReadSendReachesTheProviderWithItsLength: a send keygate has read
// whole goes on with a Content-Length, not chunked as the client sent it
// (an API behind a load balancer that wants a length refuses a chunked
// request, and Caddy alone would pass it on chunked), and without the
// client's Expect: 100-continue, whose answer it already had from keygate:
// the provider's own 100 reached the client as a second one.
func TestAReadSendReachesTheProviderWithItsLength(t *testing.T) {
	up, reqs := framingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: sendgridSendSite, upstream: up.URL})
	k := g.issue("--name", "chunked", "--scope", "mail.send")
	addr := strings.TrimPrefix(g.siteURL, "http://")
	body := sgBody("news@shop.example.com", "a@example.org")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, "POST /v3/mail/send HTTP/1.1\r\nHost: "+addr+"\r\nAuthorization: Bearer "+k.Key+
		"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("%v %v, want 100 Continue first", resp, err)
	}
	fmt.Fprintf(conn, "%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%v %v, want the provider's 202, and no second 100 Continue before it", resp, err)
	}
	r := <-reqs
	if r.length != int64(len(body)) || len(r.te) != 0 || r.expect != "" || !bytes.Equal(r.body, body) {
		t.Errorf("the provider got Content-Length %d, Transfer-Encoding %q, Expect %q, body intact %v; want %d, none, none, true",
			r.length, r.te, r.expect, bytes.Equal(r.body, body), len(body))
	}
}

// TestASendWhoseAnswerBreaksOffIsCounted: the provider answers a send and
// its connection breaks off mid-answer (reset, a load balancer's idle
// timeout). Caddy's reverse_proxy then ends the request with a panic
// (http.ErrAbortHandler), after the status went out. Before, that skipped
// keygate's accounting: a send the provider took (202) was in neither the
// key's usage, nor its log, nor the metrics, and a refused one (500) kept
// its recipients in the quota for the rest of the day. Now each is counted
// by the status that went out, as any other answer is.
func TestASendWhoseAnswerBreaksOffIsCounted(t *testing.T) {
	var taken atomic.Int32
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		status := http.StatusAccepted
		if s := r.Header.Get("X-Test-Status"); s != "" {
			status, _ = strconv.Atoi(s)
		}
		if status == http.StatusAccepted {
			taken.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(status)
		io.WriteString(w, `{"message`)
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0) // a reset, not a clean end
			conn.Close()
		}
	}))
	defer provider.Close()
	g := startGateway(t, gatewayConfig{caddyfile: quotaCaddyfile, upstream: provider.URL}) // quota 4/d
	k := g.issue("--name", "broken-answers", "--scope", "mail.send")
	two := sgBody("a@example.com", "r1@example.org", "r2@example.org")

	if r := g.call("POST", "/v3/mail/send", k.Key, two); r.Status != http.StatusAccepted {
		t.Fatalf("a send the provider took: %d %s", r.Status, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, two, "X-Test-Status", "500"); r.Status != http.StatusInternalServerError {
		t.Fatalf("a send the provider refused: %d %s", r.Status, r.Body)
	}
	if taken.Load() != 1 {
		t.Fatalf("the provider took %d sends, want 1", taken.Load())
	}
	var u usageJSON
	if eventually(t, 5*time.Second, func() bool { u = g.usage(k.ID); return u.Allowed == 2 }) < 0 {
		t.Errorf("usage counts %d requests of the two the provider answered mid-way", u.Allowed)
	}
	if u.Recipients != 2 || u.Statuses["2xx"] != 1 || u.Statuses["5xx"] != 1 {
		t.Errorf("usage: %d recipients, statuses %v; want the taken send's 2 recipients, one 2xx and one 5xx", u.Recipients, u.Statuses)
	}
	if n := g.metric(`keygate_requests_total{decision="allowed"}`); n != 2 {
		t.Errorf(`keygate_requests_total{decision="allowed"} = %v, want 2`, n)
	}
	// The quota holds the taken send's two recipients, not the refused one's.
	if r := g.call("POST", "/v3/mail/send", k.Key, two); r.Status != http.StatusAccepted {
		t.Errorf("3 and 4 of 4: %d %s (the refused send kept its recipients in the quota)", r.Status, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, sgBody("a@example.com", "r3@example.org"), "X-Test-Answer", "now"); r.code() != "quota_exceeded" {
		t.Errorf("5 of 4: %d %s, want quota_exceeded", r.Status, r.Body)
	}
}

// TestASendTheProviderNeverReceivedWholeIsNotCounted: the provider's
// connection resets while the send's body is still being uploaded to it (a
// load balancer restarting, a provider refusing large bodies by closing).
// The client gets 502 and its SDK may send again; the provider has no
// whole request, so nothing went out. Before, any failure other than a
// refused dial counted as "may have gone out": each attempt of an SDK
// retrying through such an outage took its recipients from the key's quota
// and counted them as sent. A connection that fails after the provider had
// the whole body still counts (it may have taken the send).
func TestASendTheProviderNeverReceivedWholeIsNotCounted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func(conn net.Conn) {
				defer conn.Close()
				conn.(*net.TCPConn).SetLinger(0) // a reset, as a crashed peer's
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err == nil && req.Header.Get("X-Test-Read") == "all" {
					io.Copy(io.Discard, req.Body) // the whole request, then no answer
				}
			}(conn)
		}
	}()
	g := startGateway(t, gatewayConfig{caddyfile: quotaCaddyfile, upstream: "http://" + ln.Addr().String()}) // quota 4/d
	k := g.issue("--name", "retrying", "--scope", "mail.send")
	large := sgBody("a@example.com", "r1@example.org")
	large = append(large[:len(large)-1], []byte(`,"attachments":[{"filename":"scan.pdf","content":"`+strings.Repeat("A", 8<<20)+`"}]}`)...)

	for i := range 4 { // as an SDK retrying a 502
		r := g.call("POST", "/v3/mail/send", k.Key, large)
		if r.Status != http.StatusBadGateway {
			t.Fatalf("attempt %d: %d %s, want 502", i+1, r.Status, r.Body)
		}
	}
	r := g.call("POST", "/v3/mail/send", k.Key, sgBody("a@example.com", "r2@example.org"), "X-Test-Read", "all")
	if r.Status != http.StatusBadGateway {
		t.Fatalf("a send whose whole body the provider read: %d %s, want 502", r.Status, r.Body)
	}
	if got := r.Header.Get("RateLimit"); got != `"quota";r=3;t=`+strings.SplitN(got, ";t=", 2)[1] {
		t.Errorf("RateLimit %q on the fifth attempt: the four never received kept recipients in the quota", got)
	}
	var u usageJSON
	if eventually(t, 5*time.Second, func() bool { u = g.usage(k.ID); return u.Allowed == 5 }) < 0 {
		t.Fatalf("usage counts %d requests, want 5", u.Allowed)
	}
	if u.Recipients != 1 {
		t.Errorf("usage counts %d recipients, want 1: the send the provider had whole", u.Recipients)
	}
}

// TestASendWhoseClientLeftAfterTheProviderHadItIsCounted: the provider
// reads a send whole and is slow to answer (a hung provider), and the
// client gives up waiting (an SDK's timeout). The provider may take the
// send all the same, so it counts, in the key's usage and its quota, as a
// timeout after the upload does. Before, Caddy 2.11's reverse_proxy ended
// such a request with a 499 and no error, which keygate read as a
// provider's refusal: the recipients went back, and clients timing out on
// a hung provider sent past their quota (20 such sends on a quota of 30
// left 30 more to send).
func TestASendWhoseClientLeftAfterTheProviderHadItIsCounted(t *testing.T) {
	had := make(chan struct{}, 8)
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Test-Answer") != "" {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		had <- struct{}{}
		<-r.Context().Done() // no answer until the gateway lets go
	}))
	defer provider.Close()
	g := startGateway(t, gatewayConfig{caddyfile: quotaCaddyfile, upstream: provider.URL}) // quota 4/d
	k := g.issue("--name", "impatient", "--scope", "mail.send")
	two := sgBody("a@example.com", "r1@example.org", "r2@example.org")

	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", g.siteURL+"/v3/mail/send", bytes.NewReader(two))
		req.Header.Set("Authorization", "Bearer "+k.Key)
		req.Header.Set("Content-Type", "application/json")
		errc := make(chan error, 1)
		go func() {
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		select {
		case <-had:
		case <-time.After(10 * time.Second):
			t.Fatalf("send %d did not reach the provider:\n%s", i+1, g.logs())
		}
		cancel()
		if err := <-errc; err == nil {
			t.Fatalf("send %d was answered though the provider never answers", i+1)
		}
	}
	var u usageJSON
	if eventually(t, 5*time.Second, func() bool { u = g.usage(k.ID); return u.Allowed == 2 }) < 0 {
		t.Fatalf("usage counts %d requests, want the 2 sends the provider had", u.Allowed)
	}
	if u.Recipients != 4 {
		t.Errorf("usage counts %d recipients, want 4: the provider had both sends whole", u.Recipients)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, sgBody("a@example.com", "r3@example.org"), "X-Test-Answer", "now"); r.code() != "quota_exceeded" {
		t.Errorf("a fifth recipient on a quota of 4: %d %s, want quota_exceeded", r.Status, r.Body)
	}
}

// TestAReadSendGoesOnWithoutTheClientsTrailers: a chunked send may end in
// trailers, header fields after the body. keygate inspects and strips the
// send's headers, never its trailers, and Caddy passes request trailers on
// (chunked again, so the send lost the Content-Length it is given): an
// On-Behalf-Of or a provider key in a trailer went to the provider. A send
// keygate read whole goes on without them, with its length, and a request
// on another route, whose body streams through, without them too.
func TestAReadSendGoesOnWithoutTheClientsTrailers(t *testing.T) {
	up, reqs := framingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
		scope templates.write POST /v3/templates
	}
	reverse_proxy {UPSTREAM}
`), upstream: up.URL})
	k := g.issue("--name", "trailers", "--scope", "mail.send", "--scope", "templates.write")
	addr := strings.TrimPrefix(g.siteURL, "http://")
	post := func(path string, body []byte) framing {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"+
			"Transfer-Encoding: chunked\r\nTrailer: On-Behalf-Of, X-Extra\r\n\r\n%x\r\n%s\r\n0\r\nOn-Behalf-Of: subuser\r\nX-Extra: 1\r\n\r\n",
			path, addr, k.Key, len(body), body)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s: %v %v, want the provider's 202", path, resp, err)
		}
		return <-reqs
	}
	body := sgBody("news@shop.example.com", "a@example.org")
	if r := post("/v3/mail/send", body); r.length != int64(len(body)) || len(r.te) != 0 || len(r.trailer) != 0 {
		t.Errorf("the provider got Content-Length %d, Transfer-Encoding %q, trailers %v; want %d, none, none",
			r.length, r.te, r.trailer, len(body))
	}
	if r := post("/v3/templates", []byte(`{"name":"t"}`)); len(r.trailer) != 0 {
		t.Errorf("a template's request reached the provider with trailers %v, want none", r.trailer)
	}
}
