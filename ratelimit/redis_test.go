package ratelimit

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

// slowMachine is the Redis timeout of tests that are not about timeouts:
// a loaded CI machine running -race can take longer than the 100ms default
// for a first round trip, and a fallback there would be a false failure.
const slowMachine = 2 * time.Second

// logRecorder collects Logf lines so tests can count them.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

// count is how many lines contain substr.
func (r *logRecorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func newClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRedisLimitIsSharedByNodes(t *testing.T) {
	srv := testservers.StartRedis(t)
	nodes := []*Redis{
		NewRedis(newClient(t, srv.Addr), NewLocal(), RedisOptions{Timeout: slowMachine}),
		NewRedis(newClient(t, srv.Addr), NewLocal(), RedisOptions{Timeout: slowMachine}),
	}
	lim := Limit{N: 10, Per: time.Minute}
	allowed := 0
	for i := range 30 {
		r := nodes[i%2].Allow(context.Background(), "key_shared", lim, time.Now())
		if r.Allowed {
			allowed++
			if r.RetryAfter != 0 {
				t.Errorf("request %d allowed with RetryAfter %v, want 0", i, r.RetryAfter)
			}
		} else if r.RetryAfter <= 0 || r.RetryAfter > 6*time.Second {
			t.Errorf("request %d denied with RetryAfter %v, want (0, 6s]", i, r.RetryAfter)
		}
		if r.Remaining < 0 || r.Reset < 0 || r.Reset > time.Minute {
			t.Errorf("request %d: Remaining %d, Reset %v out of range", i, r.Remaining, r.Reset)
		}
	}
	if allowed != 10 {
		t.Errorf("%d of 30 requests allowed across two nodes, want 10", allowed)
	}
	for i, n := range nodes {
		if f := n.Fallbacks(); f != 0 {
			t.Errorf("node %d: Fallbacks = %d, want 0 with redis up", i, f)
		}
	}
}

func TestRedisOutageFallsBackAndRecovers(t *testing.T) {
	srv := testservers.StartRedis(t)
	logs := &logRecorder{}
	r := NewRedis(newClient(t, srv.Addr), NewLocal(), RedisOptions{Timeout: slowMachine, Logf: logs.Logf})
	lim := Limit{N: 100, Per: time.Minute}
	ctx := context.Background()
	now := time.Now()

	if !r.Allow(ctx, "key_a", lim, now).Allowed || r.Fallbacks() != 0 {
		t.Fatalf("first request with redis up: want allowed by redis")
	}

	srv.Stop()
	for i := range 20 {
		if !r.Allow(ctx, "key_a", lim, now).Allowed {
			t.Errorf("request %d during the outage denied, want the local fallback to allow it", i)
		}
	}
	if f := r.Fallbacks(); f != 20 {
		t.Errorf("Fallbacks during the outage = %d, want 20", f)
	}
	if n := logs.count("unreachable"); n != 1 {
		t.Errorf("outage logged %d times, want once: %q", n, logs.lines)
	}

	// Redis is back, but within a second of the failure nobody retries it.
	srv.Start()
	r.Allow(ctx, "key_a", lim, now.Add(500*time.Millisecond))
	if f := r.Fallbacks(); f != 21 {
		t.Errorf("Fallbacks within 1s of the failure = %d, want 21 (redis not retried yet)", f)
	}
	for range 5 {
		r.Allow(ctx, "key_a", lim, now.Add(1100*time.Millisecond))
	}
	if f := r.Fallbacks(); f != 21 {
		t.Errorf("Fallbacks after the retry interval = %d, want 21 (back on redis)", f)
	}
	if n := logs.count("reachable again"); n != 1 {
		t.Errorf("recovery logged %d times, want once: %q", n, logs.lines)
	}
}

func TestRedisTimeoutFallsBack(t *testing.T) {
	srv := testservers.StartRedis(t)
	client := newClient(t, srv.Addr)
	r := NewRedis(client, NewLocal(), RedisOptions{Timeout: 50 * time.Millisecond})
	// A Redis busy with a slow script answers nobody else until it ends.
	go client.Eval(context.Background(), "local t = redis.call('TIME') while redis.call('TIME')[1] - t[1] < 2 do end", nil)
	probe := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	defer probe.Close()
	for busy := false; !busy; {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		busy = probe.Ping(ctx).Err() != nil
		cancel()
	}
	start := time.Now()
	res := r.Allow(context.Background(), "key_a", Limit{N: 10, Per: time.Minute}, start)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("Allow against a stuck redis took %v, want about the 50ms timeout", took)
	}
	if !res.Allowed || r.Fallbacks() != 1 {
		t.Errorf("Allow against a stuck redis: %+v, Fallbacks %d; want allowed by the fallback", res, r.Fallbacks())
	}
}

func BenchmarkRedisAllow(b *testing.B) {
	srv := testservers.StartRedis(b)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer client.Close()
	r := NewRedis(client, NewLocal(), RedisOptions{Timeout: slowMachine})
	lim := Limit{N: 1_000_000_000, Per: time.Second}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r.Allow(ctx, "key_a", lim, time.Now())
	}
}

// Issue 15: a node used to fall back to a full bucket, so a 30/m key that
// had spent 20 of its 30 tokens got 30 more during an outage.
func TestRedisOutageFallbackContinuesFromTheKeysState(t *testing.T) {
	srv := testservers.StartRedis(t)
	// No retries, as the gateway's client: a stopped Redis fails at once.
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer client.Close()
	r := NewRedis(client, NewLocal(), RedisOptions{Timeout: slowMachine})
	lim := Limit{N: 30, Per: time.Minute}
	ctx := context.Background()
	start := time.Now()
	allowed := 0
	for i := range 40 {
		if i == 20 {
			srv.Stop()
		}
		if r.Allow(ctx, "key_a", lim, time.Now()).Allowed {
			allowed++
		}
	}
	if r.Fallbacks() != 20 {
		t.Fatalf("Fallbacks = %d, want the 20 requests after the stop", r.Fallbacks())
	}
	// One bucket of 30, plus what refilled (30/m) while the test ran.
	want := 30 + int(time.Since(start)/(2*time.Second)) + 1
	if allowed > want {
		t.Errorf("%d of 40 requests allowed across the outage, want at most %d (one bucket, not two)", allowed, want)
	}
}

func TestLocalSeedSetsTheBucket(t *testing.T) {
	l := NewLocal()
	ctx := context.Background()
	l.Seed("key_a", tenPer10s, 3, t0)
	if got := l.Allow(ctx, "key_a", tenPer10s, t0.Add(2*time.Second)); !got.Allowed || got.Remaining != 4 {
		t.Errorf("after seeding 3 tokens and 2s of refill: %+v, want allowed with 4 left", got)
	}
	l.Allow(ctx, "key_b", tenPer10s, t0)
	l.Seed("key_b", tenPer10s, 0.5, t0)
	if got := l.Allow(ctx, "key_b", tenPer10s, t0); got.Allowed {
		t.Errorf("an existing bucket seeded with half a token: %+v, want denied", got)
	}
	l.Seed("key_c", tenPer10s, 99, t0)
	if got := l.Peek("key_c", tenPer10s, t0); got.Remaining != 10 {
		t.Errorf("seeding above the size: Remaining %d, want the size 10", got.Remaining)
	}
}

// A Redis that refuses keygate's commands (here: a password now required)
// is said as a refusal, through Errorf, not as an unreachable Redis; the
// decision falls back all the same.
func TestARefusingRedisIsLoggedAsARefusal(t *testing.T) {
	srv := testservers.StartRedis(t)
	admin := newClient(t, srv.Addr)
	warns, errs := &logRecorder{}, &logRecorder{}
	r := NewRedis(newClient(t, srv.Addr), NewLocal(), RedisOptions{Timeout: slowMachine, Logf: warns.Logf, Errorf: errs.Logf})
	if err := admin.ConfigSet(context.Background(), "requirepass", "now-needed").Err(); err != nil {
		t.Fatal(err)
	}
	if res := r.Allow(context.Background(), "key_a", Limit{N: 10, Per: time.Minute}, time.Now()); !res.Allowed || r.Fallbacks() != 1 {
		t.Fatalf("a refused call: %+v, %d fallbacks; want allowed by the fallback", res, r.Fallbacks())
	}
	if errs.count("redis refuses keygate's commands") != 1 || errs.count("NOAUTH") != 1 || warns.count("unreachable") != 0 {
		t.Errorf("logged %q at ERROR and %q at WARN; want one refusal naming NOAUTH, nothing unreachable", errs.lines, warns.lines)
	}
	if Refused(errors.New("connection refused")) || !Refused(fmt.Errorf("tls: %w", x509.UnknownAuthorityError{})) {
		t.Error("Refused: a refused connection is an outage, an unknown certificate authority a refusal")
	}
	// As a Sentinel's port answers a script.
	if err := admin.Do(context.Background(), "AUTH", "now-needed").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(context.Background(), "NOSUCHCOMMAND").Err(); !Refused(err) {
		t.Errorf("Refused(%v) = false, want a command the server does not know to be a refusal", err)
	}
}
