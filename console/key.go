package console

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// keyView is the page of one key: what it is, how it is used, its
// settings, what can be done to it and what was done to it.
type keyView struct {
	view
	Key    *store.Record
	Status string

	Window  string
	Windows []window
	Usage   *keys.UsageReport
	Denials []codeCount
	TopIPs  []ipRow
	// Requests stacks allowed and denied per hour; Recipients is one
	// series.
	Requests, Recipients bars
	Allowed, Denied      int64
	From, To             timeView
	// Hours are the charts' data, for people who cannot see them: each
	// hour with a request or a recipient, newest first.
	Hours []hourRow

	// SuccessorStopped is the status of the key this one was rotated to
	// when that key no longer works (revoked, disabled, expired): this one
	// still works until its grace ends.
	SuccessorStopped string

	Events []store.Event
	Form   settingsForm
	// Presets are the expiry choices of the settings form.
	Presets []option
	Graces  []option
	// Grace is the grace period chosen in the rotate form.
	Grace string
	// Kept says the store could not take the action form Errs names: it
	// is shown as it was left (StopNow, Confirm and Reason as sent), and
	// nothing in it is marked wrong.
	Kept    bool
	StopNow bool
	Confirm string
	// Errs holds what a refused action got wrong, by form: "rotate",
	// "revoke", "state", "settings".
	Errs map[string]string
	// TopErr is a refusal whose form the page no longer shows (an action
	// sent from a tab opened before the key was revoked or rotated).
	TopErr string
	// Reason is the "why" a refused action was sent with, shown again in
	// its form.
	Reason string
}

// hides reports whether the page leaves out the form named: a revoked key
// has no settings or actions, a rotated one no rotate form.
func (v *keyView) hides(form string) bool {
	return v.Key.RevokedAt != nil || form == "rotate" && v.Key.RotatedTo != ""
}

// window is one usage period the page can show.
type window struct {
	Name, Label string
	Hours       int
	Current     bool
	URL         string
}

var windows = []window{{Name: "24h", Label: "24 hours", Hours: 24}, {Name: "7d", Label: "7 days", Hours: 7 * 24}, {Name: "30d", Label: "30 days", Hours: 30 * 24}}

// ipRow is a client address in the usage, with whether it is new.
type ipRow struct {
	store.IPUsage
	New bool
}

// ipRows marks the addresses first seen in the last 24 hours by a key that
// was used from other addresses before, as the service's signals do: the
// first address of a new key is not news.
func ipRows(ips []store.IPUsage, t time.Time) []ipRow {
	out := make([]ipRow, 0, len(ips))
	var oldest time.Time
	for _, ip := range ips {
		if oldest.IsZero() || ip.First.Before(oldest) {
			oldest = ip.First
		}
	}
	for _, ip := range ips {
		out = append(out, ipRow{IPUsage: ip, New: t.Sub(ip.First) < 24*time.Hour && ip.First.After(oldest)})
	}
	return out
}

var graceOptions = []option{
	{"0", "Stop it now"},
	{"1h", "1 hour"},
	{"24h", "24 hours"},
	{"7d", "7 days"},
	{"30d", "30 days"},
}

func (c *call) keyPage() error {
	err := c.showKey(http.StatusOK, nil, nil)
	if errors.Is(err, store.ErrNotFound) {
		return c.goneKey(err)
	}
	return err
}

// goneView is the page of a key the store no longer holds: its history.
type goneView struct {
	view
	ID     string
	Events []store.Event
}

// goneKey shows the history of a key the store no longer holds (one a
// restore left out, whose last event says so) to a person who sees every
// key, whom the service still answers its events; anyone else gets
// notFound.
func (c *call) goneKey(notFound error) error {
	evs, err := c.keys.Events(c.r.Context(), c.id, 100, nil)
	if err != nil || len(evs) == 0 {
		return notFound
	}
	slices.Reverse(evs)
	c.render(http.StatusNotFound, "gone", &goneView{view: view{Title: "Key no longer in the store", Nav: "keys"}, ID: c.id, Events: evs})
	return nil
}

// showKey renders the key page; form, when set, is a refused settings form
// to show again, and errs the messages of other refused actions.
func (c *call) showKey(status int, form *settingsForm, errs map[string]string) error {
	ctx := c.r.Context()
	rec, err := c.keys.Show(ctx, c.id)
	if err != nil {
		return err
	}
	v := &keyView{view: view{Title: rec.Name, Nav: "keys", Now: c.now}, Key: rec, Status: keys.Status(rec, c.now),
		Presets: expiryPresets, Graces: graceOptions, Grace: cmp.Or(c.r.PostForm.Get("grace"), "24h"), Errs: errs,
		Reason: shownAgain(c.r.PostForm.Get("reason")), Kept: c.kept}
	if c.kept {
		v.StopNow, v.Confirm = c.r.PostForm.Get("stop_now") == "1", shownAgain(c.r.PostForm.Get("confirm"))
	}
	if rec.RotatedTo != "" {
		if next, err := c.keys.Show(ctx, rec.RotatedTo); err == nil {
			if st := keys.Status(next, c.now); stopped(st) {
				v.SuccessorStopped = st
			}
		}
	}
	v.Window = c.r.URL.Query().Get("window")
	hours := 0
	for _, w := range windows {
		w.URL = c.url("/keys/" + rec.ID + "?window=" + w.Name + "#usage")
		if w.Name == v.Window || (v.Window == "" && w.Name == "7d") {
			w.Current, v.Window, hours = true, w.Name, w.Hours
		}
		v.Windows = append(v.Windows, w)
	}
	if hours == 0 {
		return &pageError{http.StatusBadRequest, "Unknown period", "Usage can be shown for 24 hours, 7 days or 30 days."}
	}
	if v.Usage, err = c.keys.Usage(ctx, rec.ID, time.Duration(hours)*time.Hour); err != nil {
		return err
	}
	allowed, denied, recips := hourly(v.Usage.Hours, c.now, hours)
	barW, gap := 4, 1
	if hours > 24*7 {
		barW, gap = 1, 0
	}
	v.Requests = barChart([][]int64{allowed, denied}, 120, barW, gap)
	v.Recipients = barChart([][]int64{recips}, 60, barW, gap)
	v.Allowed, v.Denied = sum(allowed), sum(denied)
	v.Requests.Label = "Requests per hour over the last " + labelOf(v.Window) + ": " + count(v.Allowed) + " allowed, " + count(v.Denied) + " refused; the busiest hour had " + count(v.Requests.Max)
	v.Recipients.Label = "Recipients per hour over the last " + labelOf(v.Window) + ": " + count(sum(recips)) + " in all"
	first := c.now.Truncate(time.Hour).Add(-time.Duration(hours-1) * time.Hour)
	v.From, v.To = v.When(first), v.When(c.now)
	for i := hours - 1; i >= 0; i-- {
		if allowed[i] != 0 || denied[i] != 0 || recips[i] != 0 {
			at := first.Add(time.Duration(i) * time.Hour).UTC()
			v.Hours = append(v.Hours, hourRow{ISO: at.Format(time.RFC3339), Label: at.Format("2 Jan 2006 15:04") + "–" + at.Add(time.Hour).Format("15:04 UTC"),
				Allowed: allowed[i], Denied: denied[i], Recipients: recips[i]})
		}
	}
	v.Denials = c.denials(v.Usage.Denied)
	v.TopIPs = ipRows(v.Usage.TopIPs, c.now)
	evs, err := c.keys.Events(ctx, rec.ID, 100, nil)
	if err != nil {
		return err
	}
	slices.Reverse(evs)
	v.Events = evs
	if form != nil {
		v.Form = *form
	} else {
		lines, err := c.keys.RouteScopes(ctx)
		if err != nil {
			return err
		}
		v.Form = formFor(rec, lines, &v.view)
		if msg := errs["settings"]; msg != "" {
			v.Form.Errs = formErrs{{Message: msg}}
		}
	}
	v.Form.OwnerFixed = !c.user.Admin
	c.offerOwners(&v.Form)
	for form, msg := range errs {
		if v.hides(form) {
			v.TopErr = msg
		}
	}
	if len(v.Form.Errs) > 0 && v.hides("settings") {
		v.TopErr = v.Form.Errs.Error()
	}
	if v.TopErr != "" || len(v.Form.Errs) > 0 || len(errs) > 0 {
		v.Title = "Error: " + v.Title // a refused form says so in the page's title, read first
	}
	c.render(status, "key", v)
	return nil
}

// hourRow is one hour of the charts' data.
type hourRow struct {
	ISO, Label                  string
	Allowed, Denied, Recipients int64
}

func labelOf(name string) string {
	for _, w := range windows {
		if w.Name == name {
			return w.Label
		}
	}
	return name
}

// refused shows the key page again with a message for the form that
// caused err, or returns err when it is neither about input nor a failure
// of the store. A form the store could not take is shown as it was left,
// as settingsAgain shows the settings form.
func (c *call) refused(form string, err error) error {
	if fe := asFormErr(err); fe != nil {
		return c.showKey(http.StatusUnprocessableEntity, nil, map[string]string{form: fe.Message})
	}
	failed := c.storeFailed(err)
	if failed == nil {
		return err
	}
	c.kept = true
	if err := c.showKey(failed.status, nil, map[string]string{form: failed.msg + keptTyped}); err != nil {
		return failed // the store cannot show the page either: say why the change failed
	}
	return nil
}

func (c *call) update() error {
	ctx := c.r.Context()
	lines, err := c.keys.RouteScopes(ctx)
	if err != nil {
		return err
	}
	form := readForm(c.r.PostForm, lines, true)
	if form.Was, err = c.keys.Show(ctx, c.id); err != nil {
		return err
	}
	spec, err := form.spec(c.user.Admin)
	var res *keys.Result
	if err == nil {
		res, err = c.keys.Update(ctx, c.id, spec, c.user.actor())
	}
	if errors.Is(err, keys.ErrChanged) {
		// The person's form is not shown again: saved as it is, it would
		// undo the other change. They make theirs again on what is now.
		msg := "Not saved: someone changed this key's settings since you opened this page (see its history below). " +
			"The form now shows the current settings: make your change again."
		if form.Version == "" {
			msg = "Not saved: this page was opened before the console was updated, so it cannot tell whether the key " +
				"changed since. The form now shows the current settings: make your change again."
		}
		return c.showKey(http.StatusConflict, nil, map[string]string{"settings": msg})
	}
	if err != nil {
		errs, status := asFormErrs(err), http.StatusUnprocessableEntity
		var failed *pageError
		if errs == nil {
			if failed = c.storeFailed(err); failed == nil {
				return err
			}
			errs, status = formErrs{{Message: failed.msg + keptTyped}}, failed.status
		}
		form.Errs = errs
		if err := c.settingsAgain(status, form, lines); err != nil {
			if failed != nil {
				return failed // the store cannot show the page either: say why the change failed
			}
			return err
		}
		return nil
	}
	var ns []notice
	if !res.Unchanged { // otherwise the warnings say nothing changed
		ns = append(ns, said("Settings saved. Gateways apply them to the next request."))
	}
	for _, w := range res.Warnings {
		ns = append(ns, warning(noticePart{Text: w}))
	}
	return c.redirect("/keys/" + c.id + c.notify(ns...))
}

// settingsAgain shows the key's page with a settings form that was not
// taken as it was sent, with what its Errs say.
func (c *call) settingsAgain(status int, form settingsForm, lines []store.RouteScope) error {
	form.OfferForce = form.E("extra-scopes").Message != "" && len(lines) > 0
	rec, err := c.keys.Show(c.r.Context(), c.id)
	if err != nil {
		return err
	}
	form.CurrentExpiry = (&view{Now: c.now}).When(rec.ExpiresAt)
	form.shownAgain()
	return c.showKey(status, &form, nil)
}

func (c *call) disable() error { return c.setDisabled(true) }
func (c *call) enable() error  { return c.setDisabled(false) }

func (c *call) setDisabled(off bool) error {
	spec := keys.Spec{Disabled: &off, Reason: strings.TrimSpace(c.r.PostForm.Get("reason"))}
	res, err := c.keys.Update(c.r.Context(), c.id, spec, c.user.actor())
	if err != nil {
		return c.refused("state", err)
	}
	msg := "Key enabled. Requests with it are accepted again."
	switch {
	case res.Unchanged && off: // a page opened before someone disabled it (another tab, another person)
		msg = "Nothing changed: the key was already disabled (see its history below)."
	case res.Unchanged:
		msg = "Nothing changed: the key was already enabled (see its history below)."
	case off:
		msg = "Key disabled. Every request with it is refused until you enable it again."
	}
	return c.redirect("/keys/" + c.id + c.notify(said(msg)))
}

func (c *call) rotate() error {
	ctx := c.r.Context()
	grace, err := keys.ParseGrace(c.r.PostForm.Get("grace"))
	if err != nil {
		return c.refused("rotate", err)
	}
	switch stopNow := c.r.PostForm.Get("stop_now") == "1"; {
	case grace == 0 && !stopNow:
		return c.showKey(http.StatusUnprocessableEntity, nil, map[string]string{
			"rotate": "“Stop it now” ends the old key at once: every integration still using it fails. " +
				"Tick “Yes, stop the old key now” to confirm, or choose a grace period."})
	case grace != 0 && stopNow:
		return c.showKey(http.StatusUnprocessableEntity, nil, map[string]string{
			"rotate": "You ticked “Yes, stop the old key now” but chose a grace period: choose “Stop it now” to stop it now, " +
				"or untick the box to keep the grace period."})
	}
	res, err := c.keys.Rotate(ctx, c.id, grace, strings.TrimSpace(c.r.PostForm.Get("reason")), c.user.actor())
	if err != nil {
		return c.refused("rotate", err)
	}
	lines, err := c.keys.RouteScopes(ctx)
	if err != nil {
		lines = nil // the snippet falls back to the gateway's root
	}
	return c.reveal(res, c.id, lines)
}

func (c *call) revoke() error {
	ctx := c.r.Context()
	rec, err := c.keys.Show(ctx, c.id)
	if err != nil {
		return err
	}
	// Compared as the page shows them: a browser shows runs of spaces as
	// one, so a name from before names were kept that way is typed so.
	if spaced := func(s string) string { return strings.Join(strings.Fields(s), " ") }; spaced(c.r.PostForm.Get("confirm")) != spaced(rec.Name) {
		return c.showKey(http.StatusUnprocessableEntity, nil, map[string]string{
			"revoke": "To revoke, type the key's name exactly as shown: " + rec.Name})
	}
	if rec.RevokedAt != nil {
		// A page opened before someone revoked it (another tab, another
		// person): their revocation stands, with its time and reason.
		return c.redirect("/keys/" + c.id + c.notify(said("Nothing changed: the key was already revoked, "+
			rec.RevokedAt.UTC().Format("2 Jan 2006 15:04 MST")+" (see its history below).")))
	}
	rv := keys.Revocation{ID: rec.ID, Reason: strings.TrimSpace(c.r.PostForm.Get("reason"))}
	if _, err := c.keys.Revoke(ctx, rv, c.user.actor()); err != nil {
		return c.refused("revoke", err)
	}
	ns := []notice{said("Key revoked. Every request with it is refused from now on; this cannot be undone.")}
	if rec.RotatedFrom != "" {
		if old, err := c.keys.Show(ctx, rec.RotatedFrom); err == nil && old.ExpiresAt != nil && !stopped(keys.Status(old, c.now)) {
			ns = append(ns, warning(noticePart{Text: "The key it replaced, "}, noticePart{Key: old.ID},
				noticePart{Text: ", still works until its grace period ends (" + old.ExpiresAt.UTC().Format("2 Jan 2006 15:04 MST") +
					"): revoke it too if this one leaked."}))
		}
	}
	return c.redirect("/keys/" + c.id + c.notify(ns...))
}

// stopped reports whether a key of this status (keys.Status) no longer works.
func stopped(status string) bool {
	return status == "revoked" || status == "disabled" || status == "expired"
}
