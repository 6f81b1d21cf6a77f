package console

import (
	"net/url"
	"slices"
	"strings"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// The create and edit forms offer scopes by resource, the part of a scope's
// name before the first dot, as SendGrid and Stripe dashboards do: a
// resource whose routes use both <res>.read and <res>.write is one row of
// radio buttons (None / Read / Read and write, the last granting both
// scopes), every other scope a checkbox under its resource's heading. The
// form only chooses scope names: what they grant is the keys package's
// (keys.Covers), as for the CLI and the admin API.

// scopeGroup is the scopes of one resource ("mail", "templates"): an access
// row when the resource has both a read and a write scope, and checkboxes
// for the others.
type scopeGroup struct {
	Name   string
	Access *accessRow
	Scopes []scopeChoice
}

// scopeChoice is one scope checkbox: the scope, the routes that require
// it (for a wildcard, the routes it covers), and whether it is checked.
type scopeChoice struct {
	Scope   string
	Routes  []string
	Checked bool
}

// Hint says what a checkbox's scope opens: its routes, for a wildcard the
// routes it covers.
func (c scopeChoice) Hint() string {
	routes := strings.Join(c.Routes, ", ")
	if strings.HasSuffix(c.Scope, ".*") { // as keys.Covers reads it
		every := strings.TrimSuffix(c.Scope, "*")
		if routes == "" {
			return "every " + every + " scope; no route requires one today"
		}
		return "every " + every + " scope: " + routes
	}
	if routes == "" {
		return "no route requires it today"
	}
	return routes
}

// The levels of an access row, as its radio buttons send them.
const (
	levelNone      = "none"
	levelRead      = "read"
	levelReadWrite = "read-write"
	// levelWrite is <res>.write without <res>.read: never offered, but a
	// key set so elsewhere (the CLI, the admin API) is shown as it is, and
	// kept so when its form is saved.
	levelWrite = "write"
)

// accessRow is the radio row of a resource with a read and a write scope.
type accessRow struct {
	Resource    string
	Read, Write scopeChoice
	Level       string
}

// Name is the name of the row's radio buttons.
func (a *accessRow) Name() string { return "access." + a.Resource }

// Field is the id of the row's first radio button, where its error links.
func (a *accessRow) Field() string { return "access-" + a.Resource }

// WriteOnly reports whether the row shows the "Write only" choice: only
// for a key that holds the write scope without the read one.
func (a *accessRow) WriteOnly() bool { return a.Level == levelWrite }

// Both is the routes of the read and the write scope, which "Read and
// write" opens.
func (a *accessRow) Both() []string {
	both := slices.Clone(a.Read.Routes)
	for _, r := range a.Write.Routes {
		if !slices.Contains(both, r) {
			both = append(both, r)
		}
	}
	return both
}

// scopes are the scope names the row's level grants.
func (a *accessRow) scopes() []string {
	switch a.Level {
	case levelRead:
		return []string{a.Read.Scope}
	case levelReadWrite:
		return []string{a.Read.Scope, a.Write.Scope}
	case levelWrite:
		return []string{a.Write.Scope}
	}
	return nil
}

// levelOf is the level of a row for the scopes held.
func levelOf(read, write bool) string {
	switch {
	case read && write:
		return levelReadWrite
	case read:
		return levelRead
	case write:
		return levelWrite
	}
	return levelNone
}

// resourceOf is the part of a scope's name before the first dot.
func resourceOf(scope string) string {
	res, _, _ := strings.Cut(scope, ".")
	return res
}

// scopeGroups offers the scopes routes use, grouped by resource in the
// order of the routes' scope lines, plus any the key holds that no route
// uses (so editing keeps them), each under its resource, plus full access
// last. held is what the key holds, or what the form sent.
func scopeGroups(lines []store.RouteScope, held []string) []scopeGroup {
	var groups []scopeGroup
	index := map[string]int{}
	group := func(name string) *scopeGroup {
		gi, ok := index[name]
		if !ok {
			gi = len(groups)
			index[name] = gi
			groups = append(groups, scopeGroup{Name: name})
		}
		return &groups[gi]
	}
	add := func(scope, route string) {
		g := group(resourceOf(scope))
		for i := range g.Scopes {
			if g.Scopes[i].Scope == scope {
				if route != "" && !slices.Contains(g.Scopes[i].Routes, route) {
					g.Scopes[i].Routes = append(g.Scopes[i].Routes, route)
				}
				return
			}
		}
		ch := scopeChoice{Scope: scope, Checked: slices.Contains(held, scope)}
		if route != "" {
			ch.Routes = []string{route}
		}
		g.Scopes = append(g.Scopes, ch)
	}
	for _, l := range lines {
		if l.Scope != "*" {
			add(l.Scope, strings.TrimSpace(l.Method+" "+l.Path))
		}
	}
	// A resource whose routes use both <res>.read and <res>.write becomes
	// a row; its other scopes stay checkboxes. A resource with '*' in its
	// name (a wildcard's) stays checkboxes.
	for gi := range groups {
		g := &groups[gi]
		if strings.Contains(g.Name, "*") {
			continue
		}
		r := slices.IndexFunc(g.Scopes, func(c scopeChoice) bool { return c.Scope == g.Name+".read" })
		w := slices.IndexFunc(g.Scopes, func(c scopeChoice) bool { return c.Scope == g.Name+".write" })
		if r < 0 || w < 0 {
			continue
		}
		row := &accessRow{Resource: g.Name, Read: g.Scopes[r], Write: g.Scopes[w]}
		row.Level = levelOf(row.Read.Checked, row.Write.Checked)
		g.Access = row
		g.Scopes = slices.DeleteFunc(g.Scopes, func(c scopeChoice) bool { return c.Scope == row.Read.Scope || c.Scope == row.Write.Scope })
	}
	for _, s := range held {
		if s == "*" || offered(groups, s) {
			continue
		}
		// A scope no route uses, or a wildcard (templates.*): the routes
		// it opens, if any.
		add(s, "")
		for _, l := range lines {
			if l.Scope != "*" && keys.Covers([]string{s}, l.Scope) {
				add(s, strings.TrimSpace(l.Method+" "+l.Path))
			}
		}
	}
	groups = append(groups, scopeGroup{Name: "full access", Scopes: []scopeChoice{{
		Scope: "*", Routes: []string{"every route, now and later"}, Checked: slices.Contains(held, "*")}}})
	return groups
}

// offered reports whether the groups offer scope, as a checkbox or in a row.
func offered(groups []scopeGroup, scope string) bool {
	for _, g := range groups {
		if g.Access != nil && (g.Access.Read.Scope == scope || g.Access.Write.Scope == scope) {
			return true
		}
		for _, s := range g.Scopes {
			if s.Scope == scope {
				return true
			}
		}
	}
	return false
}

// chosenScopes reads the scopes a submitted form chose, in the page's
// order: the level of each access row the routes make (name
// "access.<resource>") and the checkboxes (name "scope"). A level the row
// does not know, or a row sent twice, is the row's error; a row not sent
// chooses nothing (a page from before rows sent its scopes as checkboxes,
// which still count).
func chosenScopes(pf url.Values, lines []store.RouteScope) ([]string, formErrs) {
	var chosen []string
	choose := func(s string) {
		if !slices.Contains(chosen, s) {
			chosen = append(chosen, s)
		}
	}
	var errs formErrs
	for _, g := range scopeGroups(lines, nil) {
		if row := g.Access; row != nil {
			vals := pf[row.Name()]
			switch {
			case len(vals) == 0:
			case len(vals) > 1 || !slices.Contains([]string{levelNone, levelRead, levelReadWrite, levelWrite}, vals[0]):
				errs.add(formErr{row.Field(), "Choose None, Read or Read and write for " + row.Resource + "."})
			default:
				row.Level = vals[0]
				for _, s := range row.scopes() {
					choose(s)
				}
			}
		}
		for _, c := range g.Scopes {
			if slices.Contains(pf["scope"], c.Scope) {
				choose(c.Scope)
			}
		}
	}
	for _, s := range pf["scope"] { // a scope the key holds that no route uses, or an old page's
		choose(s)
	}
	return chosen, errs
}

// inHeldOrder orders chosen as held has its scopes, the new ones after
// them in the order chosen: a key's form saved as it was keeps the key's
// scopes as they were, to the byte, whatever order the page shows them in.
func inHeldOrder(held, chosen []string) []string {
	out := make([]string, 0, len(chosen))
	for _, s := range held {
		if slices.Contains(chosen, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, s := range chosen {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
