package keys

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// Result is a key after a change: its record, the key itself when it was
// just issued or rotated (the only time it is ever shown), and what the
// person making the change should be told.
type Result struct {
	*store.Record
	Key      string   `json:"key,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// Unchanged is set when an update found the key already as asked
	// (its warnings say so in words).
	Unchanged bool `json:"-"`
	// Replaced is the key a rotation replaced, as the rotation left it:
	// its expiry is when it stops (the grace period's end, or its own
	// expiry if sooner).
	Replaced *store.Record `json:"-"`
	// OldKeyEnds is when the replaced key stops.
	OldKeyEnds *time.Time `json:"old_key_ends,omitempty"`
	// Replayed is set on the answer of a request made before under the
	// same idempotency key: nothing was made this time. Replaced is then
	// not known.
	Replayed bool `json:"-"`
}

// Issue creates a key from spec. The Result holds the key, which is never
// seen again.
func (s *Service) Issue(ctx context.Context, spec Spec, actor string) (*Result, error) {
	return s.issue(ctx, spec, actor, nil)
}

// IssueOnce is Issue made safe to repeat: under an idempotency key it makes
// at most one key, and a repeat of the same request gets the first Result
// again (Replayed), the key included (see Idempotency).
func (s *Service) IssueOnce(ctx context.Context, spec Spec, actor string, o *Idempotency) (*Result, error) {
	if o == nil {
		return s.Issue(ctx, spec, actor)
	}
	return s.once(ctx, o, func(seal sealFunc) (*Result, error) { return s.issue(ctx, spec, actor, seal) })
}

func (s *Service) issue(ctx context.Context, spec Spec, actor string, seal sealFunc) (*Result, error) {
	if spec.Name == nil || strings.TrimSpace(*spec.Name) == "" {
		return nil, &InvalidError{Field: "name", err: ErrNameRequired, msg: "name is required (e.g. crm-sync)"}
	}
	if spec.Scopes == nil && spec.AddScopes == nil {
		return nil, &InvalidError{Field: "scope", err: ErrScopeRequired, msg: "at least one scope is required (e.g. mail.send; * is full access)"}
	}
	if spec.RemoveScopes != nil || spec.RemoveSenderDomains != nil || spec.RemoveAllowedIPs != nil {
		return nil, invalidf("", "a new key has nothing to remove")
	}
	if s.owner != nil {
		if spec.Owner != nil && strings.TrimSpace(*spec.Owner) != *s.owner {
			return nil, invalid("owner", *spec.Owner, "you may only issue keys owned by %q", *s.owner)
		}
		spec.Owner = s.owner
	}
	prefix, prefixWarning := s.prefixFor(ctx, spec.Prefix)
	if !verifier.ValidPrefix(prefix) {
		return nil, invalid("prefix", prefix, "want 2-10 characters, a-z then a-z or 0-9")
	}
	t := s.now()
	rec := &store.Record{Env: "live", CreatedAt: t, Scopes: []string{}}
	if err := spec.apply(rec, t); err != nil {
		return nil, err
	}
	if len(rec.Scopes) == 0 {
		return nil, &InvalidError{Field: "scope", err: ErrScopeRequired, msg: "at least one scope is required (e.g. mail.send; * is full access)"}
	}
	if err := checkReason(spec.Reason); err != nil {
		return nil, err
	}
	warnings, err := s.checkScopes(ctx, rec.Scopes, spec.Force)
	if err != nil {
		return nil, err
	}
	warnings = append(warnings, s.sameName(ctx, rec, "")...)
	warnings = append(warnings, s.newOwner(ctx, rec.Owner)...)
	if prefixWarning != "" {
		warnings = append(warnings, prefixWarning)
	}
	if foreverFull(rec) {
		warnings = append(warnings, foreverFullWarning)
	}
	key, err := newKeyFor(rec, prefix)
	if err != nil {
		return nil, err
	}
	ev := store.Event{At: t, Action: "issued", KeyID: rec.ID, Actor: actor, Reason: spec.Reason, Detail: describe(rec)}
	res := &Result{Record: rec, Key: key, Warnings: warnings}
	if seal != nil {
		if ev.Answer, err = seal(res); err != nil {
			return nil, err
		}
	}
	if err := s.st.CreateKey(ctx, rec, ev); err != nil {
		return nil, err
	}
	s.written(ctx)
	return res, nil
}

// foreverFull reports a key with full access that never expires: if it
// leaks, it can do everything until someone revokes it.
func foreverFull(rec *store.Record) bool {
	return slices.Contains(rec.Scopes, "*") && rec.ExpiresAt == nil
}

const foreverFullWarning = "this key has full access (*) and never expires: if it leaks, it can do everything " +
	"until someone revokes it; prefer the scopes it needs and an expiry"

// newKeyFor generates a key for rec's env and sets the record's id, digest
// and hint.
func newKeyFor(rec *store.Record, prefix string) (string, error) {
	key, err := verifier.Generate(prefix, rec.Env)
	if err != nil {
		return "", err
	}
	rec.ID = verifier.NewID()
	rec.Digest = verifier.DigestOf(key)
	rec.Hint = verifier.Hint(key)
	return key, nil
}

// Update applies spec to key id. Every change is one audit event naming each
// field that changed, old → new.
func (s *Service) Update(ctx context.Context, id string, spec Spec, actor string) (*Result, error) {
	if !spec.changes() {
		return nil, invalidf("", "nothing to change: name at least one field")
	}
	if spec.Prefix != nil {
		return nil, invalidf("prefix", "prefix cannot be changed: it is part of the key (a rotation keeps it); issue a key with the other prefix instead")
	}
	// The env is part of the key's text (kg_test_…): relabelling a test key
	// live would let a key handled as low-risk into live routes.
	if spec.Env != nil {
		return nil, invalidf("env", "env cannot be changed: it is part of the key; issue a key for the other env instead")
	}
	if s.owner != nil && spec.Owner != nil && strings.TrimSpace(*spec.Owner) != *s.owner {
		return nil, invalid("owner", *spec.Owner, "you may not give a key to another owner")
	}
	if err := checkReason(spec.Reason); err != nil {
		return nil, err
	}
	// Checks that read the store run before the write transaction, on the
	// record as it is now; the transaction applies the spec again to the
	// record as it is then.
	cur, err := s.key(ctx, id)
	if err != nil {
		return nil, err
	}
	if cur.Revoked() {
		return nil, conflict("key %s is revoked and cannot be changed", id)
	}
	if err := spec.current(cur); err != nil {
		return nil, err
	}
	preview := cur.Clone()
	if err := spec.apply(preview, s.now()); err != nil {
		return nil, err
	}
	warnings, err := s.checkScopes(ctx, newEntries(cur.Scopes, preview.Scopes), spec.Force)
	if err != nil {
		return nil, err
	}
	if preview.Name != cur.Name {
		warnings = append(warnings, s.sameName(ctx, preview, id)...)
	}
	if preview.Owner != cur.Owner {
		warnings = append(warnings, s.newOwner(ctx, preview.Owner)...)
	}
	if foreverFull(preview) && !foreverFull(cur) {
		warnings = append(warnings, foreverFullWarning)
	}
	ev := &store.Event{Action: "updated", KeyID: id, Actor: actor, Reason: spec.Reason}
	rec, err := s.st.UpdateKey(ctx, id, ev, func(rec *store.Record) error {
		if !s.visible(rec) {
			return &NotFoundError{What: "key " + id}
		}
		if rec.Revoked() {
			return conflict("key %s is revoked and cannot be changed", id)
		}
		if err := spec.current(rec); err != nil {
			return err
		}
		old := rec.Clone()
		if err := spec.apply(rec, s.now()); err != nil {
			return err
		}
		if len(rec.Scopes) == 0 {
			return invalidf("scope", "a key needs at least one scope (to stop a key, disable or revoke it)")
		}
		ev.Detail = diff(old, rec)
		switch {
		case ev.Detail == "":
			ev.Action = "" // nothing changed: no event
		case spec.onlyDisabled() && rec.Disabled:
			ev.Action = "disabled"
		case spec.onlyDisabled():
			ev.Action = "enabled"
		}
		return nil
	})
	if err != nil {
		return nil, notFound(err, "key "+id)
	}
	if ev.Action == "" {
		warnings = append(warnings, "nothing changed: the key already had these settings")
	} else {
		s.written(ctx, rec)
	}
	return &Result{Record: rec, Warnings: warnings, Unchanged: ev.Action == ""}, nil
}

// Rotate issues a new key with the same settings as key id; the old key
// keeps working until grace ends, then answers expired_key.
func (s *Service) Rotate(ctx context.Context, id string, grace time.Duration, reason, actor string) (*Result, error) {
	return s.rotate(ctx, id, grace, reason, actor, nil)
}

// RotateOnce is Rotate made safe to repeat: under an idempotency key it
// rotates at most once, and a repeat of the same request gets the first
// Result again (Replayed), the new key included, rather than "already
// rotated" with the new key lost (see Idempotency).
func (s *Service) RotateOnce(ctx context.Context, id string, grace time.Duration, reason, actor string, o *Idempotency) (*Result, error) {
	if o == nil {
		return s.Rotate(ctx, id, grace, reason, actor)
	}
	return s.once(ctx, o, func(seal sealFunc) (*Result, error) { return s.rotate(ctx, id, grace, reason, actor, seal) })
}

func (s *Service) rotate(ctx context.Context, id string, grace time.Duration, reason, actor string, seal sealFunc) (*Result, error) {
	if grace < 0 {
		return nil, invalidf("grace", "grace %s: want 0 or more", grace)
	}
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	if _, err := s.key(ctx, id); err != nil { // the owner's, for a service of one owner
		return nil, err
	}
	t := s.now()
	if t.Add(grace).After(store.MaxTime) {
		return nil, invalidf("grace", "grace %s: ends later than the store can keep (%d)", grace, store.MaxTime.Year())
	}
	// The successor is made from the key as the store's transaction reads
	// it, so a revoke, disable or rotation that lands first is seen.
	var res *Result
	ev := store.Event{At: t, Action: "rotated", Actor: actor, Reason: reason}
	replaced, err := s.st.RotateKey(ctx, id, t.Add(grace), &ev, func(old *store.Record) (*store.Record, error) {
		if !s.visible(old) { // given to another owner since the check above
			return nil, &NotFoundError{What: "key " + id}
		}
		if old.Revoked() {
			return nil, conflict("key %s is revoked; issue a new key instead", id)
		}
		if old.RotatedTo != "" {
			return nil, conflict("key %s was already rotated to %s; rotate that one", id, old.RotatedTo)
		}
		next := old.Clone()
		next.CreatedAt, next.LastUsedAt, next.LastIP = t, nil, ""
		next.RotatedFrom, next.RotatedTo = old.ID, ""
		// The new key lives as long as the old one was given (a 90-day key
		// rotated on its 85th day gets 90 days more), not until the old
		// one's end: a rotation that expired with the key it replaced would
		// be no rotation at all.
		if old.ExpiresAt != nil {
			if life := old.ExpiresAt.Sub(old.CreatedAt); life > 0 {
				end := t.Add(life)
				if end.After(store.MaxTime) { // a centuries-long life, as long as the store keeps
					end = store.MaxTime
				}
				next.ExpiresAt = &end
			}
		}
		key, err := newKeyFor(next, prefixOf(old.Hint))
		if err != nil {
			return nil, err
		}
		// The old key stops when the grace period ends, or at its own
		// expiry if that comes first (the store keeps the sooner of the two).
		oldEnds := t.Add(grace)
		if old.ExpiresAt != nil && old.ExpiresAt.Before(oldEnds) {
			oldEnds = *old.ExpiresAt
		}
		ev.Detail = fmt.Sprintf("new key %s; old key valid until %s", next.ID, oldEnds.UTC().Format(time.RFC3339))
		res = &Result{Record: next, Key: key, OldKeyEnds: &oldEnds}
		if next.Disabled {
			res.Warnings = append(res.Warnings, "the new key is disabled, as the key it replaces was: enable it when the integration should use it")
		}
		// Sealed here, so the answer is written in the rotation's own
		// transaction.
		if seal != nil {
			if ev.Answer, err = seal(res); err != nil {
				return nil, err
			}
		}
		return next, nil
	})
	if err != nil {
		return nil, notFound(err, "key "+id)
	}
	s.written(ctx, replaced)
	res.Replaced = replaced
	return res, nil
}

// prefixOf reads the prefix back from a hint ("kg_live_Ab…").
func prefixOf(hint string) string {
	p, _, _ := strings.Cut(hint, "_")
	if verifier.ValidPrefix(p) {
		return p
	}
	return verifier.DefaultPrefix
}

// Revocation names what to revoke: one key by id, a leaked key by its value
// (only its digest is looked up), or every active key of an owner.
type Revocation struct {
	ID     string `json:"id,omitempty"`
	Key    string `json:"key,omitempty"`
	Owner  string `json:"owner,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (rv Revocation) check() error {
	given := 0
	for _, v := range []string{rv.ID, rv.Key, rv.Owner} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return invalidf("", "give exactly one of an id, a key or an owner")
	}
	if err := noKeyIn("owner", rv.Owner); err != nil {
		return err
	}
	return checkReason(rv.Reason)
}

// Check reports a revocation that does not name exactly one of an id, a key
// or an owner, or whose reason is not printable.
func (rv Revocation) Check() error { return rv.check() }

// RevokeTargets returns the keys a revocation would revoke, for a caller
// that asks for confirmation first. Revoking by owner with no active key is
// NotFound. A leaked key of another owner is found on a view limited to one
// owner too (whoever holds a key may stop it), but its record is reduced to
// its id.
func (s *Service) RevokeTargets(ctx context.Context, rv Revocation) ([]*store.Record, error) {
	if err := rv.check(); err != nil {
		return nil, err
	}
	switch {
	case rv.Key != "":
		// Like the gateway, refuse a malformed key before any store work.
		// The message never quotes the value: it may be a real key with a
		// typo in it.
		key, err := leakedKey(rv.Key)
		if err != nil {
			return nil, err
		}
		rec, err := s.st.KeyByDigest(ctx, verifier.DigestOf(key))
		if err != nil {
			return nil, notFound(err, "a key with that value")
		}
		return []*store.Record{s.seen(rec)}, nil
	case rv.Owner != "":
		if s.owner != nil && rv.Owner != *s.owner {
			return nil, &NotFoundError{What: fmt.Sprintf("active keys of owner %q", rv.Owner)}
		}
		recs, err := s.st.ListKeys(ctx, store.ListFilter{Owner: rv.Owner, All: true})
		if err != nil {
			return nil, err
		}
		var active []*store.Record
		for _, r := range recs {
			if !r.Revoked() {
				active = append(active, r)
			}
		}
		if len(active) == 0 {
			return nil, &NotFoundError{What: fmt.Sprintf("active keys of owner %q", rv.Owner)}
		}
		return active, nil
	}
	rec, err := s.key(ctx, rv.ID)
	if err != nil {
		return nil, err
	}
	return []*store.Record{rec}, nil
}

// leakedKey finds the one key in text as a leak is found and pasted: the key
// alone, or the line it was in ("Authorization: Bearer kg_live_…", an
// environment file's KEY=…, a log line, an escaped URL or JSON).
func leakedKey(text string) (string, error) {
	switch found := verifier.Find(text); len(found) {
	case 0:
		return "", &InvalidError{Field: "key", err: ErrNoKeyFound, msg: "no keygate key found in what was given (a key is its prefix, _live_ or _test_, " +
			"then 49 letters and digits whose last ones are a checksum): check that it was copied whole"}
	case 1:
		return found[0], nil
	default:
		return "", &InvalidError{Field: "key", err: ErrSeveralKeys, msg: "what was given holds more than one key; give one at a time"}
	}
}

// Revoke revokes what rv names and returns the updated records. Revoking a
// revoked key changes nothing and keeps its first time and reason. Each key
// is checked again as its write reads it: one given to another owner
// meanwhile is not found by id on a view limited to one owner, and is left
// out of a revocation by owner.
func (s *Service) Revoke(ctx context.Context, rv Revocation, actor string) ([]*store.Record, error) {
	targets, err := s.RevokeTargets(ctx, rv)
	if err != nil {
		return nil, err
	}
	action, reason := "revoked", rv.Reason
	if rv.Key != "" {
		action = "leak_reported"
		if reason == "" {
			reason = "leaked key reported"
		}
	}
	out := []*store.Record{}
	defer func() {
		if len(out) > 0 {
			s.written(ctx, out...)
		}
	}()
	for _, target := range targets {
		ev := &store.Event{Action: action, KeyID: target.ID, Actor: actor, Reason: reason}
		var gone bool // given to another owner since RevokeTargets
		rec, err := s.st.UpdateKey(ctx, target.ID, ev, func(rec *store.Record) error {
			// Read again in the transaction, as Update and Rotate do: a
			// key given to another owner meanwhile is no longer this view's
			// to revoke by id (a leaked key is anyone's to stop), and no
			// longer among the keys of the owner named.
			if rv.Owner != "" && rec.Owner != rv.Owner {
				gone, ev.Action = true, ""
				return nil
			}
			if rv.ID != "" && !s.visible(rec) {
				return &NotFoundError{What: "key " + target.ID}
			}
			if rec.Revoked() {
				ev.Action = ""
				return nil
			}
			t := s.now()
			rec.RevokedAt, rec.RevokeReason = &t, reason
			return nil
		})
		if err != nil {
			return out, notFound(err, "key "+target.ID)
		}
		if !gone {
			out = append(out, s.seen(rec))
		}
	}
	return out, nil
}

// seen is rec as the service may show it: another owner's key (revoked by
// its value) is reduced to its id and revocation.
func (s *Service) seen(rec *store.Record) *store.Record {
	if s.visible(rec) {
		return rec
	}
	return &store.Record{ID: rec.ID, RevokedAt: rec.RevokedAt, RevokeReason: rec.RevokeReason, Scopes: []string{}}
}

// notFound turns the store's ErrNotFound into a NotFoundError naming what.
func notFound(err error, what string) error {
	// The service's own errors, returned from inside a store transaction,
	// come back without the store's wording around them.
	var nf *NotFoundError
	var inv *InvalidError
	var cf *ConflictError
	switch {
	case errors.As(err, &nf):
		return nf
	case errors.As(err, &inv):
		return inv
	case errors.As(err, &cf):
		return cf
	case errors.Is(err, store.ErrNotFound):
		return &NotFoundError{What: what}
	}
	return err
}

// CheckReason reports a reason that is too long or not printable, for a
// caller that must check it before doing anything else.
func CheckReason(reason string) error { return checkReason(reason) }

func checkReason(reason string) error {
	if err := noKeyIn("reason", reason); err != nil {
		return err
	}
	if len(reason) > 500 || !printable(reason) {
		return invalidf("reason", "reason: want at most 500 printable UTF-8 characters%s", notPrintable(reason))
	}
	return nil
}

// newEntries returns the entries of next that cur lacks.
func newEntries(cur, next []string) []string {
	var out []string
	for _, n := range next {
		found := false
		for _, c := range cur {
			found = found || c == n
		}
		if !found {
			out = append(out, n)
		}
	}
	return out
}
