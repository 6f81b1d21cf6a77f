package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// contentSecurityPolicy allows the console's own script and stylesheet and
// nothing else: no inline script or style, no other origin, no framing, no
// form posting elsewhere, no <base> rewriting its links.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// setSecurityHeaders sets what every console response carries. Pages are
// never cached: they show keys' state, and one of them shows a new key.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// formToken is the token every console form carries for user: an HMAC of
// their id and the time window it was made in, so a page of another site
// cannot know it, one that leaked stops working, and the console keeps no
// session state. The HMAC's key is the store's console secret, the same
// for every gateway on the store, so a form opened on one gateway submits
// to another.
func (h *Handler) formToken(ctx context.Context, user string) string {
	return h.tokenIn(ctx, user, h.opts.Now().Unix()/int64(tokenWindow/time.Second))
}

// tokenWindow is the time a form token is made for. A token is taken in its
// own window and the next, so a page's forms work for 12 to 24 hours.
const tokenWindow = 12 * time.Hour

func (h *Handler) tokenIn(ctx context.Context, user string, window int64) string {
	m := hmac.New(sha256.New, h.formSecret(ctx))
	m.Write([]byte("keygate console form\x00" + user + "\x00" + strconv.FormatInt(window, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validToken reports whether got is user's token of this window or the
// one before, or of the next: a node whose clock is a little behind the one
// that made the page's token takes it too.
func (h *Handler) validToken(ctx context.Context, user, got string) bool {
	now := h.opts.Now().Unix() / int64(tokenWindow/time.Second)
	for _, w := range []int64{now, now - 1, now + 1} {
		if hmac.Equal([]byte(got), []byte(h.tokenIn(ctx, user, w))) {
			return true
		}
	}
	return false
}

// formSecret returns the store's console secret, storing one made here if
// the store has none yet. While the store cannot be read it returns this
// process's own secret and asks again next time (forms opened meanwhile
// must then be reloaded).
func (h *Handler) formSecret(ctx context.Context) []byte {
	if s := h.secret.Load(); s != nil {
		return *s
	}
	candidate := make([]byte, 32)
	rand.Read(candidate)
	v, err := h.svc.ConsoleSecret(ctx, "form", hex.EncodeToString(candidate))
	if err != nil {
		h.opts.Logf("keygate console: reading the form secret from the store: %v", err)
		return processSecret
	}
	b := []byte(v)
	h.secret.Store(&b)
	return b
}

// errForm is the answer to a change that did not come from the console's
// own page.
var errForm = &pageError{http.StatusForbidden, "This form was not accepted",
	"The change did not come from a console page opened by you (it may come from another site, or the page is too old). " +
		"Nothing was changed. Reload the page and try again."}

// checkForm refuses a state-changing request that another site could have
// made: a cross-origin request by what the browser says (Sec-Fetch-Site,
// Origin), or one without the person's form token.
func (c *call) checkForm() error {
	if err := c.h.origin.Check(c.r); err != nil {
		return errForm
	}
	c.r.Body = http.MaxBytesReader(c.w, c.r.Body, 64<<10)
	if err := c.r.ParseForm(); err != nil {
		return &pageError{http.StatusBadRequest, "This form was not accepted", "The form could not be read. Reload the page and try again."}
	}
	got := c.r.PostForm.Get("csrf")
	if !c.h.validToken(c.r.Context(), c.user.ID, got) {
		return c.staleForm()
	}
	return nil
}

// staleFormMessage heads a create or settings form whose token was not
// taken, shown again as it was left.
const staleFormMessage = "Not sent: this page was opened too long ago (a form works for 12 to 24 hours), so nothing has changed. " +
	"What you typed is kept below: check it and send it again."

// staleForm answers a form without a token that works, sent from the
// person's own console page as their browser says (Sec-Fetch-Site, or an
// Origin the cross-origin check found to be the console's): one left open
// overnight, or opened while the store could not be read. The create and
// settings forms, which take typing, come back as they were left with a
// token that works, changing nothing; anything else, and any request a
// browser does not place on the console's own page, gets errForm.
func (c *call) staleForm() error {
	switch site := c.r.Header.Get("Sec-Fetch-Site"); {
	case site == "same-origin":
	case site == "" && c.r.Header.Get("Origin") != "": // an older browser's, which the check matched to the console's host
	default:
		return errForm
	}
	_, create := matchPath("/new", c.r.URL.Path)
	_, settings := matchPath("/keys/{id}/settings", c.r.URL.Path)
	if !create && !settings {
		return errForm
	}
	lines, err := c.keys.RouteScopes(c.r.Context())
	if err != nil {
		return errForm
	}
	if create {
		form := c.createForm(lines)
		form.Errs = formErrs{{Message: staleFormMessage}}
		c.createAgain(http.StatusForbidden, form, lines)
		return errShown
	}
	form := readForm(c.r.PostForm, lines, true)
	form.Errs = formErrs{{Message: staleFormMessage}}
	if err := c.settingsAgain(http.StatusForbidden, form, lines); err != nil {
		return errForm // not a key of theirs, or the store did not answer
	}
	return errShown
}

// errShown is a refusal whose page has been written.
var errShown = errors.New("keygate console: the refusal's page is written")
