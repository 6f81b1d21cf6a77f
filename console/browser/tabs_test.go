package browser

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestTheSecondTabSaysTheKeyWasAlreadyStopped: a key's page is open in two
// tabs (two people of a team, or one person twice). One tab disables the
// key, then revokes it; the other, still showing it active, does the same
// afterwards. The second tab says nothing changed, the key being disabled
// or revoked already, rather than "Key disabled" or "Key revoked" as if it
// had done it (its reason, typed for a revocation that was not made, in no
// history). Before, it said it had.
func TestTheSecondTabSaysTheKeyWasAlreadyStopped(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	first, second := b.signIn(t, gw, "alice"), b.signIn(t, gw, "alice")
	gw.issue(t, "--name", "Shop orders", "--owner", "alice", "--scope", "mail.send", "--expires", "30d")
	id := gw.idOf(t, "Shop orders")
	page := "/console/keys/" + id
	revoke := func(tb *tab, reason string) {
		tb.do(t, chromedp.SendKeys(chromedp.ID("confirm"), "Shop orders"), chromedp.SendKeys(chromedp.ID("revoke-reason"), reason))
		tb.click(t, "#revoke-submit", 200)
	}

	first.open(t, page, 200)
	second.open(t, page, 200)
	first.click(t, `form[action$="/disable"] button`, 200)
	first.wantText(t, ".notice", "Key disabled")
	second.click(t, `form[action$="/disable"] button`, 200)
	if said := second.text(t, "main .notice"); strings.Contains(said, "Key disabled") || !strings.Contains(said, "already disabled") {
		t.Errorf("disabling in a second tab a key the first disabled says %q", said)
	}

	first.open(t, page, 200)
	second.open(t, page, 200)
	revoke(first, "the shop moved to another provider")
	first.wantText(t, ".notice", "Key revoked")
	revoke(second, "leaked in a ticket")
	if said := second.text(t, "main .notice"); strings.Contains(said, "Key revoked") || !strings.Contains(said, "already revoked") {
		t.Errorf("revoking in a second tab a key the first revoked says %q", said)
	}
	var events []struct{ Action, Reason string }
	if err := json.Unmarshal(gw.keys(t, "events", id, "--json"), &events); err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if ev.Reason == "leaked in a ticket" {
			t.Errorf("the history holds the reason of the revocation that was not made: %+v", events)
		}
	}
}
