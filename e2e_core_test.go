package keygate_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/verifier"
)

var coreCaddyfile = site(`
	log {
		output file {LOG}
		format filter {
			wrap json
			request>headers>X-Api-Key delete
		}
	}
	keygate {
		store {STORE}
		rate 100/m
		failed_auth_limit 6/m
		cache_ttl 10m
		key_header X-Api-Key
		access_log_filtered
		scope mail.send POST /v3/mail/send
		scope templates.read GET /v3/templates*
		whoami /keygate/whoami
	}
	reverse_proxy {UPSTREAM} {
		header_up Authorization "Bearer {env.PROVIDER_API_KEY}"
	}
`)

func TestGatewayCore(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: coreCaddyfile, upstream: up.URL})

	send := g.issue("--name", "crm-sync", "--owner", "sales", "--scope", "mail.send")
	full := g.issue("--name", "ops", "--scope", "*")
	templates := g.issue("--name", "designer", "--scope", "templates.*")

	t.Run("a send on behalf of another account is refused unless the key may, and passed on if it may", func(t *testing.T) {
		before := up.count()
		for _, h := range []string{"On-Behalf-Of", "X-Mailgun-On-Behalf-Of"} {
			r := g.call("POST", "/v3/mail/send", send.Key, []byte(`{}`), h, "subuser-1")
			if r.Status != 403 || r.code() != "insufficient_scope" || !strings.Contains(string(r.Body), "allow_on_behalf_of") {
				t.Errorf("%s from a key not allowed it: %d %s", h, r.Status, r.Body)
			}
		}
		if up.count() != before {
			t.Error("a refused send on behalf of another account reached the provider")
		}
		may := g.issue("--name", "subusers", "--scope", "mail.send", "--allow-on-behalf-of")
		// A person reading `show` sees the setting that widens the key, as
		// --json and the audit event say it.
		if out := g.keys("show", may.ID); !regexp.MustCompile(`(?m)^on-behalf-of:\s+allowed$`).MatchString(out) {
			t.Errorf("caddy keys show of a key allowed On-Behalf-Of does not say so:\n%s", out)
		}
		if out := g.keys("show", send.ID); strings.Contains(out, "on-behalf-of") {
			t.Errorf("caddy keys show of a key not allowed On-Behalf-Of names it:\n%s", out)
		}
		if r := g.call("POST", "/v3/mail/send", may.Key, []byte(`{}`), "On-Behalf-Of", "subuser-1"); r.Status != 202 || up.last().Header.Get("On-Behalf-Of") != "subuser-1" {
			t.Errorf("On-Behalf-Of from a key allowed it: %d %s; the provider saw %q", r.Status, r.Body, up.last().Header.Get("On-Behalf-Of"))
		}
	})

	t.Run("a valid key is proxied with every client credential replaced by the provider's", func(t *testing.T) {
		r := g.call("POST", "/v3/mail/send", send.Key, []byte(`{}`), "X-Api-Key", "something", "Cookie", "a=b")
		if r.Status != 202 {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		got := up.last()
		if auth := got.Header.Get("Authorization"); auth != "Bearer provider-secret-123" {
			t.Errorf("upstream Authorization = %q, want the injected provider credential", auth)
		}
		for _, h := range []string{"X-Api-Key", "Cookie"} {
			if v := got.Header.Get(h); v != "" {
				t.Errorf("upstream saw %s: %q", h, v)
			}
		}
		for name, vals := range got.Header {
			if strings.Contains(strings.Join(vals, " "), send.Key) {
				t.Errorf("upstream header %s carries the keygate key", name)
			}
		}
		if r.Header.Get("RateLimit-Policy") != `"default";q=100;w=60` {
			t.Errorf("RateLimit-Policy = %q", r.Header.Get("RateLimit-Policy"))
		}
		if !strings.HasPrefix(r.Header.Get("RateLimit"), `"default";r=99;t=`) {
			t.Errorf("RateLimit = %q", r.Header.Get("RateLimit"))
		}
	})

	t.Run("a key is also read from a configured key_header and stripped", func(t *testing.T) {
		r := g.call("POST", "/v3/mail/send", "", []byte(`{}`), "X-Api-Key", send.Key)
		if r.Status != 202 {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		if v := up.last().Header.Get("X-Api-Key"); v != "" {
			t.Errorf("upstream saw X-Api-Key %q", v)
		}
	})

	denials := []struct {
		name, method, path, key string
		hdr                     []string
		status                  int
		code, challenge         string
	}{
		{"no key is missing_key", "POST", "/v3/mail/send", "", nil, 401, "missing_key", `Bearer realm="keygate"`},
		{"a key of another scope is insufficient_scope", "GET", "/v3/templates/1", send.Key, nil, 403, "insufficient_scope",
			`Bearer realm="keygate", error="insufficient_scope", scope="templates.read"`},
		{"a route matching no scope line is denied", "GET", "/v3/stats", send.Key, nil, 403, "insufficient_scope",
			`Bearer realm="keygate", error="insufficient_scope"`},
		{"a non-bearer Authorization is invalid_key", "POST", "/v3/mail/send", "", []string{"Authorization", "Basic YXBpOmtleQ=="}, 401, "invalid_key",
			`Bearer realm="keygate", error="invalid_token"`},
	}
	for _, tc := range denials {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count()
			r := g.call(tc.method, tc.path, tc.key, nil, tc.hdr...)
			if r.Status != tc.status || r.code() != tc.code {
				t.Fatalf("got %d %s, want %d %s: %s", r.Status, r.code(), tc.status, tc.code, r.Body)
			}
			if tc.challenge != "" && r.Header.Get("WWW-Authenticate") != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", r.Header.Get("WWW-Authenticate"), tc.challenge)
			}
			if r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", r.Header.Get("Content-Type"))
			}
			if up.count() != before {
				t.Error("a denied request reached the upstream")
			}
			// A route no scope line matches is named, so an integrator can
			// ask for the line to add.
			if tc.path == "/v3/stats" && !strings.Contains(string(r.Body), "no scope line matches GET /v3/stats") {
				t.Errorf("the denial does not name the method and path: %s", r.Body)
			}
		})
	}

	t.Run("mail.* and * cover the routes they name", func(t *testing.T) {
		if r := g.call("GET", "/v3/templates/7", templates.Key, nil); r.Status != 202 {
			t.Errorf("templates.* on templates.read: %d %s", r.Status, r.Body)
		}
		if r := g.call("GET", "/v3/stats", full.Key, nil); r.Status != 202 {
			t.Errorf("* on an unscoped route: %d %s", r.Status, r.Body)
		}
	})

	t.Run("whoami answers the key's own record and is never proxied", func(t *testing.T) {
		before := up.count()
		r := g.call("GET", "/keygate/whoami", send.Key, nil)
		if r.Status != 200 || !bytes.Contains(r.Body, []byte(send.ID)) || !bytes.Contains(r.Body, []byte(`"remaining"`)) {
			t.Fatalf("whoami: %d %s", r.Status, r.Body)
		}
		if bytes.Contains(r.Body, []byte(send.Key)) || bytes.Contains(r.Body, []byte(full.ID)) {
			t.Error("whoami revealed a key or another key's id")
		}
		if up.count() != before {
			t.Error("whoami was proxied")
		}
	})

	t.Run("a per-key rate limit answers 429 with Retry-After and RateLimit headers", func(t *testing.T) {
		k := g.issue("--name", "slow", "--scope", "mail.send", "--rate", "2/m")
		for i := 0; i < 2; i++ {
			if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
				t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
			}
		}
		r := g.call("POST", "/v3/mail/send", k.Key, nil)
		if r.Status != 429 || r.code() != "rate_limited" {
			t.Fatalf("third request: %d %s", r.Status, r.Body)
		}
		if ra := r.Header.Get("Retry-After"); ra == "" || ra == "0" {
			t.Errorf("Retry-After = %q", ra)
		}
		if r.Header.Get("RateLimit-Policy") != `"default";q=2;w=60` || !strings.HasPrefix(r.Header.Get("RateLimit"), `"default";r=0;t=`) {
			t.Errorf("RateLimit headers: %q / %q", r.Header.Get("RateLimit-Policy"), r.Header.Get("RateLimit"))
		}
	})

	t.Run("a revoke from the CLI in another process is enforced within 1s", func(t *testing.T) {
		k := g.issue("--name", "to-revoke", "--scope", "mail.send")
		if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
			t.Fatalf("before revoke: %d", r.Status)
		}
		g.keys("revoke", k.ID, "--reason", "test")
		took := eventually(t, 2*time.Second, func() bool {
			return g.call("POST", "/v3/mail/send", k.Key, nil).code() == "revoked_key"
		})
		if took < 0 || took > time.Second {
			t.Fatalf("revocation took %v (cache_ttl is 10m)", took)
		}
	})

	t.Run("an expired key answers expired_key", func(t *testing.T) {
		k := g.issue("--name", "short-lived", "--scope", "mail.send", "--expires", time.Now().Add(1500*time.Millisecond).UTC().Format(time.RFC3339Nano))
		if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
			t.Fatalf("before expiry: %d %s", r.Status, r.Body)
		}
		if eventually(t, 4*time.Second, func() bool {
			return g.call("POST", "/v3/mail/send", k.Key, nil).code() == "expired_key"
		}) < 0 {
			t.Fatal("key did not expire")
		}
	})

	t.Run("malformed keys and headers get 401 JSON, never a 500", func(t *testing.T) {
		bad := []string{
			"kg_live_short",
			send.Key[:len(send.Key)-1] + flip(send.Key[len(send.Key)-1]),
			strings.Repeat("A", 8000),
			"kg_live_\xff\xfe" + strings.Repeat("a", 47),
		}
		for _, key := range bad {
			r := g.call("POST", "/v3/mail/send", key, nil)
			if r.Status != 401 && r.Status != 429 {
				t.Errorf("key %.20q: status %d %s", key, r.Status, r.Body)
			}
		}
	})

	t.Run("repeated failures from one IP get auth_rate_limited", func(t *testing.T) {
		var last *response
		for i := 0; i < 10; i++ {
			last = g.call("POST", "/v3/mail/send", "kg_live_nope", nil)
		}
		if last.Status != 429 || last.code() != "auth_rate_limited" || last.Header.Get("Retry-After") == "" {
			t.Fatalf("after 10 failures: %d %s", last.Status, last.Body)
		}
	})

	t.Run("no key string appears in the database files or the logs", func(t *testing.T) {
		dbDir := filepath.Dir(strings.TrimPrefix(g.store, "sqlite:"))
		files, _ := filepath.Glob(filepath.Join(dbDir, "keys.db*"))
		files = append(files, g.logPath, g.logPath+".stderr")
		if len(files) < 2 {
			t.Fatalf("found only %v", files)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []issuedKey{send, full, templates} {
				if bytes.Contains(b, []byte(k.Key)) || bytes.Contains(b, []byte(k.Key[8:40])) {
					t.Errorf("%s contains key %s", filepath.Base(f), k.ID)
				}
			}
		}
		if info, err := os.Stat(strings.TrimPrefix(g.store, "sqlite:")); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("database file mode: %v %v", info.Mode(), err)
		}
		logs := g.logs()
		if !strings.Contains(logs, `"key_id":"`+send.ID+`"`) || !strings.Contains(logs, `"user_id":"`+send.ID+`"`) {
			t.Errorf("logs lack the usage line or access-log user_id for %s", send.ID)
		}
	})
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func TestRateLimitStateSurvivesReload(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: coreCaddyfile, upstream: up.URL})
	k := g.issue("--name", "reload", "--scope", "mail.send", "--rate", "3/h")
	for i := 0; i < 2; i++ {
		if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
			t.Fatalf("request %d: %d", i, r.Status)
		}
	}
	g.reload()
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
		t.Fatalf("third request after reload: %d %s", r.Status, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 429 {
		t.Fatalf("fourth request after reload: %d %s (the bucket was reset by the reload)", r.Status, r.Body)
	}
}

// TestFailedAuthLimitSparesCachedKeys: past failed_auth_limit a client
// address gets no more store queries, but keys already verified keep
// working, so one broken integration does not stop the others behind the
// same NAT address.
func TestFailedAuthLimitSparesCachedKeys(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		failed_auth_limit 3/m
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)})
	working := g.issue("--name", "working", "--scope", "mail.send")
	fresh := g.issue("--name", "not-yet-used", "--scope", "mail.send")
	time.Sleep(500 * time.Millisecond) // the change-log poll has seen both issues
	if r := g.call("POST", "/v3/mail/send", working.Key, nil); r.Status != 202 {
		t.Fatalf("before any failure: %d %s", r.Status, r.Body)
	}
	for i := 0; i < 5; i++ {
		g.call("POST", "/v3/mail/send", "kg_live_broken-integration", nil)
	}
	queries := g.metric("keygate_store_queries_total")
	for _, c := range []struct {
		name, key string
		status    int
		code      string
	}{
		{"garbage keys get auth_rate_limited", "kg_live_broken-integration", 429, "auth_rate_limited"},
		{"a key the gateway would have to look up gets auth_rate_limited", fresh.Key, 429, "auth_rate_limited"},
		{"a key already verified is still proxied", working.Key, 202, ""},
	} {
		r := g.call("POST", "/v3/mail/send", c.key, nil)
		if r.Status != c.status || r.code() != c.code {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
		}
		if c.status == 429 && r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: no Retry-After", c.name)
		}
	}
	if n := g.metric("keygate_store_queries_total") - queries; n != 0 {
		t.Errorf("%v store queries from an address past its failed-attempt limit", n)
	}
}

// Made-up keys that pass the checksum (anyone can make them) from many
// clients cost no store query: the gateway knows every key's digest. A key
// another process issues is still accepted on its very first request.
func TestMadeUpKeysCostNoStoreQueryButNewKeysWork(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		failed_auth_limit 100000/m
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)})
	g.issue("--name", "existing", "--scope", "mail.send")
	if eventually(t, 5*time.Second, func() bool { return g.metric("keygate_known_digests") >= 1 }) < 0 {
		t.Fatal("keygate_known_digests stays 0: the gateway never read its key digests")
	}
	queries := g.metric("keygate_store_queries_total")
	filtered := g.metric("keygate_unknown_keys_filtered_total")
	const made = 200
	var wg sync.WaitGroup
	errs := make(chan string, made)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range made / 8 {
				key, err := verifier.Generate("kg", "live")
				if err != nil {
					errs <- err.Error()
					return
				}
				if r := g.call("POST", "/v3/mail/send", key, nil); r.Status != 401 || r.code() != "invalid_key" {
					errs <- fmt.Sprintf("client %d: a made-up key got %d %s", w, r.Status, r.Body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := g.metric("keygate_store_queries_total") - queries; n != 0 {
		t.Errorf("%d made-up keys cost %v store queries, want 0", made, n)
	}
	if n := g.metric("keygate_unknown_keys_filtered_total") - filtered; n != made {
		t.Errorf("keygate_unknown_keys_filtered_total moved by %v, want %d", n, made)
	}
	for i := range 5 {
		k := g.issue("--name", fmt.Sprintf("new-%d", i), "--scope", "mail.send")
		if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
			t.Fatalf("a key issued by the CLI just now, on its first request: %d %s", r.Status, r.Body)
		}
	}
}

// A denial is written before the body is read. A client that sent
// Connection: close with a body larger than the server's read buffer must
// still read it, not a connection reset (without the drain in deny, about
// 4 in 100 of these requests failed).
func TestDenialsReachClientsThatCloseTheConnection(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL})
	k := g.issue("--name", "narrow", "--scope", "mail.send")
	body := bytes.Repeat([]byte("a"), 100<<10)
	for i := 0; i < 100; i++ {
		req, err := http.NewRequest("POST", g.siteURL+"/v3/templates", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+k.Key)
		resp, err := client.Do(req) // Connection: close
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r := &response{Status: resp.StatusCode, Body: b}
		if r.Status != 403 || r.code() != "insufficient_scope" {
			t.Fatalf("request %d: %d %s, want 403 insufficient_scope", i, r.Status, r.Body)
		}
	}
	if up.count() != 0 {
		t.Errorf("the upstream was called %d times", up.count())
	}
}

// A client that writes its whole body before it reads the answer (Ruby's
// Net::HTTP, which the Postmark gem uses; PHP's streams) reads the denial of a
// large send, not a connection reset: Go's server alone reads 256 KB of a
// body the handler left, then closes the connection on the rest.
func TestDenialsReachClientsThatWriteTheWholeBodyFirst(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL})
	k := g.issue("--name", "narrow", "--scope", "mail.send")
	addr := strings.TrimPrefix(g.siteURL, "http://")
	body := bytes.Repeat([]byte("a"), 8<<20)
	for _, tc := range []struct {
		name, path, key, connection string
		status                      int
	}{
		{"outside the key's scope", "/v3/templates", k.Key, "keep-alive", 403},
		{"an unknown key", "/v3/mail/send", "kg_live_000000000000000000000000000000000000000000000000000", "keep-alive", 401},
		{"outside the key's scope, Connection: close", "/v3/templates", k.Key, "close", 403},
	} {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"+
			"Content-Length: %d\r\nConnection: %s\r\n\r\n", tc.path, addr, tc.key, len(body), tc.connection)
		if _, err := conn.Write(append([]byte(head), body...)); err != nil {
			t.Errorf("%s: writing the body: %v", tc.name, err)
			conn.Close()
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("%s: reading the answer: %v", tc.name, err)
		} else if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
		conn.Close()
	}
	if up.count() != 0 {
		t.Errorf("the upstream was called %d times", up.count())
	}
}

// A client that asks before sending a body (Expect: 100-continue: curl for
// large uploads, .NET's HttpWebRequest by default) and is refused gets the
// refusal at once, and never uploads the body: without Connection: close
// on the refusal, the server waited for the body on the kept-alive
// connection, so the client's wait for 100 Continue ran out first (curl:
// 1 s, here 3 s) and then sent it all.
func TestADenialDoesNotWaitForABodyTheClientWithholds(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL})
	k := g.issue("--name", "narrow", "--scope", "mail.send")
	c := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 3 * time.Second}, Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name, path, key string
		status          int
	}{
		{"no key", "/v3/mail/send", "", 401},
		{"an unknown key", "/v3/mail/send", "kg_live_000000000000000000000000000000000000000000000000000", 401},
		{"outside the key's scope", "/v3/templates", k.Key, 403},
	} {
		req, _ := http.NewRequest("POST", g.siteURL+tc.path, bytes.NewReader(bytes.Repeat([]byte("a"), 1<<20)))
		req.Header.Set("Expect", "100-continue")
		if tc.key != "" {
			req.Header.Set("Authorization", "Bearer "+tc.key)
		}
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if took := time.Since(start); resp.StatusCode != tc.status || took > 2*time.Second {
			t.Errorf("%s: %d after %v, want %d at once", tc.name, resp.StatusCode, took.Round(time.Millisecond), tc.status)
		}
	}
	// An allowed send still gets its 100 Continue and goes through.
	req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", strings.NewReader(`{}`))
	req.Header.Set("Expect", "100-continue")
	req.Header.Set("Authorization", "Bearer "+k.Key)
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != 202 || took > 2*time.Second || up.count() != 1 {
		t.Errorf("an allowed send with Expect: %d after %v, %d upstream calls", resp.StatusCode, took.Round(time.Millisecond), up.count())
	}
}

// A matcher on keygate limits it to the requests it matches, as on any
// handler directive: the others go on to reverse_proxy unchecked, which is
// why docs/caddyfile.md puts the matcher on a handle holding both.
func TestAMatcherOnKeygateLeavesTheOtherRequestsToTheHandlersAfterIt(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate /v3/* {
		store {STORE}
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)})
	k := g.issue("--name", "matcher", "--scope", "mail.send")
	if r := g.call("POST", "/v3/mail/send", "", nil); r.code() != "missing_key" || up.count() != 0 {
		t.Fatalf("a send without a key: %d %s, %d at the provider", r.Status, r.Body, up.count())
	}
	if r := g.call("GET", "/v2/suppressions", "", nil); r.Status != 202 || up.count() != 1 {
		t.Fatalf("a request keygate's matcher does not match: %d %s, %d at the provider (want it proxied unchecked)", r.Status, r.Body, up.count())
	}

	// The form the docs give: the matcher on a handle, the rest answered.
	g.writeConfig(site(`
	handle /v3/* {
		keygate {
			store {STORE}
			scope mail.send POST /v3/mail/send
		}
		reverse_proxy {UPSTREAM}
	}
	handle {
		respond 404
	}
`), up.URL, g.port())
	g.reload()
	if r := g.call("GET", "/v2/suppressions", "", nil); r.Status != 404 || up.count() != 1 {
		t.Fatalf("a request outside the handle: %d %s, %d at the provider", r.Status, r.Body, up.count())
	}
	if r := g.call("POST", "/v3/mail/send", "", nil); r.code() != "missing_key" || up.count() != 1 {
		t.Fatalf("a send without a key: %d %s, %d at the provider", r.Status, r.Body, up.count())
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 || up.count() != 2 {
		t.Fatalf("a send with a key: %d %s, %d at the provider", r.Status, r.Body, up.count())
	}
}

// docs/caddyfile.md: `map` runs before keygate but is read lazily, so a
// map of {keygate.key.owner} picks an upstream per key owner for the
// reverse_proxy after it, and `header >…` writes keygate's placeholders
// when the response goes out (without `>`, their own text).
func TestAMapOfTheKeysOwnerPicksItsUpstream(t *testing.T) {
	sales, rest := newUpstream(t), newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: rest.URL, caddyfile: site(`
	map {keygate.key.owner} {upstream} {
		sales ` + strings.TrimPrefix(sales.URL, "http://") + `
		default {UPSTREAM}
	}
	header >X-Key-Id {keygate.key.id}
	header X-Early {keygate.key.id}
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {upstream}
`)})
	a := g.issue("--name", "crm", "--owner", "sales", "--scope", "mail.send")
	b := g.issue("--name", "shop", "--owner", "web", "--scope", "mail.send")
	r := g.call("POST", "/v3/mail/send", a.Key, nil)
	if r.Status != 202 || sales.count() != 1 || rest.count() != 0 {
		t.Errorf("a key of sales: %d %s; %d at sales's upstream, %d at the other", r.Status, r.Body, sales.count(), rest.count())
	}
	if got, early := r.Header.Get("X-Key-Id"), r.Header.Get("X-Early"); got != a.ID || early != "{keygate.key.id}" {
		t.Errorf("header >X-Key-Id: %q (want %s), header X-Early: %q (want the placeholder's text)", got, a.ID, early)
	}
	if r := g.call("POST", "/v3/mail/send", b.Key, nil); r.Status != 202 || sales.count() != 1 || rest.count() != 1 {
		t.Errorf("a key of web: %d %s; %d at sales's upstream, %d at the other", r.Status, r.Body, sales.count(), rest.count())
	}
}
