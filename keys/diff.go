package keys

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// field is one setting of a key as audit events show it. Secrets (the key,
// its digest) are not settings and never appear.
type field struct {
	name  string
	value func(*store.Record) string
}

var fields = []field{
	{"name", func(r *store.Record) string { return r.Name }},
	{"owner", func(r *store.Record) string { return r.Owner }},
	{"env", func(r *store.Record) string { return r.Env }},
	{"scopes", func(r *store.Record) string { return strings.Join(r.Scopes, " ") }},
	{"rate", func(r *store.Record) string {
		if r.Rate == nil {
			return ""
		}
		return r.Rate.String()
	}},
	{"burst", func(r *store.Record) string { return count(r.Burst) }},
	{"expires", func(r *store.Record) string {
		if r.ExpiresAt == nil {
			return ""
		}
		return r.ExpiresAt.UTC().Format(time.RFC3339)
	}},
	{"allowed IPs", func(r *store.Record) string { return strings.Join(prefixStrings(r.AllowedIPs), " ") }},
	{"sender domains", func(r *store.Record) string { return strings.Join(r.SenderDomains, " ") }},
	{"quota", func(r *store.Record) string {
		if r.Quota == nil {
			return ""
		}
		return r.Quota.String()
	}},
	{"max recipients", func(r *store.Record) string { return count(r.MaxRecipients) }},
	{"on-behalf-of", func(r *store.Record) string { return flag(r.AllowOnBehalfOf, "allowed") }},
	{"disabled", func(r *store.Record) string { return flag(r.Disabled, "yes") }},
}

// Version identifies a key's settings as they are now: it changes with any
// setting, not with use or with disabling and enabling, so a form can tell
// whether the key was changed since it was read (Spec.IfVersion).
func Version(r *store.Record) string {
	h := sha256.New()
	for _, f := range fields {
		if f.name != "disabled" {
			h.Write([]byte(f.value(r)))
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func count(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func flag(b bool, yes string) string {
	if b {
		return yes
	}
	return ""
}

// none is how an unset setting reads in an event.
const none = "none"

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

// diff describes what changed from old to next, one "field: old → new" per
// changed setting, joined with "; ". It is empty when nothing changed. An
// unset setting reads "none", a flag that is off "no".
func diff(old, next *store.Record) string {
	var parts []string
	for _, f := range fields {
		if a, b := f.value(old), f.value(next); a != b {
			unset := orNone
			if f.name == "disabled" || f.name == "on-behalf-of" {
				unset = func(s string) string { return cmp.Or(s, "no") }
			}
			parts = append(parts, f.name+": "+unset(a)+" → "+unset(b))
		}
	}
	return strings.Join(parts, "; ")
}

// describe lists a new key's settings for its "issued" event, its name
// and owner too: an event is read on its own (a SIEM, the log of a key a
// restore left out), not beside the key's record.
func describe(rec *store.Record) string {
	var parts []string
	for _, f := range fields {
		if v := f.value(rec); v != "" {
			parts = append(parts, f.name+": "+v)
		}
	}
	if rec.ExpiresAt == nil {
		parts = append(parts, "expires: never")
	}
	return strings.Join(parts, "; ")
}
