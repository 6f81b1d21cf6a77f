package console

import (
	"cmp"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// settingsForm is the form that creates a key or edits its settings, as
// shown and as submitted.
type settingsForm struct {
	Edit          bool // editing an existing key (no env; expiry may be kept)
	Name          string
	Owner         string
	OwnerFixed    bool // the person may not choose the owner
	Env           string
	Groups        []scopeGroup
	ExtraScopes   string
	Force         bool
	OfferForce    bool // a scope no route uses was refused; offer to force it
	Expires       string
	ExpiresDate   string
	CurrentExpiry timeView
	SenderDomains string
	AllowedIPs    string
	RateN         string
	RateUnit      string
	Burst         string
	QuotaN        string
	QuotaUnit     string
	MaxRecipients string
	Reason        string
	// Was is the key as it is, for an edit: a name or owner sent as it
	// is is no change, and is not checked again.
	Was *store.Record
	// Owners are the owners of the store's keys, offered to an admin
	// choosing one (a typo would hide a key from its team).
	Owners []string
	// Version is the key's settings as the edit form was filled from
	// them (keys.Version): saving refuses when they have changed since.
	Version string
	// Limits is open when any optional limit is set, so a person sees
	// what is set without hunting for it.
	Limits bool
	// Errs is what the submitted form got wrong, every field at once.
	Errs formErrs
	// scopeErrs is what reading the scope rows found wrong (readForm),
	// said with the rest by spec.
	scopeErrs formErrs
}

// formErr is what a submitted form got wrong: the field (an input id) and
// the message.
type formErr struct {
	Field, Message string
}

func (e *formErr) Error() string { return e.Message }

// formErrs is all a form got wrong, at most one message a field.
type formErrs []formErr

func (e formErrs) Error() string {
	msgs := make([]string, len(e))
	for i, fe := range e {
		msgs[i] = fe.Message
	}
	return strings.Join(msgs, "; ")
}

// add keeps fe unless its field has a message already.
func (e *formErrs) add(fe formErr) {
	if fe.Field == "" || !slices.ContainsFunc(*e, func(o formErr) bool { return o.Field == fe.Field }) {
		*e = append(*e, fe)
	}
}

// E is the error of one field (an empty one if none), for the template:
// the field's message and what marks the field invalid.
func (f *settingsForm) E(field string) formErr {
	for _, fe := range f.Errs {
		if fe.Field == field {
			return fe
		}
	}
	return formErr{}
}

// fieldIDs maps the service's field names to the form's input ids.
var fieldIDs = map[string]string{
	"name": "name", "owner": "owner", "env": "env", "scope": "extra-scopes", "expires": "expires-date",
	"rate": "rate-n", "burst": "burst", "allowed IP": "allowed-ips", "sender domain": "sender-domains",
	"quota": "quota-n", "max recipients": "max-recipients", "reason": "reason", "grace": "grace",
	"key": "leaked-key",
}

// asFormErrs is asFormErr for a form that reports every field at once.
func asFormErrs(err error) formErrs {
	var errs formErrs
	if errors.As(err, &errs) {
		return errs
	}
	if fe := asFormErr(err); fe != nil {
		return formErrs{*fe}
	}
	return nil
}

// asFormErr turns an error about input into a formErr, or returns nil for
// any other error.
func asFormErr(err error) *formErr {
	var fe *formErr
	if errors.As(err, &fe) {
		return fe
	}
	var inv *keys.InvalidError
	if errors.As(err, &inv) {
		return &formErr{Field: fieldIDs[inv.Field], Message: inv.Error()}
	}
	var conf *keys.ConflictError
	if errors.As(err, &conf) {
		return &formErr{Message: conf.Error()}
	}
	return nil
}

// expiryPresets are the expiry choices; the default is 90 days, never
// "never".
var expiryPresets = []option{
	{"30d", "30 days"},
	{"90d", "90 days"},
	{"365d", "1 year"},
	{"date", "On a date"},
	{"never", "Never (not recommended)"},
}

// formFor fills the form from a key's record, for editing.
func formFor(rec *store.Record, lines []store.RouteScope, v *view) settingsForm {
	f := settingsForm{
		Edit: true, Name: rec.Name, Owner: rec.Owner, Env: rec.Env,
		Groups: scopeGroups(lines, rec.Scopes), Expires: "keep", CurrentExpiry: v.When(rec.ExpiresAt),
		SenderDomains: strings.Join(rec.SenderDomains, "\n"), RateUnit: "m", QuotaUnit: "d",
		Version: keys.Version(rec),
	}
	var ips []string
	for _, p := range rec.AllowedIPs {
		ips = append(ips, p.String())
	}
	f.AllowedIPs = strings.Join(ips, "\n")
	if rec.Rate != nil {
		n, unit, _ := strings.Cut(rec.Rate.String(), "/")
		f.RateN, f.RateUnit = n, unit
	}
	if rec.Burst > 0 {
		f.Burst = strconv.Itoa(rec.Burst)
	}
	if rec.Quota != nil {
		f.QuotaN, f.QuotaUnit = strconv.FormatInt(rec.Quota.N, 10), string(rec.Quota.Per)
	}
	if rec.MaxRecipients > 0 {
		f.MaxRecipients = strconv.Itoa(rec.MaxRecipients)
	}
	f.Limits = f.SenderDomains != "" || f.AllowedIPs != "" || f.RateN != "" || f.QuotaN != "" || f.MaxRecipients != ""
	return f
}

// newForm is the empty create form: a live key expiring in 90 days.
func newForm(lines []store.RouteScope, owner string, fixed bool) settingsForm {
	return settingsForm{Owner: owner, OwnerFixed: fixed, Env: "live", Groups: scopeGroups(lines, nil),
		Expires: "90d", RateUnit: "m", QuotaUnit: "d"}
}

// shownAgain is a submitted field's text as a refused form shows it again:
// left out when it holds anything shaped like a key, which no page shows
// (the service refuses such text without quoting it; a reason naming the
// key that leaked, a name pasted from the wrong clipboard).
func shownAgain(s string) string {
	if verifier.HasSecret(s) {
		return ""
	}
	return s
}

// shownAgain leaves out of a refused form each text that holds a key
// (shownAgain); the rest is shown as the person left it.
func (f *settingsForm) shownAgain() {
	for _, s := range []*string{&f.Name, &f.Owner, &f.ExtraScopes, &f.Expires, &f.ExpiresDate, &f.SenderDomains,
		&f.AllowedIPs, &f.RateN, &f.Burst, &f.QuotaN, &f.MaxRecipients, &f.Reason} {
		*s = shownAgain(*s)
	}
	// A ticked scope is any value the request sent (a page's form edited,
	// a crafted request): one that holds a key is not a box shown again.
	groups := f.Groups[:0]
	for _, g := range f.Groups {
		g.Scopes = slices.DeleteFunc(g.Scopes, func(c scopeChoice) bool { return shownAgain(c.Scope) == "" })
		if shownAgain(g.Name) != "" && (g.Access != nil || len(g.Scopes) > 0) {
			groups = append(groups, g)
		}
	}
	f.Groups = groups
}

// readForm reads a submitted settings form back into what it shows, so a
// refused form is shown again as the person left it.
func readForm(pf url.Values, lines []store.RouteScope, edit bool) settingsForm {
	f := settingsForm{
		Edit: edit, Name: pf.Get("name"), Owner: pf.Get("owner"), Env: pf.Get("env"),
		ExtraScopes: pf.Get("extra_scopes"), Force: pf.Get("force") != "",
		Expires: pf.Get("expires"), ExpiresDate: pf.Get("expires_date"),
		SenderDomains: pf.Get("sender_domains"), AllowedIPs: pf.Get("allowed_ips"),
		RateN: strings.TrimSpace(pf.Get("rate_n")), RateUnit: pf.Get("rate_unit"), Burst: strings.TrimSpace(pf.Get("burst")),
		QuotaN: strings.TrimSpace(pf.Get("quota_n")), QuotaUnit: pf.Get("quota_unit"),
		MaxRecipients: strings.TrimSpace(pf.Get("max_recipients")), Reason: pf.Get("reason"),
		Version: pf.Get("version"),
	}
	var chosen []string
	chosen, f.scopeErrs = chosenScopes(pf, lines)
	f.Groups = scopeGroups(lines, chosen)
	f.Limits = f.SenderDomains != "" || f.AllowedIPs != "" || f.RateN != "" || f.QuotaN != "" || f.MaxRecipients != "" || f.Burst != ""
	return f
}

// limitFields are the fields inside the form's "Limits" section.
var limitFields = map[string]bool{"sender-domains": true, "allowed-ips": true, "rate-n": true, "rate-unit": true,
	"burst": true, "quota-n": true, "quota-unit": true, "max-recipients": true}

// LimitsOpen reports whether the "Limits" section starts open: when a limit
// is set, or the form's error is about one (an error elsewhere leaves it
// as it was).
func (f *settingsForm) LimitsOpen() bool {
	return f.Limits || slices.ContainsFunc(f.Errs, func(e formErr) bool { return limitFields[e.Field] })
}

// spec turns the form into the service's Spec. On edit every setting is
// given, so the service records exactly what changed; on create only
// what is set, so the routes' defaults apply to the rest.
func (f *settingsForm) spec(admin bool) (keys.Spec, error) {
	var s keys.Spec
	var errs formErrs
	fail := func(field, msg string) { errs.add(formErr{field, msg}) }
	switch name := f.Name; {
	case strings.TrimSpace(name) == "":
		fail("name", "Give the key a name: what will use it, e.g. crm-sync.")
	case f.Was == nil || strings.TrimSpace(name) != f.Was.Name:
		s.Name = &name
	}
	if owner := f.Owner; admin && (f.Was == nil || strings.TrimSpace(owner) != f.Was.Owner) {
		s.Owner = &owner
	}
	if !f.Edit {
		env := f.Env
		if env == "" {
			env = "live"
		}
		s.Env = &env
	}
	scopes := []string{}
	for _, g := range f.Groups {
		if g.Access != nil {
			scopes = append(scopes, g.Access.scopes()...)
		}
		for _, sc := range g.Scopes {
			if sc.Checked {
				scopes = append(scopes, sc.Scope)
			}
		}
	}
	scopes = append(scopes, keys.Entries(f.ExtraScopes)...)
	if f.Was != nil {
		scopes = inHeldOrder(f.Was.Scopes, scopes)
	}
	for _, e := range f.scopeErrs {
		errs.add(e)
	}
	switch {
	case len(f.scopeErrs) > 0: // the row's message says what to choose
	case len(scopes) == 0:
		fail("scopes", "Choose at least one thing the key may do (full access is the last choice).")
	default:
		s.Scopes = &scopes
	}
	s.Force = f.Force
	if f.Edit {
		// Every setting is given: without the check, a form read before
		// someone else's change would undo it.
		s.IfVersion = cmp.Or(f.Version, "none") // a page from before versions: refused (key.go)
	}
	if e, msg := f.expiry(); msg != "" {
		fail("expires-date", msg)
	} else {
		s.Expires = e
	}
	// Split where the service splits (keys.Entries), so a refused entry is
	// named whole: "not a domain", not "not".
	domains, ips := keys.Entries(f.SenderDomains), keys.Entries(f.AllowedIPs)
	if f.Edit || len(domains) > 0 {
		s.SenderDomains = &domains
	}
	if f.Edit || len(ips) > 0 {
		s.AllowedIPs = &ips
	}
	rate, rateErr := perUnit(f.RateN, f.RateUnit, "rate-n", "requests", f.Edit)
	s.Rate = keep(&errs, rate, rateErr)
	quota, quotaErr := perUnit(f.QuotaN, f.QuotaUnit, "quota-n", "recipients", f.Edit)
	s.Quota = keep(&errs, quota, quotaErr)
	burst, burstErr := wholeNumber(f.Burst, "burst", "The burst", f.Edit)
	s.Burst = keep(&errs, burst, burstErr)
	most, mostErr := wholeNumber(f.MaxRecipients, "max-recipients", "The most recipients per message", f.Edit)
	s.MaxRecipients = keep(&errs, most, mostErr)
	s.Reason = strings.TrimSpace(f.Reason)
	// What the service finds wrong with the other fields, each on its own,
	// is said at the same time (the fields above are left out of s).
	for _, inv := range keys.FieldErrors(s, time.Now()) {
		errs.add(formErr{fieldIDs[inv.Field], inv.Error()})
	}
	if len(errs) > 0 {
		errs.sort()
		return s, errs
	}
	return s, nil
}

// sort puts the errors in the order the page shows the fields.
func (e formErrs) sort() {
	slices.SortStableFunc(e, func(a, b formErr) int {
		return cmp.Compare(pagePlace(a.Field), pagePlace(b.Field))
	})
}

// pagePlace is where a field is in pageOrder; a scope row's is in
// "scopes".
func pagePlace(field string) int {
	if strings.HasPrefix(field, "access-") {
		field = "scopes"
	}
	return slices.Index(pageOrder, field)
}

// pageOrder is the order of the settings form's fields on the page.
var pageOrder = []string{"name", "owner", "scopes", "extra-scopes", "expires-date", "sender-domains", "allowed-ips",
	"rate-n", "burst", "quota-n", "max-recipients", "reason"}

// keep passes on a value read from the form or, when reading it failed,
// keeps the error in errs and passes on nil.
func keep[T any](errs *formErrs, v *T, err *formErr) *T {
	if err != nil {
		errs.add(*err)
		return nil
	}
	return v
}

// expiry reads the expiry choice, or says what is wrong with it.
func (f *settingsForm) expiry() (*string, string) {
	if strings.TrimSpace(f.ExpiresDate) != "" && f.Expires != "date" {
		// A date typed beside another choice would be dropped silently,
		// and the key would live longer than meant.
		return nil, "You entered a date but chose another expiry: choose “On a date” to use the date, or clear it."
	}
	switch f.Expires {
	case "keep":
		if !f.Edit {
			return nil, "Choose when the key expires."
		}
		return nil, ""
	case "date":
		d, err := time.Parse("2006-01-02", strings.TrimSpace(f.ExpiresDate))
		if err != nil {
			return nil, "Choose the date the key expires (year, month and day)."
		}
		if !d.After(time.Now()) {
			return nil, "Choose a date in the future: the key stops at the start of that day (UTC)."
		}
		at := d.UTC().Format(time.RFC3339)
		return &at, ""
	case "30d", "90d", "365d", "never":
		e := f.Expires
		return &e, ""
	}
	return nil, "Choose when the key expires."
}

// perUnit reads "N" and a unit into "N/unit"; empty is "" (clear) when
// editing and nil (the route's default) when creating.
func perUnit(n, unit, field, what string, edit bool) (*string, *formErr) {
	if n == "" {
		if edit {
			empty := ""
			return &empty, nil
		}
		return nil, nil
	}
	if v, err := strconv.ParseInt(n, 10, 64); errors.Is(err, strconv.ErrRange) {
		return nil, &formErr{field, "The number of " + what + " is too large."}
	} else if err != nil || v < 1 {
		return nil, &formErr{field, "The number of " + what + " must be a whole number of at least 1, or empty for the route's default."}
	}
	s := n + "/" + unit
	return &s, nil
}

// wholeNumber reads an optional count; empty is 0 (none) when editing and
// nil when creating.
func wholeNumber(v, field, what string, edit bool) (*int, *formErr) {
	if v == "" {
		if edit {
			zero := 0
			return &zero, nil
		}
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if errors.Is(err, strconv.ErrRange) {
		return nil, &formErr{field, what + " is too large."}
	}
	if err != nil || n < 0 {
		return nil, &formErr{field, what + " must be a whole number (0 or empty for none)."}
	}
	return &n, nil
}

// offerOwners fills the form's owner suggestions for an admin.
func (c *call) offerOwners(f *settingsForm) {
	if !c.user.Admin {
		return
	}
	f.Owners, _ = c.keys.Owners(c.r.Context()) // suggestions only: none if the store does not answer
}
