// Package ratelimit decides whether a key may make another request (token
// buckets, in process or shared through Redis) and whether it may send to more
// recipients in the current day or month (quotas).
//
// It imports nothing from Caddy and takes the current time as an argument, so
// it can be tested and benchmarked alone without sleeping.
package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Limit is a token bucket of size Burst refilled at N tokens per Per.
// Burst 0 means N: a client idle for Per may spend a whole period's worth at once.
type Limit struct {
	N     int
	Per   time.Duration
	Burst int
}

// Validate reports why l cannot be enforced, or nil. Limiters deny every
// request under an invalid Limit rather than let traffic through unlimited.
func (l Limit) Validate() error {
	switch {
	case l.N <= 0:
		return fmt.Errorf("keygate: rate %v: count must be positive", l)
	case l.Per <= 0:
		return fmt.Errorf("keygate: rate %v: period must be positive", l)
	case l.Burst < 0:
		return fmt.Errorf("keygate: rate %v: burst must not be negative", l)
	}
	return nil
}

// String formats l for error messages, e.g. "100/1m0s burst 20".
func (l Limit) String() string {
	s := strconv.Itoa(l.N) + "/" + l.Per.String()
	if l.Burst != 0 {
		s += " burst " + strconv.Itoa(l.Burst)
	}
	return s
}

// Size is the bucket size: Burst, or N when Burst is 0.
func (l Limit) Size() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.N
}

// timeFor is how long the bucket takes to refill the given number of tokens,
// rounded up so that a client waiting that long is never refused again.
func (l Limit) timeFor(tokens float64) time.Duration {
	if tokens <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(tokens * float64(l.Per) / float64(l.N)))
}

// Result is one rate-limit decision and what the response headers report.
type Result struct {
	Allowed bool
	Limit   Limit
	// Remaining is the whole tokens left after this decision (>= 0).
	Remaining int
	// Reset is the time until the bucket is full again (the RateLimit header's t=).
	Reset time.Duration
	// RetryAfter is, when denied, the time until one token is available.
	RetryAfter time.Duration
}

// Limiter decides request rates per key. Keys are key ids or client IPs,
// never the secret key itself.
type Limiter interface {
	// Allow takes one token from key's bucket.
	Allow(ctx context.Context, key string, l Limit, now time.Time) Result
}
