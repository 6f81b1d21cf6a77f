package keygate

import (
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/verifier"
)

// ScopeRule maps requests to the scope a key needs for them. Rules are tried
// in order; the first whose method and path match wins.
type ScopeRule struct {
	// Scope is the required scope, e.g. "mail.send".
	Scope string `json:"scope"`
	// Method restricts the rule to one HTTP method; empty matches any.
	Method string `json:"method,omitempty"`
	// Path is matched like Caddy's path matcher: exact, "prefix*",
	// "*suffix" or "*middle*".
	Path string `json:"path"`

	match caddyhttp.MatchPath
	// kind and literal are the rule's path pattern compiled for the
	// common case: a plain request path compared with a plain pattern.
	// Anything else is left to Caddy's matcher (viaCaddy).
	kind    patternKind
	literal string
}

// patternKind is how a path pattern compares with a plain path, mirroring
// the fast cases of Caddy's path matcher.
type patternKind uint8

const (
	viaCaddy  patternKind = iota // placeholders, escapes, "//", globs
	exact                        // "/v3/mail/send"
	prefix                       // "/v3/templates*"
	suffix                       // "*/messages"
	substring                    // "*/mail/*"
	segments                     // "/v3/*/messages": each '*' the rest of a path segment
)

var httpMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
}

func (r *ScopeRule) provision() error {
	if !keys.ValidScopeName(r.Scope) {
		return fmt.Errorf("keygate: scope %q: a scope name uses a-z, 0-9, '.', '_', '-' (e.g. mail.send)", r.Scope)
	}
	if r.Method != "" {
		upper := strings.ToUpper(r.Method)
		known := false
		for _, m := range httpMethods {
			known = known || m == upper
		}
		if !known {
			return fmt.Errorf("keygate: scope %q: method %q is not an HTTP method", r.Scope, r.Method)
		}
		r.Method = upper
	}
	if r.Path == "" {
		return fmt.Errorf("keygate: scope %q: missing path", r.Scope)
	}
	// A request path starts with "/"; a pattern may also start with a glob
	// or a placeholder. Anything else is a mistake, such as a method given
	// without its path ("scope mail.send POST"), that would match nothing.
	if !strings.ContainsRune("/*{", rune(r.Path[0])) {
		return fmt.Errorf("keygate: scope %q: path %q must start with / or * (want <name> [<METHOD>] <path>)", r.Scope, r.Path)
	}
	r.match = caddyhttp.MatchPath{r.Path}
	if err := r.match.Provision(nilContext); err != nil {
		return err
	}
	r.kind, r.literal = compilePattern(r.match[0])
	return nil
}

// shadows reports whether a, a provisioned line before provisioned line b,
// matches every request b matches, so that b never decides (the first
// matching line does): "scope templates.read /v3*" before "scope mail.send
// POST /v3/mail/send" would make sends need templates.read. It never says so
// of a line that could decide; patterns left to Caddy's matcher are compared
// only when they are the same.
func (a *ScopeRule) shadows(b *ScopeRule) bool {
	if a.Method != "" && a.Method != b.Method {
		return false
	}
	// "*", "/*" and "**" match every path (a request's starts with "/").
	if a.kind == prefix && (a.literal == "" || a.literal == "/") || a.kind == substring && a.literal == "" {
		return true
	}
	if a.kind == viaCaddy || b.kind == viaCaddy {
		return a.kind == b.kind && a.match[0] == b.match[0]
	}
	l := b.literal
	switch a.kind {
	case exact:
		return b.kind == exact && l == a.literal
	case prefix:
		if b.kind == segments {
			l = l[:strings.IndexByte(l, '*')] // every match starts so
		}
		return (b.kind == exact || b.kind == prefix || b.kind == segments) && strings.HasPrefix(l, a.literal)
	case suffix:
		if b.kind == segments {
			l = l[strings.LastIndexByte(l, '*')+1:] // every match ends so
		}
		return (b.kind == exact || b.kind == suffix || b.kind == segments) && strings.HasSuffix(l, a.literal)
	case substring:
		if b.kind == segments { // every match holds each part between its stars
			return slices.ContainsFunc(strings.Split(l, "*"), func(part string) bool { return strings.Contains(part, a.literal) })
		}
		return strings.Contains(l, a.literal)
	case segments:
		return b.kind == exact && matchSegments(a.literal, l) || b.kind == segments && l == a.literal
	}
	return false
}

// line is the rule as a Caddyfile writes it.
func (r *ScopeRule) line() string {
	return strings.Join(slices.DeleteFunc([]string{"scope", r.Scope, r.Method, r.Path}, func(s string) bool { return s == "" }), " ")
}

// shadowed returns an error if rule can never decide after the rules
// before it.
func shadowed(before []ScopeRule, rule *ScopeRule) error {
	for i := range before {
		if before[i].shadows(rule) {
			return fmt.Errorf("keygate: %s never decides: %s, before it, matches every request it does (the first matching line decides); put the narrower line first, or remove one",
				rule.line(), before[i].line())
		}
	}
	return nil
}

// compilePattern classifies a provisioned (lower-cased) pattern the way
// caddyhttp.MatchPath treats it: one '*' at either end is a prefix or
// suffix match, one at each end a substring match, a pattern without glob
// characters an exact match, and one whose every '*' ends a path segment
// a glob matched segment by segment. Patterns with placeholders ("{"),
// escapes ("%"), doubled slashes or other globs go to Caddy's matcher.
func compilePattern(p string) (patternKind, string) {
	if strings.ContainsAny(p, "{%") || strings.Contains(p, "//") {
		return viaCaddy, ""
	}
	stars := strings.Count(p, "*")
	switch {
	case p == "*":
		return prefix, ""
	case stars == 2 && len(p) >= 2 && p[0] == '*' && p[len(p)-1] == '*':
		return substring, p[1 : len(p)-1]
	case stars == 1 && p[0] == '*':
		return suffix, p[1:]
	case stars == 1 && p[len(p)-1] == '*':
		return prefix, p[:len(p)-1]
	case strings.ContainsAny(p, `?[\`):
		return viaCaddy, ""
	case stars == 0:
		return exact, p
	case starsEndSegments(p):
		return segments, p
	}
	return viaCaddy, ""
}

// starsEndSegments reports whether every '*' in p is followed by '/' or
// ends p. Such a '*' (it matches a run of anything but '/') can only end at
// the path's next '/', so matchSegments needs none of path.Match's
// backtracking, which costs a Mailgun route ("/v3/*/messages") ~1 µs a
// request.
func starsEndSegments(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] == '*' && i+1 < len(p) && p[i+1] != '/' {
			return false
		}
	}
	return true
}

// matchSegments reports whether path.Match(pattern, p) would, for a
// pattern starsEndSegments accepts and without other glob characters.
func matchSegments(pattern, p string) bool {
	for {
		star := strings.IndexByte(pattern, '*')
		if star < 0 {
			return pattern == p
		}
		if !strings.HasPrefix(p, pattern[:star]) {
			return false
		}
		p, pattern = p[star:], pattern[star+1:]
		slash := strings.IndexByte(p, '/')
		if pattern == "" {
			return slash < 0
		}
		if slash < 0 {
			return false
		}
		p = p[slash:]
	}
}

// plainPath reports whether p is a path Caddy's matcher would compare as
// it is: rooted, already lower case ASCII, and already clean (no empty,
// "." or ".." segments), so lower-casing and cleaning would not change it.
func plainPath(p string) bool {
	if len(p) == 0 || p[0] != '/' || runtime.GOOS == "windows" {
		return false
	}
	for i := 1; i < len(p); i++ {
		switch pathBytes[p[i]] {
		case pathPlain:
			continue
		case pathNever:
			return false
		}
		if p[i-1] != '/' {
			continue
		}
		if p[i] == '/' {
			return false // an empty segment
		}
		// A "." or ".." segment: "/.", "/./", "/..", "/../".
		rest := p[i+1:]
		if rest == "" || rest[0] == '/' || rest == "." || (rest[0] == '.' && rest[1] == '/') {
			return false
		}
	}
	return true
}

// pathBytes sorts a path's bytes for plainPath, one table lookup a byte:
// most are plain; upper case letters and bytes of non-ASCII characters
// never are; '/' and '.' are plain unless they end an empty, "." or ".."
// segment.
var pathBytes = func() (t [256]uint8) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = pathNever
	}
	for c := 0x80; c < len(t); c++ {
		t[c] = pathNever
	}
	t['/'], t['.'] = pathSegment, pathSegment
	return t
}()

const (
	pathPlain = iota
	pathNever
	pathSegment
)

// matches reports whether the rule's path pattern matches r, whose path
// plain says is plain (see plainPath).
func (r *ScopeRule) matches(req *http.Request, plain bool) bool {
	if !plain || r.kind == viaCaddy {
		return r.match.Match(req)
	}
	p := req.URL.Path
	switch r.kind {
	case exact:
		return p == r.literal
	case prefix:
		return strings.HasPrefix(p, r.literal)
	case suffix:
		return strings.HasSuffix(p, r.literal)
	case segments:
		return matchSegments(r.literal, p)
	default:
		return strings.Contains(p, r.literal)
	}
}

// requiredScope returns the scope of the first matching rule, or "" when no
// rule matches (then only a full-access key may pass).
func requiredScope(rules []ScopeRule, r *http.Request) string {
	plain := plainPath(r.URL.Path)
	for i := range rules {
		rule := &rules[i]
		if rule.Method != "" && rule.Method != r.Method {
			continue
		}
		if rule.matches(r, plain) {
			return rule.Scope
		}
	}
	return ""
}

// requiredScopeAsRead returns the scope of the first rule that matches r
// at path p, a path as a server reading it leniently reads r's
// (mailapi.ReadPaths), or at p with a trailing slash: such a path has
// none, and a line written with one ("scope stats.read GET /v3/stats/",
// "/v3/templates/*") keeps matching what it matched.
func requiredScopeAsRead(rules []ScopeRule, r *http.Request, p string) string {
	a, b, slash := atPath(r, p), atPath(r, p+"/"), p != "/"
	plainA, plainB := plainPath(a.URL.Path), plainPath(b.URL.Path)
	for i := range rules {
		rule := &rules[i]
		if rule.Method != "" && rule.Method != r.Method {
			continue
		}
		if rule.matches(a, plainA) || slash && rule.matches(b, plainB) {
			return rule.Scope
		}
	}
	return ""
}

// requiredScopeOfEither returns the scope of the first rule that matches
// r or alt, r with the same method at another path (the send endpoint r's
// path is read as): "" when none does.
func requiredScopeOfEither(rules []ScopeRule, r, alt *http.Request) string {
	plainR, plainAlt := plainPath(r.URL.Path), plainPath(alt.URL.Path)
	for i := range rules {
		rule := &rules[i]
		if rule.Method != "" && rule.Method != r.Method {
			continue
		}
		if rule.matches(r, plainR) || rule.matches(alt, plainAlt) {
			return rule.Scope
		}
	}
	return ""
}

// postedTo returns r as scope lines see it when it is scoped as a POST to
// path p (mailapi.Message.ScopePath): r itself when p is "", else a copy
// with that method and path.
func postedTo(r *http.Request, p string) *http.Request {
	if p == "" {
		return r
	}
	r2 := atPath(r, p)
	if r2 == r {
		r2 = r.WithContext(r.Context())
	}
	r2.Method = http.MethodPost
	return r2
}

// atPath returns r as scope lines see it when it is scoped as path p: r
// itself when p is its path, else a copy with that path.
func atPath(r *http.Request, p string) *http.Request {
	if p == r.URL.Path {
		return r
	}
	u := *r.URL
	u.Path, u.RawPath = p, ""
	r2 := r.WithContext(r.Context())
	r2.URL = &u
	return r2
}

// methodOverrides are the headers by which a POST asks web frameworks
// (Laravel, Symfony, Rails, Express's method-override, ASP.NET) to handle
// it as another method. An upstream that honours one would do what the
// named method does, so the request is scoped as that method.
var methodOverrides = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// isMethodOverride reports whether a header name is one of methodOverrides
// as a framework behind CGI, Rack or PHP reads names: without regard to
// case, and '_' as '-' (both are HTTP_X_HTTP_METHOD_OVERRIDE to them), so
// X_HTTP_METHOD_OVERRIDE, which Go keeps apart, is read too.
func isMethodOverride(name string) bool {
	switch len(name) {
	case len("X-Http-Method"), len("X-Method-Override"), len("X-Http-Method-Override"):
	default:
		return false
	}
	for _, o := range methodOverrides {
		if len(o) == len(name) && strings.EqualFold(o, strings.ReplaceAll(name, "_", "-")) {
			return true
		}
	}
	return false
}

// overriddenMethod returns the method a POST's override headers or the
// _method parameter of its query string name ("" if none does), and false
// when they name more than one: the upstream's choice among them is
// unknown, so such a request is refused.
func overriddenMethod(r *http.Request) (string, bool) {
	if r.Method != http.MethodPost {
		return "", true // frameworks honour overrides on POST only
	}
	m := ""
	for name, vs := range r.Header {
		if !isMethodOverride(name) {
			continue
		}
		for _, v := range vs {
			var ok bool
			if m, ok = addMethods(m, v); !ok {
				return "", false
			}
		}
	}
	// The _method parameter of the query string, which Symfony (so
	// Laravel, which turns it on) and Express's methodOverride('_method')
	// read on a POST as its method, as they read the headers.
	for param := range strings.FieldsFuncSeq(r.URL.RawQuery, func(c rune) bool { return c == '&' || c == ';' }) {
		name, v, _ := strings.Cut(param, "=")
		if !methodParam(name) {
			continue
		}
		if u, err := url.QueryUnescape(v); err == nil {
			v = u
		}
		var ok bool
		if m, ok = addMethods(m, v); !ok {
			return "", false
		}
	}
	if m == http.MethodPost {
		m = ""
	}
	return m, true
}

// addMethods adds the methods an override's value names to m, the one named
// so far, and reports false when they name another. Express's
// method-override does the first of a header's comma-separated values, so
// each is read: "PUT, DELETE" names two methods, not one called
// "PUT, DELETE".
func addMethods(m, value string) (string, bool) {
	for v := range strings.SplitSeq(value, ",") {
		v = strings.ToUpper(trimToMethod(v))
		switch {
		case v == "" || v == m:
		case m == "":
			m = v
		default:
			return "", false
		}
	}
	return m, true
}

// methodParam reports whether a query parameter's name, as written, is
// _method as PHP reads names: unescaped, without leading spaces, and with
// a space, '.' or '[' as '_' (" method" and ".method" are its _method).
func methodParam(name string) bool {
	if !strings.Contains(name, "method") && !strings.ContainsAny(name, "%+") {
		return false // the usual parameter: no allocation
	}
	if u, err := url.QueryUnescape(name); err == nil {
		name = u
	}
	name = strings.TrimLeft(name, " ")
	return len(name) == len("_method") && strings.ContainsRune("_ .[", rune(name[0])) && name[1:] == "method"
}

// trimToMethod returns s without the bytes around it that cannot be part of
// a method (an HTTP token): whitespace, and whatever a framework trims as
// whitespace besides, such as a 0xA0 byte, which node reads as Latin-1, a
// no-break space that JavaScript's trim removes ("PUT\xa0" is a PUT to
// Express).
func trimToMethod(s string) string {
	i, j := 0, len(s)
	for i < j && !tokenByte(s[i]) {
		i++
	}
	for j > i && !tokenByte(s[j-1]) {
		j--
	}
	return s[i:j]
}

// tokenByte reports whether c may be part of an HTTP token (RFC 9110's
// tchar), which a method is.
func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// withMethod returns r as scope lines see it when it is scoped as method m:
// r itself when m is "", else a copy with that method.
func withMethod(r *http.Request, m string) *http.Request {
	if m == "" {
		return r
	}
	r2 := r.WithContext(r.Context())
	r2.Method = m
	return r2
}

// unreadScopePaths returns an error for a provisioned rule naming one exact
// path that d reads as a send endpoint written otherwise (with a trailing
// slash, ";parameters", a format extension): requests there are scoped as
// the endpoint (mailapi.Dialect.EndpointPath), so the rule never decides.
func unreadScopePaths(rules []ScopeRule, d *mailapi.Dialect) error {
	for _, r := range rules {
		if p := d.EndpointPath(r.Path); r.kind == exact && p != r.Path {
			return fmt.Errorf("keygate: %s never decides: mail_api %s reads %s as its send endpoint %s, and scopes requests there as that path; write the line with %s",
				r.line(), d.Name, r.Path, p, p)
		}
	}
	return nil
}

// uninspectedPosts returns the provisioned rules naming one exact POST path
// that is not a send endpoint of d (nor an SES v1 action's name): likely a
// mistyped send route, where sends would pass without sender, recipient or
// quota checks.
func uninspectedPosts(rules []ScopeRule, d *mailapi.Dialect) []ScopeRule {
	var out []ScopeRule
	for _, r := range rules {
		if r.Method == http.MethodPost && r.kind == exact && !d.IsSend(http.MethodPost, r.Path) && !d.ActionScopePath(r.Path) {
			out = append(out, r)
		}
	}
	return out
}

// scopeMessage says which scope a route needs, for insufficient_scope: the
// integrator can then ask for exactly that scope.
func scopeMessage(required, method, path string) string {
	if required == "" {
		// The method and path, so an integrator can ask the operator for
		// the line to add.
		return "no scope line matches " + method + " " + verifier.Redact(path) + ", so only a full-access (*) key may use it"
	}
	return "the API key lacks the scope this route requires: " + required
}
