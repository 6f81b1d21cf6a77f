package store

import (
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
)

// DB is a store on a SQL database: the embedded SQLite file or PostgreSQL.
// Both engines run the same queries (written with $N placeholders) on the
// same logical schema; a dialect holds what differs.
//
// Empty lists read back canonically: Scopes as an empty slice, AllowedIPs and
// SenderDomains as nil.
type DB struct {
	db *sql.DB
	d  *dialect
	// lower lowercases a text expression, every script's letters (not
	// only ASCII's), for a search that ignores case.
	lower func(expr string) string

	// writeMu queues this process's writers in Go (SQLite only) rather than
	// in SQLite's busy handler, which sleeps between retries. Other
	// processes are still kept out by BEGIN IMMEDIATE and busy_timeout.
	writeMu sync.Mutex

	// The queries gateways run on every cache miss or poll.
	byDigest   stmt
	byID       stmt
	lastChange stmt
	recipients stmt
}

// stmt is a query, prepared once where the engine gains from it (SQLite).
// On PostgreSQL pgx keeps each connection's statements itself, and one
// prepared through database/sql would be a named statement on one server
// connection: behind a transaction pooler (PgBouncer pool_mode=transaction)
// the next client given that connection fails to prepare its own
// ("prepared statement … already exists"). Without it, such a pooler
// works with default_query_exec_mode=exec in the URI (docs/cluster.md).
type stmt struct {
	query    string
	prepared *sql.Stmt
}

func (st *stmt) queryRow(ctx context.Context, db *sql.DB, args ...any) *sql.Row {
	if st.prepared != nil {
		return st.prepared.QueryRowContext(ctx, args...)
	}
	return db.QueryRowContext(ctx, st.query, args...)
}

func (st *stmt) queryRowTx(ctx context.Context, tx *sql.Tx, args ...any) *sql.Row {
	if st.prepared != nil {
		return tx.StmtContext(ctx, st.prepared).QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, st.query, args...)
}

// dialect is what differs between the engines.
type dialect struct {
	name       string
	migrations []migration
	// serialWrites queues writers in this process (SQLite has one writer).
	serialWrites bool
	// prepare: the hot queries are prepared once through database/sql
	// (see stmt).
	prepare bool
	// lockKeys runs first in every transaction that changes keys, so such
	// transactions commit in change-log order (see postgres.go).
	lockKeys string
	// notify runs after change rows are written, inside the transaction.
	notify string
	// rebind turns $N placeholders into the engine's own.
	rebind func(query string) string
	// arrays: the engine takes arrays as parameters, so a usage batch is
	// written in a few statements instead of a few per key.
	arrays bool
	// nocase orders a text column ignoring case.
	nocase func(column string) string
}

func (s *DB) init(ctx context.Context) error {
	if err := s.migrate(ctx); err != nil {
		return err
	}
	for _, p := range []struct {
		stmt  *stmt
		query string
	}{
		{&s.byDigest, "SELECT " + keyColumns + " FROM keys WHERE digest = $1"},
		{&s.byID, "SELECT " + keyColumns + " FROM keys WHERE id = $1"},
		{&s.lastChange, "SELECT COALESCE(MAX(seq), 0) FROM changes"},
		{&s.recipients, "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM usage WHERE key_id = $1 AND hour >= $2 AND metric = 'recipients'"},
	} {
		p.stmt.query = s.d.rebind(p.query)
		if !s.d.prepare {
			continue
		}
		prepared, err := s.db.PrepareContext(ctx, p.stmt.query)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.query, err)
		}
		p.stmt.prepared = prepared
	}
	return nil
}

// SchemaVersion is the version this keygate migrates a store's schema to,
// on either engine (their migrations share their numbers).
func SchemaVersion() int {
	return sqliteDialect.migrations[len(sqliteDialect.migrations)-1].version
}

// A migration moves the schema from version-1 to version.
type migration struct {
	version int
	sql     string
}

// migrate applies the migrations the database lacks. It runs in one
// transaction holding the key-change lock (SQLite: the write lock), so a
// second process opening the store at the same moment waits, then finds
// nothing left to do.
func (s *DB) migrate(ctx context.Context) error {
	return s.writeKeys(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at BIGINT  NOT NULL
		)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var current int
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		migrations := s.d.migrations
		if latest := migrations[len(migrations)-1].version; current > latest {
			return newerSchema(current, latest)
		}
		for _, m := range migrations {
			if m.version <= current {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %d: %w", m.version, err)
			}
			if _, err := tx.ExecContext(ctx, s.d.rebind("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)"),
				m.version, time.Now().UnixNano()); err != nil {
				return fmt.Errorf("migration %d: %w", m.version, err)
			}
		}
		return nil
	})
}

// Close releases the database.
func (s *DB) Close() error {
	for _, st := range []*stmt{&s.byDigest, &s.byID, &s.lastChange, &s.recipients} {
		if st.prepared != nil {
			st.prepared.Close()
		}
	}
	return s.db.Close()
}

// write runs fn in one write transaction.
func (s *DB) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.transact(ctx, "", fn)
}

// writeKeys runs fn in one write transaction that changes keys (and so the
// change log).
func (s *DB) writeKeys(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.transact(ctx, s.d.lockKeys, fn)
}

// writeKeysOn is writeKeys on one connection of the pool, which fn is given
// too, for what only the driver's own connection does (PostgreSQL's COPY).
func (s *DB) writeKeysOn(ctx context.Context, fn func(conn *sql.Conn, tx *sql.Tx) error) error {
	if s.d.serialWrites {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return transactOn(ctx, conn, s.d.lockKeys, func(tx *sql.Tx) error { return fn(conn, tx) })
}

func (s *DB) transact(ctx context.Context, lock string, fn func(tx *sql.Tx) error) error {
	if s.d.serialWrites {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	return transactOn(ctx, s.db, lock, fn)
}

// transactOn runs fn in a transaction begun on db (the pool or one of its
// connections), after lock, and commits it if fn returns no error. Every
// write goes through it, so a write a server that takes none refused is
// said plainly here (ErrTakesNoWrites), for every surface that writes.
func transactOn(ctx context.Context, db interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}, lock string, fn func(tx *sql.Tx) error) error {
	return saidPlainly(transactOnce(ctx, db, lock, fn))
}

func transactOnce(ctx context.Context, db interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}, lock string, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if lock != "" {
		if _, err := tx.ExecContext(ctx, lock); err != nil {
			tx.Rollback()
			return err
		}
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// keyColumns is the one column order every key query and scanRecord use.
const keyColumns = "id, digest, hint, name, owner, env, scopes, rate, burst, allowed_ips, " +
	"sender_domains, quota, max_recipients, allow_on_behalf_of, created_at, expires_at, " +
	"revoked_at, revoke_reason, disabled, last_used_at, last_ip, rotated_from, rotated_to"

var insertKeySQL, updateKeySQL = func() (string, string) {
	cols := strings.Split(keyColumns, ", ")
	params, sets := make([]string, len(cols)), make([]string, len(cols))
	for i, c := range cols {
		params[i] = fmt.Sprintf("$%d", i+1)
		// Usage flushes own the last use and only move it forward; an
		// update that read the row before a flush must not undo it.
		switch c {
		case "last_used_at":
			sets[i] = fmt.Sprintf("%s = COALESCE(%s, %s)", c, c, params[i])
		case "last_ip":
			sets[i] = fmt.Sprintf("%s = COALESCE(NULLIF(%s, ''), %s)", c, c, params[i])
		default:
			sets[i] = c + " = " + params[i]
		}
	}
	return "INSERT INTO keys (" + keyColumns + ") VALUES (" + strings.Join(params, ", ") + ")",
		"UPDATE keys SET " + strings.Join(sets, ", ") + fmt.Sprintf(" WHERE id = $%d", len(cols)+1)
}()

// CreateKey inserts rec, its change and its audit event. It fills in
// rec.CreatedAt when zero, and ev.KeyID and ev.At when empty.
func (s *DB) CreateKey(ctx context.Context, rec *Record, ev Event) error {
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = time.Now().UTC()
	}
	err := s.writeKeys(ctx, func(tx *sql.Tx) error {
		if err := s.insertKey(ctx, tx, rec); err != nil {
			return err
		}
		if err := s.recordChange(ctx, tx, &ev, rec.ID, rec.Digest); err != nil {
			return err
		}
		return s.keepAnswer(ctx, tx, ev.Answer, changeTime(&ev))
	})
	if err != nil {
		return fmt.Errorf("keygate store: create key %s: %w", rec.ID, err)
	}
	return nil
}

// Key returns the record with this id.
func (s *DB) Key(ctx context.Context, id string) (*Record, error) {
	rec, err := scanRecord(s.byID.queryRow(ctx, s.db, id))
	if err != nil {
		return nil, fmt.Errorf("keygate store: key %s: %w", id, err)
	}
	return rec, nil
}

// KeyByDigest returns the record with this digest.
func (s *DB) KeyByDigest(ctx context.Context, d Digest) (*Record, error) {
	rec, err := scanRecord(s.byDigest.queryRow(ctx, s.db, d[:]))
	if err != nil {
		return nil, fmt.Errorf("keygate store: key by digest: %w", err)
	}
	return rec, nil
}

// EachDigest calls fn with the digest of every key, revoked and expired ones
// too, in no particular order. It implements DigestLister.
func (s *DB) EachDigest(ctx context.Context, fn func(Digest)) error {
	rows, err := s.db.QueryContext(ctx, "SELECT digest FROM keys")
	if err != nil {
		return fmt.Errorf("keygate store: list key digests: %w", err)
	}
	defer rows.Close()
	var raw []byte
	for rows.Next() {
		if err := rows.Scan(&raw); err != nil {
			return fmt.Errorf("keygate store: list key digests: %w", err)
		}
		var d Digest
		if len(raw) != len(d) {
			return fmt.Errorf("keygate store: list key digests: a digest of %d bytes", len(raw))
		}
		copy(d[:], raw)
		fn(d)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("keygate store: list key digests: %w", err)
	}
	return nil
}

// EachKey calls fn with every key, revoked and expired ones too, in no
// particular order, in one query; it stops at fn's first error. fn must not
// use the store: the query holds a connection until it ends.
func (s *DB) EachKey(ctx context.Context, fn func(*Record) error) error {
	rows, err := s.db.QueryContext(ctx, "SELECT "+keyColumns+" FROM keys")
	if err != nil {
		return fmt.Errorf("keygate store: list keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return fmt.Errorf("keygate store: list keys: %w", err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("keygate store: list keys: %w", err)
	}
	return nil
}

// UpdateKey lets fn change the record with this id and writes it back, with
// a change row and (when ev.Action is set) an audit event, in one
// transaction. fn must not change the id.
func (s *DB) UpdateKey(ctx context.Context, id string, ev *Event, fn func(*Record) error) (*Record, error) {
	if ev == nil {
		ev = &Event{}
	}
	var rec *Record
	err := s.writeKeys(ctx, func(tx *sql.Tx) error {
		old, err := scanRecord(s.byID.queryRowTx(ctx, tx, id))
		if err != nil {
			return err
		}
		rec = old.Clone()
		if err := fn(rec); err != nil {
			return err
		}
		if rec.ID != id {
			return fmt.Errorf("id changed to %q: ids are permanent", rec.ID)
		}
		if err := s.updateKey(ctx, tx, rec); err != nil {
			return err
		}
		if rec.Digest != old.Digest {
			if err := s.insertChange(ctx, tx, old.Digest); err != nil {
				return err
			}
		}
		return s.recordChange(ctx, tx, ev, id, rec.Digest)
	})
	if err != nil {
		return nil, fmt.Errorf("keygate store: update key %s: %w", id, err)
	}
	return rec, nil
}

// RotateKey reads the key with this id and, in the same transaction, has
// next make its successor from it (next may refuse: nothing is written),
// inserts the successor and ends the old key at graceEnd unless it expires
// sooner. So a rotation never races a revocation, a disable or another
// rotation into a live successor of a key stopped meanwhile. It fills in the
// successor's RotatedFrom and its CreatedAt when zero, and ev.KeyID (the old
// id) and ev.At when empty.
func (s *DB) RotateKey(ctx context.Context, id string, graceEnd time.Time, ev *Event, next func(old *Record) (*Record, error)) (*Record, error) {
	if ev == nil {
		ev = &Event{}
	}
	var old, succ *Record
	err := s.writeKeys(ctx, func(tx *sql.Tx) error {
		var err error
		if old, err = scanRecord(s.byID.queryRowTx(ctx, tx, id)); err != nil {
			return err
		}
		if succ, err = next(old.Clone()); err != nil {
			return err
		}
		succ.RotatedFrom = id
		if succ.CreatedAt.IsZero() {
			succ.CreatedAt = time.Now().UTC()
		}
		old.RotatedTo = succ.ID
		if old.ExpiresAt == nil || graceEnd.Before(*old.ExpiresAt) {
			end := graceEnd.UTC()
			old.ExpiresAt = &end
		}
		if err := s.insertKey(ctx, tx, succ); err != nil {
			return err
		}
		if err := s.updateKey(ctx, tx, old); err != nil {
			return err
		}
		if err := s.insertChange(ctx, tx, old.Digest); err != nil {
			return err
		}
		if err := s.recordChange(ctx, tx, ev, id, succ.Digest); err != nil {
			return err
		}
		if err := s.keepAnswer(ctx, tx, ev.Answer, changeTime(ev)); err != nil {
			return err
		}
		// The new key's own history starts here too.
		if ev.Action == "" {
			return nil
		}
		return s.insertEvent(ctx, tx, &Event{At: ev.At, Action: "issued", KeyID: succ.ID, Actor: ev.Actor, Reason: ev.Reason, Detail: "by rotating " + id})
	})
	if err != nil {
		return nil, fmt.Errorf("keygate store: rotate key %s: %w", id, err)
	}
	return old, nil
}

func (s *DB) insertKey(ctx context.Context, tx *sql.Tx, rec *Record) error {
	args, err := keyValues(rec)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, s.d.rebind(insertKeySQL), args...)
	return err
}

func (s *DB) updateKey(ctx context.Context, tx *sql.Tx, rec *Record) error {
	args, err := keyValues(rec)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, s.d.rebind(updateKeySQL), append(args, rec.ID)...)
	return err
}

func (s *DB) insertChange(ctx context.Context, tx *sql.Tx, d Digest) error {
	if _, err := tx.ExecContext(ctx, s.d.rebind("INSERT INTO changes (digest, at) VALUES ($1, $2)"),
		d[:], time.Now().UnixNano()); err != nil {
		return err
	}
	if s.d.notify != "" {
		if _, err := tx.ExecContext(ctx, s.d.notify); err != nil {
			return err
		}
	}
	return nil
}

// recordChange appends the change of digest and, when ev.Action is set, the
// audit event for key id.
func (s *DB) recordChange(ctx context.Context, tx *sql.Tx, ev *Event, id string, d Digest) error {
	if err := s.insertChange(ctx, tx, d); err != nil {
		return err
	}
	if ev.Action == "" {
		return nil
	}
	if ev.KeyID == "" {
		ev.KeyID = id
	}
	return s.insertEvent(ctx, tx, ev)
}

// changeTime is when a change happens: its event's time, else now.
func changeTime(ev *Event) time.Time {
	if ev.At.IsZero() {
		return time.Now()
	}
	return ev.At
}

// insertEvent appends an audit event and sets its sequence number.
func (s *DB) insertEvent(ctx context.Context, tx *sql.Tx, ev *Event) error {
	if ev.At.IsZero() {
		ev.At = time.Now().UTC()
	}
	at, err := unixNano("event at", ev.At)
	if err != nil {
		return err
	}
	return tx.QueryRowContext(ctx,
		s.d.rebind("INSERT INTO events (at, action, key_id, actor, reason, detail) VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq"),
		at, ev.Action, ev.KeyID, ev.Actor, ev.Reason, ev.Detail).Scan(&ev.Seq)
}

// LastChange returns the newest change sequence, 0 when there is none.
func (s *DB) LastChange(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.lastChange.queryRow(ctx, s.db).Scan(&seq); err != nil {
		return 0, fmt.Errorf("keygate store: last change: %w", err)
	}
	return seq, nil
}

// Changes returns the changes after seq after, oldest first.
func (s *DB) Changes(ctx context.Context, after int64) ([]Change, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind("SELECT seq, digest FROM changes WHERE seq > $1 ORDER BY seq"), after)
	if err != nil {
		return nil, fmt.Errorf("keygate store: changes after %d: %w", after, err)
	}
	defer rows.Close()
	var changes []Change
	for rows.Next() {
		var c Change
		var d []byte
		if err := rows.Scan(&c.Seq, &d); err != nil {
			return nil, fmt.Errorf("keygate store: changes after %d: %w", after, err)
		}
		if c.Digest, err = toDigest(d); err != nil {
			return nil, fmt.Errorf("keygate store: changes after %d: seq %d: %w", after, c.Seq, err)
		}
		changes = append(changes, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keygate store: changes after %d: %w", after, err)
	}
	return changes, nil
}

// AddUsage adds the deltas to the hourly counters and moves each key's
// last_used_at / last_ip forward, in one transaction. Counters are only ever
// incremented in SQL, so concurrent writers never lose an update.
func (s *DB) AddUsage(ctx context.Context, deltas []UsageDelta) error {
	rows, err := newUsageRows(deltas)
	if err == nil {
		err = s.write(ctx, func(tx *sql.Tx) error {
			if s.d.arrays {
				return writeUsageArrays(ctx, tx, rows)
			}
			return writeUsageRows(ctx, tx, s.d.rebind, rows)
		})
	}
	if err != nil {
		return fmt.Errorf("keygate store: add usage: %w", err)
	}
	return nil
}

// schemaUsageHour is migration 2 of both engines.
//
//go:embed schema_usage_hour.sql
var schemaUsageHour string

// pruneBatch bounds how many rows one PruneUsage transaction deletes, so
// usage writers and the CLI wait for a short delete at a time, never for a
// year of history at once.
const pruneBatch = 5000

// PruneUsage deletes the hourly usage and client-IP rows of hours that
// started before before, in transactions of at most pruneBatch rows, and
// returns how many it deleted. Keys, their last use and the audit log are
// kept.
func (s *DB) PruneUsage(ctx context.Context, before time.Time) (int64, error) {
	return s.pruneUsage(ctx, before, pruneBatch)
}

func (s *DB) pruneUsage(ctx context.Context, before time.Time, batch int) (int64, error) {
	cutoff := clampNano(before.UTC())
	var total int64
	// The client-IP rows go first: a usage report read between the two
	// can then miss a pruned hour's addresses while its counts remain,
	// never show the addresses of an hour whose counts are gone.
	for _, q := range []string{
		"DELETE FROM usage_ips WHERE (key_id, hour, ip) IN (SELECT key_id, hour, ip FROM usage_ips WHERE hour < $1 LIMIT $2)",
		"DELETE FROM usage WHERE (key_id, hour, metric) IN (SELECT key_id, hour, metric FROM usage WHERE hour < $1 LIMIT $2)",
	} {
		for {
			var n int64
			err := s.write(ctx, func(tx *sql.Tx) error {
				res, err := tx.ExecContext(ctx, s.d.rebind(q), cutoff, batch)
				if err != nil {
					return err
				}
				n, err = res.RowsAffected()
				return err
			})
			if err != nil {
				return total, fmt.Errorf("keygate store: prune usage: %w", err)
			}
			total += n
			if n < int64(batch) {
				break
			}
		}
	}
	return total, nil
}

// Usage sums the usage of the key with this id from the hour containing
// since onwards.
func (s *DB) Usage(ctx context.Context, id string, since time.Time) (*UsageReport, error) {
	rep, err := s.usage(ctx, id, since)
	if err != nil {
		return nil, fmt.Errorf("keygate store: usage of key %s: %w", id, err)
	}
	return rep, nil
}

func (s *DB) usage(ctx context.Context, id string, since time.Time) (*UsageReport, error) {
	since = since.UTC().Truncate(time.Hour)
	from := clampNano(since)
	rep := &UsageReport{
		KeyID:    id,
		Since:    since,
		Denied:   map[string]int64{},
		Statuses: map[string]int64{},
		Hours:    []HourUsage{},
		TopIPs:   []IPUsage{},
	}
	var lastUsed sql.NullInt64
	err := s.db.QueryRowContext(ctx, s.d.rebind("SELECT last_used_at, last_ip FROM keys WHERE id = $1"), id).
		Scan(&lastUsed, &rep.LastIP)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	rep.LastUsedAt = fromNullNano(lastUsed)

	rows, err := s.db.QueryContext(ctx,
		s.d.rebind("SELECT hour, metric, n FROM usage WHERE key_id = $1 AND hour >= $2 ORDER BY hour"), id, from)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var hour, n int64
		var metric string
		if err := rows.Scan(&hour, &metric, &n); err != nil {
			return nil, err
		}
		if len(rep.Hours) == 0 || rep.Hours[len(rep.Hours)-1].Hour.UnixNano() != hour {
			rep.Hours = append(rep.Hours, HourUsage{Hour: time.Unix(0, hour).UTC()})
		}
		rep.add(&rep.Hours[len(rep.Hours)-1], metric, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}

	// First looks at every hour, not only those since since: it is when the
	// key was first seen from the address at all.
	ipRows, err := s.db.QueryContext(ctx, s.d.rebind(`
		SELECT ip, CAST(SUM(n) AS BIGINT) AS requests,
		       (SELECT MIN(f.hour) FROM usage_ips f WHERE f.key_id = $1 AND f.ip = u.ip)
		FROM usage_ips u WHERE key_id = $1 AND hour >= $2
		GROUP BY ip ORDER BY requests DESC, ip LIMIT 10`), id, from)
	if err != nil {
		return nil, err
	}
	defer ipRows.Close()
	for ipRows.Next() {
		var u IPUsage
		var first int64
		if err := ipRows.Scan(&u.IP, &u.Requests, &first); err != nil {
			return nil, err
		}
		u.First = time.Unix(0, first).UTC()
		rep.TopIPs = append(rep.TopIPs, u)
	}
	return rep, ipRows.Err()
}

// add counts n of metric into the report's totals and into hour.
func (rep *UsageReport) add(hour *HourUsage, metric string, n int64) {
	switch {
	case metric == "allowed":
		rep.Allowed += n
		hour.Allowed += n
	case metric == "recipients":
		rep.Recipients += n
		hour.Recipients += n
	case strings.HasPrefix(metric, "denied."):
		code := strings.TrimPrefix(metric, "denied.")
		rep.Denied[code] += n
		if hour.Denied == nil {
			hour.Denied = map[string]int64{}
		}
		hour.Denied[code] += n
	case strings.HasPrefix(metric, "status."):
		rep.Statuses[strings.TrimPrefix(metric, "status.")] += n
	}
}

// Recipients sums the recipients counted for the key with this id from the
// hour containing since onwards. An unknown id has none; it is not an error
// because quotas ask on the request path.
func (s *DB) Recipients(ctx context.Context, id string, since time.Time) (int64, error) {
	var n int64
	from := clampNano(since.UTC().Truncate(time.Hour))
	if err := s.recipients.queryRow(ctx, s.db, id, from).Scan(&n); err != nil {
		return 0, fmt.Errorf("keygate store: recipients of key %s: %w", id, err)
	}
	return n, nil
}

// Events returns the audit events of f.KeyID (every key when empty),
// oldest first: the newest f.Limit of them when f.Limit > 0, or with
// f.After the first f.Limit whose seq is above it.
func (s *DB) Events(ctx context.Context, f EventFilter) ([]Event, error) {
	limit := int64(f.Limit)
	if limit <= 0 {
		limit = math.MaxInt64 // no limit, in both engines
	}
	var rows *sql.Rows
	var err error
	if f.After != nil {
		rows, err = s.db.QueryContext(ctx, s.d.rebind(`SELECT seq, at, action, key_id, actor, reason, detail
			FROM events WHERE ($1 = '' OR key_id = $1) AND seq > $2 ORDER BY seq LIMIT $3`), f.KeyID, *f.After, limit)
	} else {
		rows, err = s.db.QueryContext(ctx, s.d.rebind(`SELECT seq, at, action, key_id, actor, reason, detail FROM (
			SELECT * FROM events WHERE ($1 = '' OR key_id = $1) ORDER BY seq DESC LIMIT $2
		) AS newest ORDER BY seq`), f.KeyID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("keygate store: events of %q: %w", f.KeyID, err)
	}
	defer rows.Close()
	var events []Event
	for rows.Next() {
		var ev Event
		var at int64
		if err := rows.Scan(&ev.Seq, &at, &ev.Action, &ev.KeyID, &ev.Actor, &ev.Reason, &ev.Detail); err != nil {
			return nil, fmt.Errorf("keygate store: events of %q: %w", f.KeyID, err)
		}
		ev.At = time.Unix(0, at).UTC()
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keygate store: events of %q: %w", f.KeyID, err)
	}
	return events, nil
}

// keyValues returns rec's columns in keyColumns order.
func keyValues(r *Record) ([]any, error) {
	var bad error
	check := func(err error) {
		if bad == nil {
			bad = err
		}
	}
	when := func(field string, t *time.Time) any {
		if t == nil {
			return nil
		}
		n, err := unixNano(field, *t)
		check(err)
		return n
	}
	var rate, quota any
	if r.Rate != nil {
		if back, err := ParseRate(r.Rate.String()); err != nil || back != *r.Rate {
			check(fmt.Errorf("rate %v: want N/s, N/m, N/h or N/d", r.Rate))
		}
		rate = r.Rate.String()
	}
	if r.Quota != nil {
		if back, err := ParseQuota(r.Quota.String()); err != nil || back != *r.Quota {
			check(fmt.Errorf("quota %v: want N/d or N/mo", r.Quota))
		}
		quota = r.Quota.String()
	}
	for i, p := range r.AllowedIPs {
		if !p.IsValid() {
			check(fmt.Errorf("allowed ip #%d is not a valid CIDR prefix", i+1))
		}
	}
	created := when("created at", &r.CreatedAt)
	values := []any{
		r.ID, r.Digest[:], r.Hint, r.Name, r.Owner, r.Env, jsonList(r.Scopes), rate, r.Burst,
		jsonList(r.AllowedIPs), jsonList(r.SenderDomains), quota, r.MaxRecipients, r.AllowOnBehalfOf,
		created, when("expires at", r.ExpiresAt), when("revoked at", r.RevokedAt), r.RevokeReason,
		r.Disabled, when("last used at", r.LastUsedAt), r.LastIP, r.RotatedFrom, r.RotatedTo,
	}
	return values, bad
}

// scanRecord reads one row of keyColumns; no row is ErrNotFound.
func scanRecord(row interface{ Scan(...any) error }) (*Record, error) {
	var (
		r                        Record
		digest                   []byte
		scopes, ips, domains     string
		rate, quota              sql.NullString
		created                  int64
		expires, revoked, lastAt sql.NullInt64
	)
	err := row.Scan(&r.ID, &digest, &r.Hint, &r.Name, &r.Owner, &r.Env, &scopes, &rate, &r.Burst,
		&ips, &domains, &quota, &r.MaxRecipients, &r.AllowOnBehalfOf,
		&created, &expires, &revoked, &r.RevokeReason,
		&r.Disabled, &lastAt, &r.LastIP, &r.RotatedFrom, &r.RotatedTo)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if r.Digest, err = toDigest(digest); err != nil {
		return nil, fmt.Errorf("key %s: %w", r.ID, err)
	}
	if rate.Valid {
		v, err := ParseRate(rate.String)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", r.ID, err)
		}
		r.Rate = &v
	}
	if quota.Valid {
		v, err := ParseQuota(quota.String)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", r.ID, err)
		}
		r.Quota = &v
	}
	for _, l := range []struct {
		column string
		text   string
		into   any
	}{{"scopes", scopes, &r.Scopes}, {"allowed_ips", ips, &r.AllowedIPs}, {"sender_domains", domains, &r.SenderDomains}} {
		if l.text == "[]" {
			continue // the common case, without the cost of a decoder
		}
		if err := json.Unmarshal([]byte(l.text), l.into); err != nil {
			return nil, fmt.Errorf("key %s: %s: %w", r.ID, l.column, err)
		}
	}
	if r.Scopes == nil {
		r.Scopes = []string{}
	}
	r.CreatedAt = time.Unix(0, created).UTC()
	r.ExpiresAt = fromNullNano(expires)
	r.RevokedAt = fromNullNano(revoked)
	r.LastUsedAt = fromNullNano(lastAt)
	return &r, nil
}

func toDigest(b []byte) (Digest, error) {
	var d Digest
	if len(b) != len(d) {
		return d, fmt.Errorf("digest is %d bytes, want %d", len(b), len(d))
	}
	copy(d[:], b)
	return d, nil
}

// jsonList encodes a list column; empty lists are "[]", never "null".
func jsonList[T any](v []T) string {
	if len(v) == 0 {
		return "[]"
	}
	b, err := json.Marshal(v)
	if err != nil {
		// Only strings and valid prefixes get here (keyValues checks them).
		panic(fmt.Sprintf("keygate store: encode list: %v", err))
	}
	return string(b)
}

// Times are stored as int64 unix nanoseconds, which cover 1678 to 2262.
var (
	minTime = time.Unix(0, math.MinInt64).UTC()
	maxTime = MaxTime
)

// MaxTime is the latest time a store keeps (as int64 Unix nanoseconds, in
// 2262): a later expiry is a mistake to refuse where it is typed.
var MaxTime = time.Unix(0, math.MaxInt64).UTC()

// unixNano converts a time to be stored, refusing one it cannot represent
// rather than storing a wrapped-around value.
func unixNano(field string, t time.Time) (int64, error) {
	if t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("%s %s is outside %d..%d", field, t.UTC().Format(time.RFC3339), minTime.Year(), maxTime.Year())
	}
	return t.UnixNano(), nil
}

// clampNano converts a query bound; a bound outside the storable range
// selects the same rows as the range's end.
func clampNano(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func fromNullNano(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := time.Unix(0, n.Int64).UTC()
	return &t
}

var (
	_ Store        = (*DB)(nil)
	_ DigestLister = (*DB)(nil)
	_ DigestLister = (*sqliteFile)(nil)
)
