package ratelimit

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// Limits whose refill rate is a whole number of tokens per second, so that
// the expected token counts are exact in floating point.
var (
	tenPer10s   = Limit{N: 10, Per: 10 * time.Second}
	onePerSecB5 = Limit{N: 1, Per: time.Second, Burst: 5}
	perMinute20 = Limit{N: 20, Per: time.Minute} // failed_auth_limit's default
)

func TestLocalBucketMath(t *testing.T) {
	tests := []struct {
		name  string
		limit Limit
		spent int           // Allow calls at t0 before the checked call
		after time.Duration // when the checked call is made, from t0
		peek  bool
		want  Result
	}{
		{
			name: "a new bucket is full, so the first request leaves Burst-1", limit: tenPer10s,
			want: Result{Allowed: true, Remaining: 9, Reset: time.Second},
		},
		{
			name: "Burst 0 means N requests may pass at once", limit: tenPer10s, spent: 9,
			want: Result{Allowed: true, Remaining: 0, Reset: 10 * time.Second},
		},
		{
			name: "the request after the burst is denied until one token refills", limit: tenPer10s, spent: 10,
			want: Result{Allowed: false, Remaining: 0, Reset: 10 * time.Second, RetryAfter: time.Second},
		},
		{
			name: "a partly refilled token counts for RetryAfter but not Remaining", limit: tenPer10s, spent: 10, after: 400 * time.Millisecond,
			want: Result{Allowed: false, Remaining: 0, Reset: 9600 * time.Millisecond, RetryAfter: 600 * time.Millisecond},
		},
		{
			name: "tokens refill at N per Per", limit: tenPer10s, spent: 10, after: 5 * time.Second,
			want: Result{Allowed: true, Remaining: 4, Reset: 6 * time.Second},
		},
		{
			name: "an idle bucket never holds more than Burst", limit: tenPer10s, spent: 10, after: time.Hour,
			want: Result{Allowed: true, Remaining: 9, Reset: time.Second},
		},
		{
			name: "Burst above N allows Burst requests at once", limit: onePerSecB5, spent: 4,
			want: Result{Allowed: true, Remaining: 0, Reset: 5 * time.Second},
		},
		{
			name: "Burst above N refills at N per Per", limit: onePerSecB5, spent: 5,
			want: Result{Allowed: false, Remaining: 0, Reset: 5 * time.Second, RetryAfter: time.Second},
		},
		{
			name: "Peek on an unknown key reports a full bucket", limit: tenPer10s, peek: true,
			want: Result{Allowed: true, Remaining: 10},
		},
		{
			name: "Peek reports tokens without taking one", limit: tenPer10s, spent: 3, peek: true,
			want: Result{Allowed: true, Remaining: 7, Reset: 3 * time.Second},
		},
		{
			name: "Peek on an empty bucket reports the denial Allow would give", limit: tenPer10s, spent: 10, peek: true,
			want: Result{Allowed: false, Remaining: 0, Reset: 10 * time.Second, RetryAfter: time.Second},
		},
		{
			name: "an invalid limit denies rather than letting traffic through", limit: Limit{N: 0, Per: time.Second},
			want: Result{Allowed: false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLocal()
			ctx := context.Background()
			for range tt.spent {
				l.Allow(ctx, "key_a", tt.limit, t0)
			}
			var got Result
			if tt.peek {
				got = l.Peek("key_a", tt.limit, t0.Add(tt.after))
			} else {
				got = l.Allow(ctx, "key_a", tt.limit, t0.Add(tt.after))
			}
			tt.want.Limit = tt.limit
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestLocalPeekNeitherTakesNorCreates(t *testing.T) {
	l := NewLocal()
	for range 20 {
		l.Peek("key_a", tenPer10s, t0)
	}
	if n := l.Len(); n != 0 {
		t.Errorf("Len after Peek on an unknown key = %d, want 0", n)
	}
	l.Allow(context.Background(), "key_a", tenPer10s, t0)
	for range 20 {
		l.Peek("key_a", tenPer10s, t0)
	}
	if got := l.Allow(context.Background(), "key_a", tenPer10s, t0).Remaining; got != 8 {
		t.Errorf("Remaining after 2 Allows and 20 Peeks = %d, want 8", got)
	}
}

func TestLocalLimitChangeKeepsState(t *testing.T) {
	tests := []struct {
		name  string
		spent int // Allow calls under tenPer10s at t0
		next  Limit
		want  Result
	}{
		{
			name: "a raised limit does not refill the tokens already spent", spent: 10,
			next: Limit{N: 20, Per: 10 * time.Second},
			want: Result{Allowed: false, Remaining: 0, Reset: 10 * time.Second, RetryAfter: 500 * time.Millisecond},
		},
		{
			name: "a raised burst keeps the tokens left and grows toward the new size", spent: 2,
			next: Limit{N: 10, Per: 10 * time.Second, Burst: 20},
			want: Result{Allowed: true, Remaining: 7, Reset: 13 * time.Second},
		},
		{
			name: "a lowered burst caps the tokens left at the new size", spent: 2,
			next: Limit{N: 10, Per: 10 * time.Second, Burst: 5},
			want: Result{Allowed: true, Remaining: 4, Reset: time.Second},
		},
		{
			name: "a lowered rate slows the refill of an empty bucket", spent: 10,
			next: Limit{N: 5, Per: 10 * time.Second},
			want: Result{Allowed: false, Remaining: 0, Reset: 10 * time.Second, RetryAfter: 2 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLocal()
			ctx := context.Background()
			for range tt.spent {
				l.Allow(ctx, "key_a", tenPer10s, t0)
			}
			got := l.Allow(ctx, "key_a", tt.next, t0)
			tt.want.Limit = tt.next
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if n := l.Len(); n != 1 {
				t.Errorf("Len = %d, want 1 bucket (adjusted, not replaced)", n)
			}
		})
	}
}

func TestLocalSweepEvictsOnlyFullBuckets(t *testing.T) {
	l := NewLocal()
	ctx := context.Background()
	l.Allow(ctx, "key_idle", tenPer10s, t0)                    // full again at t0+1s
	l.Allow(ctx, "key_busy", tenPer10s, t0)                    // 9 tokens at t0
	l.Allow(ctx, "key_busy", tenPer10s, t0.Add(5*time.Second)) // 9 tokens at t0+5s, full at t0+6s
	l.Peek("key_peeked", tenPer10s, t0)

	steps := []struct {
		at            time.Duration
		evicted, left int
	}{
		{at: 500 * time.Millisecond, evicted: 0, left: 2},
		{at: 5500 * time.Millisecond, evicted: 1, left: 1},
		{at: 6 * time.Second, evicted: 1, left: 0},
	}
	for _, s := range steps {
		if got := l.Sweep(t0.Add(s.at)); got != s.evicted {
			t.Errorf("Sweep at t0+%v evicted %d, want %d", s.at, got, s.evicted)
		}
		if got := l.Len(); got != s.left {
			t.Errorf("Len after Sweep at t0+%v = %d, want %d", s.at, got, s.left)
		}
	}
	if got := l.Allow(ctx, "key_busy", tenPer10s, t0.Add(6*time.Second)); got.Remaining != 9 {
		t.Errorf("Allow after eviction: Remaining %d, want 9 as if never evicted", got.Remaining)
	}
}

func TestLocalConcurrentAllowGrantsExactlyBurst(t *testing.T) {
	l := NewLocal()
	lim := Limit{N: 100, Per: time.Hour}
	allowed := make(chan bool, 1000)
	done := make(chan struct{})
	for range 50 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 20 {
				allowed <- l.Allow(context.Background(), "key_a", lim, t0).Allowed
			}
		}()
	}
	for range 50 {
		<-done
	}
	close(allowed)
	n := 0
	for ok := range allowed {
		if ok {
			n++
		}
	}
	if n != 100 {
		t.Errorf("%d of 1000 concurrent requests allowed, want 100", n)
	}
}

func TestLocalMemoryPerBucket(t *testing.T) {
	const buckets = 100_000
	keys := make([]string, buckets)
	for i := range keys {
		keys[i] = fmt.Sprintf("key_%020d", i) // the length of a real key id
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l := NewLocal()
	for _, k := range keys {
		l.Allow(context.Background(), k, tenPer10s, t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perBucket := float64(after.HeapAlloc-before.HeapAlloc) / buckets
	t.Logf("%.0f bytes per bucket over %d buckets (key strings excluded: they belong to the caller)", perBucket, buckets)
	if perBucket > 400 {
		t.Errorf("%.0f bytes per bucket, want at most 400", perBucket)
	}
	runtime.KeepAlive(l)
}

// A bounded Local (failed_auth_limit's, by client address) holds at most
// its bound however many keys come, and a key that finds it full is still
// given a full bucket: nobody is refused for the bound.
func TestBoundedLocalHoldsAtMostItsBound(t *testing.T) {
	const bound = 1024
	l := NewBoundedLocal(bound)
	if l.MaxBuckets() != bound {
		t.Fatalf("MaxBuckets %d, want %d", l.MaxBuckets(), bound)
	}
	ctx := context.Background()
	for i := range 10 * bound {
		if r := l.Allow(ctx, "client_"+strconv.Itoa(i), perMinute20, t0); !r.Allowed || r.Remaining != 19 {
			t.Fatalf("new client %d at the bound: %+v, want a full bucket's first token", i, r)
		}
	}
	if n := l.Len(); n > bound {
		t.Errorf("%d buckets after %d keys, want at most %d", n, 10*bound, bound)
	}
	if n := l.Crowded(); n < 9*bound {
		t.Errorf("%d evictions counted, want at least %d", n, 9*bound)
	}
	if NewLocal().MaxBuckets() != 0 {
		t.Error("NewLocal has a bound")
	}
}

// Filling a bounded Local with new keys does not reset a bucket that
// refuses: the fullest of a sample is evicted, and new keys' buckets, one
// token spent, are fuller than an attacker's past its limit.
func TestBoundedLocalKeepsARefusingBucketThroughChurn(t *testing.T) {
	const bound = 1024
	l := NewBoundedLocal(bound)
	ctx := context.Background()
	for range 20 {
		l.Allow(ctx, "attacker", perMinute20, t0)
	}
	if l.Peek("attacker", perMinute20, t0).Allowed {
		t.Fatal("the attacker is not refused after 20 failures")
	}
	// A second later (a third of a token refilled), ten times the bound
	// of new keys, each failing once.
	at := t0.Add(time.Second)
	for i := range 10 * bound {
		l.Allow(ctx, "churn_"+strconv.Itoa(i), perMinute20, at)
	}
	if r := l.Peek("attacker", perMinute20, at); r.Allowed {
		t.Errorf("the attacker after %d new keys filled the table: %+v, want refused (its bucket was evicted)", 10*bound, r)
	}
}

// What one client of failed_auth_limit costs: its bucket and its name (an
// IPv6 /64, the longest a client is named by), which the Local keeps.
func TestBoundedLocalMemoryPerClient(t *testing.T) {
	const bound, clients = 65_536, 200_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l := NewBoundedLocal(bound)
	for i := range clients {
		// Made here, as a gateway makes each request's: the table keeps
		// the names it holds, the others are garbage.
		name := fmt.Sprintf("2001:db8:%x:%x::/64", 0x8000+i>>16, 0x8000+i&0xffff)
		l.Allow(context.Background(), name, perMinute20, t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / bound
	t.Logf("%d clients held of %d, %.0f bytes each with its name, %.1f MB in all",
		l.Len(), clients, per, float64(after.HeapAlloc-before.HeapAlloc)/1e6)
	if l.Len() > bound || per > 300 {
		t.Errorf("%d clients held at %.0f bytes each, want at most %d at 300 bytes", l.Len(), per, bound)
	}
	runtime.KeepAlive(l)
}

func BenchmarkLocalAllow(b *testing.B) {
	l := NewLocal()
	ctx := context.Background()
	lim := Limit{N: 1_000_000_000, Per: time.Second}
	now := time.Now()
	l.Allow(ctx, "key_a", lim, now)
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(ctx, "key_a", lim, now)
	}
}

func BenchmarkLocalAllowParallel(b *testing.B) {
	l := NewLocal()
	ctx := context.Background()
	lim := Limit{N: 1_000_000_000, Per: time.Second}
	now := time.Now()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "key_" + strconv.Itoa(i)
		l.Allow(ctx, keys[i], lim, now)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(ctx, keys[i%len(keys)], lim, now)
			i++
		}
	})
}
