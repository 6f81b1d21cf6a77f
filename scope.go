package keygate

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
}

var httpMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
}

// validScopeName accepts "mail.send", "templates.read", "mail.*", "*".
func validScopeName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-', c == '*':
		default:
			return false
		}
	}
	return true
}

func (r *ScopeRule) provision() error {
	if !validScopeName(r.Scope) {
		return fmt.Errorf("keygate: scope %q: a scope name uses a-z, 0-9, '.', '_', '-' (e.g. mail.send)", r.Scope)
	}
	if r.Method != "" {
		r.Method = strings.ToUpper(r.Method)
		known := false
		for _, m := range httpMethods {
			known = known || m == r.Method
		}
		if !known {
			return fmt.Errorf("keygate: scope %q: method %q is not an HTTP method", r.Scope, r.Method)
		}
	}
	if r.Path == "" {
		return fmt.Errorf("keygate: scope %q: missing path", r.Scope)
	}
	r.match = caddyhttp.MatchPath{r.Path}
	return r.match.Provision(nilContext)
}

// requiredScope returns the scope of the first matching rule, or "" when no
// rule matches (then only a full-access key may pass).
func requiredScope(rules []ScopeRule, r *http.Request) string {
	for i := range rules {
		rule := &rules[i]
		if rule.Method != "" && rule.Method != r.Method {
			continue
		}
		if rule.match.Match(r) {
			return rule.Scope
		}
	}
	return ""
}

// hasScope reports whether a key holding scopes may use required. "*" is full
// access; "mail.*" covers every scope starting with "mail.".
func hasScope(scopes []string, required string) bool {
	for _, s := range scopes {
		if s == "*" {
			return true
		}
		if required == "" {
			continue
		}
		if s == required {
			return true
		}
		if strings.HasSuffix(s, ".*") && strings.HasPrefix(required, s[:len(s)-1]) {
			return true
		}
	}
	return false
}
