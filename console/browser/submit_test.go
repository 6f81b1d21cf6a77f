package browser

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestADoubleClickSendsAFormOnce: a double click on "Create key" creates
// one key, and on "Rotate" shows the new key rather than "already
// rotated" (the first answer, with the key, is dropped by the browser for
// the second).
func TestADoubleClickSendsAFormOnce(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	alice := b.signIn(t, gw, "alice")
	// Two clicks 20 ms apart, as a double click makes them; the page then
	// settles.
	double := func(sel string) {
		t.Helper()
		run(t, alice.ctx, chromedp.Evaluate[bool](`(() => { const b = document.querySelector(`+quoteJS(sel)+`); b.click(); setTimeout(() => b.click(), 20); return true })()`))
		time.Sleep(2 * time.Second)
		alice.do(t, chromedp.WaitReady("main"))
	}
	// The key the page shows, if it shows one.
	shown := func() string {
		return run(t, alice.ctx, chromedp.Evaluate[string](`(document.getElementById('secret') || {}).value || ""`))
	}
	count := func(name string) int {
		t.Helper()
		var recs []keyRecord
		if err := json.Unmarshal(gw.keys(t, "list", "--json"), &recs); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range recs {
			if r.Name == name {
				n++
			}
		}
		return n
	}

	alice.open(t, "/console/new", 200)
	alice.do(t, chromedp.SendKeys(chromedp.ID("name"), "Clicked twice"),
		chromedp.Click(chromedp.CSS(`input[name=scope][value="mail.send"]`)))
	double(`form.settings button[type=submit]`)
	if n := count("Clicked twice"); n != 1 {
		t.Errorf("a double click on Create key made %d keys", n)
	}
	if key := shown(); !keyPattern.MatchString(key) {
		t.Errorf("after a double click on Create key the page shows %q, not the key", key)
	}

	gw.issue(t, "--name", "Rotated twice", "--owner", "alice", "--scope", "mail.send", "--expires", "30d")
	alice.open(t, "/console/keys/"+gw.idOf(t, "Rotated twice"), 200)
	alice.do(t, chromedp.SetValue(chromedp.ID("grace"), "1h"))
	double(`form[action$="/rotate"] button[type=submit]`)
	if n := count("Rotated twice"); n != 2 {
		t.Errorf("a double click on Rotate made %d keys, want the old and one new", n)
	}
	if key := shown(); !keyPattern.MatchString(key) {
		t.Errorf("after a double click on Rotate the page is %s, not the new key:\n%s", alice.location(t), alice.text(t, "main"))
	}

	// Back on a form, it sends again: a refused form is sent once more,
	// mended.
	alice.open(t, "/console/new", 200)
	alice.click(t, `form.settings button[type=submit]`, 422)
	alice.do(t, chromedp.SendKeys(chromedp.ID("name"), "Mended"),
		chromedp.Click(chromedp.CSS(`input[name=scope][value="mail.send"]`)))
	alice.click(t, `form.settings button[type=submit]`, 200)
	alice.wantText(t, "main", "only time the key is shown")
}
