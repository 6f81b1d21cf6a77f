package verifier

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/sync/singleflight"

	"github.com/keygate/caddy-keygate/store"
)

// ErrUnknown means no key has this digest. The answer may come from the
// negative cache, which a change to that digest clears.
var ErrUnknown = errors.New("keygate: unknown key")

// ErrUnavailable means the key is not cached and the store could not answer
// (an error or a timeout). Callers answer 503 store_unavailable: failing
// closed, never treating the key as valid or as unknown.
var ErrUnavailable = errors.New("keygate: key store unavailable")

// ErrNotCached means Cached found nothing cached for the digest.
var ErrNotCached = errors.New("keygate: key not cached")

// ErrClosed means the Verifier was closed (its gateway's config was
// replaced); it is an ErrUnavailable.
var ErrClosed = fmt.Errorf("%w: verifier closed", ErrUnavailable)

// probeEvery is how long after a lookup found the store failing the next
// lookup asks it again (the poll, every PollInterval, asks it meanwhile).
const probeEvery = time.Second

// errStoreDown answers a lookup while the store's last answer was a failure
// and it is not this lookup's turn to ask it again.
var errStoreDown = errors.New("the store failed its last call; it is tried again within a second")

// Options tune a Verifier. Zero values take the defaults.
type Options struct {
	// MaxCost bounds the cache, in entries; default 1<<20. An unknown
	// digest's entry counts as unknownCost entries, so made-up keys (as
	// many as a flood sends) hold at most MaxCost/unknownCost of them.
	MaxCost int64
	// NegativeTTL is how long an unknown digest is remembered, so a client
	// retrying a wrong key cannot make every request a store query;
	// default 10s.
	NegativeTTL time.Duration
	// PollInterval is how often the store's change log is polled; default
	// 200ms. It bounds how long another process's change takes to be
	// enforced here, which the contract caps at one second.
	PollInterval time.Duration
	// StoreTimeout bounds each store call; default 2s.
	StoreTimeout time.Duration
	// OnSync, if set, receives the outcome of every Sync the Verifier runs
	// on its own (the first in New, then every poll): nil, or the error it
	// worked around by keeping its cache. It is called every PollInterval,
	// so a caller logging errors should report an outage once (see
	// internal/faultlog), not every call.
	OnSync func(err error)
}

// Stats counts what a Verifier did since it was created.
type Stats struct {
	Hits         uint64 // lookups answered with a cached record
	Misses       uint64 // lookups that had to wait for the store
	NegativeHits uint64 // lookups answered ErrUnknown from the cache
	StoreQueries uint64 // KeyByDigest calls (concurrent misses share one)
	StoreErrors  uint64 // KeyByDigest calls that failed or timed out
	// Filtered counts misses answered ErrUnknown by the set of known
	// digests after a Sync, without a store query (see known.go).
	Filtered uint64
	// KnownDigests is how many digests the set of known digests in use
	// holds (a few fewer where two share all their bits); 0 while there is
	// none.
	KnownDigests int64
	// KnownRefills counts Cached calls that asked the store because the
	// cache knew the key until recently (each also counts in Misses).
	KnownRefills uint64
}

// Verifier looks up key records by digest through a bounded cache that
// follows the store's change log. It is safe for concurrent use; one
// Verifier can serve many handlers with different cache TTLs.
//
// # Why a revocation is never undone by a racing fill
//
// The cache's Set is asynchronous, and a fill may have read the store just
// before a revocation was committed; deleting the entry is then not enough,
// because the stale fill can land after the delete. So every entry carries
// the value of a global sequence (seq) loaded before its store read, and the
// time loaded before that. Invalidate increments seq and records the new
// value for the digest; the entry is left in place, void. Any fill that read the
// store before the revocation committed loaded seq before Invalidate
// incremented it, so its entry's seq is below the recorded one and a hit on
// it is treated as a miss, wherever and whenever it lands. Concurrent misses
// share a store query only if they loaded the same seq, so a Lookup that
// starts after Invalidate never joins a query that began before it. Voiding
// the whole cache (when the change log cannot be read) raises a floor under
// seq instead.
//
// An invalidation record only has to outlive the entries it defeats. An
// entry is served only while younger than the TTL of the Lookup that filled
// it (and of the Lookup reading it), which is at most maxTTL, the largest
// TTL seen before the fill. Such an entry was filled before the
// invalidation, so once the record is older than maxTTL (plus a margin) it
// is dropped safely. With no records, a hit costs one extra atomic load.
//
// A caller may pass its own clock reading (LookupAt), taken earlier in the
// request, to spare a hit reading the clock again. A stale reading makes an
// entry look younger than it is, which matters only if the entry's
// invalidation record has meanwhile been pruned. So prune records when it
// last dropped a record (prunedAt) before dropping it, and a hit that found
// no record (and so observed the drop) treats a reading older than prunedAt
// as stale and reads the clock itself: a pruned record is older than maxTTL
// plus the margin at prunedAt, so by then every entry it defeated is too.
//
// # Why a key in use is never refused for its address's failures
//
// A gateway asks Cached, not Lookup, for clients past their failed-attempt
// limit, so made-up keys cost no store query. A key's entry expires on
// schedule, though, so a valid key used behind such an address (a NAT shared
// with a misconfigured client) would be refused at every cache_ttl until the
// address was under its limit again. So an expired or voided entry of a
// known key stays in the cache for as long again as it was fresh, never
// answering, and Cached refills from the store a key that has one. That
// refill is an ordinary fill (it loads seq first), so the argument above
// holds for it; and only digests that were keys can cause one.
type Verifier struct {
	st    store.Store
	opts  Options
	cache *ristretto.Cache[uint64, *entry]
	group singleflight.Group
	now   func() time.Time

	seq        atomic.Uint64 // incremented by every invalidation
	clearedSeq atomic.Uint64 // entries with seq below it are void
	maxTTL     atomic.Int64  // largest TTL ever used, in nanoseconds
	born       time.Time     // monotonic origin of prunedAt and expiring
	prunedAt   atomic.Int64  // when prune last dropped a record, since born

	// expiring lists the known keys' fills by the second (since born)
	// after which they expire, for sweep. See fill for why known keys are
	// not given a ristretto TTL. It holds no entry, so an entry the cache
	// evicted is not kept alive by it.
	expMu    sync.Mutex
	expiring map[int64][]fillMark
	swept    int64 // seconds since born swept so far

	// invs holds the invalidation records, by digest. The map is never
	// written once published: invalidate and prune, serialized by invMu,
	// publish a changed copy, so a hit reads it without a lock. A lock
	// there would serialize every request of every key cached before a
	// change, for as long as the record lives (cache_ttl and a second):
	// one change to any key, and a busy gateway's cores would queue on it.
	invMu sync.Mutex
	invs  atomic.Pointer[map[store.Digest]invalidation]
	// lastInv is the newest invalidation's seq: an entry whose fill began
	// after it (the common case, seconds after a change) cannot be voided
	// by any record in invs, and its hit does not look there.
	lastInv atomic.Uint64

	syncMu sync.Mutex // serializes Sync, which owns cursor and gen
	cursor int64      // last change-log sequence applied
	synced bool       // cursor is known
	gen    uint64     // the store's Generation when last synced

	misses, negHits, queries, storeErrs, knownRefills, filtered atomic.Uint64

	// down is set while the store's last answer (a key's lookup, the
	// change-log poll) was a failure. Then one lookup at a time, and one a
	// probeEvery after a lookup's failure (nextProbe), asks the store
	// whether it is back (probing), and every other lookup that needs it is
	// answered ErrUnavailable at once: a store that does not answer (a
	// partition, a server stopped) would otherwise make each of them wait
	// out StoreTimeout for the same answer. The poll clears down as soon as
	// the store answers it.
	down, probing atomic.Bool
	nextProbe     atomic.Int64 // monotonic, as entry times

	// The set of known digests (known.go): in use (nil until loaded and
	// while dropped), and being loaded; pending and knownEpoch are
	// guarded by syncMu.
	lister     store.DigestLister // nil: the store cannot list digests
	known      atomic.Pointer[knownSet]
	pending    *knownSet
	knownEpoch uint64
	reload     chan struct{} // asks keepKnown for a new set
	knownDone  chan struct{}
	// kick asks the poller for a Sync now; round is the one the next Sync
	// completes.
	kick    chan struct{}
	roundMu sync.Mutex
	round   *syncRound

	// lanes hold what every hit writes: its lane's share of the lock that
	// keeps the cache from being used during or after Close (which
	// ristretto does not survive: it panics on its closed channels), and
	// the hit count. A digest picks its lane, so hits of different keys on
	// different cores mostly write different cache lines: one lock word
	// and one counter for all would move between the cores on every
	// request. Everything else that uses the cache holds some lane's lock
	// shared; Close holds every lane's exclusively, and sets closed.
	lanes  [numLanes]lane
	closed bool

	stop chan struct{}
	// stopped is cancelled by Close, cutting short a poll waiting on a
	// store that does not answer.
	stopped    context.Context
	cancelStop context.CancelFunc
	done       chan struct{}
	closeOnce  sync.Once
}

// numLanes is how many lanes a Verifier spreads its hits over.
const numLanes = 64

// lane is one of a Verifier's lanes: 128 bytes, so that the words in use
// (the first 32) never share a cache line with another lane's, wherever
// the array starts.
type lane struct {
	life sync.RWMutex
	hits atomic.Uint64
	_    [128 - unsafe.Sizeof(sync.RWMutex{}) - 8]byte
}

// lane is the lane of digest d; any lane, such as lane 0, serves a caller
// with no digest.
func (v *Verifier) lane(d *store.Digest) *lane {
	return &v.lanes[d[0]%numLanes]
}

// entry is one cached answer. rec == nil caches "unknown digest".
// A gateway holds one per active key, so it is kept small: times are
// monotonic nanoseconds since the Verifier's birth, and a known key's
// digest is its record's.
type entry struct {
	digest  *store.Digest
	rec     *store.Record
	seq     uint64 // seq loaded before the store read
	filled  int64  // taken before seq was loaded
	expires int64  // filled + the filling Lookup's TTL
}

// newEntry makes the cache entry of a store answer for d.
func (v *Verifier) newEntry(d store.Digest, rec *store.Record, seq uint64, filled time.Time, life time.Duration) *entry {
	e := &entry{rec: rec, seq: seq, filled: v.since(filled)}
	e.expires = e.filled + int64(life)
	if rec != nil {
		e.digest = &rec.Digest
	} else {
		e.digest = &d
	}
	return e
}

// since returns t as monotonic nanoseconds since the Verifier's birth.
func (v *Verifier) since(t time.Time) int64 { return int64(t.Sub(v.born)) }

// fillMark names one fill of a cache key: its entry is the one with this
// filled time.
type fillMark struct {
	key    uint64
	filled int64
}

type invalidation struct {
	seq uint64
	at  time.Time
}

// unknownCost is what an unknown digest's entry costs in the cache, as
// MaxCost counts: a flood of made-up keys from clients under their
// failed-attempt limit is one entry per request, each some 330 bytes with
// the cache's own, so at cost 1 it could hold 1<<20 of them (over 300 MB);
// at 16, 65,536 (some 22 MB). A busy key's entry, read more often than a
// made-up key's, is not evicted for them (the cache admits by frequency).
const unknownCost = 16

// pruneMargin pads maxTTL before an invalidation record is forgotten, so
// clock reads a few instructions apart can never matter.
const pruneMargin = time.Second

// New returns a Verifier reading st, and starts polling st's change log
// (and listening to it, if st is a store.Notifier). Call Close when done;
// it does not close st.
func New(st store.Store, o Options) (*Verifier, error) {
	return newVerifier(st, o, time.Now)
}

// newVerifier is New with a clock, for tests.
func newVerifier(st store.Store, o Options, now func() time.Time) (*Verifier, error) {
	if st == nil {
		return nil, errors.New("keygate: verifier: nil store")
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"negative TTL", &o.NegativeTTL, 10 * time.Second},
		{"poll interval", &o.PollInterval, 200 * time.Millisecond},
		{"store timeout", &o.StoreTimeout, 2 * time.Second},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("keygate: verifier: %s %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if o.MaxCost < 0 {
		return nil, fmt.Errorf("keygate: verifier: cache size %d is negative", o.MaxCost)
	}
	if o.MaxCost == 0 {
		o.MaxCost = 1 << 20
	}
	if o.OnSync == nil {
		o.OnSync = func(error) {}
	}
	cache, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		// Ten counters per entry is ristretto's advice; the cap keeps a
		// Verifier near 16 MB (measured) however large MaxCost is.
		NumCounters: min(10*o.MaxCost, 1<<22),
		MaxCost:     o.MaxCost,
		// Hits are handed to ristretto's admission policy in batches of
		// this many; every batch wakes the policy goroutine, which costs
		// microseconds on a small VM. 1024 instead of the usual 64 made a
		// whole gateway request ~0.5 µs faster here, for frequency counts
		// that are a little staler.
		BufferItems:        1024,
		IgnoreInternalCost: true,
		KeyToHash:          keyToHash,
	})
	if err != nil {
		return nil, fmt.Errorf("keygate: verifier: cache of %d entries: %w", o.MaxCost, err)
	}
	v := &Verifier{
		st:    st,
		opts:  o,
		cache: cache,
		now:   now,
		born:  now(),

		expiring: map[int64][]fillMark{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),

		reload:    make(chan struct{}, 1),
		knownDone: make(chan struct{}),
		kick:      make(chan struct{}, 1),
		round:     &syncRound{done: make(chan struct{})},
	}
	v.stopped, v.cancelStop = context.WithCancel(context.Background())
	v.invs.Store(&map[store.Digest]invalidation{})
	v.lister, _ = st.(store.DigestLister)
	v.maxTTL.Store(int64(o.NegativeTTL))
	ctx, cancel := context.WithTimeout(context.Background(), o.StoreTimeout)
	// An error is not fatal: the poller retries, and Lookup fails closed
	// meanwhile.
	o.OnSync(v.Sync(ctx))
	cancel()
	go v.poll()
	if v.lister != nil {
		go v.keepKnown()
	} else {
		close(v.knownDone)
	}
	return v, nil
}

// cacheKey is the first 8 bytes of the digest. It is not proof of a match:
// a hit compares the whole digest.
func cacheKey(d *store.Digest) uint64 { return binary.BigEndian.Uint64(d[:8]) }

// keyToHash passes SHA-256 bits straight through: they are already uniform,
// and ristretto's default hashing of a uint64 goes through an interface.
// The conflict hash is 0 (ristretto then skips its check) because the key
// alone carries no more bits; the full digest in the entry does that job.
func keyToHash(k uint64) (uint64, uint64) { return k, 0 }

// Lookup returns the record with digest d, or ErrUnknown, or ErrUnavailable.
// ttl is the caller's cache_ttl: a cached answer older than ttl is not used,
// and ttl <= 0 always asks the store. Lookup does not judge the record
// (revoked, disabled, expired): the caller does.
//
// The record is shared with other callers and the cache: it must not be
// modified (use Record.Clone). It lacks Hint, LastUsedAt and LastIP: the
// store has those.
func (v *Verifier) Lookup(ctx context.Context, d store.Digest, ttl time.Duration) (*store.Record, error) {
	return v.lookup(ctx, d, ttl, v.now(), true)
}

// LookupAt is Lookup with the caller's own reading of the clock, taken for
// the request being served; a stale one is detected (see Verifier).
func (v *Verifier) LookupAt(ctx context.Context, d store.Digest, ttl time.Duration, now time.Time) (*store.Record, error) {
	return v.lookup(ctx, d, ttl, now, true)
}

// Cached is LookupAt for clients a gateway no longer lets cost a store
// query for keys it does not know (an address past its failed-attempt
// limit): it answers from the cache, and asks the store only for a key the
// cache knew as a key until recently, whose entry has expired or been voided
// by a change (see Verifier). Anything else is ErrNotCached. So a flood of
// made-up keys costs no store query, and a key in use behind such an address
// is refilled at each cache_ttl instead of being refused until the address
// is under its limit again.
func (v *Verifier) Cached(ctx context.Context, d store.Digest, ttl time.Duration, now time.Time) (*store.Record, error) {
	return v.lookup(ctx, d, ttl, now, false)
}

// Hit answers from the cache alone: the record for d if its entry may
// answer a Lookup with this ttl at now. It never asks the store and counts
// only the hits, so a caller that falls back to LookupAt or Cached on false
// counts every request once. It lets the common case, a busy key, skip any
// work a miss needs (a gateway's failed-attempt check).
func (v *Verifier) Hit(d store.Digest, ttl time.Duration, now time.Time) (*store.Record, bool) {
	if ttl <= 0 {
		return nil, false
	}
	l := v.lane(&d)
	l.life.RLock()
	defer l.life.RUnlock()
	if v.closed {
		return nil, false
	}
	v.noteTTL(ttl)
	e, ok := v.cached(&d, ttl, now)
	if !ok || e.rec == nil {
		return nil, false
	}
	l.hits.Add(1)
	return e.rec, true
}

// lookup answers from the cache, else from the store if fill is set or the
// cache knew d as a key until recently.
func (v *Verifier) lookup(ctx context.Context, d store.Digest, ttl time.Duration, now time.Time, fill bool) (*store.Record, error) {
	l := v.lane(&d)
	l.life.RLock()
	defer l.life.RUnlock()
	if v.closed {
		return nil, ErrClosed
	}
	if ttl > 0 {
		v.noteTTL(ttl)
		e, ok := v.cached(&d, ttl, now)
		if ok {
			if e.rec == nil {
				v.negHits.Add(1)
				return nil, ErrUnknown
			}
			l.hits.Add(1)
			return e.rec, nil
		}
		if !fill && e != nil && e.rec != nil && v.since(now) < e.expires+(e.expires-e.filled) {
			fill = true
			v.knownRefills.Add(1)
		}
	}
	if !fill {
		return nil, ErrNotCached
	}
	if k := v.known.Load(); k != nil && !k.has(&d) {
		return v.unknownUnlessNew(ctx, d, ttl)
	}
	v.misses.Add(1)
	return v.fill(ctx, d, ttl)
}

// noteTTL raises maxTTL to ttl. It must happen before the fill and before
// the hit check that uses ttl; see the Verifier comment.
func (v *Verifier) noteTTL(ttl time.Duration) {
	for {
		cur := v.maxTTL.Load()
		if int64(ttl) <= cur || v.maxTTL.CompareAndSwap(cur, int64(ttl)) {
			return
		}
	}
}

// cached returns the entry for d and whether it may answer a Lookup with
// this ttl at time now. An entry that may not (expired, or voided by a
// change) is still returned, for Cached to tell a known key from a made-up
// one; its record must not be used.
func (v *Verifier) cached(d *store.Digest, ttl time.Duration, now time.Time) (*entry, bool) {
	e, ok := v.cache.Get(cacheKey(d))
	if !ok || e == nil || !sameDigest(e.digest, d) {
		return nil, false
	}
	if e.seq < v.clearedSeq.Load() {
		return e, false
	}
	if e.seq < v.lastInv.Load() {
		if inv, ok := (*v.invs.Load())[*d]; ok && e.seq < inv.seq {
			return e, false
		}
	}
	// Loaded after the records were read, so a record pruned unseen shows
	// here; a reading from before that prune is not trusted.
	at := v.since(now)
	if at < v.prunedAt.Load() {
		at = v.since(v.now())
	}
	if at-e.filled >= int64(ttl) || at >= e.expires {
		return e, false
	}
	return e, true
}

// sameDigest compares two digests in constant time: the OR of the XOR of
// their four words, with no early exit (subtle.ConstantTimeCompare does the
// same a byte at a time, eight times the work).
func sameDigest(a, b *store.Digest) bool {
	var x uint64
	for i := 0; i < len(a); i += 8 {
		x |= binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:])
	}
	return x == 0
}

// fill asks the store, one query for all concurrent callers of one digest,
// and caches the answer unless it is an error.
func (v *Verifier) fill(ctx context.Context, d store.Digest, ttl time.Duration) (*store.Record, error) {
	filled := v.now()
	seq := v.seq.Load()
	// Callers that arrive after an invalidation load a higher seq and so
	// start their own query instead of sharing one that may predate it.
	var key [len(d) + 8]byte
	copy(key[:], d[:])
	binary.BigEndian.PutUint64(key[len(d):], seq)

	ch := v.group.DoChan(string(key[:]), func() (any, error) {
		if v.down.Load() {
			if v.since(v.now()) < v.nextProbe.Load() || !v.probing.CompareAndSwap(false, true) {
				return nil, errStoreDown
			}
			defer v.probing.Store(false)
		}
		v.queries.Add(1)
		// One caller giving up must not fail the others sharing the query.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.opts.StoreTimeout)
		defer cancel()
		rec, err := v.st.KeyByDigest(sctx, d)
		failed := err != nil && !errors.Is(err, store.ErrNotFound)
		if failed {
			v.nextProbe.Store(v.since(v.now()) + int64(probeEvery))
		}
		v.down.Store(failed)
		switch {
		case errors.Is(err, store.ErrNotFound):
			rec = nil
		case err != nil:
			v.storeErrs.Add(1)
			return nil, err
		default:
			// Not kept: the hint only operators read, and the last use,
			// which usage flushes change without a change-log entry (so a
			// cached copy would be stale anyway). A gateway holds one
			// record per active key. A shallow copy: the store may share
			// its record.
			c := *rec
			c.Hint, c.LastUsedAt, c.LastIP = "", nil, ""
			rec = &c
		}
		// TryRLock: the callers may have given up and Close be waiting;
		// blocking here would stall Close, and it is too late to cache.
		if l := v.lane(&d); ttl > 0 && l.life.TryRLock() {
			defer l.life.RUnlock()
			if v.closed {
				return rec, nil
			}
			life := ttl
			if rec == nil {
				life = min(ttl, v.opts.NegativeTTL)
			}
			e := v.newEntry(d, rec, seq, filled, life)
			if rec == nil {
				v.cache.SetWithTTL(cacheKey(&d), e, unknownCost, life)
			} else {
				// No ristretto TTL: with one, every Get reads the clock
				// (~70 ns here, a tenth of a gateway request). A hit
				// checks the entry's own expiry against the request's
				// clock reading instead, and sweep deletes expired
				// entries so idle keys free their memory. Unknown digests
				// keep ristretto's TTL: a flood of them must not wait for
				// a sweep.
				v.cache.Set(cacheKey(&d), e, 1)
				v.track(e)
			}
			// ristretto applies sets asynchronously; waiting here means a
			// request arriving after this query answered finds the entry
			// instead of starting another query for the same key.
			v.cache.Wait()
		}
		return rec, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, res.Err)
		}
		if rec := res.Val.(*store.Record); rec != nil {
			return rec, nil
		}
		return nil, ErrUnknown
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// Invalidate forgets what is cached for d, including any fill of d that is
// still in flight. Once it returns, no Lookup answers from anything read
// from the store before Invalidate was called.
func (v *Verifier) Invalidate(d store.Digest) {
	v.invalidate([]store.Digest{d})
}

// invalidate invalidates each of ds as Invalidate does, with one copy of
// the records for all of them: Sync's batch of changes, which revoking an
// owner's keys can make thousands long.
func (v *Verifier) invalidate(ds []store.Digest) {
	l := &v.lanes[0]
	l.life.RLock()
	defer l.life.RUnlock()
	if v.closed || len(ds) == 0 {
		return
	}
	v.invMu.Lock()
	old := *v.invs.Load()
	invs := make(map[store.Digest]invalidation, len(old)+len(ds))
	maps.Copy(invs, old)
	at := v.now()
	var seq uint64
	for _, d := range ds {
		seq = v.seq.Add(1)
		invs[d] = invalidation{seq: seq, at: at}
	}
	// The records before the seq that points hits at them.
	v.invs.Store(&invs)
	v.lastInv.Store(seq) // only grows: invMu orders the stores
	v.invMu.Unlock()
	// The entries are left in place, void: the records above keep them
	// from answering, and they still tell Cached that their digests are
	// keys, so a key in use behind an address past its failed-attempt
	// limit is refilled after a change too. The next fill or sweep
	// replaces them.
}

// invalidateAll voids every cached entry, also those still being filled.
// Void entries are left to be overwritten or evicted: ristretto's Clear is
// not safe alongside concurrent Gets.
func (v *Verifier) invalidateAll() {
	inv := v.seq.Add(1)
	for {
		cur := v.clearedSeq.Load()
		if inv <= cur || v.clearedSeq.CompareAndSwap(cur, inv) {
			return
		}
	}
}

// prune forgets invalidation records that no usable entry can predate.
func (v *Verifier) prune() {
	if len(*v.invs.Load()) == 0 {
		return
	}
	horizon := time.Duration(v.maxTTL.Load()) + pruneMargin
	now := v.now()
	v.invMu.Lock()
	defer v.invMu.Unlock()
	old := *v.invs.Load()
	kept := 0
	for _, inv := range old {
		if now.Sub(inv.at) <= horizon {
			kept++
		}
	}
	if kept == len(old) {
		return // every poll until then: no copy
	}
	invs := make(map[store.Digest]invalidation, kept)
	for d, inv := range old {
		if now.Sub(inv.at) <= horizon {
			invs[d] = inv
		}
	}
	// Before the records go (see Verifier).
	v.prunedAt.Store(v.since(now))
	v.invs.Store(&invs)
}

// track notes a known key's fill for sweep, which removes it once it has
// been expired for as long as it was fresh: until then Cached may refill it.
func (v *Verifier) track(e *entry) {
	sec := (e.expires+(e.expires-e.filled))/int64(time.Second) + 1
	v.expMu.Lock()
	v.expiring[sec] = append(v.expiring[sec], fillMark{cacheKey(e.digest), e.filled})
	v.expMu.Unlock()
}

// sweep deletes the known keys' entries that are past their refill window
// (see track) from the cache, unless a newer fill has replaced them.
func (v *Verifier) sweep(now time.Time) {
	upTo := int64(now.Sub(v.born) / time.Second)
	var due []fillMark
	v.expMu.Lock()
	for ; v.swept < upTo; v.swept++ {
		due = append(due, v.expiring[v.swept+1]...)
		delete(v.expiring, v.swept+1)
	}
	v.expMu.Unlock()
	l := &v.lanes[0]
	l.life.RLock()
	defer l.life.RUnlock()
	if v.closed {
		return
	}
	for _, m := range due {
		// A fill landing between this Get and Del is deleted too; that
		// costs it one store query, never correctness.
		if cur, ok := v.cache.Get(m.key); ok && cur.filled == m.filled {
			v.cache.Del(m.key)
		}
	}
}

// Sync reads the store's change log now and invalidates every digest that
// changed since the last Sync. The admin API calls it after its own writes,
// so they are enforced on the very next request. If the change log cannot be
// read in full, or the store switched to another database
// (store.Replaceable), Sync voids the whole cache, which is always safe.
func (v *Verifier) Sync(ctx context.Context) error {
	err := v.sync(ctx)
	v.down.Store(err != nil) // see down: an answer clears it at once
	return err
}

func (v *Verifier) sync(ctx context.Context) error {
	v.syncMu.Lock()
	defer v.syncMu.Unlock()
	if r, ok := v.st.(store.Replaceable); ok {
		// Read before the change log: a switch after this read is seen by
		// the next Sync, within a poll.
		if gen := r.Generation(); gen != v.gen {
			// Another database: nothing cached, and no cursor, holds.
			v.invalidateAll()
			v.forgetKnown()
			v.gen, v.synced = gen, false
		}
	}
	last, err := hedged(ctx, v.opts.PollInterval, v.st.LastChange)
	if err != nil {
		return fmt.Errorf("keygate: verifier: reading the key change log position: %w", err)
	}
	switch {
	case !v.synced || last < v.cursor:
		// First contact, or the store was replaced: nothing cached can be
		// trusted to be current.
		v.invalidateAll()
		v.forgetKnown()
	case last > v.cursor:
		after := v.cursor
		changes, err := hedged(ctx, v.opts.PollInterval, func(ctx context.Context) ([]store.Change, error) {
			return v.st.Changes(ctx, after)
		})
		if err != nil {
			v.invalidateAll()
			v.forgetKnown()
			v.cursor = last
			return fmt.Errorf("keygate: verifier: reading key changes after %d (cache cleared): %w", after, err)
		}
		ds := make([]store.Digest, len(changes))
		for i, c := range changes {
			ds[i] = c.Digest
		}
		v.invalidate(ds)
		for _, c := range changes {
			v.addKnown(&c.Digest)
			last = max(last, c.Seq)
		}
	}
	v.cursor, v.synced = last, true
	return nil
}

// poll runs Sync every PollInterval and whenever the store notifies a change.
func (v *Verifier) poll() {
	defer close(v.done)
	var notify <-chan struct{}
	if n, ok := v.st.(store.Notifier); ok {
		notify = n.Notify()
	}
	tick := time.NewTicker(v.opts.PollInterval)
	defer tick.Stop()
	var last time.Time
	for {
		select {
		case <-v.stop:
			return
		case <-tick.C:
		case <-v.kick:
			if wait := syncSpacing - time.Since(last); wait > 0 {
				select {
				case <-v.stop:
					return
				case <-time.After(wait):
				}
			}
		case _, ok := <-notify:
			if !ok {
				notify = nil // the store closed it; keep polling
				continue
			}
		}
		// A tick and Close may be ready together, and select picks
		// either: without this, Close waited for one more poll, and on a
		// store that does not answer for one more StoreTimeout, each time
		// with even odds (a stop took seconds more while PostgreSQL did
		// not answer).
		if v.stopped.Err() != nil {
			return
		}
		last = time.Now()
		r := v.takeRound()
		ctx, cancel := context.WithTimeout(v.stopped, v.opts.StoreTimeout)
		r.err = v.Sync(ctx)
		cancel()
		close(r.done)
		if v.stopped.Err() != nil {
			return // cut short by Close: not the store's failure
		}
		v.opts.OnSync(r.err)
		v.prune()
		v.sweep(v.now())
	}
}

// Stats returns the counters so far.
func (v *Verifier) Stats() Stats {
	var hits uint64
	for i := range v.lanes {
		hits += v.lanes[i].hits.Load()
	}
	return Stats{
		Hits:         hits,
		Misses:       v.misses.Load(),
		NegativeHits: v.negHits.Load(),
		StoreQueries: v.queries.Load(),
		StoreErrors:  v.storeErrs.Load(),
		KnownRefills: v.knownRefills.Load(),
		Filtered:     v.filtered.Load(),
		KnownDigests: v.knownDigests(),
	}
}

// Close stops the poller and frees the cache, after waiting for Lookups in
// progress. Later Lookups fail with ErrUnavailable. It does not close the
// store. Calling it more than once is harmless.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		close(v.stop)
		v.cancelStop()
		<-v.done
		<-v.knownDone
		for i := range v.lanes {
			v.lanes[i].life.Lock()
		}
		v.closed = true
		v.cache.Close()
		for i := range v.lanes {
			v.lanes[i].life.Unlock()
		}
	})
}
