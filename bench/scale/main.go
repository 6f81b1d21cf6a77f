// Command scale measures keygate's store and caches at a million keys, through
// the packages' public APIs only:
//
//   - issue throughput: CreateKey into a fresh SQLite store, from -workers
//     goroutines (each call is its own transaction, as `caddy keys issue` does);
//
//   - cold-miss KeyByDigest latency on the reopened store (empty connection
//     pool and SQLite page cache; the OS page cache stays warm);
//
//   - the same miss through a fresh verifier.Verifier;
//
//   - heap per active key: its cached entry in a verifier.Verifier, its
//     ratelimit.Local bucket and its hourly usage.Recorder tally, and the sum;
//
//   - more active keys than the cache holds: hit rate, store queries and
//     heap of a Verifier whose cache holds a tenth of the keys in use.
//
//     go run ./bench/scale                 # 1,000,000 keys
//     go run ./bench/scale -n 200000       # quicker
//     go run ./bench/scale -store 'postgres://…/db'   # PostgreSQL: keys bulk-loaded with COPY
//
// If issuing all -n keys is projected to exceed -budget, it stops at -probe
// keys, measures there and prints the projection instead.
//
// With -store postgres://… the database must be empty (the store creates its
// schema). Keys are loaded with COPY in one statement instead of CreateKey
// (a gateway fleet's key table is filled by years of issuing, not by a
// benchmark), then the lookups are timed as for SQLite; the memory figures,
// which do not depend on the store, are skipped.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/caddy-keygate/ratelimit"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/usage"
	"github.com/keygate/caddy-keygate/verifier"
)

func main() {
	n := flag.Int("n", 1_000_000, "keys to issue")
	probe := flag.Int("probe", 200_000, "keys after which the projected issue time is checked against -budget")
	budget := flag.Duration("budget", 4*time.Minute, "longest the issue phase may take")
	workers := flag.Int("workers", 4, "goroutines calling CreateKey")
	lookups := flag.Int("lookups", 10_000, "cold-miss KeyByDigest calls to time")
	cached := flag.Int("cached", 100_000, "distinct keys to fill a Verifier's cache with")
	buckets := flag.Int("buckets", 100_000, "distinct keys to give a rate-limit bucket")
	dir := flag.String("dir", "", "directory for the SQLite file (default: a new temp dir, removed after)")
	storeURI := flag.String("store", "", "postgres://… to measure PostgreSQL (an empty database) instead of a SQLite file")
	flag.Parse()
	log.SetFlags(0)
	ctx := context.Background()
	fmt.Printf("machine: %d CPUs, %s, GOMAXPROCS %d\n", runtime.NumCPU(), runtime.Version(), runtime.GOMAXPROCS(0))
	if *storeURI != "" {
		fmt.Printf("store: %s\n\n", store.RedactURI(*storeURI))
		postgres(ctx, *storeURI, *n, *lookups)
		return
	}

	if *dir == "" {
		d, err := os.MkdirTemp("", "keygate-scale-")
		check(err)
		defer os.RemoveAll(d)
		*dir = d
	}
	path := filepath.Join(*dir, "keys.db")
	os.Remove(path)
	fmt.Printf("store: sqlite:%s\n\n", path)

	// 1. Issue.
	st, err := store.Open(ctx, "sqlite:"+path)
	check(err)
	digests, took, projected := issue(ctx, st, *n, *probe, *budget, *workers)
	check(st.Close())
	issued := len(digests)
	fmt.Printf("issue: %d keys in %s = %.0f keys/s (%d workers, one CreateKey transaction each)\n",
		issued, took.Round(time.Millisecond), float64(issued)/took.Seconds(), *workers)
	if issued < *n {
		fmt.Printf("issue: STOPPED at %d: %d keys projected to take %s (> budget %s); figures below are at %d keys\n",
			issued, *n, projected.Round(time.Second), *budget, issued)
	}
	if fi, err := os.Stat(path); err == nil {
		fmt.Printf("issue: database file %.1f MiB (%.0f bytes/key; WAL not counted)\n", float64(fi.Size())/(1<<20), float64(fi.Size())/float64(issued))
	}

	// 2. Cold misses straight on the store, reopened so nothing is pooled.
	st, err = store.Open(ctx, "sqlite:"+path)
	check(err)
	defer st.Close()
	coldMisses(ctx, st, digests, *lookups)

	// 4. Heap per cached key.
	memory(ctx, st, digests, *cached, *buckets)
}

// coldMisses times KeyByDigest of existing and unknown digests on a freshly
// opened store, then the same existing digests through a fresh Verifier,
// and returns the digests it used.
func coldMisses(ctx context.Context, st store.Store, digests []store.Digest, lookups int) {
	issued := len(digests)
	// Distinct digests, so the Verifier pass below has no repeats.
	sample := make([]store.Digest, min(lookups, issued))
	for i, j := range rand.Perm(issued)[:len(sample)] {
		sample[i] = digests[j]
	}
	lat := make([]time.Duration, len(sample))
	start := time.Now()
	for i, d := range sample {
		t := time.Now()
		if _, err := st.KeyByDigest(ctx, d); err != nil {
			log.Fatalf("KeyByDigest of an issued key: %v", err)
		}
		lat[i] = time.Since(t)
	}
	total := time.Since(start)
	fmt.Printf("\nKeyByDigest, %d random existing digests of %d, reopened store, sequential:\n  %s  (%.0f lookups/s)\n",
		len(sample), issued, percentiles(lat), float64(len(sample))/total.Seconds())

	unknown := make([]time.Duration, len(sample))
	for i := range unknown {
		key, err := verifier.Generate("kg", "live")
		check(err)
		d := verifier.DigestOf(key)
		t := time.Now()
		if _, err := st.KeyByDigest(ctx, d); !errors.Is(err, store.ErrNotFound) {
			log.Fatalf("KeyByDigest of an unknown key: %v", err)
		}
		unknown[i] = time.Since(t)
	}
	fmt.Printf("KeyByDigest, %d unknown digests (ErrNotFound):\n  %s\n", len(unknown), percentiles(unknown))

	// 3. The same misses through a fresh Verifier (digest -> cache miss ->
	// store -> cache set), as a gateway's first request for a key, once the
	// Verifier has read the set of known digests (which a gateway does as
	// it starts).
	start = time.Now()
	v, err := verifier.New(st, verifier.Options{})
	check(err)
	waitKnown(v, issued)
	fmt.Printf("Verifier: the set of %d known digests read in %s\n", v.Stats().KnownDigests, time.Since(start).Round(time.Millisecond))
	for i, d := range sample {
		t := time.Now()
		if _, err := v.Lookup(ctx, d, time.Minute); err != nil {
			log.Fatalf("Lookup of an issued key: %v", err)
		}
		lat[i] = time.Since(t)
	}
	fmt.Printf("Verifier.Lookup cold miss, same digests:\n  %s  (stats %+v)\n", percentiles(lat), v.Stats())

	// Made-up keys through the Verifier: no store query, but each waits
	// for a change-log poll it asks for (so a key issued elsewhere a moment
	// ago is found); concurrent ones share the poll.
	madeUp := make([]time.Duration, 200)
	s0 := v.Stats()
	for i := range madeUp {
		key, err := verifier.Generate("kg", "live")
		check(err)
		t := time.Now()
		if _, err := v.Lookup(ctx, verifier.DigestOf(key), time.Minute); !errors.Is(err, verifier.ErrUnknown) {
			log.Fatalf("Lookup of a made-up key: %v", err)
		}
		madeUp[i] = time.Since(t)
	}
	s1 := v.Stats()
	fmt.Printf("Verifier.Lookup, %d made-up keys one after another:\n  %s  (store queries %d, filtered %d)\n",
		len(madeUp), percentiles(madeUp), s1.StoreQueries-s0.StoreQueries, s1.Filtered-s0.Filtered)
	const clients, each = 64, 50
	var wg sync.WaitGroup
	start = time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				key, _ := verifier.Generate("kg", "live")
				if _, err := v.Lookup(ctx, verifier.DigestOf(key), time.Minute); !errors.Is(err, verifier.ErrUnknown) {
					log.Fatalf("Lookup of a made-up key: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	s2 := v.Stats()
	fmt.Printf("  %d clients × %d made-up keys at once: %s (%.0f keys/s), store queries %d, filtered %d\n",
		clients, each, time.Since(start).Round(time.Millisecond), clients*each/time.Since(start).Seconds(),
		s2.StoreQueries-s1.StoreQueries, s2.Filtered-s1.Filtered)
	v.Close()
}

// waitKnown waits until v has read the set of known digests, at least n.
func waitKnown(v *verifier.Verifier, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	// A few digests share all their bits with others and are not counted.
	for v.Stats().KnownDigests < int64(n-n/1000) {
		if time.Now().After(deadline) {
			log.Fatalf("the Verifier has %d known digests after 5 minutes, want %d", v.Stats().KnownDigests, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memory measures heap per active key: cache entry, bucket, usage tally.
func memory(ctx context.Context, st store.Store, digests []store.Digest, cached, buckets int) {
	issued := len(digests)
	fill := digests[:min(cached, issued)]
	before := heap()
	v, err := verifier.New(st, verifier.Options{MaxCost: int64(2 * len(fill))})
	check(err)
	waitKnown(v, issued) // its set is counted in the empty Verifier
	empty := heap()
	for _, d := range fill {
		if _, err := v.Lookup(ctx, d, time.Hour); err != nil {
			log.Fatalf("Lookup: %v", err)
		}
	}
	time.Sleep(500 * time.Millisecond) // ristretto's Set is asynchronous
	full := heap()
	s0 := v.Stats()
	for _, d := range fill {
		v.Lookup(ctx, d, time.Hour)
	}
	s1 := v.Stats()
	entries := s1.Hits - s0.Hits
	perCached := float64(full-empty) / float64(max(entries, 1))
	fmt.Printf("\nVerifier cache: empty Verifier (MaxCost %d) %.1f MiB; after %d distinct lookups +%.1f MiB; %d of them then hit\n",
		2*len(fill), mib(empty-before), len(fill), mib(full-empty), entries)
	if entries > 0 {
		fmt.Printf("  => %.0f bytes per cached key (heap growth / entries that hit), %.0f bytes including the empty cache's share\n",
			float64(full-empty)/float64(entries), float64(full-before)/float64(entries))
	}
	runtime.KeepAlive(v)
	v.Close()

	// 5. Heap per rate-limit bucket. Ids are made first: a gateway's limiter
	// keys its map with the record's id string, which the record holds anyway.
	ids := make([]string, buckets)
	for i := range ids {
		ids[i] = verifier.NewID()
	}
	before = heap()
	lim := ratelimit.NewLocal()
	l := ratelimit.Limit{N: 600, Per: time.Minute}
	now := time.Now()
	for _, id := range ids {
		if !lim.Allow(ctx, id, l, now).Allowed {
			log.Fatal("a fresh bucket refused its first request")
		}
	}
	after := heap()
	perBucket := float64(after-before) / float64(len(ids))
	fmt.Printf("ratelimit.Local: %d buckets (Len %d) +%.1f MiB => %.0f bytes per bucket (id strings not counted)\n",
		len(ids), lim.Len(), mib(after-before), perBucket)
	runtime.KeepAlive(lim)

	// 6. Heap per key's hourly usage tally: one allowed request each, from
	// one client IP, as an active key's counters look between flushes.
	before = heap()
	rec := usage.NewRecorder()
	for _, id := range ids {
		rec.Record(id, usage.MetricAllowed, 202, 1, "203.0.113.7", now)
	}
	after = heap()
	perTally := float64(after-before) / float64(len(ids))
	fmt.Printf("usage.Recorder: %d key-hours +%.1f MiB => %.0f bytes per active key's tally\n", len(ids), mib(after-before), perTally)
	runtime.KeepAlive(rec)
	runtime.KeepAlive(ids)
	fmt.Printf("\nper active key: %.0f (cache) + %.0f (bucket) + %.0f (usage) = %.0f bytes\n",
		perCached, perBucket, perTally, perCached+perBucket+perTally)

	// 7. More active keys than the cache holds.
	overflow(ctx, st, fill, perCached)
}

// overflow looks keys up through a Verifier whose cache holds a tenth of
// them, uniformly and with a Zipf-skewed popularity (a few integrations
// send most mail), and reports hits, store queries, latency and heap.
func overflow(ctx context.Context, st store.Store, keys []store.Digest, perEntry float64) {
	size := int64(len(keys) / 10)
	lookups := 5 * len(keys)
	fmt.Printf("\nmore active keys than the cache holds: %d keys, cache of %d entries, %d lookups each\n", len(keys), size, lookups)
	for _, skew := range []string{"uniform", "zipf 1.1"} {
		v, err := verifier.New(st, verifier.Options{MaxCost: size})
		check(err)
		waitKnown(v, len(keys)) // not counted below: the cache's growth is
		before := heap()
		pick := func() int { return rand.IntN(len(keys)) }
		if skew != "uniform" {
			z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, uint64(len(keys)-1))
			pick = func() int { return int(z.Uint64()) }
		}
		lat := make([]time.Duration, lookups)
		for i := range lat {
			d := keys[pick()]
			t := time.Now()
			if _, err := v.Lookup(ctx, d, time.Minute); err != nil {
				log.Fatalf("Lookup: %v", err)
			}
			lat[i] = time.Since(t)
		}
		after := heap()
		s := v.Stats()
		fmt.Printf("  %-8s hit rate %.1f%%, %d store queries, heap +%.1f MiB (a full cache of %d entries is %.1f MiB at %.0f B each)\n    latency %s\n",
			skew, 100*float64(s.Hits)/float64(s.Hits+s.Misses), s.StoreQueries, mib(after-before),
			size, float64(size)*perEntry/(1<<20), perEntry, percentiles(lat))
		v.Close()
	}
}

// issue creates up to n keys from workers goroutines and returns their
// digests. After probe keys it projects the time for n and stops if that
// exceeds budget.
func issue(ctx context.Context, st store.Store, n, probe int, budget time.Duration, workers int) ([]store.Digest, time.Duration, time.Duration) {
	digests := make([]store.Digest, n)
	var next, done atomic.Int64
	var stop atomic.Bool
	var projected atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				key, err := verifier.Generate("kg", "live")
				check(err)
				d := verifier.DigestOf(key)
				rec := &store.Record{
					ID: verifier.NewID(), Digest: d, Hint: verifier.Hint(key),
					Name: fmt.Sprintf("scale-%d", i), Owner: "bench", Env: "live",
					Scopes: []string{"mail.send"},
				}
				if err := st.CreateKey(ctx, rec, store.Event{Action: "issued", Actor: "bench/scale"}); err != nil {
					log.Fatalf("CreateKey %d: %v", i, err)
				}
				digests[i] = d
				c := done.Add(1)
				if c%50_000 == 0 {
					el := time.Since(start)
					fmt.Printf("  issued %7d  %6.1fs  %.0f keys/s\n", c, el.Seconds(), float64(c)/el.Seconds())
				}
				if c == int64(probe) && probe < n {
					p := time.Duration(float64(time.Since(start)) * float64(n) / float64(probe))
					projected.Store(int64(p))
					if p > budget {
						stop.Store(true)
					}
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	// Workers that had taken an index when stopped may leave holes; keep
	// only filled slots.
	out := digests[:0]
	var zero store.Digest
	for _, d := range digests {
		if d != zero {
			out = append(out, d)
		}
	}
	return out, took, time.Duration(projected.Load())
}

func percentiles(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s", us(at(.5)), us(at(.9)), us(at(.99)), us(at(.999)), us(s[len(s)-1]))
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func mib(b uint64) float64 { return float64(int64(b)) / (1 << 20) }

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
