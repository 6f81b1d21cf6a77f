package console

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

var ctx = context.Background()

// fixture is a console on a fresh SQLite store whose gateways use the
// scopes mail.send, templates.read and templates.write.
type fixture struct {
	t   testing.TB
	h   *Handler
	svc *keys.Service
	st  store.Store
	db  string // the SQLite file
	now time.Time
	// jars holds each person's cookies, as their browser would; the
	// fixtures of several nodes share them (one browser, several nodes).
	jars map[string]http.CookieJar
}

var (
	admin = User{ID: "root", Admin: true, Addr: "203.0.113.1"}
	alice = User{ID: "alice", Owner: "sales", Addr: "203.0.113.9"}
	bob   = User{ID: "bob", Owner: "ops", Addr: "203.0.113.10"}
)

// keyPattern is a default key, as the contract publishes it for scanners.
var keyPattern = regexp.MustCompile(`kg_(live|test)_[0-9A-Za-z]{49}`)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	db := filepath.Join(t.TempDir(), "keys.db")
	st, err := store.Open(ctx, "sqlite:"+db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, st: st, db: db, now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), jars: map[string]http.CookieJar{}}
	clock := func() time.Time { return f.now }
	if err := st.RecordRouteScopes(ctx, []store.RouteScope{
		{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send", SeenAt: f.now},
		{Scope: "templates.read", Method: "GET", Path: "/v3/templates*", SeenAt: f.now},
		{Scope: "templates.write", Method: "POST", Path: "/v3/templates*", SeenAt: f.now},
	}); err != nil {
		t.Fatal(err)
	}
	f.svc = keys.New(st, keys.Options{Now: clock})
	f.h = New(f.svc, Options{
		Now:        clock,
		GatewayURL: "https://mail-gw.example.com",
		Denials: func(code string) string {
			if code == "revoked_key" {
				return "the API key has been revoked"
			}
			return ""
		},
	})
	return f
}

// issue creates a key directly through the service.
func (f *fixture) issue(name, owner string, scopes ...string) *keys.Result {
	f.t.Helper()
	res, err := f.svc.Issue(ctx, keys.Spec{Name: &name, Owner: &owner, Scopes: &scopes}, "test")
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

func (f *fixture) show(id string) *store.Record {
	f.t.Helper()
	rec, err := f.svc.Show(ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return rec
}

// rotate rotates key id on its page as alice, with a day's grace, and
// returns its new key's id.
func (f *fixture) rotate(id string) string {
	f.t.Helper()
	if w := f.post(alice, "/keys/"+id+"/rotate", url.Values{"grace": {"24h"}}); w.Code != http.StatusSeeOther {
		f.t.Fatalf("rotate: %d %s", w.Code, w.Body)
	}
	return f.show(id).RotatedTo
}

// get requests a page as u.
func (f *fixture) get(u User, path string) *httptest.ResponseRecorder {
	f.t.Helper()
	return f.serve(u, httptest.NewRequest(http.MethodGet, path, nil))
}

// post submits a form as u from a console page: same-origin, with u's
// form token (unless the form sets csrf itself).
func (f *fixture) post(u User, path string, form url.Values, header ...string) *httptest.ResponseRecorder {
	f.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", f.h.formToken(ctx, u.ID))
	}
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	r.Header.Set("Origin", "http://example.com")
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			r.Header.Del(header[i])
		} else {
			r.Header.Set(header[i], header[i+1])
		}
	}
	return f.serve(u, r)
}

func (f *fixture) serve(u User, r *http.Request) *httptest.ResponseRecorder {
	if u.ID != "" {
		r = r.WithContext(WithUser(r.Context(), u))
	}
	jar := f.jars[u.ID]
	if jar == nil {
		jar, _ = cookiejar.New(nil)
		f.jars[u.ID] = jar
	}
	at := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
	for _, c := range jar.Cookies(at) {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	jar.SetCookies(at, w.Result().Cookies())
	return w
}

// follow reads the page a 303 leads to, as u.
func (f *fixture) follow(u User, w *httptest.ResponseRecorder) *httptest.ResponseRecorder {
	f.t.Helper()
	if w.Code != http.StatusSeeOther {
		f.t.Fatalf("want a 303 redirect, got %d:\n%s", w.Code, w.Body)
	}
	return f.get(u, w.Header().Get("Location"))
}

func wantStatus(t *testing.T, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d:\n%s", w.Code, status, w.Body)
	}
}

func TestARequestWithoutAPersonIsRefused(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/", "/new", "/keys/key_x", "/static/console.css"} {
		w := f.get(User{}, path)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("GET %s without a user: %d, want 401", path, w.Code)
		}
	}
	if w := f.post(User{}, "/new", url.Values{"name": {"x"}, "scope": {"mail.send"}}); w.Code != http.StatusUnauthorized {
		t.Errorf("POST /new without a user: %d, want 401", w.Code)
	}
	// A signed-in person whose team is unknown would otherwise see the
	// keys that have no owner.
	f.issue("ownerless", "", "mail.send")
	w := f.get(User{ID: "carol"}, "/")
	if w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), "ownerless") {
		t.Errorf("a person without an owner: %d, want 403 without keys", w.Code)
	}
}

func TestEveryResponseCarriesTheSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	for name, w := range map[string]*httptest.ResponseRecorder{
		"keys page":         f.get(alice, "/"),
		"key page":          f.get(alice, "/keys/"+k.ID),
		"not found":         f.get(alice, "/nope"),
		"no user":           f.get(User{}, "/"),
		"refused form":      f.post(alice, "/new", url.Values{"csrf": {"wrong"}}),
		"static stylesheet": f.get(alice, "/static/console.css"),
	} {
		h := w.Header()
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", name, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "http") {
			t.Errorf("%s: CSP %q allows inline code or another origin", name, csp)
		}
		for header, want := range map[string]string{
			"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
		} {
			if got := h.Get(header); got != want {
				t.Errorf("%s: %s = %q, want %q", name, header, got, want)
			}
		}
		if name != "static stylesheet" && h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control = %q, want no-store", name, h.Get("Cache-Control"))
		}
	}
}

func TestPagesHaveNoInlineScriptOrStyle(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>[^<]|<style|\sstyle=|\son[a-z]+=|javascript:`)
	for _, path := range []string{"/", "/new", "/keys/" + k.ID, "/review", "/leaked", "/nope"} {
		for _, u := range []User{admin, alice} {
			w := f.get(u, path)
			if m := inline.FindString(w.Body.String()); m != "" {
				t.Errorf("GET %s as %s: inline code %q (the CSP would block it)", path, u.ID, m)
			}
		}
	}
}

func TestAChangeMustComeFromAConsolePageOfThePerson(t *testing.T) {
	for _, tc := range []struct {
		name   string
		form   url.Values
		header []string
		want   int
	}{
		{"from the console page with the person's token", nil, nil, http.StatusSeeOther},
		{"without a token", url.Values{"csrf": nil}, nil, http.StatusForbidden},
		{"with another person's token", url.Values{"csrf": {"bob's token"}}, nil, http.StatusForbidden},
		{"with a token in the URL only", url.Values{"csrf": nil}, []string{"X-Query", "csrf"}, http.StatusForbidden},
		{"from another site, token and all", nil, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"from a sibling site", nil, []string{"Sec-Fetch-Site", "same-site"}, http.StatusForbidden},
		{"from an old browser on another origin", nil, []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}, http.StatusForbidden},
		{"from a script without browser headers, with the token", nil, []string{"Sec-Fetch-Site", "", "Origin", ""}, http.StatusSeeOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			k := f.issue("crm", "sales", "mail.send")
			form := url.Values{}
			for k, v := range tc.form {
				form[k] = v
			}
			if form.Get("csrf") == "bob's token" {
				form.Set("csrf", f.h.formToken(ctx, "bob"))
			}
			path := "/keys/" + k.ID + "/disable"
			if len(tc.header) == 2 && tc.header[0] == "X-Query" {
				path += "?csrf=" + f.h.formToken(ctx, "alice")
				tc.header = nil
			}
			if v, ok := form["csrf"]; ok && v == nil {
				form["csrf"] = []string{""}
			}
			w := f.post(alice, path, form, tc.header...)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d:\n%s", w.Code, tc.want, w.Body)
			}
			if disabled := f.show(k.ID).Disabled; disabled != (tc.want == http.StatusSeeOther) {
				t.Errorf("disabled = %v after a %d", disabled, w.Code)
			}
		})
	}
}

func TestEveryActionIsRefusedOnAnotherTeamsKey(t *testing.T) {
	f := newFixture(t)
	theirs := f.issue("ops-alerts", "ops", "mail.send")
	mine := f.issue("crm", "sales", "mail.send")
	for _, tc := range []struct {
		method, path string
		form         url.Values
	}{
		{"GET", "/keys/" + theirs.ID, nil},
		{"GET", "/keys/" + theirs.ID + "?window=30d", nil},
		{"POST", "/keys/" + theirs.ID + "/settings", url.Values{"name": {"pwned"}, "scope": {"mail.send"}, "expires": {"keep"}}},
		{"POST", "/keys/" + theirs.ID + "/disable", nil},
		{"POST", "/keys/" + theirs.ID + "/enable", nil},
		{"POST", "/keys/" + theirs.ID + "/rotate", url.Values{"grace": {"0"}}},
		{"POST", "/keys/" + theirs.ID + "/revoke", url.Values{"confirm": {"ops-alerts"}}},
	} {
		var w *httptest.ResponseRecorder
		if tc.method == "GET" {
			w = f.get(alice, tc.path)
		} else {
			w = f.post(alice, tc.path, tc.form)
		}
		if w.Code != http.StatusNotFound {
			t.Errorf("%s %s as another team: %d, want 404", tc.method, tc.path, w.Code)
		}
		if strings.Contains(w.Body.String(), "ops-alerts") {
			t.Errorf("%s %s as another team shows the key's name", tc.method, tc.path)
		}
		// Nor does the answer tell another team's key from no key.
		var none *httptest.ResponseRecorder
		if path := strings.Replace(tc.path, theirs.ID, "key_0000000000000000", 1); tc.method == "GET" {
			none = f.get(alice, path)
		} else {
			none = f.post(alice, path, tc.form)
		}
		if none.Code != w.Code || strings.ReplaceAll(none.Body.String(), "key_0000000000000000", theirs.ID) != w.Body.String() {
			t.Errorf("%s %s: another team's key answers %d, an id no key has %d, or another page", tc.method, tc.path, w.Code, none.Code)
		}
	}
	rec := f.show(theirs.ID)
	if rec.Name != "ops-alerts" || rec.Disabled || rec.RevokedAt != nil || rec.RotatedTo != "" {
		t.Errorf("another team's key changed: %+v", rec)
	}
	if w := f.post(alice, "/review/revoke", url.Values{"id": {theirs.ID}, "confirm": {"revoke"}}); w.Code != http.StatusForbidden {
		t.Errorf("bulk revoke by a non-admin: %d, want 403", w.Code)
	}
	for _, path := range []string{"/", "/?q=ops", "/?status=revoked", "/review"} {
		body := f.get(alice, path).Body.String()
		if strings.Contains(body, theirs.ID) || strings.Contains(body, "ops-alerts") {
			t.Errorf("GET %s lists another team's key", path)
		}
	}
	if body := f.get(alice, "/").Body.String(); !strings.Contains(body, mine.ID) {
		t.Errorf("the keys page lacks the person's own key")
	}
	// A key created by a non-admin belongs to their team, whatever the
	// form says.
	w := f.post(alice, "/new", url.Values{"name": {"sneaky"}, "owner": {"ops"}, "scope": {"mail.send"}, "expires": {"90d"}})
	wantStatus(t, w, http.StatusSeeOther)
	page, _ := f.svc.Find(ctx, keys.Query{Search: "sneaky"})
	if len(page.Keys) != 1 || page.Keys[0].Owner != "sales" {
		t.Errorf("a key created by alice of sales: %+v", page.Keys)
	}
	// Another person cannot read a reveal, even with its token.
	loc := w.Header().Get("Location")
	if w := f.get(bob, loc); w.Code != http.StatusGone || keyPattern.MatchString(w.Body.String()) {
		t.Errorf("another person opened a reveal: %d", w.Code)
	}
	if w := f.get(alice, loc); w.Code != http.StatusOK || !keyPattern.MatchString(w.Body.String()) {
		t.Errorf("the reveal was spent by another person's attempt: %d", w.Code)
	}
}

// A team sets everything of its own keys but their owner and whether they
// may send On-Behalf-Of: an admin grants that with caddy keys or the admin
// API, and a form of the console, crafted or saved as shown, neither grants
// it nor takes it away (docs/console.md, What a team may set).
func TestATeamCannotGrantOnBehalfOf(t *testing.T) {
	f := newFixture(t)
	allowed := true
	name, owner, scopes := "crm", "sales", []string{"mail.send"}
	granted, err := f.svc.Issue(ctx, keys.Spec{Name: &name, Owner: &owner, Scopes: &scopes, AllowOnBehalfOf: &allowed}, "test")
	if err != nil {
		t.Fatal(err)
	}
	path := "/keys/" + granted.ID
	vals := formValues(t, f.get(alice, path).Body.String(), path+"/settings")
	vals.Set("allow_on_behalf_of", "false")
	vals.Set("owner", "ops")
	vals.Set("quota_n", "1000000")
	vals.Set("quota_unit", "d")
	vals.Set("expires", "never")
	vals["scope"] = []string{"*"}
	f.follow(alice, f.post(alice, path+"/settings", vals))
	rec := f.show(granted.ID)
	if rec.Quota == nil || rec.Quota.N != 1000000 || rec.ExpiresAt != nil || !slices.Equal(rec.Scopes, []string{"*"}) {
		t.Errorf("the team's settings were not saved: quota %v, expires %v, scopes %v", rec.Quota, rec.ExpiresAt, rec.Scopes)
	}
	if !rec.AllowOnBehalfOf || rec.Owner != "sales" {
		t.Errorf("after alice's save the key has on-behalf-of %v and owner %q, want true and sales", rec.AllowOnBehalfOf, rec.Owner)
	}
	if next := f.show(f.rotate(granted.ID)); !next.AllowOnBehalfOf {
		t.Error("the key a rotation made lost on-behalf-of")
	}

	wantStatus(t, f.post(alice, "/new", url.Values{"name": {"sneaky"}, "scope": {"mail.send"}, "expires": {"90d"},
		"allow_on_behalf_of": {"true"}}), http.StatusSeeOther)
	plain := f.createdKey("sneaky")
	path = "/keys/" + plain.ID
	vals = formValues(t, f.get(alice, path).Body.String(), path+"/settings")
	vals.Set("allow_on_behalf_of", "true")
	vals.Set("name", "sneakier")
	f.follow(alice, f.post(alice, path+"/settings", vals))
	if rec := f.show(plain.ID); rec.AllowOnBehalfOf || rec.Name != "sneakier" {
		t.Errorf("alice's key: on-behalf-of %v, name %q; want false, sneakier", rec.AllowOnBehalfOf, rec.Name)
	}
}

func TestPeoplesTextIsShownAsText(t *testing.T) {
	f := newFixture(t)
	name := `<script>alert("name")</script>`
	owner := `<img src=x onerror=alert(1)>`
	k := f.issue(name, owner, "mail.send")
	if _, err := f.svc.Update(ctx, k.ID, keys.Spec{Disabled: ptr(true), Reason: `</li><script>alert("reason")</script>`}, "x<b>y"); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/", "/keys/" + k.ID, "/review", "/?q=" + url.QueryEscape(name)} {
		body := f.get(admin, path).Body.String()
		for _, raw := range []string{"<script>alert", "<img src=x", "<b>y"} {
			if strings.Contains(body, raw) {
				t.Errorf("GET %s: %q appears unescaped", path, raw)
			}
		}
		if !strings.Contains(body, "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;") {
			t.Errorf("GET %s: the name is not shown as text", path)
		}
	}
}

func TestANewKeyIsShownOnceAndNeverAgain(t *testing.T) {
	f := newFixture(t)
	w := f.post(alice, "/new", url.Values{
		"name": {"Shop orders"}, "scope": {"mail.send"}, "env": {"live"}, "expires": {"90d"},
		"sender_domains": {"shop.example.com"},
	})
	wantStatus(t, w, http.StatusSeeOther)
	loc := w.Header().Get("Location")
	if !strings.HasPrefix(loc, "/reveal/") || keyPattern.MatchString(loc+w.Body.String()) {
		t.Fatalf("the POST answers %q with the key in it, or not to a reveal page", loc)
	}
	if w := f.serve(alice, httptest.NewRequest(http.MethodHead, loc, nil)); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("HEAD of the reveal page: %d, want 405 (it must not spend the reveal unseen)", w.Code)
	}
	page := f.get(alice, loc)
	wantStatus(t, page, http.StatusOK)
	key := keyPattern.FindString(page.Body.String())
	if key == "" {
		t.Fatalf("the reveal page holds no key:\n%s", page.Body)
	}
	body := page.Body.String()
	for _, want := range []string{"only time the key is shown", "https://mail-gw.example.com/v3/mail/send", "Bearer " + key, "Content-Type: application/json"} {
		if !strings.Contains(body, want) {
			t.Errorf("the reveal page lacks %q", want)
		}
	}
	if page.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("the reveal page may be cached: %q", page.Header().Get("Cache-Control"))
	}
	again := f.get(alice, loc)
	if again.Code != http.StatusGone || strings.Contains(again.Body.String(), key) {
		t.Errorf("reloading the reveal page: %d, key shown again: %v", again.Code, strings.Contains(again.Body.String(), key))
	}
	recs, _ := f.svc.List(ctx, "", true)
	rec := recs[0]
	if rec.Name != "Shop orders" || rec.Owner != "sales" || rec.SenderDomains[0] != "shop.example.com" ||
		rec.ExpiresAt == nil || !rec.ExpiresAt.Equal(f.now.Add(90*24*time.Hour)) {
		t.Errorf("created %+v", rec)
	}
	for _, path := range []string{"/", "/keys/" + rec.ID, "/review"} {
		if strings.Contains(f.get(alice, path).Body.String(), key) {
			t.Errorf("GET %s shows the key again", path)
		}
	}
	evs, _ := f.svc.Events(ctx, rec.ID, 0, nil)
	if len(evs) != 1 || evs[0].Actor != "console alice from 203.0.113.9" {
		t.Errorf("the issued event names %q, want the console user and address", evs[0].Actor)
	}
}

// The reveal page's cookie, its token spent, is ended by the page's own
// stylesheet once the page is up: a cookie changed after the page loaded,
// which keeps Chromium from bringing the page back from its back-forward
// cache (TestANewKeyDoesNotComeBackWithoutScript in console/browser).
func TestTheRevealPageEndsItsCookieOnceItIsUp(t *testing.T) {
	f := newFixture(t)
	loc := f.post(alice, "/new", url.Values{"name": {"Shop"}, "scope": {"mail.send"}, "expires": {"90d"}}).Header().Get("Location")
	at := &url.URL{Scheme: "http", Host: "example.com", Path: loc}
	token := f.jars[alice.ID].Cookies(at)
	page := f.get(alice, loc)
	wantStatus(t, page, http.StatusOK)
	if !strings.Contains(page.Body.String(), `<link rel="stylesheet" href="`+loc+`/shown.css">`) {
		t.Errorf("the reveal page does not link its stylesheet")
	}
	shown := f.jars[alice.ID].Cookies(at)
	if len(token) != 1 || len(shown) != 1 || shown[0].Value == token[0].Value {
		t.Fatalf("the reveal cookie, before the page %v and after it %v: want it kept without its token", token, shown)
	}
	css := f.get(alice, loc+"/shown.css")
	wantStatus(t, css, http.StatusOK)
	if ct := css.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/css") || css.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("the reveal page's stylesheet: %q, %q", ct, css.Header().Get("Cache-Control"))
	}
	if left := f.jars[alice.ID].Cookies(at); len(left) != 0 {
		t.Errorf("the reveal page's stylesheet left its cookie: %v", left)
	}
	// A page that shows no key links nothing of the kind.
	if gone := f.get(alice, loc); gone.Code != http.StatusGone || strings.Contains(gone.Body.String(), "shown.css") {
		t.Errorf("the reveal page again: %d, linking its stylesheet: %v", gone.Code, strings.Contains(gone.Body.String(), "shown.css"))
	}
}

// Signing out answers 401 without a challenge, which makes a browser forget
// the Basic credentials it sent (TestSigningOutEndsTheSignIn in
// console/browser), and changes a cookie of the console's pages, so that
// none comes back from the back-forward cache. The button is offered to
// people signed in with Basic credentials only; it is a form of theirs.
func TestSigningOutAnswers401WithoutAChallenge(t *testing.T) {
	f := newFixture(t)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth("alice", "secret")
	if page := f.serve(alice, r).Body.String(); !strings.Contains(page, `action="/signout"`) {
		t.Errorf("a Basic sign-in is not offered to sign out")
	}
	if page := f.get(alice, "/").Body.String(); strings.Contains(page, `action="/signout"`) {
		t.Errorf("a sign-in the console cannot end (an SSO's) is offered to sign out")
	}
	if w := f.post(alice, "/signout", url.Values{"csrf": {"forged"}}); w.Code != http.StatusForbidden {
		t.Errorf("signing out with another site's form: %d, want 403", w.Code)
	}
	w := f.post(alice, "/signout", nil, "Authorization", "Basic YWxpY2U6c2VjcmV0")
	wantStatus(t, w, http.StatusUnauthorized)
	if ch := w.Header().Get("WWW-Authenticate"); ch != "" || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("signing out answers WWW-Authenticate %q (the browser would ask to sign in there and then), Cache-Control %q", ch, w.Header().Get("Cache-Control"))
	}
	if cs := w.Result().Cookies(); len(cs) != 1 || cs[0].Name != signedOutCookie || cs[0].Path != "/" || !cs[0].HttpOnly {
		t.Errorf("signing out sets %v, want a cookie of every console page", cs)
	}
	if page := w.Body.String(); !strings.Contains(page, "You are signed out") || strings.Contains(page, `href="/new"`) {
		t.Errorf("the page after signing out:\n%s", page)
	}
}

// Behind single sign-on the console cannot end the sign-in, so Sign out is
// offered only when it knows the SSO's own sign-out (signout_url): it sends
// the browser there, after changing the console's cookie as for basic_auth,
// so that Back from the SSO's page brings no console page back. Without it,
// no button, and a sign-out sent anyway changes nothing and says so rather
// than claim the person is signed out.
func TestSigningOutOfASingleSignOn(t *testing.T) {
	f := newFixture(t)
	if w := f.post(alice, "/signout", nil); w.Code != http.StatusBadRequest || strings.Contains(w.Body.String(), "You are signed out") {
		t.Errorf("signing out of an SSO the console knows no sign-out of: %d\n%s", w.Code, w.Body.String())
	}
	f.h.opts.SignOutURL = "https://auth.example.com/logout?rd=https%3A%2F%2Fmail.example.com%2F"
	if page := f.get(alice, "/").Body.String(); !strings.Contains(page, `action="/signout"`) {
		t.Errorf("an SSO sign-in with signout_url is not offered to sign out")
	}
	if w := f.post(alice, "/signout", url.Values{"csrf": {"forged"}}); w.Code != http.StatusForbidden {
		t.Errorf("signing out with another site's form: %d, want 403", w.Code)
	}
	w := f.post(alice, "/signout", nil)
	wantStatus(t, w, http.StatusSeeOther)
	if loc := w.Header().Get("Location"); loc != f.h.opts.SignOutURL {
		t.Errorf("signing out sends the browser to %q, want the SSO's sign-out", loc)
	}
	if cs := w.Result().Cookies(); len(cs) != 1 || cs[0].Name != signedOutCookie {
		t.Errorf("signing out of the SSO sets %v, want the console's cookie changed", cs)
	}
	// A Basic sign-in is still ended by the console itself.
	wantStatus(t, f.post(alice, "/signout", nil, "Authorization", "Basic YWxpY2U6c2VjcmV0"), http.StatusUnauthorized)
}

// A person signed in whom the console finds no team for (an owner
// placeholder that is empty for them) is refused every page, and can sign
// out from that page: signed in with the wrong Basic credentials, they
// could otherwise not try others until the browser closed. The page links
// none of the console's pages, which would all refuse them, and shows no
// team beside their name (it showed an empty one).
func TestAPersonWithNoTeamCanSignOut(t *testing.T) {
	f := newFixture(t)
	nobody := User{ID: "carol", Addr: "203.0.113.7"}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth("carol", "secret")
	w := f.serve(nobody, r)
	wantStatus(t, w, http.StatusForbidden)
	page := w.Body.String()
	if !strings.Contains(page, "No team") || !strings.Contains(page, `action="/signout"`) {
		t.Errorf("the No team page does not offer to sign out:\n%s", page)
	}
	if strings.Contains(page, `href="/new"`) || strings.Contains(page, "Back to the keys") || strings.Contains(page, `class="tag"`) {
		t.Errorf("the No team page links pages that refuse the person:\n%s", page)
	}
	if w := f.post(nobody, "/new", url.Values{"name": {"x"}, "scope": {"mail.send"}}); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "No team") {
		t.Errorf("creating a key with no team: %d", w.Code)
	}
	if w := f.post(nobody, "/signout", url.Values{"csrf": {"forged"}}); w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), `href="/new"`) {
		t.Errorf("signing out with another site's form: %d, want 403 without the console's links", w.Code)
	}
	w = f.post(nobody, "/signout", nil, "Authorization", "Basic Y2Fyb2w6c2VjcmV0")
	wantStatus(t, w, http.StatusUnauthorized)
	if ch := w.Header().Get("WWW-Authenticate"); ch != "" || !strings.Contains(w.Body.String(), "You are signed out") {
		t.Errorf("signing out with no team: WWW-Authenticate %q:\n%s", ch, w.Body.String())
	}
	if cs := w.Result().Cookies(); len(cs) != 1 || cs[0].Name != signedOutCookie {
		t.Errorf("signing out with no team sets %v", cs)
	}
}

func TestAnUnreadRevealExpires(t *testing.T) {
	f := newFixture(t)
	w := f.post(alice, "/new", url.Values{"name": {"late"}, "scope": {"mail.send"}, "expires": {"30d"}})
	wantStatus(t, w, http.StatusSeeOther)
	f.now = f.now.Add(5*time.Minute + time.Second)
	if w := f.get(alice, w.Header().Get("Location")); w.Code != http.StatusGone || keyPattern.MatchString(w.Body.String()) {
		t.Errorf("a reveal read after 5 minutes: %d", w.Code)
	}
}

func TestARefusedFormComesBackAsTheyLeftIt(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name  string
		form  url.Values
		field string
		says  string
	}{
		{"no name", url.Values{"scope": {"mail.send"}, "expires": {"90d"}, "sender_domains": {"shop.example.com"}}, "name", "Give the key a name"},
		{"no scope", url.Values{"name": {"crm"}, "expires": {"90d"}}, "scopes", "Choose at least one thing the key may do"},
		{"a scope no route uses", url.Values{"name": {"crm"}, "extra_scopes": {"mail.sned"}, "expires": {"90d"}}, "extra-scopes", "no route"},
		{"a bad sender domain", url.Values{"name": {"crm"}, "scope": {"mail.send"}, "sender_domains": {"not a domain!"}, "expires": {"90d"}}, "sender-domains", "sender domain"},
		{"a date in the past", url.Values{"name": {"crm"}, "scope": {"mail.send"}, "expires": {"date"}, "expires_date": {"2020-01-01"}}, "expires-date", "Choose a date in the future"},
		{"a date beside another expiry", url.Values{"name": {"crm"}, "scope": {"mail.send"}, "expires": {"90d"}, "expires_date": {"2027-01-15"}}, "expires-date", "You entered a date but chose another expiry"},
		{"a rate that is no number", url.Values{"name": {"crm"}, "scope": {"mail.send"}, "expires": {"90d"}, "rate_n": {"lots"}}, "rate-n", "whole number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := f.post(alice, "/new", tc.form)
			wantStatus(t, w, http.StatusUnprocessableEntity)
			body := w.Body.String()
			if !strings.Contains(body, tc.says) || !strings.Contains(body, `href="#`+tc.field+`"`) {
				t.Errorf("the error does not say %q or link to #%s:\n%s", tc.says, tc.field, body)
			}
			if offered := strings.Contains(body, "Use it anyway"); offered != (tc.name == "a scope no route uses") {
				t.Errorf("offers to use a scope anyway: %v", offered)
			}
			// The "Limits" section is open when the error is in it, or a
			// limit was filled in; not for an error elsewhere.
			wantOpen := limitFields[tc.field] || tc.form.Get("sender_domains") != "" || tc.form.Get("rate_n") != ""
			if open := strings.Contains(body, `<details class="field limits" open>`); open != wantOpen {
				t.Errorf("the Limits section open: %v, want %v", open, wantOpen)
			}
			for _, v := range []string{tc.form.Get("name"), tc.form.Get("sender_domains"), tc.form.Get("extra_scopes")} {
				if v != "" && !strings.Contains(body, v) {
					t.Errorf("the form lost %q", v)
				}
			}
		})
	}
	if recs, _ := f.svc.List(ctx, "", true); len(recs) != 0 {
		t.Errorf("refused forms created %d keys", len(recs))
	}
	// An unknown scope is offered to be forced, and forcing works.
	w := f.post(alice, "/new", url.Values{"name": {"crm"}, "extra_scopes": {"mail.sned"}, "expires": {"90d"}})
	if !strings.Contains(w.Body.String(), `name="force"`) {
		t.Errorf("no offer to force an unknown scope")
	}
	w = f.post(alice, "/new", url.Values{"name": {"crm"}, "extra_scopes": {"mail.sned"}, "expires": {"90d"}, "force": {"1"}})
	page := f.follow(alice, w)
	if !strings.Contains(page.Body.String(), "grants nothing") {
		t.Errorf("the reveal page does not pass on the service's warning")
	}
}

// A form with several fields wrong says all of them at once, each beside
// its field and linked from the summary, instead of one per submit.
func TestARefusedFormSaysEverythingWrongAtOnce(t *testing.T) {
	f := newFixture(t)
	w := f.post(alice, "/new", url.Values{"extra_scopes": {"bogus scope!"}, "expires": {"date"}, "expires_date": {"2020-01-02"},
		"allowed_ips": {"not-an-ip"}, "rate_n": {"abc"}, "max_recipients": {"zz"}, "sender_domains": {"not a domain!"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	body := w.Body.String()
	fields := []string{"name", "extra-scopes", "expires-date", "sender-domains", "allowed-ips", "rate-n", "max-recipients"} // in the page's order
	if !strings.Contains(body, fmt.Sprintf("Fix these %d things:", len(fields))) {
		t.Errorf("the summary does not count %d things:\n%s", len(fields), body)
	}
	last := -1
	for _, field := range fields {
		at := strings.Index(body, `<li><a href="#`+field+`">`)
		if at < last {
			t.Errorf("%s: said out of the page's order", field)
		}
		last = at
		if at < 0 || !strings.Contains(body, `id="err-`+field+`"`) {
			t.Errorf("%s: no linked message in the summary, or none beside the field", field)
		}
		if !regexp.MustCompile(`id="` + field + `"[^>]*aria-describedby="[^"]*err-` + field + `"[^>]*aria-invalid="true"`).MatchString(body) {
			t.Errorf("%s: not marked invalid and described by its message", field)
		}
	}
	if !strings.Contains(body, "<title>Error: Create a key") {
		t.Error("the page's title does not say the form was refused")
	}
	if recs, _ := f.svc.List(context.Background(), "", true); len(recs) != 0 {
		t.Errorf("a refused form created %d keys", len(recs))
	}

	// A scope no route uses is one of them, not said only once the
	// others are mended.
	w = f.post(alice, "/new", url.Values{"name": {"crm"}, "extra_scopes": {"mail.sned"}, "expires": {"date"}, "expires_date": {"2020-01-02"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if body := w.Body.String(); !strings.Contains(body, "Fix these 2 things:") || !strings.Contains(body, `id="err-extra-scopes"`) ||
		!strings.Contains(body, "no route") || !strings.Contains(body, `id="err-expires-date"`) {
		t.Errorf("a past expiry and a scope no route uses, not said together:\n%s", body)
	}
}

// A refused entry of a list box is named as it was typed on its line, not
// by its first word: "not a domain", not "not". Entries separated by
// spaces are still read as several.
func TestARefusedListEntryIsNamedWhole(t *testing.T) {
	f := newFixture(t)
	w := f.post(alice, "/new", url.Values{"name": {"crm"}, "scope": {"mail.send"}, "expires": {"90d"},
		"sender_domains": {"shop.example.com\r\nnot a domain"}, "allowed_ips": {"10.0.0.1 office"}, "extra_scopes": {"Bad Scope"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	body := w.Body.String()
	for _, want := range []string{`sender domain &#34;not a domain&#34;: `, `allowed IP &#34;10.0.0.1 office&#34;: `, `scope &#34;Bad Scope&#34;: `} {
		if !strings.Contains(body, want) {
			t.Errorf("the refusal lacks %s:\n%s", want, body)
		}
	}
	w = f.post(alice, "/new", url.Values{"name": {"crm"}, "scope": {"mail.send"}, "expires": {"90d"},
		"sender_domains": {"a.example b.example\nc.example"}, "allowed_ips": {"10.0.0.1, 10.0.0.2"}})
	wantStatus(t, w, http.StatusSeeOther)
	recs, _ := f.svc.List(ctx, "", true)
	if len(recs) != 1 || strings.Join(recs[0].SenderDomains, " ") != "a.example b.example c.example" || len(recs[0].AllowedIPs) != 2 {
		t.Errorf("lists separated by spaces, commas and lines: %+v", recs)
	}
}

func TestKeyActionsChangeTheKeyAndSaySo(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	path := "/keys/" + k.ID

	page := f.follow(alice, f.post(alice, path+"/disable", url.Values{"reason": {"investigating"}}))
	if !f.show(k.ID).Disabled || !strings.Contains(page.Body.String(), "Key disabled") {
		t.Fatalf("disable: %v\n%s", f.show(k.ID).Disabled, page.Body)
	}
	f.follow(alice, f.post(alice, path+"/enable", nil))
	if f.show(k.ID).Disabled {
		t.Fatal("enable did not enable")
	}

	w := f.post(alice, path+"/settings", url.Values{
		"version": {keys.Version(f.show(k.ID))},
		"name":    {"crm-sync"}, "scope": {"mail.send", "templates.read"}, "expires": {"keep"},
		"sender_domains": {"crm.example.com\nnews.example.com"}, "rate_n": {"100"}, "rate_unit": {"m"},
		"quota_n": {"5000"}, "quota_unit": {"d"}, "reason": {"templates for the CRM"},
	})
	page = f.follow(alice, w)
	rec := f.show(k.ID)
	if rec.Name != "crm-sync" || len(rec.Scopes) != 2 || len(rec.SenderDomains) != 2 || rec.Rate.String() != "100/m" ||
		rec.Quota.String() != "5000/d" || rec.ExpiresAt != nil {
		t.Errorf("settings saved as %+v", rec)
	}
	if !strings.Contains(page.Body.String(), "Settings saved") {
		t.Errorf("no confirmation after saving")
	}
	// The same form again changes nothing, and says so.
	w = f.post(alice, path+"/settings", url.Values{
		"version": {keys.Version(f.show(k.ID))},
		"name":    {"crm-sync"}, "scope": {"mail.send", "templates.read"}, "expires": {"keep"},
		"sender_domains": {"crm.example.com, news.example.com"}, "rate_n": {"100"}, "rate_unit": {"m"},
		"quota_n": {"5000"}, "quota_unit": {"d"},
	})
	if body := f.follow(alice, w).Body.String(); strings.Contains(body, "Settings saved") || !strings.Contains(body, "nothing changed") {
		t.Errorf("an unchanged form: %s", body)
	}

	w = f.post(alice, path+"/revoke", url.Values{"confirm": {"crm"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if f.show(k.ID).RevokedAt != nil || !strings.Contains(w.Body.String(), "type the key&#39;s name exactly") {
		t.Fatalf("a revoke with the wrong name: revoked=%v", f.show(k.ID).RevokedAt != nil)
	}

	// "Stop it now" ends the old key at once, so it asks first; the
	// refused form keeps the why typed into it, and its error is the
	// choice's and the box's (which it marks as what to change).
	w = f.post(alice, path+"/rotate", url.Values{"grace": {"0"}, "reason": {"quarterly rotation"}})
	if !strings.Contains(w.Body.String(), `name="reason" maxlength="500" value="quarterly rotation"`) {
		t.Errorf("a refused rotation drops the why typed into it")
	}
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if f.show(k.ID).RotatedTo != "" || !strings.Contains(w.Body.String(), "ends the old key at once") ||
		!strings.Contains(w.Body.String(), `<option value="0" selected>`) {
		t.Fatalf("a rotation with no grace, unconfirmed: rotated to %q, or the refusal does not say why and keep the choice", f.show(k.ID).RotatedTo)
	}
	for _, want := range []string{`<select id="grace" name="grace" aria-describedby="form-error">`,
		`name="stop_now" value="1" aria-describedby="form-error" aria-invalid="true">`} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("the refused rotation's error is not tied to its fields: no %s", want)
		}
	}
	// The box ticked beside a grace period is as unclear: refused too.
	w = f.post(alice, path+"/rotate", url.Values{"grace": {"24h"}, "stop_now": {"1"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if f.show(k.ID).RotatedTo != "" || !strings.Contains(w.Body.String(), "but chose a grace period") {
		t.Fatalf("a rotation with a grace period and the box ticked: rotated to %q", f.show(k.ID).RotatedTo)
	}
	w = f.post(alice, path+"/rotate", url.Values{"grace": {"7d"}, "reason": {"yearly"}})
	reveal := f.follow(alice, w)
	newKey := keyPattern.FindString(reveal.Body.String())
	old := f.show(k.ID)
	if newKey == "" || old.RotatedTo == "" || !old.ExpiresAt.Equal(f.now.Add(7*24*time.Hour)) {
		t.Fatalf("rotate: key shown %v, old record %+v", newKey != "", old)
	}
	if !strings.Contains(reveal.Body.String(), "replacing") {
		t.Errorf("the reveal page of a rotation does not name the old key")
	}

	page = f.follow(alice, f.post(alice, path+"/revoke", url.Values{"confirm": {" crm-sync "}, "reason": {"left"}}))
	if rec := f.show(k.ID); rec.RevokedAt == nil || rec.RevokeReason != "left" {
		t.Errorf("revoke with the typed name: %+v", rec)
	}
	evs, _ := f.svc.Events(ctx, k.ID, 0, nil)
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action)
		if e.Action != "issued" && e.Actor != "console alice from 203.0.113.9" {
			t.Errorf("event %s by %q", e.Action, e.Actor)
		}
	}
	if got := strings.Join(actions, " "); got != "issued disabled enabled updated rotated revoked" {
		t.Errorf("events %s", got)
	}
	if body := page.Body.String(); !strings.Contains(body, "Key revoked") || strings.Contains(body, `/revoke"`) {
		t.Errorf("a revoked key's page still offers actions or lacks the confirmation")
	}
}

func TestALeakedKeyIsRevokedByValueAndNeverEchoed(t *testing.T) {
	f := newFixture(t)
	mine := f.issue("crm", "sales", "mail.send")
	theirs := f.issue("ops-alerts", "ops", "mail.send")
	unknown := mine.Key[:len(mine.Key)-10] + "AAAAAAAAAA" // the shape of a key, with a bad checksum

	for _, tc := range []struct {
		name, key string
		want      int
	}{
		{"not a key", "hunter2 kg_live_nope", http.StatusUnprocessableEntity},
		{"a typo in a key", unknown, http.StatusUnprocessableEntity},
	} {
		w := f.post(alice, "/leaked", url.Values{"key": {tc.key}})
		if w.Code != tc.want || strings.Contains(w.Body.String(), tc.key) {
			t.Errorf("%s: %d (want %d), key echoed: %v", tc.name, w.Code, tc.want, strings.Contains(w.Body.String(), tc.key))
		}
	}
	w := f.post(alice, "/leaked", url.Values{"key": {mine.Key}, "reason": {"pasted in a ticket"}})
	page := f.follow(alice, w)
	if rec := f.show(mine.ID); rec.RevokedAt == nil || rec.RevokeReason != "pasted in a ticket" {
		t.Errorf("own leaked key not revoked: %+v", rec)
	}
	if strings.Contains(w.Header().Get("Location")+page.Body.String(), mine.Key) {
		t.Errorf("the key is echoed after revoking it")
	}
	// Whoever holds a key may stop it, but sees no more than its id.
	page = f.follow(alice, f.post(alice, "/leaked", url.Values{"key": {theirs.Key}}))
	if f.show(theirs.ID).RevokedAt == nil {
		t.Errorf("another team's leaked key was not revoked")
	}
	if body := page.Body.String(); strings.Contains(body, "ops-alerts") || !strings.Contains(body, "another team") {
		t.Errorf("revoking another team's leaked key shows: %s", body)
	}
	page = f.follow(alice, f.post(alice, "/leaked", url.Values{"key": {theirs.Key}}))
	if !strings.Contains(page.Body.String(), "already revoked") {
		t.Errorf("a second report does not say it was already revoked")
	}
}

func TestAdminsRevokeFromTheReviewInBulk(t *testing.T) {
	f := newFixture(t)
	a := f.issue("forever-1", "sales", "mail.send")
	b := f.issue("forever-2", "ops", "*")
	keep := f.issue("keep", "ops", "mail.send")
	body := f.get(admin, "/review").Body.String()
	for _, want := range []string{"Keys that never expire", "Keys with full access", a.ID, b.ID, `name="id"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the review lacks %q", want)
		}
	}
	if strings.Contains(f.get(alice, "/review").Body.String(), `name="id"`) {
		t.Errorf("a non-admin is offered bulk revoke")
	}
	w := f.post(admin, "/review/revoke", url.Values{"id": {a.ID, b.ID}, "confirm": {"yes"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if f.show(a.ID).RevokedAt != nil {
		t.Fatal("revoked without the typed confirmation")
	}
	page := f.follow(admin, f.post(admin, "/review/revoke", url.Values{"id": {a.ID, b.ID, a.ID}, "confirm": {"Revoke"}, "reason": {"cleanup"}}))
	if f.show(a.ID).RevokedAt == nil || f.show(b.ID).RevokedAt == nil || f.show(keep.ID).RevokedAt != nil {
		t.Errorf("bulk revoke revoked the wrong keys")
	}
	if !strings.Contains(page.Body.String(), "2 keys revoked") {
		t.Errorf("bulk revoke does not say how many")
	}
}

// An empty review of a team without keys says there are none yet, and
// offers to create one; with keys, that none is worth a look.
func TestAReviewWithoutKeysSaysThereAreNoneYet(t *testing.T) {
	f := newFixture(t)
	body := f.get(alice, "/review").Body.String()
	if !strings.Contains(body, "<h2>No keys yet</h2>") || !strings.Contains(body, `href="/new">Create a key</a>`) || strings.Contains(body, "No key is unused") {
		t.Errorf("the review of a team without keys:\n%s", body)
	}
	k := f.issue("crm", "sales", "mail.send")
	if _, err := f.svc.Revoke(ctx, keys.Revocation{ID: k.ID}, "test"); err != nil {
		t.Fatal(err)
	}
	if body := f.get(alice, "/review").Body.String(); !strings.Contains(body, "Nothing to review") || strings.Contains(body, "No keys yet") {
		t.Errorf("the review of a team whose only key is revoked:\n%s", body)
	}
}

func TestTheKeysPageFindsFiltersAndPages(t *testing.T) {
	f := newFixture(t)
	if body := f.get(alice, "/").Body.String(); !strings.Contains(body, "No keys yet") || !strings.Contains(body, "Create the first key") {
		t.Errorf("empty state missing")
	}
	for i := 0; i < 60; i++ {
		f.issue("bulk-"+string(rune('a'+i%26))+"-"+time.Duration(i).String(), "sales", "mail.send")
	}
	crm := f.issue("CRM sync", "sales", "mail.send")
	body := f.get(alice, "/").Body.String()
	if !strings.Contains(body, "61 keys, page 1 of 2") || !strings.Contains(body, `href="/?page=2"`) {
		t.Errorf("paging: %s", body)
	}
	// The search matches ids too, and a random id may hold "crm": the
	// space in "crm sync" keeps the bulk keys out whatever their ids.
	body = f.get(alice, "/?q=crm+sync").Body.String()
	if !strings.Contains(body, crm.ID) || !strings.Contains(body, "1 key") || strings.Contains(body, "bulk-") {
		t.Errorf("search for crm sync: %s", body)
	}
	if body := f.get(alice, "/?q=nothing-like-this").Body.String(); !strings.Contains(body, "No keys match") {
		t.Errorf("no empty state for a search without results")
	}
	if w := f.get(alice, "/?status=sleeping"); w.Code != http.StatusUnprocessableEntity {
		t.Errorf("an unknown status: %d", w.Code)
	}
}

func TestAListOfOnlyRevokedKeysDoesNotSayNoKeysYet(t *testing.T) {
	f := newFixture(t)
	old := f.issue("old shop", "sales", "mail.send")
	if _, err := f.svc.Revoke(ctx, keys.Revocation{ID: old.Record.ID, Reason: "test"}, "test"); err != nil {
		t.Fatal(err)
	}
	body := f.get(alice, "/").Body.String()
	if strings.Contains(body, "No keys yet") || !strings.Contains(body, "No current keys") || !strings.Contains(body, `href="/?status=revoked"`) {
		t.Errorf("empty state with only a revoked key: %s", body)
	}
	if body := f.get(bob, "/").Body.String(); !strings.Contains(body, "No keys yet") {
		t.Errorf("another team sees the revoked key's empty state: %s", body)
	}
}

func TestTheKeyPageShowsUsageSignalsAndHistory(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	hour := f.now.Truncate(time.Hour)
	var deltas []store.UsageDelta
	for h := 0; h < 30*24; h++ {
		deltas = append(deltas, store.UsageDelta{KeyID: k.ID, Hour: hour.Add(-time.Duration(h) * time.Hour),
			Counts: map[string]int64{"allowed": 5, "recipients": 12}, IPs: map[string]int64{"198.51.100.7": 5}})
	}
	deltas = append(deltas, store.UsageDelta{KeyID: k.ID, Hour: hour, Counts: map[string]int64{"denied.revoked_key": 3},
		IPs: map[string]int64{"192.0.2.66": 3}})
	if err := f.st.AddUsage(ctx, deltas); err != nil {
		t.Fatal(err)
	}
	for window, allowed := range map[string]string{"24h": "120", "7d": "840", "30d": "3,600"} {
		body := f.get(alice, "/keys/"+k.ID+"?window="+window).Body.String()
		if !strings.Contains(body, "<dd>"+allowed+"</dd>") {
			t.Errorf("window %s: allowed total %s missing", window, allowed)
		}
		for _, want := range []string{"revoked_key", "the API key has been revoked", "192.0.2.66", "Worth a look", `class="chart"`, "Issued"} {
			if !strings.Contains(body, want) {
				t.Errorf("window %s: %q missing", window, want)
			}
		}
	}
	if w := f.get(alice, "/keys/"+k.ID+"?window=1y"); w.Code != http.StatusBadRequest {
		t.Errorf("an unknown window: %d", w.Code)
	}
}

// TestTheKeyPageOfAKeyARestoreLeftOutShowsItsHistory: a key the store no
// longer holds (issued after the backup a restore put back) was a "Key not
// found" page, as if mistyped, though its events say what it was and what
// became of it. An admin sees them; a person who sees one team's keys
// still gets "Key not found" (the store no longer says whose it was).
func TestTheKeyPageOfAKeyARestoreLeftOutShowsItsHistory(t *testing.T) {
	f := newFixture(t)
	const id = "key_leftoutbyarestore"
	if err := store.AppendEvents(ctx, f.st, []*store.Event{
		{At: f.now.Add(-time.Hour), Action: "issued", KeyID: id, Actor: "cli ann@gw1", Detail: "name: crm-later; owner: sales"},
		{At: f.now, Action: "removed", KeyID: id, Actor: "cli root@gw1", Reason: "not in the backup put back: disk lost",
			Detail: `backup "/var/backups/keys.db" (written 2026-11-22T03:00:00Z): clients now get invalid_key`},
	}); err != nil {
		t.Fatal(err)
	}
	w := f.get(admin, "/keys/"+id)
	body := w.Body.String()
	if w.Code != http.StatusNotFound {
		t.Errorf("an admin on the page of a key the store no longer holds: %d, want 404", w.Code)
	}
	for _, want := range []string{"Key no longer in the store", id, "Removed by a restore", "not in the backup put back: disk lost",
		"clients now get invalid_key", "Issued", "name: crm-later"} {
		if !strings.Contains(body, want) {
			t.Errorf("an admin on the page of a key the store no longer holds: %q missing", want)
		}
	}
	if strings.Index(body, "Removed by a restore") > strings.Index(body, "Issued") {
		t.Error("the history of a key the store no longer holds is not newest first")
	}
	for _, c := range []struct {
		who  User
		path string
	}{{alice, "/keys/" + id}, {admin, "/keys/key_neverissued"}} {
		if w := f.get(c.who, c.path); w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "Key not found") ||
			strings.Contains(w.Body.String(), "History") {
			t.Errorf("%s on %s: %d, want the page saying the key is not found", c.who.ID, c.path, w.Code)
		}
	}
}

func TestLinksWorkUnderAStrippedPrefix(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r = r.WithContext(WithMount(WithUser(r.Context(), alice), "/console/"))
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	body := w.Body.String()
	for _, want := range []string{`href="/console/keys/` + k.ID + `"`, `href="/console/static/console.css?v=`, `action="/console/"`, `href="/console/new"`} {
		if !strings.Contains(body, want) {
			t.Errorf("under /console: %q missing", want)
		}
	}
	form := url.Values{"csrf": {f.h.formToken(ctx, "alice")}}
	r = httptest.NewRequest(http.MethodPost, "/keys/"+k.ID+"/disable", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r = r.WithContext(WithMount(WithUser(r.Context(), alice), "/console"))
	w = httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if loc := w.Header().Get("Location"); !strings.HasPrefix(loc, "/console/keys/"+k.ID) {
		t.Errorf("redirect under /console: %q", loc)
	}
}

// The pages answered before a console page can be (a person with no team,
// a store that has not answered since the config loaded) are styled: their
// stylesheet is linked under the mount and served to the signed-in person,
// not answered with the error page again (which a browser refuses as a
// stylesheet, leaving the page bare).
func TestErrorPagesBeforeAConsolePageAreStyled(t *testing.T) {
	f := newFixture(t)
	noTeam := User{ID: "dave", Addr: "203.0.113.11"}
	for _, tc := range []struct {
		name   string
		serve  func(w http.ResponseWriter, r *http.Request)
		status int
	}{
		{"no team", f.h.ServeHTTP, http.StatusForbidden},
		{"the store unavailable", Unavailable, http.StatusServiceUnavailable},
	} {
		get := func(path string) *httptest.ResponseRecorder {
			r := httptest.NewRequest(http.MethodGet, path, nil)
			r = r.WithContext(WithMount(WithUser(r.Context(), noTeam), "/console"))
			w := httptest.NewRecorder()
			tc.serve(w, r)
			return w
		}
		w := get("/")
		if w.Code != tc.status || !strings.Contains(w.Body.String(), `href="/console/static/console.css?v=`) {
			t.Errorf("%s: %d, want %d and the stylesheet under /console:\n%s", tc.name, w.Code, tc.status, w.Body)
		}
		for path, ctype := range map[string]string{"/static/console.css": "text/css", "/static/console.js": "text/javascript"} {
			if w := get(path); w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ctype) {
				t.Errorf("%s: %s answers %d %q", tc.name, path, w.Code, w.Header().Get("Content-Type"))
			}
		}
	}
	// Nobody signed in still gets nothing but the refusal.
	r := httptest.NewRequest(http.MethodGet, "/static/console.css", nil)
	for name, serve := range map[string]func(http.ResponseWriter, *http.Request){"the console": f.h.ServeHTTP, "the unavailable page": Unavailable} {
		w := httptest.NewRecorder()
		serve(w, r)
		if w.Code == 200 {
			t.Errorf("%s serves its stylesheet to nobody", name)
		}
	}
}

func TestTheStaticAssetsAreEmbedded(t *testing.T) {
	f := newFixture(t)
	for path, ctype := range map[string]string{"/static/console.css": "text/css", "/static/console.js": "text/javascript", "/static/favicon.svg": "image/svg+xml"} {
		w := f.get(alice, path)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ctype) || w.Body.Len() < 100 {
			t.Errorf("%s: %d %q %d bytes", path, w.Code, w.Header().Get("Content-Type"), w.Body.Len())
		}
	}
	if w := f.get(alice, "/static/../console.go"); w.Code != http.StatusNotFound {
		t.Errorf("path traversal: %d", w.Code)
	}
}

func ptr[T any](v T) *T { return &v }

func TestTheReviewListsFiftyKeysASectionUntilAskedForAll(t *testing.T) {
	f := newFixture(t)
	for i := range 60 {
		f.issue(fmt.Sprintf("forever-%02d", i), "sales", "mail.send")
	}
	body := f.get(admin, "/review").Body.String()
	if n := strings.Count(body, `name="id" value="key_`); n != 50 {
		t.Errorf("the review lists %d keys that never expire, want the first 50", n)
	}
	if !strings.Contains(body, "Showing the first 50 of 60") || !strings.Contains(body, `href="/review?all=no-expiry#no-expiry"`) {
		t.Errorf("no way to show all: %s", body)
	}
	body = f.get(admin, "/review?all=no-expiry").Body.String()
	if n := strings.Count(body, `name="id" value="key_`); n != 60 || strings.Contains(body, "Showing the first") {
		t.Errorf("?all=no-expiry lists %d keys, want 60", n)
	}
}

// A rotation with no grace, confirmed, stops the old key at once; the keys
// list then says which key replaced it, and a revoked key shows no expiry.
func TestARotationWithNoGraceIsConfirmedAndShown(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	w := f.post(alice, "/keys/"+k.ID+"/rotate", url.Values{"grace": {"0"}, "stop_now": {"1"}})
	if page := f.follow(alice, w).Body.String(); !strings.Contains(page, "The old key has stopped") || strings.Contains(page, "keeps working") {
		t.Errorf("the new key's page after “Stop it now” does not say the old key stopped:\n%s", page)
	}
	old := f.show(k.ID)
	if old.RotatedTo == "" || old.ExpiresAt == nil || old.ExpiresAt.After(f.now) {
		t.Fatalf("a confirmed rotation with no grace: %+v", old)
	}
	list := f.get(alice, "/").Body.String()
	if strings.Contains(list, "rotated: <a") {
		t.Errorf("the list marks an old key that already stopped as rotated:\n%s", list)
	}
	k2 := f.issue("shop", "sales", "mail.send")
	if page := f.follow(alice, f.post(alice, "/keys/"+k2.ID+"/rotate", url.Values{"grace": {"1h"}})).Body.String(); !strings.Contains(page, "The old key keeps working until") {
		t.Errorf("the new key's page after a rotation with an hour's grace:\n%s", page)
	}
	if list := f.get(alice, "/").Body.String(); !strings.Contains(list, `rotated: <a href="/keys/`+f.show(k2.ID).RotatedTo+`">the new key</a>`) {
		t.Errorf("the list does not lead from the old key in its grace period to the new one:\n%s", list)
	}
}

// An audit event's detail shows its times as the console shows times.
func TestEventDetailsShowTimesInWords(t *testing.T) {
	v := &view{}
	if got, want := v.Detail("old key valid until 2026-12-01T01:31:51Z; expires: never → 2027-03-01T00:00:00Z"),
		"old key valid until 1 Dec 2026 01:31 UTC; expires: never → 1 Mar 2027 00:00 UTC"; got != want {
		t.Errorf("Detail = %q, want %q", got, want)
	}
}

// A whole key in the search (no script to cut it to its hint) is taken out
// of the address at once, searched by its hint, and finds the key.
func TestAKeyInTheSearchBecomesItsHint(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	w := f.get(alice, "/?env=live&q="+url.QueryEscape(k.Key))
	wantStatus(t, w, http.StatusSeeOther)
	loc := w.Header().Get("Location")
	if strings.Contains(loc, k.Key[8:]) || !strings.Contains(loc, "q="+url.QueryEscape(k.Key[:16])) || !strings.Contains(loc, "env=live") {
		t.Fatalf("redirected to %q; want the key's hint in its place, the other choices kept", loc)
	}
	if body := f.get(alice, loc).Body.String(); !strings.Contains(body, k.ID) {
		t.Errorf("the hint search does not find the key")
	}
}

// downStore is a store whose server stopped answering lists.
type downStore struct{ store.Store }

func (downStore) ListKeys(context.Context, store.ListFilter) ([]*store.Record, error) {
	return nil, fmt.Errorf("keygate store: list keys: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
}

func (downStore) CountKeys(context.Context, store.ListFilter) (int, error) {
	return 0, fmt.Errorf("keygate store: count keys: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
}

// A store that does not answer is said to be unavailable, with a 503 and
// when to try again, not as something that went wrong in the console.
func TestAStoreThatDoesNotAnswerIsSaidToBeUnavailable(t *testing.T) {
	f := newFixture(t)
	f.h = New(keys.New(downStore{f.st}, keys.Options{}), Options{})
	w := f.get(alice, "/")
	wantStatus(t, w, http.StatusServiceUnavailable)
	if w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "The key store is unavailable") {
		t.Errorf("the page for a store that does not answer: %v\n%s", w.Header(), w.Body)
	}
}

// A settings form saved after someone else changed the key (another tab, a
// colleague, the CLI) does not undo that change: it is refused, and the
// form comes back with the key's settings as they are now.
func TestAStaleSettingsFormDoesNotUndoAnotherChange(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	path := "/keys/" + k.ID
	// Tab B is opened; tab A renames the key.
	tabB := f.get(alice, path).Body.String()
	version := regexp.MustCompile(`name="version" value="([0-9a-f]+)"`).FindStringSubmatch(tabB)
	if version == nil {
		t.Fatalf("the edit form carries no version:\n%s", tabB)
	}
	f.follow(alice, f.post(alice, path+"/settings", url.Values{"version": {version[1]},
		"name": {"crm-sync"}, "scope": {"mail.send"}, "expires": {"keep"}}))
	if f.show(k.ID).Name != "crm-sync" {
		t.Fatal("tab A's rename was not saved")
	}
	// Tab B, as filled before the rename, changes the rate.
	w := f.post(alice, path+"/settings", url.Values{"version": {version[1]},
		"name": {"crm"}, "scope": {"mail.send"}, "expires": {"keep"}, "rate_n": {"5"}, "rate_unit": {"m"}})
	wantStatus(t, w, http.StatusConflict)
	rec := f.show(k.ID)
	if rec.Name != "crm-sync" || rec.Rate != nil {
		t.Errorf("after the stale save the key is named %q with rate %v, want crm-sync and the route's", rec.Name, rec.Rate)
	}
	body := w.Body.String()
	if !strings.Contains(body, "Not saved: someone changed this key") || !strings.Contains(body, `id="name" name="name" value="crm-sync"`) {
		t.Errorf("the refused stale form does not say so and show the current settings:\n%s", body)
	}
	// Disabling in between is no settings change: a form stays current.
	v := keys.Version(f.show(k.ID))
	f.follow(alice, f.post(alice, path+"/disable", nil))
	f.follow(alice, f.post(alice, path+"/settings", url.Values{"version": {v},
		"name": {"crm-sync"}, "scope": {"mail.send"}, "expires": {"keep"}, "rate_n": {"5"}, "rate_unit": {"m"}}))
	if rec := f.show(k.ID); rec.Rate == nil || !rec.Disabled {
		t.Errorf("a form read before a disable: rate %v, disabled %v; want 5/m and still disabled", rec.Rate, rec.Disabled)
	}
}

// Rotating a disabled key (disable first, then rotate: a leak's usual
// order) gives a new key that is disabled too, and the pages say so
// instead of promising the old key keeps working.
func TestRotatingADisabledKeySaysBothAreDisabled(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	f.follow(alice, f.post(alice, "/keys/"+k.ID+"/disable", nil))
	page := f.follow(alice, f.post(alice, "/keys/"+k.ID+"/rotate", url.Values{"grace": {"24h"}})).Body.String()
	if !strings.Contains(page, "The old key is disabled") || !strings.Contains(page, "the new key is disabled, as the key it replaces was") || strings.Contains(page, "keeps working") {
		t.Errorf("the new key's page after rotating a disabled key:\n%s", page)
	}
	if old := f.get(alice, "/keys/"+k.ID).Body.String(); !strings.Contains(old, "This one is disabled.") || strings.Contains(old, "keeps working") {
		t.Errorf("the old key's page after rotating it while disabled:\n%s", old)
	}
}

// An action sent from a tab opened before the key was rotated or revoked
// is refused with its reason at the top of the page, since the form it
// came from is no longer there to show it.
func TestAStaleTabsActionSaysWhyAtTheTop(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	path := "/keys/" + k.ID
	f.follow(alice, f.post(alice, path+"/rotate", url.Values{"grace": {"1h"}}))
	w := f.post(alice, path+"/rotate", url.Values{"grace": {"1h"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if !strings.Contains(w.Body.String(), `<strong>That did not work.</strong> key `+k.ID+` was already rotated`) {
		t.Errorf("a second rotation from a stale tab does not say why:\n%s", w.Body)
	}
	f.follow(alice, f.post(alice, path+"/revoke", url.Values{"confirm": {"crm"}}))
	for _, action := range []string{"/enable", "/disable"} {
		w := f.post(alice, path+action, nil)
		if w.Code != http.StatusUnprocessableEntity || !strings.Contains(w.Body.String(), "<strong>That did not work.</strong> key "+k.ID+" is revoked") {
			t.Errorf("%s on a revoked key from a stale tab: %d\n%s", action, w.Code, w.Body)
		}
	}
	w = f.post(alice, path+"/settings", url.Values{"version": {keys.Version(f.show(k.ID))}, "name": {"x"}, "scope": {"mail.send"}, "expires": {"keep"}})
	if !strings.Contains(w.Body.String(), "<strong>That did not work.</strong> key "+k.ID+" is revoked") {
		t.Errorf("settings saved on a revoked key from a stale tab: %d\n%s", w.Code, w.Body)
	}
}

// An admin choosing an owner is offered the owners keys already have; a
// person of a team has no choice to make, and sees no other team's name.
func TestAnAdminIsOfferedTheOwnersKeysHave(t *testing.T) {
	f := newFixture(t)
	f.issue("crm", "sales", "mail.send")
	f.issue("ops-tool", "ops", "mail.send")
	if page := f.get(admin, "/new").Body.String(); !strings.Contains(page, `<datalist id="owners"><option value="ops"></option><option value="sales"></option></datalist>`) {
		t.Errorf("the admin's create page does not offer the owners:\n%s", page)
	}
	if page := f.get(alice, "/new").Body.String(); strings.Contains(page, "datalist") || strings.Contains(page, `value="ops"`) {
		t.Errorf("a team member's create page offers owners:\n%s", page)
	}
}

// A form token is good for the page it came with for 12 to 24 hours, then
// refused as too old: a token that leaked (a shared screenshot, a proxy's
// log) stops working, and a reloaded page gets a new one. A node whose clock
// is a little behind the one that made it takes it too.
func TestAFormTokenGrowsOld(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	start := f.now.Truncate(tokenWindow)
	f.now = start.Add(tokenWindow - time.Minute) // near its window's end
	token := f.h.formToken(ctx, alice.ID)
	for _, c := range []struct {
		at   time.Duration // from the start of the token's window
		want int
	}{
		{-2 * time.Second, http.StatusSeeOther},             // a node 2 s behind, before the window began
		{tokenWindow + time.Hour, http.StatusSeeOther},      // in the next window
		{2*tokenWindow + time.Minute, http.StatusForbidden}, // two windows on
	} {
		f.now = start.Add(c.at)
		w := f.post(alice, "/keys/"+k.ID+"/disable", url.Values{"csrf": {token}})
		if w.Code != c.want || c.want == http.StatusForbidden && !strings.Contains(w.Body.String(), "too old") {
			t.Errorf("a token %v after its window began: %d, want %d\n%s", c.at, w.Code, c.want, w.Body)
		}
	}
	if w := f.post(alice, "/keys/"+k.ID+"/enable", nil); w.Code != http.StatusSeeOther {
		t.Errorf("a fresh token: %d %s", w.Code, w.Body)
	}
}

// Revoking a rotation's new key while the old one is in its grace period
// says the old one still works, and the old key's page says its successor
// no longer does.
func TestRevokingARotationsNewKeySaysTheOldOneStillWorks(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	next := f.rotate(k.ID)
	page := f.follow(alice, f.post(alice, "/keys/"+next+"/revoke", url.Values{"confirm": {"crm"}})).Body.String()
	// Done, said as done; what may be left to do, as a warning, with the
	// old key a link to its page.
	if !strings.Contains(page, `<div class="notice" role="status">Key revoked.`) ||
		!strings.Contains(page, `<div class="warning" role="status"><strong>Warning:</strong> The key it replaced, <a href="/keys/`+k.ID+`">`+k.ID+`</a>, still works until its grace period ends`) {
		t.Errorf("the revoked new key's page:\n%s", page)
	}
	if old := f.get(alice, "/keys/"+k.ID).Body.String(); !strings.Contains(old, "(revoked: it no longer works)") {
		t.Errorf("the old key's page does not say its successor was revoked:\n%s", old)
	}
}

// A notice's text is escaped and its key ids are links: a key named as
// markup, reported leaked after its rotation, is named as text, beside a
// link to its new key.
func TestANoticeLinksKeysAndEscapesText(t *testing.T) {
	f := newFixture(t)
	k := f.issue("<i>crm</i>", "sales", "mail.send")
	next := f.rotate(k.ID)
	page := f.follow(alice, f.post(alice, "/leaked", url.Values{"key": {k.Key}})).Body.String()
	want := `<div class="notice" role="status">Revoked “&lt;i&gt;crm&lt;/i&gt;”. Every request with it is refused from now on. ` +
		`It had been rotated: its new key, <a href="/keys/` + next + `">` + next + `</a>, is not affected.</div>`
	if !strings.Contains(page, want) || strings.Contains(page, "<i>crm") {
		t.Errorf("the notice lacks %s:\n%s", want, page)
	}
}

// A leaked old key reported after its new key was revoked: the notice says
// the new key no longer works either, rather than that it is not affected,
// which read as a key still working.
func TestALeakedKeysNoticeSaysItsNewKeyStoppedToo(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	next := f.rotate(k.ID)
	if _, err := f.svc.Revoke(context.Background(), keys.Revocation{ID: next}, "test"); err != nil {
		t.Fatal(err)
	}
	page := f.follow(alice, f.post(alice, "/leaked", url.Values{"key": {k.Key}})).Body.String()
	want := `its new key, <a href="/keys/` + next + `">` + next + `</a>, is not affected, and is revoked already: it no longer works either.</div>`
	if !strings.Contains(page, want) {
		t.Errorf("the notice lacks %s:\n%s", want, page)
	}
}

// A message sealed by a console from before notices had kinds (a rolling
// upgrade: the redirect's next page served by an upgraded node) is shown,
// as a plain notice.
func TestANoticeSealedBeforeKindsIsShown(t *testing.T) {
	f := newFixture(t)
	tok, err := f.h.vault.put(ctx, &flash{user: alice.ID, messages: []string{"Settings saved."}})
	if err != nil {
		t.Fatal(err)
	}
	if body := f.get(alice, "/?n="+tok).Body.String(); !strings.Contains(body, `<div class="notice" role="status">Settings saved.</div>`) {
		t.Errorf("an old notice is not shown:\n%s", body)
	}
}

// The times a person acts on or quotes from a key's page (when its grace
// period ends, when it was revoked, when each change in its history was
// made) are written out in UTC, not only in a tooltip that keyboard and touch
// users never see.
func TestAKeysPageWritesOutTheTimesOfItsHistory(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	f.rotate(k.ID)
	text := func(page string) string {
		return strings.Join(strings.Fields(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, "")), " ")
	}
	old := text(f.get(alice, "/keys/"+k.ID).Body.String())
	for _, want := range []string{
		"keeps working until its grace period ends, in 24 hours (24 Nov 2026 12:00 UTC).",
		"Rotated just now (23 Nov 2026 12:00 UTC) by console alice",
		"Issued just now (23 Nov 2026 12:00 UTC) by test",
	} {
		if !strings.Contains(old, want) {
			t.Errorf("the old key's page lacks %q:\n%s", want, old)
		}
	}
	f.now = f.now.Add(time.Hour)
	if w := f.post(alice, "/keys/"+k.ID+"/revoke", url.Values{"confirm": {"crm"}}); w.Code != http.StatusSeeOther {
		t.Fatalf("revoke: %d %s", w.Code, w.Body)
	}
	if page := text(f.get(alice, "/keys/"+k.ID).Body.String()); !strings.Contains(page, "Revoked just now (23 Nov 2026 13:00 UTC). Every request") {
		t.Errorf("the revoked key's page does not say when:\n%s", page)
	}
}

// A key whose name holds a character refused since it was named (an
// invisible format character) can still have its other settings saved: the
// name, sent unchanged, is no change.
func TestSavingSettingsKeepsANameFromBeforeARule(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	if _, err := f.st.UpdateKey(ctx, k.Record.ID, nil, func(r *store.Record) error { r.Name = "crm\u200bsync"; return nil }); err != nil {
		t.Fatal(err)
	}
	w := f.post(alice, "/keys/"+k.Record.ID+"/settings", url.Values{"version": {keys.Version(f.show(k.Record.ID))},
		"name": {"crm\u200bsync"}, "scope": {"mail.send"}, "expires": {"keep"}, "rate_n": {"5"}, "rate_unit": {"m"}})
	if w.Code != http.StatusSeeOther {
		t.Fatalf("saving a rate: %d %s", w.Code, w.Body)
	}
	if rec := f.show(k.Record.ID); rec.Rate == nil || rec.Name != "crm\u200bsync" {
		t.Errorf("after the save: name %q, rate %v", rec.Name, rec.Rate)
	}
}

// The usage charts are pictures: what they show is also a table, each hour
// with requests and its counts, for people who cannot see them (a screen
// reader hears only the chart's totals) or tell its red from its green.
func TestTheUsageChartsAreAlsoATable(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	hour := f.now.Truncate(time.Hour)
	if err := f.st.AddUsage(ctx, []store.UsageDelta{
		{KeyID: k.ID, Hour: hour.Add(-3 * time.Hour), Counts: map[string]int64{"allowed": 1200, "recipients": 2400}},
		{KeyID: k.ID, Hour: hour, Counts: map[string]int64{"allowed": 4, "denied.revoked_key": 7, "recipients": 4}},
	}); err != nil {
		t.Fatal(err)
	}
	body := f.get(alice, "/keys/"+k.ID+"?window=24h").Body.String()
	table := regexp.MustCompile(`(?s)<table id="hours">.*?</table>`).FindString(body)
	if table == "" {
		t.Fatalf("the key page has no table of its charts:\n%s", body)
	}
	rows := regexp.MustCompile(`(?s)<tbody>.*</tbody>`).FindString(table)
	newest := strings.Index(rows, "23 Nov 2026 12:00–13:00 UTC")
	older := strings.Index(rows, "23 Nov 2026 09:00–10:00 UTC")
	if newest < 0 || older < newest || strings.Count(rows, "<tr>") != 2 {
		t.Errorf("the table's rows are not the two hours with use, newest first:\n%s", rows)
	}
	for _, want := range []string{`<th scope="col" class="num">Refused</th>`, `<td class="num" data-label="Refused">7</td>`, `<td class="num" data-label="Allowed">1,200</td>`, `<td class="num" data-label="Recipients">2,400</td>`, "<caption"} {
		if !strings.Contains(table, want) {
			t.Errorf("the charts' table lacks %s:\n%s", want, table)
		}
	}
	if list := f.get(alice, "/").Body.String(); !strings.Contains(list, `aria-label="Last 24 hours: 1,204 allowed, 7 refused"`) {
		t.Errorf("the sparkline's text does not say refused, as the key page does")
	}
	// A key with no use has no empty table.
	idle := f.issue("idle", "sales", "mail.send")
	if body := f.get(alice, "/keys/"+idle.ID).Body.String(); strings.Contains(body, `id="hours"`) {
		t.Errorf("an unused key's page has a table of no hours")
	}
}

// A refused bulk revoke (the word not typed: the page's script keeps the
// button off until it is, a browser without it does not) comes back as it
// was left: the keys still ticked, the reason kept, the box named in the
// error and marked invalid, "Error:" in the title; each list's table is
// named by its heading. One with no key ticked leads to the keys' boxes.
func TestARefusedBulkRevokeComesBackAsItWasLeft(t *testing.T) {
	f := newFixture(t)
	a := f.issue("forever-1", "sales", "mail.send")
	b := f.issue("forever-2", "ops", "mail.send")
	w := f.post(admin, "/review/revoke", url.Values{"id": {a.ID}, "confirm": {"yes"}, "reason": {"spring cleaning"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	body := w.Body.String()
	for _, want := range []string{
		"<title>Error: Review · keygate</title>",
		`aria-label="Revoke forever-1" checked>`,
		`aria-label="Revoke forever-2">`,
		`value="spring cleaning"`,
		`<a href="#bulk-confirm">To revoke the ticked keys, type the word revoke in the box.</a>`,
		`aria-describedby="bulk-confirm-hint form-error" aria-invalid="true"`,
		`<table aria-labelledby="no-expiry">`,
		`id="bulk-submit">Revoke 1 key</button>`, // how many, without script too
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the refused bulk revoke's page lacks %s", want)
		}
	}
	if f.show(a.ID).RevokedAt != nil || f.show(b.ID).RevokedAt != nil {
		t.Fatal("revoked without the typed confirmation")
	}
	// Sent with no key ticked, the error leads to the first box, and every
	// box is described by it.
	w = f.post(admin, "/review/revoke", url.Values{"confirm": {"revoke"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	body = w.Body.String()
	link := regexp.MustCompile(`<a href="#([^"]+)">Tick the keys to revoke first.</a>`).FindStringSubmatch(body)
	if link == nil {
		t.Fatalf("the error of a bulk revoke with no key ticked leads to no box:\n%s", body)
	}
	for _, id := range []string{a.ID, b.ID} {
		if !regexp.MustCompile(`<input type="checkbox" name="id" value="` + id + `" id="[^"]+" aria-label="[^"]+" aria-describedby="form-error" aria-invalid="true">`).MatchString(body) {
			t.Errorf("the box of %s is not described by the error", id)
		}
	}
	if !strings.Contains(body, `id="`+link[1]+`" aria-label="Revoke forever-`) {
		t.Errorf("the error leads to #%s, which is not a box", link[1])
	}
	if body := f.get(admin, "/review").Body.String(); strings.Contains(body, "Error:") || strings.Contains(body, " checked>") || strings.Contains(body, "aria-invalid") ||
		!strings.Contains(body, `id="bulk-submit">Revoke ticked keys</button>`) {
		t.Errorf("the review page, freshly opened, shows a refusal's marks")
	}
}

// A bulk revoke naming a key that does not exist (a stale or crafted form)
// revokes none of the keys it names, rather than those before it.
func TestABulkRevokeWithAnUnknownKeyRevokesNone(t *testing.T) {
	f := newFixture(t)
	a := f.issue("forever-1", "sales", "mail.send")
	b := f.issue("forever-2", "ops", "mail.send")
	w := f.post(admin, "/review/revoke", url.Values{"id": {a.ID, "key_0000000000000000", b.ID}, "confirm": {"revoke"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if body := w.Body.String(); !strings.Contains(body, "No key was revoked: key key_0000000000000000 not found") {
		t.Errorf("the refused bulk revoke does not say that no key was revoked:\n%s", body)
	}
	if f.show(a.ID).RevokedAt != nil || f.show(b.ID).RevokedAt != nil {
		t.Errorf("a bulk revoke refused for an unknown key revoked some of the others")
	}
}

// A refused leaked-key form says so in its title, and the field marked
// invalid names the error that says why.
func TestARefusedLeakedKeySaysWhyOnItsField(t *testing.T) {
	f := newFixture(t)
	w := f.post(alice, "/leaked", url.Values{"key": {"hunter2"}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	body := w.Body.String()
	for _, want := range []string{"<title>Error: Revoke a leaked key · keygate</title>", `aria-describedby="leaked-hint form-error" aria-invalid="true"`, `id="form-error"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the refused leaked-key form lacks %s", want)
		}
	}
	if body := f.get(alice, "/leaked").Body.String(); strings.Contains(body, "Error:") || strings.Contains(body, "form-error") {
		t.Errorf("the leaked-key page, freshly opened, shows a refusal's marks")
	}
	// It says so in a sentence first, not in the CLI's words.
	if !strings.Contains(body, "No key was found in what you pasted. Check that you copied all of it") || strings.Contains(body, "no keygate key found") {
		t.Errorf("a paste without a key is refused with:\n%s", body)
	}
	a, b := f.issue("a", "sales", "mail.send"), f.issue("b", "sales", "mail.send")
	w = f.post(alice, "/leaked", url.Values{"key": {a.Key + "\n" + b.Key}})
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if body := w.Body.String(); !strings.Contains(body, "What you pasted holds more than one key. Paste one key at a time.") {
		t.Errorf("a paste of two keys is refused with:\n%s", body)
	}
}

// A refused form is shown again as it was left, except for text that holds
// a key: the service refuses it without quoting it, and the page that says
// so does not show it either (a leak's reason naming the key it leaked, a
// name pasted from the wrong clipboard).
func TestARefusedFormDoesNotShowAKeyAgain(t *testing.T) {
	f := newFixture(t)
	a := f.issue("forever-1", "sales", "mail.send")
	other := f.issue("forever-2", "sales", "mail.send")
	held := "found in a gist: " + other.Key
	for _, c := range []struct {
		name string
		user User
		path string
		form url.Values
	}{
		{"a bulk revoke refused for its reason", admin, "/review/revoke", url.Values{"id": {a.ID}, "confirm": {"revoke"}, "reason": {held}}},
		{"a bulk revoke refused for its confirmation", admin, "/review/revoke", url.Values{"id": {a.ID}, "confirm": {"no"}, "reason": {held}}},
		{"a leaked key's reason", alice, "/leaked", url.Values{"key": {a.Key}, "reason": {held}}},
		{"a key page's revoke", alice, "/keys/" + a.ID + "/revoke", url.Values{"confirm": {"forever-1"}, "reason": {held}}},
		{"a key page's disable", alice, "/keys/" + a.ID + "/disable", url.Values{"reason": {held}}},
		{"the create form's name", alice, "/new", url.Values{"name": {held}, "owner": {"sales"}, "env": {"live"}, "scope": {"mail.send"}}},
		// A key pasted into a field of values the service quotes when it
		// refuses one.
		{"the create form's other scopes", alice, "/new", url.Values{"name": {"n"}, "env": {"live"}, "extra_scopes": {other.Key}}},
		{"the create form's sender domains", alice, "/new", url.Values{"name": {"n"}, "env": {"live"}, "scope": {"mail.send"}, "sender_domains": {other.Key}}},
		{"the create form's client addresses", alice, "/new", url.Values{"name": {"n"}, "env": {"live"}, "scope": {"mail.send"}, "allowed_ips": {other.Key}}},
		{"the settings form's sender domains", alice, "/keys/" + a.ID + "/settings", url.Values{"version": {keys.Version(f.show(a.ID))},
			"name": {"forever-1"}, "scope": {"mail.send"}, "expires": {"keep"}, "sender_domains": {"example.com " + other.Key}}},
		{"a ticked scope (a crafted request)", alice, "/new", url.Values{"name": {"n"}, "env": {"live"}, "scope": {"mail.send", other.Key, "mail." + other.Key}}},
		{"a rotation's grace", alice, "/keys/" + a.ID + "/rotate", url.Values{"grace": {other.Key}}},
		{"the settings form's reason", alice, "/keys/" + a.ID + "/settings", url.Values{"version": {keys.Version(f.show(a.ID))},
			"name": {"forever-1"}, "scope": {"mail.send"}, "expires": {"keep"}, "reason": {held}}},
	} {
		w := f.post(c.user, c.path, c.form)
		if w.Code < 400 {
			t.Errorf("%s: %d, want a refusal", c.name, w.Code)
		}
		if body := w.Body.String(); strings.Contains(body, other.Key) {
			t.Errorf("%s: the refusal's page shows the key again", c.name)
		}
	}
	if f.show(a.ID).RevokedAt != nil {
		t.Error("revoked with a reason holding a key")
	}
}

// A reveal's cookie is Secure, and a new key's snippet says https, when the
// browser reached the console over HTTPS, which behind a proxy that ends
// TLS the server tells (Options.HTTPS); over plain HTTP the cookie cannot
// be Secure, or the browser would drop it.
func TestTheRevealCookieIsSecureWhenTheConsoleIsReachedOverHTTPS(t *testing.T) {
	for _, https := range []bool{false, true} {
		f := newFixture(t)
		f.h = New(f.svc, Options{Now: func() time.Time { return f.now }, HTTPS: func(*http.Request) bool { return https }})
		w := f.post(alice, "/new", url.Values{"name": {"Shop orders"}, "scope": {"mail.send"}, "env": {"live"}, "expires": {"90d"}})
		wantStatus(t, w, http.StatusSeeOther)
		cookies := w.Result().Cookies()
		if len(cookies) != 1 || cookies[0].Secure != https {
			t.Errorf("reached over HTTPS %v: cookies %v, want one, Secure %v", https, cookies, https)
		}
		r := httptest.NewRequest(http.MethodGet, w.Header().Get("Location"), nil)
		r.AddCookie(cookies[0]) // the jar keeps a Secure cookie from http://
		page := f.serve(alice, r)
		if want := map[bool]string{false: "http://example.com/", true: "https://example.com/"}[https]; !strings.Contains(page.Body.String(), want) {
			t.Errorf("reached over HTTPS %v: the snippet does not name %s", https, want)
		}
	}
}

// FuzzConsoleForms proves that any form body posted to any of the
// console's forms, by an admin or a team member, gets a page or a 4xx:
// never a 500 or a panic.
func FuzzConsoleForms(f *testing.F) {
	fx := newFixture(f)
	id := fx.issue("crm", "sales", "mail.send").ID
	for _, c := range []struct {
		route uint8
		body  string
	}{
		{0, "name=crm&scope=mail.send&expires=90d&rate_n=10&rate_unit=s&quota_n=100&quota_unit=d&burst=5&max_recipients=3"},
		{0, "name=crm&scope=mail.send&expires=date&expires_date=2027-02-30"},
		{0, "name=crm&extra_scopes=a..b%2C*&expires=never&sender_domains=*.%2C..&allowed_ips=10.0.0.0/33"},
		{0, "name=crm&scope=mail.send&expires=30d&rate_n=99999999999999999999&rate_unit=x&max_recipients=-1"},
		{0, "name=%ff%fe&owner=%00&env=prod&scope=%zz"},
		{1, "name=crm&scope=mail.send&expires=keep&version=zzz"},
		{1, "name=crm&access-mail=all&expires=keep&burst=9223372036854775808"},
		{2, "grace=-&reason=x"},
		{2, "grace=100000d100000d100000d"},
		{2, "stop_now=1&grace=1h"},
		{3, "confirm=crm&reason=leaked"},
		{4, "reason=x"},
		{5, "ids=" + id + "&ids=key_x&reason=x"},
		{6, "key=kg_live_x&reason=leaked"},
		{7, "reason="},
	} {
		f.Add(c.route, c.body, false)
		f.Add(c.route, c.body, true)
	}
	routes := []string{"/new", "/keys/" + id + "/settings", "/keys/" + id + "/rotate", "/keys/" + id + "/revoke",
		"/keys/" + id + "/disable", "/review/revoke", "/leaked", "/keys/" + id + "/enable"}
	f.Fuzz(func(t *testing.T, route uint8, body string, asAdmin bool) {
		u := alice
		if asAdmin {
			u = admin
		}
		path := routes[int(route)%len(routes)]
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body+"&csrf="+url.QueryEscape(fx.h.formToken(ctx, u.ID))))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Sec-Fetch-Site", "same-origin")
		r.Header.Set("Origin", "http://example.com")
		if w := fx.serve(u, r); w.Code >= 500 {
			t.Fatalf("POST %s %q as %s: %d\n%s", path, body, u.ID, w.Code, w.Body)
		}
	})
}

// No field a person may paste a key into is kept by the browser's form
// history (autocomplete), which offers it again later, on any site with a
// field of that name: "Why revoke it: leaked in #general, kg_live_…" is
// refused by the service, but the browser keeps what was sent. Every free
// text field of every form is autocomplete="off", itself or by its form.
func TestNoFreeTextFieldIsKeptInTheBrowsersFormHistory(t *testing.T) {
	f := newFixture(t)
	k := f.issue("forever", "sales", "*")
	form := regexp.MustCompile(`(?s)<form\b([^>]*)>(.*?)</form>`)
	field := regexp.MustCompile(`<(?:input|textarea)\b[^>]*>`)
	attr := func(tag, name string) string {
		m := regexp.MustCompile(`\s` + name + `="([^"]*)"`).FindStringSubmatch(tag)
		if m == nil {
			return ""
		}
		return m[1]
	}
	for _, path := range []string{"/", "/new", "/keys/" + k.ID, "/review", "/leaked"} {
		body := f.get(admin, path).Body.String()
		for _, fm := range form.FindAllStringSubmatch(body, -1) {
			if strings.Contains(fm[1], `autocomplete="off"`) {
				continue
			}
			for _, tag := range field.FindAllString(fm[2], -1) {
				switch attr(tag, "type") {
				case "", "text", "search", "password":
				default:
					continue // hidden, a box, a choice, a date
				}
				if attr(tag, "inputmode") == "numeric" || attr(tag, "readonly") != "" || strings.Contains(tag, " readonly") {
					continue
				}
				if attr(tag, "autocomplete") != "off" {
					t.Errorf("GET %s: %s is kept in the browser's form history", path, tag)
				}
			}
		}
	}
}

// damagedStore is a store whose file is damaged: SQLite's own error for
// it, from a real store cut short.
type damagedStore struct {
	store.Store
	err error
}

func (s damagedStore) ListKeys(context.Context, store.ListFilter) ([]*store.Record, error) {
	return nil, fmt.Errorf("keygate store: list keys: %w", s.err)
}

func (s damagedStore) CountKeys(context.Context, store.ListFilter) (int, error) {
	return 0, fmt.Errorf("keygate store: count keys: %w", s.err)
}

// A store whose file is damaged is said to be damaged, with a 503 as the
// gateway answers its keys, not as something that went wrong in the console.
func TestADamagedStoreIsSaidToBeDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	st, err := store.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := os.Truncate(path, 8192); err != nil {
		t.Fatal(err)
	}
	if st, err = store.Open(context.Background(), "sqlite:"+path); err == nil {
		st.Close()
		t.Fatal("a store cut to its first two pages opened")
	}
	f := newFixture(t)
	f.h = New(keys.New(damagedStore{f.st, err}, keys.Options{}), Options{})
	w := f.get(alice, "/")
	wantStatus(t, w, http.StatusServiceUnavailable)
	if w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "The key store is damaged") {
		t.Errorf("the page for a damaged store: %v\n%s", w.Header(), w.Body)
	}
}

// A form the store could not take comes back as it was left, saying why,
// rather than as an error page that loses what was typed: the store here is
// one whose write lock another process holds past busy_timeout (as when a
// backup or a migration holds it; a PostgreSQL server that takes no writes
// or stopped answering gets the same page). Nothing is created or changed,
// and the form sent again once the store takes writes does what was asked.
func TestAFormTheStoreCouldNotTakeComesBackAsItWasLeft(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	newKey := url.Values{"name": {"Shop order emails"}, "scope": {"mail.send"}, "expires": {"90d"},
		"sender_domains": {"shop.example.com"}, "reason": {"the shop's confirmations"}}
	settings := url.Values{"version": {keys.Version(f.show(k.ID))}, "name": {"crm-sync"}, "scope": {"mail.send"},
		"expires": {"keep"}, "rate_n": {"5"}, "rate_unit": {"m"}, "reason": {"the CRM's new limit"}}
	f.get(alice, "/new") // the console has read its form secret, as one that has served a page

	other, err := sql.Open("sqlite", f.db)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lock, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		page, path string
		form       url.Values
		kept       []string
	}{
		{"the create page", "/new", newKey, []string{`id="name" name="name" value="Shop order emails"`, "shop.example.com",
			`value="mail.send" checked`, "the shop&#39;s confirmations", "<title>Error: Create a key"}},
		{"a key's settings", "/keys/" + k.ID + "/settings", settings, []string{`id="name" name="name" value="crm-sync"`,
			`id="rate-n" name="rate_n" inputmode="numeric" value="5"`, "the CRM&#39;s new limit", "<title>Error: crm ·", `<details class="edit" open>`}},
		// The actions on a key's page keep what was typed in them, and mark
		// none of it wrong: nothing in them was.
		{"a key's rotate form", "/keys/" + k.ID + "/rotate", url.Values{"grace": {"0"}, "stop_now": {"1"}, "reason": {"the laptop was stolen"}},
			[]string{`<option value="0" selected>`, `name="stop_now" value="1" aria-describedby="form-error" checked>`,
				`id="rotate-reason" name="reason" maxlength="500" value="the laptop was stolen"`, "<title>Error: crm ·"}},
		{"a key's revoke form", "/keys/" + k.ID + "/revoke", url.Values{"confirm": {"crm"}, "reason": {"it leaked"}},
			[]string{`aria-describedby="confirm-hint revoke-error" value="crm">`, `id="revoke-reason" name="reason" maxlength="500" value="it leaked"`}},
		{"a key's disable form", "/keys/" + k.ID + "/disable", url.Values{"reason": {"on hold"}},
			[]string{`id="state-reason" name="reason" maxlength="500" value="on hold"`}},
	} {
		w := f.post(alice, c.path, c.form)
		body := w.Body.String()
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Errorf("%s sent while the store takes no writes: %d, Retry-After %q; want 503 with it", c.page, w.Code, w.Header().Get("Retry-After"))
		}
		if !strings.Contains(body, "could not reach the key store") || !strings.Contains(body, "What you typed is kept below.") {
			t.Errorf("%s does not say the store failed and the form is kept:\n%s", c.page, body)
		}
		for _, want := range c.kept {
			if !strings.Contains(body, want) {
				t.Errorf("%s lost %s:\n%s", c.page, want, body)
			}
		}
		if strings.Contains(body, "aria-invalid") {
			t.Errorf("%s marks a field wrong for a failure of the store:\n%s", c.page, body)
		}
	}
	if _, err := lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if recs, _ := f.svc.List(ctx, "", true); len(recs) != 1 || f.show(k.ID).Name != "crm" || f.show(k.ID).RevokedAt != nil || f.show(k.ID).Disabled {
		t.Fatalf("the forms the store could not take changed something: %d keys, the key %+v", len(recs), f.show(k.ID))
	}
	f.follow(alice, f.post(alice, "/keys/"+k.ID+"/disable", url.Values{"reason": {"on hold"}}))
	if !f.show(k.ID).Disabled {
		t.Errorf("the disable form sent again did not disable the key")
	}
	f.follow(alice, f.post(alice, "/new", newKey))
	f.follow(alice, f.post(alice, "/keys/"+k.ID+"/settings", settings))
	if recs, _ := f.svc.List(ctx, "", true); len(recs) != 2 || f.show(k.ID).Name != "crm-sync" || f.show(k.ID).Rate == nil {
		t.Errorf("the forms sent again: %d keys, the key named %q with rate %v", len(recs), f.show(k.ID).Name, f.show(k.ID).Rate)
	}
}

// A create or settings form sent from the person's own page after its token
// grew too old (a page left open overnight) comes back as it was left, with
// a token that works, rather than as a refusal that loses what was typed;
// nothing changes until it is sent again. Sent from anywhere a browser does
// not place on the console's own page, it is refused as any form without a
// token is, and shows nothing sent back.
func TestAFormLeftOpenTooLongComesBackAsItWasLeft(t *testing.T) {
	f := newFixture(t)
	k := f.issue("crm", "sales", "mail.send")
	old := f.h.formToken(ctx, alice.ID)
	f.now = f.now.Add(2*tokenWindow + time.Minute) // the next morning's
	newKey := url.Values{"csrf": {old}, "name": {"Shop order emails"}, "scope": {"mail.send"}, "expires": {"90d"},
		"sender_domains": {"shop.example.com"}}
	settings := url.Values{"csrf": {old}, "version": {keys.Version(f.show(k.ID))}, "name": {"crm-sync"}, "scope": {"mail.send"},
		"expires": {"keep"}, "rate_n": {"5"}, "rate_unit": {"m"}}
	fresh := `name="csrf" value="` + f.h.formToken(ctx, alice.ID) + `"`
	for _, c := range []struct {
		page, path string
		form       url.Values
		kept       []string
	}{
		{"the create page", "/new", newKey, []string{`id="name" name="name" value="Shop order emails"`, "shop.example.com",
			`value="mail.send" checked`, "<title>Error: Create a key"}},
		{"a key's settings", "/keys/" + k.ID + "/settings", settings, []string{`id="name" name="name" value="crm-sync"`,
			`id="rate-n" name="rate_n" inputmode="numeric" value="5"`, "<title>Error: crm ·", `<details class="edit" open>`}},
	} {
		for _, h := range [][]string{nil, {"Sec-Fetch-Site", "", "Origin", "http://example.com"}} {
			w := f.post(alice, c.path, c.form, h...)
			body := w.Body.String()
			if w.Code != http.StatusForbidden || !strings.Contains(body, "Not sent: this page was opened too long ago") || !strings.Contains(body, fresh) {
				t.Errorf("%s sent with an old token (headers %q): %d, want 403 saying so with a token that works:\n%s", c.page, h, w.Code, body)
			}
			for _, want := range c.kept {
				if !strings.Contains(body, want) {
					t.Errorf("%s sent with an old token (headers %q) lost %s:\n%s", c.page, h, want, body)
				}
			}
		}
		for _, h := range [][]string{{"Sec-Fetch-Site", "cross-site"}, {"Sec-Fetch-Site", "same-site"},
			{"Sec-Fetch-Site", "", "Origin", ""}, {"Sec-Fetch-Site", "", "Origin", "https://evil.example"}} {
			w := f.post(alice, c.path, c.form, h...)
			if body := w.Body.String(); w.Code != http.StatusForbidden || !strings.Contains(body, "This form was not accepted") ||
				strings.Contains(body, "crm-sync") || strings.Contains(body, "Shop order emails") || strings.Contains(body, fresh) {
				t.Errorf("%s sent with an old token (headers %q): %d, want the plain refusal:\n%s", c.page, h, w.Code, body)
			}
		}
	}
	if recs, _ := f.svc.List(ctx, "", true); len(recs) != 1 || f.show(k.ID).Name != "crm" {
		t.Fatalf("forms with an old token changed something: %d keys, the key named %q", len(recs), f.show(k.ID).Name)
	}
	// Another team's key is not shown through its settings' path.
	other := f.issue("ops-tool", "ops", "mail.send")
	if w := f.post(alice, "/keys/"+other.ID+"/settings", settings); w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), "ops-tool") {
		t.Errorf("another team's settings with an old token: %d\n%s", w.Code, w.Body)
	}
	// Sent again with the page's new token, each does what was asked.
	newKey.Del("csrf")
	settings.Del("csrf")
	f.follow(alice, f.post(alice, "/new", newKey))
	f.follow(alice, f.post(alice, "/keys/"+k.ID+"/settings", settings))
	if recs, _ := f.svc.List(ctx, "", true); len(recs) != 3 || f.show(k.ID).Name != "crm-sync" {
		t.Errorf("the forms sent again: %d keys, the key named %q", len(recs), f.show(k.ID).Name)
	}
}
