package ratelimit

import (
	"context"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Warm loads every script the limiters run into Redis, on each primary of a
// cluster, so that their first calls on a request's path take one round
// trip: a script Redis does not hold yet takes two (EVALSHA, then EVAL with
// its text), which with a Redis far away outlasted a request's timeout, and
// the node fell back to its own limits. The exact limiter's GCRA script
// (go-redis/redis_rate's) is loaded by a call that spends nothing, on one
// primary of a cluster.
func Warm(ctx context.Context, client redis.UniversalClient) error {
	for _, s := range []*redis.Script{leaseScript, leaseQuotaScript, giveBackScript, reserveScript, addSpentScript} {
		if err := s.Load(ctx, client).Err(); err != nil {
			return err
		}
	}
	_, err := redis_rate.NewLimiter(client).AllowN(ctx, "keygate:warm", redis_rate.PerMinute(1), 0)
	return err
}
