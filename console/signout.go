package console

import (
	"net/http"
	"strconv"
	"strings"
)

// signedOutCookie is set when a person signs out. It holds nothing: that a
// cookie of the console's pages changed keeps Chromium from bringing those
// pages back from its back-forward cache (as the reveal page's cookie does),
// so Back after signing out asks to sign in rather than show them.
const signedOutCookie = "keygate_signed_out"

// signOut ends a sign-in the browser keeps: HTTP Basic credentials, sent
// with every request until the browser closes. A 401 without a challenge
// to a request that carried them makes the browser forget them (Chromium
// drops credentials a server refuses), so the next request is asked to sign
// in, by the authentication handler in front of the console. A sign-in of
// a single sign-on ends at the SSO: the browser is sent to its sign-out
// (Options.SignOutURL).
func (c *call) signOut() error {
	basic := basicSignIn(c.r)
	if !basic && c.h.opts.SignOutURL == "" {
		return &pageError{http.StatusBadRequest, "Sign out at your sign-in service",
			"The console cannot end this sign-in: sign out where you signed in."}
	}
	http.SetCookie(c.w, &http.Cookie{Name: signedOutCookie, Value: strconv.FormatInt(c.now.UnixNano(), 36), Path: c.url("/"),
		MaxAge: 60, HttpOnly: true, Secure: c.h.opts.HTTPS(c.r), SameSite: http.SameSiteStrictMode})
	if !basic {
		// The SSO ends its own session; the cookie above is set first, so
		// Back from its page does not bring a console page back either.
		http.Redirect(c.w, c.r, c.h.opts.SignOutURL, http.StatusSeeOther)
		return nil
	}
	c.h.pages.renderTo(c.w, http.StatusUnauthorized, "signedout", &errorView{view: view{Title: "Signed out", Mount: c.mount}})
	return nil
}

// basicSignIn reports whether the browser signed in with HTTP Basic
// credentials, which the console ends itself.
func basicSignIn(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Authorization"), "Basic ")
}
