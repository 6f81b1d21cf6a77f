package browser

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
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

// TestAKeyInTheSearchNeverLeavesTheBrowser: a whole key pasted into the
// keys page's search is never sent, so it reaches no URL: not the
// server's, not a proxy's log in front of it, not the browser's saved
// session (which keeps the address a redirect started from). With the
// page's script, the search is made with the key's hint (its start, what
// the list shows), which finds it; without script, the browser refuses to
// send the search and says to keep the key's start. Before, a browser that
// ran no script sent the whole key, and the console redirected it to the
// hint.
func TestAKeyInTheSearchNeverLeavesTheBrowser(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	key := gw.issue(t, "--name", "Pasted into the search", "--owner", "alice", "--scope", "mail.send")
	hint := key[:len("kg_live_")+8]
	keyInURL := func() bool {
		log, _ := os.ReadFile(filepath.Join(gw.dir, "caddy.log"))
		return strings.Contains(string(log), "a key in the URL")
	}
	// Enter in the search box sends it, as the Show button does.
	search := func(tb *tab) {
		tb.open(t, "/console/", 200)
		tb.do(t, chromedp.SendKeys(chromedp.ID("q"), key), chromedp.KeyEvent(kb.Enter))
		time.Sleep(time.Second)
	}

	alice := b.signIn(t, gw, "alice")
	search(alice)
	if loc := alice.location(t); !strings.Contains(loc, "q="+hint) || strings.Contains(loc, key[len(hint):]) {
		t.Errorf("with the page's script, a key pasted into the search went to %s; want its hint there", loc)
	}
	alice.wantText(t, "table.keys", "Pasted into the search")

	noScript := b.signIn(t, gw, "alice")
	if _, err := chromedp.Call(noScript.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	search(noScript)
	h, err := chromedp.Call(noScript.ctx, page.GetNavigationHistory, cdp.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if at := h.Entries[h.CurrentIndex].URL; at != gw.url+"/console/" {
		t.Errorf("without script, a key pasted into the search was sent: the browser is at %s", at)
	}
	if keyInURL() {
		t.Errorf("without script, a key pasted into the search reached the console in a URL")
	}
}
