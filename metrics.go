package keygate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// keygateMetrics are created once per process and registered with each
// config's metrics registry, so counts continue across reloads. Only
// keyRequests has a per-key label, and it stays empty unless a handler opts
// in (per_key_metrics): key ids are unbounded.
type keygateMetrics struct {
	requests         [numCodes]prometheus.Counter
	requestsVec      *prometheus.CounterVec
	keyRequests      *prometheus.CounterVec
	storeSeconds     *prometheus.HistogramVec
	storeErrors      *prometheus.CounterVec
	limiterEvictions prometheus.Counter
	// failedAuthEvictions counts failed-attempt buckets evicted at the
	// bound (failedAuthClients), added at each minute's sweep.
	failedAuthEvictions prometheus.Counter
	flushSeconds        prometheus.Histogram
	flushErrors         prometheus.Counter
	usageLost           prometheus.Counter
	prunedRows          prometheus.Counter
	collectors          []prometheus.Collector
}

var metrics = newMetrics()

func newMetrics() *keygateMetrics {
	const ns = "keygate"
	m := &keygateMetrics{
		requestsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total",
			Help: "Requests seen by keygate, by decision (allowed or a denial code).",
		}, []string{"decision"}),
		keyRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "key_requests_total",
			Help: "Requests by key id and decision, for handlers with metrics per_key (off by default).",
		}, []string{"key_id", "decision"}),
		storeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "store_query_seconds",
			Help:    "Latency of key store operations.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "store_errors_total",
			Help: "Key store operations that failed (not counting unknown keys).",
		}, []string{"op"}),
		limiterEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "limiter_evictions_total",
			Help: "Idle rate-limit buckets evicted (they were full, so nothing was lost).",
		}),
		failedAuthEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "failed_auth_evictions_total",
			Help: fmt.Sprintf("Clients' failed-attempt buckets evicted to keep at most %d clients tracked per store: the fullest of a sample, never one past its limit while fuller ones remain.", failedAuthClients),
		}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "usage_flush_seconds",
			Help:    "Time to write a batch of usage counts to the store.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "usage_flush_errors_total",
			Help: "Usage flushes that failed and were kept for retry.",
		}),
		usageLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "usage_lost_requests_total",
			Help: "Requests whose usage counts were lost: dropped past the bound of key-hours held while the store refused them, or at a stop that could neither write nor keep them.",
		}),
		prunedRows: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "usage_pruned_rows_total",
			Help: "Hourly usage rows deleted because they were older than usage_retention.",
		}),
	}
	for i := range m.requests {
		m.requests[i] = m.requestsVec.WithLabelValues(Code(i).String())
	}
	m.collectors = []prometheus.Collector{
		m.requestsVec, m.keyRequests, m.storeSeconds, m.storeErrors, m.limiterEvictions, m.failedAuthEvictions, m.flushSeconds, m.flushErrors, m.usageLost, m.prunedRows,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "ratelimit_redis_fallbacks_total",
			Help: "Rate-limit and quota decisions taken locally because Redis was unreachable."},
			func() float64 { return float64(sumShared().fallbacks) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "ratelimit_redis_missed_recipients_total",
			Help: "Recipients counted locally during a Redis outage that Redis did not take afterwards: its quota counters miss them."},
			func() float64 { return float64(sumShared().missed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "ratelimit_redis_lost_quota_counters_total",
			Help: "Quota counters found gone from Redis (a restart without persistence, an eviction) while this node leased from them."},
			func() float64 { return float64(sumShared().lost) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "cache_hits_total",
			Help: "Key lookups answered by the cache (including cached unknown keys)."},
			func() float64 { s := sumStats(); return float64(s.Hits + s.NegativeHits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "cache_misses_total",
			Help: "Key lookups that went to the store."},
			func() float64 { return float64(sumStats().Misses) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "store_queries_total",
			Help: "Key lookups sent to the store (one per distinct missing key, however many requests wait for it)."},
			func() float64 { return float64(sumStats().StoreQueries) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "unknown_keys_filtered_total",
			Help: "Well-formed keys no key matches, answered from the set of known key digests without a store query."},
			func() float64 { return float64(sumStats().Filtered) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "known_digests",
			Help: "Key digests in the gateway's filter of known keys (0 while it is read from the store)."},
			func() float64 { return float64(sumStats().KnownDigests) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "failed_auth_clients",
			Help: fmt.Sprintf("Client addresses (IPv4, or IPv6 /64) whose failed key attempts are tracked, at most %d per store.", failedAuthClients)},
			func() float64 {
				n := 0
				backends.Range(func(_, v any) bool { n += v.(*backend).authFail.Len(); return true })
				return float64(n)
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "usage_backlog",
			Help: "Key-hours of usage counts waiting to be written to the store."},
			func() float64 {
				n := 0
				backends.Range(func(_, v any) bool { n += v.(*backend).usage.Backlog(); return true })
				return float64(n)
			}),
	}
	return m
}

// counted holds the backends and shared limiters keygate's counters sum,
// and what those since closed had counted: a counter must never go down
// when a reload or a config change drops one, or Prometheus takes the drop
// for a restart (and rate() shows a spike).
var counted = struct {
	sync.Mutex
	backends     map[*backend]struct{}
	shared       map[*sharedLimits]struct{}
	closed       verifier.Stats
	closedShared sharedCounts
}{backends: map[*backend]struct{}{}, shared: map[*sharedLimits]struct{}{}}

func countBackend(b *backend) { count(counted.backends, b) }

// uncountBackend keeps what a backend's verifier counted, once it is
// closed, in the counters' closed part.
func uncountBackend(b *backend) {
	uncount(counted.backends, b, func() { addStats(&counted.closed, b.verifier.Stats()) })
}

func countShared(s *sharedLimits) { count(counted.shared, s) }

func uncountShared(s *sharedLimits) {
	uncount(counted.shared, s, func() { counted.closedShared = counted.closedShared.plus(s.counts()) })
}

func count[T comparable](set map[T]struct{}, v T) {
	counted.Lock()
	defer counted.Unlock()
	set[v] = struct{}{}
}

// uncount removes v from set and, if it was there, keeps what it counted
// (keep runs under the lock, so no sum sees it in neither place).
func uncount[T comparable](set map[T]struct{}, v T, keep func()) {
	counted.Lock()
	defer counted.Unlock()
	if _, ok := set[v]; ok {
		delete(set, v)
		keep()
	}
}

// addStats adds st's counters to s; a gauge (KnownDigests) only of what
// is open.
func addStats(s *verifier.Stats, st verifier.Stats) {
	s.Hits += st.Hits
	s.NegativeHits += st.NegativeHits
	s.Misses += st.Misses
	s.StoreQueries += st.StoreQueries
	s.Filtered += st.Filtered
}

func sumStats() verifier.Stats {
	counted.Lock()
	defer counted.Unlock()
	s := counted.closed
	for b := range counted.backends {
		st := b.verifier.Stats()
		addStats(&s, st)
		s.KnownDigests += st.KnownDigests
	}
	return s
}

func sumShared() sharedCounts {
	counted.Lock()
	defer counted.Unlock()
	n := counted.closedShared
	for s := range counted.shared {
		n = n.plus(s.counts())
	}
	return n
}

// registerMetrics adds keygate's collectors to a config's registry. Every
// handler of a config calls it; the registry itself refuses what it already
// holds, so nothing outside the registry remembers it (a config's registry
// is dropped with the config).
func registerMetrics(reg *prometheus.Registry) {
	if reg == nil {
		return
	}
	for _, c := range metrics.collectors {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
		}
	}
}

// timedStore measures the store operations on the request path.
type timedStore struct {
	store.Store
}

func instrumentStore(s store.Store) store.Store {
	if n, ok := s.(store.Notifier); ok {
		return &timedNotifyingStore{timedStore{s}, n}
	}
	return &timedStore{s}
}

type timedNotifyingStore struct {
	timedStore
	store.Notifier
}

func observe(op string, start time.Time, err error) {
	metrics.storeSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		metrics.storeErrors.WithLabelValues(op).Inc()
	}
}

// Quiet passes on the store's (store.Quieter).
func (s *timedStore) Quiet() {
	if q, ok := s.Store.(store.Quieter); ok {
		q.Quiet()
	}
}

// Generation passes on the store's (store.Replaceable), so the verifier
// sees a SQLite store switch files through the timing wrapper.
func (s *timedStore) Generation() uint64 {
	if r, ok := s.Store.(store.Replaceable); ok {
		return r.Generation()
	}
	return 0
}

// EachDigest passes on the store's (store.DigestLister), timed: the
// verifier reads every key's digest through it when it starts and when its
// set of known digests must be read again.
func (s *timedStore) EachDigest(ctx context.Context, fn func(store.Digest)) error {
	l, ok := s.Store.(store.DigestLister)
	if !ok {
		return fmt.Errorf("keygate: %T cannot list key digests: %w", s.Store, errors.ErrUnsupported)
	}
	start := time.Now()
	err := l.EachDigest(ctx, fn)
	observe("each_digest", start, err)
	return err
}

// KeyByDigest times the lookup behind every cache miss.
func (s *timedStore) KeyByDigest(ctx context.Context, d store.Digest) (*store.Record, error) {
	start := time.Now()
	rec, err := s.Store.KeyByDigest(ctx, d)
	observe("key_by_digest", start, err)
	return rec, err
}

// AddUsage times usage flushes.
func (s *timedStore) AddUsage(ctx context.Context, deltas []store.UsageDelta) error {
	start := time.Now()
	err := s.Store.AddUsage(ctx, deltas)
	observe("add_usage", start, err)
	return err
}

// LastChange times the change-log poll.
func (s *timedStore) LastChange(ctx context.Context) (int64, error) {
	start := time.Now()
	n, err := s.Store.LastChange(ctx)
	observe("last_change", start, err)
	return n, err
}

// Changes times the change-log read of a poll that found changes: a
// failure leaves revocations to the cache's clearing, but is a failing poll
// all the same.
func (s *timedStore) Changes(ctx context.Context, after int64) ([]store.Change, error) {
	start := time.Now()
	c, err := s.Store.Changes(ctx, after)
	observe("changes", start, err)
	return c, err
}
