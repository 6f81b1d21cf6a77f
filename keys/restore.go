package keys

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// Carried is what CarryOver kept, by key id, from the store a backup
// replaced.
type Carried struct {
	Revoked  []string `json:"revoked"`  // revoked after the backup: revoked again
	Disabled []string `json:"disabled"` // disabled after the backup: disabled again
	Expiring []string `json:"expiring"` // given an earlier end after the backup (a rotation's grace, an update)
	// Gone were issued after the backup, which does not hold them: clients
	// using them get invalid_key until they are issued again. Each has a
	// removed event saying so.
	Gone []string `json:"gone"`
	// Reverted were changed after the backup in a way the restore does not
	// keep (a scope, a limit, a name; enabled again, given a later end):
	// they are as the backup had them, each with an event saying so.
	Reverted []string `json:"reverted"`
	// Back were removed by an earlier restore (a backup older than this
	// one): this backup holds them, and each has a restored event saying
	// so.
	Back []string `json:"back"`
}

// Backup names the backup a restore puts back, in the events of the keys
// it leaves out or brings back.
type Backup struct {
	File string // as an absolute path
	// Written is the file's modification time: when `caddy keys backup`
	// wrote it, unless it was copied since without its times.
	Written time.Time
}

func (b Backup) String() string {
	return fmt.Sprintf("backup %q (written %s)", b.File, b.Written.UTC().Format(time.RFC3339))
}

// Stops is what stopped each key of a store (StateOf): what CarryOver
// needs of the store a backup replaces.
type Stops struct {
	keys map[string]stop
}

// stop is what stops one key: times in Unix nanoseconds, 0 for none. A
// million keys take ~100 MB so.
type stop struct {
	revoked, expires int64
	disabled         bool
	reason           string // the revocation's
	settings         string // Version and disabled: whether the key differs from the backup's
}

func unixNano(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	return t.UnixNano()
}

// StateOf reads what stops each key in st (revocation, disable, expiry), a
// page of keys at a time.
func StateOf(ctx context.Context, st store.Store) (*Stops, error) {
	out := &Stops{keys: map[string]stop{}}
	err := eachKey(ctx, st, func(r *store.Record) error {
		out.keys[r.ID] = stopOf(r)
		return nil
	})
	return out, err
}

func stopOf(r *store.Record) stop {
	return stop{revoked: unixNano(r.RevokedAt), expires: unixNano(r.ExpiresAt), disabled: r.Disabled, reason: r.RevokeReason,
		settings: settingsOf(r)}
}

func settingsOf(r *store.Record) string { return Version(r) + flag(r.Disabled, "d") }

// statePage is how many keys eachKey reads at a time from a store that
// cannot read them in one pass.
var statePage = 10_000

// eachKey calls fn with every key of st, revoked and expired ones
// included: in one pass where st can (store.KeyWalker), else a page at a
// time. fn must not use st.
func eachKey(ctx context.Context, st store.Store, fn func(*store.Record) error) error {
	if w, ok := st.(store.KeyWalker); ok {
		return w.EachKey(ctx, fn)
	}
	for offset := 0; ; offset += statePage {
		recs, err := st.ListKeys(ctx, store.ListFilter{All: true, Limit: statePage, Offset: offset})
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(recs) < statePage {
			return nil
		}
	}
}

// CarryOver is the second half of putting a backup back: replaced is what
// stopped the keys of the store the backup replaces, read before it is
// replaced. Whatever stopped a key since the backup was taken (a
// revocation, a rotation's end of grace, a disable, an earlier expiry)
// would otherwise be undone, and a leaked key revoked yesterday would work
// again. CarryOver applies each to the service's store (the backup's copy),
// with an audit event saying where it came from, and never widens a key: a
// key enabled again or given a later expiry since the backup keeps the
// backup's narrower state. reason (the operator's, may be empty) follows
// the events' own. It reads every key once and writes only those it
// changes. It consumes replaced.
//
// A key of the replaced store that the backup does not hold (issued after
// it) is gone: it gets a removed event naming backup, so that its history
// does not end on a key that still works; one an earlier restore so
// removed that the backup holds gets a restored event. A key whose settings the restore
// takes back to the backup's (changed after the backup in a way it does
// not keep) gets an event saying what changed, field: old → new, the old
// read from from, the replaced store, so that the audit log reads as the
// keys are (no event when from is nil).
func (s *Service) CarryOver(ctx context.Context, replaced *Stops, from store.Store, backup Backup, reason, actor string) (*Carried, error) {
	out := &Carried{Revoked: []string{}, Disabled: []string{}, Expiring: []string{}, Gone: []string{}, Reverted: []string{}, Back: []string{}}
	if err := checkReason(reason); err != nil {
		return out, err
	}
	why := "kept from the store a backup replaced"
	if reason != "" {
		why += ": " + reason
	}
	if replaced == nil {
		return out, nil // no store was replaced
	}
	changed := false
	defer func() {
		if changed {
			s.written(ctx)
		}
	}()
	// First which keys lack something the replaced store stopped them with
	// (usually few), then each of them changed on its own.
	// What is left of replaced once each key is looked at is gone.
	narrow := map[string]stop{}
	var differ []string
	// A key an earlier restore removed, which this backup holds: its
	// history ends on that removal, no longer so.
	removed, err := store.KeysLastEventIs(ctx, s.st, "removed")
	if err != nil {
		return out, err
	}
	wasRemoved := map[string]bool{}
	for _, id := range removed {
		wasRemoved[id] = true
	}
	var backKeys []*store.Record
	err = eachKey(ctx, s.st, func(cur *store.Record) error {
		old, ok := replaced.keys[cur.ID]
		if !ok {
			if wasRemoved[cur.ID] {
				backKeys = append(backKeys, cur.Clone())
			}
			return nil // not in the replaced store: nothing to keep
		}
		delete(replaced.keys, cur.ID)
		if r, d, e := old.stops(cur); r || d || e {
			narrow[cur.ID] = old
		}
		if old.settings != settingsOf(cur) {
			differ = append(differ, cur.ID)
		}
		return nil
	})
	if err != nil {
		return out, err
	}
	for _, id := range slices.Sorted(maps.Keys(narrow)) {
		old := narrow[id]
		var revoked, disabled, expiring bool
		ev := &store.Event{At: s.now(), KeyID: id, Actor: actor}
		_, err := s.st.UpdateKey(ctx, id, ev, func(rec *store.Record) error {
			var kept []string
			before := rec.Clone()
			revoked, disabled, expiring = old.stops(rec)
			if revoked {
				at := time.Unix(0, old.revoked).UTC()
				rec.RevokedAt, rec.RevokeReason = &at, old.reason
				kept = append(kept, fmt.Sprintf("revoked on %s (%s)", at.Format(time.RFC3339), old.reason))
			}
			if disabled {
				rec.Disabled = true
			}
			if expiring {
				end := time.Unix(0, old.expires).UTC()
				rec.ExpiresAt = &end
			}
			if d := diff(before, rec); d != "" { // field: old → new, as every update says it
				kept = append(kept, d)
			}
			if len(kept) == 0 {
				return nil // unchanged: no event
			}
			ev.Action, ev.Reason, ev.Detail = "updated", why, strings.Join(kept, "; ")
			if revoked {
				ev.Action = "revoked"
			}
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("key %s: %w", id, err)
		}
		for _, c := range []struct {
			did  bool
			list *[]string
		}{{revoked, &out.Revoked}, {disabled, &out.Disabled}, {expiring, &out.Expiring}} {
			if c.did {
				*c.list = append(*c.list, id)
				changed = true
			}
		}
	}
	out.Gone = append(out.Gone, slices.Sorted(maps.Keys(replaced.keys))...) // [] rather than null in JSON
	if err := s.removed(ctx, out.Gone, backup, reason, actor); err != nil {
		return out, err
	}
	if err := s.back(ctx, backKeys, backup, reason, actor); err != nil {
		return out, err
	}
	for _, r := range backKeys {
		out.Back = append(out.Back, r.ID)
	}
	if from == nil {
		return out, nil
	}
	putBack := "put back as the backup had it"
	if reason != "" {
		putBack += ": " + reason
	}
	slices.Sort(differ)
	for _, id := range differ {
		was, err := from.Key(ctx, id)
		if err != nil {
			return out, fmt.Errorf("key %s in the store replaced: %w", id, err)
		}
		ev := &store.Event{At: s.now(), KeyID: id, Actor: actor}
		if _, err := s.st.UpdateKey(ctx, id, ev, func(rec *store.Record) error {
			if ev.Detail = diff(was, rec); ev.Detail != "" { // "" when only what was carried over differed
				ev.Action, ev.Reason = "updated", putBack
			}
			return nil
		}); err != nil {
			return out, fmt.Errorf("key %s: %w", id, err)
		}
		if ev.Action != "" {
			out.Reverted = append(out.Reverted, id)
		}
	}
	return out, nil
}

// removed writes the event of each key in ids, gone with the restore of
// backup: the store holds no key for them to go with, so they are written
// on their own, a page at a time.
func (s *Service) removed(ctx context.Context, ids []string, backup Backup, reason, actor string) error {
	why := "not in the backup put back"
	if reason != "" {
		why += ": " + reason
	}
	detail := backup.String() + ": clients now get invalid_key"
	at := s.now()
	for page := range slices.Chunk(ids, statePage) {
		evs := make([]*store.Event, len(page))
		for i, id := range page {
			evs[i] = &store.Event{At: at, Action: "removed", KeyID: id, Actor: actor, Reason: why, Detail: detail}
		}
		if err := store.AppendEvents(ctx, s.st, evs); err != nil {
			return err
		}
	}
	return nil
}

// back writes the event of each key in recs, removed by an earlier
// restore and held again by backup: what the backup has of it, as an
// issue's event says it, so that its history does not end on a removal.
func (s *Service) back(ctx context.Context, recs []*store.Record, backup Backup, reason, actor string) error {
	why := "in the backup put back"
	if reason != "" {
		why += ": " + reason
	}
	slices.SortFunc(recs, func(a, b *store.Record) int { return strings.Compare(a.ID, b.ID) })
	at := s.now()
	evs := make([]*store.Event, len(recs))
	for i, r := range recs {
		detail := backup.String() + " holds it: " + describe(r)
		if r.Revoked() {
			detail += fmt.Sprintf("; revoked on %s (%s)", r.RevokedAt.UTC().Format(time.RFC3339), r.RevokeReason)
		}
		evs[i] = &store.Event{At: at, Action: "restored", KeyID: r.ID, Actor: actor, Reason: why, Detail: detail}
	}
	return store.AppendEvents(ctx, s.st, evs)
}

// stops reports which of what stopped the key (a revocation, a disable, an
// earlier end) cur lacks.
func (old stop) stops(cur *store.Record) (revoked, disabled, expiring bool) {
	return old.revoked != 0 && !cur.Revoked(),
		old.disabled && !cur.Disabled,
		old.expires != 0 && (cur.ExpiresAt == nil || old.expires < cur.ExpiresAt.UnixNano())
}
