package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
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
// their id, so a page of another site cannot know it and the console keeps
// no session state.
func formToken(user string) string {
	m := hmac.New(sha256.New, formSecret)
	m.Write([]byte("keygate console form\x00" + user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
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
	if !hmac.Equal([]byte(got), []byte(formToken(c.user.ID))) {
		return errForm
	}
	return nil
}
