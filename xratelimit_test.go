package keygate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestSendGridRoutesReportXRateLimit(t *testing.T) {
	defer func(f func() time.Time) { now = f }(now)
	t0 := time.Unix(1_800_000_000, 0)
	now = func() time.Time { return t0 }
	scopes := []ScopeRule{{Scope: "mail.send", Path: "*"}}
	sg, st := testHandler(t, &Handler{MailAPI: "sendgrid", Rate: "2/m", Scopes: scopes})
	_, key := issue(t, st, "mail.send")
	want := func(w interface{ Header() http.Header }, limit, remaining string, reset int64) {
		t.Helper()
		h := w.Header()
		if h.Get("X-RateLimit-Limit") != limit || h.Get("X-RateLimit-Remaining") != remaining || h.Get("X-RateLimit-Reset") != strconv.FormatInt(reset, 10) {
			t.Errorf("X-RateLimit %q/%q/%q, want %s/%s/%d", h.Get("X-RateLimit-Limit"), h.Get("X-RateLimit-Remaining"), h.Get("X-RateLimit-Reset"), limit, remaining, reset)
		}
	}
	w := serve(sg, "GET", "/v3/templates", key)
	if w.Code != 202 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	want(w, "2", "1", t0.Unix()+30) // full again in 30 s
	serve(sg, "GET", "/v3/templates", key)
	w = serve(sg, "GET", "/v3/templates", key)
	if w.Code != 429 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	// On a 429, the time a retry will pass: Retry-After from now.
	want(w, "2", "0", t0.Unix()+30)
	if w.Header().Get("Retry-After") != "30" {
		t.Errorf("Retry-After %q", w.Header().Get("Retry-After"))
	}

	other, _ := testHandler(t, &Handler{MailAPI: "resend", Rate: "2/m", Scopes: scopes, Store: "sqlite:" + sg.storeURI[len("sqlite:"):]})
	if w := serve(other, "GET", "/x", key); w.Header().Get("X-RateLimit-Limit") != "" {
		t.Errorf("a resend route sends X-RateLimit-Limit %q", w.Header().Get("X-RateLimit-Limit"))
	}
}

// An upstream that reports its own limits under the names keygate writes
// (SendGrid's X-RateLimit-*, the draft's RateLimit) does not make a second
// value of each: keygate's stay, except on the upstream's own 429.
func TestUpstreamRateHeadersDoNotDoubleKeygates(t *testing.T) {
	scopes := []ScopeRule{{Scope: "mail.send", Path: "*"}}
	sg, st := testHandler(t, &Handler{MailAPI: "sendgrid", Rate: "100/m", Scopes: scopes})
	_, key := issue(t, st, "mail.send")
	provider := func(status int) caddyhttp.Handler {
		return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			// What Caddy's reverse_proxy does with the upstream's headers.
			for name, v := range map[string]string{
				"x-ratelimit-limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1800000060",
				"RateLimit": `"provider";r=0;t=60`, "RateLimit-Policy": `"provider";q=600;w=60`, "X-Message-Id": "m1",
			} {
				w.Header().Add(name, v)
			}
			w.WriteHeader(status)
			return nil
		})
	}
	send := func(status int) http.Header {
		t.Helper()
		r := httptest.NewRequest("POST", "/v3/mail/send", strings.NewReader(`{"personalizations":[{"to":[{"email":"a@example.org"}]}],"from":{"email":"s@example.com"}}`))
		r.Header.Set("Authorization", "Bearer "+key)
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		w := httptest.NewRecorder()
		if err := sg.ServeHTTP(w, r, provider(status)); err != nil {
			t.Fatal(err)
		}
		if w.Code != status {
			t.Fatalf("status %d, want %d: %s", w.Code, status, w.Body)
		}
		for _, name := range []string{"X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "Ratelimit", "Ratelimit-Policy", "X-Message-Id"} {
			if n := len(w.Header()[name]); n != 1 {
				t.Errorf("status %d: %s has %d values %q, want 1", status, name, n, w.Header()[name])
			}
		}
		return w.Header()
	}
	h := send(http.StatusAccepted)
	if h.Get("X-RateLimit-Limit") != "100" || h.Get("X-RateLimit-Remaining") != "99" || !strings.HasPrefix(h.Get("RateLimit"), `"default";r=99;`) ||
		h.Get("RateLimit-Policy") != `"default";q=100;w=60` {
		t.Errorf("a proxied answer carries the upstream's limits, not the key's: %v", h)
	}
	h = send(http.StatusTooManyRequests)
	if h.Get("X-RateLimit-Limit") != "600" || h.Get("X-RateLimit-Remaining") != "0" || h.Get("RateLimit") != `"provider";r=0;t=60` {
		t.Errorf("the upstream's own 429 carries keygate's limits, not the ones that refused it: %v", h)
	}
}
