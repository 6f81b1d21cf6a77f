package mailapi

import (
	"strings"
	"testing"
)

func TestSenderAllowed(t *testing.T) {
	domains := []string{"shop.example.com", "*.mail.example.com"}
	tests := []struct {
		name    string
		addr    string
		domains []string
		want    bool
	}{
		{"an exact domain matches", "a@shop.example.com", domains, true},
		{"case does not matter", "a@SHOP.Example.com", domains, true},
		{"case does not matter in the list either", "a@shop.example.com", []string{"Shop.Example.COM"}, true},
		{"an exact entry does not cover subdomains", "a@sub.shop.example.com", domains, false},
		{"a wildcard entry does not cover the domain itself", "a@mail.example.com", domains, false},
		{"a wildcard entry covers a subdomain", "a@news.mail.example.com", domains, true},
		{"a wildcard entry covers deeper subdomains", "a@x.news.mail.example.com", domains, true},
		{"a wildcard entry is not a plain suffix", "a@evilmail.example.com", domains, false},
		{"a parent domain is not allowed", "a@example.com", domains, false},
		{"the domain is after the last @", `"a@shop.example.com"@evil.example`, domains, false},
		{"an address without @ matches nothing", "no-at-sign", domains, false},
		{"an address with an empty domain matches nothing", "a@", domains, false},
		{"a bare wildcard matches nothing", "a@b.", []string{"*."}, false},
		{"an empty list allows every sender", "any@where.org", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SenderAllowed(tt.addr, tt.domains); got != tt.want {
				t.Errorf("SenderAllowed(%q, %q) = %v, want %v", tt.addr, tt.domains, got, tt.want)
			}
		})
	}
}

func TestDomainAllowed(t *testing.T) {
	domains := []string{"mg.example.com", "shop.example.com", "*.mail.example.com"}
	tests := []struct {
		name    string
		domain  string
		domains []string
		want    bool
	}{
		{"a domain matches its exact entry", "mg.example.com", domains, true},
		{"case does not matter", "MG.Example.COM", domains, true},
		{"another domain of the same account is not allowed", "billing.example.com", domains, false},
		{"an exact entry for the parent does not cover a sending subdomain", "mg.example.com", []string{"example.com"}, false},
		{"an exact entry does not cover subdomains", "eu.mg.example.com", domains, false},
		{"a wildcard entry covers a sending subdomain", "news.mail.example.com", domains, true},
		{"a wildcard entry does not cover the domain itself", "mail.example.com", domains, false},
		{"a wildcard entry is not a plain suffix", "evilmail.example.com", domains, false},
		{"a trailing dot is not trimmed, so it fails closed", "mg.example.com.", domains, false},
		{"an @ in a domain splits nothing: it is compared whole", "evil.example@mg.example.com", domains, false},
		{"an empty domain matches nothing", "", domains, false},
		{"an empty list allows every domain", "any.where.org", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DomainAllowed(tt.domain, tt.domains); got != tt.want {
				t.Errorf("DomainAllowed(%q, %q) = %v, want %v", tt.domain, tt.domains, got, tt.want)
			}
			// A bare domain compares as the domain of an address would.
			if addr := "someone@" + tt.domain; !strings.Contains(tt.domain, "@") && SenderAllowed(addr, tt.domains) != tt.want {
				t.Errorf("SenderAllowed(%q, %q) disagrees with DomainAllowed", addr, tt.domains)
			}
		})
	}
}

// A sender domain written in Unicode is compared in its ASCII form, as a
// key holds it (keygate stores sender domains so); one with no ASCII form
// fails closed.
func TestSenderDomainsInUnicodeCompareAsASCII(t *testing.T) {
	allowed := []string{"xn--bckerei-5wa.example", "*.xn--caf-dma.example"}
	for addr, want := range map[string]bool{
		"orders@bäckerei.example":        true,
		"orders@BÄCKEREI.example":        true,
		"orders@xn--bckerei-5wa.example": true,
		"news@mail.café.example":         true,
		"news@café.example":              false, // the wildcard is for subdomains
		"orders@backerei.example":        false,
		"orders@bäckerei\u0000.example":  false,
	} {
		if got := SenderAllowed(addr, allowed); got != want {
			t.Errorf("SenderAllowed(%q) = %v, want %v", addr, got, want)
		}
	}
}
