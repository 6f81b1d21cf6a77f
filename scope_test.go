package keygate

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/caddy-keygate/mailapi"
)

func scopeRequest(method, path string) *http.Request {
	r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}}
	return r.WithContext(context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
}

func TestRequiredScope(t *testing.T) {
	rules := []ScopeRule{
		{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"},
		{Scope: "templates.read", Method: "GET", Path: "/v3/templates*"},
		{Scope: "mailgun.send", Path: "/v3/*/messages"},
		{Scope: "events.read", Path: "*/events"},
		{Scope: "stats.read", Path: "*stats*"},
		{Scope: "escaped", Path: "/v3/a%2Fb"},
		{Scope: "any.post", Method: "POST", Path: "*"},
	}
	for i := range rules {
		if err := rules[i].provision(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, method, path, want string
	}{
		{"an exact path", "POST", "/v3/mail/send", "mail.send"},
		{"an exact path is case-insensitive, as Caddy's", "POST", "/V3/Mail/Send", "mail.send"},
		{"an exact path is matched cleaned, as Caddy's", "POST", "/v3//mail/./x/../send", "mail.send"},
		{"the method must match", "GET", "/v3/mail/send", ""},
		{"a trailing slash is another path", "GET", "/v3/mail/send/", ""},
		{"a prefix pattern", "GET", "/v3/templates/42", "templates.read"},
		{"a prefix pattern on a dirty path", "GET", "/x/../v3/templates/42", "templates.read"},
		{"a glob in the middle", "POST", "/v3/mg.example.com/messages", "mailgun.send"},
		{"a glob stands for one segment, not two", "GET", "/v3/mg.example.com/x/messages", ""},
		{"slashes are merged before a glob is matched, as Caddy's", "GET", "/v3//messages", ""},
		{"a suffix pattern", "GET", "/v3/mg.example.com/events", "events.read"},
		{"a substring pattern", "GET", "/v3/stats/global", "stats.read"},
		{"an escaped pattern compares escaped paths", "GET", "/v3/a/b", ""},
		{"the first matching rule wins", "POST", "/v3/stats", "stats.read"},
		{"a catch-all rule", "POST", "/anything", "any.post"},
		{"no rule matches", "DELETE", "/v3/keys", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := requiredScope(rules, scopeRequest(c.method, c.path)); got != c.want {
				t.Errorf("requiredScope(%s %s) = %q, want %q", c.method, c.path, got, c.want)
			}
		})
	}
}

func TestPlainPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/v3/mail/send":   true,
		"/":               true,
		"/v3/mail/send/":  true,
		"/a/.hidden/b":    true,
		"/a/..b/c":        true,
		"/a/b.":           true,
		"":                false,
		"v3/mail/send":    false,
		"/V3/mail/send":   false,
		"/v3//mail":       false,
		"/v3/./mail":      false,
		"/v3/../mail":     false,
		"/v3/.":           false,
		"/v3/..":          false,
		"/v3/caf\xc3\xa9": false,
	} {
		if got := plainPath(path); got != want {
			t.Errorf("plainPath(%q) = %v, want %v", path, got, want)
		}
	}
}

// FuzzScopeMatchesCaddy proves the compiled fast path decides exactly as
// Caddy's path matcher would, for any pattern and request path.
func FuzzScopeMatchesCaddy(f *testing.F) {
	for _, p := range []string{"/v3/mail/send", "/v3/templates*", "*/events", "*stats*", "/v3/*/messages", "*", "**", "/a?c", "/a[b]c", "/a%2fb", "//x*", "/{env.X}*",
		"/v3/*/*/x", "*/a/*/b", "/v3/*", "/v3/*x/y", "/*"} {
		for _, path := range []string{"/v3/mail/send", "/V3/templates/1", "/v3//events", "/a/../stats", "/abc", "/a%2fb", "", "/x/./y/",
			"/v3/mg.example.com/messages", "/v3/a/b/messages", "/v3/messages", "/v3/a/b/x", "/q/a/z/b", "/v3/", "/v3/ax/y"} {
			f.Add(p, path)
		}
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		rule := ScopeRule{Scope: "s", Path: pattern}
		if pattern == "" || rule.provision() != nil {
			return
		}
		r := scopeRequest("GET", path)
		want := rule.match.Match(r)
		if got := rule.matches(r, plainPath(path)); got != want {
			t.Fatalf("pattern %q, path %q: fast path says %v, Caddy's matcher %v", pattern, path, got, want)
		}
	})
}

func TestUninspectedPostRoutesAreFound(t *testing.T) {
	sendgrid, _ := mailapi.Lookup("sendgrid")
	rules := []ScopeRule{
		{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}, // the send endpoint
		{Scope: "mail.send", Method: "post", Path: "/send"},         // a typo for it
		{Scope: "mail.send", Method: "POST", Path: "/V3/Mail/Send"}, // the endpoint, other case
		{Scope: "templates.write", Method: "POST", Path: "/v3/templates*"},
		{Scope: "mail.read", Method: "GET", Path: "/send"},
		{Scope: "mail.any", Path: "/other"},
	}
	for i := range rules {
		if err := rules[i].provision(); err != nil {
			t.Fatal(err)
		}
	}
	got := uninspectedPosts(rules, sendgrid)
	if len(got) != 1 || got[0].Path != "/send" {
		t.Errorf("uninspected POST routes = %+v, want only /send", got)
	}

	// On an SES route, a line naming a v1 action is no mistyped send route.
	ses, _ := mailapi.Lookup("ses")
	rules = []ScopeRule{
		{Scope: "ses.read", Method: "POST", Path: "/GetSendQuota"},
		{Scope: "mail.send", Method: "POST", Path: "/v2/email/outbound-email"}, // a typo
	}
	for i := range rules {
		if err := rules[i].provision(); err != nil {
			t.Fatal(err)
		}
	}
	got = uninspectedPosts(rules, ses)
	if len(got) != 1 || got[0].Path != "/v2/email/outbound-email" {
		t.Errorf("uninspected POST routes on SES = %+v, want only /v2/email/outbound-email", got)
	}
}

// A request to a send endpoint is scoped as the endpoint keygate reads it
// as, so an exact line naming the endpoint otherwise (the trailing slash
// Django-Anymail's Postmark backend writes) would never decide: it is
// refused at load, saying how to write it.
func TestAScopeLineNamingASendEndpointOtherwiseIsRefused(t *testing.T) {
	postmark, _ := mailapi.Lookup("postmark")
	for _, tt := range []struct {
		path, refused string
	}{
		{"/email/withTemplate", ""},
		{"/Email/WithTemplate", ""},
		{"/email*", ""},
		{"/email/withTemplate/*", ""},
		{"/templates/", ""},
		{"/email/withTemplate/", "write the line with /email/withTemplate"},
		{"/email;x", "write the line with /email"},
		{"/email.json", "write the line with /email"},
	} {
		rules := []ScopeRule{{Scope: "mail.send", Method: "POST", Path: tt.path}}
		if err := rules[0].provision(); err != nil {
			t.Fatal(err)
		}
		err := unreadScopePaths(rules, postmark)
		if tt.refused == "" && err != nil || tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused)) {
			t.Errorf("%s: %v, want %q", tt.path, err, tt.refused)
		}
	}
}

// BenchmarkScopeMailgunRoute matches Mailgun's send route, the glob
// "/v3/*/messages", segment by segment ("keygate") and with Caddy's
// matcher, which path.Match's backtracking makes cost ~1 µs ("caddy").
func BenchmarkScopeMailgunRoute(b *testing.B) {
	r := scopeRequest("POST", "/v3/sandbox0123456789abcdef.mailgun.org/messages")
	for _, viaMatcher := range []bool{false, true} {
		rules := []ScopeRule{{Scope: "mail.send", Method: "POST", Path: "/v3/*/messages"}}
		if err := rules[0].provision(); err != nil {
			b.Fatal(err)
		}
		name := "keygate"
		if viaMatcher {
			rules[0].kind, name = viaCaddy, "caddy"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if requiredScope(rules, r) != "mail.send" {
					b.Fatal("no match")
				}
			}
		})
	}
}

// A POST that asks the upstream to handle it as another method (web
// frameworks honour X-HTTP-Method-Override and its kin on POST) needs the
// scopes of both: an upstream that honours the header does that method, one
// that ignores it (every email provider) does the POST. So a key cannot
// delete with a scope to create, nor create with a scope to read. Headers
// that name two methods are refused.
func TestMethodOverridesNeedTheScopesOfBothMethods(t *testing.T) {
	h, st := testHandler(t, &Handler{Scopes: []ScopeRule{
		{Scope: "templates.create", Method: "POST", Path: "/v3/templates*"},
		{Scope: "templates.delete", Method: "DELETE", Path: "/v3/templates/*"},
		{Scope: "templates.read", Method: "GET", Path: "/v3/templates*"},
	}})
	_, create := issue(t, st, "templates.create")
	_, read := issue(t, st, "templates.read")
	_, del := issue(t, st, "templates.delete")
	_, both := issue(t, st, "templates.create", "templates.delete")
	for _, c := range []struct {
		what, key string
		hdr       []string
		status    int
	}{
		{"a plain POST", create, nil, 202},
		{"POST named again", create, []string{"X-HTTP-Method-Override", "post"}, 202},
		{"an override to DELETE, with a scope to create", create, []string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"X-HTTP-Method to DELETE, with a scope to create", create, []string{"X-HTTP-Method", "delete"}, 403},
		{"X-Method-Override to DELETE, with a scope to create", create, []string{"X-Method-Override", " DELETE "}, 403},
		{"an override to DELETE, with a scope to delete only", del, []string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"an override to GET, with a scope to read only", read, []string{"X-HTTP-Method-Override", "GET"}, 403},
		{"an override to DELETE, with the scopes of both", both, []string{"X-HTTP-Method-Override", "DELETE"}, 202},
		{"the same method twice", both, []string{"X-HTTP-Method-Override", "DELETE", "X-HTTP-Method", "delete"}, 202},
		{"two methods", both, []string{"X-HTTP-Method-Override", "DELETE", "X-HTTP-Method", "PUT"}, 403},
		{"two methods in one header", both, []string{"X-HTTP-Method-Override", "DELETE", "X-HTTP-Method-Override", "PATCH"}, 403},
	} {
		w, _ := serveHeaders(t, h, "POST", "/v3/templates/d-1", append([]string{"Authorization", "Bearer " + c.key}, c.hdr...)...)
		if w.Code != c.status {
			t.Errorf("%s: %d %s, want %d", c.what, w.Code, w.Body, c.status)
		}
		if w.Code == 403 && decodeError(t, w).Error.Code != "insufficient_scope" {
			t.Errorf("%s: %s, want insufficient_scope", c.what, w.Body)
		}
	}
	// A GET's override headers mean nothing to those frameworks.
	if w, _ := serveHeaders(t, h, "GET", "/v3/templates/d-1", "Authorization", "Bearer "+read, "X-HTTP-Method-Override", "DELETE"); w.Code != 202 {
		t.Errorf("a GET with an override: %d %s, want 202 (scoped as the GET it is)", w.Code, w.Body)
	}
}

// An override header is read as the frameworks read it, so a method that
// one of them does is never scoped as a method no line names (which a later
// line without a method then grants): Express's method-override does the
// first comma-separated value, trimmed as JavaScript trims (a 0xA0 byte
// too, as node reads header bytes as Latin-1).
func TestMethodOverridesAreReadAsFrameworksReadThem(t *testing.T) {
	h, st := testHandler(t, &Handler{Scopes: []ScopeRule{
		{Scope: "templates.delete", Method: "DELETE", Path: "/v3/templates/*"},
		{Scope: "templates.write", Path: "/v3/templates/*"},
	}})
	_, write := issue(t, st, "templates.write")
	_, both := issue(t, st, "templates.write", "templates.delete")
	for _, c := range []struct {
		what, key, header, override string
		status                      int
	}{
		{"DELETE", write, "X-HTTP-Method-Override", "DELETE", 403},
		{"DELETE and another method", write, "X-HTTP-Method-Override", "DELETE, PATCH", 403},
		{"DELETE and a comma", write, "X-HTTP-Method-Override", "DELETE,", 403},
		{"DELETE and a no-break space", write, "X-HTTP-Method-Override", "DELETE\xa0", 403},
		{"DELETE in no-break spaces (UTF-8)", write, "X-HTTP-Method-Override", "\u00a0DELETE\u3000", 403},
		{"DELETE, the header's name with underscores (Rack, PHP: HTTP_X_HTTP_METHOD_OVERRIDE)", write, "X_HTTP_METHOD_OVERRIDE", "DELETE", 403},
		{"DELETE, X-HTTP-Method with underscores", write, "x_http_method", "DELETE", 403},
		{"DELETE twice in one value, with the scopes of both", both, "X-HTTP-Method-Override", "delete, DELETE", 202},
		{"DELETE and a comma, with the scopes of both", both, "X-HTTP-Method-Override", "DELETE,", 202},
		{"DELETE with underscores, with the scopes of both", both, "X_Method_Override", "DELETE", 202},
		{"DELETE and another method, with the scopes of both", both, "X-HTTP-Method-Override", "DELETE,PATCH", 403},
		{"a header only like an override's name", write, "X-HTTP-Method-Overrides", "DELETE", 202},
	} {
		w, _ := serveHeaders(t, h, "POST", "/v3/templates/d-1", "Authorization", "Bearer "+c.key, c.header, c.override)
		if w.Code != c.status {
			t.Errorf("%s (%s: %q): %d %s, want %d", c.what, c.header, c.override, w.Code, w.Body, c.status)
		}
	}
}

// The _method parameter of a POST's query string is an override as the
// headers are (Symfony, Laravel, Express's methodOverride('_method')), with
// its name read as PHP reads names.
func TestAMethodParameterIsAnOverride(t *testing.T) {
	for _, c := range []struct {
		query, want string
		single      bool
	}{
		{"", "", true},
		{"_method=DELETE", "DELETE", true},
		{"a=1&_method=delete", "DELETE", true},
		{"a=1;_method=PUT", "PUT", true},
		{"%5Fmethod=DELETE", "DELETE", true},
		{"+_method=DELETE", "DELETE", true},
		{"+method=DELETE", "", true},
		{".method=DELETE", "DELETE", true},
		{"[method=DELETE", "DELETE", true},
		{"_method=%20DELETE%20", "DELETE", true},
		{"_method=POST", "", true},
		{"_method=DELETE&_method=PUT", "", false},
		{"_method=DELETE,PUT", "", false},
		{"_methods=DELETE&x_method=PUT&method=PATCH", "", true},
	} {
		r := httptest.NewRequest("POST", "/v3/templates/d-1?"+c.query, nil)
		if m, single := overriddenMethod(r); m != c.want || single != c.single {
			t.Errorf("POST ?%s: %q, %v; want %q, %v", c.query, m, single, c.want, c.single)
		}
	}
	r := httptest.NewRequest("POST", "/v3/templates/d-1?_method=DELETE", nil)
	r.Header.Set("X-HTTP-Method-Override", "PUT")
	if _, single := overriddenMethod(r); single {
		t.Errorf("a header and the parameter naming two methods: read as one")
	}
	r = httptest.NewRequest("PUT", "/v3/templates/d-1?_method=DELETE", nil)
	if m, _ := overriddenMethod(r); m != "" {
		t.Errorf("a PUT's _method: read as %q, which frameworks do on a POST only", m)
	}
}

// frameworkOverrides model how the web frameworks an upstream may be built
// on read a POST's method-override header name: the method each does, ""
// for the POST itself. Values are as Go's server hands them on (no control
// bytes but tab, no spaces around).
var frameworkOverrides = []struct {
	name string
	read func(h http.Header, name string) string
}{
	// Express's and Koa's method-override: node joins a repeated header's
	// values with ", "; the first value, trimmed by JavaScript's trim on
	// the Latin-1 string node makes of the bytes, upper-cased.
	{"express", func(h http.Header, name string) string {
		v := strings.Join(h[name], ", ")
		if i := strings.IndexByte(v, ','); i >= 0 {
			v = v[:i]
		}
		v = strings.TrimFunc(latin1(v), func(r rune) bool {
			return r == ' ' || r >= '\t' && r <= '\r' || r == 0xa0 || r == 0xfeff
		})
		return asciiUpper(v) // node's methods are ASCII; "ſ" lower-cased is no method
	}},
	// Symfony (and Laravel on it): the value upper-cased byte by byte;
	// anything but letters is refused.
	{"symfony", func(h http.Header, name string) string {
		v := []byte(h.Get(name))
		for i, c := range v {
			if c >= 'a' && c <= 'z' {
				v[i] -= 'a' - 'A'
			}
		}
		for _, c := range v {
			if c < 'A' || c > 'Z' {
				return ""
			}
		}
		return string(v)
	}},
	// Rack (Rails) and PHP (Symfony, Laravel) read headers as CGI
	// variables, HTTP_X_HTTP_METHOD_OVERRIDE, which X_HTTP_METHOD_OVERRIDE
	// also becomes: any such header may be the one read, upper-cased;
	// anything but letters is no method.
	{"cgi", func(h http.Header, name string) string {
		cgi := func(n string) string { return strings.ToUpper(strings.ReplaceAll(n, "-", "_")) }
		for k, vs := range h {
			if cgi(k) != cgi(name) || k == name {
				continue // the header itself is the other models'
			}
			for _, v := range vs {
				// Ruby's upcase is Unicode's ("ſ" is "S"), but only
				// ASCII names are methods to Rack.
				if v = asciiUpper(v); v != "" && !strings.ContainsFunc(v, func(r rune) bool { return r < 'A' || r > 'Z' }) {
					return v
				}
			}
		}
		return ""
	}},
	// ASP.NET Core's HttpMethodOverrideMiddleware: the values joined with
	// ",", as the method (matched without regard to case; Kestrel takes
	// header values as ASCII).
	{"aspnet", func(h http.Header, name string) string {
		return asciiUpper(strings.Join(h[name], ","))
	}},
}

// overrideSpellings are the override headers' names as a client may
// spell them: Go canonicalizes each, X_HTTP_METHOD_OVERRIDE to
// X_http_method_override, a name of its own.
var overrideSpellings = []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "x-http-method-override",
	"X_HTTP_METHOD_OVERRIDE", "X_HTTP_METHOD", "X_METHOD_OVERRIDE", "X-HTTP-Method-Overrides"}

// asciiUpper is s upper-cased if it is ASCII, else "" (no method).
func asciiUpper(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r > 0x7f }) {
		return ""
	}
	return strings.ToUpper(s)
}

func latin1(s string) string {
	r := make([]rune, len(s))
	for i := range len(s) {
		r[i] = rune(s[i])
	}
	return string(r)
}

// FuzzOverriddenMethod proves that whatever method a framework does for a
// POST's override headers, keygate scopes the request as that method too,
// or refuses it.
func FuzzOverriddenMethod(f *testing.F) {
	for _, c := range [][3]string{
		{"PUT", "", ""}, {"delete", "DELETE", ""}, {"PUT, DELETE", "", ""}, {"DELETE,", "", ""}, {",DELETE", "", ""},
		{"DELETE\xa0", "", ""}, {"\u00a0DELETE", "", ""}, {"DELETE\ufeff", "", ""}, {"PATCH", "patch", "PATCH"}, {"POST", "GET", ""},
		{"PUT", "PUT\tX", ""}, {"pu\u017ft", "", ""}, {"M-SEARCH", "", ""}, {"DELETE", "", "PUT"},
	} {
		f.Add(c[0], c[1], c[2], uint8(0b100100))
		f.Add(c[0], c[1], c[2], uint8(0))
	}
	f.Add("DELETE", "", "", uint8(0b01000000)) // X_HTTP_METHOD_OVERRIDE
	f.Add("\u017f", "", "", uint8(0))          // ſ, which Go upper-cases to S
	f.Add("\u017f", "", "", uint8('Q'))        // in X_HTTP_METHOD: Ruby upper-cases it to S too
	f.Fuzz(func(t *testing.T, a, b, c string, names uint8) {
		r := httptest.NewRequest("POST", "/", nil)
		for i, v := range []string{a, b, c} {
			if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
				continue // refused by Go's server
			}
			name := overrideSpellings[int(names>>(2*i)&3)+4*int(names>>(6+i%2)&1)]
			r.Header.Add(name, strings.Trim(v, " \t"))
		}
		m, single := overriddenMethod(r)
		for _, name := range methodOverrides {
			for _, fw := range frameworkOverrides {
				did := fw.read(r.Header, name)
				if did == "" || did == "POST" || strings.ContainsFunc(did, func(r rune) bool { return r > 0x7f || !tokenByte(byte(r)) }) {
					continue // the POST, or a method no route has
				}
				if single && m != did {
					t.Fatalf("%s: %q; %s does %s, keygate scopes it as %q", name, r.Header[name], fw.name, did, m)
				}
			}
		}
	})
}

// A scope line that an earlier line covers never decides: refused at load,
// naming both (the Caddyfile's line: TestCaddyfileNamesAScopeLineThatNeverDecides).
func TestAScopeLineThatNeverDecidesIsRefused(t *testing.T) {
	for _, tc := range []struct {
		first, then string // "<scope> [<METHOD>] <path>"
		shadowed    bool
	}{
		{"templates.read /v3*", "mail.send POST /v3/mail/send", true},
		{"all *", "mail.send POST /v3/mail/send", true},
		{"all POST *", "mail.send /v3/mail/send", false}, // a GET still reaches it
		{"mail.send POST /v3/mail/send", "mail.send POST /v3/mail/send", true},
		{"mail.send POST /v3/mail/send", "mail.read GET /v3/mail/send", false},
		{"mail.send /v3/mail/send", "mail.read GET /V3/Mail/Send", true},
		{"templates.read /v3/templates*", "templates.write POST /v3/templates/x", true},
		{"templates.read /v3/templates/x*", "templates.write POST /v3/templates*", false},
		{"mg.send POST /v3/*/messages", "mg.send POST /v3/example.com/messages", true},
		{"mg.send POST /v3/*/messages", "mg.mime POST /v3/*/messages.mime", false},
		{"events.read /v3/*", "mg.send POST /v3/*/messages", true},
		{"events.read /v4/*", "mg.send POST /v3/*/messages", false},
		{"x.read *.json", "y.read /v1/list.json", true},
		{"x.read *.json", "y.read *list.json", true},
		{"x.read *.json", "y.read /v1/*", false},
		{"x.read */mail/*", "y.read /v3/mail/send", true},
		{"x.read */mail/*", "y.read /v3/mail/*", true},
		{"x.read */mail/*", "y.read */mail/batch*", true},
		{"x.read */mail/*", "y.read /v3/*", false},
		{"x.read /v3/mail/send", "y.read /v3/mail/send*", false},
		{"mg.send POST /v3/*/messages", "mg.other POST /v3/*/messages", true},
		{"x.read */messages", "mg.send POST /v3/*/messages", true},
		{"x.read */messages", "mg.mime POST /v3/*/messages.mime", false},
		{"all /*", "x.read *.json", true},
		{"all **", "mg.send POST /v3/*/messages", true},
		{"x.read */v3/*", "mg.send POST /v3/*/messages", true},
		{"x.read */mail/*", "mg.send POST /v3/*/messages", false},
		{"x.read /v3/{env.X}", "y.read /v3/{env.X}", true},
		{"x.read /v3/{env.X}", "y.read /v3/{env.Y}", false},
		{"x.read /v3/mail/send", "y.read /v3/{env.X}", false},
	} {
		rule := func(line string) ScopeRule {
			f := strings.Fields(line)
			if len(f) == 2 {
				return ScopeRule{Scope: f[0], Path: f[1]}
			}
			return ScopeRule{Scope: f[0], Method: f[1], Path: f[2]}
		}
		a, b := rule(tc.first), rule(tc.then)
		if err := errors.Join(a.provision(), b.provision()); err != nil {
			t.Fatal(err)
		}
		if got := a.shadows(&b); got != tc.shadowed {
			t.Errorf("%q before %q: shadows %v, want %v", tc.first, tc.then, got, tc.shadowed)
		}
	}

	want := "scope mail.send POST /v3/mail/send never decides: scope templates.read /v3*, before it, matches every request it does"
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Store: "sqlite:" + filepath.Join(t.TempDir(), "keys.db"),
		Scopes: []ScopeRule{{Scope: "templates.read", Path: "/v3*"}, {Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}}}
	if err := h.Provision(ctx); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("JSON: %v, want %q", err, want)
	}
	h.Cleanup()
}

// A whoami path that is a route's own would answer its requests with the
// key's record and 200: an SDK's send would seem to have gone.
func TestAWhoamiOnARoutesPathIsRefused(t *testing.T) {
	for _, tc := range []struct {
		h    Handler
		want string // "" = loads
	}{
		{Handler{Whoami: "/v3/mail/send", Scopes: []ScopeRule{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}}},
			"whoami /v3/mail/send is the path of scope mail.send POST /v3/mail/send"},
		{Handler{Whoami: "/v3/mail/send", MailAPI: "sendgrid", Scopes: []ScopeRule{{Scope: "all", Path: "*"}}},
			"whoami /v3/mail/send is a path mail_api sendgrid sends mail at"},
		{Handler{Whoami: "/email/batch", MailAPI: "postmark"}, "a path mail_api postmark sends mail at"},
		{Handler{Whoami: "/keygate/whoami", MailAPI: "sendgrid", Scopes: []ScopeRule{{Scope: "all", Path: "*"}}}, ""},
		{Handler{Whoami: "/v3/whoami", Scopes: []ScopeRule{{Scope: "mail.read", Method: "GET", Path: "/v3/*"}}}, ""},
	} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		h := tc.h
		h.Store = "sqlite:" + filepath.Join(t.TempDir(), "keys.db")
		err := h.Provision(ctx)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("whoami %s: %v, want it to load", h.Whoami, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("whoami %s: %v, want an error saying %q", h.Whoami, err, tc.want)
		}
		h.Cleanup()
		cancel()
	}
}

// shadows never says a line is covered when Caddy's matcher finds a path
// the later line matches and the earlier one does not.
func TestShadowsAgreesWithCaddysMatcher(t *testing.T) {
	patterns := []string{"*", "/*", "**", "/v3*", "/v3/*", "/v3/mail/send", "/V3/Mail/Send", "/v3/mail/send*",
		"*/messages", "*/messages.mime", "/v3/*/messages", "/v3/*/messages.mime", "*/mail/*", "*mail*", "*.json",
		"/v1/list.json", "/v3/*/events", "/v3/{env.X}", "/email*", "/email/batch"}
	paths := []string{"/", "/v3", "/v3/", "/v3/mail/send", "/V3/MAIL/SEND", "/v3/mail/send/x", "/v3/d.example/messages",
		"/v3/d.example/messages.mime", "/v3/d/e/messages", "/v1/list.json", "/x/mail/y", "/mailbox", "/email",
		"/email/batch", "/v3/d/events", "/v4/messages", "/v3/templates"}
	rules := make([]ScopeRule, len(patterns))
	for i, p := range patterns {
		rules[i] = ScopeRule{Scope: "s", Path: p}
		if err := rules[i].provision(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range rules {
		for j := range rules {
			if i == j || !rules[i].shadows(&rules[j]) {
				continue
			}
			for _, p := range paths {
				r := scopeRequest("GET", p)
				if rules[j].matches(r, plainPath(p)) && !rules[i].matches(r, plainPath(p)) {
					t.Errorf("%q said to cover %q, but only the second matches %s", patterns[i], patterns[j], p)
				}
			}
		}
	}
}

// TestTheExamplesScopeTheSDKsReads checks that each example's scope lines
// give the calls other than sends that the providers' official SDKs make
// (the paths TestE2ESDKsDenials sees them make) the scope the line for
// them names: a read the example means to allow must not fall through to
// "no scope line matches" (Resend's emails.list() is GET /emails, which
// "GET /emails/*" did not match).
func TestTheExamplesScopeTheSDKsReads(t *testing.T) {
	line := regexp.MustCompile(`(?m)^\s*scope\s+(\S+)(?:\s+([A-Z]+))?\s+(\S+)\s*$`)
	for _, c := range []struct {
		example, method, path, scope string
	}{
		{"resend", "GET", "/emails", "emails.read"}, // resend emails.list()
		{"resend", "GET", "/emails/re-1", "emails.read"},
		{"resend", "GET", "/domains", "domains.read"},
		{"resend", "PATCH", "/emails/re-1", "mail.send"},       // emails.update({id, scheduledAt})
		{"resend", "POST", "/emails/re-1/cancel", "mail.send"}, // emails.cancel(id)
		{"postmark", "GET", "/messages/outbound/pm-1/details", "messages.read"},
		{"postmark", "GET", "/templates", "templates.read"},
		{"sendgrid", "GET", "/v3/templates", "templates.read"},
		{"mailgun", "GET", "/v3/mg.shop.example/events", "events.read"},
		{"mailjet", "GET", "/v3/REST/message", "messages.read"},
		{"brevo", "GET", "/v3/smtp/templates", "templates.read"},
		{"ses", "GET", "/v2/email/account", "account.read"},
	} {
		src, err := os.ReadFile(filepath.Join("examples", c.example, "Caddyfile"))
		if err != nil {
			t.Fatal(err)
		}
		var rules []ScopeRule
		for _, m := range line.FindAllStringSubmatch(string(src), -1) {
			r := ScopeRule{Scope: m[1], Method: m[2], Path: m[3]}
			if err := r.provision(); err != nil {
				t.Fatalf("examples/%s: %v", c.example, err)
			}
			rules = append(rules, r)
		}
		if got := requiredScope(rules, scopeRequest(c.method, c.path)); got != c.scope {
			t.Errorf("examples/%s: %s %s needs %q, want %q", c.example, c.method, c.path, got, c.scope)
		}
	}
}
