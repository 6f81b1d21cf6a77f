package console

import (
	"errors"
	"net/http"
	"strings"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// leakedView is the leaked-key page. It never holds the pasted key: a
// refused form comes back without it (nor a reason that holds a key), with
// a message that does not quote it.
type leakedView struct {
	view
	Reason string
	Err    string
}

func (c *call) leakedPage() error {
	c.render(http.StatusOK, "leaked", &leakedView{view: view{Title: "Revoke a leaked key", Nav: "leaked"}})
	return nil
}

// leaked revokes a key by its value. Whoever holds a key may stop it, so a
// person may revoke another team's leaked key, but sees only its id.
func (c *call) leaked() error {
	ctx := c.r.Context()
	reason := strings.TrimSpace(c.r.PostForm.Get("reason"))
	rv := keys.Revocation{Key: strings.TrimSpace(c.r.PostForm.Get("key")), Reason: reason}
	again := func(status int, msg string) error {
		// A refused form says so in the page's title, read first.
		c.render(status, "leaked", &leakedView{view: view{Title: "Error: Revoke a leaked key", Nav: "leaked"}, Reason: shownAgain(reason), Err: msg})
		return nil
	}
	if rv.Key == "" {
		return again(http.StatusUnprocessableEntity, "Paste the key that leaked.")
	}
	targets, err := c.keys.RevokeTargets(ctx, rv)
	if err == nil && targets[0].Revoked() {
		return c.redirect("/leaked" + c.notify(said("That key ("+targets[0].ID+") was already revoked; it is refused everywhere.")))
	}
	var recs []*store.Record
	if err == nil {
		recs, err = c.keys.Revoke(ctx, rv, c.user.actor())
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return again(http.StatusNotFound, "No key with that value is known here. Check that you pasted all of it; a key of another keygate store cannot be revoked here.")
	case errors.Is(err, keys.ErrNoKeyFound):
		// The service's words are the CLI's; a person who pasted a key
		// reads first what happened, then what to check.
		return again(http.StatusUnprocessableEntity, "No key was found in what you pasted. Check that you copied all of it: "+
			"after its prefix (such as kg_live_) a key has 49 letters and digits, the last of them a checksum, "+
			"so a key cut short or with one character changed is not recognised.")
	case errors.Is(err, keys.ErrSeveralKeys):
		return again(http.StatusUnprocessableEntity, "What you pasted holds more than one key. Paste one key at a time.")
	case err != nil:
		if fe := asFormErr(err); fe != nil {
			return again(http.StatusUnprocessableEntity, fe.Message)
		}
		return err
	}
	rec := recs[0]
	if rec.Name == "" {
		return c.redirect("/leaked" + c.notify(said("Revoked key "+rec.ID+". It belongs to another team; every request with it is refused from now on.")))
	}
	done := said("Revoked “" + rec.Name + "”. Every request with it is refused from now on. " +
		"Create a new key for the integration that used it; this page shows the settings it had.")
	if rec.RotatedTo != "" {
		// The new key is not touched, but it may have stopped already:
		// "not affected" would read as working.
		after := ", is not affected."
		if next, err := c.keys.Show(ctx, rec.RotatedTo); err == nil {
			if st := keys.Status(next, c.now); stopped(st) {
				after = ", is not affected, and is " + st + " already: it no longer works either."
			}
		}
		done = notice{Parts: []noticePart{{Text: "Revoked “" + rec.Name + "”. Every request with it is refused from now on. " +
			"It had been rotated: its new key, "}, {Key: rec.RotatedTo}, {Text: after}}}
	}
	return c.redirect("/keys/" + rec.ID + c.notify(done))
}
