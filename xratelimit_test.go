package keygate

import (
	"net/http"
	"strconv"
	"testing"
	"time"
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
