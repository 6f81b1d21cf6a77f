package keys

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// ParseDuration reads a duration as time.ParseDuration does, with days as
// well: "90d", "1d12h", "36h", "30m".
func ParseDuration(s string) (time.Duration, error) {
	var total time.Duration
	rest := s
	for {
		i := strings.IndexByte(rest, 'd')
		if i < 0 {
			break
		}
		// The number before "d" starts after the previous unit.
		j := i
		for j > 0 && (rest[j-1] >= '0' && rest[j-1] <= '9' || rest[j-1] == '.') {
			j--
		}
		if j == i {
			return 0, errors.New("invalid duration " + strconv.Quote(s))
		}
		days, err := strconv.ParseFloat(rest[j:i], 64)
		if err != nil || days > 1e5 {
			return 0, errors.New("invalid duration " + strconv.Quote(s))
		}
		total += time.Duration(days * float64(24*time.Hour))
		rest = rest[:j] + rest[i+1:]
	}
	if rest == "" || rest == "-" || rest == "+" {
		if s == "" {
			return 0, errors.New("empty duration")
		}
		if rest == "-" {
			total = -total
		}
		return total, nil
	}
	d, err := time.ParseDuration(rest)
	if err != nil {
		return 0, errors.New("invalid duration " + strconv.Quote(s))
	}
	if strings.HasPrefix(rest, "-") {
		return d - total, nil
	}
	return d + total, nil
}

// parseExpiry reads an expiry: a duration from t ("90d", "12h") or an RFC
// 3339 time in the future. "" and "never" mean no expiry. "0" is refused:
// read as "none" it widened a key its writer meant to end now.
func parseExpiry(s string, t time.Time) (*time.Time, error) {
	switch s {
	case "", "never":
		return nil, nil
	case "0":
		return nil, invalid("expires", s, `say "never" for no expiry; to stop a key now, revoke or disable it`)
	}
	if at, err := time.Parse(time.RFC3339, s); err == nil {
		if !at.After(t) {
			return nil, invalid("expires", s, "not in the future (to stop a key now, revoke or disable it)")
		}
		at = at.UTC()
		return &at, nil
	}
	d, err := ParseDuration(s)
	if err != nil || d <= 0 {
		return nil, invalid("expires", s, "want a duration such as 90d or 12h, or an RFC 3339 time such as 2027-01-31T00:00:00Z")
	}
	at := t.Add(d).UTC()
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
