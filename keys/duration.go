package keys

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// ParseDuration reads a duration as time.ParseDuration does, with days as
// well: "90d", "1d12h", "36h", "30m", "-2d". A sign comes first or not at
// all ("1d-1h" is refused, not read as -25h), and a sum too long for a
// time.Duration is refused, not wrapped around ("100000d100000d" was
// negative, one more 100000d positive again).
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty duration")
	}
	bad := errors.New("invalid duration " + strconv.Quote(s))
	rest, neg := s, false
	if rest[0] == '-' || rest[0] == '+' {
		rest, neg = rest[1:], rest[0] == '-'
	}
	if rest == "0" {
		return 0, nil
	}
	if rest == "" {
		return 0, bad
	}
	var total time.Duration
	for rest != "" {
		// One number and its unit: time.ParseDuration reads it, but days.
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		j := i
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		var d time.Duration
		if unit == "d" {
			days, err := strconv.ParseFloat(num, 64)
			if err != nil || days > 1e5 {
				return 0, bad
			}
			d = time.Duration(days * float64(24*time.Hour))
		} else {
			var err error
			if d, err = time.ParseDuration(num + unit); err != nil || unit == "" {
				return 0, bad
			}
		}
		if total > math.MaxInt64-d {
			return 0, bad
		}
		total += d
	}
	if neg {
		total = -total
	}
	return total, nil
}

// parseExpiry reads an expiry: a duration from t ("90d", "12h"), an RFC
// 3339 time in the future (its T and Z in either case, as RFC 3339 allows),
// or a date alone, which is the start of that day in UTC, as the console's
// date field and the quotas' days read it. "" and "never" mean no expiry.
// "0" is refused: read as "none" it widened a key its writer meant to end
// now.
func parseExpiry(s string, t time.Time) (*time.Time, error) {
	switch s {
	case "", "never":
		return nil, nil
	case "0":
		return nil, invalid("expires", s, `say "never" for no expiry; to stop a key now, revoke or disable it`)
	}
	if at, err := time.Parse(time.RFC3339, strings.ToUpper(s)); err == nil {
		if !at.After(t) {
			return nil, invalid("expires", s, "not in the future (to stop a key now, revoke or disable it)")
		}
		return inStore(s, at.UTC())
	}
	if day, err := time.Parse(time.DateOnly, s); err == nil {
		if !day.After(t) {
			return nil, invalid("expires", s, "not in the future: a date alone is the start of that day, UTC (to stop a key now, revoke or disable it)")
		}
		return inStore(s, day)
	}
	d, err := ParseDuration(s)
	if err != nil || d <= 0 {
		return nil, invalid("expires", s, "want a duration such as 90d or 12h, a date such as 2027-01-31 (the start of that day, UTC), "+
			"or an RFC 3339 time such as 2027-01-31T00:00:00Z or 2027-01-31T09:00:00+01:00")
	}
	return inStore(s, t.Add(d).UTC())
}

// inStore returns the expiry at, or an error saying the store cannot keep a
// time that late (it failed the write instead, a 500 in the admin API).
func inStore(s string, at time.Time) (*time.Time, error) {
	if at.After(store.MaxTime) {
		return nil, invalid("expires", s, "later than the store can keep (%d); say \"never\" for no expiry", store.MaxTime.Year())
	}
	return &at, nil
}

// ParseGrace reads how long a rotated key keeps working: a duration, "0"
// (it stops at once), or "" for the default of 24 hours.
func ParseGrace(s string) (time.Duration, error) {
	switch s {
	case "":
		return 24 * time.Hour, nil
	case "0":
		return 0, nil
	}
	d, err := ParseDuration(s)
	if err != nil || d < 0 {
		return 0, invalid("grace", s, "want a duration such as 24h, 7d or 0")
	}
	return d, nil
}

// parseWindow reads a positive duration for the option named what, or def
// when s is empty.
func parseWindow(what, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, invalid(what, s, "want a duration such as 7d or 24h")
	}
	return d, nil
}
