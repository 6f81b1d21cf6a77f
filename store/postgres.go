package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed schema_postgres.sql
var schemaPostgres string

// changeLockID names the advisory lock every key-changing transaction takes
// first (the ASCII of "keygate"). A BIGSERIAL hands out sequence numbers in
// the order transactions ask, not the order they commit: without the lock,
// seq 11 could be visible before seq 10, a gateway would read 11, move past
// it, and never see 10. Serialising the (rare) key writes makes commit order
// equal seq order. Usage writes do not take it.
const changeLockID = 0x6b657967617465

// readOnlySQLTransaction is the SQLSTATE of a write refused by a server
// that takes none: a hot standby, or a primary set read-only.
const readOnlySQLTransaction = "25006"

// notifyChannel is the LISTEN/NOTIFY channel for change-log writes.
const notifyChannel = "keygate_changes"

var postgresDialect = &dialect{
	name: "postgres",
	// Append, never edit.
	migrations: []migration{{1, schemaPostgres}, {2, schemaUsageHour}, {3, schemaRouteScopes}, {4, schemaConsole}, {5, schemaRoutePrefixes}, {6, schemaAnswers}},
	lockKeys:   fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", changeLockID),
	// Delivered to listeners when the transaction commits.
	notify: "SELECT pg_notify('" + notifyChannel + "', '')",
	rebind: func(query string) string { return query },
	arrays: true,
	nocase: func(c string) string { return "LOWER(" + c + ")" },
}

// postgresLower is how the database lowercases every script's letters:
// lower() in its default collation when that knows them (any locale but C
// and POSIX), else lower() in ICU's root collation when the server has ICU;
// else lower() folds ASCII only, and a search ignores the case of ASCII
// letters alone.
func postgresLower(ctx context.Context, db *sql.DB) func(string) string {
	plain := func(expr string) string { return "LOWER(" + expr + ")" }
	var unicode, icu bool
	if err := db.QueryRowContext(ctx, `SELECT lower('ÄÖÜ') = 'äöü', EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')`).Scan(&unicode, &icu); err != nil || unicode || !icu {
		return plain
	}
	return func(expr string) string { return `LOWER((` + expr + `) COLLATE "und-x-icu")` }
}

// Postgres is the store for a cluster of gateways: keys, usage and audit
// events in one PostgreSQL database, with changes pushed to every node
// through LISTEN/NOTIFY (nodes also poll the change log as a safety net).
type Postgres struct {
	*DB
	cfg    *pgx.ConnConfig
	notify chan struct{}
	lctx   context.Context // the listener's, ended by stop
	stop   context.CancelFunc
	done   chan struct{}
	once   sync.Once
	// listenOnce starts the listener at the first Notify, or marks it
	// never started at Close (closing done).
	listenOnce sync.Once

	// lostAt is when the listener last found the server gone (unix
	// nanoseconds, 0 for never); see shouldPing.
	lostAt atomic.Int64
	// readOnlyAt is when a server last refused a write as read-only (unix
	// nanoseconds, 0 for never); see leaveReadOnlyServers.
	readOnlyAt atomic.Int64
}

// Connection pool defaults. A gateway queries the store only on a cache
// miss, a change-log poll and a usage flush, so a few connections suffice;
// a URI may still set pool_max_conns (as pgxpool reads it).
const (
	defaultMaxConns       = 10
	defaultMaxConnIdle    = 5 * time.Minute
	defaultConnectTimeout = 5 * time.Second
)

// poolSettings are the pool_* parameters of a URI, which configure the
// client's connection pool rather than the server session.
type poolSettings struct {
	maxConns    int
	maxIdleTime time.Duration
	maxLifetime time.Duration
}

// takePoolSettings removes the pool_* parameters from cfg (PostgreSQL would
// refuse them as unknown settings) and returns them, with defaults for those
// not given. One it cannot honour is an error rather than silently ignored.
func takePoolSettings(cfg *pgx.ConnConfig) (poolSettings, error) {
	ps := poolSettings{maxConns: defaultMaxConns, maxIdleTime: defaultMaxConnIdle}
	duration := func(name, v string, into *time.Duration) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%s=%q: want a duration such as 5m", name, v)
		}
		*into = d
		return nil
	}
	for name, v := range cfg.RuntimeParams {
		if !strings.HasPrefix(name, "pool_") {
			continue
		}
		delete(cfg.RuntimeParams, name)
		var err error
		switch name {
		case "pool_max_conns":
			n, perr := strconv.Atoi(v)
			if perr != nil || n < 1 {
				err = fmt.Errorf("pool_max_conns=%q: want a whole number of at least 1", v)
			}
			ps.maxConns = n
		case "pool_max_conn_idle_time":
			err = duration(name, v, &ps.maxIdleTime)
		case "pool_max_conn_lifetime":
			err = duration(name, v, &ps.maxLifetime)
		default:
			err = fmt.Errorf("%s is not supported; want pool_max_conns, pool_max_conn_idle_time or pool_max_conn_lifetime", name)
		}
		if err != nil {
			return ps, err
		}
	}
	return ps, nil
}

// OpenPostgres connects to the database at uri (postgres://… or a key=value
// connection string) and applies any pending migrations; it listens for
// changes once they are asked for (Notify). The URI may set connect_timeout (default 5s) and the pool
// parameters pool_max_conns (default 10), pool_max_conn_idle_time (default
// 5m) and pool_max_conn_lifetime (default unlimited).
func OpenPostgres(ctx context.Context, uri string) (*Postgres, error) {
	fail := func(err error) (*Postgres, error) {
		return nil, fmt.Errorf("keygate store: postgres %s: %w", RedactURI(uri), err)
	}
	cfg, pool, err := postgresConfig(uri)
	if err != nil {
		return fail(err)
	}
	p := &Postgres{cfg: cfg, notify: make(chan struct{}, 1), done: make(chan struct{})}
	p.leaveReadOnlyServers()
	db := stdlib.OpenDB(*cfg, stdlib.OptionShouldPing(p.shouldPing), stdlib.OptionResetSession(p.resetSession))
	db.SetMaxOpenConns(pool.maxConns)
	db.SetMaxIdleConns(pool.maxConns)
	db.SetConnMaxIdleTime(pool.maxIdleTime)
	db.SetConnMaxLifetime(pool.maxLifetime)
	p.DB = &DB{db: db, d: postgresDialect}
	if err := p.DB.init(ctx); err != nil {
		db.Close()
		return fail(saidPlainly(err))
	}
	p.DB.lower = postgresLower(ctx, db)
	p.lctx, p.stop = context.WithCancel(context.Background())
	return p, nil
}

// ErrTakesNoWrites is a write refused by a PostgreSQL server that takes
// none (SQLSTATE 25006: a standby, or a server set read-only, such as a
// primary a failover demoted after the store was opened), said plainly
// rather than as the statement it refused ("cannot execute INSERT in a
// read-only transaction"; opening a store writes its schema: "cannot
// execute CREATE TABLE …"). The error such a write returns Is it and is
// still the PostgreSQL error underneath: an outage (Unavailable), which a
// failover ends.
var ErrTakesNoWrites = errors.New("the server takes no writes (a standby, or a server set read-only): " +
	"name the primary, or every server with target_session_attrs=read-write (SQLSTATE 25006)")

// takesNoWrites is a PostgreSQL error that is ErrTakesNoWrites.
type takesNoWrites struct{ err error }

func (e *takesNoWrites) Error() string   { return ErrTakesNoWrites.Error() }
func (e *takesNoWrites) Unwrap() []error { return []error{ErrTakesNoWrites, e.err} }

// saidPlainly returns err as ErrTakesNoWrites if a server that takes no
// writes refused it, and err as it is otherwise.
func saidPlainly(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == readOnlySQLTransaction && !errors.Is(err, ErrTakesNoWrites) {
		return &takesNoWrites{err}
	}
	return err
}

// postgresConfig reads a store URI into the connection's configuration and
// the pool's settings.
func postgresConfig(uri string) (*pgx.ConnConfig, poolSettings, error) {
	cfg, err := pgx.ParseConfig(uri)
	if err != nil {
		return nil, poolSettings{}, parseConfigError(err)
	}
	pool, err := takePoolSettings(cfg)
	if err != nil {
		return nil, poolSettings{}, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if !strings.Contains(uri, "default_query_exec_mode") {
		// pgx's default names a statement on each server connection it
		// runs on, which a transaction pooler (PgBouncer
		// pool_mode=transaction, managed services' pooled endpoints) hands
		// to the next client, who then cannot prepare its own ("prepared
		// statement … already exists"). exec sends each query unnamed, in
		// the same one round trip; the server plans the store's few simple
		// queries again each time, microseconds against a network trip.
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	return cfg, pool, nil
}

// parseConfigError is what to say of a URI pgx could not use. Its message
// quotes the URI, and url.Parse's errors quote it with the password, so
// neither is passed on; what it says of a URI it could read (a CA file that
// cannot be read, an unknown sslmode) is.
func parseConfigError(err error) error {
	const want = "invalid connection URI; want postgres://user:password@host:port/database?sslmode=… " +
		"(characters such as % # ? / @ in the password percent-encoded)"
	var pce *pgconn.ParseConfigError
	if errors.As(err, new(*url.Error)) || !errors.As(err, &pce) {
		return errors.New(want)
	}
	msg := pce.Error()
	if _, after, ok := strings.Cut(msg, "`: "); ok {
		return errors.New(after)
	}
	return errors.New(want)
}

// shouldPing decides whether a pooled connection is pinged before reuse.
// pgx pings one idle for over a second; one reused sooner is assumed alive,
// so after a server restart or failover its first query would fail (FATAL
// 57P01) and surface as a spurious error: a 503, a failed usage flush. The
// listener sees an outage at once, so every connection last vetted before
// it saw one is pinged too, and a dead one is replaced transparently. In
// steady state this costs nothing.
func (p *Postgres) shouldPing(_ context.Context, c stdlib.ShouldPingParams) bool {
	if c.IdleDuration > time.Second {
		return true
	}
	lost := p.lostAt.Load()
	return lost != 0 && time.Now().Add(-c.IdleDuration).UnixNano() <= lost
}

// leaveReadOnlyServers makes the pool leave a server that takes no writes
// (a standby, an old primary demoted), reached in a failover through a
// name that had not moved yet or, with several hosts, before the standby
// was promoted: the connection refused a write (SQLSTATE 25006) is closed
// at once, and every other one made before that refusal at its next use
// (resetSession), so the pool dials again and reaches the primary once the
// name follows it (with target_session_attrs=read-write, whichever host
// takes writes). Kept, they stayed in the pool, busy with polls and
// flushes and so never idle long enough to be closed, and writes on them
// went on failing after the failover was over.
func (p *Postgres) leaveReadOnlyServers() {
	onError, afterConnect := p.cfg.OnPgError, p.cfg.AfterConnect
	p.cfg.AfterConnect = func(ctx context.Context, c *pgconn.PgConn) error {
		c.CustomData()[connectedAtKey] = time.Now().UnixNano()
		if afterConnect != nil {
			return afterConnect(ctx, c)
		}
		return nil
	}
	p.cfg.OnPgError = func(c *pgconn.PgConn, e *pgconn.PgError) bool {
		if e.Code == readOnlySQLTransaction {
			p.readOnlyAt.Store(time.Now().UnixNano())
			return false // closes it
		}
		return onError == nil || onError(c, e)
	}
}

// connectedAtKey holds when a connection was made (unix nanoseconds), in
// its CustomData.
const connectedAtKey = "keygate.connected_at"

// resetSession discards a pooled connection made before a server last
// refused a write as read-only (see leaveReadOnlyServers).
func (p *Postgres) resetSession(_ context.Context, c *pgx.Conn) error {
	at, _ := c.PgConn().CustomData()[connectedAtKey].(int64)
	if refused := p.readOnlyAt.Load(); refused != 0 && at <= refused {
		return driver.ErrBadConn
	}
	return nil
}

// Quiet stops listening for changes and keeps at most one connection: what
// a store a reload left behind needs to write its last usage counts, so
// that reloads in a row do not each hold a whole pool for minutes.
func (p *Postgres) Quiet() {
	p.stop()
	p.listenOnce.Do(func() { close(p.done) }) // never listened: nor will it
	p.DB.db.SetMaxOpenConns(1)
	p.DB.db.SetMaxIdleConns(1)
}

// Notify receives a value soon after any process commits a change. Its
// first call starts the connection that LISTENs for them: a gateway watches
// for changes, `caddy keys` never does, and a listener it started and
// closed again within a fraction of a second left the server a connection
// torn down mid-LISTEN (behind PgBouncer 1.18 in transaction mode, a
// disconnect in that moment could crash the pooler:
// TestClusterBehindATransactionPooler failed about one run in two on a
// loaded machine).
func (p *Postgres) Notify() <-chan struct{} {
	p.listenOnce.Do(func() { go p.listen(p.lctx) })
	return p.notify
}

// Close stops listening and closes the database.
func (p *Postgres) Close() error {
	var err error
	p.once.Do(func() {
		p.stop()
		p.listenOnce.Do(func() { close(p.done) }) // never listened
		<-p.done
		close(p.notify)
		err = p.DB.Close()
	})
	return err
}

func (p *Postgres) wake() {
	select {
	case p.notify <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// listen holds one connection LISTENing for changes, reconnecting with
// backoff when it drops. After every (re)connect it wakes the gateway once,
// since notifications sent while disconnected are lost.
func (p *Postgres) listen(ctx context.Context) {
	defer close(p.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if conn, err := pgx.ConnectConfig(ctx, p.cfg); err == nil {
			if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err == nil {
				backoff = 100 * time.Millisecond
				p.wake()
				for {
					if _, err := conn.WaitForNotification(ctx); err != nil {
						break
					}
					p.wake()
				}
			}
			conn.Close(context.Background())
		}
		if ctx.Err() == nil {
			p.lostAt.Store(time.Now().UnixNano())
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

var (
	_ Store    = (*Postgres)(nil)
	_ Notifier = (*Postgres)(nil)
)
