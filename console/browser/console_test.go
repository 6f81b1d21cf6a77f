package browser

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// The console end to end, as people use it: a real caddy binary (built by
// the root package's test, named by KEYGATE_TEST_CADDY) serving a gateway
// and the console behind basic_auth on one site and one store, driven
// through headless Chromium. Screenshots of every page are written to
// $KEYGATE_CONSOLE_SCREENSHOTS (default: a new temporary directory).

var keyPattern = regexp.MustCompile(`kg_live_[0-9A-Za-z]{49}`)

const password = "correct horse battery staple"

func TestConsoleInTheBrowser(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	shots := screenshotDir(t)

	gw := startCaddy(t, caddyBin, "http")
	b := newBrowser(t, chromium)

	// Every page on the way is checked for what people with a keyboard
	// alone, a screen reader, a 200 % zoom (640 px of a 1280 px window) or
	// a phone need (see accessible and fits), and has a title of its own.
	titles := map[string]string{}
	usable := func(tb *tab, page string) {
		t.Helper()
		tb.accessible(t, page, titles)
		tb.fits(t, page, 375, 1)
		tb.fits(t, page, 640, 2)
	}

	// Alice signs in with basic_auth: her team has no keys yet.
	alice := b.signIn(t, gw, "alice")
	alice.open(t, "/console/", 200)
	alice.wantText(t, "main", "No keys yet")
	alice.shot(t, shots, "keys-empty")
	usable(alice, "the keys page")

	// She creates a key that may send, only from shop.example.com.
	alice.click(t, `a.button.primary[href="/console/new"]`, 200)
	usable(alice, "the create page")
	alice.do(t, chromedp.SendKeys(chromedp.ID("name"), "Shop order emails"),
		chromedp.Click(chromedp.CSS(`input[name=scope][value="mail.send"]`)),
		chromedp.Click(chromedp.CSS(`details.limits > summary`)),
		chromedp.SendKeys(chromedp.ID("sender-domains"), "shop.example.com"),
		chromedp.SendKeys(chromedp.ID("reason"), "the shop's order confirmations"))
	alice.shot(t, shots, "create")
	alice.click(t, `form.settings button[type=submit]`, 200)
	if !strings.Contains(alice.location(t), "/console/reveal/") {
		t.Fatalf("after creating, the browser is at %s", alice.location(t))
	}
	key := alice.value(t, "#secret")
	if !keyPattern.MatchString(key) {
		t.Fatalf("the reveal page shows %q, not a key", key)
	}
	if copyShown := run(t, alice.ctx, chromedp.Evaluate[bool](`!document.querySelector('[data-copy=secret]').hidden`)); !copyShown {
		t.Errorf("the copy button is not shown")
	}
	// On a phone and at 200 % the whole key is in view, wrapped, not cut
	// off, and its copy button beside or below it.
	for _, at := range []struct {
		width int64
		zoom  float64
	}{{375, 1}, {640, 2}} {
		alice.do(t, chromedp.EmulateViewport(at.width, 844, chromedp.EmulateScale(at.zoom)))
		if fits := run(t, alice.ctx, chromedp.Evaluate[bool](`(() => { const s = document.getElementById('secret'); return s.scrollWidth <= s.clientWidth && s.scrollHeight <= s.clientHeight; })()`)); !fits {
			t.Errorf("at %d px, %.0f%% the key does not fit its box", at.width, at.zoom*100)
		}
	}
	alice.do(t, chromedp.EmulateViewport(1280, 900))
	usable(alice, "the reveal page")
	alice.wantText(t, "main", "only time the key is shown")
	alice.wantText(t, "#snippet", "Bearer "+key)
	alice.shot(t, shots, "reveal")

	// The key sends through the gateway; a send from another domain is
	// refused.
	if s, code := gw.send(t, key, "orders@shop.example.com"); s != 202 {
		t.Fatalf("a send with the new key: %d %s", s, code)
	}
	if s, code := gw.send(t, key, "someone@elsewhere.example"); s != 403 || code != "sender_not_allowed" {
		t.Fatalf("a send from another domain: %d %s", s, code)
	}

	// Leaving the reveal page and coming back never shows the key again.
	alice.click(t, `a.button[href^="/console/keys/"]`, 200)
	keyURL := alice.location(t)
	alice.do(t, chromedp.NavigateBack())
	if html := alice.html(t); strings.Contains(html, key) {
		t.Fatalf("going back to the reveal page shows the key again")
	}
	alice.do(t, chromedp.Reload())
	if html := alice.html(t); strings.Contains(html, key) || !strings.Contains(html, "no longer shown") {
		t.Fatalf("reloading the reveal page shows the key again, or no explanation")
	}

	// The whole key pasted into the search finds it, and only its hint
	// reaches the URL (and so the access log).
	alice.open(t, "/console/", 200)
	alice.do(t, chromedp.SendKeys(chromedp.ID("q"), key))
	alice.click(t, `form[role=search] button[type=submit]`, 200)
	if loc := alice.location(t); strings.Contains(loc, key[8:30]) || !strings.Contains(loc, key[:16]) {
		t.Errorf("a key pasted into the search went to %s; want only its hint there", loc)
	}
	alice.wantText(t, "table.keys", "Shop order emails")

	// The key's page shows the two requests.
	alice.open(t, strings.TrimPrefix(keyURL, gw.url), 200)
	alice.wantText(t, ".totals", "Allowed\n1")
	alice.wantText(t, ".totals", "Refused\n1")
	alice.wantText(t, "main", "sender_not_allowed")
	alice.wantText(t, "main", "the sender address is outside the API key's sender domains")
	alice.wantText(t, ".timeline", "console alice from 127.0.0.1")
	alice.shot(t, shots, "key")
	usable(alice, "a key's page")

	// Rotate with an hour's grace: both keys work meanwhile.
	alice.do(t, chromedp.SetValue(chromedp.ID("grace"), "1h"))
	alice.click(t, `form[action$="/rotate"] button[type=submit]`, 200)
	next := alice.value(t, "#secret")
	if !keyPattern.MatchString(next) || next == key {
		t.Fatalf("rotating shows %q", next)
	}
	alice.wantText(t, "main", "replacing")
	for _, k := range []string{key, next} {
		if s, code := gw.send(t, k, "orders@shop.example.com"); s != 202 {
			t.Fatalf("during the grace period: %d %s", s, code)
		}
	}

	// Revoke the new key: the button works only once its name is typed.
	alice.click(t, `a.button[href^="/console/keys/"]`, 200)
	if !alice.disabled(t, "#revoke-submit") {
		t.Errorf("the revoke button works before the name is typed")
	}
	alice.do(t, chromedp.SendKeys(chromedp.ID("confirm"), "Shop order"))
	if !alice.disabled(t, "#revoke-submit") {
		t.Errorf("the revoke button works with half the name typed")
	}
	alice.do(t, chromedp.SendKeys(chromedp.ID("confirm"), " emails"), chromedp.SendKeys(chromedp.ID("revoke-reason"), "test of the console"))
	if alice.disabled(t, "#revoke-submit") {
		t.Fatalf("the revoke button does not work with the name typed")
	}
	alice.click(t, "#revoke-submit", 200)
	alice.wantText(t, ".notice", "Key revoked")
	alice.shot(t, shots, "key-revoked")
	usable(alice, "a key's page")
	if s, code := gw.send(t, next, "orders@shop.example.com"); s != 401 || code != "revoked_key" {
		t.Fatalf("the first request after the revoke: %d %s, want 401 revoked_key", s, code)
	}

	// The old key, still in its grace period, leaks: paste it to stop it.
	alice.open(t, "/console/leaked", 200)
	alice.shot(t, shots, "leaked")
	usable(alice, "the leaked key page")
	alice.do(t, chromedp.SendKeys(chromedp.ID("leaked-key"), key), chromedp.SendKeys(chromedp.ID("reason"), "pasted in a public ticket"))
	alice.click(t, `form.settings button[type=submit]`, 200)
	alice.wantText(t, ".notice", "Revoked")
	if html := alice.html(t); strings.Contains(html, key) {
		t.Errorf("the leaked key is shown back")
	}
	if s, code := gw.send(t, key, "orders@shop.example.com"); s != 401 || code != "revoked_key" {
		t.Fatalf("the leaked key after revoking it: %d %s", s, code)
	}

	// More keys of alice's team, used a little, for the keys page.
	for _, name := range []string{"CRM sync", "Newsletter", "Password resets"} {
		k := gw.issue(t, "--name", name, "--owner", "alice", "--scope", "mail.send", "--expires", "30d")
		for range 3 {
			gw.send(t, k, "news@shop.example.com")
		}
	}
	alice.open(t, "/console/", 200)
	alice.wantText(t, "table.keys", "CRM sync")
	alice.shot(t, shots, "keys")
	usable(alice, "the keys page")
	// A name with no place to break it stays within a phone's width, on
	// the list and on its page.
	longName := strings.Repeat("nightly_export_", 10)
	gw.issue(t, "--name", longName, "--owner", "alice", "--scope", "mail.send")
	longPage := "/console/keys/" + gw.idOf(t, longName)
	alice.do(t, chromedp.EmulateViewport(390, 844))
	fits := func(page string) {
		t.Helper()
		if wide := run(t, alice.ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); wide > 391 {
			t.Errorf("at 390 px %s is %d px wide", page, wide)
		}
	}
	alice.open(t, "/console/", 200)
	fits("the keys page")
	// Each filter's choice is shown whole, not cut short ("All current
	// key…"): its longest option's text fits inside its box.
	if cut := run(t, alice.ctx, chromedp.Evaluate[[]string](`(() => {
		const ctx = document.createElement('canvas').getContext('2d');
		return Array.from(document.querySelectorAll('.filters select')).filter(sel => {
			const st = getComputedStyle(sel);
			ctx.font = st.font;
			const room = sel.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight) - 24; // the arrow
			return Array.from(sel.options).some(o => ctx.measureText(o.text).width > room);
		}).map(sel => sel.id);
	})()`)); len(cut) > 0 {
		t.Errorf("at 390 px the filters %v cut their choices short", cut)
	}
	alice.shot(t, shots, "keys-390")
	alice.open(t, strings.TrimPrefix(keyURL, gw.url), 200)
	alice.shot(t, shots, "key-390")
	alice.do(t, chromedp.EmulateViewport(1280, 900))
	alice.open(t, longPage, 200)
	// A checkbox in an action card is a checkbox's size, beside its words.
	if w := run(t, alice.ctx, chromedp.Evaluate[float64](`document.querySelector('input[name=stop_now]').getBoundingClientRect().width`)); w > 40 {
		t.Errorf("the “stop the old key now” checkbox is %.0f px wide", w)
	}
	alice.do(t, chromedp.EmulateViewport(390, 844))
	alice.open(t, longPage, 200)
	fits("the page of a key with a long name")
	alice.do(t, chromedp.EmulateViewport(1280, 900))

	// The admin sees every team's keys, in every state.
	for _, k := range [][]string{
		{"--name", "Order confirmations", "--owner", "web-shop", "--scope", "mail.send", "--expires", "90d", "--sender-domain", "shop.example.com"},
		{"--name", "Weekly newsletter", "--owner", "marketing", "--scope", "mail.send", "--scope", "templates.read", "--expires", "365d"},
		{"--name", "Agency: spring campaign", "--owner", "marketing", "--scope", "mail.send", "--expires", "5d"},
		{"--name", "Staging", "--owner", "web-shop", "--scope", "mail.send", "--env", "test", "--expires", "30d"},
		{"--name", "Old CRM export", "--owner", "sales", "--scope", "*"},
	} {
		key := gw.issue(t, k...)
		if k[1] != "Old CRM export" {
			for range 2 + len(k[1])%4 {
				gw.send(t, key, "news@shop.example.com")
			}
		}
	}
	gw.keys(t, "update", gw.idOf(t, "Old CRM export"), "--disable", "--reason", "nobody owns it")
	root := b.signIn(t, gw, "root")
	root.open(t, "/console/", 200)
	root.wantText(t, "table.keys", "Weekly newsletter")
	root.wantText(t, "table.keys", "Disabled")
	root.shot(t, shots, "keys-admin")

	// A name that is markup is shown as text.
	evil := `<script>document.title="pwned"</script><img src=x onerror="document.title='pwned'">`
	alice.open(t, "/console/new", 200)
	alice.do(t, chromedp.SendKeys(chromedp.ID("name"), evil), chromedp.Click(chromedp.CSS(`input[name=scope][value="mail.send"]`)))
	alice.click(t, `form.settings button[type=submit]`, 200)
	alice.open(t, "/console/?q=script", 200)
	if title := run(t, alice.ctx, chromedp.Title()); title == "pwned" {
		t.Fatalf("a key's name ran as script")
	}
	if n := run(t, alice.ctx, chromedp.Evaluate[int](`document.querySelectorAll('main img, main script').length`)); n != 0 {
		t.Errorf("a key's name became %d elements", n)
	}
	alice.wantText(t, "table.keys", evil)

	// A date typed for the expiry chooses "On a date" (a date beside
	// another choice would be refused), and a refused form's error is
	// where the eye and the screen reader are: focused.
	alice.open(t, "/console/new", 200)
	if onDate := run(t, alice.ctx, chromedp.Evaluate[bool](`(() => {
		const d = document.getElementById('expires-date');
		d.value = '2030-01-15';
		d.dispatchEvent(new Event('input', {bubbles: true}));
		return document.querySelector('input[name=expires][value=date]').checked;
	})()`)); !onDate {
		t.Error("typing an expiry date did not choose “On a date”")
	}
	alice.click(t, `form.settings button[type=submit]`, 422) // no name, no scope
	if focused := run(t, alice.ctx, chromedp.Evaluate[string](`document.activeElement && document.activeElement.id`)); focused != "form-error" {
		t.Errorf("after a refused form the focus is on %q, want the error (#form-error)", focused)
	}
	// Both things wrong are said at once, and Enter on the summary's link
	// goes to its field without submitting the form again (the browser
	// moves focus on keydown, and the keypress would land in the field).
	alice.wantText(t, "#form-error", "Fix these 2 things")
	alice.shot(t, shots, "new-refused")
	usable(alice, "the refused create page")
	run(t, alice.ctx, chromedp.Evaluate[bool](`window.kgSamePage = true`))
	alice.do(t, chromedp.Focus(chromedp.CSS(`#form-error a[href="#name"]`)), chromedp.KeyEvent(kb.Enter), chromedp.Sleep(300*time.Millisecond))
	if same := run(t, alice.ctx, chromedp.Evaluate[bool](`window.kgSamePage === true`)); !same {
		t.Error("Enter on the error summary's link submitted the form again")
	}
	if focused := run(t, alice.ctx, chromedp.Evaluate[string](`document.activeElement && document.activeElement.id`)); focused != "name" {
		t.Errorf("after Enter on the summary's link the focus is on %q, want the field (#name)", focused)
	}

	// Bob, of another team, sees none of it, not even by typing its address
	// or by sending crafted requests with his own valid form token.
	aliceKey := gw.issue(t, "--name", "alice-private", "--owner", "alice", "--scope", "mail.send")
	aliceID := gw.idOf(t, "alice-private")
	bob := b.signIn(t, gw, "bob")
	bob.open(t, "/console/", 200)
	bob.wantText(t, "main", "No keys yet")
	bob.open(t, "/console/keys/"+aliceID, 404)
	bob.wantText(t, "h1", "Key not found")
	if html := bob.html(t); strings.Contains(html, "alice-private") {
		t.Errorf("bob sees the name of alice's key")
	}
	bob.shot(t, shots, "not-found")
	usable(bob, "the not-found page")
	bob.open(t, "/console/new", 200)
	for _, action := range []string{"disable", "revoke", "rotate", "settings"} {
		status := run(t, bob.ctx, chromedp.Evaluate[int](fmt.Sprintf(`(async () => {
			const body = new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value,
				confirm: 'alice-private', name: 'pwned', scope: 'mail.send', expires: 'keep', grace: '0'});
			const r = await fetch('/console/keys/%s/%s', {method: 'POST', body});
			return r.status;
		})()`, aliceID, action), chromedp.EvalAwaitPromise))
		if status != 404 {
			t.Errorf("bob's crafted %s of alice's key: %d, want 404", action, status)
		}
	}
	if s, code := gw.send(t, aliceKey, "orders@shop.example.com"); s != 202 {
		t.Fatalf("alice's key after bob's attempts: %d %s", s, code)
	}

	// Another site makes alice's browser post a change: refused, although
	// her browser sends her credentials.
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form method="post" action="%s/console/keys/%s/disable"><input name="csrf" value="guess"></form>
<script>document.forms[0].submit()</script>`, gw.url, aliceID)
	}))
	defer attacker.Close()
	alice.do(t, chromedp.Navigate(attacker.URL))
	alice.waitText(t, "h1", "This form was not accepted")
	if !strings.HasPrefix(alice.location(t), gw.url) {
		t.Fatalf("the forged form did not reach the console: %s", alice.location(t))
	}
	alice.shot(t, shots, "csrf-refused")
	if s, code := gw.send(t, aliceKey, "orders@shop.example.com"); s != 202 {
		t.Fatalf("alice's key after a forged disable: %d %s", s, code)
	}

	// The admin's review lists what needs a look, across teams.
	root.open(t, "/console/review", 200)
	root.wantText(t, "main", "Keys that never expire")
	root.wantText(t, "main", "alice-private")
	root.shot(t, shots, "review")
	usable(root, "the review page")
	root.open(t, "/console/keys/"+aliceID+"?window=30d", 200)
	root.shot(t, shots, "key-admin-30d")

	// The pages name their icon: the browser never asks the site's root
	// for /favicon.ico, which the gateway would log and count as a
	// request without a key each time someone opens the console.
	if log, _ := os.ReadFile(filepath.Join(gw.dir, "caddy.log")); strings.Contains(string(log), `"path":"/favicon.ico"`) {
		t.Error("the browser asked the gateway for /favicon.ico: a console page names no icon")
	}

	t.Logf("screenshots of every page: %s", shots)
	fmt.Printf("keygate console screenshots: %s\n", shots)
}

// prerequisites returns the caddy binary and Chromium, or skips t (fails
// it under CI=true) when either is missing.
func prerequisites(t *testing.T) (caddyBin, chromium string) {
	caddyBin, chromium = os.Getenv("KEYGATE_TEST_CADDY"), findChromium()
	for what, missing := range map[string]bool{
		"a caddy binary (KEYGATE_TEST_CADDY; the root package's TestConsoleInABrowser sets it)": caddyBin == "",
		"Chromium (apt-get install chromium)":                                                   chromium == "",
	} {
		if !missing {
			continue
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("the browser test needs %s", what)
		}
		t.Skipf("the browser test needs %s", what)
	}
	return caddyBin, chromium
}

func findChromium() string {
	if p := os.Getenv("KEYGATE_TEST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func screenshotDir(t *testing.T) string {
	dir := os.Getenv("KEYGATE_CONSOLE_SCREENSHOTS")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "keygate-console-screenshots-"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// gateway is the caddy process: the gateway and the console on one site.
type gateway struct {
	bin, url, store, dir string
	upstream             atomic.Int64
	// client sends to the site: over HTTPS it trusts the internal CA,
	// whose leaf certificate's public key spki is (base64 of its SHA-256,
	// as Chromium's --ignore-certificate-errors-spki-list takes it).
	client *http.Client
	spki   string
}

// freePort returns a loopback port nothing listens on, picked at random
// below Linux's default ephemeral range (32768 on): outgoing connections take
// their local ports from that range, as ":0" does, so a port picked with
// ":0" can be taken by another test's connection before caddy binds it. The
// plugin's tests do the same with internal/testservers.FreePort, which this
// module cannot import; as it, KEYGATE_TEST_PORTS=LO-HI picks them in that
// range instead, for a machine whose sessions each keep to a range of their
// own.
func freePort(t *testing.T) int {
	lo, hi := 20000, 31999
	if r := os.Getenv("KEYGATE_TEST_PORTS"); r != "" {
		if n, _ := fmt.Sscanf(r, "%d-%d", &lo, &hi); n != 2 || hi <= lo {
			t.Fatalf("KEYGATE_TEST_PORTS=%q: want LO-HI, such as 29500-29699", r)
		}
	}
	for range 200 {
		p := lo + rand.IntN(hi-lo+1)
		if _, taken := handedOut.LoadOrStore(p, true); taken {
			continue
		}
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatalf("no free loopback port in %d-%d", lo, hi)
	return 0
}

var handedOut sync.Map // port -> true, every port freePort returned

// startCaddy serves the gateway and the console on one site, over scheme:
// "http", or "https" with a certificate from Caddy's internal CA (no root
// installed into the machine's trust stores, no port-80 redirects).
func startCaddy(t *testing.T, bin, scheme string) *gateway {
	dir := t.TempDir()
	g := &gateway{bin: bin, dir: dir, store: "sqlite:" + filepath.Join(dir, "keys.db"), client: http.DefaultClient}
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.upstream.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(provider.Close)
	port, admin := freePort(t), freePort(t)
	g.url = fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
	global, site := "", ""
	if scheme == "https" {
		global, site = "\n\tskip_install_trust\n\tauto_https disable_redirects", "\n\ttls internal"
	}
	hashes := map[string]string{}
	for _, u := range []string{"root", "alice", "bob"} {
		out, err := exec.Command(bin, "hash-password", "--plaintext", password+" "+u).Output()
		if err != nil {
			t.Fatalf("caddy hash-password: %v", err)
		}
		hashes[u] = strings.TrimSpace(string(out))
	}
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%[1]d%[8]s
}
%[2]s {
	bind 127.0.0.1%[9]s
	redir /console /console/
	handle_path /console/* {
		basic_auth {
			root %[3]s
			alice %[4]s
			bob %[5]s
		}
		keygate_console {
			store %[6]s
			admin root
		}
	}
	handle {
		keygate {
			store %[6]s
			scope mail.send POST /v3/mail/send
			scope templates.read GET /v3/templates*
			scope templates.write POST /v3/templates*
			mail_api sendgrid
		}
		reverse_proxy %[7]s
	}
}
`, admin, g.url, hashes["root"], hashes["alice"], hashes["bob"], g.store, strings.TrimPrefix(provider.URL, "http://"), global, site)
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "caddy.log"))
			t.Logf("caddy log:\n%s", b)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "caddy.log"))
			t.Fatalf("caddy exited at start:\n%s", b)
		default:
		}
		if scheme == "https" && g.spki == "" && !g.trustInternalCA(admin) {
			continue
		}
		if resp, err := g.client.Get(g.url + "/console/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return g
			}
		}
	}
	t.Fatal("caddy did not start")
	return nil
}

// trustInternalCA points g.client at the root of Caddy's internal CA (the
// admin API's /pki/ca/local) and notes the site's certificate key, once a
// handshake verified by that root succeeds.
func (g *gateway) trustInternalCA(admin int) bool {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/pki/ca/local", admin))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var ca struct {
		Root string `json:"root_certificate"`
	}
	pool := x509.NewCertPool()
	if json.NewDecoder(resp.Body).Decode(&ca) != nil || !pool.AppendCertsFromPEM([]byte(ca.Root)) {
		return false
	}
	conf := &tls.Config{RootCAs: pool}
	c, err := tls.Dial("tcp", strings.TrimPrefix(g.url, "https://"), conf)
	if err != nil {
		return false
	}
	defer c.Close()
	sum := sha256.Sum256(c.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	g.spki = base64.StdEncoding.EncodeToString(sum[:])
	g.client = &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
	return true
}

// send posts a SendGrid message from the address with the key, and returns
// the status and the denial code.
func (g *gateway) send(t *testing.T, key, from string) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"personalizations":[{"to":[{"email":"ann@example.org"}]}],"from":{"email":%q},"subject":"Your order","content":[{"type":"text/plain","value":"Thanks"}]}`, from)
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v3/mail/send", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code
}

// issue runs `caddy keys issue` on the store, as an operator would beside
// the console, and returns the key.
func (g *gateway) issue(t *testing.T, args ...string) string {
	t.Helper()
	out := g.keys(t, append([]string{"issue", "--json"}, args...)...)
	var res struct{ Key string }
	if err := json.Unmarshal(out, &res); err != nil || res.Key == "" {
		t.Fatalf("caddy keys issue: %v: %s", err, out)
	}
	return res.Key
}

// idOf returns the id of the key with this name.
func (g *gateway) idOf(t *testing.T, name string) string {
	t.Helper()
	return g.recordNamed(t, name).ID
}

// keyRecord is what the tests read of a key's record.
type keyRecord struct {
	ID, Name string
	Scopes   []string
}

// recordNamed returns the record of the key with this name, as `caddy keys
// list` prints it.
func (g *gateway) recordNamed(t *testing.T, name string) keyRecord {
	t.Helper()
	var recs []keyRecord
	if err := json.Unmarshal(g.keys(t, "list", "--json"), &recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no key named %q", name)
	return keyRecord{}
}

func (g *gateway) keys(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(g.bin, append(append([]string{"keys"}, args...), "--store", g.store)...)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(g.dir, "data"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("caddy keys %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// TestConsoleOverHTTPS is the console as production serves it: over HTTPS
// (Caddy's internal CA here; Chromium accepts the site's certificate by its
// key, as a browser that trusts the CA would). A person creates a key and
// sees it once: the reveal cookie arrives Secure, HttpOnly and
// SameSite=Strict and Chromium keeps it, the snippet names the https
// gateway, a reload does not show the key again; the key sends, and revoking
// it in the console stops it at once.
func TestConsoleOverHTTPS(t *testing.T) {
	caddyBin, chromium := prerequisites(t)
	shots := screenshotDir(t)
	gw := startCaddy(t, caddyBin, "https")
	b := newBrowser(t, chromium, chromedp.Flag("ignore-certificate-errors-spki-list", gw.spki))
	alice := b.signIn(t, gw, "alice")

	// Every Set-Cookie of the reveal token, as the browser received it,
	// and whether the browser refused it.
	var mu sync.Mutex
	var setCookies, blocked []string
	go func() {
		for ev, err := range chromedp.Events(alice.ctx, network.ResponseReceivedExtraInfo) {
			if err != nil {
				return
			}
			for name, v := range ev.Headers {
				if s, _ := v.(string); strings.EqualFold(name, "set-cookie") && strings.Contains(s, "keygate_reveal=") {
					mu.Lock()
					setCookies = append(setCookies, strings.Split(s, "\n")...)
					for _, bc := range ev.BlockedCookies {
						blocked = append(blocked, bc.CookieLine)
					}
					mu.Unlock()
				}
			}
		}
	}()

	alice.open(t, "/console/", 200)
	if loc := alice.location(t); !strings.HasPrefix(loc, "https://") {
		t.Fatalf("the console is at %s", loc)
	}
	alice.click(t, `a.button.primary[href="/console/new"]`, 200)
	alice.do(t, chromedp.SendKeys(chromedp.ID("name"), "Shop over HTTPS"),
		chromedp.Click(chromedp.CSS(`input[name=scope][value="mail.send"]`)),
		chromedp.SendKeys(chromedp.ID("reason"), "the shop's order confirmations"))
	alice.click(t, `form.settings button[type=submit]`, 200)
	key := alice.value(t, "#secret")
	if !keyPattern.MatchString(key) {
		t.Fatalf("the reveal page over HTTPS shows %q, not a key", key)
	}
	alice.wantText(t, "#snippet", gw.url+"/v3/mail/send")
	alice.shot(t, shots, "https-reveal")
	alice.do(t, chromedp.Reload())
	if html := alice.html(t); strings.Contains(html, key) || !strings.Contains(html, "no longer shown") {
		t.Fatalf("reloading the reveal page over HTTPS shows the key again, or no explanation")
	}
	mu.Lock()
	cookies, refused := slices.Clone(setCookies), slices.Clone(blocked)
	mu.Unlock()
	if len(cookies) == 0 || len(refused) > 0 {
		t.Fatalf("the reveal cookie: set %q, refused by the browser %q", cookies, refused)
	}
	for _, c := range cookies {
		attrs := strings.Split(c, "; ")
		for _, want := range []string{"Secure", "HttpOnly", "SameSite=Strict"} {
			if !slices.Contains(attrs, want) {
				t.Errorf("the reveal cookie lacks %s: %q", want, c)
			}
		}
	}

	if s, code := gw.send(t, key, "orders@shop.example.com"); s != 202 {
		t.Fatalf("a send over HTTPS with the new key: %d %s", s, code)
	}
	alice.open(t, "/console/", 200)
	alice.click(t, `a[href^="/console/keys/"]`, 200)
	alice.do(t, chromedp.SendKeys(chromedp.ID("confirm"), "Shop over HTTPS"), chromedp.SendKeys(chromedp.ID("revoke-reason"), "done testing"))
	alice.click(t, "#revoke-submit", 200)
	alice.wantText(t, ".notice", "Key revoked")
	if s, code := gw.send(t, key, "orders@shop.example.com"); s != 401 || code != "revoked_key" {
		t.Fatalf("the first request after revoking over HTTPS: %d %s, want 401 revoked_key", s, code)
	}
}
