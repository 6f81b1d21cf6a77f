package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// reserveScript adds ARGV[2] to the counter KEYS[1] unless that would pass
// the limit ARGV[1], in one atomic round trip. A missing counter is created
// from the persisted count ARGV[4], expiring a minute after ARGV[3] (unix
// ms, the period end: counterExpiry); when the caller has not loaded that
// count yet (ARGV[4] == "") the script answers "missing" so that the store
// is only read when needed. Creating it also writes KEYS[2] (loadedKey),
// when it was loaded: ARGV[5], unix ms.
//
// A counter loaded before ARGV[6] (unix ms, "" for none: the start of the
// caller's last Redis outage) is raised to the persisted count once
// (counterCheck), asked for as for a missing one.
//
// Answers {status, used}: status 1 reserved, 0 over the limit, -1 missing,
// -2 to be checked against the persisted count.
var reserveScript = redis.NewScript(counterExpiry + counterCheck + `
local used = redis.call("GET", KEYS[1])
if used then
  used = tonumber(used)
  if stale(KEYS[2], ARGV[6]) then
    if ARGV[4] == "" then
      return {-2, 0}
    end
    used = raise(KEYS[1], KEYS[2], used, ARGV[4], ARGV[5], ARGV[3])
  end
elseif ARGV[4] == "" then
  return {-1, 0}
else
  used = tonumber(ARGV[4])
  local at = expiry(ARGV[3])
  redis.call("SET", KEYS[1], used)
  redis.call("PEXPIREAT", KEYS[1], at)
  redis.call("SET", KEYS[2], ARGV[5])
  redis.call("PEXPIREAT", KEYS[2], at)
end
local limit, n = tonumber(ARGV[1]), tonumber(ARGV[2])
if n > limit - used then
  return {0, used}
end
if n > 0 then
  used = redis.call("INCRBY", KEYS[1], n)
end
return {1, used}
`)

// counterCheck defines stale(loadedKey, check), whether a counter was
// loaded from the store before check (unix ms; never when check is ""),
// and raise(...), which raises such a counter to the persisted count, if
// it is below, and marks it loaded now. A Redis outage may be a failover:
// with asynchronous replication the promoted replica lacks the last
// increments the old primary acknowledged, and its counter, lower than
// the key's sends, would let the key pass its quota by them. A node whose
// outage ends checks each counter it uses once against the store, which
// holds those sends by then (docs/cluster.md, Sentinel); a counter loaded
// since its outage began already holds them. Needs counterExpiry.
const counterCheck = `
local function stale(loadedKey, check)
  if check == "" then
    return false
  end
  local loaded = redis.call("GET", loadedKey)
  return not loaded or tonumber(loaded) < tonumber(check)
end
local function raise(counterKey, loadedKey, used, persisted, now, periodEnd)
  persisted = tonumber(persisted)
  local at = expiry(periodEnd)
  if persisted > used then
    used = persisted
    redis.call("SET", counterKey, used)
    redis.call("PEXPIREAT", counterKey, at)
  end
  redis.call("SET", loadedKey, now)
  redis.call("PEXPIREAT", loadedKey, at)
  return used
end
`

// loadForCheck reads the store's count for counterCheck, within
// checkLoadTimeout; a store that does not give it ends the checks until
// the next outage (o.skipChecks): the send goes on from Redis's counter.
func loadForCheck(ctx context.Context, o *outage, load func(context.Context) (int64, error)) (int64, bool) {
	lctx, cancel := context.WithTimeout(ctx, checkLoadTimeout)
	defer cancel()
	n, err := load(lctx)
	if err != nil {
		o.skipChecks()
		return 0, false
	}
	return n, true
}

// counterExpiry defines expiry(periodEnd), when a quota counter made now
// expires: a minute after its period ends on Redis's clock, or a minute
// from now if that has passed already. A node counts in the period its own
// clock is in, and one a second behind Redis's (or a send made in a day's
// last moment, reaching Redis after midnight) makes or finds the counter of
// a period Redis's clock has ended: expiring at the end, it was made
// expired, Redis dropped it with the store's count at once, and the send's
// INCRBY counted in a new counter that had no expiry at all, kept for ever,
// which the period's next sends went on from (docs/cluster.md, Clocks).
// It reads Redis's TIME, so the script replicates its effects, as
// leaseScript does (a Redis before 5 refused writes after TIME otherwise).
const counterExpiry = `
redis.replicate_commands()
local function expiry(periodEnd)
  local t = redis.call("TIME")
  local at = math.max(tonumber(periodEnd), t[1] * 1000 + math.floor(t[2] / 1000)) + 60000
  return string.format("%d", at)
end
`

// RedisQuotas counts quotas across every node sharing one Redis. If Redis
// errors or times out, the local fallback counts instead, initialised from
// the persisted count like any first use.
type RedisQuotas struct {
	client   redis.UniversalClient
	fallback *LocalQuotas
	opts     RedisOptions
	outage   outage
	recovery *quotaRecovery
}

// NewRedisQuotas returns quota counters shared through client and falling
// back to fallback when client fails.
func NewRedisQuotas(client redis.UniversalClient, fallback *LocalQuotas, opts RedisOptions) *RedisQuotas {
	opts = opts.withDefaults()
	rec := newQuotaRecovery()
	return &RedisQuotas{
		client:   client,
		fallback: fallback,
		opts:     opts,
		outage: outage{what: "quotas", logf: opts.Logf, errorf: opts.Errorf,
			recovered: func(since time.Time) { rec.run(client, opts, fallback, since) }},
		recovery: rec,
	}
}

// Close waits for the answers of reservations cut at their timeout that
// may still come (outage.settle), then adds to Redis what the fallback
// counted and Redis has not seen (closeFallback). The client stays open:
// it is the caller's.
func (q *RedisQuotas) Close() { q.CloseTo(nil) }

// CloseTo is Close, handing what Redis does not take to heir, if it takes
// it (Heir).
func (q *RedisQuotas) CloseTo(heir Heir) {
	q.outage.settle(q.opts.Timeout)
	closeFallback(q.client, q.opts, q.fallback, &q.outage, q.recovery, heir)
}

// Inherit takes over spent, what another quota counter of this Redis and
// prefix counted on its own during an outage that began at since and Redis
// did not take as it closed (Heir): it goes to Redis with what this
// counter's fallback counts, when Redis answers this counter.
func (q *RedisQuotas) Inherit(spent []Spent, since time.Time) {
	inherit(q.fallback, &q.outage, spent, since)
}

// Reserve adds n to key's count for [start,end) if the count stays within
// limit. load is called only when Redis has no count for this period yet.
// The only error returned is load's.
func (q *RedisQuotas) Reserve(ctx context.Context, key string, limit, n int64, start, end time.Time,
	load func(context.Context) (int64, error), now time.Time) (QuotaResult, error) {
	if q.outage.tryRedis(now) {
		r, err := q.reserve(ctx, key, limit, n, start, end, load, now)
		if err == nil {
			q.outage.succeeded()
			return r, nil
		}
		if le := (loadError{}); errors.As(err, &le) {
			return QuotaResult{}, le.error
		}
		q.outage.failed(ctx, err, now)
	}
	q.outage.fallbacks.Add(1)
	return q.fallback.Reserve(ctx, key, limit, n, start, end, load, now)
}

// Release takes n off key's count in Redis, or in the fallback while Redis
// is unreachable.
func (q *RedisQuotas) Release(ctx context.Context, key string, n int64, start, end, now time.Time) {
	if n <= 0 {
		return
	}
	if q.outage.tryRedis(now) {
		_, err := withTimeout(ctx, q.opts.Timeout, func(ctx context.Context) (any, error) {
			return giveBackScript.Run(ctx, q.client, []string{quotaRedisKey(q.opts, key, start)}, n).Result()
		})
		if err == nil {
			q.outage.succeeded()
			return
		}
		q.outage.failed(ctx, err, now)
	}
	q.fallback.Release(ctx, key, n, start, end, now)
}

// loadError tells a failed load, returned to the caller, from a Redis error,
// which triggers the fallback.
type loadError struct{ error }

func (e loadError) Unwrap() error { return e.error }

func (q *RedisQuotas) reserve(ctx context.Context, key string, limit, n int64, start, end time.Time,
	load func(context.Context) (int64, error), now time.Time) (QuotaResult, error) {
	rkey := quotaRedisKey(q.opts, key, start)
	status, used, err := q.run(ctx, rkey, limit, n, end, "", now)
	if err == nil && status == -2 {
		initial := ""
		if persisted, ok := loadForCheck(ctx, &q.outage, load); ok {
			initial = strconv.FormatInt(persisted, 10)
		}
		status, used, err = q.run(ctx, rkey, limit, n, end, initial, now)
	}
	if err == nil && status == -1 {
		persisted, lerr := load(ctx)
		if lerr != nil {
			return QuotaResult{}, loadError{fmt.Errorf("keygate: quota of %q: loading the count since %s: %w",
				key, start.UTC().Format(time.DateOnly), lerr)}
		}
		status, used, err = q.run(ctx, rkey, limit, n, end, strconv.FormatInt(persisted, 10), now)
	}
	if err != nil {
		return QuotaResult{}, err
	}
	if status == 1 {
		// The script already added n; decide from the count before it.
		return decideQuota(used-max(0, n), limit, n, end, now), nil
	}
	return QuotaResult{Limit: limit, Used: used, Remaining: max(0, limit-used), Reset: max(0, end.Sub(now))}, nil
}

// addSpentScript adds what a node's fallback counted during an outage that
// began at ARGV[2] (unix ms) to the counter KEYS[1], if Redis has it. One
// it lacks is loaded from the store at its next use, with what the
// fallback counted. One loaded since the outage began (KEYS[2] is
// loadedKey) may hold part of it already, as a count loaded from the store
// holds what the fallback had written there by then (all of it, when this
// node loaded it: with its counts not written yet): it is raised to the
// store's count now, ARGV[3] (answered -2 to ask for it when ""), rather
// than given the fallback's count again (every send of the outage counted
// twice, when Redis had lost its data) or not at all (the sends after
// another node loaded it lost, when this node alone had lost Redis).
var addSpentScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	return -1
end
local loaded = redis.call('GET', KEYS[2])
if loaded and tonumber(loaded) >= tonumber(ARGV[2]) then
	if ARGV[3] == "" then
		return -2
	end
	local used, now = tonumber(redis.call('GET', KEYS[1])), tonumber(ARGV[3])
	if now > used then
		return redis.call('INCRBY', KEYS[1], now - used)
	end
	return used
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
`)

// addFallbackSpent adds spent, what a fallback counted during an outage
// that began at since (LocalQuotas.Drain), to Redis's counters, so that
// nodes see those recipients; the fallback forgot them, so a later outage
// starts from the store's count rather than from this one's stale
// counters. It returns what Redis did not take (each logged), and what it
// did not add because ctx was done first, or meanwhile.
func addFallbackSpent(ctx context.Context, client redis.UniversalClient, opts RedisOptions, spent []Spent, since time.Time) (missed, untried []Spent) {
	for i, s := range spent {
		if ctx.Err() != nil {
			return missed, spent[i:]
		}
		rkey := quotaRedisKey(opts, s.Key, s.Start)
		// An add is not cut by ctx, only by its timeout: one round trip,
		// and one cut after Redis ran it would be added again by whoever
		// goes on (a close's retry counted the outage twice).
		add := func(now string) (int64, error) {
			return withTimeout(context.WithoutCancel(ctx), opts.Timeout, func(ctx context.Context) (int64, error) {
				return addSpentScript.Run(ctx, client, []string{rkey, loadedKey(opts, rkey)}, s.N, since.UnixMilli(), now).Int64()
			})
		}
		v, err := add("")
		if err == nil && v == -2 {
			lctx, cancel := context.WithTimeout(ctx, storeLoadTimeout)
			var n int64
			n, err = s.Load(lctx)
			cancel()
			if err != nil && ctx.Err() != nil {
				// Cut by ctx while reading the store's count, not
				// refused: left to whoever goes on.
				return missed, spent[i:]
			}
			if err == nil {
				_, err = add(strconv.FormatInt(n, 10))
			}
		}
		if err != nil {
			missed = append(missed, s)
			opts.Logf("keygate: adding the %d recipients counted during the redis outage to %s: %v", s.N, rkey, err)
		}
	}
	return missed, nil
}

// quotaRecovery moves a quota counter's fallback counts to Redis when Redis
// answers again after an outage (addFallbackSpent, in the outage's
// recovered goroutine), until the counter closes: a close ends it rather
// than wait for it (a key whose counter another node loaded meanwhile reads
// the store's count, up to storeLoadTimeout: a store that does not answer
// held a stop or reload 5 s a key), and adds what it left itself
// (closeFallback).
type quotaRecovery struct {
	ctx  context.Context
	stop context.CancelFunc
	mu   sync.Mutex
	left []leftSpent // not tried when stopped
	// missed counts the recipients Redis did not take, at a recovery or
	// a close: its counters miss them (Missed).
	missed atomic.Uint64
}

// leftSpent is what a stopped recovery did not try, with when its outage
// began.
type leftSpent struct {
	spent []Spent
	since time.Time
}

func newQuotaRecovery() *quotaRecovery {
	ctx, stop := context.WithCancel(context.Background())
	return &quotaRecovery{ctx: ctx, stop: stop}
}

func (r *quotaRecovery) run(client redis.UniversalClient, opts RedisOptions, fallback *LocalQuotas, since time.Time) {
	missed, untried := addFallbackSpent(r.ctx, client, opts, fallback.Drain(), since)
	r.miss(missed)
	if len(untried) > 0 {
		r.mu.Lock()
		r.left = append(r.left, leftSpent{untried, since})
		r.mu.Unlock()
	}
}

// miss counts recipients Redis did not take: the fallback forgot them, so
// they are missed for good (what addFallbackSpent logged, or closeFallback).
func (r *quotaRecovery) miss(spent []Spent) {
	for _, s := range spent {
		r.missed.Add(uint64(max(s.N, 0)))
	}
}

// Heir takes over what a closing quota counter's fallback counted during a
// Redis outage and Redis did not take (spent, of an outage that began at
// since), and reports whether it did: a counter of the same Redis and
// prefix that goes on (the one of the configuration a reload made, when
// the reload changed only how keygate reaches that Redis), which adds it
// to Redis when Redis answers it (Inherit). What no heir takes is missed.
type Heir func(spent []Spent, since time.Time) bool

// inherit puts spent into fallback, to be drained with its own counts, and
// makes o an outage that began at since (or earlier, when it did), so
// that Redis's next answer runs the recovery that adds them. The next call
// probes Redis: a reload during an outage made the heir, which may not
// have called Redis yet.
func inherit(fallback *LocalQuotas, o *outage, spent []Spent, since time.Time) {
	if len(spent) == 0 {
		return
	}
	fallback.inherit(spent)
	for s := since.UnixNano(); ; {
		cur := o.since.Load()
		if (o.down.Load() && cur <= s) || o.since.CompareAndSwap(cur, s) {
			break
		}
	}
	o.retryAt.Store(0)
	o.down.Store(true)
}

// closeTimeout bounds what a closing quota counter asks Redis, all keys
// together (or two of its timeouts, if longer): a stop must not wait out a
// Redis that does not answer. One that answers takes milliseconds.
const closeTimeout = time.Second

// closeFallback is a quota counter's last word at a stop (or a reload away
// from this Redis): what its fallback counted during an outage and has not
// given Redis yet (Redis answered again, and no send of those keys has
// asked it since; or it still does not answer), and what a recovery it
// stops did not try, goes to Redis now. The counter in Redis outlives this
// process, and every node, this one started again included, goes on from
// it: without those recipients each key could send as many again past its
// quota this period. What Redis does not take is said at ERROR, with the
// keys, unless heir takes it over. The caller has settled its outage first
// (answers due still given back).
func closeFallback(client redis.UniversalClient, opts RedisOptions, fallback *LocalQuotas, o *outage, rec *quotaRecovery, heir Heir) {
	rec.stop()
	o.recovering.wait(closeTimeout) // stopped, it ends in a moment
	ctx, cancel := context.WithTimeout(context.Background(), max(closeTimeout, 2*opts.Timeout))
	defer cancel()
	rec.mu.Lock()
	left := rec.left
	rec.left = nil
	rec.mu.Unlock()
	var missed []Spent
	var since time.Time // when the first outage of what Redis did not take began
	for _, l := range append(left, leftSpent{fallback.Drain(), time.Unix(0, o.since.Load())}) {
		m, untried := addFallbackSpent(ctx, client, opts, l.spent, l.since)
		if len(m)+len(untried) > 0 && (since.IsZero() || l.since.Before(since)) {
			since = l.since
		}
		missed = append(append(missed, m...), untried...)
	}
	if len(missed) == 0 {
		return
	}
	var n int64
	var keys []string
	for _, s := range missed {
		n += s.N
		if len(keys) < 10 {
			keys = append(keys, s.Key+" from "+s.Start.UTC().Format(time.DateOnly))
		}
	}
	if heir != nil && heir(missed, since) {
		opts.Logf("keygate: closing, redis did not take the %d recipients this node counted on its own during the "+
			"redis outage for %d quotas (%s): the quotas of this redis still in use (a reloaded configuration's) take "+
			"them over, and add them to redis when it answers them", n, len(missed), strings.Join(keys, ", "))
		return
	}
	rec.miss(missed)
	opts.Errorf("keygate: stopping, redis did not take the %d recipients this node counted on its own during the redis "+
		"outage for %d quotas (%s): its counters miss them, so those keys may send as many past their quota this "+
		"period, unless redis loses the counters and rebuilds them from the store", n, len(missed), strings.Join(keys, ", "))
}

// storeLoadTimeout bounds the store's count read when an outage ends.
const storeLoadTimeout = 5 * time.Second

// loadedKey is the key beside a quota counter that says when the counter
// was loaded from the store, or last checked against it (counterCheck),
// unix ms; it expires with the counter. Its hash
// tag is the counter's whole name, so Redis Cluster would keep both in the
// counter's slot for one script to use both, and it starts with the prefix,
// so an ACL of the prefix's keys covers it.
func loadedKey(opts RedisOptions, rkey string) string { return opts.Prefix + "loaded:{" + rkey + "}" }

// quotaRedisKey is the Redis counter of key's period starting at start,
// the same for RedisQuotas and LeasedQuotas, so nodes in either mode share it.
func quotaRedisKey(opts RedisOptions, key string, start time.Time) string {
	return opts.Prefix + "quota:" + key + ":" + strconv.FormatInt(start.Unix(), 10)
}

// run executes reserveScript once, within the configured timeout.
func (q *RedisQuotas) run(ctx context.Context, rkey string, limit, n int64, end time.Time, initial string, now time.Time) (status, used int64, err error) {
	v, err := withLateAnswer(ctx, &q.outage, q.opts.Timeout, func(ctx context.Context) ([]int64, error) {
		return reserveScript.Run(ctx, q.client, []string{rkey, loadedKey(q.opts, rkey)}, limit, n, end.UnixMilli(), initial, now.UnixMilli(), q.outage.check()).Int64Slice()
	}, func(v []int64) {
		if len(v) == 2 && v[0] == 1 && n > 0 {
			giveBackLate(q.client, q.opts, rkey, n)
		}
	})
	if err != nil {
		return 0, 0, err
	}
	if len(v) != 2 {
		return 0, 0, fmt.Errorf("keygate: quota script on %q answered %v, want 2 integers", rkey, v)
	}
	return v[0], v[1], nil
}

// giveBackLate takes n off the counter rkey: Redis counted them for a send
// after the node stopped waiting, and the node's fallback decided the send
// instead (its count goes to Redis when the outage ends).
func giveBackLate(client redis.UniversalClient, opts RedisOptions, rkey string, n int64) {
	_, err := withTimeout(context.Background(), opts.Timeout, func(ctx context.Context) (any, error) {
		return giveBackScript.Run(ctx, client, []string{rkey}, n).Result()
	})
	if err != nil {
		opts.Logf("keygate: giving back the %d recipients redis counted on %s after its timeout: %v", n, rkey, err)
	}
}

// Fallbacks is how many reservations the local fallback made because Redis
// was unreachable.
func (q *RedisQuotas) Fallbacks() uint64 {
	return q.outage.fallbacks.Load()
}

// Missed is how many recipients this counter's fallback counted during a
// Redis outage that Redis did not take when it answered again or at Close:
// Redis's counters miss them, so those keys may send as many past their
// quota in the period.
func (q *RedisQuotas) Missed() uint64 { return q.recovery.missed.Load() }

var _ Quotas = (*RedisQuotas)(nil)
