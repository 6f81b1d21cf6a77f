package keys

import (
	"context"
	"errors"
	"fmt"
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
	// using them get invalid_key until they are issued again.
	Gone []string `json:"gone"`
}

// StateOf reads what CarryOver needs of every key in st: its id, and
// what stops it (revocation, disable, expiry). A page of keys at a time, so
// a store of a million keys is held as ids and times, not whole records.
func StateOf(ctx context.Context, st store.Store) ([]*store.Record, error) {
	page := statePage
	var out []*store.Record
	for offset := 0; ; offset += page {
		recs, err := st.ListKeys(ctx, store.ListFilter{All: true, Limit: page, Offset: offset})
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			out = append(out, &store.Record{ID: r.ID, RevokedAt: r.RevokedAt, RevokeReason: r.RevokeReason,
				Disabled: r.Disabled, ExpiresAt: r.ExpiresAt})
		}
		if len(recs) < page {
			return out, nil
		}
	}
}

// statePage is how many keys StateOf reads at a time.
var statePage = 10_000

// CarryOver is the second half of putting a backup back: replaced holds the
// records of the store the backup replaced, read before it was replaced.
// Whatever stopped a key since the backup was taken (a revocation, a
// rotation's end of grace, a disable, an earlier expiry) would otherwise be
// undone, and a leaked key revoked yesterday would work again. CarryOver
// applies each to the restored store, with an audit event saying where it
// came from, and never widens a key: a key enabled again or given a later
// expiry since the backup keeps the backup's narrower state.
func (s *Service) CarryOver(ctx context.Context, replaced []*store.Record, actor string) (*Carried, error) {
	out := &Carried{Revoked: []string{}, Disabled: []string{}, Expiring: []string{}, Gone: []string{}}
	changed := false
	defer func() {
		if changed {
			s.written(ctx)
		}
	}()
	for _, old := range replaced {
		// Most keys have nothing to carry: one read each, no write.
		cur, err := s.st.Key(ctx, old.ID)
		if errors.Is(err, store.ErrNotFound) {
			out.Gone = append(out.Gone, old.ID)
			continue
		}
		if err != nil {
			return out, fmt.Errorf("key %s: %w", old.ID, err)
		}
		if !narrower(old, cur) {
			continue
		}
		var revoked, disabled, expiring bool
		ev := &store.Event{At: s.now(), KeyID: old.ID, Actor: actor}
		_, err = s.st.UpdateKey(ctx, old.ID, ev, func(rec *store.Record) error {
			var kept []string
			revoked, disabled, expiring = stops(old, rec)
			if revoked {
				rec.RevokedAt, rec.RevokeReason = old.RevokedAt, old.RevokeReason
				kept = append(kept, fmt.Sprintf("revoked on %s (%s)", old.RevokedAt.UTC().Format(time.RFC3339), old.RevokeReason))
			}
			if disabled {
				rec.Disabled = true
				kept = append(kept, "disabled")
			}
			if expiring {
				end := *old.ExpiresAt
				rec.ExpiresAt = &end
				kept = append(kept, "expires "+end.UTC().Format(time.RFC3339))
			}
			if len(kept) == 0 {
				return nil // unchanged: no event
			}
			ev.Action, ev.Reason, ev.Detail = "updated", "kept from the store a backup replaced", strings.Join(kept, "; ")
			if revoked {
				ev.Action = "revoked"
			}
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("key %s: %w", old.ID, err)
		}
		for _, c := range []struct {
			did  bool
			list *[]string
		}{{revoked, &out.Revoked}, {disabled, &out.Disabled}, {expiring, &out.Expiring}} {
			if c.did {
				*c.list = append(*c.list, old.ID)
				changed = true
			}
		}
	}
	return out, nil
}

// stops reports which of what stopped old (a revocation, a disable, an
// earlier end) cur lacks.
func stops(old, cur *store.Record) (revoked, disabled, expiring bool) {
	return old.Revoked() && !cur.Revoked(),
		old.Disabled && !cur.Disabled,
		old.ExpiresAt != nil && (cur.ExpiresAt == nil || old.ExpiresAt.Before(*cur.ExpiresAt))
}

// narrower reports whether old stops a key in a way cur does not.
func narrower(old, cur *store.Record) bool {
	r, d, e := stops(old, cur)
	return r || d || e
}
