// Package store keeps keygate's key records, usage counters and audit events.
//
// It holds only SHA-256 digests of keys, never a key. Two implementations
// share one interface: the embedded SQLite store (one machine) and the
// PostgreSQL store (a cluster). Both record every change to a key in a
// monotonic change log so a running gateway can invalidate its cache within a
// second of a change made by another process (see Changes).
//
// The package imports nothing from Caddy.
package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// ErrNotFound is returned when no key matches an id or a digest.
var ErrNotFound = errors.New("key not found")

// Digest is the SHA-256 digest of a key's full text. It is what the store
// indexes and what the gateway's cache is keyed by.
type Digest [32]byte

// Record is everything keygate knows about one key, except the key itself.
type Record struct {
	ID     string `json:"id"`
	Digest Digest `json:"-"`
	// Hint shows the key's prefix and env and at most 8 characters of its
	// secret part, e.g. "kg_live_Ab12…", so operators can tell keys apart.
	Hint  string `json:"hint"`
	Name  string `json:"name"`
	Owner string `json:"owner,omitempty"`
	// Env is "live" or "test".
	Env    string   `json:"env"`
	Scopes []string `json:"scopes"`
	// Rate overrides the route's default request rate when set.
	Rate *Rate `json:"rate,omitempty"`
	// Burst overrides the bucket size; 0 means "derive from the rate".
	Burst int `json:"burst,omitempty"`
	// AllowedIPs restricts client addresses; empty means any.
	AllowedIPs []netip.Prefix `json:"allowed_ips,omitempty"`
	// SenderDomains restricts the From domain on send routes; empty means
	// any. "*.example.com" covers subdomains only.
	SenderDomains []string `json:"sender_domains,omitempty"`
	// Quota limits recipients per day or calendar month (UTC).
	Quota *Quota `json:"quota,omitempty"`
	// MaxRecipients limits recipients per send request; 0 means no limit.
	MaxRecipients int `json:"max_recipients,omitempty"`
	// AllowOnBehalfOf lets the key pass provider impersonation headers
	// (On-Behalf-Of, X-Mailgun-On-Behalf-Of) upstream.
	AllowOnBehalfOf bool `json:"allow_on_behalf_of,omitempty"`

	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokeReason string     `json:"revoke_reason,omitempty"`
	Disabled     bool       `json:"disabled"`
	LastUsedAt   *time.Time `json:"last_used_at,omitempty"`
	LastIP       string     `json:"last_ip,omitempty"`
	RotatedFrom  string     `json:"rotated_from,omitempty"`
	RotatedTo    string     `json:"rotated_to,omitempty"`
}

// Revoked reports whether the key has been revoked.
func (r *Record) Revoked() bool { return r.RevokedAt != nil }

// Expired reports whether the key is past its expiry at now.
func (r *Record) Expired(now time.Time) bool {
	return r.ExpiresAt != nil && !now.Before(*r.ExpiresAt)
}

// Clone returns a deep copy, so callers may modify it freely.
func (r *Record) Clone() *Record {
	c := *r
	c.Scopes = append([]string(nil), r.Scopes...)
	c.AllowedIPs = append([]netip.Prefix(nil), r.AllowedIPs...)
	c.SenderDomains = append([]string(nil), r.SenderDomains...)
	if r.Rate != nil {
		v := *r.Rate
		c.Rate = &v
	}
	if r.Quota != nil {
		v := *r.Quota
		c.Quota = &v
	}
	for _, t := range []**time.Time{&c.ExpiresAt, &c.RevokedAt, &c.LastUsedAt} {
		if *t != nil {
			v := **t
			*t = &v
		}
	}
	return &c
}

// Rate is a number of requests per period, written "100/m".
type Rate struct {
	N   int           `json:"n"`
	Per time.Duration `json:"per"`
}

var rateUnits = []struct {
	unit string
	per  time.Duration
}{{"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}, {"d", 24 * time.Hour}}

// ParseRate parses "N/s", "N/m", "N/h" or "N/d".
func ParseRate(s string) (Rate, error) {
	n, unit, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want N/s, N/m, N/h or N/d", s)
	}
	count, err := parsePositive(n)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: %v", s, err)
	}
	for _, u := range rateUnits {
		if unit == u.unit {
			return Rate{N: int(count), Per: u.per}, nil
		}
	}
	return Rate{}, fmt.Errorf("rate %q: unit %q is not one of s, m, h, d", s, unit)
}

// String writes the rate as ParseRate reads it.
func (r Rate) String() string {
	for _, u := range rateUnits {
		if r.Per == u.per {
			return fmt.Sprintf("%d/%s", r.N, u.unit)
		}
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

// MarshalText writes the rate as "100/m".
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads "100/m".
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Period is a quota period: a UTC day or a UTC calendar month.
type Period string

// Quota periods.
const (
	Day   Period = "d"
	Month Period = "mo"
)

// Start returns the beginning of the period containing t, in UTC.
func (p Period) Start(t time.Time) time.Time {
	t = t.UTC()
	if p == Month {
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// End returns the beginning of the next period after the one containing t.
func (p Period) End(t time.Time) time.Time {
	s := p.Start(t)
	if p == Month {
		return s.AddDate(0, 1, 0)
	}
	return s.AddDate(0, 0, 1)
}

// Quota is a number of recipients per UTC day or calendar month, written
// "1000/d" or "50000/mo".
type Quota struct {
	N   int64  `json:"n"`
	Per Period `json:"per"`
}

// ParseQuota parses "N/d" or "N/mo".
func ParseQuota(s string) (Quota, error) {
	n, unit, ok := strings.Cut(s, "/")
	if !ok {
		return Quota{}, fmt.Errorf("quota %q: want N/d or N/mo", s)
	}
	count, err := parsePositive(n)
	if err != nil {
		return Quota{}, fmt.Errorf("quota %q: %v", s, err)
	}
	switch Period(unit) {
	case Day, Month:
		return Quota{N: count, Per: Period(unit)}, nil
	}
	return Quota{}, fmt.Errorf("quota %q: unit %q is not d or mo", s, unit)
}

// String writes the quota as ParseQuota reads it.
func (q Quota) String() string { return fmt.Sprintf("%d/%s", q.N, q.Per) }

// MarshalText writes the quota as "1000/d".
func (q Quota) MarshalText() ([]byte, error) { return []byte(q.String()), nil }

// UnmarshalText reads "1000/d".
func (q *Quota) UnmarshalText(b []byte) error {
	v, err := ParseQuota(string(b))
	if err != nil {
		return err
	}
	*q = v
	return nil
}

func parsePositive(s string) (int64, error) {
	var n int64
	if s == "" || len(s) > 12 {
		return 0, fmt.Errorf("count %q is not a positive whole number", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("count %q is not a positive whole number", s)
		}
		n = n*10 + int64(c-'0')
	}
	if n == 0 {
		return 0, fmt.Errorf("count %q must be at least 1", s)
	}
	return n, nil
}

// Change is one entry of the change log: the key with this digest changed
// (issued, updated, rotated, revoked) at sequence Seq.
type Change struct {
	Seq    int64
	Digest Digest
}

// Event is one entry of the append-only audit log. It never holds a key or
// a digest.
type Event struct {
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Action string    `json:"action"` // issued, updated, rotated, disabled, enabled, revoked, leak_reported, removed, restored
	KeyID  string    `json:"key_id"`
	Actor  string    `json:"actor"`
	Reason string    `json:"reason,omitempty"`
	Detail string    `json:"detail,omitempty"`
	// Answer, on an issue or a rotation asked with an idempotency key, is
	// its answer: CreateKey and RotateKey keep it in the transaction of the
	// key it made (see Answer), or make nothing if one is already kept
	// under its ID (ErrAnswered).
	Answer *Answer `json:"-"`
}

// ListFilter selects keys for ListKeys and CountKeys, and orders and pages
// them for ListKeys. The zero value lists every usable or disabled key (not
// revoked, not expired), oldest first.
type ListFilter struct {
	Owner string
	// All includes revoked and expired keys.
	All bool
	// Now is when expiry is judged (default: the current time).
	Now time.Time

	// State selects keys in one lifecycle state at Now (All is then
	// ignored); "" selects by All.
	State State
	// ExpiringBefore is where StateExpiring ends: keys expiring at or
	// before it.
	ExpiringBefore time.Time
	// Env selects "live" or "test" keys; "" both.
	Env string
	// Search selects keys whose id, name, owner or hint (kg_live_AbCd1234…)
	// contains it, ignoring case (SQLite folds only ASCII letters; others
	// match as typed).
	Search string
	// Order is the order of ListKeys' result (default OrderCreated).
	Order Order
	// Limit, when > 0, returns at most that many keys after skipping
	// Offset.
	Limit, Offset int
	// After, when set, returns only the keys that come after the key with
	// this id in OrderCreated (the only order it may be used with): the
	// next page of a walk through every key. Unlike Offset it costs the
	// same on the thousandth page as on the first, and a key issued or
	// revoked between two pages neither repeats nor skips another. The
	// key need not be one f selects; an unknown id selects nothing.
	// CountKeys ignores it, as it ignores Limit and Offset.
	After string
}

// State is where a key is in its lifecycle, for ListFilter. The states do
// not overlap except StateExpiring, which is part of StateUsable.
type State string

// Lifecycle states, in the order they take precedence: a revoked key that
// also expired is revoked; an expired key that is also disabled is expired.
const (
	StateRevoked  State = "revoked"
	StateExpired  State = "expired"  // past its expiry, not revoked
	StateDisabled State = "disabled" // disabled, neither revoked nor expired
	StateUsable   State = "usable"   // neither revoked, expired nor disabled
	StateExpiring State = "expiring" // usable, expiring at or before ExpiringBefore
)

// Order is an order of ListKeys' result. Ties are broken by creation time,
// newest first, then id, so pages never overlap.
type Order string

// Orders of ListKeys.
const (
	OrderCreated  Order = ""          // oldest first
	OrderNewest   Order = "newest"    // newest first
	OrderLastUsed Order = "last_used" // most recently used first, never used last
	OrderName     Order = "name"      // by name, ignoring case as Search does
	OrderExpires  Order = "expires"   // soonest expiry first, never expiring last
)

// EventFilter selects audit events; an empty KeyID means every key.
type EventFilter struct {
	KeyID string
	// Limit > 0 keeps the newest Limit events, or with After the first
	// Limit after it.
	Limit int
	// After, when set, reads the log forward from a cursor: the events
	// whose Seq is above *After, oldest first. Events are numbered in the
	// order their changes committed (every key write is serialised), so a
	// reader that goes on after the last Seq it saw misses none.
	After *int64
}

// MaxHourIPs bounds the client IPs a store counts one by one for a key in
// one hour: the first that many. A leaked key used from a botnet, which
// brings new addresses with every flush, would otherwise add a row per
// address and hour without end, and each usage report would sum them all.
// Requests from further IPs still count in every other metric.
const MaxHourIPs = 1000

// UsageDelta is what one gateway counted for one key in one UTC hour since
// its last flush. Stores add deltas to what they hold, so flushes from many
// nodes never overwrite each other.
type UsageDelta struct {
	KeyID string
	Hour  time.Time // truncated to the hour, UTC
	// Counts by metric: "allowed", "denied.<code>", "recipients",
	// "status.2xx" … "status.5xx".
	Counts map[string]int64
	// Requests by client IP. A key's hour holds at most MaxHourIPs of
	// them: once it does, requests from another IP add to none.
	IPs        map[string]int64
	LastUsedAt time.Time // zero when nothing was allowed
	LastIP     string
}

// UsageReport sums a key's usage since a time.
type UsageReport struct {
	KeyID      string           `json:"key_id"`
	Since      time.Time        `json:"since"`
	Allowed    int64            `json:"allowed"`
	Denied     map[string]int64 `json:"denied"`
	Recipients int64            `json:"recipients"`
	Statuses   map[string]int64 `json:"statuses"`
	LastUsedAt *time.Time       `json:"last_used_at"`
	LastIP     string           `json:"last_ip,omitempty"`
	Hours      []HourUsage      `json:"hours"`
	TopIPs     []IPUsage        `json:"top_ips"`
}

// HourUsage is one hourly bucket of a UsageReport.
type HourUsage struct {
	Hour       time.Time        `json:"hour"`
	Allowed    int64            `json:"allowed"`
	Denied     map[string]int64 `json:"denied,omitempty"`
	Recipients int64            `json:"recipients,omitempty"`
}

// IPUsage is a client IP's request count in a UsageReport. First is the
// earliest hour the key was seen from it.
type IPUsage struct {
	IP       string    `json:"ip"`
	Requests int64     `json:"requests"`
	First    time.Time `json:"first_seen"`
}

// RouteScope is one `scope` line a gateway on the store has loaded, so that
// key-management tools can offer the scope names routes use and warn about
// one no route uses.
type RouteScope struct {
	Scope  string    `json:"scope"`
	Method string    `json:"method,omitempty"`
	Path   string    `json:"path"`
	SeenAt time.Time `json:"seen_at"`
}

// Quieter is a store that can give back what it holds open beyond one
// connection (PostgreSQL's pool and listener) while it is still used for
// a last few writes.
type Quieter interface{ Quiet() }

// Store is implemented by the SQLite and PostgreSQL stores. Every method is
// safe for concurrent use. Methods that change a key append to the change log
// and to the audit events in the same transaction as the change.
type Store interface {
	// CreateKey inserts a new record; ev is its audit event (KeyID filled in).
	CreateKey(ctx context.Context, rec *Record, ev Event) error
	// Key returns the record with this id, or ErrNotFound.
	Key(ctx context.Context, id string) (*Record, error)
	// KeyByDigest returns the record with this digest, or ErrNotFound.
	KeyByDigest(ctx context.Context, d Digest) (*Record, error)
	// ListKeys returns the records f selects, in f.Order, paged by
	// f.Limit and f.Offset, after f.After.
	ListKeys(ctx context.Context, f ListFilter) ([]*Record, error)
	// CountKeys returns how many records f selects, whatever its order
	// and paging.
	CountKeys(ctx context.Context, f ListFilter) (int, error)
	// UpdateKey reads the record, lets fn change it and writes it back in
	// one transaction. ev.Action may be set by fn through the pointer; an
	// empty Action records no event.
	UpdateKey(ctx context.Context, id string, ev *Event, fn func(*Record) error) (*Record, error)
	// RotateKey reads the record and lets next make its successor from it
	// (an error from next ends the rotation, nothing written), inserts the
	// successor (RotatedFrom = id) and sets the old record's RotatedTo and
	// ExpiresAt = graceEnd (if earlier than its own expiry), in one
	// transaction. next may fill in ev. It returns the updated old record.
	RotateKey(ctx context.Context, id string, graceEnd time.Time, ev *Event, next func(old *Record) (*Record, error)) (*Record, error)

	// LastChange returns the newest change sequence (0 when none). It is
	// cheap: gateways poll it.
	LastChange(ctx context.Context) (int64, error)
	// Changes returns the changes with Seq > after, oldest first.
	Changes(ctx context.Context, after int64) ([]Change, error)

	// AddUsage adds the deltas to the stored counters and updates each key's
	// last_used_at / last_ip, in one transaction.
	AddUsage(ctx context.Context, deltas []UsageDelta) error
	// Usage sums a key's usage since a time.
	Usage(ctx context.Context, id string, since time.Time) (*UsageReport, error)
	// Recipients sums the recipients counted for a key since a time (for
	// quotas).
	Recipients(ctx context.Context, id string, since time.Time) (int64, error)
	// PruneUsage deletes the usage counters of hours that started before
	// a time and returns how many rows it deleted.
	PruneUsage(ctx context.Context, before time.Time) (int64, error)

	// Activity returns each key's hourly allowed and denied counts since a
	// time, oldest hour first; keys without usage are absent.
	Activity(ctx context.Context, ids []string, since time.Time) (map[string][]HourUsage, error)

	// RecordRouteScopes notes scope lines a gateway has loaded (SeenAt only
	// moves forward); RouteScopes returns those seen since a time.
	RecordRouteScopes(ctx context.Context, lines []RouteScope) error
	RouteScopes(ctx context.Context, since time.Time) ([]RouteScope, error)
	// Owners returns up to limit distinct owners of the store's keys,
	// sorted.
	Owners(ctx context.Context, limit int) ([]string, error)
	// RecordRoutePrefixes notes the key prefixes a gateway's routes accept
	// (seen at at); RoutePrefixes returns those seen since a time.
	RecordRoutePrefixes(ctx context.Context, prefixes []string, at time.Time) error
	RoutePrefixes(ctx context.Context, since time.Time) ([]string, error)

	// Events returns audit events, newest last.
	Events(ctx context.Context, f EventFilter) ([]Event, error)

	// ConsoleSecret returns the secret stored under name, storing
	// candidate first if there is none, so that every console on one store
	// uses the same one.
	ConsoleSecret(ctx context.Context, name, candidate string) (string, error)
	// PutFlash stores data under id until expires (deleting the flashes
	// whose time is up at now); TakeFlash deletes it and returns it, or
	// ErrNotFound once it is taken or its time is up. The console hands a
	// new key from one page to the next this way, sealed: data must never
	// hold a key in the clear.
	PutFlash(ctx context.Context, id, data string, expires, now time.Time) error
	TakeFlash(ctx context.Context, id string, now time.Time) (string, error)

	// Answer returns the answer an issue or a rotation kept under id (see
	// Event.Answer) if it has not expired at now, else ErrNotFound.
	// PruneAnswers deletes those expired at now and returns how many.
	Answer(ctx context.Context, id string, now time.Time) (*Answer, error)
	PruneAnswers(ctx context.Context, now time.Time) (int64, error)

	Close() error
}

// DigestLister is implemented by stores that can list every key's digest
// (both SQL stores). A gateway keeps the set of them, so a made-up key that
// passes the checksum is refused without a store query.
type DigestLister interface {
	// EachDigest calls fn with the digest of every key, revoked and expired
	// ones too, in no particular order.
	EachDigest(ctx context.Context, fn func(Digest)) error
}

// KeyWalker is implemented by stores that can read every key in one pass
// (both SQL stores): a restore's look at a million keys, where pages by
// offset would read the table again for each.
type KeyWalker interface {
	// EachKey calls fn with every key, revoked and expired ones too, in no
	// particular order; it stops at fn's first error. fn must not use the
	// store.
	EachKey(ctx context.Context, fn func(*Record) error) error
}

// Notifier is implemented by stores that push change notifications (the
// PostgreSQL store, through LISTEN/NOTIFY). Gateways still poll LastChange
// as a safety net.
type Notifier interface {
	// Notify returns a channel that receives a value soon after any
	// process commits a change. It is closed when the store is closed.
	Notify() <-chan struct{}
}
