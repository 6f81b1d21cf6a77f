package keys

import "strings"

// ValidScopeName accepts scope names as keys hold them and routes require
// them: "mail.send", "templates.read", "mail.*" (every mail. scope) and "*"
// (full access). Names use a-z, 0-9, '.', '_', '-' and '*', at most 64 bytes.
func ValidScopeName(s string) bool {
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

// Covers reports whether a key holding scopes may use a route requiring
// required. "*" is full access and covers every route, even one that
// requires nothing ("" — a route no scope line matches); "mail.*" covers
// every scope that starts with "mail.". It does not allocate: the gateway
// calls it on every request.
func Covers(scopes []string, required string) bool {
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

// coversAny reports whether held ("mail.*", "mail.send", "*") would grant
// any of the scopes routes require.
func coversAny(held string, required []string) bool {
	for _, r := range required {
		if Covers([]string{held}, r) {
			return true
		}
	}
	return false
}
