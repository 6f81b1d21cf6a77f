package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// shardCount spreads buckets over independent locks so that requests for
// different keys rarely contend. A power of two keeps the modulo a mask.
const shardCount = 64

// Local keeps token buckets in this process, one per key. It is the limiter
// of a single node and the fallback of Redis when Redis is unreachable.
//
// A bucket costs the same memory whatever its limit, and Sweep evicts buckets
// that have refilled completely, since forgetting a full bucket loses nothing.
// A Local made by NewBoundedLocal also holds at most a fixed number of
// buckets, for keys a client chooses (its address): see NewBoundedLocal.
type Local struct {
	seed   maphash.Seed
	shards [shardCount]shard
	// perShard is the most buckets a shard holds (0: no bound); crowded
	// counts the buckets evicted to keep to it.
	perShard int
	crowded  atomic.Uint64
}

type shard struct {
	mu      sync.RWMutex
	buckets map[string]*bucket
}

// bucket is one key's token bucket: tokens as of last, refilled at the
// Limit's rate up to its size. It keeps the Limit it was last used with, so
// that a changed Limit (config reload, per-key override) is applied to the
// existing state instead of handing out a fresh bucket. The arithmetic is
// x/time/rate's (float tokens, refill by elapsed seconds), in one lock and
// without its reservation bookkeeping.
type bucket struct {
	mu     sync.Mutex
	limit  Limit
	perSec float64 // refill rate, tokens per second
	tokens float64
	last   time.Time
}

// NewLocal returns an empty in-process limiter, for keys the clients do
// not choose (key ids): its buckets are bounded by Sweep alone.
func NewLocal() *Local { return NewBoundedLocal(0) }

// NewBoundedLocal returns an empty in-process limiter that holds at most
// maxBuckets buckets (rounded up to a multiple of 64; 0: no bound), for keys
// that clients choose, such as their addresses, of which an attacker has as
// many as it likes. A new key that finds its shard full evicts the fullest
// of a few of that shard's buckets (evictSample, chosen at random):
//
//   - nobody is refused for the bound: a new key always gets a full bucket;
//   - a bucket that refuses (an attacker past its limit) is evicted only if
//     every bucket compared with it is as empty, so filling the table with
//     new keys, each costing one token of a fresh bucket, does not reset it:
//     emptying the buckets of that many keys first costs as many tokens as
//     using those keys directly would have given;
//   - a bucket evicted full lost nothing, as at Sweep; one nearly full gives
//     its key back the few tokens it had spent.
func NewBoundedLocal(maxBuckets int) *Local {
	l := &Local{seed: maphash.MakeSeed(), perShard: (max(maxBuckets, 0) + shardCount - 1) / shardCount}
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]*bucket)
	}
	return l
}

// evictSample is how many of a full shard's buckets are compared to choose
// the one to evict. Go starts each walk of a map at a random place.
const evictSample = 8

// MaxBuckets is the most buckets l holds, or 0 if it has no bound.
func (l *Local) MaxBuckets() int { return l.perShard * shardCount }

// Crowded is how many buckets were evicted so far to keep within
// MaxBuckets (not counting Sweep's).
func (l *Local) Crowded() uint64 { return l.crowded.Load() }

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
	b = l.bucketLocked(s, key, lim, now)
	allowed, tokens := b.take(now, take)
	return result(lim, allowed, tokens)
}

// bucketLocked returns key's bucket under lim, creating a full one or
// moving an existing one to lim. The shard's write lock is held.
func (l *Local) bucketLocked(s *shard, key string, lim Limit, now time.Time) *bucket {
	b, ok := s.buckets[key]
	switch {
	case !ok:
		if l.perShard > 0 && len(s.buckets) >= l.perShard {
			s.evictFullestLocked(now)
			l.crowded.Add(1)
		}
		b = &bucket{limit: lim, perSec: perSecond(lim), tokens: float64(lim.Size()), last: now}
		s.buckets[key] = b
	case b.limit != lim:
		// As x/time/rate's SetLimitAt and SetBurstAt: the tokens refilled
		// so far are kept, and a smaller size caps them from now on.
		b.tokens, b.last = b.advance(now), now
		b.limit, b.perSec = lim, perSecond(lim)
	}
	return b
}

// Seed sets key's bucket to hold tokens at time at (and refill from there),
// creating it if needed: the fallback of a shared limiter continues from
// the last state the shared one reported instead of a full bucket.
func (l *Local) Seed(key string, lim Limit, tokens float64, at time.Time) {
	if lim.Validate() != nil {
		return
	}
	s := &l.shards[maphash.String(l.seed, key)%shardCount]
	s.mu.RLock()
	b, ok := s.buckets[key]
	if ok && b.limit == lim {
		b.mu.Lock()
		b.tokens, b.last = min(tokens, float64(lim.Size())), at
		b.mu.Unlock()
		s.mu.RUnlock()
		return
	}
	s.mu.RUnlock()
	s.mu.Lock()
	b = l.bucketLocked(s, key, lim, at)
	b.tokens, b.last = min(tokens, float64(lim.Size())), at
	s.mu.Unlock()
}

// evictFullestLocked evicts the bucket holding the largest share of its
// size at now of evictSample of the shard's (see NewBoundedLocal). The
// shard's write lock is held, which excludes every user of its buckets.
func (s *shard) evictFullestLocked(now time.Time) {
	var victim string
	fullest, n := -1.0, 0
	for key, b := range s.buckets {
		if f := b.advance(now) / float64(b.limit.Size()); f > fullest {
			victim, fullest = key, f
		}
		if n++; n == evictSample || fullest >= 1 {
			break
		}
	}
	delete(s.buckets, victim)
}

// advance returns the tokens at now, without changing the bucket.
func (b *bucket) advance(now time.Time) float64 {
	last := b.last
	if now.Before(last) {
		last = now
	}
	tokens := b.tokens + now.Sub(last).Seconds()*b.perSec
	if size := float64(b.limit.Size()); tokens > size {
		tokens = size
	}
	return tokens
}

// take takes a token if asked to, and reports whether a token was (or, when
// only peeking, would be) available and how many remain.
func (b *bucket) take(now time.Time, take bool) (allowed bool, tokens float64) {
	b.mu.Lock()
	tokens = b.advance(now)
	allowed = tokens >= 1
	if take && allowed {
		tokens--
		b.tokens, b.last = tokens, now
	}
	b.mu.Unlock()
	return allowed, tokens
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
			// The write lock excludes every user of the bucket.
			if b.advance(now) >= float64(b.limit.Size()) {
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

func perSecond(lim Limit) float64 {
	return float64(lim.N) / lim.Per.Seconds()
}

var _ Limiter = (*Local)(nil)
