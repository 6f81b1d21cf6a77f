package verifier

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// Why a made-up key costs no store query
//
// A key's checksum is public, so anyone can make keys that pass it, and each
// new one would cost a store query: a flood of them from many addresses
// (failed_auth_limit stops one) turns into a flood of queries. So a Verifier
// whose store can list its digests (store.DigestLister) keeps the set of
// every key's digest: loaded once, then kept current by every Sync, which
// adds each digest the change log names. A miss whose digest is not in the
// set is unknown unless the key was issued since the last Sync; so the miss
// waits for a Sync that starts after it arrived (asking the poller for one
// at once, at most one every syncSpacing) and checks again. A key issued by
// another process before its client sent it is then in the set: a new key is
// never refused, and a made-up one costs a share of one change-log poll.
//
// The set is a Bloom filter over the digest's own bits (SHA-256 output needs
// no further hashing): it may hold digests it was never given, which then
// cost a store query as before, never the other way round.

// syncSpacing is the least time between two Syncs that misses ask for, so a
// flood of made-up keys costs at most one change-log poll this often.
const syncSpacing = 10 * time.Millisecond

// knownProbes is how many bits a digest sets; with 16 to 32 bits per key
// (as sized), a digest that is not a key passes 0.01–0.1 % of the time, and
// 2 % once the set has grown to 8 bits per key, when it is rebuilt.
const knownProbes = 6

// knownSet is a Bloom filter of key digests, safe for concurrent use.
type knownSet struct {
	words []atomic.Uint64
	mask  uint64 // bit index mask: len(words)*64 - 1
	n     atomic.Int64
	room  int64 // digests it holds before it should be rebuilt larger
}

// newKnownSet sizes a set for n digests: 16 to 32 bits each, at least 2 KB.
func newKnownSet(n int) *knownSet {
	nbits := uint64(1) << max(14, bits.Len64(uint64(n)*16))
	return &knownSet{
		words: make([]atomic.Uint64, nbits/64),
		mask:  nbits - 1,
		room:  int64(nbits / 8),
	}
}

// probes returns the two words of d that place its bits. They are not the
// cache key's (d[:8]).
func probes(d *store.Digest) (h1, h2 uint64) {
	return binary.LittleEndian.Uint64(d[8:]), binary.LittleEndian.Uint64(d[16:]) | 1
}

// add puts d in the set and reports whether the set is now past its room.
// A digest it already had (a key's change after its issue) is not counted.
func (k *knownSet) add(d *store.Digest) bool {
	h1, h2 := probes(d)
	fresh := false
	for i := range uint64(knownProbes) {
		b := (h1 + i*h2) & k.mask
		bit := uint64(1) << (b & 63)
		if k.words[b>>6].Or(bit)&bit == 0 {
			fresh = true
		}
	}
	if !fresh {
		return false
	}
	return k.n.Add(1) > k.room
}

// has reports whether d may be in the set; false means it is not.
func (k *knownSet) has(d *store.Digest) bool {
	h1, h2 := probes(d)
	for i := range uint64(knownProbes) {
		b := (h1 + i*h2) & k.mask
		if k.words[b>>6].Load()&(1<<(b&63)) == 0 {
			return false
		}
	}
	return true
}

// knownDigests is how many digests the set in use holds; 0 if none.
func (v *Verifier) knownDigests() int64 {
	if k := v.known.Load(); k != nil {
		return k.n.Load()
	}
	return 0
}

// syncRound is one Sync of the poller, for the misses waiting on it.
type syncRound struct {
	done chan struct{}
	err  error // set before done is closed
}

// addKnown puts d in the set in use and in the one being loaded, and asks
// for a larger set when the one in use is full. Sync calls it, under syncMu.
func (v *Verifier) addKnown(d *store.Digest) {
	if k := v.known.Load(); k != nil && k.add(d) {
		select {
		case v.reload <- struct{}{}:
		default:
		}
	}
	if v.pending != nil {
		v.pending.add(d)
	}
}

// forgetKnown drops the set, which no longer follows the store (the cache
// was voided: a change may have been missed), and asks for a new one.
// Sync calls it, under syncMu.
func (v *Verifier) forgetKnown() {
	if v.lister == nil {
		return
	}
	v.known.Store(nil)
	v.pending = nil
	v.knownEpoch++
	select {
	case v.reload <- struct{}{}:
	default:
	}
}

// knownReadGrace is how long Close lets a read of the digests in progress
// go on before cutting it short.
const knownReadGrace = 2 * time.Second

// keepKnown loads the set whenever asked to (forgetKnown, a full set),
// retrying a failed load every second until Close. A store that answers
// errors.ErrUnsupported has no set.
func (v *Verifier) keepKnown() {
	defer close(v.knownDone)
	// Close does not wait for a long read of the digests to end, but lets
	// one about to end do so: a read cut short makes database/sql drop its
	// connection, and SQLite then leaves the store's write-ahead log beside
	// it when the process exits (`caddy validate`, a stop just after start).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-v.stop:
			select {
			case <-ctx.Done():
			case <-time.After(knownReadGrace):
			}
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-v.stop:
			return
		case <-v.reload:
		}
		for {
			err := v.loadKnown(ctx)
			if err == nil {
				break
			}
			if errors.Is(err, errors.ErrUnsupported) {
				return // a store wrapper that cannot list after all
			}
			// Not reported: without the set, misses ask the store as they
			// would anyway, and a store that cannot answer is reported by
			// the change-log poll. keygate_known_digests stays 0.
			select {
			case <-v.stop:
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// loadKnown reads every digest into a new set and puts it in use, unless
// the set was dropped meanwhile (another load is then due). Syncs that run
// during the read add what they see to the new set too, so a key issued
// after the read began is in it as well.
func (v *Verifier) loadKnown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(v.opts.StoreTimeout, time.Minute))
	defer cancel()
	n, err := v.st.CountKeys(ctx, store.ListFilter{All: true})
	if err != nil {
		return fmt.Errorf("keygate: verifier: counting keys for the set of known digests: %w", err)
	}
	v.syncMu.Lock()
	if !v.synced {
		// No cursor yet: the first Sync that succeeds drops the set and
		// asks again.
		v.syncMu.Unlock()
		return nil
	}
	k := newKnownSet(n)
	epoch := v.knownEpoch
	v.pending = k
	v.syncMu.Unlock()

	err = v.lister.EachDigest(ctx, func(d store.Digest) { k.add(&d) })

	v.syncMu.Lock()
	defer v.syncMu.Unlock()
	if v.pending == k {
		v.pending = nil
	}
	if err != nil {
		return fmt.Errorf("keygate: verifier: reading the set of known digests: %w", err)
	}
	if v.knownEpoch == epoch {
		v.known.Store(k)
		// What asked for another load since this one began asked about
		// the set this one replaces: a full set, or a drop that came
		// before this load read the epoch (a later one would have changed
		// it). This set is complete; a second read of every digest is not
		// needed.
		select {
		case <-v.reload:
		default:
		}
	}
	return nil
}

// takeRound returns the round the Sync about to start completes, and opens
// the next one for misses arriving from now on.
func (v *Verifier) takeRound() *syncRound {
	v.roundMu.Lock()
	defer v.roundMu.Unlock()
	r := v.round
	v.round = &syncRound{done: make(chan struct{})}
	return r
}

// awaitSync waits for a Sync that starts after it is called, asking the
// poller for one now, and returns that Sync's error.
func (v *Verifier) awaitSync(ctx context.Context) error {
	v.roundMu.Lock()
	r := v.round
	v.roundMu.Unlock()
	select {
	case v.kick <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	case <-v.stop:
		return ErrClosed
	}
}

// unknownUnlessNew answers a miss whose digest the set in use does not hold:
// it waits for a Sync, and if the set still does not hold d, d is unknown
// (and cached as such, like the store's answer would be). If that Sync
// failed, or the set was dropped meanwhile, the store is asked as before.
func (v *Verifier) unknownUnlessNew(ctx context.Context, d store.Digest, ttl time.Duration) (*store.Record, error) {
	if v.down.Load() {
		// No poll vouches for the set while the store fails: ask it, or be
		// told at once that another lookup is, rather than wait for a poll.
		v.misses.Add(1)
		return v.fill(ctx, d, ttl)
	}
	filled := v.now()
	seq := v.seq.Load()
	err := v.awaitSync(ctx)
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	case errors.Is(err, ErrClosed):
		return nil, err
	}
	if k := v.known.Load(); err != nil || k == nil || k.has(&d) {
		v.misses.Add(1)
		return v.fill(ctx, d, ttl)
	}
	v.filtered.Add(1)
	if ttl > 0 {
		life := min(ttl, v.opts.NegativeTTL)
		v.cache.SetWithTTL(cacheKey(&d), v.newEntry(d, nil, seq, filled, life), unknownCost, life)
	}
	return nil, ErrUnknown
}
