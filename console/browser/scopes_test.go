package browser

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestScopesByResourceInTheBrowser: the create form offers templates.read
// and templates.write as one row, None / Read / Read and write. Alice
// chooses "Read and write" with the keyboard (the arrow keys of a radio
// group) and mail.send: the key holds the three scopes, and opens the
// routes of all three through the gateway. A key set to templates.write
// alone with the CLI shows "Write only", and saving its form as shown
// leaves its scopes as they were.
func TestScopesByResourceInTheBrowser(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	shots := screenshotDir(t)
	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)
	alice := b.signIn(t, gw, "alice")

	alice.open(t, "/console/new", 200)
	legend := run(t, alice.ctx, chromedp.Evaluate[string](`(() => {
		const fs = document.getElementById('access-templates').closest('fieldset');
		return fs.querySelector('legend').innerText;
	})()`))
	if legend != "Templates" {
		t.Errorf("the templates row's group is named %q, want Templates", legend)
	}
	if n := run(t, alice.ctx, chromedp.Evaluate[int](`document.querySelectorAll('input[name=scope][value^="templates."]').length`)); n != 0 {
		t.Errorf("%d templates scopes are checkboxes beside their row", n)
	}
	// Every radio button and checkbox of the scopes has a label.
	if unlabelled := run(t, alice.ctx, chromedp.Evaluate[int](`Array.from(document.querySelectorAll('#scopes input')).filter(i => i.labels.length === 0).length`)); unlabelled != 0 {
		t.Errorf("%d inputs of the scopes have no label", unlabelled)
	}
	alice.do(t, chromedp.SendKeys(chromedp.ID("name"), "Template sync"),
		chromedp.Click(chromedp.CSS(`input[name=scope][value="mail.send"]`)),
		chromedp.Focus(chromedp.ID("access-templates")),
		chromedp.KeyEvent(kb.ArrowDown), chromedp.KeyEvent(kb.ArrowDown))
	chosen := run(t, alice.ctx, chromedp.Evaluate[string](`document.querySelector('input[name="access.templates"]:checked').value`))
	if chosen != "read-write" {
		t.Fatalf("two arrow keys from None chose %q, want read-write", chosen)
	}
	alice.shot(t, shots, "create-scopes")
	alice.click(t, `form.settings button[type=submit]`, 200)
	key := alice.value(t, "#secret")
	if !keyPattern.MatchString(key) {
		t.Fatalf("the reveal page shows %q, not a key", key)
	}
	if got := gw.scopesOf(t, "Template sync"); !slices.Equal(got, []string{"mail.send", "templates.read", "templates.write"}) {
		t.Errorf("the key holds %q, want mail.send, templates.read and templates.write", got)
	}
	for _, m := range []string{"GET", "POST"} {
		if s := gw.request(t, m, "/v3/templates", key); s != http.StatusAccepted {
			t.Errorf("%s /v3/templates with the key: %d", m, s)
		}
	}
	if s, code := gw.send(t, key, "orders@shop.example.com"); s != 202 {
		t.Errorf("a send with the key: %d %s", s, code)
	}

	// Its page shows the row as chosen; saved as shown, nothing changes.
	alice.click(t, `a.button[href^="/console/keys/"]`, 200)
	if v := run(t, alice.ctx, chromedp.Evaluate[string](`document.querySelector('input[name="access.templates"]:checked').value`)); v != "read-write" {
		t.Errorf("the key's page shows templates as %q", v)
	}

	// A key the CLI set to templates.write alone: "Write only", checked,
	// and kept as it is by a save.
	gw.issue(t, "--name", "Template upload", "--owner", "alice", "--scope", "templates.write", "--scope", "mail.send", "--expires", "30d")
	alice.open(t, "/console/keys/"+gw.idOf(t, "Template upload"), 200)
	if v := run(t, alice.ctx, chromedp.Evaluate[string](`document.querySelector('input[name="access.templates"]:checked').value`)); v != "write" {
		t.Errorf("a key of templates.write alone shows templates as %q, want write (Write only)", v)
	}
	alice.do(t, chromedp.Click(chromedp.CSS(`details.edit > summary`)))
	alice.shot(t, shots, "key-write-only")
	alice.click(t, `form[action$="/settings"] button[type=submit]`, 200)
	alice.wantText(t, "main", "nothing changed")
	if got := gw.scopesOf(t, "Template upload"); !slices.Equal(got, []string{"templates.write", "mail.send"}) {
		t.Errorf("after saving its form as shown the key holds %q", got)
	}
}

// scopesOf returns the scopes of the key with this name, as the store
// holds them.
func (g *gateway) scopesOf(t *testing.T, name string) []string {
	t.Helper()
	return g.recordNamed(t, name).Scopes
}

// request sends an empty request with the key and returns the status.
func (g *gateway) request(t *testing.T, method, path, key string) int {
	t.Helper()
	req, _ := http.NewRequest(method, g.url+path, strings.NewReader(""))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
