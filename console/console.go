// Package console is keygate's web console: server-rendered pages where the
// people who own integrations create, label, limit, copy, watch, rotate and
// revoke their keys. It is the third adapter over keys.Service, beside the
// CLI and the admin API, and holds no key logic of its own.
//
// The console never authenticates anyone. Whatever serves it (the Caddy
// module keygate_console, after basic_auth or forward_auth) names the person
// with WithUser; a request without one is refused. A person who is not an
// admin sees and changes only the keys of their owner, enforced by the
// service (keys.Service.ForOwner) for every id a request names.
//
// Every state-changing request must come from the console's own pages: it
// must pass Go's cross-origin check (Sec-Fetch-Site, Origin) and carry the
// form token bound to the person. Pages are sent with a strict Content
// Security Policy (no inline script or style, nothing from another origin).
// A new key is shown once, on a page reached by a one-time token held in
// memory, and never again.
//
// The package imports nothing from Caddy.
package console

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// User is the person making a request, as the server in front of the
// console authenticated them.
type User struct {
	// ID names the person (a basic_auth user, an SSO user id). It is
	// recorded as the actor of every change they make.
	ID string
	// Owner is the owner whose keys the person manages when not an admin.
	Owner string
	// Admin people see and manage every key.
	Admin bool
	// Addr is the client's address, recorded with every change.
	Addr string
}

// actor names the person in audit events.
func (u User) actor() string {
	if u.Addr == "" {
		return "console " + u.ID
	}
	return "console " + u.ID + " from " + u.Addr
}

type ctxKey int

const (
	userKey ctxKey = iota
	mountKey
)

// WithUser returns ctx naming the person making the request.
func WithUser(ctx context.Context, u User) context.Context {
	return context.WithValue(ctx, userKey, u)
}

// WithMount returns ctx saying at which URL path the console is mounted
// ("/console" when a proxy stripped that prefix), so its links work under
// it. Without it the console is at the root.
func WithMount(ctx context.Context, path string) context.Context {
	return context.WithValue(ctx, mountKey, strings.TrimRight(path, "/"))
}

// Options configure a Handler. Every field is optional.
type Options struct {
	// GatewayURL is the gateway's public base URL, used in the snippets
	// shown with a new key (default: the console's own origin).
	GatewayURL string
	// SignOutURL is where Sign out sends a person not signed in with HTTP
	// Basic credentials (a single sign-on's own sign-out). Without it such
	// a person is not offered Sign out: the console cannot end their
	// sign-in.
	SignOutURL string
	// Denials says in words what a denial code means (e.g. "the API key
	// has been revoked"); the code itself is shown when it returns "".
	Denials func(code string) string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logf reports failures the person is only told about in general
	// terms, such as an unreachable store. It never receives a key.
	Logf func(format string, args ...any)
	// RevealFor is how long a new key waits to be shown once (default 5
	// minutes); it is deleted when shown or when this time is up.
	RevealFor time.Duration
	// HTTPS reports whether the browser reached the console over HTTPS
	// (default: the request came over TLS). Behind a proxy that ends TLS,
	// the server says whether to believe what the proxy reports; a reveal's
	// cookie is then Secure and the key's snippet says https.
	HTTPS func(*http.Request) bool
}

// Handler serves the console. It is safe for concurrent use.
type Handler struct {
	svc    *keys.Service
	opts   Options
	pages  *pages
	vault  *vault
	origin *http.CrossOriginProtection
	secret atomic.Pointer[[]byte] // the store's form secret, once read
}

// New returns the console for the keys svc manages.
func New(svc *keys.Service, opts Options) *Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.Denials == nil {
		opts.Denials = func(string) string { return "" }
	}
	if opts.RevealFor <= 0 {
		opts.RevealFor = 5 * time.Minute
	}
	if opts.HTTPS == nil {
		opts.HTTPS = func(r *http.Request) bool { return r.TLS != nil }
	}
	opts.GatewayURL = strings.TrimRight(opts.GatewayURL, "/")
	return &Handler{
		svc:    svc,
		opts:   opts,
		pages:  loadPages(),
		vault:  newVault(svc, opts.RevealFor, opts.Now),
		origin: http.NewCrossOriginProtection(),
	}
}

// processSecret keys the form tokens while the store's shared secret
// cannot be read. It lives as long as the process, so a form opened before
// a config reload still submits after it.
var processSecret = func() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}()

// call is one request: who makes it, the service limited to what they may
// see, and where the console is mounted.
type call struct {
	w     http.ResponseWriter
	r     *http.Request
	h     *Handler
	user  User
	keys  *keys.Service
	mount string
	now   time.Time
	// id is the key id in the path, when the route has one.
	id string
	// kept says the store could not take the form sent, which the key
	// page shows again as it was left (refused).
	kept bool
	// teamless: the person is signed in but in no team (noTeam).
	teamless bool
}

// routes are the console's pages and actions: method, path ("{id}" is one
// segment) and what serves it. Every POST changes something and is checked
// for its origin and form token before it runs.
var routes = []struct {
	method, path string
	serve        func(c *call) error
}{
	{http.MethodGet, "/", (*call).keysPage},
	{http.MethodGet, "/new", (*call).newPage},
	{http.MethodPost, "/new", (*call).create},
	{http.MethodGet, "/reveal/{id}", (*call).revealPage},
	{http.MethodGet, "/reveal/{id}/shown.css", (*call).revealShown},
	{http.MethodGet, "/keys/{id}", (*call).keyPage},
	{http.MethodPost, "/keys/{id}/settings", (*call).update},
	{http.MethodPost, "/keys/{id}/disable", (*call).disable},
	{http.MethodPost, "/keys/{id}/enable", (*call).enable},
	{http.MethodPost, "/keys/{id}/rotate", (*call).rotate},
	{http.MethodPost, "/keys/{id}/revoke", (*call).revoke},
	{http.MethodGet, "/review", (*call).reviewPage},
	{http.MethodPost, "/review/revoke", (*call).bulkRevoke},
	{http.MethodGet, "/leaked", (*call).leakedPage},
	{http.MethodPost, "/leaked", (*call).leaked},
	{http.MethodPost, "/signout", (*call).signOut},
}

// ServeHTTP answers one request of the person WithUser names.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header())
	user, ok := r.Context().Value(userKey).(User)
	if !ok || user.ID == "" {
		h.plainError(w, r, http.StatusUnauthorized, "Sign-in required",
			"The console needs to know who you are. Ask whoever runs it to put sign-in (basic_auth or forward_auth) in front of it.")
		return
	}
	// The stylesheet and the script before the team check: the "No team"
	// page links them too, and a signed-in person reads it styled.
	if strings.HasPrefix(r.URL.Path, "/static/") {
		serveStatic(w, r)
		return
	}
	mount, _ := r.Context().Value(mountKey).(string)
	c := &call{w: w, r: r, h: h, user: user, keys: h.svc, mount: mount, now: h.opts.Now().UTC()}
	if !user.Admin && user.Owner == "" {
		c.noTeam()
		return
	}
	if !user.Admin {
		c.keys = h.svc.ForOwner(user.Owner)
	}
	var allow []string
	for _, rt := range routes {
		id, ok := matchPath(rt.path, r.URL.Path)
		if !ok {
			continue
		}
		// No HEAD: a HEAD of a reveal page would spend it unseen.
		if rt.method != r.Method {
			allow = append(allow, rt.method)
			continue
		}
		c.id = id
		if rt.method == http.MethodPost {
			if err := c.checkForm(); err != nil {
				if !errors.Is(err, errShown) {
					c.fail(err)
				}
				return
			}
		}
		if err := rt.serve(c); err != nil {
			c.fail(err)
		}
		return
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		c.fail(&pageError{status: http.StatusMethodNotAllowed, title: "Not allowed",
			msg: "This page cannot be used that way. Go back and use the buttons on the page."})
		return
	}
	c.fail(&pageError{status: http.StatusNotFound, title: "Page not found", msg: "There is no console page at this address."})
}

// matchPath matches a request path against a route path, returning the
// {id} segment.
func matchPath(pattern, path string) (string, bool) {
	if pattern == "/" {
		return "", path == "/" || path == ""
	}
	want := strings.Split(strings.Trim(pattern, "/"), "/")
	got := strings.Split(strings.Trim(path, "/"), "/")
	if len(want) != len(got) {
		return "", false
	}
	id := ""
	for i, w := range want {
		switch {
		case w == "{id}" && got[i] != "":
			id = got[i]
		case w != got[i]:
			return "", false
		}
	}
	return id, true
}

// pageError is a failure shown to the person as a page with a status.
type pageError struct {
	status     int
	title, msg string
}

func (e *pageError) Error() string { return e.title + ": " + e.msg }

// fail answers err as a page in plain words.
func (c *call) fail(err error) {
	pe, ok := err.(*pageError)
	if !ok {
		pe = c.errorPage(err)
	}
	c.render(pe.status, "error", &errorView{view: view{Title: pe.title}, Message: pe.msg})
}

// errorPage turns the service's typed errors into what the person reads.
func (c *call) errorPage(err error) *pageError {
	var inv *keys.InvalidError
	var conf *keys.ConflictError
	switch {
	case errors.As(err, &inv):
		return &pageError{http.StatusUnprocessableEntity, "That did not work", inv.Error()}
	case errors.Is(err, store.ErrNotFound):
		return &pageError{http.StatusNotFound, "Key not found",
			"There is no key with this id that you can see. It may belong to another team, or the link may be mistyped."}
	case errors.As(err, &conf):
		return &pageError{http.StatusConflict, "That cannot be done to this key", conf.Error()}
	}
	c.h.opts.Logf("keygate console: %s %s by %s: %v", c.r.Method, c.r.URL.Path, c.user.ID, err)
	if errors.Is(err, store.ErrTakesNoWrites) {
		// It answered, so not "could not reach": said as caddy keys and the
		// admin API say it.
		c.w.Header().Set("Retry-After", "1")
		return &pageError{http.StatusServiceUnavailable, "The key store is unavailable",
			"The key store could not make this change: " + store.ErrTakesNoWrites.Error() + ". Nothing has changed. Try again in a moment."}
	}
	if store.Unavailable(err) {
		c.w.Header().Set("Retry-After", "1")
		return &pageError{http.StatusServiceUnavailable, "The key store is unavailable",
			"The console could not reach the key store. Nothing has changed unless the page says so. Try again in a moment."}
	}
	if store.Damaged(err) {
		c.w.Header().Set("Retry-After", "1")
		return &pageError{http.StatusServiceUnavailable, "The key store is damaged",
			"The key store's file is damaged, so keys cannot be read or changed here. Nothing has changed. " +
				"It has to be restored from a backup: tell whoever runs this gateway."}
	}
	return &pageError{http.StatusInternalServerError, "Something went wrong",
		"The console could not reach the key store or could not finish. Nothing you see has changed unless the page says so. Try again in a moment."}
}

// keptTyped ends the message of a form shown again after the store failed.
const keptTyped = " What you typed is kept below."

// storeFailed returns the page a failure of the store gets (errorPage's,
// which logs it), or nil for any other error. A form the store could not
// take (it takes no writes, is locked past its timeout, or stopped
// answering) is shown again as it was left, with this page's message, so
// an outage costs the person nothing they typed.
func (c *call) storeFailed(err error) *pageError {
	if !store.Unavailable(err) && !store.Damaged(err) {
		return nil
	}
	return c.errorPage(err)
}

// Unavailable answers a request while the console's store has not
// answered since the config loaded (it is tried again every second): a page
// that says so, 503 with Retry-After. The page's stylesheet and script need
// no store: they are served to a signed-in person (r's context, as for
// ServeHTTP), so the page is styled, under the mount its links need.
func Unavailable(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header())
	if u, ok := r.Context().Value(userKey).(User); ok && u.ID != "" && strings.HasPrefix(r.URL.Path, "/static/") {
		serveStatic(w, r)
		return
	}
	w.Header().Set("Retry-After", "1")
	mount, _ := r.Context().Value(mountKey).(string)
	sharedPages().renderTo(w, http.StatusServiceUnavailable, "error", &errorView{view: view{Title: "The key store is unavailable", Mount: mount},
		Message: "The console cannot reach the key store yet. Try again in a moment."})
}

// sharedPages are the pages for answers made before a console exists.
var sharedPages = sync.OnceValue(loadPages)

// plainError answers before a person is known, under the mount r's
// context names (the page's stylesheet is linked under it).
func (h *Handler) plainError(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	mount, _ := r.Context().Value(mountKey).(string)
	h.pages.renderTo(w, status, "error", &errorView{view: view{Title: title, Mount: mount}, Message: msg})
}

// noTeam answers a person signed in whom the console cannot place in a
// team: ForOwner("") would show the keys that have no owner, so it refuses
// rather than guess. Signing out is all it offers (a person signed in with
// the wrong Basic credentials would otherwise keep them until the browser
// closed).
func (c *call) noTeam() {
	c.keys, c.teamless = nil, true
	if _, ok := matchPath("/signout", c.r.URL.Path); ok && c.r.Method == http.MethodPost {
		if err := c.checkForm(); err != nil {
			c.fail(err)
			return
		}
		if err := c.signOut(); err != nil {
			c.fail(err)
		}
		return
	}
	c.render(http.StatusForbidden, "error", &errorView{view: view{Title: "No team"},
		Message: "You are signed in, but the console could not tell which team's keys are yours. Ask whoever runs it to check its owner setting."})
}

// url builds a link to a console path under the mount.
func (c *call) url(path string) string {
	return c.mount + path
}

// redirect sends the browser to a console path after a change (303, so a
// reload does not repeat the POST).
func (c *call) redirect(path string) error {
	http.Redirect(c.w, c.r, c.url(path), http.StatusSeeOther)
	return nil
}

// notify keeps notices to show on the next page the person opens, and
// returns the query that shows them.
func (c *call) notify(ns ...notice) string {
	if len(ns) == 0 {
		return ""
	}
	tok, err := c.h.vault.put(c.r.Context(), &flash{user: c.user.ID, notices: ns})
	if err != nil {
		c.h.opts.Logf("keygate console: keeping a message for %s: %v", c.user.ID, err)
		return "" // the change is made; only its message is lost
	}
	return "?n=" + tok
}

// notices takes the notices a redirect carried.
func (c *call) notices() []notice {
	tok := c.r.URL.Query().Get("n")
	if tok == "" {
		return nil
	}
	f, ok, err := c.h.vault.take(c.r.Context(), tok, c.user.ID, false)
	if err != nil {
		c.h.opts.Logf("keygate console: reading a message for %s: %v", c.user.ID, err)
	}
	if !ok {
		return nil
	}
	ns := f.notices
	for _, m := range f.messages { // sealed by a console from before notices had kinds
		ns = append(ns, said(m))
	}
	return ns
}

// notice is a message at the top of a page about what was just done: done
// as asked, or a warning of what the person may still have to do. Its
// parts are text, or key ids shown as links to their pages; the page
// escapes both.
type notice struct {
	Warn  bool         `json:"warn,omitempty"`
	Parts []noticePart `json:"parts"`
}

type noticePart struct {
	Text string `json:"text,omitempty"`
	Key  string `json:"key,omitempty"` // a key id, linked to its page
}

// said is a notice of plain text.
func said(text string) notice { return notice{Parts: []noticePart{{Text: text}}} }

// warning is a notice of what the person may still have to do.
func warning(parts ...noticePart) notice { return notice{Warn: true, Parts: parts} }

func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
