// Package usage counts requests per key in memory and writes the counts to
// the store in batches, so the request path never waits for a store write.
//
// Counts are kept per key and UTC hour. A flush swaps the in-memory tallies
// for empty ones and adds them to the store (stores add, never overwrite, so
// many gateways can flush into one database). A failed flush keeps its
// tallies for the next attempt, up to MaxPending tallies; past that the
// oldest hours are dropped and counted in Dropped.
//
// The package imports nothing from Caddy.
package usage

import (
	"context"
	"hash/maphash"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// Sink receives flushed counts; store.Store implements it.
type Sink interface {
	AddUsage(ctx context.Context, deltas []store.UsageDelta) error
}

// Metric names, shared with the store's usage table.
const (
	MetricAllowed    = "allowed"
	MetricRecipients = "recipients"
	DeniedPrefix     = "denied."
	StatusPrefix     = "status."
)

// statusMetrics are the metric names of the HTTP status classes.
var statusMetrics = [...]string{"status.1xx", "status.2xx", "status.3xx", "status.4xx", "status.5xx"}

// statusClass returns the index of status in statusMetrics.
func statusClass(status int) int {
	return min(max(status/100, 1), 5) - 1
}

// StatusMetric returns the metric name of an HTTP status class, e.g.
// "status.2xx", without allocating.
func StatusMetric(status int) string { return statusMetrics[statusClass(status)] }

// MaxIPs bounds the client IPs counted one by one per key and hour between
// two flushes, so a leaked key used from a botnet cannot grow memory without
// limit; requests from further IPs are counted in every other metric. The
// store keeps the same bound over the whole hour (store.MaxHourIPs).
const MaxIPs = store.MaxHourIPs

const numShards = 32

type bucketKey struct {
	keyID string
	hour  int64 // unix seconds of the hour's start
}

// tally is one key's counts for one hour. It is kept small (a gateway
// holds one per active key): fixed fields for what every request counts,
// a slice for denials, which are rare, and the first client IP inline,
// since most keys are used from one place.
type tally struct {
	allowed    int64
	recipients int64
	status     [len(statusMetrics)]int64
	denied     []count // by metric name (DeniedPrefix + code)
	ip         string  // the hour's first client IP, counted in ipN
	ipN        int64
	moreIPs    map[string]int64 // the other IPs, at most MaxIPs-1
	lastUsed   int64            // unix nanoseconds
	lastIP     string
}

type count struct {
	metric string
	n      int64
}

// addDenied counts n denials of one kind.
func (t *tally) addDenied(metric string, n int64) {
	for i := range t.denied {
		if t.denied[i].metric == metric {
			t.denied[i].n += n
			return
		}
	}
	t.denied = append(t.denied, count{metric, n})
}

func (t *tally) addIP(ip string, n int64) {
	switch {
	case ip == "":
	case t.ip == "" || t.ip == ip:
		t.ip = ip
		t.ipN += n
	default:
		if t.moreIPs == nil {
			t.moreIPs = make(map[string]int64, 1)
		}
		if _, ok := t.moreIPs[ip]; ok || len(t.moreIPs) < MaxIPs-1 {
			t.moreIPs[ip] += n
		}
	}
}

// counts returns the tally's metrics as the store takes them.
func (t *tally) counts() map[string]int64 {
	m := make(map[string]int64, 2+len(t.denied))
	if t.allowed > 0 {
		m[MetricAllowed] = t.allowed
	}
	if t.recipients > 0 {
		m[MetricRecipients] = t.recipients
	}
	for i, n := range t.status {
		if n > 0 {
			m[statusMetrics[i]] = n
		}
	}
	for _, c := range t.denied {
		m[c.metric] = c.n
	}
	return m
}

// ips returns the tally's client IPs as the store takes them.
func (t *tally) ips() map[string]int64 {
	m := make(map[string]int64, 1+len(t.moreIPs))
	if t.ip != "" {
		m[t.ip] = t.ipN
	}
	for ip, n := range t.moreIPs {
		m[ip] = n
	}
	return m
}

type shard struct {
	mu sync.Mutex
	m  map[bucketKey]*tally
}

// Recorder counts usage in memory. Its methods are safe for concurrent use.
type Recorder struct {
	shards [numShards]shard
	seed   maphash.Seed // picks a key's shard

	// pending holds tallies whose flush failed, retried with the next one.
	flushMu sync.Mutex
	pending map[bucketKey]*tally

	// MaxPending bounds pending tallies (key-hours) kept across failed
	// flushes.
	MaxPending int
	// MaxPendingIPs bounds the client IPs those tallies count one by one
	// besides each one's first: up to MaxIPs-1 each, MaxPending key-hours
	// could hold a hundred million.
	MaxPendingIPs int

	flushes, failures, dropped atomic.Uint64
	droppedCounts              Counts // guarded by flushMu

	// pendingCounts is what pending holds, published by Flush for Backlog
	// and Held: they feed the metrics scrape and the outage's log lines,
	// and must not wait out a flush into a store that hangs (flushMu is held
	// for the flush's whole timeout).
	pendingCounts atomic.Pointer[Counts]
	// pendingRecipients is each key-hour's recipients in pending, published
	// with pendingCounts, for Pending: a quota's load on a request's path
	// must not wait out a flush either.
	pendingRecipients atomic.Pointer[map[bucketKey]int64]
	// moving is held while Flush moves the shards' tallies to pending and
	// publishes it (no store work under it), and read-held by Pending.
	moving sync.RWMutex
}

// Counts sums tallies, for reporting what is held or was lost.
type Counts struct {
	KeyHours   int   // key-hour tallies
	Requests   int64 // requests counted, allowed and denied
	Recipients int64
	// IPs are client IPs whose count by IP was dropped, their requests
	// still in every other count (Dropped only).
	IPs int64
}

func (c Counts) plus(d Counts) Counts {
	return Counts{c.KeyHours + d.KeyHours, c.Requests + d.Requests, c.Recipients + d.Recipients, c.IPs + d.IPs}
}

func (c *Counts) add(t *tally) {
	c.KeyHours++
	c.Requests += t.allowed
	for _, d := range t.denied {
		c.Requests += d.n
	}
	c.Recipients += t.recipients
}

// CountsOf sums usage deltas as Counts.
func CountsOf(deltas []store.UsageDelta) Counts {
	var c Counts
	for _, d := range deltas {
		c.KeyHours++
		for metric, n := range d.Counts {
			switch {
			case metric == MetricAllowed, strings.HasPrefix(metric, DeniedPrefix):
				c.Requests += n
			case metric == MetricRecipients:
				c.Recipients += n
			}
		}
	}
	return c
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	r := &Recorder{MaxPending: 100_000, MaxPendingIPs: 1_000_000, pending: map[bucketKey]*tally{}, seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].m = map[bucketKey]*tally{}
	}
	return r
}

// shard is the shard that counts keyID.
func (r *Recorder) shard(keyID string) *shard {
	return &r.shards[maphash.String(r.seed, keyID)%numShards]
}

// Record counts one request of keyID: metric (MetricAllowed or
// DeniedPrefix+code), the response status class when status > 0, n
// recipients, and the client IP. allowed requests also update the key's
// last use.
func (r *Recorder) Record(keyID, metric string, status int, recipients int64, ip string, now time.Time) {
	if keyID == "" {
		return
	}
	k := bucketKey{keyID, now.Unix() - now.Unix()%3600}
	s := r.shard(keyID)
	s.mu.Lock()
	t := s.m[k]
	if t == nil {
		t = new(tally)
		s.m[k] = t
	}
	if metric == MetricAllowed {
		t.allowed++
		t.lastUsed, t.lastIP = now.UnixNano(), ip
	} else {
		t.addDenied(metric, 1)
	}
	if status > 0 {
		t.status[statusClass(status)]++
	}
	t.recipients += max(recipients, 0)
	t.addIP(ip, 1)
	s.mu.Unlock()
}

// Backlog returns how many key-hours wait for the next flush.
func (r *Recorder) Backlog() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	if p := r.pendingCounts.Load(); p != nil {
		n += p.KeyHours
	}
	return n
}

// publishPending publishes what pending holds; flushMu is held.
func (r *Recorder) publishPending() {
	var c Counts
	recipients := map[bucketKey]int64{}
	for k, t := range r.pending {
		c.add(t)
		if t.recipients > 0 {
			recipients[k] = t.recipients
		}
	}
	r.pendingCounts.Store(&c)
	r.pendingRecipients.Store(&recipients)
}

// Held returns what is counted in memory and not yet in the store: the
// tallies since the last flush and those failed flushes kept.
func (r *Recorder) Held() Counts {
	var c Counts
	if p := r.pendingCounts.Load(); p != nil {
		c = *p
	}
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for _, t := range s.m {
			c.add(t)
		}
		s.mu.Unlock()
	}
	return c
}

// Dropped returns what was dropped so far to keep the tallies held across
// failed flushes within MaxPending.
func (r *Recorder) Dropped() Counts {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	return r.droppedCounts
}

// Stats reports flushes, failed flushes and dropped key-hours.
func (r *Recorder) Stats() (flushes, failures, dropped uint64) {
	return r.flushes.Load(), r.failures.Load(), r.dropped.Load()
}

// Flush writes everything counted so far to sink. On error the counts are
// kept for the next Flush.
func (r *Recorder) Flush(ctx context.Context, sink Sink) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	// Pending must see each tally in a shard or in what is published,
	// never in neither: the move from one to the other is one step to it.
	r.moving.Lock()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		var taken map[bucketKey]*tally
		if len(s.m) > 0 {
			taken, s.m = s.m, map[bucketKey]*tally{}
		}
		s.mu.Unlock()
		for k, t := range taken {
			merge(r.pending, k, t)
		}
	}
	if len(r.pending) == 0 {
		r.moving.Unlock()
		return nil
	}
	r.publishPending()
	r.moving.Unlock()
	deltas := make([]store.UsageDelta, 0, len(r.pending))
	for k, t := range r.pending {
		d := store.UsageDelta{
			KeyID:  k.keyID,
			Hour:   time.Unix(k.hour, 0).UTC(),
			Counts: t.counts(),
			IPs:    t.ips(),
			LastIP: t.lastIP,
		}
		if t.lastUsed != 0 {
			d.LastUsedAt = time.Unix(0, t.lastUsed).UTC()
		}
		deltas = append(deltas, d)
	}
	// Oldest first, so a store applying them in order keeps last_used_at
	// monotonic and tests see a stable order.
	sort.Slice(deltas, func(i, j int) bool {
		if !deltas[i].Hour.Equal(deltas[j].Hour) {
			return deltas[i].Hour.Before(deltas[j].Hour)
		}
		return deltas[i].KeyID < deltas[j].KeyID
	})
	if err := sink.AddUsage(ctx, deltas); err != nil {
		r.failures.Add(1)
		r.trimPending()
		r.publishPending()
		return err
	}
	r.flushes.Add(1)
	r.pending = map[bucketKey]*tally{}
	r.publishPending()
	return nil
}

// trimPending drops the oldest hours once pending is over its bound of
// key-hours, then the oldest hours' counts by client IP (all but each
// one's first) once over its bound of IPs, so a long store outage cannot
// grow memory without limit: a key used from many addresses (a fleet, a
// botnet with a leaked key) holds up to MaxIPs of them a key-hour.
func (r *Recorder) trimPending() {
	ips := 0
	for _, t := range r.pending {
		ips += len(t.moreIPs)
	}
	overHours := r.MaxPending > 0 && len(r.pending) > r.MaxPending
	overIPs := r.MaxPendingIPs > 0 && ips > r.MaxPendingIPs
	if !overHours && !overIPs {
		return
	}
	keys := make([]bucketKey, 0, len(r.pending))
	for k := range r.pending {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].hour < keys[j].hour })
	if overHours {
		for _, k := range keys[:len(keys)-r.MaxPending] {
			ips -= len(r.pending[k].moreIPs)
			r.droppedCounts.add(r.pending[k])
			delete(r.pending, k)
			r.dropped.Add(1)
		}
		keys = keys[len(keys)-r.MaxPending:]
	}
	for _, k := range keys {
		if r.MaxPendingIPs <= 0 || ips <= r.MaxPendingIPs {
			break
		}
		t := r.pending[k]
		ips -= len(t.moreIPs)
		r.droppedCounts.IPs += int64(len(t.moreIPs))
		t.moreIPs = nil
	}
}

func merge(into map[bucketKey]*tally, k bucketKey, t *tally) {
	dst := into[k]
	if dst == nil {
		into[k] = t
		return
	}
	dst.allowed += t.allowed
	dst.recipients += t.recipients
	for i, n := range t.status {
		dst.status[i] += n
	}
	for _, c := range t.denied {
		dst.addDenied(c.metric, c.n)
	}
	dst.addIP(t.ip, t.ipN)
	for ip, n := range t.moreIPs {
		dst.addIP(ip, n)
	}
	if t.lastUsed > dst.lastUsed {
		dst.lastUsed, dst.lastIP = t.lastUsed, t.lastIP
	}
}

// Pending returns the recipients counted in memory (not yet flushed) for a
// key since a time; quotas add it to what the store holds.
func (r *Recorder) Pending(keyID string, since time.Time) int64 {
	var n int64
	from := since.Unix() - since.Unix()%3600
	r.moving.RLock()
	defer r.moving.RUnlock()
	s := r.shard(keyID)
	s.mu.Lock()
	for k, t := range s.m {
		if k.keyID == keyID && k.hour >= from {
			n += t.recipients
		}
	}
	s.mu.Unlock()
	if p := r.pendingRecipients.Load(); p != nil {
		for k, v := range *p {
			if k.keyID == keyID && k.hour >= from {
				n += v
			}
		}
	}
	return n
}
