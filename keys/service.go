// Package keys is keygate's key management: issuing, changing, rotating and
// revoking keys, and reading their records, usage and audit events. The CLI
// (`caddy keys`), the admin API and the web console are thin adapters over
// one Service, so every rule — what a valid name is, what an update may
// change, what an audit event records — lives here once.
//
// A write made through a Service reaches running gateways without the
// adapter doing anything more: Options.AfterWrite (set by the gateway's own
// backend) enforces it on the next request of that process, and every other
// gateway follows the store's change log within a second.
//
// The package imports nothing from Caddy.
package keys

import (
	"context"
	"errors"
	"time"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// Options are what a Service needs from its surroundings. Every field is
// optional.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// AfterWrite runs after every successful change, so that the gateways
	// of this process enforce it on their next request. changed holds the
	// digests of the keys changed, when the change knows them (not a
	// restore's many), for a caller that cannot read the change log.
	AfterWrite func(ctx context.Context, changed []store.Digest)
	// BeforeUsage runs before usage is read, to write counts still held in
	// memory.
	BeforeUsage func()
	// Prefix returns the key prefix new keys get when the caller names
	// none: the prefix of the routes on this store when they agree, else
	// "" for the default ("kg").
	Prefix func() string
}

// Service manages the keys of one store. It is safe for concurrent use.
type Service struct {
	st   store.Store
	opts Options
	// owner, when set, limits the service to the keys of one owner (see
	// ForOwner).
	owner *string
}

// New returns the Service for a store.
func New(st store.Store, opts Options) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Service{st: st, opts: opts}
}

// ForOwner returns a view of the service limited to the keys whose owner is
// owner: other keys are not found, new keys get this owner, lists and
// reports hold only this owner's keys. It is how the console keeps one team
// from seeing or touching another team's keys, whatever ids a request names.
func (s *Service) ForOwner(owner string) *Service {
	c := *s
	c.owner = &owner
	return &c
}

// Store returns the store the service manages.
func (s *Service) Store() store.Store { return s.st }

func (s *Service) now() time.Time { return s.opts.Now().UTC() }

func (s *Service) written(ctx context.Context, changed ...*store.Record) {
	if s.opts.AfterWrite != nil {
		ds := make([]store.Digest, 0, len(changed))
		for _, rec := range changed {
			if rec != nil {
				ds = append(ds, rec.Digest)
			}
		}
		// The change is committed; enforcing it here must not be undone
		// by a caller that has already given up waiting.
		s.opts.AfterWrite(context.WithoutCancel(ctx), ds)
	}
}

// CheckID refuses what cannot be a key's id before any store lookup, as
// input to change rather than a key not found: an empty one (a script's
// `caddy keys show "$ID"` with ID unset, exit 2, not the 3 an offboarding
// script takes for "gone"), and one that is not printable or far longer
// than an id (key_ and 16 characters), which an error would otherwise
// write back whole, escape sequences and all, to the terminal or CI log
// that ran the command. An adapter whose empty id means "every key" (the
// events of one key or of all) checks an id given empty with it.
func CheckID(id string) error {
	switch {
	case id == "":
		return invalidf("id", "the key's id is empty: give a key's id (key_…)")
	case len(id) > maxIDLen || !printable(id):
		return invalid("id", id, "not a key's id (key_…)%s", notPrintable(id))
	}
	return nil
}

// maxIDLen bounds what may be a key's id: every id is key_ and 16
// characters; the slack is for ids a store may hold from elsewhere.
const maxIDLen = 100

// visible reports whether the service may show and change rec.
func (s *Service) visible(rec *store.Record) bool {
	return s.owner == nil || rec.Owner == *s.owner
}

// key loads a key the service may see. A key's value given for its id is
// refused without being repeated: `caddy keys revoke <key>` is an easy slip
// in a hurry, and its error goes to terminals and CI logs.
func (s *Service) key(ctx context.Context, id string) (*store.Record, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	if verifier.HasSecret(id) {
		return nil, invalidf("id", "that is an API key, not a key's id (key_…), so it is not repeated here; "+
			"to revoke a key by its value, give it to `caddy keys revoke --key -` on stdin, or to the admin API's POST /keygate/revoke as {\"key\": …}")
	}
	rec, err := s.st.Key(ctx, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && !s.visible(rec) {
		return nil, &NotFoundError{What: "key " + id}
	}
	return rec, err
}
