package keys

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// Show returns the record of key id.
func (s *Service) Show(ctx context.Context, id string) (*store.Record, error) {
	return s.key(ctx, id)
}

// List returns the keys of owner (every owner when empty), oldest first;
// all includes revoked and expired keys.
func (s *Service) List(ctx context.Context, owner string, all bool) ([]*store.Record, error) {
	return s.Select(ctx, Selection{Owner: owner, All: all})
}

// Selection picks the keys of a whole list, as scripts read it (the CLI's
// list, the admin API's GET /keygate/keys). Every field is optional.
type Selection struct {
	// Owner selects one owner's keys (on a view limited to one owner,
	// another owner's selects none).
	Owner string
	// All includes revoked and expired keys.
	All bool
	// Env is "live", "test" or "" for both.
	Env string
	// Status is one of the Status… values (active includes expiring),
	// which selects keys in that state whatever All says, or "".
	Status string

	// Limit, when > 0, returns at most that many keys: one page. 0 returns
	// every key selected.
	Limit int
	// After, when set, returns the keys that come after the key with this
	// id: the next page starts after the last id of the one before. Pages
	// walked this way hold every key selected exactly once, however many
	// keys are issued or revoked meanwhile (a key issued during the walk
	// comes last, so it is on a later page or none).
	After string
}

// Select returns the keys sel picks, oldest first (by creation, then id:
// an order that stays put between calls). A status or env that is not one
// of theirs is refused rather than ignored: a script asking for revoked
// keys must never be handed every key. So is an After that names no key
// the service may see: a typo must not look like the end of the list.
func (s *Service) Select(ctx context.Context, sel Selection) ([]*store.Record, error) {
	t := s.now()
	f := store.ListFilter{Owner: sel.Owner, All: sel.All, Env: sel.Env, Now: t, Limit: sel.Limit, After: sel.After}
	if err := selectStatus(&f, sel.Status, t); err != nil {
		return nil, err
	}
	if err := checkEnv(sel.Env); err != nil {
		return nil, err
	}
	// A key is no owner's name, and the answer would be an empty list
	// that says nothing of the key pasted in by mistake.
	if verifier.HasSecret(sel.Owner) {
		return nil, invalidf("owner", "owner: that is an API key (or something shaped like one), not an owner, so it is not repeated here")
	}
	if sel.Limit < 0 {
		return nil, invalidf("limit", "limit %d: want how many keys a page holds, or 0 for every key", sel.Limit)
	}
	if sel.After != "" {
		if _, err := s.key(ctx, sel.After); err != nil {
			var nf *NotFoundError
			if errors.As(err, &nf) {
				return nil, invalid("after", sel.After, "no such key; give the id of the last key of the page before")
			}
			return nil, err
		}
	}
	if s.owner != nil {
		if sel.Owner != "" && sel.Owner != *s.owner {
			return []*store.Record{}, nil
		}
		f.Owner = *s.owner
	}
	recs, err := s.st.ListKeys(ctx, f)
	if recs == nil {
		recs = []*store.Record{}
	}
	return recs, err
}

// selectStatus sets f to select the keys in status at t (one of the
// Status… values, or "" to leave f as it is).
func selectStatus(f *store.ListFilter, status string, t time.Time) error {
	switch status {
	case "":
	case StatusActive:
		f.State = store.StateUsable
	case StatusExpiring:
		f.State, f.ExpiringBefore = store.StateExpiring, t.Add(ExpiringWithin)
	case StatusDisabled:
		f.State = store.StateDisabled
	case StatusExpired:
		f.State = store.StateExpired
	case StatusRevoked:
		f.State = store.StateRevoked
	default:
		return invalid("status", status, "want active, expiring, disabled, expired or revoked")
	}
	return nil
}

func checkEnv(env string) error {
	switch env {
	case "", "live", "test":
		return nil
	}
	return invalid("env", env, "want live or test")
}

// Statuses a key can be in, as lists show them.
const (
	StatusActive   = "active"
	StatusExpiring = "expiring" // active, and expires within ExpiringWithin
	StatusDisabled = "disabled"
	StatusExpired  = "expired"
	StatusRevoked  = "revoked"
)

// ExpiringWithin is how soon an expiry makes a key "expiring".
const ExpiringWithin = 14 * 24 * time.Hour

// Status says what state a key is in at t: revoked, expired, disabled,
// expiring or active.
func Status(r *store.Record, t time.Time) string {
	switch {
	case r.Revoked():
		return StatusRevoked
	case r.Expired(t):
		return StatusExpired
	case r.Disabled:
		return StatusDisabled
	case r.ExpiresAt != nil && r.ExpiresAt.Sub(t) <= ExpiringWithin:
		return StatusExpiring
	}
	return StatusActive
}

// Query selects and orders a page of keys for a list people browse.
type Query struct {
	// Search matches the id, name, owner or hint, case-insensitively, anywhere.
	Search string
	// Owner selects one owner's keys (ignored on a view limited to one).
	Owner string
	// Env is "live", "test" or "" for both.
	Env string
	// Status is one of the Status… values, or "" for every key that is
	// not revoked or expired.
	Status string
	// Sort is "last_used" (default: most recently used first, never used
	// last), "created" (newest first), "name" or "expires" (soonest first).
	Sort string
	// Page is 1-based; PerPage defaults to 50 and is at most 200.
	Page, PerPage int
}

// Page is one page of keys and where it lies in the whole result.
type Page struct {
	Keys    []*store.Record `json:"keys"`
	Total   int             `json:"total"`
	Page    int             `json:"page"`
	PerPage int             `json:"per_page"`
	Pages   int             `json:"pages"`
}

// Find returns the page of keys q asks for. The store filters, orders and
// pages, so a page costs the same with 10 keys or 10,000.
func (s *Service) Find(ctx context.Context, q Query) (*Page, error) {
	t := s.now()
	f := store.ListFilter{Owner: q.Owner, Env: q.Env, Search: strings.TrimSpace(q.Search), Now: t}
	if s.owner != nil {
		f.Owner = *s.owner
	}
	if err := selectStatus(&f, q.Status, t); err != nil {
		return nil, err
	}
	if err := checkEnv(q.Env); err != nil {
		return nil, err
	}
	var ok bool
	if f.Order, ok = sortOrders[q.Sort]; !ok {
		return nil, invalid("sort", q.Sort, "want last_used, created, name or expires")
	}
	if s.opts.BeforeUsage != nil {
		s.opts.BeforeUsage() // the page shows and sorts by last use
	}
	total, err := s.st.CountKeys(ctx, f)
	if err != nil {
		return nil, err
	}
	p := &Page{Total: total, PerPage: q.PerPage, Page: q.Page}
	if p.PerPage <= 0 {
		p.PerPage = 50
	}
	p.PerPage = min(p.PerPage, 200)
	p.Pages = max(1, (p.Total+p.PerPage-1)/p.PerPage)
	p.Page = min(max(p.Page, 1), p.Pages)
	f.Limit, f.Offset = p.PerPage, (p.Page-1)*p.PerPage
	if p.Keys, err = s.st.ListKeys(ctx, f); err != nil {
		return nil, err
	}
	if p.Keys == nil {
		p.Keys = []*store.Record{}
	}
	return p, nil
}

// sortOrders maps Query.Sort to the store's orders.
var sortOrders = map[string]store.Order{
	"":          store.OrderLastUsed,
	"last_used": store.OrderLastUsed,
	"created":   store.OrderNewest,
	"name":      store.OrderName,
	"expires":   store.OrderExpires,
}

// Activity returns the hourly allowed and denied counts of each of recs
// since a time (for sparklines). It takes records, not ids, so a caller can
// only ask about keys it was allowed to load.
func (s *Service) Activity(ctx context.Context, recs []*store.Record, since time.Time) (map[string][]store.HourUsage, error) {
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		if s.visible(r) {
			ids = append(ids, r.ID)
		}
	}
	if s.opts.BeforeUsage != nil {
		s.opts.BeforeUsage()
	}
	return s.st.Activity(ctx, ids, since)
}

// Events returns the audit events of key id, or of every key the service
// may see when id is empty, oldest first: limit > 0 keeps the newest limit,
// or with after (a cursor: the last seq a reader saw) the first limit of
// those after it. An unknown id is NotFound, not an empty history; a key
// the store no longer holds (issued after a backup a restore put back)
// keeps its history for a service that sees every key.
func (s *Service) Events(ctx context.Context, id string, limit int, after *int64) ([]store.Event, error) {
	f := store.EventFilter{KeyID: id, Limit: limit, After: after}
	if id != "" {
		if _, err := s.key(ctx, id); err != nil {
			var nf *NotFoundError
			if s.owner != nil || !errors.As(err, &nf) {
				return nil, err
			}
			if evs, err := s.st.Events(ctx, store.EventFilter{KeyID: id, Limit: 1}); err != nil || len(evs) == 0 {
				return nil, cmp.Or(err, error(nf))
			}
		}
	}
	if s.owner != nil && id == "" {
		return s.ownerEvents(ctx, f)
	}
	evs, err := s.st.Events(ctx, f)
	if evs == nil {
		evs = []store.Event{}
	}
	return evs, err
}

// ownerEvents gathers the events of every key of the service's owner.
func (s *Service) ownerEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	recs, err := s.List(ctx, "", true)
	if err != nil {
		return nil, err
	}
	evs := []store.Event{}
	for _, r := range recs {
		f.KeyID = r.ID
		e, err := s.st.Events(ctx, f)
		if err != nil {
			return nil, err
		}
		evs = append(evs, e...)
	}
	slices.SortFunc(evs, func(a, b store.Event) int { return cmp.Compare(a.Seq, b.Seq) })
	switch {
	case f.Limit <= 0 || len(evs) <= f.Limit:
	case f.After != nil:
		evs = evs[:f.Limit] // the first after the cursor
	default:
		evs = evs[len(evs)-f.Limit:] // the newest
	}
	return evs, nil
}
