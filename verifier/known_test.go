package verifier

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// listingStore is a fakeStore that lists its digests, as the SQL stores do.
type listingStore struct {
	*fakeStore
	// duringList, when set, runs after the digests to list were read and
	// before they are handed over, as a change committed during the scan.
	duringList atomic.Pointer[func()]
}

func newListingStore() *listingStore { return &listingStore{fakeStore: newFakeStore()} }

func (s *listingStore) CountKeys(context.Context, store.ListFilter) (int, error) {
	if err := s.failure(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs), nil
}

func (s *listingStore) EachDigest(_ context.Context, fn func(store.Digest)) error {
	if err := s.failure(); err != nil {
		return err
	}
	s.mu.Lock()
	var ds []store.Digest
	for d := range s.recs {
		ds = append(ds, d)
	}
	s.mu.Unlock()
	if f := s.duringList.Load(); f != nil {
		(*f)()
	}
	for _, d := range ds {
		fn(d)
	}
	return nil
}

// waitKnown waits until v has a set of known digests in use other than
// was, and returns it.
func waitKnown(t *testing.T, v *Verifier, was *knownSet) *knownSet {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if k := v.known.Load(); k != nil && k != was {
			return k
		}
		if time.Now().After(deadline) {
			t.Fatal("no new set of known digests after 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// madeUp returns a digest no key has.
func madeUp(i int) store.Digest {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return sha256.Sum256(append([]byte("made up "), b[:]...))
}

func TestMadeUpKeysCostNoStoreQuery(t *testing.T) {
	ctx := context.Background()
	st := newListingStore()
	keys := make([]*store.Record, 50)
	for i := range keys {
		keys[i] = newRecord(t)
		st.put(keys[i])
	}
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	waitKnown(t, v, nil)
	if n := v.Stats().KnownDigests; n != int64(len(keys)) {
		t.Errorf("KnownDigests = %d, want %d", n, len(keys))
	}

	for i := range 100 {
		if _, err := v.Lookup(ctx, madeUp(i), time.Minute); !errors.Is(err, ErrUnknown) {
			t.Fatalf("made-up digest %d = %v, want ErrUnknown", i, err)
		}
	}
	if n := st.reads.Load(); n != 0 {
		t.Errorf("100 made-up digests cost %d store queries, want 0", n)
	}
	if s := v.Stats(); s.Filtered != 100 || s.StoreQueries != 0 {
		t.Errorf("stats = %+v, want 100 filtered and no store queries", s)
	}
	// Every key is still found, revoked ones as revoked.
	st.revoke(keys[7].Digest)
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		rec, err := v.Lookup(ctx, k.Digest, time.Minute)
		if err != nil || rec.Revoked() != (i == 7) {
			t.Fatalf("key %d = %+v, %v", i, rec, err)
		}
	}
}

// A key issued by another process is sent by its client at once, before any
// poll of the change log: it must be found, never refused as unknown.
func TestAKeyIssuedElsewhereIsFoundAtOnce(t *testing.T) {
	ctx := context.Background()
	st := newListingStore()
	st.put(newRecord(t))
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	waitKnown(t, v, nil)
	for range 20 {
		fresh := newRecord(t)
		st.put(fresh)
		start := time.Now()
		rec, err := v.Lookup(ctx, fresh.Digest, time.Minute)
		if err != nil || rec.ID != fresh.ID {
			t.Fatalf("a key issued just now = %+v, %v; want it found", rec, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("finding it took %v", d)
		}
	}
	if s := v.Stats(); s.Filtered != 0 {
		t.Errorf("stats = %+v, want nothing filtered", s)
	}
}

// The set is read while other processes write: a key issued after the scan
// read its rows is added by the Syncs that run meanwhile.
func TestAKeyIssuedDuringTheScanIsInTheSet(t *testing.T) {
	ctx := context.Background()
	st := newListingStore()
	st.put(newRecord(t))
	during := newRecord(t)
	ready := make(chan *Verifier, 1)
	hook := func() {
		v := <-ready
		st.put(during)
		if err := v.Sync(ctx); err != nil {
			t.Error(err)
		}
	}
	st.duringList.Store(&hook)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	ready <- v
	k := waitKnown(t, v, nil)
	st.duringList.Store(nil)
	if !k.has(&during.Digest) {
		t.Fatal("a key issued while the set was read is not in it")
	}
}

// When the store cannot be read, a made-up key is a store outage (503), not
// unknown: the set cannot vouch for keys issued since it was read.
func TestMadeUpKeyWhileTheStoreIsDownIsUnavailable(t *testing.T) {
	ctx := context.Background()
	st := newListingStore()
	st.put(newRecord(t))
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour, StoreTimeout: 200 * time.Millisecond}, nil)
	waitKnown(t, v, nil)
	st.failWith(errors.New("connection refused"))
	if _, err := v.Lookup(ctx, madeUp(1), time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a made-up key with the store down = %v, want ErrUnavailable", err)
	}
	st.failWith(nil)
	if err := v.Sync(ctx); err != nil { // the poll finds the store back
		t.Fatal(err)
	}
	if _, err := v.Lookup(ctx, madeUp(1), time.Minute); !errors.Is(err, ErrUnknown) {
		t.Fatalf("the same key with the store back = %v, want ErrUnknown", err)
	}
}

// A change log that cannot be read may hide new keys: the set is dropped
// (misses ask the store) and read again.
func TestUnreadableChangesDropTheSet(t *testing.T) {
	ctx := context.Background()
	st := newListingStore()
	st.put(newRecord(t))
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	waitKnown(t, v, nil)
	lost := errors.New("changes table locked")
	st.changesErr.Store(&lost)
	fresh := newRecord(t)
	st.put(fresh)
	if err := v.Sync(ctx); !errors.Is(err, lost) {
		t.Fatalf("Sync = %v, want %v", err, lost)
	}
	st.changesErr.Store(nil)
	if rec, err := v.Lookup(ctx, fresh.Digest, time.Minute); err != nil || rec.ID != fresh.ID {
		t.Fatalf("a key whose change was not read = %+v, %v; want it found", rec, err)
	}
	if !waitKnown(t, v, nil).has(&fresh.Digest) {
		t.Error("the set read again lacks the key")
	}
}

// A SQLite file replaced at its path (a restore): the set of the old file
// is dropped with the cache, and the new file's keys are found.
func TestTheSetFollowsTheStoreToAnotherDatabase(t *testing.T) {
	ctx := context.Background()
	st := newListingStore()
	old := newRecord(t)
	st.put(old)
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	waitKnown(t, v, nil)
	restored := newRecord(t)
	st.replace(restored)
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, err := v.Lookup(ctx, restored.Digest, time.Minute); err != nil || rec.ID != restored.ID {
		t.Fatalf("a key of the new database = %+v, %v; want it found", rec, err)
	}
	k := waitKnown(t, v, nil)
	if _, err := v.Lookup(ctx, old.Digest, time.Minute); !errors.Is(err, ErrUnknown) {
		t.Fatalf("a key only the old database had = %v, want ErrUnknown", err)
	}
	if k.has(&old.Digest) || !k.has(&restored.Digest) {
		t.Error("the set was not read from the new database")
	}
}

// A set that outgrows its size is read again, larger; none of its keys is
// ever refused meanwhile.
func TestTheSetIsRebuiltLargerAsKeysAreIssued(t *testing.T) {
	ctx := context.Background()
	st := newListingStore()
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	small := waitKnown(t, v, nil)
	var recs []*store.Record
	for range small.room + small.room/4 { // a few share all their bits with others and are not counted
		r := newRecord(t)
		recs = append(recs, r)
		st.put(r)
	}
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if !small.has(&r.Digest) {
			t.Fatal("a key added by Sync is not in the set")
		}
	}
	if k := waitKnown(t, v, small); len(k.words) <= len(small.words) {
		t.Errorf("the set read again has %d words, was %d", len(k.words), len(small.words))
	}
	for _, r := range recs {
		if _, err := v.Lookup(ctx, r.Digest, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
}

func TestKnownSetHasNoFalseNegativesAndFewFalsePositives(t *testing.T) {
	const n = 100_000
	k := newKnownSet(n)
	for i := range n {
		d := store.Digest(sha256.Sum256(binary.LittleEndian.AppendUint64(nil, uint64(i))))
		k.add(&d)
	}
	for i := range n {
		d := store.Digest(sha256.Sum256(binary.LittleEndian.AppendUint64(nil, uint64(i))))
		if !k.has(&d) {
			t.Fatalf("digest %d added but not found", i)
		}
		k.add(&d) // again, as a key's later change does: not counted
	}
	if got := k.n.Load(); got < n-n/1000 || got > n {
		t.Errorf("the set counts %d digests, want about %d", got, n)
	}
	fp := 0
	for i := range n {
		d := madeUp(i)
		if k.has(&d) {
			fp++
		}
	}
	// Sized for n: 16–32 bits a digest, so well under 0.2 %.
	if fp > n/500 {
		t.Errorf("%d false positives in %d", fp, n)
	}
	t.Logf("%d false positives in %d, %d KB", fp, n, len(k.words)*8/1024)
}

// A caller that gives up while a made-up key waits for its poll gets
// ErrUnavailable with its context's error, as a store query would give it.
func TestMadeUpKeyOfACallerThatGaveUp(t *testing.T) {
	st := newListingStore()
	st.put(newRecord(t))
	v := newTestVerifier(t, st, Options{PollInterval: time.Hour}, nil)
	waitKnown(t, v, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := v.Lookup(ctx, madeUp(1), time.Minute)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("a made-up key for a caller that gave up = %v, want ErrUnavailable and context.Canceled", err)
	}
}

// Made-up keys from clients under their failed-attempt limit are cached as
// unknown for NegativeTTL, each as 16 entries of the cache's MaxCost
// (unknownCost): a flood of them holds at most MaxCost/16, whatever it
// sends, and a busy key stays cached through it. What each costs is
// measured here (docs/monitoring.md, Running for months).
func TestUnknownDigestsCachedAreBounded(t *testing.T) {
	const maxCost, sent = 1 << 18, 1 << 18
	st := newFakeStore()
	busy := newRecord(t)
	st.put(busy)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := newTestVerifier(t, st, Options{MaxCost: maxCost, NegativeTTL: time.Hour}, nil)
	ctx := context.Background()
	misses := 0 // the busy key's lookups that did not find it cached
	for i := range sent {
		if i%64 == 0 {
			if _, ok := v.Hit(busy.Digest, time.Hour, time.Now()); !ok {
				misses++
			}
			if _, err := v.Lookup(ctx, busy.Digest, time.Hour); err != nil {
				t.Fatalf("the busy key: %v", err)
			}
		}
		if _, err := v.Lookup(ctx, madeUp(i), time.Hour); !errors.Is(err, ErrUnknown) {
			t.Fatalf("made-up digest %d: %v", i, err)
		}
	}
	v.cache.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := 0
	for i := range sent {
		if e, ok := v.cached(new(madeUp(i)), time.Hour, time.Now()); ok && e.rec == nil {
			held++
		}
	}
	grown := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	t.Logf("%d made-up digests, %d cached as unknown: heap grown by %.1f MB, %.0f bytes an entry held",
		sent, held, grown/1e6, grown/float64(held))
	if held > maxCost/16 {
		t.Errorf("%d unknown digests cached, want at most MaxCost/16 = %d", held, maxCost/16)
	}
	// Ristretto's admission is sampled and records accesses through lossy
	// buffers: the busy key is evicted now and then (1.5–2 % of its
	// lookups on a quiet machine, each one store query), and whether it
	// happened to be cached at the end failed one CI run in many. What
	// matters is that the made-up keys do not crowd it out: evicted on
	// more than 5 % of its lookups, they would be.
	t.Logf("the busy key missed the cache on %d of its %d lookups", misses, sent/64)
	if misses > sent/64/20 {
		t.Errorf("the busy key missed the cache on %d of its %d lookups: the made-up ones evict it", misses, sent/64)
	}
	runtime.KeepAlive(v)
}
