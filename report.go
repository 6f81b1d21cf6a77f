package keygate

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/caddy-keygate/store"
)

// UsageReport is `caddy keys usage` and GET /keygate/keys/{id}/usage: the
// store's totals and hourly buckets plus the signals worth a look.
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

func usageReport(ctx context.Context, st store.Store, id string, since time.Time) (*UsageReport, error) {
	u, err := st.Usage(ctx, id, since)
	if err != nil {
		return nil, err
	}
	return &UsageReport{UsageReport: u, Signals: signals(u, now())}, nil
}

func signals(u *store.UsageReport, t time.Time) []string {
	out := []string{}
	for _, code := range []string{"revoked_key", "expired_key", "disabled_key"} {
		if n := u.Denied[code]; n > 0 {
			out = append(out, fmt.Sprintf("%s: presented %d times after it stopped being valid (a leaked key?)", code, n))
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
				out = append(out, fmt.Sprintf("new client IP %s: first seen %s, %d requests", ip.IP, ip.First.Format(time.RFC3339), ip.Requests))
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

func auditReport(ctx context.Context, st store.Store, unused, expiring string) (*AuditReport, error) {
	unusedFor, err := durationOr(unused, 30*24*time.Hour, "unused")
	if err != nil {
		return nil, err
	}
	expiringIn, err := durationOr(expiring, 14*24*time.Hour, "expiring")
	if err != nil {
		return nil, err
	}
	t := now().UTC()
	recs, err := st.ListKeys(ctx, store.ListFilter{All: true})
	if err != nil {
		return nil, err
	}
	rep := &AuditReport{GeneratedAt: t, Unused: []AuditEntry{}, Expiring: []AuditEntry{}, FullAccess: []AuditEntry{},
		NoExpiry: []AuditEntry{}, StillPresented: []AuditEntry{}}
	for _, r := range recs {
		e := AuditEntry{ID: r.ID, Name: r.Name, Owner: r.Owner, LastUsedAt: r.LastUsedAt, ExpiresAt: r.ExpiresAt}
		if r.Revoked() || r.Expired(t) {
			u, err := st.Usage(ctx, r.ID, t.Add(-7*24*time.Hour))
			if err == nil && u.Denied["revoked_key"]+u.Denied["expired_key"] > 0 {
				e.Why = fmt.Sprintf("presented %d times in 7 days after it stopped being valid", u.Denied["revoked_key"]+u.Denied["expired_key"])
				rep.StillPresented = append(rep.StillPresented, e)
			}
			continue
		}
		switch {
		case r.LastUsedAt == nil && t.Sub(r.CreatedAt) >= unusedFor:
			e.Why = "never used, issued " + relTime(t, r.CreatedAt)
			rep.Unused = append(rep.Unused, e)
		case r.LastUsedAt != nil && t.Sub(*r.LastUsedAt) >= unusedFor:
			e.Why = "last used " + relTime(t, *r.LastUsedAt)
			rep.Unused = append(rep.Unused, e)
		}
		if r.ExpiresAt != nil && r.ExpiresAt.Sub(t) <= expiringIn {
			e.Why = "expires " + relTime(t, *r.ExpiresAt)
			rep.Expiring = append(rep.Expiring, e)
		}
		for _, s := range r.Scopes {
			if s == "*" {
				e.Why = "holds * (full access)"
				rep.FullAccess = append(rep.FullAccess, e)
				break
			}
		}
		if r.ExpiresAt == nil {
			e.Why = "never expires"
			rep.NoExpiry = append(rep.NoExpiry, e)
		}
	}
	return rep, nil
}

func durationOr(s string, def time.Duration, what string) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, badInput("%s %q: want a duration such as 30d or 72h", what, s)
	}
	return d, nil
}

// relTime says "in 3 days" or "2 hours ago".
func relTime(t, at time.Time) string {
	if at.After(t) {
		return "in " + span(at.Sub(t))
	}
	return span(t.Sub(at)) + " ago"
}

func span(d time.Duration) string {
	unit := func(n int64, name string) string {
		if n == 1 {
			return "1 " + name
		}
		return fmt.Sprintf("%d %ss", n, name)
	}
	switch {
	case d >= 48*time.Hour:
		return unit(int64(d/(24*time.Hour)), "day")
	case d >= 2*time.Hour:
		return unit(int64(d/time.Hour), "hour")
	case d >= 2*time.Minute:
		return unit(int64(d/time.Minute), "minute")
	}
	return unit(int64(d/time.Second), "second")
}
