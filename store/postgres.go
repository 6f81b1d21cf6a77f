package store

import (
	"context"
	_ "embed"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

func init() {
	openPostgres = func(ctx context.Context, uri string) (Store, error) { return OpenPostgres(ctx, uri) }
}

//go:embed schema_postgres.sql
var schemaPostgres string

// changeLockID names the advisory lock every key-changing transaction takes
// first (the ASCII of "keygate"). A BIGSERIAL hands out sequence numbers in
// the order transactions ask, not the order they commit: without the lock,
// seq 11 could be visible before seq 10, a gateway would read 11, move past
// it, and never see 10. Serialising the (rare) key writes makes commit order
// equal seq order. Usage writes do not take it.
const changeLockID = 0x6b657967617465

// notifyChannel is the LISTEN/NOTIFY channel for change-log writes.
const notifyChannel = "keygate_changes"

var postgresDialect = &dialect{
	name: "postgres",
	// Append, never edit.
	migrations: []migration{{1, schemaPostgres}},
	lockKeys:   fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", changeLockID),
	// Delivered to listeners when the transaction commits.
	notify: "SELECT pg_notify('" + notifyChannel + "', '')",
	rebind: func(query string) string { return query },
}

// Postgres is the store for a cluster of gateways: keys, usage and audit
// events in one PostgreSQL database, with changes pushed to every node
// through LISTEN/NOTIFY (nodes also poll the change log as a safety net).
type Postgres struct {
	*DB
	cfg    *pgx.ConnConfig
	notify chan struct{}
	stop   context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// OpenPostgres connects to the database at uri (postgres://…), applies any
// pending migrations and starts listening for changes.
func OpenPostgres(ctx context.Context, uri string) (*Postgres, error) {
	fail := func(err error) (*Postgres, error) {
		return nil, fmt.Errorf("keygate store: postgres %s: %w", RedactURI(uri), err)
	}
	cfg, err := pgx.ParseConfig(uri)
	if err != nil {
		return fail(fmt.Errorf("invalid connection URI"))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(10)
	db.SetMaxIdleConns(10)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s := &DB{db: db, d: postgresDialect}
	if err := s.init(ctx); err != nil {
		db.Close()
		return fail(err)
	}
	lctx, stop := context.WithCancel(context.Background())
	p := &Postgres{DB: s, cfg: cfg, notify: make(chan struct{}, 1), stop: stop, done: make(chan struct{})}
	go p.listen(lctx)
	return p, nil
}

// Notify receives a value soon after any process commits a change.
func (p *Postgres) Notify() <-chan struct{} { return p.notify }

// Close stops listening and closes the database.
func (p *Postgres) Close() error {
	var err error
	p.once.Do(func() {
		p.stop()
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
