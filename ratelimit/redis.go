package ratelimit

import (
	"context"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Redis enforces limits across every node sharing one Redis, with GCRA
// (github.com/go-redis/redis_rate): one round trip per decision, and a
// single timestamp per key in Redis whatever the limit.
//
// Redis decides with its own clock, so the now passed to Allow only drives
// the fallback and the outage retry schedule.
//
// If Redis errors or times out, the decision comes from the local fallback:
// a caller never sees an error, and each node then enforces the limit on
// its own (so a cluster of n nodes lets through up to n times the limit).
// The fallback's bucket holds what Redis last reported for the key on this
// node, so an outage does not hand out a fresh burst: a key's admissions
// across an outage on one node are at most those of one bucket plus the
// tokens other nodes took since this node last asked Redis.
// Build the client with ContextTimeoutEnabled so that a request abandoned at
// the timeout also frees its connection promptly.
type Redis struct {
	limiter  *redis_rate.Limiter
	fallback *Local
	opts     RedisOptions
	outage   outage
}

// NewRedis returns a limiter sharing its buckets through client and falling
// back to fallback when client fails.
func NewRedis(client redis.UniversalClient, fallback *Local, opts RedisOptions) *Redis {
	opts = opts.withDefaults()
	return &Redis{
		limiter:  redis_rate.NewLimiter(client),
		fallback: fallback,
		opts:     opts,
		outage:   outage{what: "rate limits", logf: opts.Logf, errorf: opts.Errorf},
	}
}

// Allow takes one token from key's bucket in Redis, or from the local
// fallback's while Redis is unreachable.
func (r *Redis) Allow(ctx context.Context, key string, l Limit, now time.Time) Result {
	if l.Validate() != nil {
		return Result{Limit: l}
	}
	if r.outage.tryRedis(now) {
		res, err := r.allow(ctx, key, l)
		if err == nil {
			r.outage.succeeded()
			// Should Redis become unreachable, the fallback goes on from
			// here rather than from a full bucket.
			r.fallback.Seed(key, l, float64(res.Remaining), now)
			return res
		}
		r.outage.failed(ctx, err, now)
	}
	r.outage.fallbacks.Add(1)
	return r.fallback.Allow(ctx, key, l, now)
}

func (r *Redis) allow(ctx context.Context, key string, l Limit) (Result, error) {
	gcra := redis_rate.Limit{Rate: l.N, Period: l.Per, Burst: l.Size()}
	res, err := withTimeout(ctx, r.opts.Timeout, func(ctx context.Context) (*redis_rate.Result, error) {
		return r.limiter.Allow(ctx, r.opts.Prefix+key, gcra)
	})
	if err != nil {
		return Result{}, err
	}
	out := Result{
		Allowed:   res.Allowed > 0,
		Limit:     l,
		Remaining: max(0, res.Remaining),
		Reset:     max(0, res.ResetAfter),
	}
	if !out.Allowed {
		out.RetryAfter = max(0, res.RetryAfter)
	}
	return out, nil
}

// Peek reports what remains of key's bucket in Redis without taking a
// token, or the fallback's view while Redis is unreachable. It costs a
// round trip: it is for introspection (whoami), not for requests.
func (r *Redis) Peek(ctx context.Context, key string, l Limit, now time.Time) Result {
	if l.Validate() != nil {
		return Result{Limit: l}
	}
	if r.outage.tryRedis(now) {
		if res, err := peekRedis(ctx, r.limiter, r.opts, key, l, 0); err == nil {
			return res
		}
	}
	return r.fallback.Peek(key, l, now)
}

// peekRedis reads key's bucket in Redis (redis_rate with a cost of 0 takes
// nothing) and reports it with held more tokens, those a node leased.
func peekRedis(ctx context.Context, limiter *redis_rate.Limiter, opts RedisOptions, key string, l Limit, held int) (Result, error) {
	gcra := redis_rate.Limit{Rate: l.N, Period: l.Per, Burst: l.Size()}
	res, err := withTimeout(ctx, opts.Timeout, func(ctx context.Context) (*redis_rate.Result, error) {
		return limiter.AllowN(ctx, opts.Prefix+key, gcra, 0)
	})
	if err != nil {
		return Result{}, err
	}
	left := min(max(0, res.Remaining)+held, l.Size())
	return Result{Allowed: left > 0, Limit: l, Remaining: left, Reset: l.timeFor(float64(l.Size() - left))}, nil
}

// Fallbacks is how many decisions the local fallback made because Redis was
// unreachable; export it as a metric to see outages.
func (r *Redis) Fallbacks() uint64 {
	return r.outage.fallbacks.Load()
}

var _ Limiter = (*Redis)(nil)
