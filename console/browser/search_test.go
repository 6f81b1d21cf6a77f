package browser

import (
	"net/url"
	"testing"
)

// TestSearchIgnoresTheCaseOfEveryLetter: "MÜLLER" and "müller" typed into
// the keys page's search find the key of "Müller", as "crm" finds "CRM"
// (SQLite's LIKE ignored the case of ASCII letters only).
func TestSearchIgnoresTheCaseOfEveryLetter(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	alice := b.signIn(t, gw, "alice")
	gw.issue(t, "--name", "Müller GmbH newsletter", "--owner", "alice", "--scope", "mail.send")
	gw.issue(t, "--name", "Ärger im Büro", "--owner", "alice", "--scope", "mail.send")
	for _, q := range []string{"MÜLLER", "müller", "ärger im BÜRO"} {
		alice.open(t, "/console/?q="+url.QueryEscape(q), 200)
		alice.wantText(t, "main", "1 key")
	}
}
