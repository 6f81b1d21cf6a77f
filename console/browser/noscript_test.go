package browser

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// TestANewKeyDoesNotComeBackWithoutScript: a person whose browser runs no
// script (switched off, or the console's script blocked) creates a key,
// copies it from its page and leaves, to the key's page or to another
// site (where the integration's settings are), then presses Back: the page
// says the key is no longer shown, and holds no key. Chromium keeps pages
// in its back-forward cache even when they are sent no-store, unless a
// cookie changed since they loaded; before, the key came back from there
// (the page's script, which wipes it when the page is left, did not run).
func TestANewKeyDoesNotComeBackWithoutScript(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			gw := startCaddy(t, caddyBin, scheme)
			var trust []chromedp.ExecAllocatorOption
			if scheme == "https" {
				trust = append(trust, chromedp.Flag("ignore-certificate-errors-spki-list", gw.spki))
			}
			noScriptBack(t, gw, newBrowser(t, chromium, trust...))
		})
	}
}

func noScriptBack(t *testing.T, gw *gateway, b *browser) {
	alice := b.signIn(t, gw, "alice")
	if _, err := chromedp.Call(alice.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>The CRM's settings</title><h1>API settings</h1>`)
	}))
	defer elsewhere.Close()

	for _, leave := range []struct {
		to   string
		away func(tb *tab, id string)
	}{
		{"the key's page", func(tb *tab, id string) { tb.open(t, "/console/keys/"+id, 200) }},
		{"another site", func(tb *tab, _ string) { tb.do(t, chromedp.Navigate(elsewhere.URL)) }},
	} {
		name := "Copied, then " + leave.to
		alice.open(t, "/console/new", 200)
		alice.do(t, chromedp.SendKeys(chromedp.ID("name"), name),
			chromedp.Click(chromedp.CSS(`input[name=scope][value="mail.send"]`)))
		alice.click(t, `form.settings button[type=submit]`, 200)
		key := keyPattern.FindString(alice.document(t))
		if key == "" {
			t.Fatalf("without script the new key's page shows no key:\n%s", alice.document(t))
		}
		leave.away(alice, gw.idOf(t, name))
		alice.back(t, "/console/reveal/")
		// The page is there once it holds the key or says it is gone.
		var doc string
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if doc = alice.document(t); strings.Contains(doc, key) || strings.Contains(doc, "no longer shown") {
				break
			}
		}
		if strings.Contains(doc, key) {
			t.Errorf("without script, Back after leaving for %s shows the new key again", leave.to)
		} else if !strings.Contains(doc, "no longer shown") {
			t.Errorf("without script, Back after leaving for %s shows neither the key nor that it is gone:\n%s", leave.to, doc)
		}
	}
}

// document returns the page's markup as the browser holds it, read through
// the DevTools DOM (which needs no script in the page, and reads a page the
// back-forward cache brought back).
// A document being replaced (a navigation) is asked again.
func (tb *tab) document(t *testing.T) string {
	t.Helper()
	var err error
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		var doc dom.GetDocumentResult
		if doc, err = chromedp.Call(tb.ctx, dom.GetDocument, dom.GetDocumentParams{}); err != nil {
			continue
		}
		var html dom.GetOuterHTMLResult
		if html, err = chromedp.Call(tb.ctx, dom.GetOuterHTML, dom.GetOuterHTMLParams{NodeID: doc.Root.NodeID}); err == nil {
			return html.OuterHTML
		}
	}
	t.Fatalf("the page's markup: %v", err)
	return ""
}

// back goes one step back in the tab's history, as the Back button does,
// to a page whose address holds want, without waiting for a load: a page
// the back-forward cache brings back fires none.
func (tb *tab) back(t *testing.T, want string) {
	t.Helper()
	h, err := chromedp.Call(tb.ctx, page.GetNavigationHistory, cdp.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if h.CurrentIndex < 1 || !strings.Contains(h.Entries[h.CurrentIndex-1].URL, want) {
		t.Fatalf("the page before this one is not at %s", want)
	}
	if _, err := chromedp.Call(tb.ctx, page.NavigateToHistoryEntry, page.NavigateToHistoryEntryParams{EntryID: h.Entries[h.CurrentIndex-1].ID}); err != nil {
		t.Fatal(err)
	}
}
