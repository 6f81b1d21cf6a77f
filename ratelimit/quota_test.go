package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"github.com/redis/go-redis/v9"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/store"
)

// persisted is a load func answering a fixed count and counting its calls.
// A test that changes the count while a limiter may load it (an outage's
// end loads in the background) does so with add.
type persisted struct {
	mu    sync.Mutex
	count int64
	err   error
	calls atomic.Int64
}

func (p *persisted) load(context.Context) (int64, error) {
	p.calls.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count, p.err
}

// add adds n to the count and returns it.
func (p *persisted) add(n int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count += n
	return p.count
}

// eachQuotas runs spec against LocalQuotas, and against RedisQuotas and
// LeasedQuotas on a throwaway redis-server: on one node all three promise
// the same behaviour.
func eachQuotas(t *testing.T, spec func(t *testing.T, q Quotas)) {
	t.Run("local", func(t *testing.T) { spec(t, NewLocalQuotas()) })
	t.Run("redis", func(t *testing.T) {
		srv := testservers.StartRedis(t)
		spec(t, NewRedisQuotas(newClient(t, srv.Addr), NewLocalQuotas(), RedisOptions{Timeout: slowMachine}))
	})
	t.Run("leased", func(t *testing.T) {
		srv := testservers.StartRedis(t)
		spec(t, newLeasedQuotas(t, srv.Addr, 0))
	})
}

func TestQuotaReserve(t *testing.T) {
	start, end := dayBounds(t0)
	tests := []struct {
		name      string
		persisted int64
		n         int64
		want      QuotaResult
	}{
		{
			name: "the first use starts from the persisted count", persisted: 7, n: 2,
			want: QuotaResult{Allowed: true, Used: 9, Remaining: 1},
		},
		{
			name: "reaching the limit exactly is allowed", persisted: 8, n: 2,
			want: QuotaResult{Allowed: true, Used: 10, Remaining: 0},
		},
		{
			name: "a reservation passing the limit is refused whole and reports the current count", persisted: 9, n: 2,
			want: QuotaResult{Allowed: false, Used: 9, Remaining: 1},
		},
		{
			name: "a count persisted above the limit refuses everything", persisted: 12, n: 1,
			want: QuotaResult{Allowed: false, Used: 12, Remaining: 0},
		},
		{
			name: "reserving nothing reports the count", persisted: 4, n: 0,
			want: QuotaResult{Allowed: true, Used: 4, Remaining: 6},
		},
	}
	eachQuotas(t, func(t *testing.T, q Quotas) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				p := &persisted{count: tt.persisted}
				got, err := q.Reserve(context.Background(), t.Name(), 10, tt.n, start, end, p.load, t0)
				if err != nil {
					t.Fatal(err)
				}
				tt.want.Limit = 10
				tt.want.Reset = end.Sub(t0)
				if got != tt.want {
					t.Errorf("got  %+v\nwant %+v", got, tt.want)
				}
			})
		}
	})
}

// Recipients released (a send the provider refused) can be reserved again,
// on every kind of counter.
func TestQuotaReleaseGivesRecipientsBack(t *testing.T) {
	start, end := dayBounds(t0)
	eachQuotas(t, func(t *testing.T, q Quotas) {
		ctx := context.Background()
		p := &persisted{count: 4}
		key := t.Name()
		reserve := func(n int64) bool {
			t.Helper()
			r, err := q.Reserve(ctx, key, 10, n, start, end, p.load, t0)
			if err != nil {
				t.Fatal(err)
			}
			return r.Allowed
		}
		if !reserve(6) || reserve(1) {
			t.Fatal("6 of a quota of 10 with 4 used: want the 6 taken and then no more")
		}
		q.Release(ctx, key, 6, start, end, t0)
		if lq, ok := q.(*LeasedQuotas); ok {
			lq.sync(ctx, t0, false) // a node gives back at its next sync
		}
		if !reserve(6) || reserve(1) {
			t.Error("the 6 released cannot be reserved again, or more can")
		}
	})
}

func TestQuotaLoadsOncePerPeriodAndRollsOver(t *testing.T) {
	eachQuotas(t, func(t *testing.T, q Quotas) {
		ctx := context.Background()
		p := &persisted{count: 3}
		dayStart, dayEnd := dayBounds(t0)
		for range 7 {
			if r, _ := q.Reserve(ctx, "key_a", 10, 1, dayStart, dayEnd, p.load, t0); !r.Allowed {
				t.Fatalf("reservation within the limit refused: %+v", r)
			}
		}
		if r, _ := q.Reserve(ctx, "key_a", 10, 1, dayStart, dayEnd, p.load, t0); r.Allowed || r.Used != 10 {
			t.Errorf("11th recipient of the day: %+v, want refused at 10", r)
		}
		if n := p.calls.Load(); n != 1 {
			t.Errorf("load called %d times in one period, want 1", n)
		}

		next := dayEnd.Add(time.Minute)
		nextStart, nextEnd := dayBounds(next)
		fresh := &persisted{count: 0}
		r, err := q.Reserve(ctx, "key_a", 10, 1, nextStart, nextEnd, fresh.load, next)
		if err != nil || !r.Allowed || r.Used != 1 || fresh.calls.Load() != 1 {
			t.Errorf("first recipient of the next day: %+v, %v, %d loads; want allowed, Used 1, loaded once", r, err, fresh.calls.Load())
		}
	})
}

func TestQuotaFailedLoadIsReturnedAndRetried(t *testing.T) {
	eachQuotas(t, func(t *testing.T, q Quotas) {
		start, end := monthBounds(t0)
		p := &persisted{err: errors.New("store down")}
		if _, err := q.Reserve(context.Background(), "key_a", 10, 1, start, end, p.load, t0); err == nil {
			t.Fatal("Reserve with a failing load: no error")
		}
		p.err, p.count = nil, 5
		r, err := q.Reserve(context.Background(), "key_a", 10, 1, start, end, p.load, t0)
		if err != nil || r.Used != 6 {
			t.Errorf("Reserve after the store recovered: %+v, %v; want Used 6", r, err)
		}
	})
}

func TestQuotaNeverOverspentUnderConcurrency(t *testing.T) {
	eachQuotas(t, func(t *testing.T, q Quotas) {
		start, end := dayBounds(t0)
		p := &persisted{count: 5}
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				r, err := q.Reserve(context.Background(), "key_a", 25, 1, start, end, p.load, t0)
				if err != nil {
					t.Error(err)
				}
				if r.Allowed {
					allowed.Add(1)
				}
			})
		}
		wg.Wait()
		if n := allowed.Load(); n != 20 {
			t.Errorf("%d of 50 concurrent reservations allowed, want 20 (limit 25, 5 persisted)", n)
		}
	})
}

func TestLocalQuotasDropsEndedPeriods(t *testing.T) {
	q := NewLocalQuotas()
	p := &persisted{}
	ctx := context.Background()
	dayStart, dayEnd := dayBounds(t0)
	monthStart, monthEnd := monthBounds(t0)
	q.Reserve(ctx, "key_a", 10, 1, dayStart, dayEnd, p.load, t0)
	q.Reserve(ctx, "key_a", 10, 1, monthStart, monthEnd, p.load, t0)
	if n := q.Sweep(dayEnd.Add(-time.Nanosecond)); n != 0 {
		t.Errorf("Sweep before the day ended dropped %d, want 0", n)
	}
	if n := q.Sweep(dayEnd); n != 1 || q.Len() != 1 {
		t.Errorf("Sweep at the day's end dropped %d leaving %d, want 1 leaving the month's", n, q.Len())
	}
	// Reserve sweeps by itself, so ended periods go without a caller's help.
	q.Reserve(ctx, "key_b", 10, 1, monthEnd, monthEnd.AddDate(0, 1, 0), p.load, monthEnd)
	if n := q.Len(); n != 1 {
		t.Errorf("Len after a Reserve in the next month = %d, want 1", n)
	}
}

func TestRedisQuotasOutageFallsBack(t *testing.T) {
	srv := testservers.StartRedis(t)
	logs := &logRecorder{}
	q := NewRedisQuotas(newClient(t, srv.Addr), NewLocalQuotas(), RedisOptions{Timeout: slowMachine, Logf: logs.Logf})
	start, end := dayBounds(t0)
	p := &persisted{count: 2}
	ctx := context.Background()
	if _, err := q.Reserve(ctx, "key_a", 10, 1, start, end, p.load, t0); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for i := range 5 {
		r, err := q.Reserve(ctx, "key_a", 10, 1, start, end, p.load, t0)
		if err != nil || !r.Allowed {
			t.Errorf("reservation %d during the outage: %+v, %v; want allowed by the fallback", i, r, err)
		}
	}
	if f := q.Fallbacks(); f != 5 {
		t.Errorf("Fallbacks = %d, want 5", f)
	}
	if n := logs.count("unreachable"); n != 1 {
		t.Errorf("outage logged %d times, want once: %q", n, logs.lines)
	}
	if n := p.calls.Load(); n != 2 {
		t.Errorf("load called %d times, want 2 (redis's first use, then the fallback's)", n)
	}
}

// dayBounds and monthBounds are the store's quota periods containing t.
func dayBounds(t time.Time) (time.Time, time.Time) { return store.Day.Start(t), store.Day.End(t) }

func monthBounds(t time.Time) (time.Time, time.Time) {
	return store.Month.Start(t), store.Month.End(t)
}

// today is the UTC day a test that counts in Redis with the real clock
// (whose counters expire with their period) runs in, from start to end.
func today(t *testing.T) (time.Time, time.Time) {
	testservers.RoomInPeriod(t, time.Now, testservers.Day, 10*time.Second)
	return dayBounds(time.Now())
}

// Two Redis outages in one quota period never let a node send past the
// quota: what the fallback counted in the first goes to Redis when it
// answers again, and the second starts from the store's count rather than
// from the first's counters. (Before, the fallback's counter from the first
// outage went on in the second, missing everything sent through Redis in
// between: 180 recipients on a quota of 100.)
func TestTwoRedisOutagesInAPeriodStayWithinTheQuota(t *testing.T) {
	srv := testservers.StartRedis(t)
	ctx := context.Background()
	eachRedisQuotaMode(t, srv, "outages-", 300*time.Millisecond, func(t *testing.T, s *quotaSender, opts RedisOptions) {
		admin := newClient(t, srv.Addr)
		outage := func() {
			if err := admin.Do(ctx, "CLIENT", "PAUSE", 2500, "WRITE").Err(); err != nil {
				t.Fatal(err)
			}
		}
		for range 3 {
			s.send()
		}
		outage()
		for range 3 {
			s.send()
		}
		time.Sleep(2600 * time.Millisecond) // the pause ends
		s.send()                            // Redis answers: the fallback's count goes to it
		rkey := quotaRedisKey(opts.withDefaults(), "key_a", s.start)
		deadline := time.Now().Add(5 * time.Second)
		for n, _ := admin.Get(ctx, rkey).Int64(); n < s.sent && time.Now().Before(deadline); n, _ = admin.Get(ctx, rkey).Int64() {
			time.Sleep(20 * time.Millisecond)
		}
		if n, _ := admin.Get(ctx, rkey).Int64(); n < s.sent {
			t.Errorf("Redis counts %d after the outage, want at least the %d sent", n, s.sent)
		}
		outage()
		for range 8 {
			s.send()
		}
		if s.sent > 100 {
			t.Errorf("%d recipients sent on a quota of 100 across two outages", s.sent)
		}
		time.Sleep(2600 * time.Millisecond)
	})
}

// quotaSender sends 10 recipients at a time on "key_a", whose quota is 100
// a day, each send 1.5 s after the last (past an outage's retry interval),
// the store (st) holding at once what was sent.
type quotaSender struct {
	t          *testing.T
	q          Quotas
	st         persisted
	now        time.Time
	start, end time.Time
	sent       int64
}

func (s *quotaSender) send() bool {
	s.now = s.now.Add(1500 * time.Millisecond)
	r, err := s.q.Reserve(context.Background(), "key_a", 100, 10, s.start, s.end, s.st.load, s.now)
	if err != nil {
		s.t.Fatal(err)
	}
	if r.Allowed {
		s.sent += 10
		s.st.add(10)
	}
	return r.Allowed
}

// eachRedisQuotaMode runs spec with a quotaSender through RedisQuotas and
// through LeasedQuotas on srv, each under its own key prefix.
func eachRedisQuotaMode(t *testing.T, srv *testservers.Redis, prefix string, timeout time.Duration,
	spec func(t *testing.T, s *quotaSender, opts RedisOptions)) {
	for _, mode := range []struct {
		name string
		make func(redis.UniversalClient, RedisOptions) Quotas
	}{
		{"exact", func(c redis.UniversalClient, o RedisOptions) Quotas { return NewRedisQuotas(c, NewLocalQuotas(), o) }},
		{"leased", func(c redis.UniversalClient, o RedisOptions) Quotas {
			q := NewLeasedQuotas(c, NewLocalQuotas(), o, time.Hour)
			t.Cleanup(q.Close)
			return q
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			opts := RedisOptions{Timeout: timeout, Prefix: prefix + mode.name + ":"}
			s := &quotaSender{t: t, q: mode.make(newClient(t, srv.Addr), opts), now: t0}
			s.start, s.end = dayBounds(t0)
			spec(t, s, opts)
		})
	}
}

// A Redis that comes back without its data (a restart without persistence)
// after an outage: the key's counter is loaded from the store, which holds
// what the fallback counted, so that count is not added to it again. (Before,
// it was: a key of 100 recipients was refused at 70 sent.)
func TestARedisRestartedEmptyDoesNotCountAnOutageTwice(t *testing.T) {
	srv := testservers.StartRedis(t)
	eachRedisQuotaMode(t, srv, "restart-", slowMachine, func(t *testing.T, s *quotaSender, opts RedisOptions) {
		admin := newClient(t, srv.Addr)
		for range 3 {
			s.send()
		}
		srv.Stop()
		for range 3 {
			s.send()
		}
		srv.Start() // empty
		s.send()
		rkey := quotaRedisKey(opts.withDefaults(), "key_a", s.start)
		time.Sleep(300 * time.Millisecond) // the fallback's count goes to Redis, or not
		if n, _ := admin.Get(context.Background(), rkey).Int64(); n > s.sent+100/64 {
			t.Errorf("Redis counts %d after coming back empty, want the %d sent", n, s.sent)
		}
		for s.send() {
		}
		if s.sent != 100 {
			t.Errorf("%d recipients sent on a quota of 100, want 100", s.sent)
		}
	})
}

// One node loses Redis while another keeps it and loads the key's counter
// from the store meanwhile (a new period, or a counter evicted): the first
// node's outage sends before that load are in the count loaded, those after
// it are not. When Redis answers the first node again, the counter is
// raised to the store's count: every send counted once. (Adding the whole
// outage counted the first part twice; skipping a counter loaded since the
// outage began lost the second part.)
func TestAnOutageOfOneNodeCountsOnceWhenAnotherLoadedTheCounter(t *testing.T) {
	ctx := context.Background()
	inQuotaModes(t, func(t *testing.T, mode, addr string, admin *redis.Client) {
		aClient, reach := partitioned(t, admin, addr, "node-a-"+mode)
		opts := RedisOptions{Timeout: slowMachine, Prefix: "partition-" + mode + ":"}
		make := func(c redis.UniversalClient) Quotas {
			q := quotaNode(mode, c, opts)
			t.Cleanup(q.Close)
			return q
		}
		a, b := make(aClient), make(newClient(t, addr))
		start, end := dayBounds(t0)
		st := &persisted{} // the store: what both nodes sent, written at once
		now := t0
		send := func(q Quotas) {
			t.Helper()
			now = now.Add(1500 * time.Millisecond) // past an outage's retry interval
			r, err := q.Reserve(ctx, "key_a", 1000, 10, start, end, st.load, now)
			if err != nil || !r.Allowed {
				t.Fatalf("a send: %+v, %v", r, err)
			}
			st.add(10)
		}
		send(a)
		reach(false) // node a loses Redis
		send(a)
		send(a)
		// Node b loads the counter afresh (here: Redis lost it).
		rkey := quotaRedisKey(opts.withDefaults(), "key_a", start)
		admin.Del(ctx, rkey)
		send(b)
		send(a)
		send(a)
		send(a)
		send(b)
		reach(true) // node a has Redis again: its next send ends its outage
		send(a)
		var n int64
		sent := st.add(0)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if n, _ = admin.Get(ctx, rkey).Int64(); n >= sent-10 {
				break
			}
		}
		time.Sleep(200 * time.Millisecond) // anything more would come now
		n, _ = admin.Get(ctx, rkey).Int64()
		// The send that ended the outage is counted in Redis, and not
		// yet in the store when the recovery, in its own goroutine,
		// reads the store's count: raised to a count read before it,
		// the counter leaves it out (docs/cluster.md). The recovery
		// reads the store either side of the test's add, so either
		// count is right; adding the outage's counts again (110 exact,
		// 115 leased) or not raising the counter (60, 75) is not.
		if last := int64(10); n < sent-last || n > sent+1000/64 {
			t.Errorf("Redis counts %d of the %d recipients both nodes sent, want every one once "+
				"(the last send's %d may be left out)", n, sent, last)
		}
	})
}

// Recipients Redis counts after the node stopped waiting (a Redis slower
// than the timeout for a moment: here busy with a slow script), while the
// node decided the send on its own, are given back: the send counts once.
// (Before, they stayed counted in Redis until the period ended: the send
// counted twice, and with leases a block no send spent.)
func TestRecipientsCountedAfterTheTimeoutCountOnce(t *testing.T) {
	ctx := context.Background()
	inQuotaModes(t, func(t *testing.T, mode, addr string, admin *redis.Client) {
		client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
		defer client.Close()
		if err := Warm(ctx, client); err != nil {
			t.Fatal(err)
		}
		opts := RedisOptions{Timeout: lateTimeout, Prefix: "late-" + mode + ":"}
		q := quotaNode(mode, client, opts)
		closeQuotas := q.Close
		s := &quotaSender{t: t, q: q, now: t0}
		s.start, s.end = dayBounds(t0)
		s.send()
		s.send()
		busyRedis(t, addr, lateBusy)
		s.send() // the fallback counts it; Redis does too, later
		if f := q.(interface{ Fallbacks() uint64 }).Fallbacks(); f != 1 {
			t.Fatalf("%d sends fell back while Redis was busy, want 1", f)
		}
		time.Sleep(lateBusy)
		for range 3 {
			s.send() // Redis answers: the outage ends
		}
		closeQuotas() // leases: every block held goes back
		rkey := quotaRedisKey(opts.withDefaults(), "key_a", s.start)
		var n int64
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if n, _ = admin.Get(ctx, rkey).Int64(); n == s.sent {
				break
			}
		}
		if n != s.sent {
			t.Errorf("Redis counts %d recipients of the %d sent, want each counted once", n, s.sent)
		}
	})
}

// A node that stops after a Redis outage, before a send of the key has
// asked Redis again, adds what it counted on its own to Redis's counter as
// it stops: the node started next (or any other) goes on from that
// counter, which must hold those recipients. (Before, they were forgotten
// with the node, and a key with a quota of 100 sent 130.) A node that stops
// while Redis still does not answer says at ERROR how many recipients
// Redis's counters miss, and of which keys.
func TestANodeStoppedAfterARedisOutageLeavesItsCountInRedis(t *testing.T) {
	srv := testservers.StartRedis(t)
	admin := newClient(t, srv.Addr)
	for _, mode := range []string{"exact", "leased"} {
		for _, redisBack := range []bool{true, false} {
			name := mode + "/redis back before the stop"
			if !redisBack {
				name = mode + "/redis still unreachable at the stop"
			}
			t.Run(name, func(t *testing.T) {
				user := fmt.Sprintf("stopped-%s-%t", mode, redisBack)
				aClient, reach := partitioned(t, admin, srv.Addr, user)
				errs := &logRecorder{}
				opts := RedisOptions{Timeout: slowMachine, Prefix: user + ":", Errorf: errs.Logf}
				node := func(c redis.UniversalClient) closingQuotas { return quotaNode(mode, c, opts) }
				a := node(aClient)
				s := &quotaSender{t: t, q: a, now: t0}
				s.start, s.end = dayBounds(t0)
				for range 3 {
					s.send()
				}
				reach(false)
				for range 3 {
					s.send()
				}
				if redisBack {
					reach(true) // no send of the key follows before the stop
				}
				a.Close() // the node stops
				lost := errs.count("30 recipients")
				if !redisBack {
					if lost != 1 {
						t.Errorf("%d ERROR lines name the 30 recipients counted during the outage, want 1: %q", lost, errs.lines)
					}
					return
				}
				if lost > 0 {
					t.Errorf("recipients said to be missing with Redis answering at the stop: %q", errs.lines)
				}
				b := node(newClient(t, srv.Addr))
				defer b.Close()
				s.q = b
				for s.send() {
				}
				if s.sent != 100 {
					t.Errorf("%d recipients sent on a quota of 100 by a node and the one started after it, want 100", s.sent)
				}
			})
		}
	}
}

// A node stopped while a reservation Redis was slow to answer is still
// under way waits for that answer before it adds its fallback's count and
// its client is closed: the answer takes back what Redis counted late, and
// the send, counted by the fallback, reaches Redis once. (Before, the
// client was closed first: the late answer was never read, so a lease's
// block stayed counted in Redis (31 of 30 sent), and the stop, its own
// calls waiting behind Redis's late work, said at ERROR that the send's
// recipients were missing from Redis, which had counted them; had Redis
// taken the fallback's count too, the send counted twice.)
func TestANodeStoppedWhileRedisIsSlowCountsASendOnce(t *testing.T) {
	ctx := context.Background()
	inQuotaModes(t, func(t *testing.T, mode, addr string, admin *redis.Client) {
		// Idle connections kept, as the gateway's client keeps them
		// (newRedisClient): the stop's calls need not wait for one.
		client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1, MinIdleConns: 2})
		if err := Warm(ctx, client); err != nil {
			t.Fatal(err)
		}
		errs := &logRecorder{}
		opts := RedisOptions{Timeout: lateTimeout, Prefix: "slowstop-" + mode + ":", Errorf: errs.Logf}
		q := quotaNode(mode, client, opts)
		s := &quotaSender{t: t, q: q, now: t0}
		s.start, s.end = dayBounds(t0)
		s.send()
		s.send()
		busyRedis(t, addr, lateBusy)
		s.send()  // the fallback counts it; Redis does too, later
		q.Close() // the node stops (sharedLimits.Destruct)
		client.Close()
		rkey := quotaRedisKey(opts.withDefaults(), "key_a", s.start)
		time.Sleep(time.Second) // Redis runs what it was sent, late or not
		if n, _ := admin.Get(ctx, rkey).Int64(); n != s.sent {
			t.Errorf("Redis counts %d recipients of the %d sent, want each counted once", n, s.sent)
		}
		if lost := errs.count("recipients"); lost > 0 {
			t.Errorf("recipients said to be missing, with Redis answering within 2 s: %q", errs.lines)
		}
	})
}

// A node stopped while moving its outage counts to Redis does not wait for
// that move key by key: a store that does not answer holds each key whose
// counter another node loaded meanwhile for the store's 5 s (the count is
// read again), and a stop or reload waited for all of them. The stop ends
// the move, and adds what it left within its own bound, or says at ERROR
// which recipients Redis misses.
func TestANodeStoppedDuringItsOutageRecoveryDoesNotWaitForIt(t *testing.T) {
	ctx := context.Background()
	inQuotaModes(t, func(t *testing.T, mode, addr string, admin *redis.Client) {
		user := "recovering-" + mode
		client, reach := partitioned(t, admin, addr, user)
		errs := &logRecorder{}
		opts := RedisOptions{Timeout: 500 * time.Millisecond, Prefix: user + ":", Errorf: errs.Logf}
		q := quotaNode(mode, client, opts)
		var storeDown atomic.Bool
		load := func(ctx context.Context) (int64, error) {
			if storeDown.Load() {
				<-ctx.Done() // a store that does not answer
				return 0, ctx.Err()
			}
			return 0, nil
		}
		start, end := dayBounds(t0)
		now := t0
		reserve := func(key string) {
			now = now.Add(1500 * time.Millisecond)
			if _, err := q.Reserve(ctx, key, 1000, 10, start, end, load, now); err != nil {
				t.Fatal(err)
			}
		}
		keys := []string{"key_0", "key_1", "key_2", "key_3"}
		for _, k := range keys {
			reserve(k)
		}
		reach(false)
		for _, k := range keys[1:] {
			reserve(k) // a lease: from its block
			reserve(k) // counted on its own
		}
		want := "30 recipients" // 10 a key
		if mode == "exact" {
			want = "60 recipients"
		}
		// Another node loaded these counters during the outage: the
		// recovery reads the store's count for them.
		for _, k := range keys[1:] {
			rkey := quotaRedisKey(opts.withDefaults(), k, start)
			admin.Set(ctx, loadedKey(opts.withDefaults(), rkey), now.Add(time.Hour).UnixMilli(), time.Hour)
		}
		storeDown.Store(true)
		reach(true)
		reserve("key_0") // a lease: from its block
		reserve("key_0") // Redis answers: the recovery starts, and waits for the store
		time.Sleep(100 * time.Millisecond)
		began := time.Now()
		q.Close() // the node stops
		if took := time.Since(began); took > 3*time.Second {
			t.Errorf("the stop took %v, waiting for the recovery of 3 keys from a store that does not answer; want at most its own bound (1 s)", took)
		}
		if n := errs.count(want); n != 1 {
			t.Errorf("%d ERROR lines name the %s Redis did not take, want 1: %q", n, want, errs.lines)
		}
	})
}

// When Redis answers a node again after its outage but refuses to take
// what the node counted on its own meanwhile (here: the node's user may no
// longer touch that key's counter, its ACL narrowed as the outage ended),
// the fallback has forgotten those recipients, so Redis's counter misses
// them for good: the recovery says so at WARN, naming how many and the
// counter, and Missed (keygate_ratelimit_redis_missed_recipients_total)
// counts exactly them, once: not again when the node stops.
func TestRecipientsARecoveryCouldNotAddAreCountedAsMissed(t *testing.T) {
	ctx := context.Background()
	inQuotaModes(t, func(t *testing.T, mode, addr string, admin *redis.Client) {
		user := "unrecovered-" + mode
		client, reach := partitioned(t, admin, addr, user)
		warns, errs := &logRecorder{}, &logRecorder{}
		opts := RedisOptions{Timeout: slowMachine, Prefix: user + ":", Logf: warns.Logf, Errorf: errs.Logf}
		q := quotaNode(mode, client, opts)
		counted := q.(interface {
			Fallbacks() uint64
			Missed() uint64
		})
		start, end := dayBounds(t0)
		now := t0
		reserve := func(key string) {
			t.Helper()
			now = now.Add(1500 * time.Millisecond) // past an outage's retry interval
			if r, err := q.Reserve(ctx, key, 1000, 10, start, end, func(context.Context) (int64, error) { return 0, nil }, now); err != nil || !r.Allowed {
				t.Fatalf("a send of %s: %+v, %v", key, r, err)
			}
		}
		reserve("key_a")
		reach(false)
		for i := 0; counted.Fallbacks() < 3; i++ { // leased: the block first
			if i == 10 {
				t.Fatalf("%d of 10 sends during the outage counted on the node's own", counted.Fallbacks())
			}
			reserve("key_a")
		}
		lost := int64(10 * counted.Fallbacks())
		// Redis takes the node back, but only for key_b's keys.
		if err := admin.Do(ctx, "ACL", "SETUSER", user, "on", ">pw", "resetkeys", "~"+opts.Prefix+"*key_b*", "+@all").Err(); err != nil {
			t.Fatal(err)
		}
		reserve("key_b") // Redis answers: the recovery of key_a's count starts
		for deadline := time.Now().Add(5 * time.Second); counted.Missed() == 0 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // anything more would come now
		if got := counted.Missed(); got != uint64(lost) {
			t.Errorf("Missed = %d after Redis refused the %d recipients counted during the outage, want %d", got, lost, lost)
		}
		rkey := quotaRedisKey(opts.withDefaults(), "key_a", start)
		if n := warns.count(fmt.Sprintf("adding the %d recipients counted during the redis outage to %s: NOPERM", lost, rkey)); n != 1 {
			t.Errorf("%d WARN lines name the %d recipients of %s Redis refused, want 1: %q", n, lost, rkey, warns.lines)
		}
		q.Close()
		if got := counted.Missed(); got != uint64(lost) {
			t.Errorf("Missed = %d once the node stopped, want still %d", got, lost)
		}
		if n := errs.count("did not take"); n != 0 {
			t.Errorf("the stop said recipients were missing that the recovery had said already: %q", errs.lines)
		}
	})
}

// A quota counter that closes while Redis does not take what it counted
// on its own during an outage hands it to its heir (the counter of the
// same Redis a reload made), which adds it to Redis's counter when Redis
// answers it: at its next call, though that call is its first, and it never
// saw the outage itself.
func TestAnHeirAddsTheOutageCountsItTookOver(t *testing.T) {
	inQuotaModes(t, func(t *testing.T, mode, addr string, admin *redis.Client) {
		user := "heir-" + mode
		client, reach := partitioned(t, admin, addr, user)
		errs := &logRecorder{}
		opts := RedisOptions{Timeout: slowMachine, Prefix: user + ":", Errorf: errs.Logf}
		type inheriting interface {
			closingQuotas
			CloseTo(Heir)
			Inherit([]Spent, time.Time)
		}
		old := quotaNode(mode, client, opts).(inheriting)
		s := &quotaSender{t: t, q: old, now: t0}
		s.start, s.end = dayBounds(t0)
		for range 3 {
			s.send()
		}
		reach(false)
		for range 3 {
			s.send() // counted by the node alone (leased: the block first)
		}
		heirClient := redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: "pw", MaxRetries: -1})
		defer heirClient.Close()
		heir := quotaNode(mode, heirClient, opts).(inheriting)
		defer heir.Close()
		took := 0
		old.CloseTo(func(spent []Spent, since time.Time) bool {
			took++
			heir.Inherit(spent, since)
			return true
		})
		if took != 1 || errs.count("did not take") != 0 {
			t.Fatalf("the close handed its outage counts over %d times, and said at ERROR %q; want once, and nothing", took, errs.lines)
		}
		reach(true)
		s.q = heir
		s.send() // the heir's first call: Redis answers, the counts go to it
		rkey := quotaRedisKey(opts.withDefaults(), "key_a", s.start)
		var n int64
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if n, _ = admin.Get(context.Background(), rkey).Int64(); n >= s.sent {
				break
			}
		}
		// Leased, the heir holds a block of the counter (quota/64), and
		// the old counter's, which it could not give back, stays counted.
		if n < s.sent || n > s.sent+2*(100/64) {
			t.Errorf("Redis counts %d of the %d recipients sent, want every one once", n, s.sent)
		}
	})
}

// closingQuotas is a Redis-backed quota counter, which a node closes when
// it stops.
type closingQuotas interface {
	Quotas
	Close()
}

// quotaNode is a node's quota counter in mode ("exact" or "leased", whose
// blocks go back only when it closes or after an hour).
func quotaNode(mode string, c redis.UniversalClient, opts RedisOptions) closingQuotas {
	if mode == "exact" {
		return NewRedisQuotas(c, NewLocalQuotas(), opts)
	}
	return NewLeasedQuotas(c, NewLocalQuotas(), opts, time.Hour)
}

// partitioned is a client of the Redis at addr as a user of its own, and
// reach, which cuts it off (false) or lets it back (true): a node's outage
// as a partition makes it, with Redis keeping its counters and nothing the
// node sent done late.
func partitioned(t *testing.T, admin *redis.Client, addr, user string) (c *redis.Client, reach func(bool)) {
	t.Helper()
	reach = func(on bool) {
		t.Helper()
		state := map[bool]string{true: "on", false: "off"}[on]
		if err := admin.Do(context.Background(), "ACL", "SETUSER", user, state, ">pw", "~*", "+@all").Err(); err != nil {
			t.Fatal(err)
		}
		if !on {
			admin.Do(context.Background(), "CLIENT", "KILL", "USER", user)
		}
	}
	reach(true)
	c = redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: "pw", MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c, reach
}

// inQuotaModes runs test for each way a node counts a quota with Redis
// (exact: every send asks Redis; leased: blocks of recipients), on one
// throwaway Redis server; admin is a client of it with every right.
func inQuotaModes(t *testing.T, test func(t *testing.T, mode, addr string, admin *redis.Client)) {
	srv := testservers.StartRedis(t)
	admin := newClient(t, srv.Addr)
	for _, mode := range []string{"exact", "leased"} {
		t.Run(mode, func(t *testing.T) { test(t, mode, srv.Addr, admin) })
	}
}

// A send a node counts in a day that has already ended on Redis's clock
// (the node's clock a second behind Redis's, or a send made in the day's
// last moment reaching Redis after midnight) is counted in that day's
// counter, from the store's count, and the counter still expires. (Before,
// Redis made the counter already expired: it dropped the store's count at
// once and counted the send in a counter of its own with no expiry, which
// it kept for ever and the day's next sends went on from.)
func TestACounterForADayEndedOnRedissClockCountsAndExpires(t *testing.T) {
	srv := testservers.StartRedis(t)
	admin := newClient(t, srv.Addr)
	end := time.Now().Add(-1500 * time.Millisecond) // the day ended 1.5 s ago, for Redis
	start := end.Add(-24 * time.Hour)
	nodeNow := end.Add(-time.Second) // a node whose clock is 2.5 s behind
	for _, c := range []struct {
		name string
		q    Quotas
	}{
		{"exact", NewRedisQuotas(newClient(t, srv.Addr), NewLocalQuotas(), RedisOptions{Timeout: slowMachine})},
		{"leased", newLeasedQuotas(t, srv.Addr, time.Hour)},
	} {
		key := "key_late_" + c.name
		p := &persisted{count: 5}
		for i, want := range []int64{7, 10} {
			r, err := c.q.Reserve(context.Background(), key, 100, []int64{2, 3}[i], start, end, p.load, nodeNow)
			if err != nil || !r.Allowed || r.Used != want {
				t.Errorf("%s: send %d: %+v, %v; want allowed and %d of the day used (the store's 5 and the sends)", c.name, i+1, r, err, want)
			}
		}
		rkey := quotaRedisKey(RedisOptions{}.withDefaults(), key, start)
		for _, k := range []string{rkey, loadedKey(RedisOptions{}.withDefaults(), rkey)} {
			if ttl, err := admin.PTTL(context.Background(), k).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
				t.Errorf("%s: %s expires in %v (%v); want within a minute (-1ns is never, -2ns gone)", c.name, k, ttl, err)
			}
		}
	}
}

// A node a second behind Redis's clock asking for more of a day's quota
// in that second finds the counter it was counting on, and reports no lost
// counter. (Before, the counter expired at the period's end on Redis's
// clock, and the node reported it lost, as after a Redis restart without
// persistence: KeygateRedisLostQuotaCounters fired at midnight.)
func TestANodeBehindRedissClockLosesNoCounterAtADaysEnd(t *testing.T) {
	srv := testservers.StartRedis(t)
	q := newLeasedQuotas(t, srv.Addr, time.Hour)
	end := time.Now().Add(300 * time.Millisecond) // the day ends in 300 ms, for Redis
	start := end.Add(-24 * time.Hour)
	p := &persisted{count: 5}
	if r, err := q.Reserve(context.Background(), "key_behind", 6400, 10, start, end, p.load, end.Add(-2*time.Second)); err != nil || !r.Allowed {
		t.Fatalf("%+v, %v", r, err)
	}
	time.Sleep(500 * time.Millisecond) // Redis's clock past the day's end; the node's a second before it
	r, err := q.Reserve(context.Background(), "key_behind", 6400, 1000, start, end, p.load, end.Add(-time.Second))
	if err != nil || !r.Allowed || r.Used != 1015 {
		t.Errorf("a second before the day's end on the node: %+v, %v; want allowed and 1,015 of the day used", r, err)
	}
	if n := q.LostCounters(); n != 0 {
		t.Errorf("%d counters reported lost, want none", n)
	}
}
