package keygate

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// consoleRequest is a request as Caddy hands it to the console: with a
// replacer (auth placeholders set), the original request before
// handle_path stripped prefix, and the listener's address.
func consoleRequest(method, origPath, prefix, remote, local string, vars map[string]any) *http.Request {
	r := httptest.NewRequest(method, "/", nil)
	r.RemoteAddr = remote
	orig := *r
	orig.URL = &url.URL{Path: origPath}
	r.URL.Path = strings.TrimPrefix(origPath, prefix)
	if r.URL.Path == "" {
		r.URL.Path = "/"
	}
	repl := caddy.NewReplacer()
	for k, v := range vars {
		repl.Set(k, v)
	}
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.OriginalRequestCtxKey, orig)
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, &net.TCPAddr{IP: net.ParseIP(local), Port: 443})
	return r.WithContext(ctx)
}

func testConsole(t *testing.T, c *Console) *Console {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := c.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Cleanup(); cancel() })
	return c
}

func TestConsoleSharesTheGatewaysBackend(t *testing.T) {
	uri := "sqlite:" + filepath.Join(t.TempDir(), "keys.db")
	h, _ := testHandler(t, &Handler{Store: uri})
	c := testConsole(t, &Console{Store: uri})
	if c.backend != h.backend {
		t.Fatal("a console and a gateway on one store have separate backends: a revoke would wait for the change-log poll")
	}
}

func TestConsoleNamesThePersonFromTheAuthenticationHandler(t *testing.T) {
	c := testConsole(t, &Console{Store: "sqlite:" + filepath.Join(t.TempDir(), "keys.db"), Admins: []string{"root"}})
	anon := testConsole(t, &Console{Store: c.Store, InsecureAnonymousLoopback: true})
	for _, tc := range []struct {
		name    string
		c       *Console
		vars    map[string]any
		remote  string
		local   string
		header  string
		want    int
		wantWho string
	}{
		{"a basic_auth user", c, map[string]any{"http.auth.user.id": "alice"}, "203.0.113.9:5000", "192.0.2.1", "", 200, "alice"},
		{"an admin", c, map[string]any{"http.auth.user.id": "root"}, "203.0.113.9:5000", "192.0.2.1", "", 200, "admin"},
		{"nobody", c, nil, "203.0.113.9:5000", "192.0.2.1", "", 401, ""},
		{"nobody, even on loopback, without the option", c, nil, "127.0.0.1:5000", "127.0.0.1", "", 401, ""},
		{"anonymous on loopback with the option", anon, nil, "127.0.0.1:5000", "127.0.0.1", "", 200, "anonymous"},
		{"anonymous from another machine", anon, nil, "203.0.113.9:5000", "192.0.2.1", "", 401, ""},
		{"anonymous through a local proxy", anon, nil, "127.0.0.1:5000", "127.0.0.1", "203.0.113.9", 401, ""},
		{"anonymous on ::1", anon, nil, "[::1]:5000", "::1", "", 200, "anonymous"},
		{"anonymous for another name (a DNS rebinding)", anon, nil, "127.0.0.1:5000", "127.0.0.1", "", 401, ""},
		{"anonymous for a name under .localhost", anon, nil, "127.0.0.1:5000", "127.0.0.1", "", 200, "anonymous"},
		{"anonymous for 127.0.0.1", anon, nil, "127.0.0.1:5000", "127.0.0.1", "", 200, "anonymous"},
		{"anonymous for [::1]", anon, nil, "[::1]:5000", "::1", "", 200, "anonymous"},
		{"an API key let through by keygate on the same route", c,
			map[string]any{"http.auth.user.id": "key_abc", "keygate.key.id": "key_abc"}, "203.0.113.9:5000", "192.0.2.1", "", 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := consoleRequest("GET", "/console/", "/console", tc.remote, tc.local, tc.vars)
			r.Host = map[string]string{
				"anonymous for another name (a DNS rebinding)": "attacker.example:2080",
				"anonymous for a name under .localhost":        "keys.localhost:2080",
				"anonymous for 127.0.0.1":                      "127.0.0.1:2080",
				"anonymous for [::1]":                          "[::1]:2080",
			}[tc.name]
			if r.Host == "" {
				r.Host = "localhost:2080"
			}
			if tc.header != "" {
				r.Header.Set("X-Forwarded-For", tc.header)
			}
			w := httptest.NewRecorder()
			if err := tc.c.ServeHTTP(w, r, nil); err != nil {
				t.Fatal(err)
			}
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d", w.Code, tc.want)
			}
			if tc.wantWho != "" && !strings.Contains(w.Body.String(), tc.wantWho) {
				t.Errorf("the page does not name %q", tc.wantWho)
			}
			if w.Code == 200 && !strings.Contains(w.Body.String(), `href="/console/new"`) {
				t.Errorf("links do not keep the /console prefix")
			}
		})
	}
}

func TestConsoleMountIsThePrefixThatWasStripped(t *testing.T) {
	for _, tc := range []struct {
		orig, prefix, want string
	}{
		{"/console/keys/key_abc", "/console", "/console"},
		{"/console/", "/console", "/console"},
		{"/console", "/console", "/console"},
		{"/admin/keys/new", "/admin/keys", "/admin/keys"},
		{"/keys/key_abc", "", ""},
		{"//evil.example/keys/x", "//evil.example", ""}, // a link must never leave the site
		{"/a b/keys", "/a b", ""},
	} {
		r := consoleRequest("GET", tc.orig, tc.prefix, "127.0.0.1:1", "127.0.0.1", nil)
		if got := mountOf(r); got != tc.want {
			t.Errorf("mountOf(%q stripped of %q) = %q, want %q", tc.orig, tc.prefix, got, tc.want)
		}
	}
}

func TestConsoleExplainsDenialCodesFromTheOneTable(t *testing.T) {
	if got := denialMessage("revoked_key"); got != codes[RevokedKey].message {
		t.Errorf("revoked_key: %q", got)
	}
	if got := denialMessage("made_up"); got != "" {
		t.Errorf("an unknown code: %q", got)
	}
}

// The console believes a proxy that ended TLS (X-Forwarded-Proto: https)
// only when Caddy found it among the server's trusted_proxies, as Caddy
// believes its X-Forwarded-For: any client could send the header.
func TestTheConsoleBelievesXForwardedProtoOnlyFromATrustedProxy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tls     bool
		trusted bool
		proto   string
		want    bool
	}{
		{"TLS to Caddy", true, false, "", true},
		{"plain HTTP", false, false, "", false},
		{"a trusted proxy that ended TLS", false, true, "https", true},
		{"a trusted proxy, in other case and spacing", false, true, " HTTPS ", true},
		{"a trusted proxy over plain HTTP", false, true, "http", false},
		{"a client claiming HTTPS", false, false, "https", false},
	} {
		r := consoleRequest(http.MethodGet, "/", "", "203.0.113.9:5000", "127.0.0.1", nil)
		// As Caddy's server sets it for every request.
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.TrustedProxyVarKey: tc.trusted}))
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if tc.proto != "" {
			r.Header.Set("X-Forwarded-Proto", tc.proto)
		}
		if got := reachedOverHTTPS(r); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
