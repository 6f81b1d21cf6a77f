package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// shardCount spreads buckets over independent locks so that requests for
// different keys rarely contend. A power of two keeps the modulo a mask.
const shardCount = 64

// Local keeps token buckets in this process, one per key. It is the limiter
// of a single node and the fallback of Redis when Redis is unreachable.
//
// A bucket costs the same memory whatever its limit, and Sweep evicts buckets
// that have refilled completely, since forgetting a full bucket loses nothing.
type Local struct {
	seed   maphash.Seed
	shards [shardCount]shard
}

type shard struct {
	mu      sync.RWMutex
	buckets map[string]bucket
}

// bucket pairs the token state with the Limit it was last configured with,
// so that a changed Limit (config reload, per-key override) is noticed and
// applied to the existing state instead of handing out a fresh bucket.
type bucket struct {
	tokens *rate.Limiter
	limit  Limit
}

// NewLocal returns an empty in-process limiter.
func NewLocal() *Local {
	l := &Local{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]bucket)
	}
	return l
}

// Allow takes one token from key's bucket, creating a full bucket on first use.
func (l *Local) Allow(_ context.Context, key string, lim Limit, now time.Time) Result {
	return l.decide(key, lim, now, true)
}

// Peek reports what Allow would decide without taking a token or creating a
// bucket. It lets the failed-auth limit be checked before a key is verified,
// with a token taken only when verification fails.
func (l *Local) Peek(key string, lim Limit, now time.Time) Result {
	return l.decide(key, lim, now, false)
}

func (l *Local) decide(key string, lim Limit, now time.Time, take bool) Result {
	s := &l.shards[maphash.String(l.seed, key)%shardCount]

	// Hot path: the bucket exists with this limit. The read lock is held
	// through the decision so that Sweep cannot evict a bucket in use.
	s.mu.RLock()
	b, ok := s.buckets[key]
	if ok && b.limit == lim {
		allowed, tokens := b.take(now, take)
		s.mu.RUnlock()
		return result(lim, allowed, tokens)
	}
	s.mu.RUnlock()
	// Validated here, off the hot path: a stored bucket's limit was valid.
	if lim.Validate() != nil {
		return Result{Limit: lim}
	}
	if !ok && !take {
		return Result{Allowed: true, Limit: lim, Remaining: lim.Size()}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok = s.buckets[key]
	switch {
	case !ok:
		b = bucket{tokens: rate.NewLimiter(perSecond(lim), lim.Size()), limit: lim}
		s.buckets[key] = b
	case b.limit != lim:
		b.tokens.SetLimitAt(now, perSecond(lim))
		b.tokens.SetBurstAt(now, lim.Size())
		b.limit = lim
		s.buckets[key] = b
	}
	allowed, tokens := b.take(now, take)
	return result(lim, allowed, tokens)
}

// take takes a token if asked to, and reports whether a token was (or, when
// only peeking, would be) available and how many remain.
func (b bucket) take(now time.Time, take bool) (allowed bool, tokens float64) {
	if take {
		allowed = b.tokens.AllowN(now, 1)
		return allowed, b.tokens.TokensAt(now)
	}
	tokens = b.tokens.TokensAt(now)
	return tokens >= 1, tokens
}

// result reports a decision on a bucket holding tokens afterwards.
func result(lim Limit, allowed bool, tokens float64) Result {
	r := Result{
		Allowed:   allowed,
		Limit:     lim,
		Remaining: max(0, int(tokens)), // truncation is floor for tokens >= 0
		Reset:     lim.timeFor(float64(lim.Size()) - tokens),
	}
	if !allowed {
		r.RetryAfter = lim.timeFor(1 - tokens)
	}
	return r
}

// Sweep evicts every bucket that is full again at now and returns how many.
// Call it periodically (every minute or so) to bound memory by active keys.
func (l *Local) Sweep(now time.Time) int {
	evicted := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for key, b := range s.buckets {
			if b.tokens.TokensAt(now) >= float64(b.limit.Size()) {
				delete(s.buckets, key)
				evicted++
			}
		}
		s.mu.Unlock()
	}
	return evicted
}

// Len is the number of buckets held.
func (l *Local) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		n += len(s.buckets)
		s.mu.RUnlock()
	}
	return n
}

func perSecond(lim Limit) rate.Limit {
	return rate.Limit(float64(lim.N) / lim.Per.Seconds())
}

var _ Limiter = (*Local)(nil)
