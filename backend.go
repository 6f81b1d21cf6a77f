package keygate

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/keygate/caddy-keygate/internal/faultlog"
	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/ratelimit"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/usage"
	"github.com/keygate/caddy-keygate/verifier"
)

// backend is the state that must outlive a config reload: the store, the
// verified-key cache, rate-limit buckets, quota counters and unflushed usage
// counts. There is one per store URI in this process, shared by every
// keygate handler and by the admin API, kept in a caddy.UsagePool so a
// reload (new config provisioned before the old one is cleaned up) keeps it
// and a stop destroys it, flushing usage first.
type backend struct {
	uri      string
	redacted string
	store    store.Store
	verifier *verifier.Verifier
	limits   *ratelimit.Local       // per-key request buckets (keyLimits)
	authFail *ratelimit.Local       // failed key attempts per client IP, at most failedAuthClients
	quotas   *ratelimit.LocalQuotas // keyLimits
	usage    *usage.Recorder
	logger   *zap.Logger
	// inflight holds the requests passed on and not answered yet, for
	// the last flush to count those it would never see end.
	inflight inflightSet

	// lingerEnd ends a reload's wait for requests in flight (countLate)
	// early, at exit; lingerDone is closed when the store is closed.
	lingerEnd, lingerDone chan struct{}
	lingerOnce            sync.Once

	// keys is key management on this store; its writes are enforced on
	// the next request of this process's handlers.
	keys *keys.Service

	// spill keeps the counts of a final flush the store refused, for the
	// next start; kept is set while files may wait there.
	spill  usage.Spill
	kept   atomic.Bool
	keptMu sync.Mutex // one addKept at a time, or a file could be added twice
	// pollFault and flushFault report store outages in a few lines rather
	// than one per attempt; dropped is Recorder.Dropped when the last flush
	// outage ended, so before the failed flush that began the next one
	// (written and read only by flushFault's reports, which it serialises).
	pollFault, flushFault *faultlog.Fault
	lookupFault           *faultlog.Fault // a key's lookup on a cache miss
	reportFault           *faultlog.Fault // the routes' report
	dropped               usage.Counts
	// lostCounted is the Recorder.Dropped requests already added to
	// keygate_usage_lost_requests_total.
	lostCounted atomic.Int64
	// generation is the store's when the poll last looked
	// (store.Replaceable).
	generation uint64
	// crowdedSeen is authFail.Crowded() at the last sweep, crowdedSince
	// when its evictions began (zero: none at the last sweep); run's.
	crowdedSeen  uint64
	crowdedSince time.Time

	// handlers holds what each live handler contributes (*Handler ->
	// handlerInfo). Provision adds an entry and Cleanup removes it, so
	// nothing here grows across reloads.
	handlers sync.Map

	flushEvery time.Duration
	stop       chan struct{}
	done       chan struct{}
	// runCtx is cancelled by Destruct: it cuts short a periodic flush
	// still waiting on a store that does not answer, so that a stop does
	// not wait out its timeout before the final flush begins.
	runCtx    context.Context
	stopRun   context.CancelFunc
	stopPrune context.CancelFunc // also cancels a prune under way
	pruneDone chan struct{}
	// pruneSoon brings the next prune forward to pruneFirst from now (see
	// detach).
	pruneSoon chan struct{}
}

// handlerInfo is what a live handler contributes to its store's backend.
type handlerInfo struct {
	// prefix is the key prefix the handler accepts, so the admin API and
	// the console issue keys the routes accept.
	prefix string
	// retention is the handler's usage retention (0: keep forever); the
	// store keeps the longest.
	retention time.Duration
	// scopes are the handler's scope lines, reported to the store so that
	// key-management tools can offer and check scope names.
	scopes []store.RouteScope
}

var backends = caddy.NewUsagePool()

// usageFlushInterval bounds how long a count waits in memory.
var usageFlushInterval = time.Second

// unflushedDir is where the counts of final flushes the store refused wait
// for the next start (see usage.Spill); a variable for tests.
var unflushedDir = func() string { return filepath.Join(caddy.AppDataDir(), "keygate", "unflushed") }

// faultInterval is how often an ongoing store outage is summarised in the
// log.
var faultInterval = time.Minute

// verifierPollInterval is how often the change log is polled; 0 is the
// verifier's default. Benchmarks that count instructions lengthen it.
var verifierPollInterval time.Duration

// Usage older than the retention period, and Idempotency-Key answers past
// their day, are deleted pruneFirst after the store is opened (or a reload
// shortens the retention) and every pruneEvery after that.
var (
	pruneFirst = 5 * time.Second
	pruneEvery = time.Hour
)

// Usage retention: the default, and the least a handler may set, which keeps
// the calendar month a recipient quota counts.
const (
	defaultUsageRetention = 400 * 24 * time.Hour
	minUsageRetention     = 32 * 24 * time.Hour
)

// parseUsageRetention reads a usage_retention value: a duration of at least
// minUsageRetention, or "off" (0: keep forever). Empty is the default.
func parseUsageRetention(v string) (time.Duration, error) {
	switch v {
	case "":
		return defaultUsageRetention, nil
	case "off":
		return 0, nil
	}
	d, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("usage_retention %q: want a duration such as 400d, or off (%v)", v, err)
	}
	if d < minUsageRetention {
		return 0, fmt.Errorf("usage_retention %q: want at least 32d (a calendar month of quota counts), or off", v)
	}
	return d, nil
}

// storeURI returns the canonical form of a configured store URI (see
// store.ParseURI); empty means the embedded SQLite store in Caddy's data
// directory, so the gateway and `caddy keys` find the same file.
func storeURI(uri string) (string, error) {
	if uri == "" {
		uri = "sqlite:" + store.DefaultSQLitePath(caddy.AppDataDir())
	}
	return store.ParseURI(uri)
}

// missingSQLite reports whether uri names an embedded store whose file does
// not exist yet, and its path.
func missingSQLite(uri string) (string, bool) {
	path, ok := store.SQLitePath(uri)
	if !ok {
		return "", false
	}
	_, err := os.Stat(path)
	return path, errors.Is(err, fs.ErrNotExist)
}

// acquireBackend returns the backend for uri, opening it on first use. Each
// call must be paired with releaseBackend.
func acquireBackend(uri string, logger *zap.Logger) (*backend, error) {
	v, _, err := backends.LoadOrNew(uri, func() (caddy.Destructor, error) {
		return openBackend(uri, logger)
	})
	if err != nil {
		return nil, err
	}
	return v.(*backend), nil
}

// releaseBackend undoes one acquireBackend; the last one closes the
// backend.
func releaseBackend(uri string, logger *zap.Logger) {
	if _, err := backends.Delete(uri); err != nil {
		logger.Error("keygate: closing the store failed", zap.String("store", store.RedactURI(uri)), zap.Error(err))
	}
}

func openBackend(uri string, logger *zap.Logger) (*backend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	redacted := store.RedactURI(uri)
	path, made := missingSQLite(uri)
	st, err := store.Open(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("keygate: store %s: %w", redacted, err)
	}
	b, err := newBackend(uri, st, logger)
	if err != nil {
		st.Close()
		return nil, err
	}
	if made {
		// Said as `caddy keys issue` says it: a mistyped or moved path in a
		// reloaded config would otherwise answer every key invalid_key with
		// nothing in the log but the store's name.
		b.logger.Warn("keygate: opened the key store, made new: there was no store at its path, so it holds no keys "+
			"and every key presented gets invalid_key until keys are issued into it (check the store option if "+
			"this gateway had keys)", zap.String("path", path))
		return b, nil
	}
	b.logger.Info("keygate: opened the key store")
	return b, nil
}

// keyLimits are the request buckets and recipient quota counts of the
// keys this process decides on its own (without ratelimit redis, or while
// Redis does not answer), by key id, whatever store the keys are on: kept
// per process rather than per store, so that a reload that names the same
// database differently (a new password or pool size in its URI, another
// path to its file), which opens a backend of its own, goes on from them.
// (Per store, such a reload started the keys' buckets full again, and
// their quotas from the store's count, which held neither the sends then
// in flight nor the last second's counts.)
var keyLimits = struct {
	requests *ratelimit.Local
	quotas   *ratelimit.LocalQuotas
}{ratelimit.NewLocal(), ratelimit.NewLocalQuotas()}

// clientOnlyParams are PostgreSQL URI parameters pgx reads for itself:
// they shape this process's pool and connections, never which database it
// reaches. A "pool_" prefix covers the rest (pool_max_conns, …).
var clientOnlyParams = []string{"connect_timeout", "default_query_exec_mode", "statement_cache_capacity",
	"description_cache_capacity"}

// spillNames returns the name that starts the files of counts a final
// flush keeps for the store redacted names, and the other name such files
// had before (if it differs). A PostgreSQL URI names its database without
// the pool and connection parameters, in a fixed order: a reload that
// lowers pool_max_conns during an outage (docs/cluster.md advises it for a
// pooler that is too small) leaves the old handlers' counts to the new
// ones, where they used to wait, with a warning, for a gateway with the old
// pool size (the test that shows it: TestKeptCountsFollowAPoolChange).
func spillNames(redacted string) (string, []string) {
	name := func(s string) string {
		id := sha256.Sum256([]byte(s))
		return "usage-" + hex.EncodeToString(id[:8])
	}
	canonical := redacted
	if u, err := url.Parse(redacted); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") && u.RawQuery != "" {
		q := u.Query()
		for p := range q {
			if strings.HasPrefix(p, "pool_") || slices.Contains(clientOnlyParams, p) {
				q.Del(p)
			}
		}
		u.RawQuery = q.Encode() // sorted by name
		canonical = u.String()
	}
	if canonical == redacted {
		return name(redacted), nil
	}
	return name(canonical), []string{name(redacted)}
}

// newBackend starts the shared state around an open store.
func newBackend(uri string, st store.Store, logger *zap.Logger) (*backend, error) {
	redacted := store.RedactURI(uri)
	st = instrumentStore(st)
	logger = logger.With(zap.String("store", redacted))
	name, also := spillNames(redacted)
	b := &backend{
		uri:      uri,
		redacted: redacted,
		store:    st,
		limits:   keyLimits.requests,
		authFail: ratelimit.NewBoundedLocal(failedAuthClients),
		quotas:   keyLimits.quotas,
		usage:    usage.NewRecorder(),
		logger:   logger,
		spill:    usage.Spill{Dir: unflushedDir(), Name: name, Also: also, Store: redacted},
		// Read here, not in run, so tests may change it between backends.
		flushEvery: usageFlushInterval,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		pruneDone:  make(chan struct{}),
		pruneSoon:  make(chan struct{}, 1),
	}
	b.kept.Store(true)
	if left, _ := b.spill.Claimed(); len(left) > 0 {
		logger.Warn("keygate: usage counts kept at a stop were being added to the store when a gateway stopped; "+
			"they may be in the store already, so they are not added again: compare them with `caddy keys usage`, then remove the files",
			zap.Strings("files", left))
	}
	b.pollFault = faultlog.New(faultInterval, b.logPollFault)
	b.flushFault = faultlog.New(faultInterval, b.logFlushFault)
	b.lookupFault = faultlog.New(faultInterval, b.faultLines(
		"looking a key up in the store failed; keys not in the cache get 503 store_unavailable until it works again",
		"looking keys up in the store still fails", "looking keys up in the store works again"))
	b.reportFault = faultlog.New(faultInterval, b.faultLines(
		"reporting the routes' scope lines and key prefixes to the store failed; it is tried again",
		"reporting the routes to the store still fails", "reporting the routes to the store works again"))
	v, err := verifier.New(st, verifier.Options{
		PollInterval: verifierPollInterval,
		OnSync: func(err error) {
			b.pollFault.Observe(time.Now(), err)
			b.noteSwitch()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("keygate: store %s: %w", redacted, err)
	}
	b.verifier = v
	b.keys = keys.New(st, keys.Options{
		AfterWrite:  b.afterWrite,
		BeforeUsage: b.flushUsage,
		Prefix:      b.onlyPrefix,
	})
	b.runCtx, b.stopRun = context.WithCancel(context.Background())
	var pruneCtx context.Context
	pruneCtx, b.stopPrune = context.WithCancel(context.Background())
	go b.run()
	go b.pruneLoop(pruneCtx)
	countBackend(b)
	return b, nil
}

// usageRetention is the longest retention of the handlers using this store;
// ok is false when no handler uses it (the admin API alone prunes nothing).
func (b *backend) usageRetention() (keep time.Duration, ok bool) {
	b.handlers.Range(func(_, v any) bool {
		d := v.(handlerInfo).retention
		if !ok || d == 0 || (keep != 0 && d > keep) {
			keep = d
		}
		ok = true
		return true
	})
	return keep, ok
}

// detach removes a handler's contribution. When that shortens the store's
// retention (a reload to a shorter usage_retention: the new handler joins
// while the old one still keeps the longer), the next prune comes
// pruneFirst from now instead of up to pruneEvery later.
func (b *backend) detach(h *Handler) {
	was, _ := b.usageRetention()
	b.handlers.Delete(h)
	if keep, ok := b.usageRetention(); ok && keep != 0 && (was == 0 || keep < was) {
		select {
		case b.pruneSoon <- struct{}{}:
		default: // one is pending already
		}
	}
}

// pruneLoop deletes usage past the retention period, and expired
// Idempotency-Key answers, until Destruct. It runs
// apart from run so a long first prune of an old store never delays usage
// flushes.
func (b *backend) pruneLoop(ctx context.Context) {
	defer close(b.pruneDone)
	t := time.NewTimer(pruneFirst)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.pruneSoon:
			t.Reset(pruneFirst)
		case now := <-t.C:
			// A config that is only being validated prunes nothing with
			// its usage_retention, nor reports its routes.
			if configRuns() {
				b.pruneUsage(ctx, now)
				b.pruneAnswers(ctx, now)
				b.reportRouteScopes(ctx, now)
			}
			t.Reset(pruneEvery)
		}
	}
}

func (b *backend) pruneUsage(ctx context.Context, now time.Time) {
	keep, ok := b.usageRetention()
	if !ok || keep == 0 {
		return
	}
	before := now.Add(-keep).Truncate(time.Hour)
	n, err := b.store.PruneUsage(ctx, before)
	metrics.prunedRows.Add(float64(n))
	if err != nil {
		if ctx.Err() == nil {
			b.logger.Warn("keygate: deleting usage past its retention failed; retried within the hour",
				zap.Time("before", before), zap.Int64("rows", n), zap.Error(err))
		}
		return
	}
	if n > 0 {
		b.logger.Info("keygate: deleted usage past its retention",
			zap.Time("before", before), zap.Int64("rows", n), zap.Duration("retention", keep))
	}
}

// pruneAnswers deletes the answers kept for repeats under an
// Idempotency-Key once their day is over, whatever usage_retention says:
// each holds a key, sealed, that no repeat may read any more.
func (b *backend) pruneAnswers(ctx context.Context, now time.Time) {
	if _, err := b.store.PruneAnswers(ctx, now); err != nil && ctx.Err() == nil {
		b.logger.Warn("keygate: deleting expired Idempotency-Key answers failed; retried within the hour", zap.Error(err))
	}
}

// onlyPrefix returns the key prefix of this store's handlers when they
// agree, else "" (the default).
func (b *backend) onlyPrefix() string {
	prefix := ""
	agree := true
	b.handlers.Range(func(_, v any) bool {
		p := v.(handlerInfo).prefix
		if prefix != "" && p != prefix {
			agree = false
			return false
		}
		prefix = p
		return true
	})
	if !agree {
		return ""
	}
	return prefix
}

// reportRouteScopes tells the store which scope lines this process's
// handlers have loaded, stamped now, so that key-management tools know
// which scope names are in use (see keys.RouteScopeWindow).
func (b *backend) reportRouteScopes(ctx context.Context, now time.Time) error {
	var lines []store.RouteScope
	var prefixes []string
	b.handlers.Range(func(_, v any) bool {
		info := v.(handlerInfo)
		for _, l := range info.scopes {
			l.SeenAt = now
			lines = append(lines, l)
		}
		if !slices.Contains(prefixes, info.prefix) {
			prefixes = append(prefixes, info.prefix)
		}
		return true
	})
	err := errors.Join(b.store.RecordRouteScopes(ctx, lines), b.store.RecordRoutePrefixes(ctx, prefixes, now))
	if ctx.Err() == nil {
		b.reportFault.Observe(now, err)
	}
	return err
}

// faultLines logs a fault in these words, at WARN while it lasts and at
// INFO when it ends.
func (b *backend) faultLines(began, still, works string) func(faultlog.Line) {
	return func(l faultlog.Line) {
		switch l.Kind {
		case faultlog.Began:
			b.logger.Warn("keygate: "+began, zap.Error(l.Err))
		case faultlog.Continues:
			b.logger.Warn(fmt.Sprintf("keygate: %s: %d more failures since the last line", still, l.Failures),
				zap.Duration("for", l.Duration), zap.Error(l.Err))
		case faultlog.Ended:
			b.logger.Info("keygate: "+works, zap.Int("failures", l.Total), zap.Duration("after", l.Duration))
		}
	}
}

// reportRetry spaces the tries of a route report the store failed.
var reportRetry = 10 * time.Second

// reportWhenRunning reports the routes once the config whose context ctx
// is runs: `caddy validate` (and a load that fails after this handler
// provisioned) provisions a config that never runs, and its scope lines
// and key prefix must not become what `caddy keys` offers and issues.
// Caddy makes a config the running one once its apps have started. A
// handler provisioned under a context of its own (by a module that wraps
// handlers) never matches the running one: after a while, a running config
// is enough.
func (b *backend) reportWhenRunning(ctx caddy.Context) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.Now().Add(30 * time.Second)
	for {
		running := caddy.ActiveContext()
		if running.Context != nil && (running.Done() == ctx.Done() || time.Now().After(giveUp)) {
			b.reportUntilTaken(ctx)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// reportUntilTaken reports the routes, and again every reportRetry while
// the store fails the report (a pooler restarting as the gateway starts),
// not only at the hourly report, until ctx is done.
func (b *backend) reportUntilTaken(ctx context.Context) {
	for b.reportRouteScopes(ctx, now()) != nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(reportRetry):
		}
	}
}

// configRuns reports whether this process runs a config: not while
// `caddy validate` (or `caddy adapt --validate`) provisions one to check it.
func configRuns() bool { return caddy.ActiveContext().Context != nil }

// failedAuthClients bounds the clients (IPv4 addresses, IPv6 /64s) whose
// failed key attempts a store's handlers track: about 160 bytes each, 10 MB
// in all. Made-up keys from more addresses than that within a minute or two
// (a scanner with a /32 of IPv6 holds 2^32 /64s) evict the fullest of the
// others' buckets, never one past its limit while fuller ones remain
// (ratelimit.NewBoundedLocal), and nobody is refused for it.
const failedAuthClients = 65_536

// run flushes usage and sweeps idle limiters until Destruct.
func (b *backend) run() {
	defer close(b.done)
	flush := time.NewTicker(b.flushEvery)
	defer flush.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	first := true
	for {
		select {
		case <-b.stop:
			return
		case <-flush.C:
			b.flushUsageWithin(b.runCtx)
			if first { // by now the process has opened its other stores too
				first = false
				b.warnKeptForOthers()
			}
		case now := <-sweep.C:
			n := b.limits.Sweep(now) + b.authFail.Sweep(now)
			metrics.limiterEvictions.Add(float64(n))
			b.reportCrowded()
		}
	}
}

// reportCrowded counts, and says in the log, the failed-attempt buckets
// evicted since the last sweep to keep within failedAuthClients: a WARN
// line at the first minute with any, one a minute while they go on, and an
// INFO line at the first minute without. Only run calls it.
func (b *backend) reportCrowded() {
	total := b.authFail.Crowded()
	n := total - b.crowdedSeen
	b.crowdedSeen = total
	metrics.failedAuthEvictions.Add(float64(n))
	switch {
	case n > 0:
		msg := "keygate: failed key attempts come from more client addresses than are tracked; the fullest of a few buckets picked at random is evicted for each new one (a client past failed_auth_limit keeps its bucket while fuller ones remain)"
		if b.crowdedSince.IsZero() {
			b.crowdedSince = time.Now()
		} else {
			msg = "keygate: failed key attempts still come from more client addresses than are tracked"
		}
		b.logger.Warn(msg, zap.Uint64("evicted", n), zap.Int("tracked", b.authFail.MaxBuckets()),
			zap.Duration("for", time.Since(b.crowdedSince).Round(time.Second)))
	case !b.crowdedSince.IsZero():
		b.logger.Info("keygate: failed key attempts come from no more client addresses than are tracked again",
			zap.Duration("after", time.Since(b.crowdedSince).Round(time.Second)))
		b.crowdedSince = time.Time{}
	}
}

// warnKeptForOthers says which counts kept at a stop wait for a store name
// no gateway of this process opens (the same database after a move to
// another host, or another store): they are not added here, and would
// otherwise be forgotten.
func (b *backend) warnKeptForOthers() {
	others, _ := b.spill.Others()
	if len(others) == 0 {
		return
	}
	var open []usage.Spill
	backends.Range(func(_, v any) bool {
		open = append(open, v.(*backend).spill)
		return true
	})
	for name, files := range others {
		files = slices.DeleteFunc(files, func(f string) bool {
			return slices.ContainsFunc(open, func(s usage.Spill) bool { return s.Owns(filepath.Base(f)) })
		})
		if len(files) > 0 {
			b.logger.Warn("keygate: usage counts kept at a stop wait for another store name; they are added when a gateway "+
				"opens the store under that name (the name is its URI as the Caddyfile gave it, password redacted)",
				zap.String("kept_for", cmp.Or(name, "(not named in files from before 2026-12)")), zap.Strings("files", files))
		}
	}
}

// flushUsage adds the counts kept at the last stop, if any wait, then the
// counts in memory, to the store. Counts it cannot write stay in memory for
// the next flush.
func (b *backend) flushUsage() { b.flushUsageWithin(context.Background()) }

// flushUsageWithin is flushUsage, cut short when parent is done: a flush a
// stop interrupted is neither a failure to report nor counted as one (the
// final flush writes what it held, or says why not).
func (b *backend) flushUsageWithin(parent context.Context) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, 10*time.Second)
	defer cancel()
	err := errors.Join(b.addKept(ctx), b.usage.Flush(ctx, b.store))
	if parent.Err() != nil {
		return
	}
	metrics.flushSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		metrics.flushErrors.Inc()
		b.countDropped()
	}
	b.flushFault.Observe(time.Now(), err)
}

// addKept adds to the store the counts a final flush kept in the spill.
func (b *backend) addKept(ctx context.Context) error {
	if !b.kept.Load() {
		return nil
	}
	b.keptMu.Lock()
	defer b.keptMu.Unlock()
	added, err := b.spill.AddTo(ctx, b.store)
	if added.KeyHours > 0 {
		b.logger.Info("keygate: added the usage counts a previous stop could not write",
			zap.Int64("requests", added.Requests), zap.Int64("recipients", added.Recipients),
			zap.Int("key_hours", added.KeyHours), zap.String("kept_in", b.spill.Dir))
	}
	if err == nil {
		b.kept.Store(false)
	}
	return err
}

// logFlushFault reports an outage of usage flushes.
func (b *backend) logFlushFault(l faultlog.Line) {
	held := b.usage.Held()
	fields := []zap.Field{zap.Int64("held_requests", held.Requests), zap.Int("held_key_hours", held.KeyHours)}
	switch l.Kind {
	case faultlog.Began:
		// b.dropped is still what was dropped when the last outage ended
		// (only a failed flush drops counts): this failure's own drops,
		// more than MaxPending key-hours or MaxPendingIPs client IPs
		// flushed in one go, are this outage's and said from here on.
		d := b.droppedSince()
		msg := "keygate: writing usage counts to the store failed; they are held in memory and retried every second"
		switch {
		case d.Requests > 0 || d.KeyHours > 0:
			msg += fmt.Sprintf(", but the counts of %s were dropped at once: more than %d key-hours waited",
				countOf(int(d.Requests), "request"), b.usage.MaxPending)
		case d.IPs > 0:
			msg += fmt.Sprintf(", but the oldest hours' counts by client IP of %s were dropped at once: more than %d waited",
				countOf(int(d.IPs), "address"), b.usage.MaxPendingIPs)
		}
		b.logger.Error(msg, append(fields, zap.Int64("dropped_requests", d.Requests),
			zap.Int64("dropped_client_ips", d.IPs), zap.Error(l.Err))...)
		return
	case faultlog.Continues:
		b.logger.Error(fmt.Sprintf("keygate: writing usage counts still fails: %d more failures since the last line", l.Failures),
			append(fields, zap.Duration("for", l.Duration), zap.Int64("dropped_requests", b.droppedSince().Requests),
				zap.Int64("dropped_client_ips", b.droppedSince().IPs), zap.Error(l.Err))...)
		return
	}
	fields = []zap.Field{zap.Int("failures", l.Total), zap.Duration("after", l.Duration)}
	d := b.droppedSince()
	// Said once: a failure within an interval of this line continues the
	// fault (faultlog), and its end would say these again.
	b.dropped = b.usage.Dropped()
	if d.Requests > 0 || d.KeyHours > 0 {
		b.logger.Error(fmt.Sprintf("keygate: writing usage counts works again, but the counts of %s were dropped meanwhile: "+
			"more than %d key-hours waited", countOf(int(d.Requests), "request"), b.usage.MaxPending),
			append(fields, zap.Int64("dropped_requests", d.Requests), zap.Int64("dropped_recipients", d.Recipients),
				zap.Int64("dropped_client_ips", d.IPs))...)
		return
	}
	if d.IPs > 0 {
		b.logger.Warn(fmt.Sprintf("keygate: writing usage counts works again; the counts held meanwhile are in the store, "+
			"but the oldest hours' counts by client IP of %s were dropped: more than %d waited", countOf(int(d.IPs), "address"), b.usage.MaxPendingIPs),
			append(fields, zap.Int64("dropped_client_ips", d.IPs))...)
		return
	}
	b.logger.Info("keygate: writing usage counts works again; the counts held meanwhile are in the store", fields...)
}

// countDropped adds to keygate_usage_lost_requests_total the requests
// whose counts the recorder dropped since it last looked (only a failed
// flush drops any).
func (b *backend) countDropped() {
	d := b.usage.Dropped().Requests
	for prev := b.lostCounted.Load(); d > prev; prev = b.lostCounted.Load() {
		if b.lostCounted.CompareAndSwap(prev, d) {
			metrics.usageLost.Add(float64(d - prev))
			return
		}
	}
}

// droppedSince returns what the recorder dropped since the flush outage
// began.
func (b *backend) droppedSince() usage.Counts {
	d := b.usage.Dropped()
	return usage.Counts{
		KeyHours:   d.KeyHours - b.dropped.KeyHours,
		Requests:   d.Requests - b.dropped.Requests,
		Recipients: d.Recipients - b.dropped.Recipients,
		IPs:        d.IPs - b.dropped.IPs,
	}
}

// noteSwitch logs the store's switch to another database: a SQLite file
// replaced at its path while open (see store.Open).
func (b *backend) noteSwitch() {
	r, ok := b.store.(store.Replaceable)
	if !ok || r.Generation() == b.generation {
		return
	}
	b.generation = r.Generation()
	b.logger.Error("keygate: the store file was replaced while open; the gateway now uses the file at the path " +
		"(keys only in the old file are no longer valid; usage counts held meanwhile are written to the new one)")
}

// logPollFault reports an outage of the change-log poll.
func (b *backend) logPollFault(l faultlog.Line) {
	level := zap.WarnLevel
	if errors.Is(l.Err, store.ErrFileGone) {
		level = zap.ErrorLevel
	}
	switch l.Kind {
	case faultlog.Began:
		b.logger.Log(level, "keygate: reading the key change log failed; changes made by other processes are not seen until it works again",
			zap.Error(l.Err))
	case faultlog.Continues:
		b.logger.Log(level, fmt.Sprintf("keygate: reading the key change log still fails: %d more failures since the last line", l.Failures),
			zap.Duration("for", l.Duration), zap.Error(l.Err))
	case faultlog.Ended:
		b.logger.Info("keygate: reading the key change log works again", zap.Int("failures", l.Total), zap.Duration("after", l.Duration))
	}
}

// Destruct stops the background work, writes every count still in memory
// and closes the store. Caddy calls it when the last config using this
// store is unloaded: at caddy stop, or on a reload to a config that does
// not use the store under this name.
func (b *backend) Destruct() error {
	close(b.stop)
	b.stopRun()
	b.stopPrune()
	<-b.done
	<-b.pruneDone
	exiting := caddy.Exiting() || !configRuns()
	if exiting {
		// The servers have stopped, or this process never ran a config
		// (`caddy validate`): a request still in flight is one a
		// grace_period gave up on, and the process exits under it.
		b.abandonInFlight("the gateway stopped (its grace_period ran out)")
	}
	b.finalFlush()
	b.verifier.Close()
	uncountBackend(b)
	if exiting {
		return b.closeStore()
	}
	// A reload whose config names this store differently (another pool
	// size, another path to the file) leaves requests in flight on the old
	// handlers, since Caddy does not wait for them on a reload. They count
	// their usage here once they are done: it is written as before until
	// the longest of them must be over, or the process exits, then the
	// store is closed.
	if q, ok := b.store.(store.Quieter); ok {
		q.Quiet() // one connection is enough for what is left to write
	}
	b.lingerEnd, b.lingerDone = make(chan struct{}), make(chan struct{})
	lingering.Store(b, struct{}{})
	lingerOnExit.Do(func() {
		caddy.OnExit(func(context.Context) {
			lingering.Range(func(k, _ any) bool {
				k.(*backend).endLinger()
				return true
			})
		})
	})
	go b.countLate(lateRequestsFor)
	return nil
}

// lateRequestsFor is how long a backend left behind by a reload keeps
// writing the usage of requests that were in flight.
var lateRequestsFor = 5 * time.Minute

var (
	// lingering holds the backends a reload left behind, still counting.
	lingering sync.Map // *backend → struct{}
	// lingerOnExit registers, once per process, the exit hook that ends
	// their wait, so that a caddy stop writes what they hold.
	lingerOnExit sync.Once
)

// countLate writes, every flush interval for d (or until endLinger), the
// usage of requests that finished after Destruct, then closes the store.
// What is still held at the end is written as at a stop, or kept in the
// spill.
func (b *backend) countLate(d time.Duration) {
	defer close(b.lingerDone)
	defer lingering.Delete(b)
	tick := time.NewTicker(b.flushEvery)
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); {
		select {
		case <-b.lingerEnd:
			end = time.Now()
			continue
		case <-tick.C:
		}
		if b.usage.Backlog() > 0 {
			b.flushUsage()
		}
	}
	if caddy.Exiting() {
		b.abandonInFlight("the gateway stopped (its grace_period ran out) after a reload left this store behind")
	} else {
		b.abandonInFlight(fmt.Sprintf("a reload left this store behind %s ago", lateRequestsFor))
	}
	b.finalFlush()
	if err := b.closeStore(); err != nil {
		b.logger.Error("keygate: closing the store a reload left behind failed", zap.Error(err))
	}
}

// endLinger makes countLate write what it holds and close the store now,
// and waits for it.
func (b *backend) endLinger() {
	b.lingerOnce.Do(func() { close(b.lingerEnd) })
	<-b.lingerDone
}

func (b *backend) closeStore() error {
	if err := b.store.Close(); err != nil {
		return fmt.Errorf("keygate: store %s: %w", b.redacted, err)
	}
	return nil
}

// finalFlushTimeout bounds the final flush's tries, all together. A store
// that refuses is tried three times within it; one that does not answer
// (a network partition, a server stopped or stuck on a lock) uses it up,
// and the counts go to the spill, to be added at the next start: nothing is
// lost by giving up early, whereas a process killed mid-flush by its
// service manager (the systemd unit's TimeoutStopSec=30s) loses every count
// it held, during a store outage every count since the outage began. A
// healthy store takes milliseconds. (It was 30 s for three tries of up to
// PostgreSQL's 5 s connect timeout each, after a periodic flush under way
// waited out its own 10 s: a stop took 25–34 s while PostgreSQL did not
// answer.)
var finalFlushTimeout = 5 * time.Second

// finalFlush writes every count still in memory. If the store refuses them,
// it keeps them in the spill for the next start and says so at ERROR; if
// that fails too, it says at ERROR how many counts are lost.
func (b *backend) finalFlush() {
	ctx, cancel := context.WithTimeout(context.Background(), finalFlushTimeout)
	defer cancel()
	var err error
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		if err = b.usage.Flush(ctx, b.store); err == nil {
			b.flushFault.Observe(time.Now(), nil)
			return
		}
	}
	b.countDropped()
	held := b.usage.Held()
	fields := []zap.Field{zap.Int64("requests", held.Requests), zap.Int64("recipients", held.Recipients),
		zap.Int("key_hours", held.KeyHours), zap.Error(err)}
	if kerr := b.usage.Flush(ctx, b.spill); kerr != nil {
		b.countDropped()
		metrics.usageLost.Add(float64(b.usage.Held().Requests))
		b.logger.Error(fmt.Sprintf("keygate: the final usage flush failed and the counts could not be kept elsewhere: "+
			"the counts of %s are lost", countOf(int(held.Requests), "request")), append(fields, zap.NamedError("keep_error", kerr))...)
		return
	}
	b.logger.Error(fmt.Sprintf("keygate: the final usage flush failed; the counts of %s are kept in %s "+
		"and added to the store when a gateway next opens it", countOf(int(held.Requests), "request"), b.spill.Dir), fields...)
	b.handOverKept()
}

// handOverKept makes the running backends whose kept counts include the
// file this one's final flush just wrote add it at their next flush: the
// same database opened under another name by a reload (a new password or
// pool size) while this one, left behind, wrote its last counts. Without it
// they looked for kept counts only until they first found none, and the
// file waited for the next start of the process: weeks, for counts the
// quotas and `caddy keys usage` of a running gateway missed meanwhile.
func (b *backend) handOverKept() {
	written := b.spill.Name + "-0.json" // as the file's name begins
	backends.Range(func(_, v any) bool {
		if o := v.(*backend); o != b && o.spill.Dir == b.spill.Dir && o.spill.Owns(written) {
			o.kept.Store(true)
		}
		return true
	})
}

// afterWriteTimeout bounds afterWrite's read of the change log, as the
// verifier's own polls are bounded (its StoreTimeout, 2 s). The write's
// caller no longer bounds it (keys.Service.written), so without it a store
// that stopped answering just after the commit (PostgreSQL frozen or cut
// off) held the admin API call or console page, and the verifier's Sync,
// for as long as the outage lasted.
var afterWriteTimeout = 2 * time.Second

// afterWrite makes a change made by this process through the store enforced
// on the very next request: it reads the change log now instead of waiting
// for the next poll.
func (b *backend) afterWrite(ctx context.Context, changed []store.Digest) {
	// The keys it changed are dropped from the cache first, so their next
	// request reads them from the store (or is refused while it does not
	// answer), whatever the read below takes: a store locked just after
	// the commit held that read up to its bound while the old records
	// served on, past a rotation's grace of a second
	// (TestLinearizableRevocationWhileSQLiteIsLocked). The next poll, or
	// the read, applies the rest.
	for _, d := range changed {
		b.verifier.Invalidate(d)
	}
	// Handlers of this process that name the store otherwise (its SQLite
	// file through a symlink) have a backend and a cache of their own,
	// which would learn of the change only at their next poll. Dropping
	// the keys there too costs a backend on another store one query per
	// changed key at most: a key's digest is the same in every store.
	backends.Range(func(_, v any) bool {
		if o := v.(*backend); o != b {
			for _, d := range changed {
				o.verifier.Invalidate(d)
			}
		}
		return true
	})
	ctx, cancel := context.WithTimeout(ctx, afterWriteTimeout)
	defer cancel()
	if err := b.verifier.Sync(ctx); err != nil {
		b.logger.Warn("keygate: reading the change log after a write failed; the changed keys are read from the store on their next request",
			zap.Int("keys", len(changed)), zap.Error(err))
	}
}
