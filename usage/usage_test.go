package usage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// sink sums what it is given, and can be made to fail.
type sink struct {
	mu     sync.Mutex
	fail   bool
	calls  int
	counts map[string]map[string]int64 // key -> metric -> n
	ips    map[string]map[string]int64
	last   map[string]time.Time
}

func newSink() *sink {
	return &sink{counts: map[string]map[string]int64{}, ips: map[string]map[string]int64{}, last: map[string]time.Time{}}
}

func (s *sink) AddUsage(_ context.Context, deltas []store.UsageDelta) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail {
		return errors.New("database is locked")
	}
	for _, d := range deltas {
		if s.counts[d.KeyID] == nil {
			s.counts[d.KeyID], s.ips[d.KeyID] = map[string]int64{}, map[string]int64{}
		}
		for m, n := range d.Counts {
			s.counts[d.KeyID][m] += n
		}
		for ip, n := range d.IPs {
			s.ips[d.KeyID][ip] += n
		}
		if d.LastUsedAt.After(s.last[d.KeyID]) {
			s.last[d.KeyID] = d.LastUsedAt
		}
	}
	return nil
}

var t0 = time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)

func TestRecorderCountsEverythingOnce(t *testing.T) {
	r := NewRecorder()
	s := newSink()
	r.Record("key_a", MetricAllowed, 202, 3, "10.0.0.1", t0)
	r.Record("key_a", MetricAllowed, 502, 0, "10.0.0.2", t0.Add(time.Minute))
	r.Record("key_a", DeniedPrefix+"rate_limited", 429, 0, "10.0.0.1", t0.Add(2*time.Minute))
	r.Record("key_b", DeniedPrefix+"revoked_key", 401, 0, "10.0.0.9", t0)
	r.Record("", DeniedPrefix+"invalid_key", 401, 0, "10.0.0.9", t0) // unknown keys are not per-key usage
	if err := r.Flush(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]int64{
		"key_a": {"allowed": 2, "denied.rate_limited": 1, "recipients": 3, "status.2xx": 1, "status.4xx": 1, "status.5xx": 1},
		"key_b": {"denied.revoked_key": 1, "status.4xx": 1},
	}
	for key, metrics := range want {
		for m, n := range metrics {
			if got := s.counts[key][m]; got != n {
				t.Errorf("%s %s = %d, want %d", key, m, got, n)
			}
		}
	}
	if len(s.counts) != 2 {
		t.Errorf("keys flushed: %v", s.counts)
	}
	if s.ips["key_a"]["10.0.0.1"] != 2 || s.ips["key_a"]["10.0.0.2"] != 1 {
		t.Errorf("ips: %v", s.ips["key_a"])
	}
	if !s.last["key_a"].Equal(t0.Add(time.Minute)) {
		t.Errorf("last used = %v, want the last allowed request", s.last["key_a"])
	}
	if _, ok := s.last["key_b"]; ok {
		t.Error("a denied-only key got a last-used time")
	}
	if err := r.Flush(context.Background(), s); err != nil || s.calls != 1 {
		t.Errorf("an empty flush wrote to the store (calls=%d, err=%v)", s.calls, err)
	}
}

func TestRecorderKeepsCountsWhenAFlushFails(t *testing.T) {
	r := NewRecorder()
	s := newSink()
	s.fail = true
	r.Record("key_a", MetricAllowed, 200, 0, "", t0)
	if err := r.Flush(context.Background(), s); err == nil {
		t.Fatal("flush into a failing store reported success")
	}
	r.Record("key_a", MetricAllowed, 200, 0, "", t0)
	s.fail = false
	if err := r.Flush(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if got := s.counts["key_a"]["allowed"]; got != 2 {
		t.Errorf("allowed = %d after a failed and a good flush, want 2", got)
	}
	if r.Backlog() != 0 {
		t.Errorf("backlog %d after a good flush", r.Backlog())
	}
}

func TestRecorderBoundsPendingAcrossAnOutage(t *testing.T) {
	r := NewRecorder()
	r.MaxPending = 3
	s := newSink()
	s.fail = true
	for h := 0; h < 5; h++ {
		r.Record("key_a", MetricAllowed, 200, 0, "", t0.Add(time.Duration(h)*time.Hour))
	}
	r.Flush(context.Background(), s)
	if _, _, dropped := r.Stats(); dropped != 2 || r.Backlog() != 3 {
		t.Errorf("dropped %d, backlog %d; want the 2 oldest hours dropped", dropped, r.Backlog())
	}
}

func TestRecorderLosesNothingUnderConcurrentFlushes(t *testing.T) {
	r := NewRecorder()
	s := newSink()
	var wg sync.WaitGroup
	const writers, each = 8, 5000
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				r.Flush(context.Background(), s)
			}
		}
	}()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r.Record("key_a", MetricAllowed, 200, 1, "10.0.0.1", t0)
			}
		}()
	}
	wg.Wait()
	close(stop)
	r.Flush(context.Background(), s)
	if got := s.counts["key_a"]["allowed"]; got != writers*each {
		t.Errorf("allowed = %d, want %d", got, writers*each)
	}
	if got := s.counts["key_a"]["recipients"]; got != writers*each {
		t.Errorf("recipients = %d, want %d", got, writers*each)
	}
}

func TestPendingRecipientsForQuotas(t *testing.T) {
	r := NewRecorder()
	r.Record("key_a", MetricAllowed, 200, 5, "", t0)
	r.Record("key_a", MetricAllowed, 200, 7, "", t0.Add(-48*time.Hour))
	if got := r.Pending("key_a", t0.Add(-time.Hour)); got != 5 {
		t.Errorf("pending recipients since an hour ago = %d, want 5", got)
	}
	// A flush into a store that hangs: what it is writing still counts, and
	// asking does not wait for it.
	writing, release := make(chan struct{}), make(chan struct{})
	go r.Flush(context.Background(), sinkFunc(func(context.Context, []store.UsageDelta) error {
		close(writing)
		<-release
		return errors.New("the store gave up")
	}))
	<-writing
	r.Record("key_a", MetricAllowed, 200, 2, "", t0)
	done := make(chan int64)
	go func() { done <- r.Pending("key_a", t0.Add(-time.Hour)) }()
	select {
	case got := <-done:
		if got != 7 {
			t.Errorf("pending recipients during a flush = %d, want 7 (5 being written, 2 since)", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pending waited for a flush into a store that hangs")
	}
	close(release)
}

type sinkFunc func(context.Context, []store.UsageDelta) error

func (f sinkFunc) AddUsage(ctx context.Context, d []store.UsageDelta) error { return f(ctx, d) }

// BenchmarkRecord is the per-request cost of counting usage: no store write.
func BenchmarkRecord(b *testing.B) {
	r := NewRecorder()
	r.Record("key_a", MetricAllowed, 200, 0, "10.0.0.1", t0)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Record("key_a", MetricAllowed, 200, 0, "10.0.0.1", t0)
	}
}

func TestRecorderBoundsIPsPerKeyHour(t *testing.T) {
	r := NewRecorder()
	s := newSink()
	for i := 0; i < MaxIPs+500; i++ {
		r.Record("key_a", MetricAllowed, 200, 0, fmt.Sprintf("10.0.%d.%d", i/256, i%256), t0)
	}
	r.Record("key_a", MetricAllowed, 200, 0, "10.0.0.1", t0) // an IP already counted still counts
	if err := r.Flush(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if got := len(s.ips["key_a"]); got != MaxIPs {
		t.Errorf("%d distinct IPs kept, want %d", got, MaxIPs)
	}
	if got := s.ips["key_a"]["10.0.0.1"]; got != 2 {
		t.Errorf("10.0.0.1 counted %d times, want 2", got)
	}
	if got := s.counts["key_a"]["allowed"]; got != MaxIPs+501 {
		t.Errorf("allowed = %d, want every request counted (%d)", got, MaxIPs+501)
	}
}

func TestRecorderMergesAFailedFlushWithNewCounts(t *testing.T) {
	r := NewRecorder()
	s := newSink()
	s.fail = true
	r.Record("key_a", MetricAllowed, 202, 2, "10.0.0.1", t0)
	r.Record("key_a", DeniedPrefix+"rate_limited", 429, 0, "10.0.0.2", t0)
	r.Flush(context.Background(), s)
	r.Record("key_a", MetricAllowed, 502, 1, "10.0.0.2", t0)
	r.Record("key_a", DeniedPrefix+"rate_limited", 429, 0, "10.0.0.3", t0)
	s.fail = false
	if err := r.Flush(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"allowed": 2, "recipients": 3, "denied.rate_limited": 2,
		"status.2xx": 1, "status.4xx": 2, "status.5xx": 1}
	if got := s.counts["key_a"]; !maps.Equal(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
	if got, want := s.ips["key_a"], map[string]int64{"10.0.0.1": 1, "10.0.0.2": 2, "10.0.0.3": 1}; !maps.Equal(got, want) {
		t.Errorf("ips %v, want %v", got, want)
	}
}

// TestRecorderMemoryPerActiveKey keeps a key's hourly tally small: a
// gateway holds one per active key (issue 7 budgets 1 KiB per active key
// for cache entry, bucket and usage together).
func TestRecorderMemoryPerActiveKey(t *testing.T) {
	const n = 50_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("key_%016d", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := NewRecorder()
	for _, id := range ids {
		r.Record(id, MetricAllowed, 202, 1, "10.0.0.1", t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per active key", per)
	if per > 300 {
		t.Errorf("%.0f bytes per active key's usage tally, want at most 300", per)
	}
	runtime.KeepAlive(r)
}

func TestRecorderReportsWhatItHoldsAndWhatItDropped(t *testing.T) {
	r := NewRecorder()
	r.MaxPending = 2
	s := newSink()
	s.fail = true
	for h := range 3 {
		at := t0.Add(time.Duration(h) * time.Hour)
		r.Record("key_a", MetricAllowed, 202, 2, "10.0.0.1", at)
		r.Record("key_a", DeniedPrefix+"rate_limited", 429, 0, "10.0.0.1", at)
	}
	if got, want := r.Held(), (Counts{KeyHours: 3, Requests: 6, Recipients: 6}); got != want {
		t.Errorf("Held() before a flush = %+v, want %+v", got, want)
	}
	if err := r.Flush(context.Background(), s); err == nil {
		t.Fatal("the flush did not fail")
	}
	// The oldest hour went to keep two.
	if got, want := r.Held(), (Counts{KeyHours: 2, Requests: 4, Recipients: 4}); got != want {
		t.Errorf("Held() after a failed flush = %+v, want %+v", got, want)
	}
	if got, want := r.Dropped(), (Counts{KeyHours: 1, Requests: 2, Recipients: 2}); got != want {
		t.Errorf("Dropped() = %+v, want %+v", got, want)
	}
	s.fail = false
	if err := r.Flush(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if got := r.Held(); got != (Counts{}) {
		t.Errorf("Held() after a flush = %+v, want nothing", got)
	}
}

// A store outage holds at most MaxPendingIPs client IPs counted one by one
// (besides each key-hour's first): keys used from many addresses (a fleet,
// a botnet with a leaked key) hold up to MaxIPs a key-hour, which 100,000
// key-hours would make a hundred million. Past it, the oldest hours lose
// their counts by IP, never a request's count.
func TestRecorderBoundsTheClientIPsHeldThroughAnOutage(t *testing.T) {
	const keys = 250 // a key-hour each hour, each from MaxIPs addresses
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := NewRecorder()
	r.MaxPendingIPs = keys * (MaxIPs - 1) // an hour's
	s := newSink()
	s.fail = true
	for h := range 2 {
		at := t0.Add(time.Duration(h) * time.Hour)
		for k := range keys {
			id := fmt.Sprintf("key_%d_%03d", h, k)
			for ip := range MaxIPs {
				r.Record(id, MetricAllowed, 202, 0, fmt.Sprintf("2001:db8:%x:%x::%x", h, k, ip), at)
			}
		}
		if err := r.Flush(context.Background(), s); err == nil {
			t.Fatal("the flush did not fail")
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	t.Logf("%d key-hours of %d client IPs each, %d IPs held: heap grown by %.1f MB, %.0f bytes an IP",
		2*keys, MaxIPs, r.MaxPendingIPs, grown/1e6, grown/float64(r.MaxPendingIPs))
	if got, want := r.Held(), (Counts{KeyHours: 2 * keys, Requests: 2 * keys * MaxIPs}); got != want {
		t.Errorf("Held() = %+v, want %+v", got, want)
	}
	if got, want := r.Dropped(), (Counts{IPs: keys * (MaxIPs - 1)}); got != want {
		t.Errorf("Dropped() = %+v, want the first hour's counts by IP: %+v", got, want)
	}
	if per := grown / float64(r.MaxPendingIPs); per > 120 {
		t.Errorf("%.0f bytes an IP held, want at most 120 (both hours' would be twice that)", per)
	}
	s.fail = false
	if err := r.Flush(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int{"key_0_000": 1, "key_1_000": MaxIPs} {
		if n := len(s.ips[id]); n != want || s.counts[id][MetricAllowed] != MaxIPs {
			t.Errorf("%s: %d client IPs and %d requests in the store, want %d and %d", id, n, s.counts[id][MetricAllowed], want, MaxIPs)
		}
	}
}

func TestSpillKeepsAFailedFinalFlushForTheNextStart(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "unflushed")
	sp := Spill{Dir: dir, Name: "store1", Store: "postgres://kg:xxxxx@db-old/keygate"}
	r := NewRecorder()
	r.Record("key_a", MetricAllowed, 202, 3, "10.0.0.1", t0)
	r.Record("key_a", MetricAllowed, 202, 0, "10.0.0.2", t0.Add(time.Minute))
	r.Record("key_b", DeniedPrefix+"revoked_key", 401, 0, "10.0.0.3", t0)
	if err := r.Flush(ctx, sp); err != nil {
		t.Fatal(err)
	}
	r.Record("key_a", MetricAllowed, 202, 1, "10.0.0.1", t0.Add(time.Hour))
	if err := r.Flush(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if held := r.Held(); held != (Counts{}) {
		t.Fatalf("the recorder still holds %+v after flushing to the spill", held)
	}
	other := Spill{Dir: dir, Name: "store2"}
	if files, _ := other.Files(); len(files) != 0 {
		t.Fatalf("another store's spill sees %q", files)
	}
	// It does not add them, but can say whose they are.
	if others, err := other.Others(); err != nil || len(others["postgres://kg:xxxxx@db-old/keygate"]) != 2 || len(others) != 1 {
		t.Errorf("another store's spill finds %v, %v; want the first store's two files under its name", others, err)
	}
	if others, _ := sp.Others(); len(others) != 0 {
		t.Errorf("a spill finds its own files among the others': %v", others)
	}

	s := newSink()
	s.fail = true
	if _, err := sp.AddTo(ctx, s); err == nil {
		t.Fatal("AddTo a failing store succeeded")
	}
	if files, _ := sp.Files(); len(files) != 2 {
		t.Fatalf("%d files kept after a failed AddTo, want 2", len(files))
	}
	s.fail = false
	added, err := sp.AddTo(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counts{KeyHours: 3, Requests: 4, Recipients: 4}); added != want {
		t.Errorf("AddTo added %+v, want %+v", added, want)
	}
	want := map[string]map[string]int64{
		"key_a": {MetricAllowed: 3, MetricRecipients: 4, "status.2xx": 3},
		"key_b": {DeniedPrefix + "revoked_key": 1, "status.4xx": 1},
	}
	for k, m := range want {
		if !maps.Equal(s.counts[k], m) {
			t.Errorf("%s: %v, want %v", k, s.counts[k], m)
		}
	}
	if !s.last["key_a"].Equal(t0.Add(time.Hour)) {
		t.Errorf("last use %v", s.last["key_a"])
	}
	if files, _ := sp.Files(); len(files) != 0 {
		t.Errorf("files left after AddTo: %q", files)
	}
}

func TestSpillSetsAsideAFileItCannotRead(t *testing.T) {
	dir := t.TempDir()
	sp := Spill{Dir: dir, Name: "s"}
	if err := os.WriteFile(filepath.Join(dir, "s-1.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.AddTo(context.Background(), newSink()); err == nil || !strings.Contains(err.Error(), "set aside") {
		t.Fatalf("AddTo = %v, want an error saying the file was set aside", err)
	}
	if _, err := sp.AddTo(context.Background(), newSink()); err != nil {
		t.Errorf("AddTo after setting it aside = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "s-1.json.unreadable")); err != nil {
		t.Error(err)
	}
}

func TestSpillReportsAFileItCannotWrite(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o600)
	sp := Spill{Dir: filepath.Join(blocker, "unflushed"), Name: "s"} // under a file: cannot be made
	if err := sp.AddUsage(context.Background(), []store.UsageDelta{{KeyID: "k", Hour: t0}}); err == nil {
		t.Fatal("AddUsage succeeded")
	}
}

// A kept file whose removal fails after its counts were added (a directory
// gone read-only) is never added again, and the error says to remove it; a
// file that cannot be claimed for adding is not added at all, and waits.
func TestSpillNeverAddsAFileTwice(t *testing.T) {
	ctx := context.Background()
	sp := Spill{Dir: t.TempDir(), Name: "s"}
	if err := sp.AddUsage(ctx, []store.UsageDelta{{KeyID: "key_a", Hour: t0, Counts: map[string]int64{MetricAllowed: 25}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { renameFile, removeFile = os.Rename, os.Remove })
	s := newSink()

	renameFile = func(string, string) error { return errors.New("read-only file system") }
	if _, err := sp.AddTo(ctx, s); err == nil || s.calls != 0 {
		t.Fatalf("AddTo with a file it cannot claim: %v, %d additions; want an error and none", err, s.calls)
	}
	renameFile = os.Rename

	removeFile = func(string) error { return errors.New("read-only file system") }
	added, err := sp.AddTo(ctx, s)
	if err == nil || !strings.Contains(err.Error(), "remove") || added.Requests != 25 {
		t.Fatalf("AddTo with a file it cannot remove: %+v, %v; want 25 requests added and an error saying to remove it", added, err)
	}
	for range 3 {
		if added, err := sp.AddTo(ctx, s); err != nil || added != (Counts{}) {
			t.Errorf("AddTo again: %+v, %v; want nothing added", added, err)
		}
	}
	if got := s.counts["key_a"][MetricAllowed]; got != 25 {
		t.Errorf("the store holds %d requests, want the file's 25 once", got)
	}
	if left, err := sp.Claimed(); err != nil || len(left) != 1 {
		t.Errorf("Claimed = %q, %v; want the file that could not be removed", left, err)
	}
}

// hangingSink is a store that does not answer until released.
type hangingSink struct{ release chan struct{} }

func (h hangingSink) AddUsage(ctx context.Context, _ []store.UsageDelta) error {
	select {
	case <-h.release:
		return errors.New("gave up")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Backlog and Held (the backlog metric, the outage's log lines) answer at
// once while a flush waits on a store that hangs, and count what that flush
// holds.
func TestBacklogAndHeldDoNotWaitForAFlush(t *testing.T) {
	r := NewRecorder()
	r.Record("key_a", MetricAllowed, 202, 2, "10.0.0.1", t0)
	r.Record("key_b", MetricAllowed, 202, 0, "10.0.0.1", t0)
	sink := hangingSink{release: make(chan struct{})}
	flushed := make(chan error)
	go func() { flushed <- r.Flush(context.Background(), sink) }()
	time.Sleep(50 * time.Millisecond) // the flush holds its lock and waits on the store
	r.Record("key_a", MetricAllowed, 202, 1, "10.0.0.1", t0)

	done := make(chan struct{})
	var backlog int
	var held Counts
	go func() { backlog, held = r.Backlog(), r.Held(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Backlog and Held wait for the flush")
	}
	if backlog != 3 || held != (Counts{KeyHours: 3, Requests: 3, Recipients: 3}) {
		t.Errorf("during the flush: backlog %d, held %+v; want 3 key-hours, 3 requests, 3 recipients", backlog, held)
	}
	close(sink.release)
	if err := <-flushed; err == nil {
		t.Fatal("the flush into a store that gave up succeeded")
	}
	if held := r.Held(); held != (Counts{KeyHours: 3, Requests: 3, Recipients: 3}) {
		t.Errorf("after the failed flush: held %+v, want all 3 requests", held)
	}
}

// What Pending reports and what was written make up at least everything
// recorded before it was asked, whenever a flush runs: a tally on its way
// from the counters to the flush is in one or the other, never in neither.
func TestPendingNeverMissesATallyOnItsWayToTheStore(t *testing.T) {
	r := NewRecorder()
	var recorded, written atomic.Int64
	sink := sinkFunc(func(_ context.Context, d []store.UsageDelta) error {
		for _, u := range d {
			written.Add(u.Counts[MetricRecipients])
		}
		return nil
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	loop := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					f()
				}
			}
		}()
	}
	loop(func() { r.Record("key_a", MetricAllowed, 200, 1, "", t0); recorded.Add(1) })
	loop(func() { r.Flush(context.Background(), sink) })
	for range 20000 {
		before := recorded.Load()
		p := r.Pending("key_a", t0)
		if w := written.Load(); p+w < before {
			t.Errorf("Pending %d + written %d < %d recorded before asking", p, w, before)
			break
		}
	}
	close(stop)
	wg.Wait()
}
