package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// LeasedQuotas counts recipient quotas across every node sharing one Redis
// without a Redis round trip per send: a node reserves a block of the key's
// period count in Redis (the counter RedisQuotas keeps, so nodes in either
// mode share it) and spends it on its own sends. A send its block does not
// cover asks Redis for what is missing plus a block for the next sends;
// every interval, a node gives back what it holds for keys without a send
// in the last two intervals, all keys in one pipelined round trip.
//
// Bounds, per key and period, against one exact counter (RedisQuotas):
//   - never more than the quota while Redis is reachable: recipients are
//     counted in Redis before a send spends them;
//   - possibly a refusal a little early: what other nodes hold and have not
//     spent yet is not available to this one. A node holds at most
//     min(2 × its recipients of the key in the last or the current
//     interval, quota / 64, what was left in Redis / 8) beyond the send
//     that leased it, so as a
//     quota nears its end the blocks shrink to nothing and each send asks
//     Redis; a node gives its block back within two intervals of its last
//     send of the key.
//
// If Redis is unreachable, a node spends what it holds and then counts on
// its local fallback, initialised from the persisted count as RedisQuotas
// does; when Redis answers again, what the fallback counted is added to
// Redis's counters and the fallback forgets its counters.
type LeasedQuotas struct {
	client   redis.UniversalClient
	fallback *LocalQuotas
	opts     RedisOptions
	outage   outage
	recovery *quotaRecovery
	seed     maphash.Seed
	shards   [shardCount]quotaShard
	trips    atomic.Uint64
	bg       *background
	lost     lostCounters
}

// lostCounters reports counters Redis lost while this node leased from
// them, at most one line a minute.
type lostCounters struct {
	mu    sync.Mutex
	last  time.Time
	since int // counters found lost since the last line
	total atomic.Uint64
}

type quotaShard struct {
	mu     sync.Mutex
	leases map[quotaKey]*quotaLease
}

// quotaLease is one key's block of one period on this node.
type quotaLease struct {
	mu       sync.Mutex // held across the key's Redis calls: its sends wait for one answer
	rkey     string
	end      time.Time
	limit    int64
	asked    bool  // Redis has answered for this period at least once
	held     int64 // counted in Redis, not spent by a send yet
	used     int64 // Redis's count at its last answer: every node's sends and blocks
	giveBack int64 // held under an older limit, to go back at the next sync
	demand   int64 // recipients asked for since the last sync
	recent   int64 // recipients asked for in the last interval
	idle     int   // syncs in a row without a send
	gone     bool  // forgotten by sync: look the key up again
}

// NewLeasedQuotas returns quota counters leasing blocks through client,
// giving idle blocks back every interval (LeaseInterval if 0) until Close,
// and falling back to fallback when client fails.
func NewLeasedQuotas(client redis.UniversalClient, fallback *LocalQuotas, opts RedisOptions, interval time.Duration) *LeasedQuotas {
	opts = opts.withDefaults()
	rec := newQuotaRecovery()
	q := &LeasedQuotas{
		client:   client,
		fallback: fallback,
		opts:     opts,
		outage: outage{what: "quotas", logf: opts.Logf, errorf: opts.Errorf,
			recovered: func(since time.Time) { rec.run(client, opts, fallback, since) }},
		recovery: rec,
		seed:     maphash.MakeSeed(),
	}
	for i := range q.shards {
		q.shards[i].leases = make(map[quotaKey]*quotaLease)
	}
	q.bg = startBackground(interval, opts.Timeout, q.sync)
	return q
}

// Close waits for the answers of leases cut at their timeout that may
// still come (outage.settle), stops the background give-back, gives back
// every block held, and adds to Redis what the fallback counted and Redis
// has not seen (closeFallback). The client stays open: it is the caller's.
func (q *LeasedQuotas) Close() { q.CloseTo(nil) }

// CloseTo is Close, handing what Redis does not take to heir, if it takes
// it (Heir).
func (q *LeasedQuotas) CloseTo(heir Heir) {
	q.outage.settle(q.opts.Timeout)
	q.bg.close()
	closeFallback(q.client, q.opts, q.fallback, &q.outage, q.recovery, heir)
}

// Inherit takes over what another quota counter of this Redis and prefix
// counted on its own during an outage that began at since and Redis did
// not take as it closed (RedisQuotas.Inherit).
func (q *LeasedQuotas) Inherit(spent []Spent, since time.Time) {
	inherit(q.fallback, &q.outage, spent, since)
}

// Reserve adds n to key's count for [start,end) if the count stays within
// limit, from this node's block when it covers n. load is called only when
// Redis has no count for this period yet; the only error returned is load's.
func (q *LeasedQuotas) Reserve(ctx context.Context, key string, limit, n int64, start, end time.Time,
	load func(context.Context) (int64, error), now time.Time) (QuotaResult, error) {
	n = max(n, 0)
	ls := q.locked(key, start, end)
	defer ls.mu.Unlock()
	if ls.limit != limit {
		// A changed quota: the block was leased under the old one.
		ls.giveBack += ls.held
		ls.held, ls.limit = 0, limit
	}
	ls.demand += n
	if ls.asked && n <= ls.held {
		ls.held -= n
		return ls.result(true, now), nil
	}
	if !q.outage.tryRedis(now) {
		q.outage.fallbacks.Add(1)
		return q.fallback.Reserve(ctx, key, limit, n, start, end, load, now)
	}
	need := n - ls.held
	// Twice the key's recipients here in the last interval, or in this one
	// so far: a key starting to send leases blocks doubling in size.
	extra := min(max(2*ls.recent, 2*ls.demand, n), limit/64)
	a, err := q.ask(ctx, ls, need, extra, load, now)
	if le := (loadError{}); errors.As(err, &le) {
		return QuotaResult{}, le.error
	}
	if err != nil {
		q.outage.failed(ctx, err, now)
		q.outage.fallbacks.Add(1)
		return q.fallback.Reserve(ctx, key, limit, n, start, end, load, now)
	}
	q.outage.succeeded()
	ls.asked, ls.used = true, a.used
	if !a.reserved {
		return ls.result(false, now), nil
	}
	ls.held += a.granted - n
	return ls.result(true, now), nil
}

// Release gives n back to key's count in Redis at the next sync, with the
// blocks this node gives back; during an outage, to the fallback's count.
func (q *LeasedQuotas) Release(ctx context.Context, key string, n int64, start, end, now time.Time) {
	if n <= 0 {
		return
	}
	if q.outage.down.Load() { // where reservations are counted meanwhile
		q.fallback.Release(ctx, key, n, start, end, now)
		return
	}
	ls := q.locked(key, start, end)
	ls.giveBack += n
	ls.mu.Unlock()
}

// locked returns key's lease of the period, locked; one that sync forgot
// meanwhile is looked up again.
func (q *LeasedQuotas) locked(key string, start, end time.Time) *quotaLease {
	ls := q.lease(key, start, end)
	ls.mu.Lock()
	for ls.gone {
		ls.mu.Unlock()
		ls = q.lease(key, start, end)
		ls.mu.Lock()
	}
	return ls
}

// result reports the period's count as this node knows it: Redis's count
// less what this node holds (other nodes' blocks count as used).
func (ls *quotaLease) result(allowed bool, now time.Time) QuotaResult {
	used := ls.used - ls.held
	return QuotaResult{Allowed: allowed, Limit: ls.limit, Used: used, Remaining: max(0, ls.limit-used),
		Reset: max(0, ls.end.Sub(now))}
}

// quotaAnswer is Redis's answer to a lease: whether it reserved, how many
// recipients it counted for this node, and its count after that.
type quotaAnswer struct {
	reserved      bool
	granted, used int64
}

// ask leases need recipients and up to extra more for ls, loading the
// persisted count when Redis has none for the period, or one to check
// against it (counterCheck).
func (q *LeasedQuotas) ask(ctx context.Context, ls *quotaLease, need, extra int64,
	load func(context.Context) (int64, error), now time.Time) (quotaAnswer, error) {
	a, status, err := q.run1(ctx, ls, need, extra, "", now)
	if err == nil && status == -2 {
		initial := ""
		if persisted, ok := loadForCheck(ctx, &q.outage, load); ok {
			// The block this node holds is counted in Redis, not in
			// the store: raised to the store's count alone, the
			// counter would lose it when it goes back.
			initial = strconv.FormatInt(persisted+ls.held, 10)
		}
		a, status, err = q.run1(ctx, ls, need, extra, initial, now)
	}
	if err != nil || status == 0 {
		return a, err
	}
	if ls.asked {
		// Redis answered for this period before and has no counter now:
		// it lost it (a restart without persistence, an eviction). The
		// counter rebuilt from the store never counted the block this node
		// holds, nor what it would give back: spending or giving back
		// either would let the key pass its quota by that much.
		need += ls.held
		ls.held, ls.giveBack = 0, 0
		q.lost.report(q.opts, ls.rkey, now)
	}
	persisted, err := load(ctx)
	if err != nil {
		return quotaAnswer{}, loadError{fmt.Errorf("keygate: quota of %s: loading the count: %w", ls.rkey, err)}
	}
	a, _, err = q.run1(ctx, ls, need, extra, strconv.FormatInt(persisted, 10), now)
	return a, err
}

// run1 runs leaseQuotaScript once; status is -1 for a counter missing,
// -2 for one to check against the persisted count, 0 for an answer.
func (q *LeasedQuotas) run1(ctx context.Context, ls *quotaLease, need, extra int64, initial string, now time.Time) (a quotaAnswer, status int64, err error) {
	q.trips.Add(1)
	limit := ls.limit
	v, err := withLateAnswer(ctx, &q.outage, q.opts.Timeout, func(ctx context.Context) ([]int64, error) {
		return leaseQuotaScript.Run(ctx, q.client, []string{ls.rkey, loadedKey(q.opts, ls.rkey)}, limit, need, extra, ls.end.UnixMilli(), initial, now.UnixMilli(), q.outage.check()).Int64Slice()
	}, func(v []int64) {
		if len(v) == 3 && v[0] == 1 && v[1] > 0 {
			giveBackLate(q.client, q.opts, ls.rkey, v[1])
		}
	})
	if err != nil {
		return quotaAnswer{}, 0, err
	}
	if len(v) != 3 {
		return quotaAnswer{}, 0, fmt.Errorf("keygate: quota lease script on %q answered %v, want 3 integers", ls.rkey, v)
	}
	if v[0] < 0 {
		return quotaAnswer{}, v[0], nil
	}
	return quotaAnswer{reserved: v[0] == 1, granted: v[1], used: v[2]}, 0, nil
}

func (q *LeasedQuotas) lease(key string, start, end time.Time) *quotaLease {
	k := quotaKey{key: key, start: start.Unix()}
	sh := &q.shards[maphash.String(q.seed, key)%shardCount]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ls, ok := sh.leases[k]
	if !ok {
		ls = &quotaLease{rkey: quotaRedisKey(q.opts, key, start), end: end}
		sh.leases[k] = ls
	}
	return ls
}

// report says at ERROR that Redis lost rkey's counter, at most once a
// minute, with how many others it lost since the last line.
func (l *lostCounters) report(opts RedisOptions, rkey string, now time.Time) {
	l.total.Add(1)
	l.mu.Lock()
	l.since++
	if !l.last.IsZero() && now.Sub(l.last) < time.Minute {
		l.mu.Unlock()
		return
	}
	n := l.since
	l.last, l.since = now, 0
	l.mu.Unlock()
	more := ""
	if n > 1 {
		more = fmt.Sprintf(" (and %d more quota counters since the last such line)", n-1)
	}
	opts.Errorf("keygate: redis lost the quota counter %s while this node was counting on it%s: "+
		"redis restarted without persistence, or evicted it; it is rebuilt from the store's count, "+
		"which misses the last second of other nodes' sends and the blocks they hold, so in this period "+
		"a key may send that many recipients past its quota (run redis with appendonly yes and maxmemory-policy noeviction)", rkey, more)
}

// giveBack is recipients a node returns to a key's count in Redis.
type giveBack struct {
	rkey string
	n    int64
}

// sync gives back the blocks of keys without a send in the last two
// intervals (closing: every block) in one pipelined round trip, and
// forgets the periods that ended and keys long idle.
func (q *LeasedQuotas) sync(ctx context.Context, now time.Time, closing bool) {
	type keyed struct {
		k  quotaKey
		ls *quotaLease
	}
	var back []giveBack
	var leases []keyed
	for i := range q.shards {
		sh := &q.shards[i]
		// Copied out: a lease's lock may be held across a Redis call, and
		// the shard's must not wait for it.
		leases = leases[:0]
		sh.mu.Lock()
		for k, ls := range sh.leases {
			leases = append(leases, keyed{k, ls})
		}
		sh.mu.Unlock()
		for _, l := range leases {
			if n, forget := l.ls.sync(now, closing); n > 0 {
				back = append(back, giveBack{l.ls.rkey, n})
			} else if forget {
				sh.mu.Lock()
				delete(sh.leases, l.k)
				sh.mu.Unlock()
			}
		}
	}
	if len(back) > 0 {
		q.sendBack(ctx, back, now, closing)
	}
}

// sync ends an interval of ls: it returns the recipients to give back, or
// whether to forget the lease (its period ended, or the key is long idle).
func (ls *quotaLease) sync(now time.Time, closing bool) (n int64, forget bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.recent, ls.demand = ls.demand, 0
	if ls.recent == 0 {
		ls.idle++
	} else {
		ls.idle = 0
	}
	if !now.Before(ls.end) {
		ls.gone = true // its counter in Redis expired with the period
		return 0, true
	}
	n, ls.giveBack = ls.giveBack, 0
	if closing || ls.idle >= 2 {
		n += ls.held
		ls.held = 0
	}
	if n == 0 && ls.idle >= keepIdle {
		ls.gone = true
		return 0, true
	}
	return n, false
}

// sendBack returns back's recipients to their counters in one pipelined
// round trip.
func (q *LeasedQuotas) sendBack(ctx context.Context, back []giveBack, now time.Time, closing bool) {
	// Not sent (Redis down) or failed: the recipients stay counted in Redis
	// (never more than the quota), and this node no longer spends them.
	if !closing && !q.outage.tryRedis(now) {
		return
	}
	q.trips.Add(1)
	_, err := withTimeout(ctx, q.opts.Timeout, func(ctx context.Context) (struct{}, error) {
		pipe := q.client.Pipeline()
		for _, b := range back {
			giveBackScript.Eval(ctx, pipe, []string{b.rkey}, b.n) // in full: a pipeline cannot load a missing script
		}
		_, err := pipe.Exec(ctx)
		return struct{}{}, err
	})
	if err != nil && !closing {
		q.outage.failed(ctx, err, now)
	}
}

// Fallbacks is how many reservations the local fallback made because Redis
// was unreachable.
func (q *LeasedQuotas) Fallbacks() uint64 { return q.outage.fallbacks.Load() }

// Missed is how many recipients this counter's fallback counted during a
// Redis outage that Redis did not take (RedisQuotas.Missed).
func (q *LeasedQuotas) Missed() uint64 { return q.recovery.missed.Load() }

// LostCounters is how many times a key's counter was gone from Redis while
// this node counted on it (a restart without persistence, an eviction):
// rebuilt from the store, it misses the last second of other nodes' sends
// and the blocks they hold, which that key may then send past its quota.
func (q *LeasedQuotas) LostCounters() uint64 { return q.lost.total.Load() }

// RoundTrips is how many times this node has called Redis for quotas.
func (q *LeasedQuotas) RoundTrips() uint64 { return q.trips.Load() }

// leaseQuotaScript counts ARGV[2] recipients (need) and up to ARGV[3] more
// (extra, capped at an eighth of what would be left) on the counter KEYS[1]
// of limit ARGV[1], unless need would pass the limit. A missing counter is
// created as reserveScript creates it (from the persisted count ARGV[5],
// expiring a minute after the period end ARGV[4], and KEYS[2] saying it was
// loaded at ARGV[6]), or
// answered "missing" when ARGV[5] is "". One loaded before ARGV[7] is
// checked against the persisted count as reserveScript checks it.
//
// Answers {status, granted, used}: status 1 reserved, 0 over the limit
// (nothing counted), -1 missing, -2 to be checked against the persisted
// count.
var leaseQuotaScript = redis.NewScript(counterExpiry + counterCheck + `
local used = redis.call("GET", KEYS[1])
if used then
  used = tonumber(used)
  if stale(KEYS[2], ARGV[7]) then
    if ARGV[5] == "" then
      return {-2, 0, 0}
    end
    used = raise(KEYS[1], KEYS[2], used, ARGV[5], ARGV[6], ARGV[4])
  end
elseif ARGV[5] == "" then
  return {-1, 0, 0}
else
  used = tonumber(ARGV[5])
  local at = expiry(ARGV[4])
  redis.call("SET", KEYS[1], used)
  redis.call("PEXPIREAT", KEYS[1], at)
  redis.call("SET", KEYS[2], ARGV[6])
  redis.call("PEXPIREAT", KEYS[2], at)
end
local limit, need, extra = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if need > limit - used then
  return {0, 0, used}
end
local granted = need + math.max(0, math.min(extra, math.floor((limit - used - need) / 8)))
if granted > 0 then
  used = redis.call("INCRBY", KEYS[1], granted)
end
return {1, granted, used}
`)

// giveBackScript takes ARGV[1] recipients a node held off the counter
// KEYS[1], if the counter still exists (it expires with its period), and
// never below zero: a counter Redis lost and rebuilt from the store never
// counted the block (docs/cluster.md, Redis losing its data).
var giveBackScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then
  local v = redis.call("DECRBY", KEYS[1], ARGV[1])
  if v < 0 then
    v = redis.call("INCRBY", KEYS[1], -v)
  end
  return v
end
return 0
`)

var _ Quotas = (*LeasedQuotas)(nil)
