package browser

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// TestStopNowIsAskedOnlyWithStopItNow: the rotate card shows "Yes, stop
// the old key now" only while "Stop it now" is chosen, and unticks it when
// it hides it (the server refuses the box beside a grace period). A
// rotation confirmed with it works. Screenshots at 1280 and 390 px.
func TestStopNowIsAskedOnlyWithStopItNow(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	shots := screenshotDir(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	root := b.signIn(t, gw, "root")

	gw.issue(t, "--name", "Rotating", "--owner", "alice", "--scope", "mail.send", "--expires", "30d")
	root.open(t, "/console/keys/"+gw.idOf(t, "Rotating"), 200)
	shown := func() bool {
		return run(t, root.ctx, chromedp.Evaluate[bool](`document.getElementById('stop-now').getClientRects().length > 0`))
	}
	choose := func(grace string) {
		t.Helper()
		root.do(t, chromedp.SetValue(chromedp.ID("grace"), grace),
			chromedp.Evaluate[chromedp.Void](`document.getElementById('grace').dispatchEvent(new Event('change'))`))
	}
	if shown() {
		t.Error(`with "24 hours" chosen, "Yes, stop the old key now" is shown`)
	}
	root.do(t, chromedp.ScrollIntoView(chromedp.CSS(`form[action$="/rotate"]`)))
	both(t, root, shots, "rotate-24h")
	choose("0")
	if !shown() {
		t.Fatal(`with "Stop it now" chosen, "Yes, stop the old key now" is not shown`)
	}
	root.do(t, chromedp.Click(chromedp.ID("stop-now")))
	root.do(t, chromedp.ScrollIntoView(chromedp.CSS(`form[action$="/rotate"]`)))
	both(t, root, shots, "rotate-stop-now")
	choose("7d")
	if shown() || run(t, root.ctx, chromedp.Evaluate[bool](`document.getElementById('stop-now').checked`)) {
		t.Error(`back to "7 days", the box is still shown or still ticked`)
	}
	choose("0")
	root.do(t, chromedp.Click(chromedp.ID("stop-now")))
	root.click(t, `form[action$="/rotate"] button[type=submit]`, 200)
	root.wantText(t, "main", "only time the key is shown")
}

// TestTheBulkRevokeCountsTheTickedKeys: the review's bulk revoke names how
// many keys are ticked, on its button and beside it, as they are ticked; a
// key listed in two sections is one key, its boxes ticked together. The
// keys counted are the keys revoked. Screenshots at 1280 and 390 px.
func TestTheBulkRevokeCountsTheTickedKeys(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	shots := screenshotDir(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	root := b.signIn(t, gw, "root")

	// One key in two sections (full access, never expires).
	gw.issue(t, "--name", "Forever one", "--owner", "alice", "--scope", "mail.send", "--expires", "never")
	gw.issue(t, "--name", "Forever all", "--owner", "ops", "--scope", "*", "--expires", "never")
	root.open(t, "/console/review", 200)
	button := func() string { return root.text(t, "#bulk-submit") }
	if got := button(); got != "Revoke ticked keys" {
		t.Errorf("with nothing ticked the button says %q", got)
	}
	all := gw.idOf(t, "Forever all")
	root.do(t, chromedp.Click(chromedp.ID("full-access-"+all)))
	if n := run(t, root.ctx, chromedp.Evaluate[int](`document.querySelectorAll('input[name=id][value="`+all+`"]:checked').length`)); n != 2 {
		t.Errorf("ticking a key in one section ticks %d of its boxes, want both", n)
	}
	if got := button(); got != "Revoke 1 key" {
		t.Errorf("with one key ticked (in two sections) the button says %q", got)
	}
	root.do(t, chromedp.Click(chromedp.ID("no-expiry-"+gw.idOf(t, "Forever one"))))
	if got := button(); got != "Revoke 2 keys" {
		t.Errorf("with two keys ticked the button says %q", got)
	}
	root.wantText(t, "#bulk-count", "2 keys ticked.")
	root.do(t, chromedp.SendKeys(chromedp.ID("bulk-confirm"), "revoke"), chromedp.ScrollIntoView(chromedp.ID("bulk-submit")))
	both(t, root, shots, "review-bulk-count")
	root.click(t, "#bulk-submit", 200)
	root.wantText(t, "main", "2 keys revoked")
}

// both saves a screenshot of tb's page at 1280 px and at 390 px.
func both(t *testing.T, tb *tab, dir, name string) {
	t.Helper()
	tb.shot(t, dir, name)
	tb.do(t, chromedp.EmulateViewport(390, 844))
	tb.shot(t, dir, name+"-390")
	tb.do(t, chromedp.EmulateViewport(1280, 900))
}

// TestBackAfterARevokeShowsTheKeyAsItIs: after revoking a key, Back
// shows its page as it is now (revoked), and Back again the keys list as it
// is now, not as the browser's back-forward cache kept them ("Active",
// with a revoke form that no longer applies).
func TestBackAfterARevokeShowsTheKeyAsItIs(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	alice := b.signIn(t, gw, "alice")
	gw.issue(t, "--name", "Gone", "--owner", "alice", "--scope", "mail.send", "--expires", "30d")
	gw.issue(t, "--name", "Kept", "--owner", "alice", "--scope", "mail.send", "--expires", "30d")
	alice.open(t, "/console/", 200)
	alice.open(t, "/console/keys/"+gw.idOf(t, "Gone"), 200)
	alice.do(t, chromedp.SendKeys(chromedp.ID("confirm"), "Gone"))
	alice.respond(t, 200, chromedp.Evaluate[chromedp.Void](`document.getElementById('revoke-submit').click()`))
	alice.waitText(t, ".notice", "Key revoked")
	// history.back: chromedp's NavigateBack waits for a load event, which
	// a page restored from the back-forward cache never fires.
	back := func() { run(t, alice.ctx, chromedp.Evaluate[bool](`(history.back(), true)`)) }
	back()
	alice.waitText(t, "main .status", "Revoked")
	back()
	// The list of current keys no longer has it.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		list := run(t, alice.ctx, chromedp.Evaluate[string](`(document.querySelector('table.keys') || {}).innerText || ""`))
		if strings.Contains(list, "Kept") && !strings.Contains(list, "Gone") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("back on the keys list after the revoke, it shows:\n%s", list)
		}
	}
}

// TestTimesAreAlsoShownInTheReadersZone: a reader whose browser is set to
// Berlin sees a key's exact times in their own zone first, then in UTC, as
// the page writes them: beside its creation and in the hover of a list's
// "Created" column.
func TestTimesAreAlsoShownInTheReadersZone(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	alice := b.signIn(t, gw, "alice")
	if _, err := chromedp.Call(alice.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Europe/Berlin"}); err != nil {
		t.Fatal(err)
	}
	gw.issue(t, "--name", "Zoned", "--owner", "alice", "--scope", "mail.send", "--expires", "30d")
	alice.open(t, "/console/", 200)
	hover := run(t, alice.ctx, chromedp.Evaluate[string](`document.querySelector('td[data-label="Created"] time').title`))
	alice.open(t, "/console/keys/"+gw.idOf(t, "Zoned"), 200)
	beside := run(t, alice.ctx, chromedp.Evaluate[string](`document.querySelector('[data-exact]').textContent`))
	// Berlin is UTC+1 in winter and UTC+2 in summer; either way, its
	// zone's name comes first and the UTC time after it.
	for what, text := range map[string]string{"the list's hover": hover, "the key page": beside} {
		if !strings.Contains(text, "GMT+") || !strings.Contains(text, "UTC") || strings.Index(text, "GMT+") > strings.Index(text, "UTC") {
			t.Errorf("%s: %q, want Berlin's time (GMT+1 or GMT+2), then UTC's", what, text)
		}
	}
}
