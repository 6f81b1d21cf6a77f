package console

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// createView is the create-key page.
type createView struct {
	view
	Form    settingsForm
	Presets []option
}

func (c *call) newPage() error {
	lines, err := c.keys.RouteScopes(c.r.Context())
	if err != nil {
		return err
	}
	form := newForm(lines, c.user.Owner, !c.user.Admin)
	c.offerOwners(&form)
	c.render(http.StatusOK, "new", &createView{
		view:    view{Title: "Create a key", Nav: "new"},
		Form:    form,
		Presets: expiryPresets,
	})
	return nil
}

func (c *call) create() error {
	ctx := c.r.Context()
	lines, err := c.keys.RouteScopes(ctx)
	if err != nil {
		return err
	}
	form := c.createForm(lines)
	spec, err := form.spec(c.user.Admin)
	var res *keys.Result
	if errs := asFormErrs(err); errs != nil && !spec.Force && spec.Scopes != nil {
		// A scope no route uses is said with the rest, not after they
		// are mended (Issue would refuse it next).
		if fe := asFormErr(c.keys.CheckScopes(ctx, *spec.Scopes)); fe != nil {
			errs.add(*fe)
			errs.sort()
			err = errs
		}
	}
	if err == nil {
		res, err = c.keys.Issue(ctx, spec, c.user.actor())
	}
	if err != nil {
		errs, status := asFormErrs(err), http.StatusUnprocessableEntity
		if errs == nil {
			pe := c.storeFailed(err)
			if pe == nil {
				return err
			}
			errs, status = formErrs{{Message: pe.msg + keptTyped}}, pe.status
		}
		form.Errs = errs
		c.createAgain(status, form, lines)
		return nil
	}
	if res.Record.ExpiresAt == nil && !slices.Contains(res.Record.Scopes, "*") { // "*" has its own warning
		res.Warnings = append(res.Warnings, "this key never expires: if it leaks, it works until someone revokes it; "+
			"set an expiry on its page, or rotate it on a schedule")
	}
	return c.reveal(res, "", lines)
}

// createForm reads the create form sent; a person who is not an admin
// creates keys of their owner, whatever the form says.
func (c *call) createForm(lines []store.RouteScope) settingsForm {
	form := readForm(c.r.PostForm, lines, false)
	if !c.user.Admin {
		form.Owner, form.OwnerFixed = c.user.Owner, true
	}
	return form
}

// createAgain shows a create form that was not taken as it was sent, with
// what its Errs say.
func (c *call) createAgain(status int, form settingsForm, lines []store.RouteScope) {
	form.OfferForce = form.E("extra-scopes").Message != "" && len(lines) > 0
	form.shownAgain()
	c.offerOwners(&form)
	c.render(status, "new", &createView{
		view:    view{Title: "Error: Create a key", Nav: "new"},
		Form:    form,
		Presets: expiryPresets,
	})
}

// revealView is the page that shows a new key, once.
type revealView struct {
	view
	Key, KeyID, Name string
	Rotated          string
	// OldEnds is when the rotated key stops; OldStopped and OldDisabled
	// say it works no more.
	OldEnds                 timeView
	OldStopped, OldDisabled bool
	Curl, Gateway           string
	Warnings                []string
	// Shown is the page's own stylesheet, which ends its cookie once the
	// page is up (revealShown), or "" when the page is not to be kept from
	// the back-forward cache (the answer to a POST is never kept in it).
	Shown string
}

// reveal keeps a new key for the reveal page and sends the browser there:
// the POST's own response does not hold the key, so a reload or the back
// button cannot show or re-create it. Only when the store cannot keep it
// does the POST's answer show it (the browser then asks before sending the
// form again).
func (c *call) reveal(res *keys.Result, rotated string, lines []store.RouteScope) error {
	curl, gw := c.snippet(res.Record, res.Key, lines)
	f := &flash{
		user: c.user.ID, key: res.Key, keyID: res.ID, name: res.Name, rotated: rotated,
		curl: curl, gateway: gw, messages: res.Warnings,
	}
	if res.OldKeyEnds != nil {
		f.oldEnds = *res.OldKeyEnds
	}
	f.oldDisabled = res.Replaced != nil && res.Replaced.Disabled
	tok, err := c.h.vault.put(c.r.Context(), f)
	if err != nil {
		// The key exists and this is the only time it can be shown: show
		// it in the POST's own answer rather than lose it.
		c.h.opts.Logf("keygate console: keeping the new key %s for its reveal page: %v", res.ID, err)
		c.showNewKey(f, "")
		return nil
	}
	// The token travels in a cookie for the reveal page's path only, not
	// in its URL: URLs land in access logs, and with the store the token
	// would open the key; Caddy's logs redact cookies. The page's name is a
	// random one of its own, so reveals in several tabs do not meet.
	page := make([]byte, 12)
	rand.Read(page)
	path := "/reveal/" + base64.RawURLEncoding.EncodeToString(page)
	http.SetCookie(c.w, c.revealCookie(path, tok, int(c.h.opts.RevealFor/time.Second)))
	return c.redirect(path)
}

// revealCookieName holds a reveal's token, on the reveal page's path only.
const revealCookieName = "keygate_reveal"

// revealCookie is the cookie that carries tok to the reveal page at path,
// for maxAge seconds (-1 deletes it).
func (c *call) revealCookie(path, tok string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: revealCookieName, Value: tok, Path: c.url(path), MaxAge: maxAge,
		HttpOnly: true, Secure: c.h.opts.HTTPS(c.r), SameSite: http.SameSiteStrictMode}
}

func (c *call) revealPage() error {
	var tok string
	if ck, err := c.r.Cookie(revealCookieName); err == nil {
		tok = ck.Value
	}
	f, ok, err := c.h.vault.take(c.r.Context(), tok, c.user.ID, true)
	if err != nil {
		return err // the store did not answer: the key waits, a reload may show it
	}
	page := "/reveal/" + c.id
	if !ok {
		if tok != "" {
			http.SetCookie(c.w, c.revealCookie(page, "", -1))
		}
		c.render(http.StatusGone, "reveal", &revealView{view: view{Title: "Key no longer shown", Nav: "new"}})
		return nil
	}
	// The token is spent; the cookie stays, holding no token, until the
	// page's stylesheet ends it (revealShown). Ended after the page is up,
	// it is a cookie changed since the page loaded, which keeps Chromium
	// from bringing the page back, with the key, from its back-forward
	// cache (it keeps no-store pages there unless a cookie changes): Back
	// loads the page again, which says the key is no longer shown, with
	// or without the page's script, after leaving for another console
	// page or another site alike.
	http.SetCookie(c.w, c.revealCookie(page, revealShownValue, int(c.h.opts.RevealFor/time.Second)))
	c.showNewKey(f, c.url(page+"/shown.css"))
	return nil
}

// revealShownValue is what the reveal cookie holds once the key is shown:
// no token.
const revealShownValue = "shown"

// revealShown is the reveal page's stylesheet: it ends the reveal cookie
// (see revealPage), and styles nothing.
func (c *call) revealShown() error {
	if _, err := c.r.Cookie(revealCookieName); err == nil {
		http.SetCookie(c.w, c.revealCookie("/reveal/"+c.id, "", -1))
	}
	c.w.Header().Set("Content-Type", "text/css; charset=utf-8")
	c.w.WriteHeader(http.StatusOK)
	return nil
}

// showNewKey renders the page that shows a new key, once; shown is its
// stylesheet (revealView.Shown).
func (c *call) showNewKey(f *flash, shown string) {
	v := &revealView{view: view{Title: "Copy your new key", Nav: "new", Now: c.now},
		Key: f.key, KeyID: f.keyID, Name: f.name, Rotated: f.rotated, Curl: f.curl, Gateway: f.gateway, Warnings: f.messages,
		OldDisabled: f.oldDisabled, OldStopped: f.rotated != "" && !f.oldEnds.After(c.now), Shown: shown}
	v.OldEnds = v.When(f.oldEnds)
	c.render(http.StatusOK, "reveal", v)
}

// snippet returns a ready curl command for a new key against the first
// route its scopes open, and the gateway's base URL for SDKs.
func (c *call) snippet(rec *store.Record, key string, lines []store.RouteScope) (curl, gateway string) {
	gw := c.h.opts.GatewayURL
	if gw == "" {
		scheme := "http"
		if c.h.opts.HTTPS(c.r) {
			scheme = "https"
		}
		gw = scheme + "://" + c.r.Host
	}
	method, path := "GET", "/"
	for _, l := range lines {
		if keys.Covers(rec.Scopes, l.Scope) && !strings.HasPrefix(l.Path, "*") {
			method, path = l.Method, strings.TrimSuffix(l.Path, "*")
			break
		}
	}
	var b strings.Builder
	b.WriteString("curl -i ")
	if method != "" && method != "GET" && method != "POST" { // curl -d implies POST
		b.WriteString("-X " + method + " ")
	}
	b.WriteString(gw + path + " \\\n  -H 'Authorization: Bearer " + key + "'")
	if method == "POST" || method == "PUT" || method == "PATCH" {
		b.WriteString(" \\\n  -H 'Content-Type: application/json' -d @message.json")
	}
	return b.String(), gw
}
