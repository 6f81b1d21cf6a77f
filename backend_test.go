package keygate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/usage"
)

// brokenStore fails usage writes while writes is set and change-log reads
// while polls is set, as a full disk or an unreachable database would.
type brokenStore struct {
	store.Store
	writes, polls atomic.Bool
	routes        atomic.Int32 // route reports still to fail
}

var errBroken = errors.New("database or disk is full")

func (s *brokenStore) AddUsage(ctx context.Context, d []store.UsageDelta) error {
	if s.writes.Load() {
		return errBroken
	}
	return s.Store.AddUsage(ctx, d)
}

func (s *brokenStore) RecordRouteScopes(ctx context.Context, lines []store.RouteScope) error {
	if s.routes.Add(-1) >= 0 {
		return errBroken
	}
	return s.Store.RecordRouteScopes(ctx, lines)
}

func (s *brokenStore) LastChange(ctx context.Context) (int64, error) {
	if s.polls.Load() {
		return 0, errBroken
	}
	return s.Store.LastChange(ctx)
}

// startTestBackend opens a backend for uri on st, logging to the returned
// observer, with its final flushes kept under unflushed.
func startTestBackend(t *testing.T, uri string, st store.Store, unflushed string) (*backend, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	defer func(f func() string) { unflushedDir = f }(unflushedDir)
	unflushedDir = func() string { return unflushed }
	v, _, err := backends.LoadOrNew(uri, func() (caddy.Destructor, error) {
		return newBackend(uri, st, zap.New(core))
	})
	if err != nil {
		t.Fatal(err)
	}
	return v.(*backend), logs
}

func openSQLiteStore(t *testing.T, path string) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// record counts n allowed requests with one recipient each.
func record(b *backend, keyID string, n int) {
	for range n {
		b.usage.Record(keyID, usage.MetricAllowed, 202, 1, "192.0.2.1", time.Now())
	}
}

// A graceful stop whose final flush the store refuses (disk full): the
// counts are kept beside Caddy's data and written at the next start, and
// the stop says so at ERROR.
func TestFinalFlushTheStoreRefusesIsKeptForTheNextStart(t *testing.T) {
	defer func(d time.Duration) { usageFlushInterval = d }(usageFlushInterval)
	usageFlushInterval = time.Hour // only the flushes below write
	dir := t.TempDir()
	unflushed := filepath.Join(dir, "unflushed")
	uri := "test:" + t.Name()
	st := &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	b, logs := startTestBackend(t, uri, st, unflushed)
	rec, _ := issue(t, st, "mail.send")
	record(b, rec.ID, 601)
	st.writes.Store(true)
	releaseBackend(uri, zap.NewNop())

	lines := logs.FilterMessageSnippet("final usage flush failed").All()
	if len(lines) != 1 || lines[0].Level != zapcore.ErrorLevel ||
		!strings.Contains(lines[0].Message, "601 requests are kept in "+unflushed) {
		t.Fatalf("final flush lines: %+v", lines)
	}
	if got := lines[0].ContextMap()["requests"]; got != int64(601) {
		t.Errorf("requests field %v, want 601", got)
	}

	// The next start, with the disk freed.
	st2 := openSQLiteStore(t, filepath.Join(dir, "keys.db"))
	b2, logs2 := startTestBackend(t, uri, st2, unflushed)
	defer releaseBackend(uri, zap.NewNop())
	b2.flushUsage()
	u, err := st2.Usage(context.Background(), rec.ID, time.Now().Add(-time.Hour))
	if err != nil || u.Allowed != 601 || u.Recipients != 601 {
		t.Fatalf("usage after the next start: %+v, %v; want 601 allowed", u, err)
	}
	if logs2.FilterMessageSnippet("added the usage counts a previous stop could not write").Len() != 1 {
		t.Errorf("no line says the kept counts were added: %v", logs2.All())
	}
	if files, _ := filepath.Glob(filepath.Join(unflushed, "*")); len(files) != 0 {
		t.Errorf("kept files left after they were added: %q", files)
	}
	b2.flushUsage()
	if u, _ := st2.Usage(context.Background(), rec.ID, time.Now().Add(-time.Hour)); u.Allowed != 601 {
		t.Errorf("the kept counts were added twice: %d allowed", u.Allowed)
	}
}

// startBackendThatCannotKeep starts a test backend whose store refuses
// writes once st.writes is set and whose directory for counts a stop keeps
// cannot be made (a file stands in its way), flushing only when told.
func startBackendThatCannotKeep(t *testing.T) (b *backend, logs *observer.ObservedLogs, st *brokenStore, uri string) {
	t.Helper()
	flush := usageFlushInterval
	t.Cleanup(func() { usageFlushInterval = flush })
	usageFlushInterval = time.Hour
	dir := t.TempDir()
	blocker := filepath.Join(dir, "not-a-directory")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	uri = "test:" + t.Name()
	st = &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	b, logs = startTestBackend(t, uri, st, filepath.Join(blocker, "unflushed"))
	return b, logs, st, uri
}

// When the counts cannot be kept either, the stop says how many are lost.
func TestFinalFlushThatCannotBeKeptSaysHowManyCountsAreLost(t *testing.T) {
	b, logs, st, uri := startBackendThatCannotKeep(t)
	record(b, "key_a", 75)
	record(b, "key_b", 5)
	st.writes.Store(true)
	releaseBackend(uri, zap.NewNop())

	lines := logs.FilterMessageSnippet("final usage flush failed").All()
	if len(lines) != 1 || lines[0].Level != zapcore.ErrorLevel ||
		!strings.Contains(lines[0].Message, "the counts of 80 requests are lost") {
		t.Fatalf("final flush lines: %+v", lines)
	}
	if got := lines[0].ContextMap()["key_hours"]; got != int64(2) {
		t.Errorf("key_hours field %v, want 2", got)
	}
}

// The stop counts one request as one, in words a person reads.
func TestFinalFlushSaysOneRequestAsOne(t *testing.T) {
	b, logs, st, uri := startBackendThatCannotKeep(t)
	record(b, "key_a", 1)
	st.writes.Store(true)
	releaseBackend(uri, zap.NewNop())

	lines := logs.FilterMessageSnippet("final usage flush failed").All()
	if len(lines) != 1 || !strings.Contains(lines[0].Message, "the counts of 1 request are lost") {
		t.Fatalf("final flush lines: %+v", lines)
	}
}

// A store outage is a few lines, not one per failed flush or poll: the
// first failure, a summary per interval, one line when it works again.
func TestStoreOutageIsLoggedOnceNotPerAttempt(t *testing.T) {
	defer func(d time.Duration) { usageFlushInterval = d }(usageFlushInterval)
	usageFlushInterval = time.Hour
	defer func(d time.Duration) { faultInterval = d }(faultInterval)
	faultInterval = time.Hour
	dir := t.TempDir()
	uri := "test:" + t.Name()
	st := &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	b, logs := startTestBackend(t, uri, st, filepath.Join(dir, "unflushed"))
	defer releaseBackend(uri, zap.NewNop())

	st.writes.Store(true)
	st.polls.Store(true)
	for range 100 {
		record(b, "key_a", 1)
		b.flushUsage()
	}
	time.Sleep(time.Second) // about five polls of the change log
	st.writes.Store(false)
	st.polls.Store(false)
	b.flushUsage()
	time.Sleep(500 * time.Millisecond)

	flush := logs.FilterMessageSnippet("writing usage counts").All()
	if len(flush) != 2 || flush[0].Level != zapcore.ErrorLevel || flush[1].Level != zapcore.InfoLevel ||
		!strings.Contains(flush[1].Message, "works again") || flush[1].ContextMap()["failures"] != int64(100) {
		t.Errorf("100 failed flushes and a good one logged as %d lines: %+v", len(flush), flush)
	}
	if got := flush[0].ContextMap()["held_requests"]; got != int64(1) {
		t.Errorf("the first line holds %v requests, want 1", got)
	}
	poll := logs.FilterMessageSnippet("key change log").All()
	if len(poll) != 2 || poll[0].Level != zapcore.WarnLevel || !strings.Contains(poll[1].Message, "works again") {
		t.Errorf("failed polls logged as %d lines: %+v", len(poll), poll)
	}
}

// Counts dropped during an outage are said once, at its end: a flush
// failure within a minute of that line (a fault that comes and goes) is
// folded into the next line, whose "works again" does not say the same
// drops again as if more were lost.
func TestDroppedCountsAreSaidOnce(t *testing.T) {
	defer func(d time.Duration) { usageFlushInterval = d }(usageFlushInterval)
	usageFlushInterval = time.Hour
	defer func(d time.Duration) { faultInterval = d }(faultInterval)
	faultInterval = 300 * time.Millisecond
	dir := t.TempDir()
	uri := "test:" + t.Name()
	st := &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	b, logs := startTestBackend(t, uri, st, filepath.Join(dir, "unflushed"))
	defer releaseBackend(uri, zap.NewNop())
	b.usage.MaxPending = 1

	st.writes.Store(true)
	record(b, "key_a", 1)
	b.flushUsage() // the outage begins
	record(b, "key_b", 2)
	record(b, "key_c", 3)
	b.flushUsage() // three key-hours wait: two are dropped
	st.writes.Store(false)
	b.flushUsage() // works again, saying what was dropped
	st.writes.Store(true)
	record(b, "key_d", 1)
	b.flushUsage() // within the interval: quiet
	st.writes.Store(false)
	time.Sleep(faultInterval)
	b.flushUsage() // the quiet fault's end

	var ends []string
	for _, l := range logs.FilterMessageSnippet("writing usage counts works again").All() {
		// Which two of the three key-hours of one hour are dropped is
		// the map's order: 3, 4 or 5 requests.
		n, _ := l.ContextMap()["dropped_requests"].(int64)
		ends = append(ends, fmt.Sprint(l.Level, " ", n >= 3 && n <= 5, " ", n == 0))
	}
	if want := []string{"error true false", "info false true"}; !reflect.DeepEqual(ends, want) {
		t.Errorf("the outage's ends logged as %q, want %q: the second end dropped nothing", ends, want)
	}
}

// Counts by client IP dropped to keep an outage's memory bounded are said:
// in the lines while it lasts and at its end, which says the counts are in
// the store but not every address of the oldest hours.
func TestDroppedClientIPsAreSaid(t *testing.T) {
	defer func(d time.Duration) { usageFlushInterval = d }(usageFlushInterval)
	usageFlushInterval = time.Hour
	defer func(d time.Duration) { faultInterval = d }(faultInterval)
	faultInterval = 100 * time.Millisecond
	dir := t.TempDir()
	uri := "test:" + t.Name()
	st := &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	b, logs := startTestBackend(t, uri, st, filepath.Join(dir, "unflushed"))
	defer releaseBackend(uri, zap.NewNop())
	b.usage.MaxPendingIPs = 5

	from := func(first, n int) {
		for i := range n {
			b.usage.Record("key_a", usage.MetricAllowed, 202, 1, fmt.Sprintf("192.0.2.%d", first+i), time.Now())
		}
	}
	st.writes.Store(true)
	from(1, 4)
	b.flushUsage() // the outage begins; 3 IPs besides the first are held
	from(5, 6)
	time.Sleep(faultInterval)
	b.flushUsage() // 9 besides the first: dropped, and said
	st.writes.Store(false)
	b.flushUsage() // works again

	lasts := logs.FilterMessageSnippet("writing usage counts still fails").All()
	ends := logs.FilterMessageSnippet("writing usage counts works again").All()
	if len(lasts) != 1 || lasts[0].ContextMap()["dropped_client_ips"] != int64(9) {
		t.Errorf("the outage's lines %+v, want one saying 9 client IPs dropped", lasts)
	}
	if len(ends) != 1 || ends[0].Level != zapcore.WarnLevel || ends[0].ContextMap()["dropped_client_ips"] != int64(9) ||
		!strings.Contains(ends[0].Message, "by client IP") {
		t.Errorf("the outage's end %+v, want a WARN saying 9 client IPs' counts were dropped", ends)
	}
}

// Counts dropped by an outage's very first failed flush (more than
// MaxPending key-hours, or MaxPendingIPs client IPs, flushed in one go) are
// said in its first line and again at its end, as
// keygate_usage_lost_requests_total counts them. Until session 34 the first
// line took what was dropped by then as the outage's starting point, so no
// line named them.
func TestCountsDroppedByAnOutagesFirstFlushAreSaid(t *testing.T) {
	defer func(d time.Duration) { usageFlushInterval = d }(usageFlushInterval)
	usageFlushInterval = time.Hour
	defer func(d time.Duration) { faultInterval = d }(faultInterval)
	faultInterval = time.Hour
	for _, c := range []struct {
		name                    string
		maxPending, maxIPs, ips int
		first, end              func(usage.Counts) string
		endLevel                zapcore.Level
	}{
		{"key-hours", 1, 0, 1,
			func(d usage.Counts) string {
				return "the counts of " + countOf(int(d.Requests), "request") + " were dropped at once"
			},
			func(d usage.Counts) string {
				return "the counts of " + countOf(int(d.Requests), "request") + " were dropped meanwhile"
			}, zapcore.ErrorLevel},
		{"client IPs", 100, 5, 10,
			func(d usage.Counts) string { return "by client IP of 9 addresses were dropped at once" },
			func(d usage.Counts) string { return "by client IP of 9 addresses were dropped" }, zapcore.WarnLevel},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			uri := "test:" + t.Name()
			st := &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
			b, logs := startTestBackend(t, uri, st, filepath.Join(dir, "unflushed"))
			defer releaseBackend(uri, zap.NewNop())
			b.usage.MaxPending, b.usage.MaxPendingIPs = c.maxPending, c.maxIPs

			st.writes.Store(true)
			b.usage.Record("key_a", usage.MetricAllowed, 202, 1, "192.0.2.1", time.Now())
			for i := range c.ips {
				b.usage.Record("key_b", usage.MetricAllowed, 202, 1, fmt.Sprintf("192.0.2.%d", i+1), time.Now())
			}
			b.flushUsage() // the outage begins, and drops at once
			st.writes.Store(false)
			b.flushUsage() // works again
			d := b.usage.Dropped()
			if d.Requests == 0 && d.IPs == 0 {
				t.Fatal("the first failed flush dropped nothing: the test needs it to")
			}

			lines := logs.FilterMessageSnippet("writing usage counts").All()
			if len(lines) != 2 {
				t.Fatalf("the outage logged as %d lines, want 2: %+v", len(lines), lines)
			}
			for _, l := range lines {
				m := l.ContextMap()
				if m["dropped_client_ips"] != d.IPs || d.Requests > 0 && m["dropped_requests"] != d.Requests {
					t.Errorf("%q says dropped_requests=%v dropped_client_ips=%v, want the %d requests and %d client IPs the first failed flush dropped",
						l.Message, m["dropped_requests"], m["dropped_client_ips"], d.Requests, d.IPs)
				}
			}
			if !strings.Contains(lines[0].Message, c.first(d)) {
				t.Errorf("the outage's first line %q does not say %q", lines[0].Message, c.first(d))
			}
			if lines[1].Level != c.endLevel || !strings.Contains(lines[1].Message, c.end(d)) {
				t.Errorf("the outage's end %q (%v), want %v saying %q", lines[1].Message, lines[1].Level, c.endLevel, c.end(d))
			}
		})
	}
}

// A route report the store fails at start (a pooler restarting as the
// gateway starts) is tried again every reportRetry until it lands, so
// `caddy keys` and the console offer the routes' scopes within seconds, not
// at the next hourly report; the outage is two lines, not one per try.
func TestARouteReportTheStoreFailsIsRetried(t *testing.T) {
	defer func(d time.Duration) { reportRetry = d }(reportRetry)
	reportRetry = 10 * time.Millisecond
	dir := t.TempDir()
	uri := "test:" + t.Name()
	st := &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	st.routes.Store(3)
	b, logs := startTestBackend(t, uri, st, filepath.Join(dir, "unflushed"))
	defer releaseBackend(uri, zap.NewNop())
	b.handlers.Store(t, handlerInfo{scopes: []store.RouteScope{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}}})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.reportUntilTaken(ctx)
	if ctx.Err() != nil {
		t.Fatal("the report never landed")
	}
	got, err := st.RouteScopes(context.Background(), time.Now().Add(-time.Hour))
	if err != nil || len(got) != 1 || got[0].Scope != "mail.send" {
		t.Fatalf("the store holds %+v (%v), want the route's mail.send line", got, err)
	}
	lines := logs.FilterMessageSnippet("route").All()
	if len(lines) != 2 || lines[0].Level != zapcore.WarnLevel || lines[1].Level != zapcore.InfoLevel ||
		lines[1].ContextMap()["failures"] != int64(3) {
		t.Errorf("3 failed reports and a good one logged as %d lines: %+v", len(lines), lines)
	}
}

// Counts a stop kept while PostgreSQL did not answer belong to the same
// database after a reload that changes only its pool or connection
// settings: measured with two nodes, a reload to pool_max_conns=4 during a
// partition left 241 requests' counts in a file, waiting (with a warning)
// for a gateway with the old URI. Files an older keygate kept under the new
// URI's full name are added too.
func TestKeptCountsFollowAPoolChange(t *testing.T) {
	defer func(d time.Duration) { usageFlushInterval = d }(usageFlushInterval)
	usageFlushInterval = time.Hour
	dir := t.TempDir()
	unflushed := filepath.Join(dir, "unflushed")
	db := "postgres://keygate:hunter2@db.internal:5432/keygate?sslmode=verify-full&"
	before, after := db+"pool_max_conns=10", db+"connect_timeout=3&pool_max_conns=4"
	st := &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	b, _ := startTestBackend(t, before, st, unflushed)
	rec, _ := issue(t, st, "mail.send")
	hour := time.Now().UTC().Truncate(time.Hour) // before the 7, which an hour turning then puts in the next
	record(b, rec.ID, 7)
	st.writes.Store(true)
	releaseBackend(before, zap.NewNop())
	id := sha256.Sum256([]byte(store.RedactURI(after)))
	older := usage.Spill{Dir: unflushed, Name: "usage-" + hex.EncodeToString(id[:8]), Store: store.RedactURI(after)}
	if err := older.AddUsage(context.Background(), []store.UsageDelta{
		{KeyID: rec.ID, Hour: hour, Counts: map[string]int64{usage.MetricAllowed: 5}}}); err != nil {
		t.Fatal(err)
	}

	st2 := openSQLiteStore(t, filepath.Join(dir, "keys.db"))
	b2, logs := startTestBackend(t, after, st2, unflushed)
	defer releaseBackend(after, zap.NewNop())
	b2.flushUsage()
	if u, err := st2.Usage(context.Background(), rec.ID, hour); err != nil || u.Allowed != 12 {
		t.Errorf("usage after the reload: %d allowed, %v; want the 7 kept at the stop and the older file's 5", u.Allowed, err)
	}
	if w := logs.FilterMessageSnippet("wait for another store name").All(); len(w) != 0 {
		t.Errorf("the kept counts wait for another name: %v", w[0].ContextMap())
	}
}

// Usage counts lost are counted in keygate_usage_lost_requests_total, which
// KeygateUsageLost alerts on: the requests whose counts a long store outage
// dropped past the recorder's bound, and those a stop could neither write
// nor keep. (Before, only ERROR lines said so.)
func TestLostUsageCountsAreCounted(t *testing.T) {
	b, _, st, uri := startBackendThatCannotKeep(t)
	b.usage.MaxPending = 1
	before := counterValue(t, "keygate_usage_lost_requests_total")

	st.writes.Store(true)
	record(b, "key_a", 2)
	b.flushUsage() // held
	record(b, "key_b", 3)
	b.flushUsage() // two key-hours wait: one is dropped
	dropped := b.usage.Dropped().Requests
	if dropped != 2 && dropped != 3 {
		t.Fatalf("the recorder dropped %d requests' counts, want those of one key-hour", dropped)
	}
	if got := counterValue(t, "keygate_usage_lost_requests_total") - before; got != float64(dropped) {
		t.Errorf("keygate_usage_lost_requests_total rose by %v after %d requests' counts were dropped", got, dropped)
	}
	b.flushUsage() // nothing more dropped: not counted again
	if got := counterValue(t, "keygate_usage_lost_requests_total") - before; got != float64(dropped) {
		t.Errorf("keygate_usage_lost_requests_total rose by %v, want %d: a drop was counted twice", got, dropped)
	}

	releaseBackend(uri, zap.NewNop()) // the final flush fails, and so does keeping its counts
	if got := counterValue(t, "keygate_usage_lost_requests_total") - before; got != 5 {
		t.Errorf("keygate_usage_lost_requests_total rose by %v after a stop lost what it held, want 5 in all", got)
	}
}

// changesFailStore fails reads of the change log's entries (not of its
// position) while fail is set.
type changesFailStore struct {
	store.Store
	fail atomic.Bool
}

func (s *changesFailStore) Changes(ctx context.Context, after int64) ([]store.Change, error) {
	if s.fail.Load() {
		return nil, errBroken
	}
	return s.Store.Changes(ctx, after)
}

// A poll that finds changes and cannot read them (the cache is cleared, and
// the poll fails) counts in keygate_store_errors_total{op="changes"}, so
// KeygateStoreErrors sees a change log that cannot be read whichever of its
// two reads fails.
func TestAFailedReadOfTheChangesIsCounted(t *testing.T) {
	dir := t.TempDir()
	uri := "test:" + t.Name()
	st := &changesFailStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	b, _ := startTestBackend(t, uri, st, filepath.Join(dir, "unflushed"))
	defer releaseBackend(uri, zap.NewNop())
	ctx := context.Background()
	if err := b.verifier.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	errs := metrics.storeErrors.WithLabelValues("changes")
	before := valueOf(t, errs)
	issue(t, st, "mail.send") // a change for the next poll to read
	st.fail.Store(true)
	if err := b.verifier.Sync(ctx); err == nil {
		t.Fatal("the poll read the changes, want it to fail")
	}
	if got := valueOf(t, errs) - before; got != 1 {
		t.Errorf(`keygate_store_errors_total{op="changes"} rose by %v, want 1`, got)
	}
}

// A store left behind by a reload that names the same database otherwise
// (another pool size) writes its last counts to the spill while the store
// refuses them; the handlers of the new name, whose first flush found
// nothing kept, add them at their next flush once the store takes writes
// again, not at the next start of the process (until session 37: weeks
// later, the quotas and usage of the running gateway missing them).
func TestCountsKeptByAStoreAReloadLeftAreAddedByTheNewName(t *testing.T) {
	defer func(d time.Duration) { usageFlushInterval = d }(usageFlushInterval)
	usageFlushInterval = time.Hour // only the flushes below write
	dir := t.TempDir()
	unflushed := filepath.Join(dir, "unflushed")
	db := "postgres://keygate@127.0.0.1:1/" + strings.ToLower(t.Name())
	oldURI, newURI := db+"?pool_max_conns=4", db+"?pool_max_conns=2"
	oldSt := &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	newSt := &brokenStore{Store: openSQLiteStore(t, filepath.Join(dir, "keys.db"))}
	old, _ := startTestBackend(t, oldURI, oldSt, unflushed)
	next, logs := startTestBackend(t, newURI, newSt, unflushed)
	defer releaseBackend(newURI, zap.NewNop())
	rec, _ := issue(t, newSt, "mail.send")
	next.flushUsage() // nothing kept yet: it stops looking

	record(old, rec.ID, 7)
	oldSt.writes.Store(true)
	releaseBackend(oldURI, zap.NewNop()) // its last flush keeps the 7 in the spill
	if files, _ := filepath.Glob(filepath.Join(unflushed, "*.json")); len(files) != 1 {
		t.Fatalf("kept files: %q, want the old name's one", files)
	}
	next.flushUsage()
	u, err := newSt.Usage(context.Background(), rec.ID, time.Now().Add(-time.Hour))
	if err != nil || u.Allowed != 7 {
		t.Fatalf("usage after the new name's next flush: %+v, %v; want the 7 the old name kept", u, err)
	}
	if logs.FilterMessageSnippet("added the usage counts a previous stop could not write").Len() != 1 {
		t.Errorf("no line says the kept counts were added: %v", logs.All())
	}
}
