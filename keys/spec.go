package keys

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// Spec is the settable part of a key, as `caddy keys issue/update` flags,
// the admin API's JSON body and the console's forms give it. On update, nil
// fields are left unchanged; an empty string clears rate, quota and expires.
//
// The list fields come in two forms: Scopes, SenderDomains and AllowedIPs
// replace the whole set; the Add… and Remove… lists change single entries.
// One field cannot take both forms in one change.
type Spec struct {
	Name    *string `json:"name,omitempty"`
	Owner   *string `json:"owner,omitempty"`
	Env     *string `json:"env,omitempty"`
	Prefix  *string `json:"prefix,omitempty"`
	Rate    *string `json:"rate,omitempty"`
	Burst   *int    `json:"burst,omitempty"`
	Expires *string `json:"expires,omitempty"`
	Quota   *string `json:"quota,omitempty"`

	Scopes              *[]string `json:"scopes,omitempty"`
	AddScopes           []string  `json:"add_scopes,omitempty"`
	RemoveScopes        []string  `json:"remove_scopes,omitempty"`
	SenderDomains       *[]string `json:"sender_domains,omitempty"`
	AddSenderDomains    []string  `json:"add_sender_domains,omitempty"`
	RemoveSenderDomains []string  `json:"remove_sender_domains,omitempty"`
	AllowedIPs          *[]string `json:"allowed_ips,omitempty"`
	AddAllowedIPs       []string  `json:"add_allowed_ips,omitempty"`
	RemoveAllowedIPs    []string  `json:"remove_allowed_ips,omitempty"`

	MaxRecipients   *int  `json:"max_recipients,omitempty"`
	AllowOnBehalfOf *bool `json:"allow_on_behalf_of,omitempty"`
	Disabled        *bool `json:"disabled,omitempty"`

	// Reason says why, for the audit events.
	Reason string `json:"reason,omitempty"`
	// Force accepts a scope that no route on this store's gateways uses
	// (otherwise refused; the CLI forces and prints a warning instead).
	Force bool `json:"force,omitempty"`
	// IfVersion, when set, applies an update only if the key's settings
	// are still those of this Version: a form read before someone else's
	// change does not undo it when saved.
	IfVersion string `json:"-"`
}

// changes reports whether the spec sets anything at all.
func (s *Spec) changes() bool {
	c := *s
	c.Reason, c.Force, c.IfVersion = "", false, ""
	return !c.equalZero()
}

func (s Spec) equalZero() bool {
	return s.Name == nil && s.Owner == nil && s.Env == nil && s.Prefix == nil && s.Rate == nil &&
		s.Burst == nil && s.Expires == nil && s.Quota == nil && s.Scopes == nil && s.AddScopes == nil &&
		s.RemoveScopes == nil && s.SenderDomains == nil && s.AddSenderDomains == nil &&
		s.RemoveSenderDomains == nil && s.AllowedIPs == nil && s.AddAllowedIPs == nil &&
		s.RemoveAllowedIPs == nil && s.MaxRecipients == nil && s.AllowOnBehalfOf == nil && s.Disabled == nil
}

// ErrChanged is returned (inside a ConflictError) by an update whose
// IfVersion is no longer the key's.
var ErrChanged = errors.New("the key's settings were changed since they were read")

// current refuses the update when rec's settings are no longer those the
// spec's IfVersion names.
func (s *Spec) current(rec *store.Record) error {
	if s.IfVersion == "" || s.IfVersion == Version(rec) {
		return nil
	}
	return &ConflictError{msg: fmt.Sprintf("key %s: %v; read it again and make the change on what it is now", rec.ID, ErrChanged), err: ErrChanged}
}

// onlyDisabled reports whether the spec only disables or enables the key.
func (s *Spec) onlyDisabled() bool {
	c := *s
	c.Reason, c.Force, c.IfVersion, c.Disabled = "", false, "", nil
	return s.Disabled != nil && c.equalZero()
}

// apply validates the spec and writes it into rec.
func (s *Spec) apply(rec *store.Record, t time.Time) error {
	// A name or owner given as the key already has it is no change, and is
	// not checked again: a form that sends every field must not be refused
	// for one kept from before a rule was added.
	if s.Name != nil && rec.Name != "" && strings.TrimSpace(*s.Name) == rec.Name {
		s.Name = nil
	}
	if s.Owner != nil && rec.Owner != "" && strings.TrimSpace(*s.Owner) == rec.Owner {
		s.Owner = nil
	}
	if s.Name != nil {
		// Runs of spaces are one: a page shows them as one, and a name is
		// typed back to confirm a revocation as it reads.
		name := strings.TrimSpace(*s.Name)
		if printable(name) { // no tab or line break, so only spaces
			name = strings.Join(strings.Fields(name), " ")
		}
		if err := noKeyIn("name", name); err != nil {
			return err
		}
		if name == "" || utf8.RuneCountInString(name) > 200 || !printable(name) {
			return invalid("name", *s.Name, "want 1-200 printable UTF-8 characters%s", notPrintable(name))
		}
		rec.Name = name
	}
	if s.Owner != nil {
		owner := strings.TrimSpace(*s.Owner)
		if err := noKeyIn("owner", owner); err != nil {
			return err
		}
		if utf8.RuneCountInString(owner) > 200 || !printable(owner) {
			return invalid("owner", *s.Owner, "want at most 200 printable UTF-8 characters%s", notPrintable(owner))
		}
		rec.Owner = owner
	}
	if s.Env != nil {
		if *s.Env != "live" && *s.Env != "test" {
			return invalid("env", *s.Env, "want live or test")
		}
		rec.Env = *s.Env
	}
	var err error
	if rec.Scopes, err = editSet("scope", rec.Scopes, s.Scopes, s.AddScopes, s.RemoveScopes, parseScope); err != nil {
		return err
	}
	if s.Rate != nil {
		rec.Rate = nil
		if *s.Rate == "" || *s.Rate == none {
			// Back to the route's rate, burst and all, unless a burst is given.
			if s.Burst == nil {
				rec.Burst = 0
			}
		} else {
			r, err := store.ParseRate(*s.Rate)
			if err != nil {
				return invalidf("rate", "%v", err)
			}
			rec.Rate = &r
		}
	}
	if s.Burst != nil {
		if *s.Burst < 0 {
			return invalidf("burst", "burst %d: want 0 (from the rate) or more", *s.Burst)
		}
		rec.Burst = *s.Burst
	}
	if s.Expires != nil {
		if rec.ExpiresAt, err = parseExpiry(*s.Expires, t); err != nil {
			return err
		}
	}
	ips, err := editSet("allowed IP", prefixStrings(rec.AllowedIPs), s.AllowedIPs, s.AddAllowedIPs, s.RemoveAllowedIPs, parseCIDR)
	if err != nil {
		return err
	}
	rec.AllowedIPs = nil
	for _, ip := range ips {
		rec.AllowedIPs = append(rec.AllowedIPs, netip.MustParsePrefix(ip))
	}
	if rec.SenderDomains, err = editSet("sender domain", rec.SenderDomains, s.SenderDomains, s.AddSenderDomains, s.RemoveSenderDomains, parseDomain); err != nil {
		return err
	}
	if len(rec.SenderDomains) == 0 {
		rec.SenderDomains = nil
	}
	if s.Quota != nil {
		rec.Quota = nil
		if *s.Quota != "" && *s.Quota != none { // "none": back to the route's quota
			q, err := store.ParseQuota(*s.Quota)
			if err != nil {
				return invalidf("quota", "%v", err)
			}
			rec.Quota = &q
		}
	}
	if s.MaxRecipients != nil {
		if *s.MaxRecipients < 0 {
			return invalidf("max recipients", "max recipients %d: want 0 (no limit) or more", *s.MaxRecipients)
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

// Entries splits a list as people type it, in a flag, a JSON string or a
// form's box: entries separated by commas or line breaks, each trimmed,
// empty ones left out. An entry may hold several values separated by
// spaces ("a.example b.example"); the service reads them as several.
func Entries(s string) []string {
	out := []string{}
	for _, e := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// NoEntries reports whether vals, a list given, holds values but no entry
// in them: only empty or blank ones ("", " , "). Such a list is refused
// wherever a key's list is given, never read as none: a script that sends
// "$CIDR" with CIDR unset would otherwise issue a key usable from any
// address, or lift an update's restriction, without a word. A list of no
// values at all ([] in JSON, the console's empty box) is a deliberate
// empty set.
func NoEntries(vals []string) bool {
	return len(vals) > 0 && !slices.ContainsFunc(vals, func(v string) bool { return len(Entries(v)) > 0 })
}

// noEntriesHint says what to give instead of a list of empty values.
func noEntriesHint(field string) string {
	switch field {
	case "allowed IP":
		return "for a key usable from any client address leave the list out, or give an empty list to lift a key's allowed IPs"
	case "sender domain":
		return "for a key that may send from any domain leave the list out, or give an empty list to lift a key's sender domains"
	}
	return "give at least one entry, or leave the list out"
}

// editSet applies a replacement (set) or single additions and removals to
// a set of canonical strings, each entry checked by parse. A value may name
// several entries (Entries: "mail.send, templates.read"). A refused entry is
// named whole, as it was typed: "not a domain", not its first word "not".
func editSet(field string, cur []string, set *[]string, add, remove []string, parse func(string) (string, error)) ([]string, error) {
	if set != nil && (add != nil || remove != nil) {
		return nil, invalidf(field, "give the whole set of %ss, or %ss to add and remove, not both", field, field)
	}
	if set != nil && NoEntries(*set) || NoEntries(add) || NoEntries(remove) {
		return nil, invalidf(field, "%ss: every value given is empty (a script's variable not set?); %s", field, noEntriesHint(field))
	}
	parseAll := func(vals []string) ([]string, error) {
		out := []string{}
		for _, v := range vals {
			for _, entry := range Entries(v) {
				for _, one := range strings.Fields(entry) {
					p, err := parse(one)
					if err != nil {
						// No value holds a space, so the whole entry is
						// refused too, by its own text.
						if _, whole := parse(entry); whole != nil {
							err = whole
						}
						return nil, err
					}
					if !slices.Contains(out, p) {
						if len(out) == MaxEntries {
							return nil, tooMany(field)
						}
						out = append(out, p)
					}
				}
			}
		}
		return out, nil
	}
	if set != nil {
		return parseAll(*set)
	}
	out := slices.Clone(cur)
	adds, err := parseAll(add)
	if err != nil {
		return nil, err
	}
	removes, err := parseAll(remove)
	if err != nil {
		return nil, err
	}
	for _, r := range removes {
		i := slices.Index(out, r)
		if i < 0 {
			return nil, invalid(field, r, "the key does not have it (it has %s)", listOrNone(out))
		}
		out = slices.Delete(out, i, i+1)
	}
	for _, a := range adds {
		if !slices.Contains(out, a) {
			if len(out) == MaxEntries {
				return nil, tooMany(field)
			}
			out = append(out, a)
		}
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// MaxEntries bounds a key's scopes, sender domains and allowed IPs, each:
// far more than a key needs, and few enough that a list pasted or sent by
// mistake (a megabyte of them) is refused at once rather than compared
// entry by entry against every other for half a minute.
const MaxEntries = 1000

func tooMany(field string) error {
	return invalidf(field, "more than %d %ss: a key holds at most %d", MaxEntries, field, MaxEntries)
}

func listOrNone(vals []string) string {
	if len(vals) == 0 {
		return "none"
	}
	return strings.Join(vals, ", ")
}

func parseScope(s string) (string, error) {
	if !ValidScopeName(s) {
		return "", invalid("scope", s, "a scope name uses a-z, 0-9, '.', '_', '-', e.g. mail.send, mail.* or *")
	}
	return s, nil
}

// parseDomain reads a sender domain; one written in Unicode (bäckerei.de)
// is kept in its ASCII form (xn--bckerei-5wa.de), as DNS and the providers
// know it, and as mailapi compares a sender's.
func parseDomain(s string) (string, error) {
	d := strings.ToLower(s)
	wild := strings.HasPrefix(d, "*.")
	if ascii, err := idna.Lookup.ToASCII(strings.TrimPrefix(d, "*.")); err == nil {
		d = ascii
		if wild {
			d = "*." + d
		}
	}
	if !validDomain(strings.TrimPrefix(d, "*.")) {
		return "", invalid("sender domain", s, "want a domain such as example.com or *.example.com")
	}
	return d, nil
}

// parseCIDR reads a CIDR or a single address, canonical. An IPv4 network
// written in IPv6's IPv4-mapped form (::ffff:10.0.0.0/104) is kept as the
// IPv4 network it is, as a single mapped address is: the gateway compares
// a client's address unmapped, so the mapped form allowed no one.
func parseCIDR(s string) (string, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked().String(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()).String(), nil
	}
	return "", invalid("allowed IP", s, "want a CIDR such as 203.0.113.0/24 or 2001:db8::/32, or one address")
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
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

// noKeyIn refuses free text (a name, an owner, a reason) that holds
// anything shaped like a key, without quoting it: it would be stored and
// printed in lists, events, logs and pages, where a key must never be.
func noKeyIn(field, s string) error {
	if verifier.HasSecret(s) {
		return invalidf(field, "%s: holds an API key (or something shaped like one), which would be stored and shown wherever the %s is; "+
			"name a key by its id (key_…)", field, field)
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters:
// names, owners and reasons are printed in tables, logs, terminals and web
// pages, where a line break, an escape sequence or a bidirectional override
// would forge or garble output.
func printable(s string) bool {
	_, bad := unprintable(s)
	return !bad
}

// unprintable returns the first character of s printable refuses.
func unprintable(s string) (rune, bool) {
	for i, r := range s {
		if r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD") {
			return r, true // not UTF-8
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) && !visibleFormat(r) {
			return r, true
		}
	}
	return 0, false
}

// visibleFormat are the format characters (Cf) a name may hold: the
// joiners emoji and some scripts need, the soft hyphen, and the tags of
// subdivision flags (🏴 and tags). The others are invisible: a right-to-left
// override shows "invoice\u202Egpj.exe" as invoiceexe.jpg and turns the page
// around it, a zero-width space makes a name no one can type to confirm a
// revocation.
func visibleFormat(r rune) bool {
	return r == '\u200c' || r == '\u200d' || r == '\u00ad' || r >= 0xE0020 && r <= 0xE007F
}

// notPrintable says which character of s printable refuses, for the
// message: "" when it refuses none, or one it cannot name.
func notPrintable(s string) string {
	r, bad := unprintable(s)
	switch {
	case !bad, r == utf8.RuneError:
		return ""
	case unicode.Is(unicode.Cf, r):
		return fmt.Sprintf(" (%U is an invisible format character)", r)
	}
	return fmt.Sprintf(" (%U is a control character)", r)
}

// FieldErrors returns what is wrong with each field of spec on its own,
// one InvalidError per field at most, so that a form can mark every field
// it must change at once: Issue and Update refuse with the first. Each of
// spec's settings (its pointer fields, found by reflection so a new one is
// not forgotten) is checked in a spec of its own; checks that need the
// key's record or the store (what a removal removes, scopes no route uses)
// are left to Issue and Update.
func FieldErrors(spec Spec, t time.Time) []*InvalidError {
	var errs []*InvalidError
	keep := func(err error) {
		var inv *InvalidError
		if errors.As(err, &inv) {
			errs = append(errs, inv)
		}
	}
	v := reflect.ValueOf(spec)
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			var one Spec
			reflect.ValueOf(&one).Elem().Field(i).Set(f)
			keep(one.apply(&store.Record{Scopes: []string{}}, t))
		}
	}
	keep(checkReason(spec.Reason))
	return errs
}
