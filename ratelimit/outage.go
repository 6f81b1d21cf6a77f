package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/caddy-keygate/internal/tlsfault"
)

// RedisOptions configures Redis and RedisQuotas.
type RedisOptions struct {
	// Prefix starts every Redis key written, so that several deployments can
	// share one Redis. Default "keygate:".
	Prefix string
	// Timeout bounds each Redis round trip; past it the local fallback decides.
	// Default 100ms.
	Timeout time.Duration
	// Logf reports the start and end of a Redis outage, once each.
	// Default: no logging.
	Logf func(format string, args ...any)
	// Errorf reports the start of an outage that is a refusal (Refused):
	// a configuration to mend, not a Redis to wait for; and, at Close,
	// recipients counted during an outage that Redis's counters miss.
	// Default: Logf.
	Errorf func(format string, args ...any)
}

func (o RedisOptions) withDefaults() RedisOptions {
	if o.Prefix == "" {
		o.Prefix = "keygate:"
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Errorf == nil {
		o.Errorf = o.Logf
	}
	return o
}

// DefaultTimeout bounds a Redis call when RedisOptions does not.
const DefaultTimeout = 100 * time.Millisecond

// retryInterval is how long an outage lasts before Redis is tried again, so
// that requests during an outage do not each wait for a timeout.
const retryInterval = time.Second

// outage tracks whether Redis is reachable, shared by every request of one
// Redis-backed limiter. While Redis is down, one request per retryInterval
// probes it and the others go straight to the local fallback.
type outage struct {
	what      string // "rate limits" or "quotas", for the log lines
	logf      func(string, ...any)
	errorf    func(string, ...any) // for a refusal
	down      atomic.Bool
	retryAt   atomic.Int64 // unix nanoseconds; while down, the next probe time
	since     atomic.Int64 // unix nanoseconds: when the last outage began
	checkFrom atomic.Int64 // since, until skipChecks
	fallbacks atomic.Uint64
	// recovered, if set, runs (in its own goroutine) when Redis answers
	// again after an outage that began at since; recovering counts it.
	recovered  func(since time.Time)
	recovering inFlight
	// late counts the calls withLateAnswer still reads an answer of, to
	// give back what it took; settle waits for them.
	late inFlight
}

// settle waits for the answers of calls cut at their timeout that may
// still come (withLateAnswer: up to lateWait, then a give-back), so that
// what they took is given back before a close adds the fallback's counts
// to Redis and its client is closed: closed first, a late answer is never
// read, and what Redis did for it stays done (a lease's tokens or block
// taken from the key, a send the fallback counted also counted in Redis).
func (o *outage) settle(timeout time.Duration) {
	o.late.wait(max(lateWait, 2*timeout) + timeout + time.Second)
}

// inFlight counts goroutines under way that a close waits for. Unlike a
// sync.WaitGroup it may be added to while waited for (a request of a
// config being stopped, still running past Caddy's grace period, makes a
// call: with a WaitGroup, Add racing Wait's return panics), and the wait
// is bounded.
type inFlight struct{ n atomic.Int64 }

func (f *inFlight) add()  { f.n.Add(1) }
func (f *inFlight) done() { f.n.Add(-1) }

// wait returns once none is under way, or after d. It polls: it runs
// only when a limiter closes, and mostly finds none.
func (f *inFlight) wait(d time.Duration) {
	for deadline := time.Now().Add(d); f.n.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}

// check is when the last outage began, unix ms ("" before any, or once
// skipChecks): a counter loaded before it is checked against the store
// once (counterCheck).
func (o *outage) check() string {
	s := o.checkFrom.Load()
	if s == 0 {
		return ""
	}
	return strconv.FormatInt(time.Unix(0, s).UnixMilli(), 10)
}

// skipChecks ends the checks until the next outage: the store did not
// give a count in checkLoadTimeout, and each send waiting for it would
// hold its request that long.
func (o *outage) skipChecks() { o.checkFrom.Store(0) }

// checkLoadTimeout bounds the store's count read for a check.
const checkLoadTimeout = time.Second

// tryRedis reports whether this request should go to Redis at now.
func (o *outage) tryRedis(now time.Time) bool {
	if !o.down.Load() {
		return true
	}
	next := o.retryAt.Load()
	if now.UnixNano() < next {
		return false
	}
	// Only the request that moves retryAt forward probes.
	return o.retryAt.CompareAndSwap(next, now.Add(retryInterval).UnixNano())
}

// failed records a Redis error at now. An error caused by the caller's own
// context (the client went away) says nothing about Redis and is ignored.
func (o *outage) failed(ctx context.Context, err error, now time.Time) {
	if ctx.Err() != nil {
		return
	}
	o.retryAt.Store(now.Add(retryInterval).UnixNano())
	if !o.down.Load() {
		o.since.Store(now.UnixNano())
		o.checkFrom.Store(now.UnixNano())
	}
	if o.down.CompareAndSwap(false, true) {
		if Refused(err) {
			o.errorf("keygate: redis refuses keygate's commands, %s fall back to this node's local limits until it "+
				"takes them (check the URL's user and password, the user's ACL, the certificates, and that it names "+
				"a primary: not a replica, a Sentinel or a cluster without cluster): %v", o.what, err)
			return
		}
		if redis.IsReadOnlyError(err) {
			o.logf("keygate: redis is a replica (READONLY), %s fall back to this node's local limits until it names a "+
				"primary: %v", o.what, err)
			return
		}
		if redis.IsOOMError(err) {
			o.logf("keygate: redis refuses writes, out of memory (its maxmemory), %s fall back to this node's local "+
				"limits: %v", o.what, err)
			return
		}
		o.logf("keygate: redis unreachable, %s fall back to this node's local limits: %v", o.what, err)
	}
}

// succeeded records a Redis answer.
func (o *outage) succeeded() {
	if !o.down.Load() {
		return
	}
	since := o.since.Load() // before the swap: a failure after it begins the next outage
	if o.down.CompareAndSwap(true, false) {
		o.logf("keygate: redis reachable again, %s are global again", o.what)
		if o.recovered != nil {
			o.recovering.add()
			go func() {
				defer o.recovering.done()
				o.recovered(time.Unix(0, since))
			}()
		}
	}
}

// withTimeout runs call with a deadline d from now and returns when call
// does or when the deadline passes, whichever is first. go-redis only
// honours context deadlines on the socket when the client was built with
// ContextTimeoutEnabled; without it a stuck Redis would hold the request for
// the client's ReadTimeout (3s by default), so the wait is bounded here too.
// A call abandoned at the deadline finishes in the background.
func withTimeout[T any](ctx context.Context, d time.Duration, call func(context.Context) (T, error)) (T, error) {
	callCtx, cancel := context.WithTimeout(ctx, d)
	return answerWithin(ctx, d, callCtx, cancel, call, nil)
}

// lateWait is how long a call cut at its timeout by withLateAnswer goes on
// waiting for its answer (at least twice the timeout).
const lateWait = 2 * time.Second

// withLateAnswer is withTimeout for a call that changes what Redis holds
// (tokens leased, recipients counted): the caller goes on without it after
// d, deciding on its own, but Redis may still do what it was asked, and
// what it did then would take tokens or recipients from the key that no
// request spends (a quota's for the rest of its period). So the call gets
// up to lateWait (or twice d) and the caller's values without its
// cancellation, and an answer that comes after the caller stopped waiting
// goes to late, which undoes it (o.settle waits for that). An answer later
// than that is lost.
func withLateAnswer[T any](ctx context.Context, o *outage, d time.Duration, call func(context.Context) (T, error), late func(T)) (T, error) {
	callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(lateWait, 2*d))
	o.late.add()
	return answerWithin(ctx, d, callCtx, func() { cancel(); o.late.done() }, call, late)
}

// answerWithin runs call with callCtx (cancel ends it, after late) and
// waits up to d (and ctx) for its answer; an answer after that goes to
// late, if set.
func answerWithin[T any](ctx context.Context, d time.Duration, callCtx context.Context, cancel context.CancelFunc,
	call func(context.Context) (T, error), late func(T)) (T, error) {
	type answer struct {
		v   T
		err error
	}
	done := make(chan answer, 1)
	var state atomic.Int32 // 0 waited for, 1 answered in time, 2 abandoned
	go func() {
		defer cancel()
		v, err := call(callCtx)
		if state.CompareAndSwap(0, 1) {
			done <- answer{v, err}
		} else if err == nil && late != nil {
			late(v)
		}
	}()
	wait, stop := context.WithTimeout(ctx, d)
	defer stop()
	select {
	case a := <-done:
		return a.v, a.err
	case <-wait.Done():
		if !state.CompareAndSwap(0, 2) { // answered just now
			a := <-done
			return a.v, a.err
		}
		var zero T
		return zero, fmt.Errorf("keygate: redis did not answer within %v: %w", d, wait.Err())
	}
}

// Refused reports whether err is Redis, or the TLS connection to it,
// refusing what keygate asks in a way no retry mends: a wrong or missing
// password (WRONGPASS, NOAUTH), a user whose ACL lacks a command or keygate's
// keys (NOPERM), a command the server does not know (a Sentinel's port), a
// cluster's redirection to a client that is not a cluster client (MOVED,
// ASK, CROSSSLOT), a server certificate not trusted or not for the host.
// A refused handshake counts (a client certificate missing or not trusted).
// A replica refusing writes (READONLY) is left out: after a failover the
// endpoint names the new primary in a moment.
func Refused(err error) bool {
	if err == nil {
		return false
	}
	if tlsfault.Untrusted(err) {
		return true
	}
	if _, moved := redis.IsMovedError(err); moved {
		return true
	}
	if _, ask := redis.IsAskError(err); ask {
		return true
	}
	return redis.IsAuthError(err) || redis.IsPermissionError(err) ||
		redis.HasErrorPrefix(err, "CROSSSLOT") || redis.HasErrorPrefix(err, "unknown command") ||
		redis.HasErrorPrefix(err, "This instance has cluster support disabled") || // a cluster client, one server
		// Redis 7.0's NOPERM for a command a script calls.
		strings.Contains(err.Error(), "The user executing the script can't run this command") ||
		strings.Contains(err.Error(), "remote error: tls: ") // the server refused the handshake: no client certificate, or one it does not trust
}
