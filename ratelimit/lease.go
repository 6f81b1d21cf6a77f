package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Leased enforces limits across every node sharing one Redis without a
// Redis round trip per request: each node leases tokens from the key's
// bucket in Redis and spends them locally. In the background, every
// interval, a node tops each active key's lease up to twice what the key
// asked for in the last interval (or gives the excess back), all keys in one
// pipelined round trip. A request finding its node's lease empty asks Redis
// itself (one request per key at a time; the others wait for its answer);
// when Redis has no token either, the node refuses the key's requests
// locally until Redis expects one.
//
// Bounds, per key, against one exact bucket shared by all nodes (Redis, or
// a single node): a token is taken from Redis before a request spends it, so
// the nodes together never admit more than that bucket would (no
// over-admission while Redis is reachable). They may admit fewer: tokens a
// node leased and has not spent are unavailable to the other nodes until it
// gives them back, at most 2 × (the key's requests on that node in one
// interval), capped at the burst, per node, for at most one interval.
//
// The bucket in Redis is the one Redis (exact mode) keeps (GCRA, the same
// key and encoding), so nodes in either mode share a key's limit, and Redis
// decides with its own clock.
//
// If Redis is unreachable, a node spends what it has leased and then falls
// back to its local bucket, seeded with the tokens Redis last reported (as
// Redis does): each node then enforces the limit on its own.
type Leased struct {
	client   redis.UniversalClient
	peeker   *redis_rate.Limiter
	fallback *Local
	opts     RedisOptions
	outage   outage
	seed     maphash.Seed
	shards   [shardCount]leaseShard
	trips    atomic.Uint64
	bg       *background
}

type leaseShard struct {
	mu     sync.RWMutex
	leases map[string]*lease
}

// lease is one key's tokens on this node.
type lease struct {
	mu     sync.Mutex
	limit  Limit
	tokens int // leased and not spent yet
	demand int // requests since the last sync, allowed or not
	idle   int // syncs in a row without a request
	// What Redis reported with the last lease: the tokens left to lease,
	// when, and until when it has none.
	left       int
	at         time.Time
	emptyUntil time.Time
	// askAfter is emptyUntil and a random part of a token's time: when
	// this node next asks Redis (see apply).
	askAfter time.Time
	// scarce is set while Redis reports the bucket empty: the key is
	// asked for at or above its rate, and tokens are leased one at a
	// time, as requests ask for them, so that every node's requests get
	// their share instead of the node whose renewal comes first.
	scarce   bool
	fetching chan struct{} // closed when a request's own lease answers
	fallback bool          // the last decision was the fallback's
	gone     bool          // forgotten by sync: look the key up again
}

// LeaseInterval is how often a node renews its leases, unless
// RedisOptions say otherwise.
const LeaseInterval = 100 * time.Millisecond

// keepIdle is how many intervals a key without requests keeps one leased
// token, so that a key used now and then is still decided locally.
const keepIdle = 100

// NewLeased returns a limiter leasing tokens through client, renewing its
// leases every interval (LeaseInterval if 0) until Close, and falling back to
// fallback when client fails.
func NewLeased(client redis.UniversalClient, fallback *Local, opts RedisOptions, interval time.Duration) *Leased {
	opts = opts.withDefaults()
	l := &Leased{
		client:   client,
		peeker:   redis_rate.NewLimiter(client),
		fallback: fallback,
		opts:     opts,
		outage:   outage{what: "rate limits", logf: opts.Logf, errorf: opts.Errorf},
		seed:     maphash.MakeSeed(),
	}
	for i := range l.shards {
		l.shards[i].leases = make(map[string]*lease)
	}
	l.bg = startBackground(interval, opts.Timeout, l.sync)
	return l
}

// Close stops renewing leases, gives back the tokens leased and unspent,
// and waits for the answers of leases cut at their timeout that may still
// come, to give their tokens back too (outage.settle). After the
// background stops: its renewals are such calls.
func (l *Leased) Close() {
	l.bg.close()
	l.outage.settle(l.opts.Timeout)
}

// Allow takes one token from key's lease, leasing more from Redis when it
// is empty.
func (l *Leased) Allow(ctx context.Context, key string, lim Limit, now time.Time) Result {
	if lim.Validate() != nil {
		return Result{Limit: lim}
	}
	ls := l.lease(key)
	ls.mu.Lock()
	for ls.gone {
		ls.mu.Unlock()
		ls = l.lease(key)
		ls.mu.Lock()
	}
	ls.limit = lim // tokens leased under an older limit stay tokens
	ls.demand++
	for {
		if ls.tokens > 0 {
			ls.tokens--
			ls.fallback = false
			res := leasedResult(lim, ls.left+ls.tokens)
			ls.mu.Unlock()
			return res
		}
		if now.Before(ls.askAfter) {
			res := leasedResult(lim, 0)
			res.Allowed, res.RetryAfter = false, max(ls.emptyUntil.Sub(now), time.Millisecond) // the bucket's time, not the jitter's
			ls.mu.Unlock()
			return res
		}
		if ls.fetching != nil {
			// Another request of this key is asking Redis: its answer
			// serves this one too.
			wait := ls.fetching
			ls.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return l.fallbackAllow(ctx, key, lim, now, nil)
			}
			ls.mu.Lock()
			continue
		}
		if !l.outage.tryRedis(now) {
			return l.fallbackAllow(ctx, key, lim, now, ls) // unlocks
		}
		ls.fetching = make(chan struct{})
		want := ls.want()
		if ls.scarce {
			want = 1
		}
		ls.mu.Unlock()
		g, err := l.lease1(ctx, key, lim, want)
		ls.mu.Lock()
		close(ls.fetching)
		ls.fetching = nil
		if err != nil {
			l.outage.failed(ctx, err, now)
			return l.fallbackAllow(ctx, key, lim, now, ls) // unlocks
		}
		l.outage.succeeded()
		ls.apply(g, now)
	}
}

// Peek reports what remains of key's limit for this node without taking a
// token: what Redis has left and the tokens this node holds (other nodes'
// are not counted), or the fallback's view while Redis is unreachable. It
// costs a round trip: it is for introspection (whoami), not for requests.
func (l *Leased) Peek(ctx context.Context, key string, lim Limit, now time.Time) Result {
	if lim.Validate() != nil {
		return Result{Limit: lim}
	}
	held := 0
	s := &l.shards[maphash.String(l.seed, key)%shardCount]
	s.mu.RLock()
	ls := s.leases[key]
	s.mu.RUnlock()
	if ls != nil {
		ls.mu.Lock()
		held = ls.tokens
		ls.mu.Unlock()
	}
	if l.outage.tryRedis(now) {
		if res, err := peekRedis(ctx, l.peeker, l.opts, key, lim, held); err == nil {
			return res
		}
	}
	return l.fallback.Peek(key, lim, now)
}

// fallbackAllow decides on the local fallback bucket. With ls (locked, and
// unlocked here), a key that was on leases until now starts its fallback
// bucket from the tokens it leased and those Redis last had left.
func (l *Leased) fallbackAllow(ctx context.Context, key string, lim Limit, now time.Time, ls *lease) Result {
	if ls != nil {
		if !ls.fallback && !ls.at.IsZero() {
			l.fallback.Seed(key, lim, float64(ls.left+ls.tokens), ls.at)
		}
		ls.fallback = true
		ls.mu.Unlock()
	}
	l.outage.fallbacks.Add(1)
	return l.fallback.Allow(ctx, key, lim, now)
}

// want is how many tokens the key should hold for the next interval.
func (ls *lease) want() int {
	w := 2 * ls.demand
	if w == 0 && ls.idle < keepIdle {
		w = 1
	}
	return min(w, ls.limit.Size())
}

// apply adds what Redis granted (given-back tokens were taken off when the
// renewal was prepared, so that no request could spend them meanwhile).
func (ls *lease) apply(g granted, now time.Time) {
	ls.tokens += max(0, g.n)
	ls.left, ls.at = g.left, now
	ls.scarce = g.left == 0
	ls.emptyUntil, ls.askAfter = time.Time{}, time.Time{}
	if ls.tokens == 0 && g.left == 0 {
		// Until the next token, and a random part of the time one takes:
		// nodes whose clients keep the same phase against the refill
		// would otherwise find it in the same order every time, and one
		// node would take nearly all. A token left meanwhile stays in the
		// bucket, so the key's rate is not lowered.
		ls.emptyUntil = now.Add(max(g.retry, time.Millisecond))
		ls.askAfter = ls.emptyUntil.Add(rand.N(max(ls.limit.timeFor(1), 1)))
	}
}

func leasedResult(lim Limit, remaining int) Result {
	remaining = min(remaining, lim.Size())
	return Result{Allowed: true, Limit: lim, Remaining: remaining, Reset: lim.timeFor(float64(lim.Size() - remaining))}
}

func (l *Leased) lease(key string) *lease {
	s := &l.shards[maphash.String(l.seed, key)%shardCount]
	s.mu.RLock()
	ls, ok := s.leases[key]
	s.mu.RUnlock()
	if ok {
		return ls
	}
	s.mu.Lock()
	if ls, ok = s.leases[key]; !ok {
		ls = &lease{}
		s.leases[key] = ls
	}
	s.mu.Unlock()
	return ls
}

// background calls a leasing limiter's sync every interval, and once more
// with closing set when it is closed.
type background struct {
	sync       func(ctx context.Context, now time.Time, closing bool)
	timeout    time.Duration
	stop, done chan struct{}
}

// startBackground runs sync every interval (LeaseInterval if 0), each call
// bounded by timeout.
func startBackground(interval, timeout time.Duration, sync func(context.Context, time.Time, bool)) *background {
	if interval <= 0 {
		interval = LeaseInterval
	}
	b := &background{sync: sync, timeout: timeout, stop: make(chan struct{}), done: make(chan struct{})}
	go b.run(interval)
	return b
}

func (b *background) run(interval time.Duration) {
	defer close(b.done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case now := <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
			b.sync(ctx, now, false)
			cancel()
		}
	}
}

// close stops the calls and makes the closing one.
func (b *background) close() {
	close(b.stop)
	<-b.done
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	b.sync(ctx, time.Now(), true)
}

// leaseChange is one key's renewal: delta tokens to lease (or, negative,
// to give back).
type leaseChange struct {
	key   string
	ls    *lease
	limit Limit
	delta int
}

// errOutage stands for a renewal not tried because Redis is down.
var errOutage = errors.New("keygate: redis unreachable")

// sync renews every active lease in one pipelined round trip and forgets
// keys idle for long. closing gives every token back.
func (l *Leased) sync(ctx context.Context, now time.Time, closing bool) {
	var changes []leaseChange
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for key, ls := range s.leases {
			ls.mu.Lock()
			if ls.demand == 0 {
				ls.idle++
			} else {
				ls.idle = 0
			}
			want := ls.want()
			ls.demand = 0
			if closing {
				want = 0
			}
			switch {
			case ls.fetching != nil: // a request is leasing right now
			case want == 0 && ls.tokens == 0:
				ls.gone = true
				delete(s.leases, key)
				// Should Redis become unreachable before the key's next
				// request, its fallback bucket goes on from what Redis
				// last reported, as it would had the lease been kept.
				// The bucket is swept once it is full again.
				if !ls.fallback && !ls.at.IsZero() {
					l.fallback.Seed(key, ls.limit, float64(ls.left), ls.at)
				}
			case want < ls.tokens:
				changes = append(changes, leaseChange{key, ls, ls.limit, want - ls.tokens})
				ls.tokens = want // the rest goes back: no longer to be spent here
			case want > ls.tokens && !now.Before(ls.emptyUntil) && !ls.scarce:
				changes = append(changes, leaseChange{key, ls, ls.limit, want - ls.tokens})
			}
			ls.mu.Unlock()
		}
		s.mu.Unlock()
	}
	if len(changes) == 0 {
		return
	}
	cmds := make([]*redis.Cmd, len(changes))
	err := errOutage
	if closing || l.outage.tryRedis(now) {
		_, err = withLateAnswer(ctx, &l.outage, l.opts.Timeout, func(ctx context.Context) (struct{}, error) {
			err := l.renew(ctx, changes, cmds)
			if redis.HasErrorPrefix(err, "NOSCRIPT") { // a restarted Redis: load the script, once
				if err = leaseScript.Load(ctx, l.client).Err(); err == nil {
					err = l.renew(ctx, changes, cmds)
				}
			}
			return struct{}{}, err
		}, func(struct{}) {
			for i, c := range changes {
				if g, err := parseGranted(cmds[i]); err == nil {
					l.giveBackLate(c.key, c.limit, g.n)
				}
			}
		})
	}
	if err == errOutage {
		for _, c := range changes { // not sent: what was to go back is still this node's
			if c.delta < 0 {
				c.ls.mu.Lock()
				c.ls.tokens -= c.delta
				c.ls.mu.Unlock()
			}
		}
		return
	}
	if err != nil {
		// Redis may have applied some renewals before failing: tokens
		// being given back are treated as given (they may be, and spending
		// them again could admit more than the limit) and grants as lost.
		l.outage.failed(ctx, err, now)
		return
	}
	l.outage.succeeded()
	for i, c := range changes {
		g, err := parseGranted(cmds[i])
		if err != nil {
			continue
		}
		c.ls.mu.Lock()
		c.ls.apply(g, now)
		c.ls.mu.Unlock()
	}
}

// renew sends changes in one pipeline, filling cmds with the answers.
func (l *Leased) renew(ctx context.Context, changes []leaseChange, cmds []*redis.Cmd) error {
	l.trips.Add(1)
	pipe := l.client.Pipeline()
	for i, c := range changes {
		cmds[i] = leaseScript.EvalSha(ctx, pipe, []string{l.redisKey(c.key)}, leaseArgs(c.limit, c.delta)...)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// lease1 leases up to want tokens of key in a round trip of its own.
func (l *Leased) lease1(ctx context.Context, key string, lim Limit, want int) (granted, error) {
	l.trips.Add(1)
	return withLateAnswer(ctx, &l.outage, l.opts.Timeout, func(ctx context.Context) (granted, error) {
		return parseGranted(leaseScript.Run(ctx, l.client, []string{l.redisKey(key)}, leaseArgs(lim, want)...))
	}, func(g granted) { l.giveBackLate(key, lim, g.n) })
}

// giveBackLate puts back n tokens Redis leased after the node stopped
// waiting and decided on its own: lost, they would be missing from the
// key's bucket until it refills.
func (l *Leased) giveBackLate(key string, lim Limit, n int) {
	if n <= 0 {
		return
	}
	_, _ = withTimeout(context.Background(), l.opts.Timeout, func(ctx context.Context) (granted, error) {
		return parseGranted(leaseScript.Run(ctx, l.client, []string{l.redisKey(key)}, leaseArgs(lim, -n)...))
	})
}

// redisKey is the key Redis (exact mode) keeps the same bucket under:
// redis_rate prefixes "rate:".
func (l *Leased) redisKey(key string) string { return "rate:" + l.opts.Prefix + key }

func leaseArgs(lim Limit, delta int) []any {
	return []any{lim.Size(), lim.N, lim.Per.Seconds(), delta}
}

// granted is Redis's answer to a lease: tokens granted (negative: given
// back), tokens it has left, and when it has none, how long until it has one.
type granted struct {
	n, left int
	retry   time.Duration
}

func parseGranted(cmd *redis.Cmd) (granted, error) {
	v, err := cmd.Slice()
	if err != nil {
		return granted{}, err
	}
	if len(v) != 3 {
		return granted{}, fmt.Errorf("keygate: lease script answered %v, want 3 values", v)
	}
	n, ok1 := v[0].(int64)
	left, ok2 := v[1].(int64)
	s, ok3 := v[2].(string)
	retry, err := strconv.ParseFloat(s, 64)
	if !ok1 || !ok2 || !ok3 || err != nil {
		return granted{}, fmt.Errorf("keygate: lease script answered %v", v)
	}
	return granted{n: int(n), left: int(left), retry: time.Duration(retry * float64(time.Second))}, nil
}

// leaseScript moves ARGV[4] tokens (negative: back) out of the GCRA bucket
// KEYS[1] of burst ARGV[1] and rate ARGV[2] per ARGV[3] seconds, granting
// only what the bucket holds, and answers {granted, left, retry seconds}.
// The bucket is stored as redis_rate stores it: the theoretical arrival
// time, in seconds since 2017-01-01, by Redis's clock.
var leaseScript = redis.NewScript(`
redis.replicate_commands()
local burst, rate, period, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local emission = period / rate
local t = redis.call("TIME")
local now = (t[1] - 1483228800) + (t[2] / 1000000)
local tat = tonumber(redis.call("GET", KEYS[1]) or now)
tat = math.max(tat, now)
local granted = delta
if delta < 0 then
  tat = math.max(tat + delta * emission, now)
else
  local avail = math.floor((now + burst * emission - tat) / emission + 1e-6)
  granted = math.max(0, math.min(delta, avail))
  tat = tat + granted * emission
end
local left = math.max(0, math.floor((now + burst * emission - tat) / emission + 1e-6))
local reset = tat - now
if reset > 0 then
  redis.call("SET", KEYS[1], tat, "EX", math.ceil(reset))
else
  redis.call("DEL", KEYS[1])
end
local retry = 0
if left == 0 then
  retry = tat + emission - burst * emission - now
end
return {granted, left, tostring(retry)}
`)

// Fallbacks is how many decisions the local fallback made because Redis was
// unreachable.
func (l *Leased) Fallbacks() uint64 { return l.outage.fallbacks.Load() }

// RoundTrips is how many times this node has called Redis: leases of single
// keys and pipelined renewals of all of them.
func (l *Leased) RoundTrips() uint64 { return l.trips.Load() }

var _ Limiter = (*Leased)(nil)
