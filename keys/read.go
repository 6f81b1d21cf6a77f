package keys

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// Show returns the record of key id.
func (s *Service) Show(ctx context.Context, id string) (*store.Record, error) {
	return s.key(ctx, id)
}

// List returns the keys of owner (every owner when empty), oldest first;
// all includes revoked and expired keys.
func (s *Service) List(ctx context.Context, owner string, all bool) ([]*store.Record, error) {
	if s.owner != nil {
		if owner != "" && owner != *s.owner {
			return []*store.Record{}, nil
		}
		owner = *s.owner
	}
	recs, err := s.st.ListKeys(ctx, store.ListFilter{Owner: owner, All: all, Now: s.now()})
	if recs == nil {
		recs = []*store.Record{}
	}
	return recs, err
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
	// Search matches the id, name or owner, case-insensitively, anywhere.
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

// Find returns the page of keys q asks for.
func (s *Service) Find(ctx context.Context, q Query) (*Page, error) {
	switch q.Status {
	case "", StatusActive, StatusExpiring, StatusDisabled, StatusExpired, StatusRevoked:
	default:
		return nil, invalid("status", q.Status, "want active, expiring, disabled, expired or revoked")
	}
	switch q.Env {
	case "", "live", "test":
	default:
		return nil, invalid("env", q.Env, "want live or test")
	}
	owner := q.Owner
	if s.owner != nil {
		owner = "" // List limits the view to its owner
	}
	recs, err := s.List(ctx, owner, true)
	if err != nil {
		return nil, err
	}
	t := s.now()
	search := strings.ToLower(strings.TrimSpace(q.Search))
	match := recs[:0]
	for _, r := range recs {
		st := Status(r, t)
		switch {
		case q.Status == "" && (st == StatusRevoked || st == StatusExpired):
		case q.Status == StatusActive && st != StatusActive && st != StatusExpiring:
		case q.Status != "" && q.Status != StatusActive && st != q.Status:
		case q.Env != "" && r.Env != q.Env:
		case search != "" && !strings.Contains(strings.ToLower(r.ID+"\x00"+r.Name+"\x00"+r.Owner), search):
		default:
			match = append(match, r)
		}
	}
	sortKeys(match, q.Sort)
	p := &Page{Total: len(match), PerPage: q.PerPage, Page: q.Page}
	if p.PerPage <= 0 {
		p.PerPage = 50
	}
	p.PerPage = min(p.PerPage, 200)
	p.Pages = max(1, (p.Total+p.PerPage-1)/p.PerPage)
	p.Page = min(max(p.Page, 1), p.Pages)
	from := (p.Page - 1) * p.PerPage
	p.Keys = match[from:min(from+p.PerPage, len(match))]
	return p, nil
}

func sortKeys(recs []*store.Record, by string) {
	newestFirst := func(a, b *store.Record) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(a.ID, b.ID))
	}
	slices.SortStableFunc(recs, func(a, b *store.Record) int {
		switch by {
		case "created":
			return newestFirst(a, b)
		case "name":
			return cmp.Or(strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)), newestFirst(a, b))
		case "expires":
			return cmp.Or(compareTimes(a.ExpiresAt, b.ExpiresAt, false), newestFirst(a, b))
		}
		return cmp.Or(compareTimes(a.LastUsedAt, b.LastUsedAt, true), newestFirst(a, b))
	})
}

// compareTimes orders optional times, unset ones last; latest first when
// desc.
func compareTimes(a, b *time.Time, desc bool) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	case desc:
		return b.Compare(*a)
	}
	return a.Compare(*b)
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
// may see when id is empty, oldest first; limit > 0 keeps the newest limit.
// An unknown id is NotFound, not an empty history.
func (s *Service) Events(ctx context.Context, id string, limit int) ([]store.Event, error) {
	if id != "" {
		if _, err := s.key(ctx, id); err != nil {
			return nil, err
		}
	}
	if s.owner != nil && id == "" {
		return s.ownerEvents(ctx, limit)
	}
	evs, err := s.st.Events(ctx, store.EventFilter{KeyID: id, Limit: limit})
	if evs == nil {
		evs = []store.Event{}
	}
	return evs, err
}

// ownerEvents gathers the events of every key of the service's owner.
func (s *Service) ownerEvents(ctx context.Context, limit int) ([]store.Event, error) {
	recs, err := s.List(ctx, "", true)
	if err != nil {
		return nil, err
	}
	evs := []store.Event{}
	for _, r := range recs {
		e, err := s.st.Events(ctx, store.EventFilter{KeyID: r.ID, Limit: limit})
		if err != nil {
			return nil, err
		}
		evs = append(evs, e...)
	}
	slices.SortFunc(evs, func(a, b store.Event) int { return cmp.Compare(a.Seq, b.Seq) })
	if limit > 0 && len(evs) > limit {
		evs = evs[len(evs)-limit:]
	}
	return evs, nil
}
