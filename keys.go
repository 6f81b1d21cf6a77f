package keygate

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// KeySpec is the settable part of a key record, as `caddy keys issue/update`
// flags and the admin API's JSON body give it. On update, nil fields are
// left unchanged; an empty string clears rate, quota and expires.
type KeySpec struct {
	Name            *string   `json:"name,omitempty"`
	Owner           *string   `json:"owner,omitempty"`
	Env             *string   `json:"env,omitempty"`
	Prefix          *string   `json:"prefix,omitempty"`
	Scopes          *[]string `json:"scopes,omitempty"`
	Rate            *string   `json:"rate,omitempty"`
	Burst           *int      `json:"burst,omitempty"`
	Expires         *string   `json:"expires,omitempty"`
	AllowedIPs      *[]string `json:"allowed_ips,omitempty"`
	SenderDomains   *[]string `json:"sender_domains,omitempty"`
	Quota           *string   `json:"quota,omitempty"`
	MaxRecipients   *int      `json:"max_recipients,omitempty"`
	AllowOnBehalfOf *bool     `json:"allow_on_behalf_of,omitempty"`
	Disabled        *bool     `json:"disabled,omitempty"`
}

// errBadInput marks errors caused by the caller's input (HTTP 400).
var errBadInput = errors.New("bad input")

func badInput(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadInput}, args...)...)
}

// parseExpiry reads a duration from now ("90d", "12h") or an RFC 3339 time.
// "", "never" and "0" mean no expiry.
func parseExpiry(s string, t time.Time) (*time.Time, error) {
	switch s {
	case "", "never", "0":
		return nil, nil
	}
	if at, err := time.Parse(time.RFC3339, s); err == nil {
		if !at.After(t) {
			return nil, badInput("expires %q is not in the future (to stop a key now, revoke or disable it)", s)
		}
		at = at.UTC()
		return &at, nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil || d <= 0 {
		return nil, badInput("expires %q: want a duration such as 90d or 12h, or an RFC 3339 time such as 2027-01-31T00:00:00Z", s)
	}
	at := t.Add(d).UTC()
	return &at, nil
}

// printable reports whether s is valid UTF-8 without control characters:
// names and owners are printed in tables, logs and terminals, where a line
// break or an escape sequence would forge or garble output.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// apply validates the spec and writes it into rec.
func (s *KeySpec) apply(rec *store.Record, t time.Time) error {
	if s.Name != nil {
		name := strings.TrimSpace(*s.Name)
		if name == "" || len(name) > 200 || !printable(name) {
			return badInput("name %q: want 1-200 printable UTF-8 characters", *s.Name)
		}
		rec.Name = name
	}
	if s.Owner != nil {
		owner := strings.TrimSpace(*s.Owner)
		if len(owner) > 200 || !printable(owner) {
			return badInput("owner %q: want at most 200 printable UTF-8 characters", *s.Owner)
		}
		rec.Owner = owner
	}
	if s.Env != nil {
		if *s.Env != "live" && *s.Env != "test" {
			return badInput("env %q: want live or test", *s.Env)
		}
		rec.Env = *s.Env
	}
	if s.Scopes != nil {
		scopes := []string{}
		for _, sc := range *s.Scopes {
			for _, one := range strings.Split(sc, ",") {
				one = strings.TrimSpace(one)
				if one == "" {
					continue
				}
				if !validScopeName(one) {
					return badInput("scope %q: a scope name uses a-z, 0-9, '.', '_', '-', e.g. mail.send, mail.* or *", one)
				}
				scopes = append(scopes, one)
			}
		}
		rec.Scopes = scopes
	}
	if s.Rate != nil {
		rec.Rate = nil
		if *s.Rate != "" {
			r, err := store.ParseRate(*s.Rate)
			if err != nil {
				return badInput("%v", err)
			}
			rec.Rate = &r
		}
	}
	if s.Burst != nil {
		if *s.Burst < 0 {
			return badInput("burst %d: want 0 (from the rate) or more", *s.Burst)
		}
		rec.Burst = *s.Burst
	}
	if s.Expires != nil {
		at, err := parseExpiry(*s.Expires, t)
		if err != nil {
			return err
		}
		rec.ExpiresAt = at
	}
	if s.AllowedIPs != nil {
		prefixes := []netip.Prefix{}
		for _, c := range *s.AllowedIPs {
			p, err := parseCIDR(c)
			if err != nil {
				return err
			}
			prefixes = append(prefixes, p)
		}
		rec.AllowedIPs = prefixes
	}
	if s.SenderDomains != nil {
		domains := []string{}
		for _, d := range *s.SenderDomains {
			d = strings.ToLower(strings.TrimSpace(d))
			if !validDomain(strings.TrimPrefix(d, "*.")) {
				return badInput("sender domain %q: want a domain such as example.com or *.example.com", d)
			}
			domains = append(domains, d)
		}
		rec.SenderDomains = domains
	}
	if s.Quota != nil {
		rec.Quota = nil
		if *s.Quota != "" {
			q, err := store.ParseQuota(*s.Quota)
			if err != nil {
				return badInput("%v", err)
			}
			rec.Quota = &q
		}
	}
	if s.MaxRecipients != nil {
		if *s.MaxRecipients < 0 {
			return badInput("max recipients %d: want 0 (no limit) or more", *s.MaxRecipients)
		}
		rec.MaxRecipients = *s.MaxRecipients
	}
	if s.AllowOnBehalfOf != nil {
		rec.AllowOnBehalfOf = *s.AllowOnBehalfOf
	}
	if s.Disabled != nil {
		rec.Disabled = *s.Disabled
	}
	return nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, badInput("allowed IP %q: want a CIDR such as 203.0.113.0/24 or 2001:db8::/32, or one address", s)
}

func validDomain(d string) bool {
	if d == "" || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// issueKey creates a key from spec and returns its record and the key,
// which is never seen again.
func issueKey(ctx context.Context, st store.Store, spec KeySpec, actor string) (*store.Record, string, error) {
	if spec.Name == nil || strings.TrimSpace(*spec.Name) == "" {
		return nil, "", badInput("name is required (e.g. --name crm-sync)")
	}
	if spec.Scopes == nil || len(*spec.Scopes) == 0 {
		return nil, "", badInput("at least one scope is required (e.g. --scope mail.send; * is full access)")
	}
	prefix := "kg"
	if spec.Prefix != nil && *spec.Prefix != "" {
		prefix = *spec.Prefix
	}
	if !verifier.ValidPrefix(prefix) {
		return nil, "", badInput("prefix %q: want 2-10 characters, a-z then a-z or 0-9", prefix)
	}
	t := now().UTC()
	rec := &store.Record{Env: "live", CreatedAt: t}
	if err := spec.apply(rec, t); err != nil {
		return nil, "", err
	}
	if len(rec.Scopes) == 0 {
		return nil, "", badInput("at least one scope is required (e.g. --scope mail.send; * is full access)")
	}
	key, err := newKeyFor(rec, prefix)
	if err != nil {
		return nil, "", err
	}
	ev := store.Event{At: t, Action: "issued", KeyID: rec.ID, Actor: actor}
	if err := st.CreateKey(ctx, rec, ev); err != nil {
		return nil, "", err
	}
	return rec, key, nil
}

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

// prefixOf reads the prefix back from a hint ("kg_live_Ab…").
func prefixOf(hint string) string {
	p, _, _ := strings.Cut(hint, "_")
	if verifier.ValidPrefix(p) {
		return p
	}
	return "kg"
}

// rotateKey issues a new key with the same settings as id; the old key
// keeps working until grace ends.
func rotateKey(ctx context.Context, st store.Store, id string, grace time.Duration, actor string) (*store.Record, string, error) {
	if grace < 0 {
		return nil, "", badInput("grace %s: want 0 or more", grace)
	}
	old, err := st.Key(ctx, id)
	if err != nil {
		return nil, "", err
	}
	if old.Revoked() {
		return nil, "", badInput("key %s is revoked; issue a new key instead", id)
	}
	if old.RotatedTo != "" {
		return nil, "", badInput("key %s was already rotated to %s; rotate that one", id, old.RotatedTo)
	}
	t := now().UTC()
	next := old.Clone()
	next.CreatedAt, next.LastUsedAt, next.LastIP = t, nil, ""
	next.RotatedFrom, next.RotatedTo = old.ID, ""
	key, err := newKeyFor(next, prefixOf(old.Hint))
	if err != nil {
		return nil, "", err
	}
	ev := store.Event{At: t, Action: "rotated", KeyID: old.ID, Actor: actor,
		Detail: fmt.Sprintf("new key %s; old key valid until %s", next.ID, t.Add(grace).Format(time.RFC3339))}
	if _, err := st.RotateKey(ctx, id, next, t.Add(grace), ev); err != nil {
		return nil, "", err
	}
	return next, key, nil
}

// updateKey applies spec to key id and records what kind of change it was.
func updateKey(ctx context.Context, st store.Store, id string, spec KeySpec, actor string) (*store.Record, error) {
	ev := &store.Event{Action: "updated", KeyID: id, Actor: actor}
	if spec == (KeySpec{}) {
		return nil, badInput("nothing to change: name at least one field")
	}
	if spec.Prefix != nil {
		return nil, badInput("prefix cannot be changed; rotate to a new key instead")
	}
	// The env is part of the key's text (kg_test_…): relabelling a test
	// key live would let a key handled as low-risk into live routes.
	if spec.Env != nil {
		return nil, badInput("env cannot be changed: it is part of the key; issue a key for the other env instead")
	}
	onlyDisable := spec.Disabled != nil && (spec == KeySpec{Disabled: spec.Disabled})
	return st.UpdateKey(ctx, id, ev, func(rec *store.Record) error {
		if rec.Revoked() {
			return badInput("key %s is revoked and cannot be changed", id)
		}
		if err := spec.apply(rec, now().UTC()); err != nil {
			return err
		}
		if len(rec.Scopes) == 0 {
			return badInput("a key needs at least one scope")
		}
		if onlyDisable {
			ev.Action = "enabled"
			if rec.Disabled {
				ev.Action = "disabled"
			}
		}
		return nil
	})
}

// revokeKey revokes key id; revoking twice keeps the first time and reason.
func revokeKey(ctx context.Context, st store.Store, id, reason, action, actor string) (*store.Record, error) {
	ev := &store.Event{Action: action, KeyID: id, Actor: actor, Reason: reason}
	return st.UpdateKey(ctx, id, ev, func(rec *store.Record) error {
		if rec.Revoked() {
			ev.Action = ""
			return nil
		}
		t := now().UTC()
		rec.RevokedAt, rec.RevokeReason = &t, reason
		return nil
	})
}

// revocation is what a revoke request names: one key by id, a leaked key
// by its value (only hashed), or every active key of an owner.
type revocation struct {
	ID     string `json:"id,omitempty"`
	Key    string `json:"key,omitempty"`
	Owner  string `json:"owner,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// check reports a revocation that does not name exactly one of an id, a key
// or an owner.
func (rv revocation) check() error {
	given := 0
	for _, v := range []string{rv.ID, rv.Key, rv.Owner} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return badInput("give exactly one of an id, a key or an owner")
	}
	return nil
}

// targets resolves the keys a revocation applies to and the audit action.
func (rv revocation) targets(ctx context.Context, st store.Store) ([]*store.Record, string, error) {
	if err := rv.check(); err != nil {
		return nil, "", err
	}
	switch {
	case rv.Key != "":
		key := strings.TrimSpace(rv.Key)
		// Like the gateway, reject a malformed key before any store work.
		// The message never quotes the value: it may be a real key with a
		// typo in it.
		prefix, _, _ := strings.Cut(key, "_")
		if _, ok := verifier.Parse(key, prefix); !ok {
			return nil, "", badInput("the key is not a keygate key (wrong shape or checksum)")
		}
		rec, err := st.KeyByDigest(ctx, verifier.DigestOf(key))
		if err != nil {
			return nil, "", fmt.Errorf("no key with that value: %w", err)
		}
		return []*store.Record{rec}, "leak_reported", nil
	case rv.Owner != "":
		recs, err := st.ListKeys(ctx, store.ListFilter{Owner: rv.Owner, All: true})
		if err != nil {
			return nil, "", err
		}
		active := []*store.Record{}
		for _, r := range recs {
			if !r.Revoked() {
				active = append(active, r)
			}
		}
		return active, "revoked", nil
	}
	rec, err := st.Key(ctx, rv.ID)
	if err != nil {
		return nil, "", err
	}
	return []*store.Record{rec}, "revoked", nil
}

// revoke revokes the given keys and returns their updated records.
func (rv revocation) revoke(ctx context.Context, st store.Store, targets []*store.Record, action, actor string) ([]*store.Record, error) {
	reason := rv.Reason
	if reason == "" && action == "leak_reported" {
		reason = "leaked key reported"
	}
	out := []*store.Record{}
	for _, t := range targets {
		rec, err := revokeKey(ctx, st, t.ID, reason, action, actor)
		if err != nil {
			return out, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// keyEvents returns the audit events of key id, or of every key when id is
// empty. An unknown id is ErrNotFound, not an empty history.
func keyEvents(ctx context.Context, st store.Store, id string) ([]store.Event, error) {
	if id != "" {
		if _, err := st.Key(ctx, id); err != nil {
			return nil, err
		}
	}
	return st.Events(ctx, store.EventFilter{KeyID: id})
}
