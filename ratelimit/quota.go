package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// QuotaResult is one quota decision.
type QuotaResult struct {
	Allowed bool
	Limit   int64
	// Used is the period's count after this reservation if allowed, else the
	// current count.
	Used      int64
	Remaining int64
	// Reset is the time until the period ends.
	Reset time.Duration
}

// Quotas counts recipients per key and period.
type Quotas interface {
	// Reserve adds n to key's count for the period [start,end) if it stays
	// within limit; load returns the count already persisted for this period
	// (called once per key+period per process, on first use).
	Reserve(ctx context.Context, key string, limit, n int64, start, end time.Time,
		load func(context.Context) (int64, error), now time.Time) (QuotaResult, error)
	// Release gives back n recipients Reserve counted for the period
	// [start,end): a send the provider refused, or never received. It is
	// best effort: one that cannot reach where they were counted leaves
	// them counted (a send refused early, never one too many).
	Release(ctx context.Context, key string, n int64, start, end, now time.Time)
}

// decide applies a reservation of n to a count of used and builds the result.
func decideQuota(used, limit, n int64, end, now time.Time) QuotaResult {
	r := QuotaResult{Limit: limit, Used: used, Reset: max(0, end.Sub(now))}
	if n <= limit-used {
		r.Allowed = true
		r.Used += max(0, n)
	}
	r.Remaining = max(0, limit-r.Used)
	return r
}

// LocalQuotas counts in this process. It is the quota counter of a single
// node and the fallback of RedisQuotas.
type LocalQuotas struct {
	mu        sync.Mutex
	counters  map[quotaKey]*counter
	nextSweep time.Time
}

type quotaKey struct {
	key   string
	start int64 // unix seconds of the period start
}

type counter struct {
	mu     sync.Mutex // held across load, so concurrent first uses load once
	loaded bool
	base   int64 // the count loaded
	used   int64
	end    time.Time
	load   func(context.Context) (int64, error) // what loaded base, to load again
	// inherited is what another fallback counted, handed over (inherit):
	// drained with this one's counts, left out of its decisions.
	inherited int64
}

// quotaSweepInterval spaces the removal of counters of ended periods.
const quotaSweepInterval = time.Minute

// NewLocalQuotas returns empty in-process quota counters.
func NewLocalQuotas() *LocalQuotas {
	return &LocalQuotas{counters: make(map[quotaKey]*counter)}
}

// Reserve adds n to key's count for [start,end) if the count stays within
// limit. The first use of a key and period loads the persisted count; if load
// fails, Reserve returns its error and the next call loads again.
func (q *LocalQuotas) Reserve(ctx context.Context, key string, limit, n int64, start, end time.Time,
	load func(context.Context) (int64, error), now time.Time) (QuotaResult, error) {
	c := q.counter(key, start, end, now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded {
		used, err := load(ctx)
		if err != nil {
			return QuotaResult{}, fmt.Errorf("keygate: quota of %q: loading the count since %s: %w",
				key, start.UTC().Format(time.DateOnly), err)
		}
		c.base, c.used, c.loaded, c.load = used, used, true, load
	}
	r := decideQuota(c.used, limit, n, end, now)
	c.used = r.Used
	return r, nil
}

// Release takes n off key's count for the period starting at start, never
// below the count loaded: what was reserved since.
func (q *LocalQuotas) Release(_ context.Context, key string, n int64, start, _, _ time.Time) {
	q.mu.Lock()
	c := q.counters[quotaKey{key: key, start: start.Unix()}]
	q.mu.Unlock()
	if c == nil || n <= 0 {
		return
	}
	c.mu.Lock()
	if c.loaded {
		c.used = max(c.base, c.used-n)
	}
	c.mu.Unlock()
}

func (q *LocalQuotas) counter(key string, start, end, now time.Time) *counter {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !now.Before(q.nextSweep) {
		q.sweepLocked(now)
		q.nextSweep = now.Add(quotaSweepInterval)
	}
	k := quotaKey{key: key, start: start.Unix()}
	c, ok := q.counters[k]
	if !ok {
		c = &counter{end: end}
		q.counters[k] = c
	}
	return c
}

// Sweep drops the counters of periods ended by now and returns how many.
// Reserve also sweeps, at most once a minute.
func (q *LocalQuotas) Sweep(now time.Time) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.sweepLocked(now)
}

func (q *LocalQuotas) sweepLocked(now time.Time) int {
	dropped := 0
	for k, c := range q.counters {
		if !now.Before(c.end) {
			delete(q.counters, k)
			dropped++
		}
	}
	return dropped
}

// Spent is what a counter of LocalQuotas added to the count it loaded,
// and how to load that count again.
type Spent struct {
	Key        string
	Start, End time.Time
	N          int64
	Load       func(context.Context) (int64, error)
}

// Drain forgets every counter and returns what each added to the count it
// loaded. A fallback is drained when Redis answers again: what it counted
// goes to Redis's counters, and a later outage loads the store's count
// afresh instead of going on from this one's.
func (q *LocalQuotas) Drain() []Spent {
	q.mu.Lock()
	counters := q.counters
	q.counters = make(map[quotaKey]*counter)
	q.mu.Unlock()
	var out []Spent
	for k, c := range counters {
		c.mu.Lock()
		n := c.inherited
		if c.loaded {
			n += max(0, c.used-c.base)
		}
		if n > 0 {
			out = append(out, Spent{Key: k.key, Start: time.Unix(k.start, 0), End: c.end, N: n, Load: c.load})
		}
		c.mu.Unlock()
	}
	return out
}

// inherit adds spent, what another fallback counted and drained (a quota
// counter closed by a reload), to what Drain returns. Decisions leave it
// out: the store's count they start from holds those sends once their
// usage is written, as it holds this fallback's.
func (q *LocalQuotas) inherit(spent []Spent) {
	for _, s := range spent {
		q.mu.Lock()
		k := quotaKey{key: s.Key, start: s.Start.Unix()}
		c, ok := q.counters[k]
		if !ok {
			c = &counter{end: s.End, load: s.Load}
			q.counters[k] = c
		}
		q.mu.Unlock()
		c.mu.Lock()
		c.inherited += s.N
		c.mu.Unlock()
	}
}

// Len is the number of counters held.
func (q *LocalQuotas) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.counters)
}

var _ Quotas = (*LocalQuotas)(nil)
