package keygate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// testHandler provisions a handler on a fresh SQLite store, as Caddy would.
func testHandler(tb testing.TB, h *Handler) (*Handler, store.Store) {
	tb.Helper()
	if h.Store == "" {
		h.Store = "sqlite:" + filepath.Join(tb.TempDir(), "keys.db")
	}
	if b, ok := tb.(*testing.B); ok {
		defer quietStderr(b)()
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := h.Provision(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Cleanup(); cancel() })
	return h, h.backend.store
}

// quietStderr sends stderr to /dev/null until the function it returns is
// called, for a benchmark provisioning its handler: Caddy gives a context
// without a config a development logger on stderr, and `go test -bench`
// prints a benchmark's name before running it, so a line logged then (the
// store opened) lands between the name and its figures, where benchstat no
// longer reads them. What the handler logs later goes to /dev/null too.
func quietStderr(b *testing.B) (restore func()) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { null.Close() })
	stderr := os.Stderr
	os.Stderr = null
	return func() { os.Stderr = stderr }
}

func issue(tb testing.TB, st store.Store, scopes ...string) (*store.Record, string) {
	tb.Helper()
	name := "test"
	res, err := keys.New(st, keys.Options{}).Issue(context.Background(), keys.Spec{Name: &name, Scopes: &scopes, Force: true}, "test")
	if err != nil {
		tb.Fatal(err)
	}
	return res.Record, res.Key
}

var okNext = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.WriteHeader(http.StatusAccepted)
	return nil
})

func serve(h *Handler, method, path, key string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	repl := caddy.NewReplacer()
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, okNext); err != nil {
		panic(err)
	}
	return w
}

// flakyStore fails every key lookup while down is set, as an unreachable
// database would.
type flakyStore struct {
	store.Store
	down atomic.Bool
}

func (f *flakyStore) KeyByDigest(ctx context.Context, d store.Digest) (*store.Record, error) {
	if f.down.Load() {
		return nil, errors.New("connection refused")
	}
	return f.Store.KeyByDigest(ctx, d)
}

// openSQLite opens a store in a file of the test's own.
func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// handlerOn is a handler (scope mail.send on /send) on a backend around st,
// put in the pool before the handler asks for it: st may be a store wrapped
// to fail as a test needs.
func handlerOn(t *testing.T, st store.Store) *Handler {
	t.Helper()
	uri, _ := storeURI(filepath.Join(t.TempDir(), "pooled.db"))
	if _, _, err := backends.LoadOrNew(uri, func() (caddy.Destructor, error) {
		return newBackend(uri, st, caddy.Log())
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releaseBackend(uri, caddy.Log()) })
	h, _ := testHandler(t, &Handler{Store: uri, Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	return h
}

func TestStoreUnavailableFailsClosedForUncachedKeys(t *testing.T) {
	st := openSQLite(t)
	flaky := &flakyStore{Store: st}
	h := handlerOn(t, flaky)
	_, cached := issue(t, st, "mail.send")
	_, uncached := issue(t, st, "mail.send")
	if w := serve(h, "POST", "/send", cached); w.Code != http.StatusAccepted {
		t.Fatalf("warm-up: %d %s", w.Code, w.Body)
	}
	time.Sleep(50 * time.Millisecond) // let the cache's asynchronous set land
	flaky.down.Store(true)

	if w := serve(h, "POST", "/send", cached); w.Code != http.StatusAccepted {
		t.Errorf("a cached key while the store is down: %d %s", w.Code, w.Body)
	}
	w := serve(h, "POST", "/send", uncached)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"store_unavailable"`) || w.Header().Get("Retry-After") == "" {
		t.Errorf("an uncached key while the store is down: %d %s %v", w.Code, w.Body, w.Header())
	}
}

func TestPlaceholdersNameTheKey(t *testing.T) {
	h, st := testHandler(t, &Handler{Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	rec, key := issue(t, st, "mail.send")
	r := httptest.NewRequest("POST", "/send", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	repl := caddy.NewReplacer()
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	if err := h.ServeHTTP(httptest.NewRecorder(), r, okNext); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"http.auth.user.id": rec.ID, "keygate.key.id": rec.ID, "keygate.key.name": "test",
		"keygate.key.env": "live", "keygate.scope": "mail.send", "keygate.decision": "allowed",
	} {
		if got, _ := repl.GetString(name); got != want {
			t.Errorf("{%s} = %q, want %q", name, got, want)
		}
	}
}

// A denial before any key passed leaves the key's placeholders empty, so a
// `header >X-Key-Id {keygate.key.id}` or a log line shows nothing rather
// than the placeholder's own text; Caddy's user id stays unknown.
func TestPlaceholdersOfADenialWithoutAKeyAreEmpty(t *testing.T) {
	h, _ := testHandler(t, &Handler{Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	r := httptest.NewRequest("POST", "/send", nil)
	repl := caddy.NewReplacer()
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	if err := h.ServeHTTP(httptest.NewRecorder(), r, okNext); err != nil {
		t.Fatal(err)
	}
	if got := repl.ReplaceKnown("[{keygate.key.id}|{keygate.key.name}|{keygate.key.owner}|{keygate.key.env}|{keygate.decision}]", ""); got != "[||||missing_key]" {
		t.Errorf("the placeholders of a request without a key read %q", got)
	}
	if _, ok := repl.Get("http.auth.user.id"); ok {
		t.Error("{http.auth.user.id} is known for a request without a key")
	}
}

// BenchmarkHotPath is the whole handler on a valid cached key with a scope
// match and a limiter allow; the next handler does nothing. Each request
// gets its own replacer, prepared outside the timer as Caddy's server
// prepares it before calling handlers.
func BenchmarkHotPath(b *testing.B) {
	quietBackground(b)
	h, st := testHandler(b, &Handler{
		Rate:   "1000000000/s",
		Scopes: []ScopeRule{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}},
	})
	_, key := issue(b, st, "mail.send")
	// Caddy's default logger level (INFO) encoding JSON, then discarded;
	// KEYGATE_BENCH_LOG=debug also encodes the allowed request's usage line.
	level := zap.InfoLevel
	if os.Getenv("KEYGATE_BENCH_LOG") == "debug" {
		level = zap.DebugLevel
	}
	h.logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), level))
	if err := h.backend.verifier.Sync(context.Background()); err != nil { // consume the issue's change-log entry
		b.Fatal(err)
	}
	const batch = 1024
	reqs := make([]*http.Request, batch)
	tmpl := httptest.NewRequest("POST", "/v3/mail/send", nil)
	auth := []string{"Bearer " + key}
	prepare := func() {
		for i := range reqs {
			repl := caddy.NewReplacer()
			repl.Map(func(string) (any, bool) { return nil, false }) // caddyhttp's own provider
			r := tmpl.WithContext(context.WithValue(tmpl.Context(), caddy.ReplacerCtxKey, repl))
			r.Header = http.Header{"Authorization": auth}
			reqs[i] = r
		}
	}
	prepare()
	w := nopWriter{h: http.Header{}}
	if err := h.ServeHTTP(w, reqs[0], okNext); err != nil {
		b.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the cache's asynchronous set land
	queries := h.backend.verifier.Stats().StoreQueries
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			prepare()
			b.StartTimer()
		}
		clear(w.h)
		if err := h.ServeHTTP(w, reqs[i%batch], okNext); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := h.backend.verifier.Stats().StoreQueries; got != queries {
		b.Errorf("%d store queries during the benchmark: the hot path is not served from the cache", got-queries)
	}
}

// TestAValidKeysRequestAllocatesTwice: what BenchmarkHotPath measures, a
// cached key's request, allocates its request state and the placeholder
// function Caddy's replacer keeps, and nothing else. (A flag captured by
// the send's trace hook once made a third, on every request.)
func TestAValidKeysRequestAllocatesTwice(t *testing.T) {
	quietBackground(t)
	h, st := testHandler(t, &Handler{
		Rate:   "1000000000/s",
		Scopes: []ScopeRule{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}},
	})
	_, key := issue(t, st, "mail.send")
	h.logger = zap.NewNop()
	if err := h.backend.verifier.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	tmpl := httptest.NewRequest("POST", "/v3/mail/send", nil)
	auth := []string{"Bearer " + key}
	request := func() *http.Request {
		repl := caddy.NewReplacer()
		repl.Map(func(string) (any, bool) { return nil, false }) // caddyhttp's own provider
		r := tmpl.WithContext(context.WithValue(tmpl.Context(), caddy.ReplacerCtxKey, repl))
		r.Header = http.Header{"Authorization": auth}
		return r
	}
	w := nopWriter{h: http.Header{}}
	if err := h.ServeHTTP(w, request(), okNext); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the cache's asynchronous set
	const n = 200
	reqs := make([]*http.Request, n+1)
	for i := range reqs {
		reqs[i] = request()
	}
	i := 0
	allocs := testing.AllocsPerRun(n, func() {
		clear(w.h)
		h.ServeHTTP(w, reqs[i], okNext)
		i++
	})
	if allocs > 2 {
		t.Errorf("a valid key's request allocates %v times, want 2", allocs)
	}
}

type nopWriter struct{ h http.Header }

func (w nopWriter) Header() http.Header       { return w.h }
func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriter) WriteHeader(int)             {}

// countingStore counts usage writes.
type countingStore struct {
	store.Store
	writes atomic.Int64
}

func (c *countingStore) AddUsage(ctx context.Context, d []store.UsageDelta) error {
	c.writes.Add(1)
	return c.Store.AddUsage(ctx, d)
}

func TestUsageIsWrittenInBatchesNotPerRequest(t *testing.T) {
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingStore{Store: st}
	uri, _ := storeURI(filepath.Join(t.TempDir(), "pooled.db")) // a backend already in the pool
	defer func(d time.Duration) { usageFlushInterval = d }(usageFlushInterval)
	usageFlushInterval = time.Hour // only the explicit flush below writes
	if _, _, err := backends.LoadOrNew(uri, func() (caddy.Destructor, error) {
		return newBackend(uri, counting, caddy.Log())
	}); err != nil {
		t.Fatal(err)
	}
	defer releaseBackend(uri, caddy.Log())
	h, _ := testHandler(t, &Handler{Store: uri, Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	rec, key := issue(t, st, "mail.send")
	for i := 0; i < 200; i++ {
		if w := serve(h, "POST", "/send", key); w.Code != http.StatusAccepted {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	if n := counting.writes.Load(); n != 0 {
		t.Fatalf("%d usage writes for 200 requests before a flush", n)
	}
	h.backend.flushUsage()
	if n := counting.writes.Load(); n != 1 {
		t.Fatalf("%d usage writes in one flush, want 1", n)
	}
	u, err := st.Usage(context.Background(), rec.ID, time.Now().Add(-time.Hour))
	if err != nil || u.Allowed != 200 || u.LastUsedAt == nil {
		t.Fatalf("usage after the flush: %+v %v", u, err)
	}
}

func TestFailedAuthLimitStopsStoreQueriesNotCachedKeys(t *testing.T) {
	h, st := testHandler(t, &Handler{FailedAuthLimit: "3/m", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	_, cached := issue(t, st, "mail.send")
	revokedRec, revoked := issue(t, st, "mail.send")
	_, uncached := issue(t, st, "mail.send")
	if err := h.backend.verifier.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{cached, revoked} {
		if w := serve(h, "POST", "/send", key); w.Code != http.StatusAccepted {
			t.Fatalf("warm-up: %d %s", w.Code, w.Body)
		}
	}
	if _, err := keys.New(st, keys.Options{}).Revoke(context.Background(), keys.Revocation{ID: revokedRec.ID}, "test"); err != nil {
		t.Fatal(err)
	}
	h.backend.verifier.Sync(context.Background())
	serve(h, "POST", "/send", revoked) // cached again, as revoked; not a failed attempt
	time.Sleep(50 * time.Millisecond)  // let the cache's asynchronous set land
	for i := 0; i < 3; i++ {
		if w := serve(h, "POST", "/send", "kg_live_garbage"); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	queries := h.backend.verifier.Stats().StoreQueries
	for _, c := range []struct {
		name, key string
		status    int
		code      string
	}{
		{"garbage past the limit", "kg_live_garbage", 429, "auth_rate_limited"},
		{"a well-formed key that is not cached", uncached, 429, "auth_rate_limited"},
		{"a cached valid key", cached, 202, ""},
		{"a cached revoked key", revoked, 401, "revoked_key"},
	} {
		w := serve(h, "POST", "/send", c.key)
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.code) {
			t.Errorf("%s: %d %s, want %d %s", c.name, w.Code, w.Body, c.status, c.code)
		}
	}
	if n := h.backend.verifier.Stats().StoreQueries - queries; n != 0 {
		t.Errorf("%d store queries from a client past its failed-attempt limit", n)
	}
}

// failed_auth_limit tracks at most failedAuthClients client addresses. A
// scanner presenting made-up keys from three times as many IPv6 /64s (a
// /32 holds 2^32) grows the heap by what the bound's clients cost, not by
// what it sent; the client past its limit before the scan is still
// refused, a new client is not refused, and the evictions are counted and
// said in the log at the minute's sweep.
func TestFailedAuthClientsAreBounded(t *testing.T) {
	// 20 an hour: the attacker's bucket refills no token during the scan.
	h, _ := testHandler(t, &Handler{FailedAuthLimit: "20/h", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	h.logger = zap.NewNop() // no usage line for each of the scan's requests
	core, logs := observer.New(zap.InfoLevel)
	h.backend.logger = zap.New(core)
	from := func(addr string) int { return madeUpKeyFrom(t, h, addr) }
	for range 20 {
		from("198.51.100.66:1000")
	}
	if code := from("198.51.100.66:1000"); code != http.StatusTooManyRequests {
		t.Fatalf("the attacker after 20 failures: %d, want 429", code)
	}
	evicted := valueOf(t, metrics.failedAuthEvictions)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const scanned = 3 * failedAuthClients
	for i := range scanned {
		if code := from(fmt.Sprintf("[2001:db8:%x:%x::1]:1000", i>>16, i&0xffff)); code != http.StatusUnauthorized {
			t.Fatalf("a made-up key from the %dth /64: %d, want 401", i+1, code)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held, grown := h.backend.authFail.Len(), int64(after.HeapAlloc)-int64(before.HeapAlloc)
	t.Logf("%d /64s scanned: %d clients tracked, heap grown by %.1f MB", scanned, held, float64(grown)/1e6)
	if held > failedAuthClients || grown > 20e6 {
		t.Errorf("%d clients tracked and the heap grown by %.1f MB, want at most %d and 20 MB", held, float64(grown)/1e6, failedAuthClients)
	}
	if code := from("198.51.100.66:1000"); code != http.StatusTooManyRequests {
		t.Errorf("the attacker after the scan: %d, want 429 (its bucket was evicted)", code)
	}
	if code := from("[2001:db8:ffff:1::1]:1000"); code != http.StatusUnauthorized {
		t.Errorf("a new client at the bound: %d, want 401", code)
	}

	h.backend.reportCrowded()
	if n := valueOf(t, metrics.failedAuthEvictions) - evicted; n < scanned-failedAuthClients {
		t.Errorf("keygate_failed_auth_evictions_total grew by %v, want at least %d", n, scanned-failedAuthClients)
	}
	h.backend.reportCrowded() // a minute without evictions
	got := logs.FilterMessageSnippet("client addresses").All()
	if len(got) != 2 || got[0].Level != zap.WarnLevel || got[0].ContextMap()["tracked"] != int64(failedAuthClients) ||
		got[1].Level != zap.InfoLevel {
		t.Errorf("log lines %+v, want a WARN naming the bound, then an INFO", got)
	}
}

// madeUpKeyFrom sends h a made-up key from the client at addr and returns
// the status it answered.
func madeUpKeyFrom(t *testing.T, h *Handler, addr string) int {
	t.Helper()
	r := httptest.NewRequest("POST", "/send", nil)
	r.RemoteAddr = addr
	r.Header.Set("Authorization", "Bearer kg_live_garbage")
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, okNext); err != nil {
		t.Fatal(err)
	}
	return w.Code
}

// failed_auth_limit counts an IPv6 client by its /64, which one host
// routinely holds whole, and an IPv4 client by its address.
func TestFailedAuthLimitCountsIPv6ClientsByTheir64(t *testing.T) {
	h, _ := testHandler(t, &Handler{FailedAuthLimit: "3/m", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	from := func(addr string) int { return madeUpKeyFrom(t, h, addr) }
	for i, addr := range []string{"[2001:db8:1:2::a]:1000", "[2001:db8:1:2:8000::b]:1001", "[2001:db8:1:2:ffff:ffff:ffff:ffff]:1002"} {
		if code := from(addr); code != http.StatusUnauthorized {
			t.Fatalf("failure %d from %s: %d", i+1, addr, code)
		}
	}
	for _, c := range []struct {
		addr string
		want int
	}{
		{"[2001:db8:1:2::1234]:2000", http.StatusTooManyRequests}, // the same /64
		{"[2001:db8:1:3::a]:2000", http.StatusUnauthorized},       // the next /64
		{"192.0.2.1:3000", http.StatusUnauthorized},
	} {
		if code := from(c.addr); code != c.want {
			t.Errorf("from %s after three failures in 2001:db8:1:2::/64: %d, want %d", c.addr, code, c.want)
		}
	}
	for range 2 {
		from("192.0.2.1:3000")
	}
	for _, c := range []struct {
		addr string
		want int
	}{
		{"[::ffff:192.0.2.1]:3001", http.StatusTooManyRequests}, // the same IPv4 client
		{"192.0.2.2:3000", http.StatusUnauthorized},
	} {
		if code := from(c.addr); code != c.want {
			t.Errorf("from %s after three failures from 192.0.2.1: %d, want %d", c.addr, code, c.want)
		}
	}
}

// keySeries returns keygate_key_requests_total by decision for one key id.
func keySeries(id string) map[string]float64 {
	ch := make(chan prometheus.Metric, 100)
	go func() { metrics.keyRequests.Collect(ch); close(ch) }()
	out := map[string]float64{}
	for m := range ch {
		var pb dto.Metric
		m.Write(&pb)
		labels := map[string]string{}
		for _, l := range pb.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["key_id"] == id {
			out[labels["decision"]] = pb.GetCounter().GetValue()
		}
	}
	return out
}

func TestPerKeyMetricsOnlyWhenAskedFor(t *testing.T) {
	scopes := []ScopeRule{{Scope: "mail.send", Path: "/send"}}
	for _, perKey := range []bool{false, true} {
		h, st := testHandler(t, &Handler{Scopes: scopes, PerKeyMetrics: perKey})
		rec, key := issue(t, st, "mail.send")
		serve(h, "POST", "/send", key)
		serve(h, "POST", "/send", key)
		serve(h, "GET", "/other", key)
		got := keySeries(rec.ID)
		want := map[string]float64{}
		if perKey {
			want = map[string]float64{"allowed": 2, "insufficient_scope": 1}
		}
		if !maps.Equal(got, want) {
			t.Errorf("per_key_metrics=%v: keygate_key_requests_total for the key = %v, want %v", perKey, got, want)
		}
	}
}

func TestUsageRetentionKeepsTheLongestOfTheHandlersAndPrunes(t *testing.T) {
	uri := "sqlite:" + filepath.Join(t.TempDir(), "keys.db")
	short, st := testHandler(t, &Handler{Store: uri, UsageRetention: "40d"})
	long, _ := testHandler(t, &Handler{Store: uri, UsageRetention: "90d"})
	b := short.backend
	if keep, ok := b.usageRetention(); !ok || keep != 90*24*time.Hour {
		t.Fatalf("retention = %v, %v; want the longer 90d", keep, ok)
	}
	forever := &Handler{Store: uri, UsageRetention: "off"}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := forever.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if keep, _ := b.usageRetention(); keep != 0 {
		t.Fatalf("retention with one handler keeping usage forever = %v, want 0", keep)
	}
	forever.Cleanup()
	b.handlers.Delete(long) // as long.Cleanup would, which the test's cleanup calls
	if keep, _ := b.usageRetention(); keep != 40*24*time.Hour {
		t.Fatalf("retention after the others left = %v, want 40d", keep)
	}

	now := time.Now()
	rec, _ := issue(t, st, "mail.send")
	err := st.AddUsage(ctx, []store.UsageDelta{
		{KeyID: rec.ID, Hour: now.Add(-41 * 24 * time.Hour), Counts: map[string]int64{"allowed": 5}, IPs: map[string]int64{"192.0.2.1": 5}},
		{KeyID: rec.ID, Hour: now.Add(-39 * 24 * time.Hour), Counts: map[string]int64{"allowed": 2}, IPs: map[string]int64{"192.0.2.2": 2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b.pruneUsage(ctx, now)
	u, err := st.Usage(ctx, rec.ID, now.Add(-100*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if u.Allowed != 2 || len(u.TopIPs) != 1 || u.TopIPs[0].IP != "192.0.2.2" {
		t.Errorf("after pruning at 40d: %d allowed, IPs %+v; want the 39-day-old hour only", u.Allowed, u.TopIPs)
	}
}

func TestUsageRetentionDefaultAndBounds(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 400 * 24 * time.Hour, "off": 0, "32d": 32 * 24 * time.Hour, "2000h": 2000 * time.Hour} {
		if got, err := parseUsageRetention(v); err != nil || got != want {
			t.Errorf("parseUsageRetention(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"31d", "0", "-1h", "forever", "1y"} {
		if _, err := parseUsageRetention(v); err == nil {
			t.Errorf("parseUsageRetention(%q) accepted", v)
		}
	}
}

func TestEachRequestLogsOneUsageLineWithoutTheKey(t *testing.T) {
	h, st := testHandler(t, &Handler{Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	core, logs := observer.New(zap.DebugLevel)
	h.logger = zap.New(core)
	rec, key := issue(t, st, "templates.read")
	if w := serve(h, "POST", "/send", key); w.Code != http.StatusForbidden {
		t.Fatalf("status %d", w.Code)
	}
	entries := logs.FilterMessage("keygate request").All()
	if len(entries) != 1 {
		t.Fatalf("%d usage lines, want 1", len(entries))
	}
	got := entries[0].ContextMap()
	want := map[string]any{"key_id": rec.ID, "key_name": rec.Name, "scope": "mail.send", "decision": "insufficient_scope",
		"method": "POST", "path": "/send", "status": 403, "client_ip": "192.0.2.1"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v (%T), want %#v", k, got[k], got[k], v)
		}
	}
	if entries[0].Level != zap.InfoLevel {
		t.Errorf("a denial logs at %v, want info", entries[0].Level)
	}
	if line := fmt.Sprint(got); strings.Contains(line, key) {
		t.Errorf("the key is in the log line: %s", line)
	}
}

// changelessStore cannot read its change log while changesDown is set.
type changelessStore struct {
	store.Store
	changesDown atomic.Bool
}

func (s *changelessStore) Changes(ctx context.Context, after int64) ([]store.Change, error) {
	if s.changesDown.Load() {
		return nil, errors.New("connection reset by peer")
	}
	return s.Store.Changes(ctx, after)
}

func (s *changelessStore) LastChange(ctx context.Context) (int64, error) {
	if s.changesDown.Load() {
		return 0, errors.New("connection reset by peer")
	}
	return s.Store.LastChange(ctx)
}

// A revocation through this process's admin API or console is enforced on
// the very next request even when the change log cannot be read back right
// after the write: the changed key is dropped from the cache.
func TestARevocationIsEnforcedWhenTheChangeLogCannotBeReadBack(t *testing.T) {
	st := openSQLite(t)
	cs := &changelessStore{Store: st}
	h := handlerOn(t, cs)
	rec, key := issue(t, st, "mail.send")
	if w := serve(h, "POST", "/send", key); w.Code != http.StatusAccepted {
		t.Fatalf("warm-up: %d %s", w.Code, w.Body)
	}
	time.Sleep(50 * time.Millisecond) // let the cache's asynchronous set land
	cs.changesDown.Store(true)
	if _, err := h.backend.keys.Revoke(context.Background(), keys.Revocation{ID: rec.ID}, "test"); err != nil {
		t.Fatal(err)
	}
	if w := serve(h, "POST", "/send", key); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "revoked_key") {
		t.Errorf("the next request after a revocation whose change log could not be read: %d %s", w.Code, w.Body)
	}
}

// The leak playbook: a key is revoked while old workers behind one address
// still retry it, and its replacement is sent from the same address. A
// revoked key is no failed attempt, so the replacement is served; keys no
// store knows still count.
func TestARevokedKeyRetriedDoesNotLockOutItsReplacement(t *testing.T) {
	h, st := testHandler(t, &Handler{Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	rec, old := issue(t, st, "mail.send")
	if _, err := keys.New(st, keys.Options{}).Revoke(context.Background(), keys.Revocation{ID: rec.ID}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.backend.verifier.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 60 {
		if w := serve(h, "POST", "/send", old); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "revoked_key") {
			t.Fatalf("the revoked key: %d %s", w.Code, w.Body)
		}
	}
	_, replacement := issue(t, st, "mail.send")
	if w := serve(h, "POST", "/send", replacement); w.Code != http.StatusAccepted {
		t.Errorf("the replacement after %d retries of the revoked key from its address: %d %s", 60, w.Code, w.Body)
	}
	made := strings.Repeat("A", 49)
	for range 60 {
		serve(h, "POST", "/send", "kg_live_"+made)
	}
	_, another := issue(t, st, "mail.send")
	if w := serve(h, "POST", "/send", another); w.Code != http.StatusTooManyRequests {
		t.Errorf("a new key after %d made-up keys from its address: %d, want 429 auth_rate_limited", 60, w.Code)
	}
}

// A key stops at its expiry to the millisecond: accepted a millisecond
// before it, expired_key at it. A rotated key's grace ends the same way,
// and a request it began within the grace goes on to its answer while the
// grace ends: a request is decided when it arrives (the next one is
// refused).
func TestAKeyStopsAtItsExpiryToTheMillisecond(t *testing.T) {
	defer func(f func() time.Time) { now = f }(now)
	h, st := testHandler(t, &Handler{Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	svc := keys.New(st, keys.Options{})
	rec, key := issue(t, st, "mail.send")
	res, err := svc.Rotate(context.Background(), rec.ID, time.Hour, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.backend.verifier.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	old, err := svc.Show(context.Background(), rec.ID)
	if err != nil || old.ExpiresAt == nil {
		t.Fatalf("the rotated key: %+v, %v; want its grace's end as its expiry", old, err)
	}
	end := *old.ExpiresAt
	at := func(d time.Duration) { now = func() time.Time { return end.Add(d) } }
	inFlight := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		at(time.Second) // the grace ends while the provider answers
		w.WriteHeader(http.StatusAccepted)
		return nil
	})
	at(-time.Millisecond)
	r := httptest.NewRequest("POST", "/send", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())), inFlight); err != nil || w.Code != http.StatusAccepted {
		t.Errorf("a millisecond before the grace ends, answered after it: %d %s (%v), want 202", w.Code, w.Body, err)
	}
	for _, c := range []struct {
		d    time.Duration
		key  string
		want int
	}{
		{-time.Millisecond, key, http.StatusAccepted},
		{0, key, http.StatusUnauthorized},
		{time.Millisecond, key, http.StatusUnauthorized},
		{0, res.Key, http.StatusAccepted},
	} {
		at(c.d)
		w := serve(h, "POST", "/send", c.key)
		if w.Code != c.want || c.want == http.StatusUnauthorized && !strings.Contains(w.Body.String(), `"expired_key"`) {
			t.Errorf("%v from the grace's end, the %s key: %d %s, want %d", c.d, map[bool]string{true: "old", false: "new"}[c.key == key], w.Code, w.Body, c.want)
		}
	}
}
