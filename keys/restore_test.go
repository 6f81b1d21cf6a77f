package keys

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// TestCarryOverNeverWidensAKey: from the store a backup replaced, CarryOver
// takes what stopped keys (a revocation, a disable, an earlier end) and
// nothing that opened them again (an enable, a later expiry): the restored
// store keeps the narrower of the two states of each key.
func TestCarryOverNeverWidensAKey(t *testing.T) {
	f := newFixture(t)
	set := func(id string, fn func(*store.Record)) {
		t.Helper()
		if _, err := f.st.UpdateKey(ctx, id, nil, func(r *store.Record) error { fn(r); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	soon, later := f.t.Add(time.Hour), f.t.Add(10*time.Hour)
	// The restored store: what the backup held.
	reenabled := f.issue(t, spec("reenabled", "mail.send")).Record.ID
	set(reenabled, func(r *store.Record) { r.Disabled = true })
	extended := f.issue(t, spec("extended", "mail.send")).Record.ID
	set(extended, func(r *store.Record) { r.ExpiresAt = &soon })
	leaked := f.issue(t, spec("leaked", "mail.send")).Record.ID
	disabled := f.issue(t, spec("disabled", "mail.send")).Record.ID
	ended := f.issue(t, spec("ended", "mail.send")).Record.ID

	// The replaced store: the same keys as they were at the restore, and
	// one issued after the backup.
	var replaced []*store.Record
	for _, id := range []string{reenabled, extended, leaked, disabled, ended} {
		r, err := f.st.Key(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		replaced = append(replaced, r.Clone())
	}
	revokedAt := f.t.Add(-time.Minute)
	replaced[0].Disabled = false
	replaced[1].ExpiresAt = &later
	replaced[2].RevokedAt, replaced[2].RevokeReason = &revokedAt, "posted in a ticket"
	replaced[3].Disabled = true
	replaced[4].ExpiresAt = &soon
	replaced = append(replaced, &store.Record{ID: "key_issuedafterthebackup"})

	writes := f.writes
	backup := Backup{File: "/var/backups/keys.db", Written: f.t.Add(-time.Hour)}
	got, err := f.CarryOver(ctx, stopsOf(replaced), recordsOf(replaced), backup, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	want := &Carried{Revoked: []string{leaked}, Disabled: []string{disabled}, Expiring: []string{ended}, Gone: []string{"key_issuedafterthebackup"},
		Reverted: slices.Sorted(slices.Values([]string{reenabled, extended}))}
	if !slices.Equal(got.Revoked, want.Revoked) || !slices.Equal(got.Disabled, want.Disabled) ||
		!slices.Equal(got.Expiring, want.Expiring) || !slices.Equal(got.Gone, want.Gone) || !slices.Equal(got.Reverted, want.Reverted) {
		t.Errorf("CarryOver = %+v, want %+v", got, want)
	}
	if f.writes == writes {
		t.Error("CarryOver changed keys without announcing a write (gateways would not know)")
	}
	check := func(id string, ok func(*store.Record) bool, what string) {
		t.Helper()
		r, err := f.st.Key(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !ok(r) {
			t.Errorf("key %s: %s; got %+v", id, what, r)
		}
	}
	check(reenabled, func(r *store.Record) bool { return r.Disabled }, "enabled after the backup, but the restored key must stay disabled")
	check(extended, func(r *store.Record) bool { return r.ExpiresAt != nil && r.ExpiresAt.Equal(soon) }, "the backup's earlier end must stay")
	check(leaked, func(r *store.Record) bool {
		return r.Revoked() && r.RevokedAt.Equal(revokedAt) && r.RevokeReason == "posted in a ticket"
	}, "revoked again, with its time and reason")
	check(disabled, func(r *store.Record) bool { return r.Disabled }, "disabled again")
	check(ended, func(r *store.Record) bool { return r.ExpiresAt != nil && r.ExpiresAt.Equal(soon) }, "given the earlier end")

	evs, err := f.Events(ctx, leaked, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if last := evs[len(evs)-1]; last.Action != "revoked" || last.Reason != "kept from the store a backup replaced" || !last.At.Equal(f.t) {
		t.Errorf("the leaked key's newest event: %+v, want its revocation kept from the replaced store, now", last)
	}
	// What it changed reads as every update's does: field, old → new;
	// what it put back as the backup had it too.
	for id, want := range map[string]string{
		disabled:  "disabled: no → yes",
		ended:     "expires: none → " + soon.UTC().Format(time.RFC3339),
		reenabled: "disabled: no → yes",
		extended:  "expires: " + later.UTC().Format(time.RFC3339) + " → " + soon.UTC().Format(time.RFC3339),
	} {
		if evs, _ := f.Events(ctx, id, 0, nil); evs[len(evs)-1].Detail != want {
			t.Errorf("key %s's newest event says %q, want %q", id, evs[len(evs)-1].Detail, want)
		}
	}
	// The key the backup does not hold is gone, and its history says so
	// (until session 34 only the restore's output did): by whom, why,
	// from which backup, and what clients now get.
	evs, err = f.Events(ctx, "key_issuedafterthebackup", 0, nil)
	if err != nil || len(evs) != 1 {
		t.Fatalf("the events of the key the restore left out: %+v, %v; want its removal", evs, err)
	}
	if ev := evs[0]; ev.Action != "removed" || ev.Actor != "test" || ev.Reason != "not in the backup put back" || !ev.At.Equal(f.t) ||
		ev.Detail != `backup "/var/backups/keys.db" (written 2026-11-23T11:00:00Z): clients now get invalid_key` {
		t.Errorf("the gone key's event: %+v", ev)
	}
	for _, id := range []string{reenabled, extended} {
		evs, _ := f.Events(ctx, id, 0, nil)
		for _, ev := range evs {
			if ev.Reason == "kept from the store a backup replaced" {
				t.Errorf("key %s, unchanged by CarryOver, got an event: %+v", id, ev)
			}
		}
	}
}

// TestARestoreSaysAKeyAnEarlierOneRemovedIsBack: a key a restore of an
// older backup removed (its history ends "removed") that a newer backup
// holds comes back with that backup, and its history says so, with what
// the backup has of it; otherwise it would end on a removal of a key that
// works. Keys that were not removed get no event.
func TestARestoreSaysAKeyAnEarlierOneRemovedIsBack(t *testing.T) {
	f := newFixture(t)
	kept := f.issue(t, spec("kept", "mail.send")).Record
	returning := f.issue(t, spec("returning", "mail.send")).Record
	older := Backup{File: "/var/backups/mon.db", Written: f.t.Add(-48 * time.Hour)}
	newer := Backup{File: "/var/backups/tue.db", Written: f.t.Add(-24 * time.Hour)}
	// The restore of the older backup, which did not hold returning: the
	// store it left (the one this restore replaces) holds only kept.
	if err := f.removed(ctx, []string{returning.ID, "key_neverback"}, older, "", "test"); err != nil {
		t.Fatal(err)
	}
	got, err := f.CarryOver(ctx, stopsOf([]*store.Record{kept}), recordsOf([]*store.Record{kept}), newer, "disk lost", "cli ann@gw1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Back, []string{returning.ID}) || len(got.Gone) != 0 {
		t.Errorf("CarryOver = %+v, want %s back and nothing gone", got, returning.ID)
	}
	evs, _ := f.Events(ctx, returning.ID, 0, nil)
	if ev := evs[len(evs)-1]; ev.Action != "restored" || ev.Actor != "cli ann@gw1" || ev.Reason != "in the backup put back: disk lost" ||
		ev.Detail != `backup "/var/backups/tue.db" (written 2026-11-22T12:00:00Z) holds it: name: returning; env: live; scopes: mail.send; expires: never` {
		t.Errorf("the newest event of the key back with the restore: %+v", ev)
	}
	for _, id := range []string{kept.ID, "key_neverback"} {
		if evs, _ := f.Events(ctx, id, 0, nil); evs[len(evs)-1].Action == "restored" {
			t.Errorf("key %s, not back with the restore, has a restored event", id)
		}
	}
	// A restore after it finds no key whose history ends on a removal.
	if got, err := f.CarryOver(ctx, stopsOf([]*store.Record{kept, returning}), nil, newer, "", "test"); err != nil || len(got.Back) != 0 {
		t.Errorf("a second restore: %+v, %v; want nothing back", got, err)
	}
}

// TestStateOfReadsEveryKey: every key, revoked and expired ones included,
// with what stops it, in one pass (the SQL stores) or page by page.
func TestStateOfReadsEveryKey(t *testing.T) {
	defer func(p int) { statePage = p }(statePage)
	statePage = 3
	f := newFixture(t)
	var ids []string
	for i := range 7 {
		ids = append(ids, f.issue(t, spec(fmt.Sprintf("k%d", i), "mail.send")).Record.ID)
	}
	revokedID := ids[6]
	if _, err := f.Revoke(ctx, Revocation{ID: revokedID, Reason: "leaked"}, "test"); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	for _, c := range []struct {
		how string
		st  store.Store
	}{
		{"in one pass", f.st},
		{"page by page", struct{ store.Store }{f.st}}, // hides store.KeyWalker
	} {
		got, err := StateOf(ctx, c.st)
		if err != nil {
			t.Fatal(err)
		}
		if gotIDs := slices.Sorted(maps.Keys(got.keys)); !slices.Equal(gotIDs, ids) {
			t.Errorf("%s: StateOf read %v, want every key %v", c.how, gotIDs, ids)
		}
		for id, st := range got.keys {
			if revoked := id == revokedID; revoked != (st.revoked != 0) || revoked && st.reason != "leaked" {
				t.Errorf("%s: key %s: %+v", c.how, id, st)
			}
		}
	}
}

// stopsOf is StateOf of a store holding recs.
func stopsOf(recs []*store.Record) *Stops {
	out := &Stops{keys: map[string]stop{}}
	for _, r := range recs {
		out.keys[r.ID] = stopOf(r)
	}
	return out
}

// recordsOf is a store holding recs, for their Key.
func recordsOf(recs []*store.Record) store.Store {
	out := records{m: map[string]*store.Record{}}
	for _, r := range recs {
		out.m[r.ID] = r
	}
	return out
}

type records struct {
	store.Store // nil: only Key is used
	m           map[string]*store.Record
}

func (r records) Key(_ context.Context, id string) (*store.Record, error) {
	if rec, ok := r.m[id]; ok {
		return rec.Clone(), nil
	}
	return nil, store.ErrNotFound
}
