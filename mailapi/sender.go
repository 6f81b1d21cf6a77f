package mailapi

import (
	"strings"

	"golang.org/x/net/idna"
)

// SenderAllowed reports whether addr's domain, the part after its last '@',
// is one of domains, ignoring case. "example.com" matches exactly that
// domain; "*.example.com" matches its subdomains (a.example.com,
// a.b.example.com) but not example.com itself. An empty list allows every
// sender; an address without a domain matches no list.
func SenderAllowed(addr string, domains []string) bool {
	if len(domains) == 0 {
		return true
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	return DomainAllowed(addr[at+1:], domains)
}

// DomainAllowed reports whether a bare domain, such as a sending domain
// named in a request's path, is one of domains. It compares exactly as
// SenderAllowed compares an address's domain: "mg.example.com" is allowed
// by "mg.example.com" and by "*.example.com", not by "example.com". The
// domain is compared whole (an '@' in it splits nothing) and nothing is
// trimmed, so anything unusual fails closed. An empty list allows every
// domain; an empty domain matches no list.
func DomainAllowed(domain string, domains []string) bool {
	if len(domains) == 0 {
		return true
	}
	if domain == "" {
		return false
	}
	// A domain written in Unicode is compared in its ASCII form, as keys
	// hold it; one that has none fails closed.
	for i := 0; i < len(domain); i++ {
		if domain[i] >= 0x80 {
			ascii, err := idna.Lookup.ToASCII(domain)
			if err != nil {
				return false
			}
			domain = ascii
			break
		}
	}
	for _, d := range domains {
		if parent, ok := strings.CutPrefix(d, "*."); ok {
			// The byte before the suffix must be a dot, and something
			// must precede it.
			n := len(domain) - len(parent)
			if parent != "" && n >= 2 && domain[n-1] == '.' && strings.EqualFold(domain[n:], parent) {
				return true
			}
			continue
		}
		if strings.EqualFold(domain, d) {
			return true
		}
	}
	return false
}
