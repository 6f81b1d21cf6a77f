package browser

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
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

// TestAFormStoppedOnItsWaySendsAgain: a form whose navigation the person
// stopped (Esc, the Stop button) before its answer came, or that never got
// one, sends again when they press its button once more; a double click
// still sends once (TestADoubleClickSendsAFormOnce). Before, the page's
// script dropped every later submit until the page was reloaded: the
// button did nothing.
func TestAFormStoppedOnItsWaySendsAgain(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	alice := b.signIn(t, gw, "alice")

	alice.open(t, "/console/new", 200)
	alice.do(t, chromedp.SendKeys(chromedp.ID("name"), "Stopped once"),
		chromedp.Click(chromedp.CSS(`input[name=scope][value="mail.send"]`)))
	// The post never leaves the browser, as with a server that does not
	// answer; the person stops the page's loading.
	alice.stall.Store(true)
	run(t, alice.ctx, chromedp.Evaluate[bool](`(document.querySelector('form.settings button[type=submit]').click(), true)`))
	time.Sleep(500 * time.Millisecond)
	if _, err := chromedp.Call(alice.ctx, page.StopLoading, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	alice.stall.Store(false)
	if loc := alice.location(t); !strings.HasSuffix(loc, "/console/new") {
		t.Fatalf("after stopping the post the browser is at %s", loc)
	}
	// Pressed again, the button sends the form: the key is made and shown.
	run(t, alice.ctx, chromedp.Evaluate[bool](`(document.querySelector('form.settings button[type=submit]').click(), true)`))
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		key := run(t, alice.ctx, chromedp.Evaluate[string](`(document.getElementById('secret') || {}).value || ""`))
		if keyPattern.MatchString(key) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("pressed again after a stopped post, the button did nothing: the page is %s", alice.location(t))
		}
	}
	var recs []keyRecord
	if err := json.Unmarshal(gw.keys(t, "list", "--json"), &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Errorf("one stopped post and one sent made %d keys, want 1", len(recs))
	}
}

// TestTheNewKeyIsWhereFocusStarts: a key made with the keyboard alone
// (Enter in the form) arrives focused and selected, so Ctrl+C copies it,
// and a screen reader reads it with the warning that it is shown once;
// so does the key of a rotation. Before, focus started at the top of the
// page, six Tabs from the key.
func TestTheNewKeyIsWhereFocusStarts(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	alice := b.signIn(t, gw, "alice")
	focused := func(what string) {
		t.Helper()
		got := run(t, alice.ctx, chromedp.Evaluate[string](`(() => {
			const e = document.activeElement;
			if (e.id !== 'secret') return 'focus on ' + e.tagName + '#' + e.id;
			if (e.selectionStart !== 0 || e.selectionEnd !== e.value.length) return 'the key is focused but not selected';
			const said = document.getElementById(e.getAttribute('aria-describedby') || '');
			return said ? said.textContent : 'the key is described by nothing';
		})()`))
		if !strings.Contains(got, "only time the key is shown") {
			t.Errorf("%s: %s", what, got)
		}
	}
	alice.open(t, "/console/new", 200)
	alice.do(t, chromedp.SendKeys(chromedp.ID("name"), "Keyboard only"),
		chromedp.Focus(chromedp.CSS(`input[name=scope][value="mail.send"]`)), chromedp.KeyEvent(" "))
	alice.respond(t, 200, chromedp.Steps(chromedp.Focus(chromedp.ID("name")), chromedp.KeyEvent(kb.Enter)))
	focused("after creating a key with Enter")
	alice.open(t, "/console/keys/"+gw.idOf(t, "Keyboard only"), 200)
	alice.click(t, `form[action$="/rotate"] button[type=submit]`, 200)
	focused("after a rotation")
}
