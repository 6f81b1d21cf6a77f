package browser

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// TestSigningOutEndsTheSignIn: a person signed in with basic_auth signs
// out with the button in the console's header, on a shared computer, and
// walks away. The browser forgets the sign-in: the next person who
// presses Back, or opens the console, is asked to sign in, and sees no
// key of theirs, with the page's script or without it. Before, the
// console had no way to sign out: the browser kept the sign-in until it
// was closed.
func TestSigningOutEndsTheSignIn(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	gw.issue(t, "--name", "Alice's CRM", "--owner", "alice", "--scope", "mail.send")
	page := "/console/keys/" + gw.idOf(t, "Alice's CRM")

	for _, script := range []bool{true, false} {
		alice := b.signIn(t, gw, "alice")
		if !script {
			if _, err := chromedp.Call(alice.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
				t.Fatal(err)
			}
		}
		with := map[bool]string{true: "with the page's script", false: "without script"}[script]
		alice.open(t, "/console/", 200)
		alice.open(t, page, 200)
		alice.away.Store(true)
		alice.click(t, `header form[action="/console/signout"] button`, 401)
		if doc := alice.document(t); !strings.Contains(doc, "You are signed out") || strings.Contains(doc, "Alice's CRM") {
			t.Errorf("%s, the page after signing out:\n%s", with, doc)
		}

		// Back: the key's page is not shown again, the browser asks.
		asked := alice.asked.Load()
		alice.back(t, page)
		for end := time.Now().Add(10 * time.Second); alice.asked.Load() == asked && time.Now().Before(end); {
			time.Sleep(100 * time.Millisecond)
		}
		if alice.asked.Load() == asked {
			t.Errorf("%s, Back after signing out did not ask to sign in", with)
		}
		if doc := alice.document(t); strings.Contains(doc, "Alice's CRM") {
			t.Errorf("%s, Back after signing out shows the key's page", with)
		}
		// The console, opened again, asks too.
		asked = alice.asked.Load()
		chromedp.Run(alice.ctx, chromedp.Navigate(gw.url+"/console/")) // refused: Chromium's own page for an empty 401
		if alice.asked.Load() == asked || strings.Contains(alice.document(t), "Alice's CRM") {
			t.Errorf("%s, the console opened after signing out did not ask to sign in", with)
		}
	}
}
