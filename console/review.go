package console

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// reviewView is the review page: the audit report, one section per kind of
// key worth a look.
type reviewView struct {
	view
	Sections []reviewSection
	Empty    bool
	// NoKeys is an empty review of someone who has no keys at all, in any
	// state: there is nothing to review yet, rather than nothing wrong.
	NoKeys bool
	Err    string
	// ErrField is the id of the field Err is about, if one is.
	ErrField string
	// ErrTicks is set when Err is about the boxes (none ticked): each is
	// described by it, and ErrField is the first.
	ErrTicks bool
	// Ticked and Reason are a refused bulk revoke's choices, shown again.
	Ticked map[string]bool
	Reason string
}

// reviewSection is one list of the audit report.
type reviewSection struct {
	ID, Title, Advice string
	Entries           []keys.AuditEntry
	// Revocable sections offer admins a checkbox per key; stopped keys
	// have nothing left to revoke.
	Revocable bool
	// Total is how many keys the section holds; Entries shows at most
	// reviewShown of them unless the person asked for all of this section.
	Total int
}

// reviewShown is how many keys a review section lists before it offers to
// show all: a store where every key lacks an expiry would otherwise put
// thousands of rows on one page.
const reviewShown = 50

func (c *call) reviewPage() error {
	return c.showReview(http.StatusOK, "")
}

func (c *call) showReview(status int, errMsg string) error {
	// The report's lists are named as the console's sections, with _ for -.
	all := c.r.URL.Query().Get("all")
	rep, err := c.keys.AuditShown(c.r.Context(), 0, 0, reviewShown, strings.ReplaceAll(all, "-", "_"))
	if err != nil {
		return err
	}
	v := &reviewView{view: view{Title: "Review", Nav: "review"}, Err: errMsg, Sections: []reviewSection{
		{"still-presented", "Stopped keys still being used", "Someone still sends requests with these revoked or expired keys: an integration that was not updated, or a leaked key being tried.", rep.StillPresented, false, 0},
		{"full-access", "Keys with full access", "These keys may use every route. Give each integration only the scopes it needs.", rep.FullAccess, true, 0},
		{"no-expiry", "Keys that never expire", "A key that never expires keeps working long after it is forgotten. Set an expiry.", rep.NoExpiry, true, 0},
		{"unused", "Keys nobody uses", "Unused for 30 days or more. Revoke what is no longer needed.", rep.Unused, true, 0},
		{"expiring", "Keys expiring soon", "These stop working within 14 days. Rotate them or extend their expiry in time.", rep.Expiring, true, 0},
	}}
	v.Empty = true
	for i := range v.Sections {
		s := &v.Sections[i]
		s.Total = rep.Totals[strings.ReplaceAll(s.ID, "-", "_")]
		v.Empty = v.Empty && s.Total == 0
	}
	if v.Empty {
		if v.NoKeys, err = c.noKeys(); err != nil {
			return err
		}
	}
	if errMsg != "" {
		v.Title = "Error: " + v.Title // a refused form says so in the page's title, read first
	}
	if c.r.Method == http.MethodPost {
		v.Reason = shownAgain(c.r.PostForm.Get("reason"))
		v.Ticked = map[string]bool{}
		for _, id := range c.r.PostForm["id"] {
			v.Ticked[id] = true
		}
		switch {
		case len(v.Ticked) == 0 && errMsg != "":
			v.ErrTicks = true
			for _, s := range v.Sections {
				if s.Revocable && len(s.Entries) > 0 && v.ErrField == "" {
					v.ErrField = s.ID + "-" + s.Entries[0].ID // as the review page names its boxes
				}
			}
		case !strings.EqualFold(strings.TrimSpace(c.r.PostForm.Get("confirm")), "revoke"):
			v.ErrField = "bulk-confirm"
		}
	}
	c.render(status, "review", v)
	return nil
}

// bulkRevoke revokes the keys an admin ticked on the review page.
func (c *call) bulkRevoke() error {
	if !c.user.Admin {
		return &pageError{http.StatusForbidden, "Admins only", "Only console admins can revoke several keys at once. Revoke a key from its own page."}
	}
	var ids []string
	for _, id := range c.r.PostForm["id"] {
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return c.showReview(http.StatusUnprocessableEntity, "Tick the keys to revoke first.")
	}
	if !strings.EqualFold(strings.TrimSpace(c.r.PostForm.Get("confirm")), "revoke") {
		return c.showReview(http.StatusUnprocessableEntity, "To revoke the ticked keys, type the word revoke in the box.")
	}
	reason := strings.TrimSpace(c.r.PostForm.Get("reason"))
	refused := func(err error, done int) error {
		msg := err.Error()
		if fe := asFormErr(err); fe != nil {
			msg = fe.Message
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		said := "No key was revoked: "
		if done > 0 {
			said = plural(done, "key") + " revoked, then the next was not: "
		}
		return c.showReview(http.StatusUnprocessableEntity, said+msg)
	}
	// Every key is looked up before any is revoked: one that does not
	// exist (a stale or crafted form) refuses the whole action, rather than
	// leave it half done.
	for _, id := range ids {
		if _, err := c.keys.RevokeTargets(c.r.Context(), keys.Revocation{ID: id, Reason: reason}); err != nil {
			return refused(err, 0)
		}
	}
	for i, id := range ids {
		if _, err := c.keys.Revoke(c.r.Context(), keys.Revocation{ID: id, Reason: reason}, c.user.actor()); err != nil {
			return refused(err, i) // changed since the look-up above
		}
	}
	it := "them"
	if len(ids) == 1 {
		it = "it"
	}
	return c.redirect("/review" + c.notify(said(plural(len(ids), "key")+" revoked. Every request with "+it+" is refused from now on.")))
}

// noKeys reports whether the person sees no key at all: none current, none
// revoked, none expired.
func (c *call) noKeys() (bool, error) {
	for _, status := range []string{"", keys.StatusRevoked, keys.StatusExpired} {
		res, err := c.keys.Find(c.r.Context(), keys.Query{Status: status, PerPage: 1})
		if err != nil || res.Total > 0 {
			return false, err
		}
	}
	return true, nil
}
