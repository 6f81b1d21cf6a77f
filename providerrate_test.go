package keygate

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// SendGrid's and Resend's routes report the key's rate limit in the
// provider's own headers (SendGrid's Reset a Unix time, Resend's seconds
// from now), Mailgun's only on the rate limit's 429, which mailgun-go v5
// reads X-RateLimit-Reset from; other dialects' routes carry neither.
func TestProviderRoutesReportTheirRateHeaders(t *testing.T) {
	defer func(f func() time.Time) { now = f }(now)
	t0 := time.Unix(1_800_000_000, 0)
	now = func() time.Time { return t0 }
	scopes := []ScopeRule{{Scope: "mail.send", Path: "*"}}
	var store string
	for _, c := range []struct {
		dialect string
		names   []string // limit, remaining, reset; nil for none
		reset   int64    // Reset, 30 s from t0, in the dialect's form
		// onlyLimited: the headers are on the 429 alone.
		onlyLimited bool
	}{
		{"sendgrid", []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}, t0.Unix() + 30, false},
		{"resend", []string{"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}, 30, false},
		{"mailgun", []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}, t0.Unix() + 30, true},
		{"postmark", nil, 0, false},
	} {
		h, st := testHandler(t, &Handler{MailAPI: c.dialect, Rate: "2/m", Scopes: scopes, Store: store})
		store = h.storeURI // one key for every dialect
		_, key := issue(t, st, "mail.send")
		want := func(w *httptest.ResponseRecorder, remaining string) {
			t.Helper()
			hdr := w.Header()
			if c.names == nil || c.onlyLimited && w.Code != 429 {
				for _, name := range []string{"X-RateLimit-Limit", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} {
					if v := hdr.Get(name); v != "" {
						t.Errorf("%s: %s %q on a route of a provider without it", c.dialect, name, v)
					}
				}
				return
			}
			got := []string{hdr.Get(c.names[0]), hdr.Get(c.names[1]), hdr.Get(c.names[2])}
			if want := []string{"2", remaining, strconv.FormatInt(c.reset, 10)}; !slices.Equal(got, want) {
				t.Errorf("%s: %q = %q, want %q", c.dialect, c.names, got, want)
			}
		}
		w := serve(h, "GET", "/x", key)
		if w.Code != 202 {
			t.Fatalf("%s: %d %s", c.dialect, w.Code, w.Body)
		}
		want(w, "1") // full again in 30 s
		serve(h, "GET", "/x", key)
		w = serve(h, "GET", "/x", key)
		if w.Code != 429 {
			t.Fatalf("%s: %d %s", c.dialect, w.Code, w.Body)
		}
		want(w, "0") // on a 429, when a retry will pass: Retry-After from now
		if w.Header().Get("Retry-After") != "30" {
			t.Errorf("%s: Retry-After %q", c.dialect, w.Header().Get("Retry-After"))
		}
	}
}

// An upstream that reports its own limits under the names keygate writes
// (SendGrid's X-RateLimit-*, Resend's RateLimit-Limit and the like, the
// draft's RateLimit) does not make a second value of each: keygate's stay,
// except on the upstream's own 429.
func TestUpstreamRateHeadersDoNotDoubleKeygates(t *testing.T) {
	scopes := []ScopeRule{{Scope: "mail.send", Path: "*"}}
	var store string
	for _, c := range []struct {
		dialect, path, body string
		limit               string // the provider's own limit header
	}{
		// Not mail/send: SendGrid's answer to a send has no X-RateLimit-*,
		// nor has keygate's (TestSendGridsAnswerToASendHasNoXRateLimit).
		{"sendgrid", "/v3/templates", `{"name":"t","generation":"dynamic"}`, "X-RateLimit-Limit"},
		{"resend", "/emails", `{"from":"s@example.com","to":"a@example.org"}`, "RateLimit-Limit"},
	} {
		h, st := testHandler(t, &Handler{MailAPI: c.dialect, Rate: "100/m", Scopes: scopes, Store: store})
		store = h.storeURI
		_, key := issue(t, st, "mail.send")
		// The next handler adds the upstream's headers, as Caddy's
		// reverse_proxy does, and sends them in one of the ways a handler
		// can: WriteHeader, or an implicit 200 by Write, ReadFrom or a flush.
		provider := func(status int, how string) caddyhttp.Handler {
			return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				for name, v := range map[string]string{
					"x-ratelimit-limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1800000060",
					"ratelimit-limit": "600", "ratelimit-remaining": "0", "ratelimit-reset": "60",
					"RateLimit": `"provider";r=0;t=60`, "RateLimit-Policy": `"provider";q=600;w=60`, "X-Message-Id": "m1",
				} {
					w.Header().Add(name, v)
				}
				var err error
				switch how {
				case "WriteHeader":
					w.WriteHeader(status)
				case "Write":
					_, err = w.Write([]byte("{}"))
				case "ReadFrom":
					_, err = w.(io.ReaderFrom).ReadFrom(strings.NewReader("{}"))
				case "Flush":
					err = http.NewResponseController(w).Flush()
				}
				return err
			})
		}
		send := func(status int, how string) http.Header {
			t.Helper()
			r := httptest.NewRequest("POST", c.path, strings.NewReader(c.body))
			r.Header.Set("Authorization", "Bearer "+key)
			r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, r, provider(status, how)); err != nil {
				t.Fatal(err)
			}
			if w.Code != status {
				t.Fatalf("%s: status %d, want %d: %s", c.dialect, w.Code, status, w.Body)
			}
			// The header as it was when the status was sent.
			sent := w.Result().Header
			for _, name := range []string{c.limit, "Ratelimit", "Ratelimit-Policy", "X-Message-Id"} {
				if v := sent.Values(name); len(v) != 1 {
					t.Errorf("%s, status %d by %s: %s has %d values %q, want 1", c.dialect, status, how, name, len(v), v)
				}
			}
			return sent
		}
		for _, how := range []string{"WriteHeader", "Write", "ReadFrom", "Flush"} {
			status := http.StatusOK
			if how == "WriteHeader" {
				status = http.StatusAccepted
			}
			hdr := send(status, how)
			if hdr.Get(c.limit) != "100" || !strings.HasPrefix(hdr.Get("RateLimit"), `"default";r=`) ||
				hdr.Get("RateLimit-Policy") != `"default";q=100;w=60` {
				t.Errorf("%s, by %s: a proxied answer carries the upstream's limits, not the key's: %v", c.dialect, how, hdr)
			}
		}
		hdr := send(http.StatusTooManyRequests, "WriteHeader")
		if hdr.Get(c.limit) != "600" || hdr.Get("RateLimit") != `"provider";r=0;t=60` {
			t.Errorf("%s: the upstream's own 429 carries keygate's limits, not the ones that refused it: %v", c.dialect, hdr)
		}
	}
}

// SendGrid's answer to a send it takes carries no X-RateLimit-* (mail/send
// is not limited as its other endpoints are), so keygate's answer to a send
// it passes has none either; its rate_limited on a send has them, as
// SendGrid's 429 does. The contract's RateLimit pair is on every answer.
func TestSendGridsAnswerToASendHasNoXRateLimit(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", Rate: "1/m", Scopes: []ScopeRule{{Scope: "mail.send", Path: "*"}}})
	_, key := issue(t, st, "mail.send")
	body := []byte(`{"personalizations":[{"to":[{"email":"a@example.org"}]}],"from":{"email":"s@example.com"}}`)
	w := serveBody(t, h, okNextReading, key, "POST", "/v3/mail/send", "application/json", body)
	if w.Code != http.StatusAccepted || w.Header().Get("X-RateLimit-Limit") != "" || w.Header().Get("RateLimit") == "" {
		t.Errorf("a send passed: %d, X-RateLimit-Limit %q, RateLimit %q; want none and the key's", w.Code, w.Header().Get("X-RateLimit-Limit"), w.Header().Get("RateLimit"))
	}
	w = serveBody(t, h, okNextReading, key, "POST", "/v3/mail/send", "application/json", body)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("X-RateLimit-Limit") != "1" || w.Header().Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("a send refused for its rate: %d, X-RateLimit-Limit %q, -Remaining %q; want 429, 1, 0", w.Code, w.Header().Get("X-RateLimit-Limit"), w.Header().Get("X-RateLimit-Remaining"))
	}
}

// Only mail/send answers without X-RateLimit-*: SendGrid's other send
// endpoints (a marketing test send, a Single Send's schedule, a legacy
// campaign's) are limited as its other endpoints are, and answer with
// them, so keygate's answer to a send it passes there has them too, a
// POST whose method-override header makes it such a send included.
func TestSendGridsOtherSendsKeepXRateLimit(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", Rate: "5/m", Scopes: []ScopeRule{{Scope: "mail.send", Path: "*"}}})
	_, key := issue(t, st, "mail.send")
	for _, c := range []struct {
		name, method, path, override string
		want                         bool
	}{
		{"mail/send", "POST", "/v3/mail/send", "", false},
		{"a marketing test send", "POST", "/v3/marketing/test/send_email", "", true},
		{"a legacy campaign sent now", "POST", "/v3/campaigns/7/schedules/now", "", true},
		{"a Single Send scheduled by a POST overridden to PUT", "POST", "/v3/marketing/singlesends/abc/schedule", "PUT", true},
	} {
		body := []byte(`{"personalizations":[{"to":[{"email":"a@example.org"}]}],"from":{"email":"s@example.com"}}`)
		r := httptest.NewRequest(c.method, c.path, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+key)
		r.Header.Set("Content-Type", "application/json")
		if c.override != "" {
			r.Header.Set("X-HTTP-Method-Override", c.override)
		}
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, okNextReading); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := w.Header().Get("X-RateLimit-Limit") != ""; w.Code != http.StatusAccepted || got != c.want || w.Header().Get("RateLimit") == "" {
			t.Errorf("%s: %d, X-RateLimit-Limit %q, RateLimit %q; want 202, X-RateLimit-* %v and the key's RateLimit",
				c.name, w.Code, w.Header().Get("X-RateLimit-Limit"), w.Header().Get("RateLimit"), c.want)
		}
	}
}
