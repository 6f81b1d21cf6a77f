package keygate

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// serverWithErrorRoutes is a Caddy server whose handle_errors routes are
// the given handlers (JSON), provisioned as Caddy would.
func serverWithErrorRoutes(t *testing.T, handlers ...string) *caddyhttp.Server {
	t.Helper()
	srv := &caddyhttp.Server{}
	if len(handlers) == 0 {
		return srv
	}
	var raw []json.RawMessage
	for _, h := range handlers {
		raw = append(raw, json.RawMessage(h))
	}
	srv.Errors = &caddyhttp.HTTPErrorConfig{Routes: caddyhttp.RouteList{{HandlersRaw: raw}}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := srv.Errors.Routes.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestAnErrorAfterKeygateIsAnsweredWithoutCaddysErrorLog: Caddy's error log
// writes the request headers as the client sent them, so keygate answers an
// error of the handlers after it as Caddy's server would and logs it itself,
// without headers.
func TestAnErrorAfterKeygateIsAnsweredWithoutCaddysErrorLog(t *testing.T) {
	failWith := func(err error) caddyhttp.Handler {
		return caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return err })
	}
	refused := caddyhttp.Error(http.StatusBadGateway, errors.New("dial tcp 192.0.2.1:443: connect: connection refused"))
	cases := []struct {
		name         string
		next         caddyhttp.Handler
		errorRoutes  []string
		inErrorRoute bool
		status       int
		body         string
		level        zapcore.Level
		msg          string
	}{
		{"without error routes: the error's status, logged at ERROR", failWith(refused), nil, false,
			502, "", zap.ErrorLevel, "dial tcp 192.0.2.1:443: connect: connection refused"},
		{"a client error is logged at DEBUG, as Caddy does", failWith(caddyhttp.Error(http.StatusNotFound, errors.New("no such template"))), nil, false,
			404, "", zap.DebugLevel, "no such template"},
		{"an error that is not a HandlerError is a 500", failWith(errors.New("boom")), nil, false,
			500, "", zap.ErrorLevel, "boom"},
		{"handle_errors routes answer it, logged at DEBUG", failWith(refused),
			[]string{`{"handler":"static_response","status_code":"{http.error.status_code}","body":"trouble: {http.error.status_code}"}`}, false,
			502, "trouble: 502", zap.DebugLevel, "dial tcp 192.0.2.1:443: connect: connection refused"},
		{"handle_errors routes that match nothing end with the error's status", failWith(refused),
			[]string{`{"handler":"vars","seen":true}`}, false,
			502, "", zap.DebugLevel, "dial tcp 192.0.2.1:443: connect: connection refused"},
		{"a failing error route: the first error's status, logged at ERROR", failWith(refused),
			[]string{`{"handler":"error","error":"the error page is broken","status_code":500}`}, false,
			502, "", zap.ErrorLevel, "error handling handler error"},
		{"inside handle_errors the error routes do not run again", failWith(refused),
			[]string{`{"handler":"static_response","body":"must not run"}`}, true,
			502, "", zap.ErrorLevel, "dial tcp 192.0.2.1:443: connect: connection refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, st := testHandler(t, &Handler{KeyHeaders: []string{"X-Api-Key"}})
			core, logs := observer.New(zap.DebugLevel)
			h.logger = zap.New(core)
			rec, key := issue(t, st, "*")

			// (A key in the URL is refused before anything else runs:
			// TestTakeKeyNamesWhereTheAccessLogWouldWriteAKey.)
			r := httptest.NewRequest("POST", "/v3/mail/send?x=1", nil)
			r.Header.Set("X-Api-Key", key)
			ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
			ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
			ctx = context.WithValue(ctx, caddyhttp.ServerCtxKey, serverWithErrorRoutes(t, tc.errorRoutes...))
			if tc.inErrorRoute {
				ctx = context.WithValue(ctx, caddyhttp.ErrorCtxKey, errors.New("an earlier error"))
			}
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, r.WithContext(ctx), tc.next); err != nil {
				t.Fatalf("ServeHTTP returned %v: Caddy would log the request headers with it", err)
			}
			if w.Code != tc.status || w.Body.String() != tc.body {
				t.Errorf("answer %d %q, want %d %q", w.Code, w.Body, tc.status, tc.body)
			}
			var found bool
			for _, e := range logs.All() {
				line, _ := json.Marshal(e.ContextMap())
				if strings.Contains(string(line), key) || strings.Contains(string(line), "X-Api-Key") {
					t.Errorf("log line %q carries the key or the request headers: %s", e.Message, line)
				}
				if !strings.Contains(string(line), "/v3/mail/send") {
					t.Errorf("log line %q lacks the request's path: %s", e.Message, line)
				}
				if e.Message != tc.msg {
					continue
				}
				found = true
				if e.Level != tc.level {
					t.Errorf("logged at %s, want %s", e.Level, tc.level)
				}
				m := e.ContextMap()
				if first, ok := m["first_error"].(map[string]any); ok {
					m = first
				}
				if m["key_id"] != rec.ID || m["status"] != int64(tc.status) {
					t.Errorf("log line lacks the key id or status: %s", line)
				}
			}
			if !found {
				t.Errorf("no log line %q among %d", tc.msg, logs.Len())
			}
		})
	}
}

// A request left out of Caddy's access log for a key in a header the route
// does not read is logged by keygate at info whatever its decision, a
// flood's auth_rate_limited and a whoami included: that line is all the logs
// have of it.
func TestARequestLeftOutOfTheAccessLogIsLoggedAtInfo(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", Whoami: "/whoami", FailedAuthLimit: "1/m",
		Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/mail/send"}}})
	core, logs := observer.New(zap.DebugLevel)
	h.logger = zap.New(core)
	_, key := issue(t, st, "mail.send")
	junk := "kg_live_" + strings.Repeat("x", 49) // shaped like a key, no key
	for _, c := range []struct {
		path   string
		hdr    []string
		status int
	}{
		{"/whoami", []string{"Authorization", "Bearer " + key, "X-Api-Key", junk}, 200},
		{"/v3/mail/send", []string{"Authorization", "Bearer " + junk[:len(junk)-1] + "1", "X-Api-Key", junk}, 401},
		{"/v3/mail/send", []string{"Authorization", "Bearer " + junk[:len(junk)-1] + "2", "X-Api-Key", junk}, 429},
	} {
		logs.TakeAll()
		w, _ := serveHeaders(t, h, "GET", c.path, c.hdr...)
		if w.Code != c.status {
			t.Fatalf("%s: %d %s, want %d", c.path, w.Code, w.Body, c.status)
		}
		var found []zapcore.Level
		for _, e := range logs.FilterMessage("keygate request").All() {
			if e.ContextMap()["access_log_skipped"] == "a key in X-Api-Key" {
				found = append(found, e.Level)
			}
		}
		if len(found) != 1 || found[0] != zap.InfoLevel {
			t.Errorf("%s, %d: keygate's lines for it at %v; want one at info", c.path, c.status, found)
		}
	}
}

// keygate's line for a request names the path the client sent, as Caddy's
// access log does, not what a handle_path before keygate left of it.
func TestTheUsageLogNamesThePathAsSent(t *testing.T) {
	h, st := testHandler(t, &Handler{Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/mail/send"}}})
	core, logs := observer.New(zap.DebugLevel)
	h.logger = zap.New(core)
	_, key := issue(t, st, "mail.send")
	r := httptest.NewRequest("POST", "/api/v3/mail/send", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	orig, u := *r, *r.URL // as Caddy keeps it: a copy, with its own URL
	orig.URL = &u
	ctx := context.WithValue(r.Context(), caddyhttp.OriginalRequestCtxKey, orig)
	r = r.WithContext(context.WithValue(ctx, caddy.ReplacerCtxKey, caddy.NewReplacer()))
	r.URL.Path = "/v3/mail/send" // handle_path /api/*
	if err := h.ServeHTTP(httptest.NewRecorder(), r, okNext); err != nil {
		t.Fatal(err)
	}
	lines := logs.FilterMessage("keygate request").All()
	if len(lines) != 1 || lines[0].ContextMap()["path"] != "/api/v3/mail/send" || lines[0].ContextMap()["scope"] != "mail.send" {
		t.Errorf("keygate's lines: %v", lines)
	}
}

// A whoami is a use of the key like any other: counted, its last use
// recorded and a line logged, so a leaked key probed there shows in its
// usage. It takes no token from the key's rate.
func TestAWhoamiCountsAsTheKeysUse(t *testing.T) {
	h, st := testHandler(t, &Handler{Whoami: "/whoami", Rate: "1/m", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	core, logs := observer.New(zap.DebugLevel)
	h.logger = zap.New(core)
	rec, key := issue(t, st, "mail.send")
	for range 3 {
		if w := serve(h, "GET", "/whoami", key); w.Code != http.StatusOK {
			t.Fatalf("whoami: %d %s", w.Code, w.Body)
		}
	}
	if w := serve(h, "POST", "/send", key); w.Code != http.StatusAccepted {
		t.Errorf("a send after three whoamis: %d %s; whoami took the key's rate", w.Code, w.Body)
	}
	h.backend.flushUsage()
	u, err := st.Usage(context.Background(), rec.ID, time.Now().Add(-time.Hour))
	if err != nil || u.Allowed != 4 || u.LastUsedAt == nil {
		t.Errorf("usage after three whoamis and a send: %+v %v, want 4 allowed", u, err)
	}
	n := 0
	for _, e := range logs.FilterMessage("keygate request").All() {
		if m := e.ContextMap(); m["path"] == "/whoami" && m["decision"] == "allowed" && m["key_id"] == rec.ID {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d log lines for three whoamis", n)
	}
}
