package keys

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// RouteScopeWindow is how recently a gateway must have reported a scope line
// for it to count as in use. Gateways report theirs when they load a config
// and every hour while they run.
const RouteScopeWindow = 7 * 24 * time.Hour

// RouteScopes returns the scope lines gateways on this store have loaded
// recently (see RouteScopeWindow): what the console offers as checkboxes and
// what new scopes are checked against.
func (s *Service) RouteScopes(ctx context.Context) ([]store.RouteScope, error) {
	return s.st.RouteScopes(ctx, s.now().Add(-RouteScopeWindow))
}

// CheckScopes refuses, as Issue would without Force, scopes that no route
// on this store's gateways requires: for a form that says every mistake at
// once.
func (s *Service) CheckScopes(ctx context.Context, scopes []string) error {
	_, err := s.checkScopes(ctx, scopes, false)
	return err
}

// checkScopes warns about, or unless force refuses, scopes that no route on
// this store's gateways requires: a key holding only "mail.sned" would be
// refused everywhere. Nothing is checked while no gateway has reported its
// routes (the store may serve gateways not started yet).
func (s *Service) checkScopes(ctx context.Context, scopes []string, force bool) ([]string, error) {
	if len(scopes) == 0 {
		return nil, nil
	}
	lines, err := s.RouteScopes(ctx)
	if err != nil || len(lines) == 0 {
		return nil, nil // a hint, never a reason to fail a change
	}
	var known []string
	for _, l := range lines {
		if !slices.Contains(known, l.Scope) {
			known = append(known, l.Scope)
		}
	}
	var warnings []string
	for _, sc := range scopes {
		if sc == "*" || coversAny(sc, known) {
			continue
		}
		msg := fmt.Sprintf("scope %q: no route on this store's gateways requires it (routes use %s), so it grants nothing", sc, strings.Join(known, ", "))
		if !force {
			return nil, invalidf("scope", "%s; check the spelling, or force it to issue it anyway", msg)
		}
		warnings = append(warnings, msg)
	}
	return warnings, nil
}

// sameName warns when another active key of the same owner has rec's name:
// names are how people tell keys apart in lists, events and alerts. It is a
// warning, not a refusal, since a rotation keeps a key's name on purpose.
func (s *Service) sameName(ctx context.Context, rec *store.Record, except string) []string {
	recs, err := s.st.ListKeys(ctx, store.ListFilter{Owner: rec.Owner, Now: s.now()})
	if err != nil {
		return nil
	}
	for _, r := range recs {
		if r.ID != except && r.Owner == rec.Owner && strings.EqualFold(r.Name, rec.Name) && r.RotatedTo == "" {
			return []string{fmt.Sprintf("key %s of the same owner is also named %q; a distinct name tells them apart in lists and alerts", r.ID, r.Name)}
		}
	}
	return nil
}

// prefixFor returns the prefix a new key gets: the one named, else the one
// the routes of this process share, else the one every gateway on this
// store reported recently (see RouteScopeWindow), else the default. It
// warns when no gateway on the store accepts the prefix: such a key would
// get invalid_key everywhere.
func (s *Service) prefixFor(ctx context.Context, named *string) (prefix, warning string) {
	// Gateways report every hour: the prefixes of the last two hours are
	// those of the routes running now (a route whose prefix changed
	// yesterday no longer takes the old one); the week's stand in while
	// no gateway runs.
	var reported []string
	for _, within := range []time.Duration{2 * time.Hour, RouteScopeWindow} {
		got, err := s.st.RoutePrefixes(ctx, s.now().Add(-within))
		if err != nil {
			reported = nil // a hint, never a reason to fail an issue
			break
		}
		if reported = got; len(reported) > 0 {
			break
		}
	}
	switch {
	case named != nil && *named != "":
		prefix = *named
	case s.opts.Prefix != nil && s.opts.Prefix() != "":
		prefix = s.opts.Prefix()
	case len(reported) == 1:
		prefix = reported[0]
	default:
		prefix = verifier.DefaultPrefix
	}
	if len(reported) > 0 && !slices.Contains(reported, prefix) {
		warning = fmt.Sprintf("prefix %q: no route on this store's gateways accepts it (they accept %s), so the key "+
			"gets invalid_key there; issue it with the prefix of the routes it is for", prefix, strings.Join(reported, ", "))
	}
	return prefix, warning
}

// maxOwners bounds the owners a form offers and a check reads.
const maxOwners = 500

// Owners returns the owners of the store's keys (up to 500), for a form to
// offer: a service limited to one owner offers only that one.
func (s *Service) Owners(ctx context.Context) ([]string, error) {
	if s.owner != nil {
		return []string{*s.owner}, nil
	}
	return s.st.Owners(ctx, maxOwners)
}

// newOwner warns when a key is given an owner no other key has but one
// spelled almost the same does ("Raj" or "raaj" beside "raj"): such a typo
// hides the key from its team's console without a word. A new team's
// first key is no typo, and gets no warning.
func (s *Service) newOwner(ctx context.Context, owner string) []string {
	if owner == "" || s.owner != nil {
		return nil
	}
	owners, err := s.st.Owners(ctx, maxOwners)
	if err != nil || slices.Contains(owners, owner) {
		return nil // a hint, never a reason to fail a change
	}
	for _, o := range owners {
		if strings.EqualFold(o, owner) || oneEditApart(strings.ToLower(o), strings.ToLower(owner)) {
			return []string{fmt.Sprintf("owner %q: no other key has this owner, but %q does; owners are compared exactly, "+
				"so the people of %q do not see this key", owner, o, o)}
		}
	}
	return nil
}

// oneEditApart reports whether a and b (of 3 characters or more) differ by
// one inserted, deleted or replaced character.
func oneEditApart(a, b string) bool {
	x, y := []rune(a), []rune(b)
	if len(x) > len(y) {
		x, y = y, x
	}
	if len(x) < 3 || len(y)-len(x) > 1 {
		return false
	}
	i := 0
	for i < len(x) && x[i] == y[i] {
		i++
	}
	if len(x) == len(y) {
		return i < len(x) && string(x[i+1:]) == string(y[i+1:])
	}
	return string(x[i:]) == string(y[i+1:])
}
