package console

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// node is the console of another gateway on the fixture's store: its own
// store connection, service and handler, as a second Caddy has. wrap, when
// set, wraps its store.
func (f *fixture) node(wrap func(store.Store) store.Store) *fixture {
	f.t.Helper()
	st, err := store.Open(ctx, "sqlite:"+f.db)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { st.Close() })
	if wrap != nil {
		st = wrap(st)
	}
	n := &fixture{t: f.t, st: st, db: f.db, now: f.now, jars: f.jars}
	clock := func() time.Time { return n.now }
	n.svc = keys.New(st, keys.Options{Now: clock})
	n.h = New(n.svc, Options{Now: clock, GatewayURL: "https://mail-gw.example.com"})
	return n
}

func TestAPersonMayReachAnyGatewayOfTheStore(t *testing.T) {
	a := newFixture(t)
	b := a.node(nil)
	if a.h.formToken(ctx, "alice") != b.h.formToken(ctx, "alice") {
		t.Fatal("the two gateways give alice different form tokens: a form from one is refused by the other")
	}

	// A key created on a is shown once by b, then by neither.
	w := a.post(alice, "/new", url.Values{"name": {"Shop orders"}, "scope": {"mail.send"}, "expires": {"30d"}})
	wantStatus(t, w, http.StatusSeeOther)
	loc := w.Header().Get("Location")
	page := b.get(alice, loc)
	wantStatus(t, page, http.StatusOK)
	key := keyPattern.FindString(page.Body.String())
	if key == "" {
		t.Fatalf("the other gateway's reveal page holds no key:\n%s", page.Body)
	}
	for name, n := range map[string]*fixture{"a": a, "b": b} {
		if again := n.get(alice, loc); again.Code != http.StatusGone || strings.Contains(again.Body.String(), key) {
			t.Errorf("the reveal page again on %s: %d", name, again.Code)
		}
	}

	// A form opened on b submits to a, and a's message shows on b.
	recs, _ := a.svc.List(ctx, "", true)
	form := url.Values{"reason": {"investigating"}, "csrf": {b.h.formToken(ctx, alice.ID)}}
	w = a.post(alice, "/keys/"+recs[0].ID+"/disable", form)
	wantStatus(t, w, http.StatusSeeOther)
	if msg := b.get(alice, w.Header().Get("Location")); !strings.Contains(msg.Body.String(), "Key disabled") {
		t.Errorf("the other gateway does not show the change's message:\n%s", msg.Body)
	}

}

func TestTheStoreNeverHoldsANewKeyItCouldRead(t *testing.T) {
	f := newFixture(t)
	var shown []string
	for i := range 3 {
		w := f.post(alice, "/new", url.Values{"name": {"k" + string(rune('a'+i))}, "scope": {"mail.send"}, "expires": {"30d"}})
		if i == 2 {
			continue // left unread in the store
		}
		shown = append(shown, keyPattern.FindString(f.follow(alice, w).Body.String()))
	}
	recs, _ := f.svc.List(ctx, "", true)
	if len(recs) != 3 || len(shown) != 2 || shown[0] == "" {
		t.Fatalf("%d keys, shown %q", len(recs), shown)
	}
	files, _ := filepath.Glob(f.db + "*")
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range shown {
			if bytes.Contains(b, []byte(key)) || bytes.Contains(b, []byte(key[len(key)-20:])) {
				t.Errorf("%s holds a shown key (or its end)", filepath.Base(path))
			}
		}
		if loc := keyPattern.FindIndex(b); loc != nil {
			t.Errorf("%s holds a key-shaped string", filepath.Base(path))
		}
	}
}

// flashlessStore is a store whose flashes cannot be written.
type flashlessStore struct{ store.Store }

func (flashlessStore) PutFlash(context.Context, string, string, time.Time, time.Time) error {
	return errors.New("flashes unavailable")
}

func TestANewKeyIsShownWhenItCannotWaitForItsPage(t *testing.T) {
	f := newFixture(t)
	n := f.node(func(st store.Store) store.Store { return flashlessStore{st} })
	w := n.post(alice, "/new", url.Values{"name": {"direct"}, "scope": {"mail.send"}, "expires": {"30d"}})
	wantStatus(t, w, http.StatusOK)
	if !keyPattern.MatchString(w.Body.String()) || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("the POST's answer does not show the new key (or may be cached):\n%s", w.Body)
	}
}

func TestARevealLinkOpensNothingWithoutItsCookie(t *testing.T) {
	f := newFixture(t)
	w := f.post(alice, "/new", url.Values{"name": {"link"}, "scope": {"mail.send"}, "expires": {"30d"}})
	wantStatus(t, w, http.StatusSeeOther)
	loc := w.Header().Get("Location")
	cookies := w.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("the POST sets %d cookies, want the reveal's one", len(cookies))
	}
	ck := cookies[0]
	if ck.Path != loc || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.MaxAge != 300 || strings.Contains(loc, ck.Value) {
		t.Errorf("reveal cookie %+v for %q: want HttpOnly, SameSite=Strict, 5 minutes, on the page's path only, its value not in the URL", ck, loc)
	}
	// The URL alone (as an access log has it), then the cookie with
	// another person: nothing, and the reveal is not spent.
	bare := httptest.NewRequest(http.MethodGet, loc, nil)
	if w := f.h.serveAs(alice, bare); w.Code != http.StatusGone || keyPattern.MatchString(w.Body.String()) {
		t.Errorf("the reveal URL without its cookie: %d", w.Code)
	}
	withCookie := httptest.NewRequest(http.MethodGet, loc, nil)
	withCookie.AddCookie(ck)
	if w := f.h.serveAs(bob, withCookie); w.Code != http.StatusGone || keyPattern.MatchString(w.Body.String()) {
		t.Errorf("another person with the cookie: %d", w.Code)
	}
	page := f.get(alice, loc)
	if page.Code != http.StatusOK || !keyPattern.MatchString(page.Body.String()) {
		t.Fatalf("alice's reveal after those attempts: %d", page.Code)
	}
	// The token is spent: the page replaces it, and its stylesheet ends
	// the cookie (TestTheRevealPageEndsItsCookieOnceItIsUp).
	if spent := page.Result().Cookies(); len(spent) != 1 || spent[0].Value == ck.Value || spent[0].Path != loc {
		t.Errorf("the reveal page does not take its token out of its cookie: %+v", spent)
	}
}

// serveAs serves r as u without any cookie jar.
func (h *Handler) serveAs(u User, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r.WithContext(WithUser(r.Context(), u)))
	return w
}
