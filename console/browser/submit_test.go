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

// TestTheConsoleByKeyboardAlone: a person with a keyboard alone (and a
// screen reader) goes from the keys page to a revoked key with Tab, Space
// and Enter, and after each step focus is where the next one starts and
// what the page says is read out. A new key arrives focused and selected,
// so Ctrl+C copies it and a screen reader reads it with the warning that
// it is shown once; so does the key of a rotation (before, focus started
// at the top of the page, six Tabs from the key). Its copy button says
// "Copied." in a live region; each action's message (disabled, enabled,
// revoked) is focused; a revoke's button works once the name is typed; a
// refused form's error is focused and its link leads to the field (the
// review's first box when none was ticked); the review's keys are ticked
// and revoked together.
func TestTheConsoleByKeyboardAlone(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	alice := b.signIn(t, gw, "alice")
	enter := func(tb *tab, status int64) {
		t.Helper()
		tb.respond(t, status, chromedp.KeyEvent(kb.Enter))
	}
	typ := func(tb *tab, s string) {
		t.Helper()
		tb.do(t, chromedp.KeyEvent(s))
	}
	// focusOn checks that what has focus matches sel and says want.
	focusOn := func(tb *tab, after, sel, want string) {
		t.Helper()
		if got := run(t, tb.ctx, chromedp.Evaluate[string](`(() => {
			const e = document.activeElement;
			return e.matches(`+quoteJS(sel)+`) ? 'on it: ' + (e.innerText || e.value) : 'focus on ' + e.tagName + '#' + e.id + '.' + e.className;
		})()`)); !strings.HasPrefix(got, "on it: ") || !strings.Contains(got, want) {
			t.Errorf("after %s: %s, want %s saying %q", after, got, sel, want)
		}
	}
	keyFocused := func(what string) {
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

	alice.open(t, "/console/", 200)
	alice.tabTo(t, `main a.button.primary`)
	enter(alice, 200)
	alice.tabTo(t, "#name")
	typ(alice, "Keyboard only")
	alice.tabTo(t, `input[name=scope][value="mail.send"]`)
	typ(alice, " ")
	alice.tabTo(t, "#reason")
	enter(alice, 200)
	keyFocused("after creating a key with Enter")
	first := alice.value(t, "#secret")
	alice.tabTo(t, `[data-copy=secret]`)
	typ(alice, kb.Enter)
	alice.waitText(t, `[role=status][data-copied-for=secret]`, "Cop") // "Copied.", or how to copy it where the browser refuses
	alice.tabTo(t, `main a.button[href*="/keys/"]`)
	enter(alice, 200)

	alice.tabTo(t, "#state-reason")
	typ(alice, "paused")
	typ(alice, kb.Tab)
	focusOn(alice, "the reason", "button", "Disable key")
	enter(alice, 200)
	focusOn(alice, "disabling", ".notice", "Key disabled")
	alice.tabTo(t, `form[action$="/enable"] button`)
	enter(alice, 200)
	focusOn(alice, "enabling", ".notice", "Key enabled")
	alice.tabTo(t, `form[action$="/rotate"] button`)
	enter(alice, 200)
	keyFocused("after a rotation")

	alice.tabTo(t, `main a.button[href*="/keys/"]`)
	enter(alice, 200)
	alice.tabTo(t, "#confirm")
	typ(alice, "Keyboard only")
	typ(alice, kb.Tab)
	typ(alice, kb.Tab)
	focusOn(alice, "typing the name", "#revoke-submit", "Revoke key")
	enter(alice, 200)
	focusOn(alice, "revoking", ".notice", "Key revoked")

	alice.tabTo(t, `nav a[href$="/leaked"]`)
	enter(alice, 200)
	alice.tabTo(t, "#leaked-key")
	typ(alice, "not a key")
	enter(alice, 422)
	focusOn(alice, "a refused paste", "#form-error", "No key was found")
	typ(alice, kb.Tab)
	typ(alice, kb.Enter)
	focusOn(alice, "Enter on the error's link", `#leaked-key[aria-invalid=true][aria-describedby~=form-error]`, "")
	typ(alice, first)
	enter(alice, 200)
	focusOn(alice, "revoking a leaked key", ".notice", "Revoked")

	root := b.signIn(t, gw, "root")
	gw.issue(t, "--name", "Everything", "--owner", "sales", "--scope", "*")
	root.open(t, "/console/review", 200)
	root.tabTo(t, "#bulk-confirm")
	typ(root, "revoke")
	typ(root, kb.Tab)
	enter(root, 422)
	focusOn(root, "a bulk revoke with no key ticked", "#form-error", "Tick the keys")
	typ(root, kb.Tab)
	typ(root, kb.Enter)
	focusOn(root, "Enter on the error's link", `input[name=id][aria-invalid=true][aria-describedby~=form-error]`, "")
	typ(root, " ")
	root.tabTo(t, "#bulk-confirm")
	typ(root, "revoke")
	typ(root, kb.Tab)
	focusOn(root, "typing revoke", "#bulk-submit", "Revoke 1 key")
	enter(root, 200)
	focusOn(root, "a bulk revoke", ".notice", "1 key revoked")
}
