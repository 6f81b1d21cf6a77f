package keys

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// UsageReport is a key's usage: the store's totals and hourly buckets plus
// the signals worth a look.
type UsageReport struct {
	*store.UsageReport
	Signals []string `json:"signals"`
}

// Suspicious-use rules, kept simple so operators can reason about them:
//   - a revoked, expired or disabled key was presented in the period;
//   - a client IP was first seen for the key in the last 24 hours although
//     the key had been used before from other addresses;
//   - the newest hour had at least spikeMin requests and more than
//     spikeFactor times the key's median hourly volume in the period.
const (
	spikeFactor = 4
	spikeMin    = 50
)

// DefaultUsageWindow is how far back Usage looks unless told.
const DefaultUsageWindow = 7 * 24 * time.Hour

// Usage reports key id's usage over the last window (DefaultUsageWindow when
// 0), counts still in this process's memory included.
func (s *Service) Usage(ctx context.Context, id string, window time.Duration) (*UsageReport, error) {
	if window <= 0 {
		window = DefaultUsageWindow
	}
	if _, err := s.key(ctx, id); err != nil {
		return nil, err
	}
	if s.opts.BeforeUsage != nil {
		s.opts.BeforeUsage()
	}
	t := s.now()
	u, err := s.st.Usage(ctx, id, t.Add(-window))
	if err != nil {
		return nil, notFound(err, "key "+id)
	}
	return &UsageReport{UsageReport: u, Signals: signals(u, t)}, nil
}

func signals(u *store.UsageReport, t time.Time) []string {
	out := []string{}
	for _, code := range []string{"revoked_key", "expired_key", "disabled_key"} {
		if n := u.Denied[code]; n > 0 {
			out = append(out, fmt.Sprintf("%s: presented %s after it stopped being valid (a leaked key?)", code, times(n)))
		}
	}
	if len(u.TopIPs) > 1 {
		oldest := u.TopIPs[0].First
		for _, ip := range u.TopIPs {
			if ip.First.Before(oldest) {
				oldest = ip.First
			}
		}
		for _, ip := range u.TopIPs {
			if t.Sub(ip.First) < 24*time.Hour && ip.First.After(oldest) {
				out = append(out, fmt.Sprintf("new client IP %s: first seen %s, %s", ip.IP, ip.First.Format(time.RFC3339), plural(ip.Requests, "request")))
			}
		}
	}
	if n := len(u.Hours); n >= 3 {
		vols := make([]int64, 0, n-1)
		for _, h := range u.Hours[:n-1] {
			vols = append(vols, hourVolume(h))
		}
		sort.Slice(vols, func(i, j int) bool { return vols[i] < vols[j] })
		median := vols[len(vols)/2]
		last := u.Hours[n-1]
		if v := hourVolume(last); v >= spikeMin && v > spikeFactor*median {
			out = append(out, fmt.Sprintf("spike: %d requests in the hour from %s, %d× the median hour (%d)", v, last.Hour.Format(time.RFC3339), v/max(median, 1), median))
		}
	}
	return out
}

func hourVolume(h store.HourUsage) int64 {
	v := h.Allowed
	for _, n := range h.Denied {
		v += n
	}
	return v
}

// AuditReport is what an operator reviews monthly (`caddy keys audit`).
type AuditReport struct {
	GeneratedAt time.Time    `json:"generated_at"`
	Unused      []AuditEntry `json:"unused"`
	Expiring    []AuditEntry `json:"expiring"`
	FullAccess  []AuditEntry `json:"full_access"`
	NoExpiry    []AuditEntry `json:"no_expiry"`
	// StillPresented lists revoked or expired keys presented in the last
	// 7 days.
	StillPresented []AuditEntry `json:"still_presented"`
	// Totals is how many keys each list holds, by its JSON name, where
	// AuditShown cut the lists.
	Totals map[string]int `json:"-"`
}

// AuditEntry names a key and why it is listed.
type AuditEntry struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Owner      string     `json:"owner,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	Why        string     `json:"why"`
}

// Audit windows unless told otherwise.
const (
	DefaultUnused   = 30 * 24 * time.Hour
	DefaultExpiring = ExpiringWithin
)

// Audit reports the keys worth a review: unused for unusedFor, expiring
// within expiringIn (the defaults when 0), holding full access, never
// expiring, and revoked or expired keys still being presented.
func (s *Service) Audit(ctx context.Context, unusedFor, expiringIn time.Duration) (*AuditReport, error) {
	return s.audit(ctx, unusedFor, expiringIn, 0, "")
}

// AuditShown is Audit for a page that shows at most shown keys of each
// list but the one named full ("unused", "expiring", "full_access",
// "no_expiry" or "still_presented", as the report's JSON names them, or
// ""): the lists are cut there and Totals says how many keys each holds.
// A store where every key needs a look costs the page a few rows per list,
// not a record held for every key.
func (s *Service) AuditShown(ctx context.Context, unusedFor, expiringIn time.Duration, shown int, full string) (*AuditReport, error) {
	return s.audit(ctx, unusedFor, expiringIn, max(shown, 1), full)
}

// auditPage is how many keys Audit reads at a time: it walks the store in
// pages, so what it holds is one page of records and the report, never
// every key.
const auditPage = 1000

func (s *Service) audit(ctx context.Context, unusedFor, expiringIn time.Duration, shown int, full string) (*AuditReport, error) {
	if unusedFor <= 0 {
		unusedFor = DefaultUnused
	}
	if expiringIn <= 0 {
		expiringIn = DefaultExpiring
	}
	t := s.now()
	if s.opts.BeforeUsage != nil {
		s.opts.BeforeUsage()
	}
	rep := &AuditReport{GeneratedAt: t, Unused: []AuditEntry{}, Expiring: []AuditEntry{}, FullAccess: []AuditEntry{},
		NoExpiry: []AuditEntry{}, StillPresented: []AuditEntry{}, Totals: map[string]int{}}
	add := func(list *[]AuditEntry, name string, e AuditEntry) {
		rep.Totals[name]++
		if shown == 0 || name == full || len(*list) < shown {
			*list = append(*list, e)
		}
	}
	f := store.ListFilter{All: true, Now: t, Limit: auditPage}
	if s.owner != nil {
		f.Owner = *s.owner
	}
	for {
		recs, err := s.st.ListKeys(ctx, f)
		if err != nil {
			return nil, err
		}
		// One query per page for its stopped keys' recent refusals,
		// however many.
		var stopped []string
		for _, r := range recs {
			if r.Revoked() || r.Expired(t) {
				stopped = append(stopped, r.ID)
			}
		}
		recent, err := s.st.Activity(ctx, stopped, t.Add(-7*24*time.Hour))
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			e := AuditEntry{ID: r.ID, Name: r.Name, Owner: r.Owner, LastUsedAt: r.LastUsedAt, ExpiresAt: r.ExpiresAt}
			if r.Revoked() || r.Expired(t) {
				var n int64
				for _, h := range recent[r.ID] {
					n += h.Denied["revoked_key"] + h.Denied["expired_key"]
				}
				if n > 0 {
					e.Why = fmt.Sprintf("presented %s in 7 days after it stopped being valid", times(n))
					add(&rep.StillPresented, "still_presented", e)
				}
				continue
			}
			switch {
			case r.LastUsedAt == nil && t.Sub(r.CreatedAt) >= unusedFor:
				e.Why = "never used, issued " + Relative(t, r.CreatedAt)
				add(&rep.Unused, "unused", e)
			case r.LastUsedAt != nil && t.Sub(*r.LastUsedAt) >= unusedFor:
				e.Why = "last used " + Relative(t, *r.LastUsedAt)
				add(&rep.Unused, "unused", e)
			}
			// An old key in a rotation's grace period stops on purpose: its
			// new key is what needs watching.
			if r.ExpiresAt != nil && r.ExpiresAt.Sub(t) <= expiringIn && r.RotatedTo == "" {
				e.Why = "expires " + Relative(t, *r.ExpiresAt)
				add(&rep.Expiring, "expiring", e)
			}
			for _, s := range r.Scopes {
				if s == "*" {
					e.Why = "holds * (full access)"
					add(&rep.FullAccess, "full_access", e)
					break
				}
			}
			if r.ExpiresAt == nil {
				e.Why = "never expires"
				add(&rep.NoExpiry, "no_expiry", e)
			}
		}
		if len(recs) < f.Limit {
			return rep, nil
		}
		f.After = recs[len(recs)-1].ID
	}
}

// ParseWindow reads a positive duration given for the option named what
// ("since", "unused", …), days included; "" is 0 (the operation's default).
func ParseWindow(what, s string) (time.Duration, error) {
	return parseWindow(what, s, 0)
}

// Relative says when at is, seen from t: "in 3 days" or "2 hours ago".
func Relative(t, at time.Time) string {
	if at.After(t) {
		return "in " + span(at.Sub(t))
	}
	return span(t.Sub(at)) + " ago"
}

// span writes a duration in its largest unit, rounded to the nearest: a key
// issued a moment ago with --expires 90d expires "in 90 days", not 89, and
// a rotation's --grace 3s ends "in 3 seconds", not 2.
func span(d time.Duration) string {
	round := func(unit time.Duration) int64 { return int64((d + unit/2) / unit) }
	switch {
	case d >= 2*365*24*time.Hour: // "in 73 years", not "in 26693 days"
		return plural(round(365*24*time.Hour), "year")
	case d >= 48*time.Hour:
		return plural(round(24*time.Hour), "day")
	case d >= 2*time.Hour:
		return plural(round(time.Hour), "hour")
	case d >= 2*time.Minute:
		return plural(round(time.Minute), "minute")
	}
	return plural(round(time.Second), "second")
}

// plural writes a count of a thing: "1 day", "3 days".
func plural(n int64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// times writes how often: "once", "twice", "5 times".
func times(n int64) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return fmt.Sprintf("%d times", n)
}
