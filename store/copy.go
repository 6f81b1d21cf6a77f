package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// CopyReport says what Copy copied.
type CopyReport struct {
	Keys          int   `json:"keys"`           // key records, revoked and expired included
	Events        int   `json:"events"`         // audit events, with their sequence numbers
	Usage         int   `json:"usage_rows"`     // hourly counters
	UsageIPs      int   `json:"usage_ip_rows"`  // hourly requests per client address
	RouteScopes   int   `json:"route_scopes"`   // scope lines gateways reported
	RoutePrefixes int   `json:"route_prefixes"` // key prefixes gateways reported
	LastEvent     int64 `json:"last_event_seq"` // the highest event sequence; the target's next is above it
}

// ErrNotEmpty means the store to copy into holds keys already: a copy would
// mix two stores' keys, audit sequences and usage.
var ErrNotEmpty = errors.New("the store to copy into holds keys already")

// ErrNotCopyable means a store is not one Copy reads or writes.
var ErrNotCopyable = errors.New("not a SQL store")

// ErrSameStore means the two stores given to Copy are one: the same
// handle, or one SQLite file under two names (a symbolic or hard link,
// which the URIs do not show).
var ErrSameStore = errors.New("the two stores are one")

// Copy copies the store from into the store to, which must hold no keys:
// every key record as it is, the audit events with their sequence numbers
// (to's next event is numbered after the last one copied, so a reader of
// `events --after SEQ` goes on where it was), the usage counters, and the
// scope lines and key prefixes gateways reported. The change log, the
// console's secrets and flashes and the answers kept for Idempotency-Key
// repeats are not copied: to keeps its own. Each key
// copied is one change in to's log, as an issued key is, so a gateway
// already running on to learns of it within a second.
//
// from is read in one transaction that sees nothing written after it began:
// SQLite's write lock (writers wait until the copy is done) or PostgreSQL's
// REPEATABLE READ. Everything is written to to in one transaction, checked
// in it (the rows of each table counted again, every key found by its
// digest, as KeyByDigest finds it, and read back equal) and committed
// only then, so a copy that fails leaves to without any of it.
func Copy(ctx context.Context, from, to Store) (CopyReport, error) {
	var rep CopyReport
	if sameSQLiteFile(from, to) {
		// Not waited for: the copy's write on to would queue behind its own
		// read lock on from until the busy timeout, then fail as a store
		// that did not answer.
		return CopyReport{}, fmt.Errorf("keygate store: copy: %w", ErrSameStore)
	}
	err := onDB(from, func(src *DB) error {
		return onDB(to, func(dst *DB) error {
			if src == dst {
				return ErrSameStore
			}
			var err error
			rep, err = copyDB(ctx, src, dst)
			return err
		})
	})
	if err != nil {
		return CopyReport{}, fmt.Errorf("keygate store: copy: %w", err)
	}
	return rep, nil
}

// onDB runs fn on the SQL database under s. An SQLite store that follows its
// path is held on the file it has open, which it does not switch from
// meanwhile.
func onDB(s Store, fn func(*DB) error) error {
	switch s := s.(type) {
	case *DB:
		return fn(s)
	case *Postgres:
		return fn(s.DB)
	case *sqliteFile:
		_, err := read(s, func(db *DB) (struct{}, error) { return struct{}{}, fn(db) })
		return err
	}
	return fmt.Errorf("%w: %T", ErrNotCopyable, s)
}

// sameSQLiteFile reports whether a and b are SQLite stores open on one file.
func sameSQLiteFile(a, b Store) bool {
	fa, ok := a.(*sqliteFile)
	fb, okb := b.(*sqliteFile)
	if !ok || !okb || fa == fb {
		return ok && okb
	}
	fa.mu.RLock()
	defer fa.mu.RUnlock()
	fb.mu.RLock()
	defer fb.mu.RUnlock()
	return os.SameFile(fa.file, fb.file)
}

// snapshot is how a copy reads its source without seeing later writes.
func (d *dialect) snapshot() *sql.TxOptions {
	if d == postgresDialect {
		return &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	}
	return nil // SQLite's transactions begin IMMEDIATE: the write lock
}

// param is the placeholder of parameter i of a statement that has its
// parameters in order, each once (a batch's VALUES, an IN list): on SQLite
// a bare ?, the next one, since SQLite's driver finds the name of each ?N
// it binds by walking the names before it, so binding n of them took time
// in n², 90 % of a copy into SQLite at 8,000 parameters a statement.
func (d *dialect) param(i int) string {
	if d == postgresDialect {
		return "$" + strconv.Itoa(i)
	}
	return "?"
}

const countKeysAndEvents = "SELECT (SELECT count(*) FROM keys), (SELECT count(*) FROM events)"

// checkEmpty returns ErrNotEmpty, with what it holds, for a store whose
// count of keys and events (countKeysAndEvents) is not nought.
func checkEmpty(row *sql.Row) error {
	var keys, events int
	if err := row.Scan(&keys, &events); err != nil {
		return err
	}
	if keys > 0 {
		noun := "keys"
		if keys == 1 {
			noun = "key"
		}
		return fmt.Errorf("%w: %d %s (and %d audit events); a copy goes only into a store without keys", ErrNotEmpty, keys, noun, events)
	}
	if events > 0 {
		// No key was ever issued there, but its sequence numbers
		// would collide with the copied ones.
		return fmt.Errorf("%w: no keys, but %d audit events; a copy goes only into a new store", ErrNotEmpty, events)
	}
	return nil
}

// CheckCopyTarget returns ErrNotEmpty if to holds keys or audit events,
// which Copy refuses: so it is said before the copy is set up (the
// gateways on the source stopped for it). Copy checks again, in the
// transaction it writes in.
func CheckCopyTarget(ctx context.Context, to Store) error {
	err := onDB(to, func(dst *DB) error {
		return checkEmpty(dst.db.QueryRowContext(ctx, countKeysAndEvents))
	})
	if err != nil {
		return fmt.Errorf("keygate store: copy: %w", err)
	}
	return nil
}

func copyDB(ctx context.Context, src, dst *DB) (CopyReport, error) {
	var rep CopyReport
	if src.d.serialWrites {
		src.writeMu.Lock()
		defer src.writeMu.Unlock()
	}
	stx, err := src.db.BeginTx(ctx, src.d.snapshot())
	if err != nil {
		return rep, fmt.Errorf("reading the source: %w", err)
	}
	defer stx.Rollback() // it only read
	err = dst.writeKeysOn(ctx, func(conn *sql.Conn, tx *sql.Tx) error {
		w := into{ctx: ctx, tx: tx, d: dst.d, conn: conn}
		if err := checkEmpty(tx.QueryRowContext(ctx, countKeysAndEvents)); err != nil {
			return err
		}
		if rep.Keys, err = copyKeys(stx, w); err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		counts := []*int{&rep.Events, &rep.Usage, &rep.UsageIPs, &rep.RouteScopes, &rep.RoutePrefixes}
		for i, t := range copiedTables {
			if *counts[i], err = copyRows(stx, w, t.table, t.cols, t.conflict); err != nil {
				return fmt.Errorf("%s: %w", t.table, err)
			}
		}
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(seq), 0) FROM events").Scan(&rep.LastEvent); err != nil {
			return err
		}
		if err := advanceEventSeq(ctx, tx, dst.d); err != nil {
			return err
		}
		if err := checkCopy(ctx, stx, tx, dst, rep); err != nil {
			return fmt.Errorf("checking the copy: %w", err)
		}
		if dst.d.notify != "" && rep.Keys > 0 {
			_, err := tx.ExecContext(ctx, dst.d.notify)
			return err
		}
		return nil
	})
	return rep, err
}

// copiedTables are the tables Copy copies row by row, after the keys, with
// every column (TestCopiedTablesNameEveryColumn holds them to the schemas),
// in the order of their counts in CopyReport.
var copiedTables = []struct{ table, cols, conflict string }{
	{"events", "seq, at, action, key_id, actor, reason, detail", ""},
	{"usage", "key_id, hour, metric, n", ""},
	{"usage_ips", "key_id, hour, ip, n", ""},
	// Gateways already on the target may have reported theirs.
	{"route_scopes", "scope, method, path, seen_at", " ON CONFLICT DO NOTHING"},
	{"route_prefixes", "prefix, seen_at", " ON CONFLICT DO NOTHING"},
}

// copyKeys copies every key record, through Record so that each engine's
// own types (booleans, bytes) are written as it keeps them, and logs each
// key's digest as a change. It returns how many it copied.
func copyKeys(stx *sql.Tx, w into) (int, error) {
	rows, err := stx.QueryContext(w.ctx, "SELECT "+keyColumns+" FROM keys ORDER BY id")
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	keys := w.batch("keys", keyColumns, "")
	changes := w.batch("changes", "digest, at", "")
	now := time.Now().UnixNano()
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return 0, err
		}
		values, err := keyValues(rec)
		if err != nil {
			return 0, fmt.Errorf("key %s: %w", rec.ID, err)
		}
		if err := keys.add(values...); err != nil {
			return 0, err
		}
		if err := changes.add(rec.Digest[:], now); err != nil {
			return 0, err
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if err := keys.flush(); err != nil {
		return 0, err
	}
	return keys.rows, changes.flush()
}

// copyRows copies the columns cols of every row of table as the source's
// driver reads them (integers and text, which both engines take back), and
// returns how many rows it copied.
func copyRows(stx *sql.Tx, w into, table, cols, conflict string) (int, error) {
	rows, err := stx.QueryContext(w.ctx, "SELECT "+cols+" FROM "+table)
	if err != nil {
		return 0, err
	}
	return insertRows(rows, w, table, cols, conflict)
}

// insertRows writes every row of rows, whose columns are cols, into table
// in w's transaction, and closes rows: into PostgreSQL in one COPY, read
// from rows as it goes (the source is read while the target writes),
// otherwise many at a time (see into.batch).
func insertRows(rows *sql.Rows, w into, table, cols, conflict string) (int, error) {
	defer rows.Close()
	r := newRowReader(rows, len(strings.Split(cols, ",")))
	if w.copies(conflict) {
		n, err := w.copyFrom(table, cols, r)
		return int(n), err
	}
	b := w.batch(table, cols, conflict)
	for r.Next() {
		values, err := r.Values()
		if err != nil {
			return 0, err
		}
		if err := b.add(values...); err != nil {
			return 0, err
		}
	}
	if err := r.Err(); err != nil {
		return 0, err
	}
	return b.rows, b.flush()
}

// rowReader reads rows' columns as their driver gives them, one row at a
// time into the same values; it is the pgx.CopyFromSource of a COPY.
type rowReader struct {
	rows   *sql.Rows
	values []any
	dest   []any
	err    error
}

func newRowReader(rows *sql.Rows, width int) *rowReader {
	r := &rowReader{rows: rows, values: make([]any, width), dest: make([]any, width)}
	for i := range r.dest {
		r.dest[i] = &r.values[i]
	}
	return r
}

func (r *rowReader) Next() bool { return r.err == nil && r.rows.Next() }

func (r *rowReader) Values() ([]any, error) {
	if r.err = r.rows.Scan(r.dest...); r.err != nil {
		return nil, r.err
	}
	return r.values, nil
}

func (r *rowReader) Err() error {
	if r.err != nil {
		return r.err
	}
	return r.rows.Err()
}

// checkCopy reads the target back inside the copy's transaction: each
// table holds as many rows as the source does and as were copied, and each
// source key is found by its digest (the column and index KeyByDigest looks
// keys up by, the digests given as the same parameters) and reads back as
// it was. Keys are looked up checkBatch at a time: one query per key took
// 27 of a 51 s copy of 100,000 keys into PostgreSQL (bench/copystore).
func checkCopy(ctx context.Context, stx, tx *sql.Tx, dst *DB, rep CopyReport) error {
	for _, t := range []struct {
		table  string
		copied int
	}{{"keys", rep.Keys}, {"events", rep.Events}, {"usage", rep.Usage}, {"usage_ips", rep.UsageIPs}} {
		var in, out int
		if err := stx.QueryRowContext(ctx, "SELECT count(*) FROM "+t.table).Scan(&in); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+t.table).Scan(&out); err != nil {
			return err
		}
		if in != t.copied || out != t.copied {
			return fmt.Errorf("%s: the source holds %d rows, %d were copied, the target holds %d", t.table, in, t.copied, out)
		}
	}
	rows, err := stx.QueryContext(ctx, "SELECT "+keyColumns+" FROM keys")
	if err != nil {
		return err
	}
	defer rows.Close()
	batch := make([]*Record, 0, checkBatch)
	for rows.Next() {
		want, err := scanRecord(rows)
		if err != nil {
			return err
		}
		if batch = append(batch, want); len(batch) == checkBatch {
			if err := checkKeys(ctx, tx, dst.d, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return checkKeys(ctx, tx, dst.d, batch)
}

// checkBatch is how many keys checkCopy looks up in one query.
var checkBatch = 500

// checkKeys looks the keys want up in the target by their digests, in one
// query, and compares what it reads with them.
func checkKeys(ctx context.Context, tx *sql.Tx, d *dialect, want []*Record) error {
	if len(want) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString("SELECT " + keyColumns + " FROM keys WHERE digest IN (")
	args := make([]any, len(want))
	for i, rec := range want {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(d.param(i + 1))
		args[i] = rec.Digest[:]
	}
	q.WriteString(")")
	rows, err := tx.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	got := make(map[Digest]*Record, len(want))
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return err
		}
		got[rec.Digest] = rec
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, w := range want {
		g, ok := got[w.Digest]
		if !ok {
			return fmt.Errorf("key %s by its digest: %w", w.ID, ErrNotFound)
		}
		a, _ := keyValues(w)
		b, _ := keyValues(g)
		if !reflect.DeepEqual(a, b) {
			return fmt.Errorf("key %s reads back otherwise than it was", w.ID)
		}
	}
	return nil
}

// into is the transaction a copy (or a restore's kept events) writes rows
// in.
type into struct {
	ctx context.Context
	tx  *sql.Tx
	d   *dialect
	// conn is tx's connection, on which rows go into PostgreSQL through
	// COPY; nil writes INSERTs only.
	conn *sql.Conn
}

// batch is a writer of rows into one table, many at a time: into
// PostgreSQL through COPY (pgx's CopyFrom, in the binary format, on the
// transaction's connection), except where a conflicting row is to be left
// as it is (which COPY cannot say); otherwise in INSERTs of up to
// maxParams parameters. COPY takes half the CPU time of those INSERTs,
// PostgreSQL's and keygate's alike (bench/copystore; BENCHMARKS.md).
func (w into) batch(table, cols, conflict string) *batch {
	b := &batch{width: len(strings.Split(cols, ",")), limit: maxParams}
	if w.copies(conflict) {
		b.limit = copyValues
		b.write = func(args []any) error {
			_, err := w.copyFrom(table, cols, pgx.CopyFromSlice(len(args)/b.width, func(i int) ([]any, error) {
				return args[i*b.width : (i+1)*b.width], nil
			}))
			return err
		}
	} else {
		b.write = w.insert("INSERT INTO "+table+" ("+cols+") VALUES ", conflict, b.width)
	}
	return b
}

// maxParams bounds the parameters of one INSERT: below SQLite's 32766 and
// PostgreSQL's 65535.
var maxParams = 8000

// copyValues bounds the values of one COPY, so that a large table is not
// held in memory at once.
var copyValues = 65536

// batch queues rows and writes them limit values at a time.
type batch struct {
	width int // values a row
	limit int
	args  []any
	rows  int // added so far
	write func(args []any) error
}

// add queues one row, writing the queue once it is full.
func (b *batch) add(values ...any) error {
	b.args = append(b.args, values...)
	b.rows++
	if len(b.args)+b.width > b.limit {
		return b.flush()
	}
	return nil
}

// flush writes the rows queued.
func (b *batch) flush() error {
	if len(b.args) == 0 {
		return nil
	}
	err := b.write(b.args)
	clear(b.args) // no value held past its write
	b.args = b.args[:0]
	return err
}

// insert writes rows of width values in one INSERT of head (INSERT INTO
// table (cols) VALUES) and conflict.
func (w into) insert(head, conflict string, width int) func(args []any) error {
	return func(args []any) error {
		var q strings.Builder
		q.WriteString(head)
		for i := range args {
			switch {
			case i == 0:
				q.WriteString("(")
			case i%width == 0:
				q.WriteString("), (")
			default:
				q.WriteString(", ")
			}
			q.WriteString(w.d.param(i + 1))
		}
		q.WriteString(")" + conflict)
		_, err := w.tx.ExecContext(w.ctx, q.String(), args...)
		return err
	}
}

// copies says whether rows go into w's table through COPY: into
// PostgreSQL, on the transaction's connection, unless a conflicting row is
// to be left as it is (which COPY cannot say).
func (w into) copies(conflict string) bool {
	return w.conn != nil && w.d == postgresDialect && conflict == ""
}

// copyFrom writes every row of src into table's columns cols in one COPY
// on w's connection, inside w's transaction (begun on it), checks that
// PostgreSQL took as many rows as src gave, and returns how many.
func (w into) copyFrom(table, cols string, src pgx.CopyFromSource) (int64, error) {
	counted := &countedSource{CopyFromSource: src}
	err := w.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("COPY on a %T connection", dc)
		}
		took, err := c.Conn().CopyFrom(w.ctx, pgx.Identifier{table}, strings.Split(cols, ", "), counted)
		if err == nil && took != counted.n {
			err = fmt.Errorf("COPY took %d of %d rows", took, counted.n)
		}
		return err
	})
	return counted.n, err
}

// countedSource counts the rows it gives.
type countedSource struct {
	pgx.CopyFromSource
	n int64
}

func (c *countedSource) Values() ([]any, error) {
	c.n++
	return c.CopyFromSource.Values()
}
