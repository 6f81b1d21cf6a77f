package verifier

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// fakeClock is a monotonic clock that tests move by hand.
type fakeClock struct {
	base   time.Time
	offset atomic.Int64
}

func newFakeClock() *fakeClock { return &fakeClock{base: time.Now()} }

func (c *fakeClock) now() time.Time          { return c.base.Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func newRecord(t testing.TB) *store.Record {
	t.Helper()
	return &store.Record{
		ID:     NewID(),
		Digest: DigestOf(mustGenerate(t, "kg", "live")),
		Name:   "billing",
		Env:    "live",
		Scopes: []string{"mail.send"},
	}
}

func newTestVerifier(t testing.TB, st store.Store, o Options, clock *fakeClock) *Verifier {
	t.Helper()
	now := time.Now
	if clock != nil {
		now = clock.now
	}
	if o.OnSync == nil {
		o.OnSync = func(err error) {
			if err != nil {
				t.Log(err)
			}
		}
	}
	v, err := newVerifier(st, o, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   store.Store
		o    Options
	}{
		{"no store", nil, Options{}},
		{"negative cache size", newFakeStore(), Options{MaxCost: -1}},
		{"negative NegativeTTL", newFakeStore(), Options{NegativeTTL: -time.Second}},
		{"negative PollInterval", newFakeStore(), Options{PollInterval: -time.Second}},
		{"negative StoreTimeout", newFakeStore(), Options{StoreTimeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v, err := New(tc.st, tc.o); err == nil {
				v.Close()
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

func TestNewStartsWhileStoreIsDown(t *testing.T) {
	st := newFakeStore()
	st.failWith(errors.New("connection refused"))
	v := newTestVerifier(t, st, Options{}, nil)
	if _, err := v.Lookup(context.Background(), DigestOf("kg_live_x"), time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Lookup = %v, want ErrUnavailable", err)
	}
}

// TestLookup runs each scenario as steps on a fresh verifier and store; a
// step may move the clock, break or mend the store, then looks a key up.
func TestLookup(t *testing.T) {
	down := errors.New("connection refused")
	type step struct {
		after    time.Duration // clock advance before the lookup
		storeErr error         // store failure during the lookup
		unknown  bool          // look up a digest the store does not hold
		ttl      time.Duration // the caller's cache_ttl
		wantErr  error
		reads    int64 // store reads so far
	}
	const ttl = 30 * time.Second
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"known key is read from the store once, then served from cache", []step{
			{ttl: ttl, reads: 1},
			{ttl: ttl, reads: 1},
			{after: ttl - time.Second, ttl: ttl, reads: 1},
		}},
		{"cached key is read again once older than the caller's ttl", []step{
			{ttl: ttl, reads: 1},
			{after: ttl, ttl: ttl, reads: 2},
		}},
		{"caller with a shorter ttl does not use an entry older than it", []step{
			{ttl: time.Minute, reads: 1},
			{after: 10 * time.Second, ttl: 5 * time.Second, reads: 2},
		}},
		{"entry is not used past the ttl it was filled with, whatever the caller's", []step{
			{ttl: 5 * time.Second, reads: 1},
			{after: 6 * time.Second, ttl: time.Minute, reads: 2},
		}},
		{"ttl 0 always reads the store", []step{
			{ttl: 0, reads: 1},
			{ttl: 0, reads: 2},
		}},
		{"unknown key is ErrUnknown and remembered for NegativeTTL", []step{
			{unknown: true, ttl: ttl, wantErr: ErrUnknown, reads: 1},
			{unknown: true, after: 9 * time.Second, ttl: ttl, wantErr: ErrUnknown, reads: 1},
			{unknown: true, after: time.Second, ttl: ttl, wantErr: ErrUnknown, reads: 2},
		}},
		{"unknown key is remembered no longer than the caller's ttl", []step{
			{unknown: true, ttl: 2 * time.Second, wantErr: ErrUnknown, reads: 1},
			{unknown: true, after: 2 * time.Second, ttl: ttl, wantErr: ErrUnknown, reads: 2},
		}},
		{"store error on a miss is ErrUnavailable and is not cached", []step{
			{storeErr: down, ttl: ttl, wantErr: ErrUnavailable, reads: 1},
			{after: probeEvery, ttl: ttl, reads: 2},
		}},
		{"after a store error, lookups within probeEvery are ErrUnavailable without asking it", []step{
			{storeErr: down, ttl: ttl, wantErr: ErrUnavailable, reads: 1},
			{after: probeEvery - time.Millisecond, ttl: ttl, wantErr: ErrUnavailable, reads: 1},
			{after: time.Millisecond, ttl: ttl, reads: 2},
		}},
		{"store error on an unknown key is ErrUnavailable, not ErrUnknown", []step{
			{unknown: true, storeErr: down, ttl: ttl, wantErr: ErrUnavailable, reads: 1},
		}},
		{"cached key keeps working while the store is down", []step{
			{ttl: ttl, reads: 1},
			{storeErr: down, ttl: ttl, reads: 1},
			{storeErr: down, after: ttl, ttl: ttl, wantErr: ErrUnavailable, reads: 2},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newFakeStore()
			rec := newRecord(t)
			st.put(rec)
			clock := newFakeClock()
			v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, clock)
			for i, s := range tc.steps {
				clock.advance(s.after)
				st.failWith(s.storeErr)
				d := rec.Digest
				if s.unknown {
					d = DigestOf("kg_live_unknown")
				}
				got, err := v.Lookup(context.Background(), d, s.ttl)
				v.cache.Wait() // let the asynchronous cache fill land
				if !errors.Is(err, s.wantErr) || (err == nil && got.ID != rec.ID) {
					t.Fatalf("step %d: Lookup = %v, %v; want record %s, error %v", i, got, err, rec.ID, s.wantErr)
				}
				if n := st.reads.Load(); n != s.reads {
					t.Fatalf("step %d: store read %d times, want %d", i, n, s.reads)
				}
			}
		})
	}
}

func TestLookupGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration // the caller's own deadline
	}{
		{"store slower than StoreTimeout is ErrUnavailable", time.Minute},
		{"caller whose context ends is answered ErrUnavailable at once", 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newFakeStore()
			st.block.Store(true)
			v := newTestVerifier(t, st, Options{StoreTimeout: 50 * time.Millisecond}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			_, err := v.Lookup(ctx, DigestOf("kg_live_slow"), time.Minute)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Lookup = %v, want ErrUnavailable", err)
			}
			if took := time.Since(start); took > time.Second {
				t.Fatalf("Lookup took %v", took)
			}
		})
	}
}

func TestConcurrentMissesShareOneStoreQuery(t *testing.T) {
	for _, tc := range []struct {
		name    string
		unknown bool
		wantErr error
	}{
		{"100 lookups of one known key", false, nil},
		{"100 lookups of one unknown key", true, ErrUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newFakeStore()
			rec := newRecord(t)
			st.put(rec)
			// Holding the answer back lets every goroutine pile up on it.
			slow := func() { time.Sleep(100 * time.Millisecond) }
			st.afterRead.Store(&slow)
			v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
			d := rec.Digest
			if tc.unknown {
				d = DigestOf("kg_live_unknown")
			}
			var wg sync.WaitGroup
			for range 100 {
				wg.Go(func() {
					if _, err := v.Lookup(context.Background(), d, time.Minute); !errors.Is(err, tc.wantErr) {
						t.Errorf("Lookup = %v, want %v", err, tc.wantErr)
					}
				})
			}
			wg.Wait()
			if s := v.Stats(); s.StoreQueries != 1 || st.reads.Load() != 1 {
				t.Fatalf("%d store queries (stats %+v), want 1", st.reads.Load(), s)
			}
		})
	}
}

func TestStats(t *testing.T) {
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	unknown := DigestOf("kg_live_unknown")
	for _, d := range []store.Digest{rec.Digest, rec.Digest, unknown, unknown} {
		v.Lookup(ctx, d, time.Minute)
		v.cache.Wait()
	}
	st.failWith(errors.New("down"))
	v.Lookup(ctx, DigestOf("kg_live_other"), time.Minute)
	want := Stats{Hits: 1, Misses: 3, NegativeHits: 1, StoreQueries: 3, StoreErrors: 1}
	if got := v.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

// TestChangeIsEnforcedWithinASecond covers the contract's bound for changes
// made by another process (CONTRACT.md §7).
func TestChangeIsEnforcedWithinASecond(t *testing.T) {
	for _, tc := range []struct {
		name       string
		poll       time.Duration
		notify     bool
		changesErr error
	}{
		{"revocation is seen by polling the change log", 50 * time.Millisecond, false, nil},
		{"revocation is seen at once when the store notifies", time.Hour, true, nil},
		{"unreadable change log voids the whole cache", 50 * time.Millisecond, false, errors.New("changes: timeout")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFakeStore()
			var st store.Store = fake
			notify := make(chan struct{}, 1)
			if tc.notify {
				st = notifyingStore{fake, notify}
			}
			rec := newRecord(t)
			fake.put(rec)
			v := newTestVerifier(t, st, Options{PollInterval: tc.poll}, nil)
			ctx := context.Background()
			if _, err := v.Lookup(ctx, rec.Digest, time.Hour); err != nil {
				t.Fatal(err)
			}
			v.cache.Wait()
			if tc.changesErr != nil {
				fake.changesErr.Store(&tc.changesErr)
			}

			start := time.Now()
			fake.revoke(rec.Digest)
			if tc.notify {
				notify <- struct{}{}
			}
			for {
				got, err := v.Lookup(ctx, rec.Digest, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				if got.Revoked() {
					t.Logf("revocation enforced after %v", time.Since(start))
					return
				}
				if time.Since(start) > time.Second {
					t.Fatal("revocation not enforced within 1s")
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func TestNewKeyIsFoundDespiteNegativeCache(t *testing.T) {
	st := newFakeStore()
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour, NegativeTTL: time.Hour}, nil)
	rec := newRecord(t)
	ctx := context.Background()
	if _, err := v.Lookup(ctx, rec.Digest, time.Hour); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Lookup before issue = %v, want ErrUnknown", err)
	}
	v.cache.Wait()
	st.put(rec)
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Lookup(ctx, rec.Digest, time.Hour); err != nil || got.ID != rec.ID {
		t.Fatalf("Lookup after issue and Sync = %v, %v", got, err)
	}
}

func TestSyncEnforcesOwnWritesOnTheNextLookup(t *testing.T) {
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	v.Lookup(ctx, rec.Digest, time.Hour)
	v.cache.Wait()
	st.revoke(rec.Digest)
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Lookup(ctx, rec.Digest, time.Hour); err != nil || !got.Revoked() {
		t.Fatalf("Lookup after Sync = %+v, %v; want the revoked record", got, err)
	}
}

// TestRevocationIsNeverUndoneByARacingFill races cold lookups, whose store
// answers are held back for a random while after being read, against a
// revocation. Once Invalidate has returned, no lookup may return the record
// as it was before.
func TestRevocationIsNeverUndoneByARacingFill(t *testing.T) {
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	st := newFakeStore()
	slow := func() { time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond) }
	st.afterRead.Store(&slow)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	for round := range rounds {
		rec := newRecord(t)
		st.put(rec)
		var revoked, stop atomic.Bool
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for !stop.Load() {
					after := revoked.Load()
					got, err := v.Lookup(ctx, rec.Digest, time.Hour)
					if err != nil {
						t.Errorf("round %d: Lookup: %v", round, err)
						return
					}
					if after && !got.Revoked() {
						t.Errorf("round %d: Lookup returned the unrevoked record after Invalidate returned", round)
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
		st.revoke(rec.Digest)
		v.Invalidate(rec.Digest)
		revoked.Store(true)
		time.Sleep(2 * time.Millisecond) // let stale fills land and be read
		stop.Store(true)
		wg.Wait()
		if t.Failed() {
			return
		}
	}
}

func TestPruneKeepsInvalidationsWhileAnEntryCouldPredateThem(t *testing.T) {
	const ttl = 30 * time.Second
	for _, tc := range []struct {
		name     string
		after    time.Duration
		wantKept bool
	}{
		{"record younger than the largest ttl is kept", ttl, true},
		{"record older than the largest ttl and margin is dropped", ttl + pruneMargin + time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newFakeStore()
			clock := newFakeClock()
			v := newTestVerifier(t, st, Options{PollInterval: time.Hour, NegativeTTL: time.Second}, clock)
			v.Lookup(context.Background(), DigestOf("kg_live_any"), ttl)
			v.Invalidate(DigestOf("kg_live_any"))
			clock.advance(tc.after)
			v.prune()
			if kept := len(*v.invs.Load()) == 1; kept != tc.wantKept {
				t.Fatalf("invalidation kept = %v, want %v", kept, tc.wantKept)
			}
		})
	}
}

func TestLookupHitAllocatesNothing(t *testing.T) {
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	v.Lookup(ctx, rec.Digest, time.Minute)
	v.cache.Wait()
	if n := testing.AllocsPerRun(10000, func() { v.Lookup(ctx, rec.Digest, time.Minute) }); n != 0 {
		t.Errorf("a cache hit allocates %v times, want 0", n)
	}
	if s := v.Stats(); s.StoreQueries != 1 {
		t.Errorf("%d store queries, want 1 (hits only)", s.StoreQueries)
	}
	if n := testing.AllocsPerRun(10000, func() { v.Hit(rec.Digest, time.Minute, time.Now()) }); n != 0 {
		t.Errorf("Hit allocates %v times, want 0", n)
	}
}

func TestHitAnswersFromTheCacheAloneAndCountsOnlyHits(t *testing.T) {
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	if _, ok := v.Hit(rec.Digest, time.Minute, time.Now()); ok {
		t.Fatal("Hit answered for a key the cache has never seen")
	}
	if s := v.Stats(); s.StoreQueries != 0 || s.Misses != 0 || s.Hits != 0 {
		t.Errorf("a Hit miss asked the store or counted: %+v", s)
	}
	v.Lookup(context.Background(), rec.Digest, time.Minute)
	v.cache.Wait()
	got, ok := v.Hit(rec.Digest, time.Minute, time.Now())
	if !ok || got.ID != rec.ID {
		t.Fatalf("Hit after a Lookup: %v %v", got, ok)
	}
	if _, ok := v.Hit(rec.Digest, 0, time.Now()); ok {
		t.Error("Hit answered with a cache_ttl of 0")
	}
	if s := v.Stats(); s.Hits != 1 || s.StoreQueries != 1 {
		t.Errorf("stats %+v, want one hit and one store query", s)
	}
}

func BenchmarkLookupHit(b *testing.B) {
	for _, tc := range []struct {
		name          string
		invalidations int  // live invalidation records of other keys
		after         bool // made after the key's entry was filled
	}{
		{"no invalidations", 0, false},
		{"with invalidation records", 100, false},
		{"after a change to another key", 1, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			st := newFakeStore()
			rec := newRecord(b)
			st.put(rec)
			v := newTestVerifier(b, st, Options{PollInterval: time.Hour}, nil)
			invalidate := func() {
				for range tc.invalidations {
					v.Invalidate(newRecord(b).Digest)
				}
			}
			if !tc.after {
				invalidate()
			}
			ctx := context.Background()
			v.Lookup(ctx, rec.Digest, time.Minute)
			v.cache.Wait()
			if tc.after {
				invalidate()
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := v.Lookup(ctx, rec.Digest, time.Minute); err != nil {
						b.Fatal(err)
					}
				}
			})
			if s := v.Stats(); s.StoreQueries != 1 {
				b.Fatalf("%d store queries, want 1", s.StoreQueries)
			}
		})
	}
}

func TestDigestSharingTheCacheKeyIsNotAnsweredFromCache(t *testing.T) {
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	v.Lookup(ctx, rec.Digest, time.Minute)
	v.cache.Wait()
	other := rec.Digest
	other[31] ^= 1 // same first 8 bytes, so the same cache slot
	if got, err := v.Lookup(ctx, other, time.Minute); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Lookup of a colliding digest = %v, %v; want ErrUnknown", got, err)
	}
	if n := st.reads.Load(); n != 2 {
		t.Fatalf("store read %d times, want 2", n)
	}
}

// TestSyncVoidsABatchOfChangesAndNothingElse: one Sync applying many
// changes (revoking an owner's keys) voids the entries of exactly those
// keys, and the others go on answering from the cache. The hits of keys
// in every lane are counted.
func TestSyncVoidsABatchOfChangesAndNothingElse(t *testing.T) {
	st := newFakeStore()
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	recs := make([]*store.Record, 300)
	for i := range recs {
		recs[i] = newRecord(t)
		st.put(recs[i])
	}
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if _, err := v.Lookup(ctx, rec.Digest, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	v.cache.Wait()
	for _, rec := range recs[:200] {
		st.revoke(rec.Digest)
	}
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	queries := v.Stats().StoreQueries
	for i, rec := range recs {
		got, err := v.Lookup(ctx, rec.Digest, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if got.Revoked() != (i < 200) {
			t.Fatalf("key %d: revoked = %v after the batch", i, got.Revoked())
		}
	}
	if n := v.Stats().StoreQueries - queries; n != 200 {
		t.Errorf("%d store queries after the batch, want 200 (the changed keys only)", n)
	}
	if got := v.Stats().Hits; got != 100 {
		t.Errorf("Stats().Hits = %d, want 100", got)
	}
}

// cacheKeys puts n new keys in st, has v cache each, and returns their
// digests.
func cacheKeys(tb testing.TB, v *Verifier, st *fakeStore, n int) []store.Digest {
	tb.Helper()
	ds := make([]store.Digest, n)
	for i := range ds {
		rec := newRecord(tb)
		st.put(rec)
		ds[i] = rec.Digest
		if _, err := v.Lookup(context.Background(), rec.Digest, time.Minute); err != nil {
			tb.Fatal(err)
		}
	}
	v.cache.Wait()
	return ds
}

// TestCloseWhileEveryLaneIsBusy: hits, lookups and invalidations of keys in
// every lane run on while Close frees the cache; none may reach it after
// (ristretto panics on its closed channels), and each answers a record or
// ErrUnavailable.
func TestCloseWhileEveryLaneIsBusy(t *testing.T) {
	st := newFakeStore()
	v := newTestVerifier(t, st, Options{PollInterval: time.Millisecond}, nil)
	ctx := context.Background()
	ds := cacheKeys(t, v, st, 4*numLanes)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d := ds[i%len(ds)]
				switch i % 3 {
				case 0:
					v.Hit(d, time.Minute, time.Now())
				case 1:
					if _, err := v.Lookup(ctx, d, time.Minute); err != nil && !errors.Is(err, ErrUnavailable) {
						t.Errorf("Lookup during Close: %v", err)
						return
					}
				default:
					v.Invalidate(d)
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	v.Close()
	time.Sleep(10 * time.Millisecond)
	close(stop)
	wg.Wait()
	if _, ok := v.Hit(ds[0], time.Minute, time.Now()); ok {
		t.Error("Hit answered after Close")
	}
}

// TestCloseDoesNotWaitForAStoreThatDoesNotAnswer: a gateway stopping while
// its store takes connections and never answers (a network partition,
// PostgreSQL stopped) must not wait out the poll's store timeout, nor poll
// again. Before, Close waited for the poll under way, and then for another
// one with even odds each time (a tick and Close were ready together): one
// store timeout or more, 5.4 s in a stop measured with PostgreSQL's packets
// dropped.
func TestCloseDoesNotWaitForAStoreThatDoesNotAnswer(t *testing.T) {
	st := newFakeStore()
	var failures atomic.Int64
	v := newTestVerifier(t, st, Options{PollInterval: time.Millisecond, StoreTimeout: 5 * time.Second,
		OnSync: func(err error) {
			if err != nil {
				failures.Add(1)
			}
		}}, nil)
	st.blockPoll.Store(true)
	time.Sleep(50 * time.Millisecond) // a poll is now waiting on the store
	start := time.Now()
	v.Close()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v while the store did not answer; want it at once, not after the 5s store timeout", took)
	}
	if n := failures.Load(); n != 0 {
		t.Errorf("the poll Close cut short was reported as %d store failures", n)
	}
}

func TestClose(t *testing.T) {
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	slow := func() { time.Sleep(50 * time.Millisecond) }
	st.afterRead.Store(&slow)
	v := newTestVerifier(t, st, Options{PollInterval: time.Millisecond}, nil)

	// A caller that gives up leaves its store query running; the query
	// finishing after Close must not touch the closed cache.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, err := v.Lookup(ctx, rec.Digest, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Lookup with an expiring context = %v, want ErrUnavailable", err)
	}
	v.Close()
	time.Sleep(100 * time.Millisecond)

	if _, err := v.Lookup(context.Background(), rec.Digest, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Lookup after Close = %v, want ErrUnavailable", err)
	}
	v.Invalidate(rec.Digest) // must not panic
	v.Close()                // twice is harmless
}

func TestCachedAsksTheStoreOnlyForKeysItKnew(t *testing.T) {
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	unknown := DigestOf("kg_live_unknown")
	for _, d := range []store.Digest{rec.Digest, unknown} {
		if _, err := v.Cached(ctx, d, time.Minute, time.Now()); !errors.Is(err, ErrNotCached) {
			t.Fatalf("Cached before any Lookup = %v, want ErrNotCached", err)
		}
	}
	if n := st.reads.Load(); n != 0 {
		t.Fatalf("Cached read the store %d times", n)
	}
	v.Lookup(ctx, rec.Digest, time.Minute)
	v.Lookup(ctx, unknown, time.Minute)
	v.cache.Wait()
	if got, err := v.Cached(ctx, rec.Digest, time.Minute, time.Now()); err != nil || got.ID != rec.ID {
		t.Errorf("Cached after a Lookup = %v, %v; want the record", got, err)
	}
	if _, err := v.Cached(ctx, unknown, time.Minute, time.Now()); !errors.Is(err, ErrUnknown) {
		t.Errorf("Cached of an unknown digest after a Lookup = %v, want ErrUnknown", err)
	}
	if n := st.reads.Load(); n != 2 {
		t.Errorf("store read %d times, want 2 (the Lookups only)", n)
	}
}

// A key in use behind an address past its failed-attempt limit is answered
// through Cached. When its entry expires, or a change voids it, Cached
// refills it from the store instead of refusing it, for as long again as
// the entry was fresh; digests that were never keys cost no store query,
// however many and however long.
func TestCachedRefillsAKeyItKnewUntilRecently(t *testing.T) {
	const ttl = 30 * time.Second
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	clock := newFakeClock()
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour, NegativeTTL: time.Second}, clock)
	ctx := context.Background()
	v.LookupAt(ctx, rec.Digest, ttl, clock.now())
	v.cache.Wait()
	reads := st.reads.Load()
	cached := func() (*store.Record, error) {
		t.Helper()
		got, err := v.Cached(ctx, rec.Digest, ttl, clock.now())
		v.cache.Wait()
		return got, err
	}

	clock.advance(ttl) // expired
	if got, err := cached(); err != nil || got.ID != rec.ID {
		t.Fatalf("Cached of a key whose entry just expired = %v, %v; want it refilled", got, err)
	}
	if n := st.reads.Load() - reads; n != 1 {
		t.Fatalf("the refill read the store %d times, want 1", n)
	}
	if got, err := cached(); err != nil || got.ID != rec.ID || st.reads.Load()-reads != 1 {
		t.Fatalf("Cached after the refill = %v, %v, %d reads; want a hit", got, err, st.reads.Load()-reads)
	}

	st.revoke(rec.Digest)
	v.Invalidate(rec.Digest)
	if got, err := cached(); err != nil || !got.Revoked() {
		t.Fatalf("Cached of a key voided by its revocation = %v, %v; want the revoked record", got, err)
	}

	clock.advance(2*ttl + time.Second) // past the refill window
	v.sweep(clock.now())
	before := st.reads.Load()
	if _, err := cached(); !errors.Is(err, ErrNotCached) {
		t.Fatalf("Cached of a key unused for twice the ttl = %v, want ErrNotCached", err)
	}
	for i := range 1000 {
		d := DigestOf(fmt.Sprintf("kg_live_madeup%d", i))
		v.LookupAt(ctx, d, ttl, clock.now()) // known unknowns
		clock.advance(2 * time.Second)       // past the negative TTL
		if _, err := v.Cached(ctx, d, ttl, clock.now()); !errors.Is(err, ErrNotCached) {
			t.Fatalf("Cached of a made-up digest = %v, want ErrNotCached", err)
		}
		if _, err := v.Cached(ctx, DigestOf(fmt.Sprintf("kg_live_never%d", i)), ttl, clock.now()); !errors.Is(err, ErrNotCached) {
			t.Fatalf("Cached of a digest never seen = %v, want ErrNotCached", err)
		}
	}
	if n := st.reads.Load() - before; n != 1000 {
		t.Errorf("store read %d times, want 1000 (the Lookups only)", n)
	}
	if s := v.Stats(); s.KnownRefills != 2 {
		t.Errorf("KnownRefills = %d, want 2", s.KnownRefills)
	}
}

// TestRevocationIsNeverUndoneByARacingRefill is the race above for Cached,
// whose entries expire all the time so that it keeps refilling.
func TestRevocationIsNeverUndoneByARacingRefill(t *testing.T) {
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	const ttl = 300 * time.Microsecond
	st := newFakeStore()
	slow := func() { time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond) }
	st.afterRead.Store(&slow)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	for round := range rounds {
		rec := newRecord(t)
		st.put(rec)
		var revoked, stop atomic.Bool
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for !stop.Load() {
					after := revoked.Load()
					got, err := v.Cached(ctx, rec.Digest, ttl, time.Now())
					if errors.Is(err, ErrNotCached) {
						// Refilled by a Lookup, as by an address under
						// its limit.
						got, err = v.Lookup(ctx, rec.Digest, ttl)
					}
					if err != nil {
						t.Errorf("round %d: %v", round, err)
						return
					}
					if after && !got.Revoked() {
						t.Errorf("round %d: the unrevoked record after Invalidate returned", round)
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
		st.revoke(rec.Digest)
		v.Invalidate(rec.Digest)
		revoked.Store(true)
		time.Sleep(2 * time.Millisecond)
		stop.Store(true)
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	if v.Stats().KnownRefills == 0 {
		t.Error("no Cached call refilled: the race was not run")
	}
}

// TestStaleCallerClockCannotOutliveAPrunedInvalidation: a caller's clock
// reading taken before the invalidation record of a revoked key was pruned
// must not make the revoked key's old entry usable again.
func TestStaleCallerClockCannotOutliveAPrunedInvalidation(t *testing.T) {
	const ttl = 10 * time.Second
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	clock := newFakeClock()
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour, NegativeTTL: ttl}, clock)
	ctx := context.Background()
	stale := clock.now()
	v.LookupAt(ctx, rec.Digest, ttl, stale) // an entry filled before the revocation
	v.cache.Wait()

	clock.advance(time.Second)
	fillSeq := v.seq.Load() // what a fill racing the revocation loaded
	st.revoke(rec.Digest)
	v.Invalidate(rec.Digest)
	// An in-flight fill of the old record landing now is what the
	// invalidation record defeats.
	v.cache.SetWithTTL(cacheKey(&rec.Digest), v.newEntry(rec.Digest, rec, fillSeq, stale, ttl), 1, time.Hour)
	v.cache.Wait()
	if got, _ := v.LookupAt(ctx, rec.Digest, ttl, clock.now()); got == nil || !got.Revoked() {
		t.Fatalf("while the invalidation record lives: %+v", got)
	}
	v.cache.SetWithTTL(cacheKey(&rec.Digest), v.newEntry(rec.Digest, rec, fillSeq, stale, ttl), 1, time.Hour)
	v.cache.Wait()

	clock.advance(ttl + pruneMargin + time.Second)
	v.prune()
	if len(*v.invs.Load()) != 0 {
		t.Fatal("the invalidation record was not pruned")
	}
	got, err := v.LookupAt(ctx, rec.Digest, ttl, stale.Add(2*time.Second))
	if err != nil || got == nil || !got.Revoked() {
		t.Fatalf("a stale clock reading after the prune: %+v, %v; want the revoked record", got, err)
	}
}

func TestSweepFreesExpiredEntriesButNotNewerFills(t *testing.T) {
	const ttl = 30 * time.Second
	st := newFakeStore()
	idle, busy := newRecord(t), newRecord(t)
	st.put(idle)
	st.put(busy)
	clock := newFakeClock()
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, clock)
	ctx := context.Background()
	inCache := func(r *store.Record) bool {
		v.cache.Wait()
		_, ok := v.cache.Get(cacheKey(&r.Digest))
		return ok
	}
	v.LookupAt(ctx, idle.Digest, ttl, clock.now())
	v.LookupAt(ctx, busy.Digest, ttl, clock.now())
	v.LookupAt(ctx, DigestOf("kg_live_unknown"), ttl, clock.now())
	clock.advance(ttl - time.Second)
	v.sweep(clock.now())
	if !inCache(idle) || !inCache(busy) {
		t.Fatal("a sweep before the entries expired removed them")
	}
	clock.advance(time.Second)
	v.LookupAt(ctx, busy.Digest, ttl, clock.now()) // expired: refilled
	clock.advance(ttl + 2*time.Second)             // past the refill window too
	v.sweep(clock.now())
	if inCache(idle) {
		t.Error("the idle key's expired entry is still cached after a sweep")
	}
	if !inCache(busy) {
		t.Error("the sweep removed the busy key's newer entry")
	}
	if n := st.reads.Load(); n != 4 {
		t.Errorf("store read %d times, want 4 (three fills and one refill)", n)
	}
	v.expMu.Lock()
	tracked := 0
	for _, es := range v.expiring {
		tracked += len(es)
	}
	v.expMu.Unlock()
	if tracked != 1 {
		t.Errorf("%d entries still tracked, want 1 (the refill); unknown digests are not tracked", tracked)
	}
}

func TestCachedRecordLeavesOutWhatTheGatewayNeverReads(t *testing.T) {
	st := newFakeStore()
	rec := newRecord(t)
	used := time.Now()
	rec.Hint, rec.LastUsedAt, rec.LastIP = "kg_live_AbCd1234…", &used, "203.0.113.7"
	st.put(rec)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	got, err := v.Lookup(context.Background(), rec.Digest, time.Minute)
	if err != nil || got.ID != rec.ID || got.Name != rec.Name || !slices.Equal(got.Scopes, rec.Scopes) {
		t.Fatalf("Lookup = %+v, %v", got, err)
	}
	if got.Hint != "" || got.LastUsedAt != nil || got.LastIP != "" {
		t.Errorf("cached record keeps hint %q, last use %v, last IP %q", got.Hint, got.LastUsedAt, got.LastIP)
	}
	if rec.Hint == "" || rec.LastUsedAt == nil || rec.LastIP == "" {
		t.Error("the store's own record was modified")
	}
}

// A store that switched to another database (a SQLite file replaced at its
// path) has a change log of its own, which may even be longer than the old
// one: the next Sync voids the whole cache, whatever the log says.
func TestSyncVoidsTheCacheWhenTheStoreSwitchesDatabases(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore()
	kept, dropped := newRecord(t), newRecord(t)
	st.put(kept)
	st.put(dropped)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	for _, r := range []*store.Record{kept, dropped} {
		if _, err := v.Lookup(ctx, r.Digest, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	v.cache.Wait()
	revoked := kept.Clone()
	now := time.Now()
	revoked.RevokedAt = &now
	// The other file: the kept key revoked, the dropped key absent, and
	// three changes, more than the two the cursor is at.
	st.replace(revoked, newRecord(t), newRecord(t))
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Lookup(ctx, kept.Digest, time.Hour); err != nil || !got.Revoked() {
		t.Errorf("a key revoked in the new database = %+v, %v; want it revoked", got, err)
	}
	if _, err := v.Lookup(ctx, dropped.Digest, time.Hour); !errors.Is(err, ErrUnknown) {
		t.Errorf("a key absent from the new database = %v, want ErrUnknown", err)
	}
}

func TestOnSyncReportsEveryPoll(t *testing.T) {
	st := newFakeStore()
	results := make(chan error, 100)
	newTestVerifier(t, st, Options{PollInterval: 5 * time.Millisecond, OnSync: func(err error) {
		select {
		case results <- err:
		default:
		}
	}}, nil)
	if err := <-results; err != nil {
		t.Fatalf("first Sync: %v", err)
	}
	down := errors.New("connection refused")
	st.failWith(down)
	for err := range results {
		if errors.Is(err, down) {
			break
		}
	}
	st.failWith(nil)
	for err := range results {
		if err == nil {
			break
		}
	}
}

func TestSameDigest(t *testing.T) {
	var a, b store.Digest
	if !sameDigest(&a, &b) {
		t.Fatal("equal digests differ")
	}
	for i := range a {
		b = a
		b[i] ^= 0x80
		if sameDigest(&a, &b) {
			t.Fatalf("digests differing in byte %d are equal", i)
		}
	}
}

// BenchmarkHitManyKeys is a busy gateway's hit: many keys, each request on
// its own goroutine. On more than one CPU it shows whatever every hit
// writes, whichever its key: such a word moves between the cores' caches
// on every request.
func BenchmarkHitManyKeys(b *testing.B) {
	for _, change := range []bool{false, true} {
		name := "steady"
		if change {
			name = "after a change to another key"
		}
		b.Run(name, func(b *testing.B) {
			st := newFakeStore()
			v := newTestVerifier(b, st, Options{PollInterval: time.Hour}, nil)
			ds := cacheKeys(b, v, st, 256)
			if change {
				v.Invalidate(newRecord(b).Digest)
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(97))
				for pb.Next() {
					i++
					if _, ok := v.Hit(ds[i%len(ds)], time.Minute, time.Now()); !ok {
						b.Fatal("a cached key missed")
					}
				}
			})
		})
	}
}

// TestAStoreThatDoesNotAnswerCostsOneLookupAtATimeItsTimeout: while the
// store's last answer was a failure, one lookup at a time asks it whether
// it is back, and every other lookup that needs it is answered
// ErrUnavailable at once instead of waiting out StoreTimeout for the same
// answer (a partition, PostgreSQL stopped: before, every request for a key
// not in the cache waited 2 s for its 503). Once it answers a probe (one a
// second) or the change-log poll, lookups ask it as before.
func TestAStoreThatDoesNotAnswerCostsOneLookupAtATimeItsTimeout(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	const timeout = 300 * time.Millisecond
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour, StoreTimeout: timeout}, nil)
	st.block.Store(true)
	lookup := func(name string) (error, time.Duration) {
		start := time.Now()
		_, err := v.Lookup(ctx, DigestOf("kg_live_"+name), time.Minute)
		return err, time.Since(start)
	}
	if err, took := lookup("first"); !errors.Is(err, ErrUnavailable) || took < timeout {
		t.Fatalf("the first lookup: %v after %v, want ErrUnavailable after the %v store timeout", err, took, timeout)
	}
	probe := make(chan error)
	go func() { err, _ := lookup("probe"); probe <- err }()
	time.Sleep(50 * time.Millisecond) // the probe is asking the store
	for _, name := range []string{"a", "b", "c"} {
		if err, took := lookup(name); !errors.Is(err, ErrUnavailable) || took > timeout/3 {
			t.Errorf("a lookup beside the probe: %v after %v, want ErrUnavailable at once", err, took)
		}
	}
	if err := <-probe; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("the probe: %v, want ErrUnavailable", err)
	}
	st.block.Store(false)
	if err, took := lookup("within the second"); !errors.Is(err, ErrUnavailable) || took > timeout/3 {
		t.Errorf("the store back, a lookup within %v of the probe's failure: %v after %v, want ErrUnavailable at once", probeEvery, err, took)
	}
	time.Sleep(probeEvery)
	if got, err := v.Lookup(ctx, rec.Digest, time.Minute); err != nil || got.ID != rec.ID {
		t.Fatalf("the store back, the next probe: %v, %v; want the key", got, err)
	}
	if err, _ := lookup("unknown"); !errors.Is(err, ErrUnknown) {
		t.Errorf("the store back, an unknown key: %v, want ErrUnknown", err)
	}
}

// TestAChangeIsReadSoonAfterTheStoreAnswersAgain: polls that began while
// the store heard nothing (calls on connections a network partition left
// dead) wait out the store timeout, but the change log is read within about
// a poll of the store's answering again, not when they give up: a node cut
// off while a key was revoked elsewhere served it 1.8 s after the partition
// ended, with the store's 2 s timeout.
func TestAChangeIsReadSoonAfterTheStoreAnswersAgain(t *testing.T) {
	st := newFakeStore()
	rec := newRecord(t)
	st.put(rec)
	const poll = 50 * time.Millisecond
	v := newTestVerifier(t, st, Options{PollInterval: poll, StoreTimeout: 2 * time.Second}, nil)
	ctx := context.Background()
	if _, err := v.Lookup(ctx, rec.Digest, time.Hour); err != nil {
		t.Fatal(err)
	}
	v.cache.Wait()
	st.blockPoll.Store(true) // the calls made from now on never hear back
	time.Sleep(5 * poll)
	st.revoke(rec.Digest)
	st.blockPoll.Store(false) // calls made from now on are answered
	back := time.Now()
	for {
		got, err := v.Lookup(ctx, rec.Digest, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if got.Revoked() {
			t.Logf("revocation enforced %v after the store answered again", time.Since(back))
			if took := time.Since(back); took > 10*poll {
				t.Errorf("revocation enforced %v after the store answered again, want within about a poll (%v)", took, poll)
			}
			return
		}
		if time.Since(back) > 5*time.Second {
			t.Fatal("revocation not enforced within 5 s of the store answering again")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAHedgedReadAnswersWhenEveryCallFails: the calls of a read whose
// context ends all fail, and the read says so rather than waiting for an
// answer no call will give (its first version dropped the answers of calls
// that ended with the context, and the poll stopped for good).
func TestAHedgedReadAnswersWhenEveryCallFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := hedged(ctx, 10*time.Millisecond, func(ctx context.Context) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("hedged: %v, want the context's deadline", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("hedged did not return after its context ended")
	}
}
