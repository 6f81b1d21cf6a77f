package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Backuper is implemented by a store that can copy itself, while gateways
// use it, into one self-contained file: the SQLite store.
type Backuper interface {
	// Backup writes a consistent copy of the whole store (keys, usage
	// counters, audit events) to path, which must not exist yet, and
	// checks the copy.
	Backup(ctx context.Context, path string) (BackupInfo, error)
}

// BackupInfo describes a backup as read back from its file.
type BackupInfo struct {
	Path  string `json:"path"`
	Keys  int    `json:"keys"`  // key records, revoked and expired included
	Bytes int64  `json:"bytes"` // the file's size
}

// FileError is a FILE given to Backup or RestoreSQLite that cannot be one:
// a backup's that exists already or whose directory does not, a restore's
// that is missing, is the store itself or is not a keygate backup. It is
// the caller's input, not the store's state: `caddy keys` exits 2 for it,
// whatever SQLite said of the file (a text file is "not a database", which
// in a store would mean damage).
type FileError struct{ err error }

func (e *FileError) Error() string { return e.err.Error() }

func (e *FileError) Unwrap() error { return e.err }

// ErrNoBackup means the store is not backed up by keygate: PostgreSQL is
// backed up with its own tools (pg_dump).
var ErrNoBackup = errors.New("a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump); see docs/guarantees.md#backups")

// Backup implements Backuper for SQLite with VACUUM INTO, which copies one
// read transaction's view of the database: writers, in this process or
// another, go on meanwhile, and the copy holds each of their transactions
// whole or not at all. The copy is a plain file without a write-ahead log,
// made private (0600) before anything is written to it, as the store is.
// It is written beside path under another name and given path only once
// checked, so a backup cut short (a full disk, a killed process) never
// leaves a file at path that looks like one.
func (s *DB) Backup(ctx context.Context, path string) (BackupInfo, error) {
	if s.d != sqliteDialect {
		return BackupInfo{}, ErrNoBackup
	}
	if path == "" {
		return BackupInfo{}, errors.New("keygate store: backup: no file named to back up to")
	}
	exists := func() (BackupInfo, error) {
		return BackupInfo{}, &FileError{fmt.Errorf("keygate store: %w; a backup never overwrites anything",
			&fs.PathError{Op: "backup to", Path: path, Err: fs.ErrExist})}
	}
	if _, err := os.Lstat(path); err == nil {
		return exists()
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".partial-*")
	if errors.Is(err, fs.ErrNotExist) {
		return BackupInfo{}, &FileError{fmt.Errorf("keygate store: backup to %s: the directory %s does not exist", path, dir)}
	}
	if err != nil {
		return BackupInfo{}, fmt.Errorf("keygate store: backup to %s: %w", path, err)
	}
	tmp := f.Name() // CreateTemp makes it 0600
	f.Close()
	defer os.Remove(tmp)
	fail := func(err error) (BackupInfo, error) {
		return BackupInfo{}, fmt.Errorf("keygate store: backup to %s: %w", path, err)
	}
	if _, err := s.db.ExecContext(ctx, "VACUUM INTO ?", tmp); err != nil {
		return fail(err)
	}
	info, err := checkBackup(ctx, tmp)
	if err != nil {
		return fail(err)
	}
	// A link, unlike a rename, fails if a file appeared at path meanwhile.
	if err := os.Link(tmp, path); errors.Is(err, os.ErrExist) {
		return exists()
	} else if err != nil {
		return fail(err)
	}
	info.Path = path
	return info, nil
}

// checkBackup reads a backup back, without writing to it or beside it, and
// counts its keys.
func checkBackup(ctx context.Context, path string) (BackupInfo, error) {
	db, err := sql.Open("sqlite", "file:"+escapeSQLitePath(path)+"?mode=ro&immutable=1")
	if err != nil {
		return BackupInfo{}, err
	}
	defer db.Close()
	var check string
	if err := db.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&check); err != nil {
		return BackupInfo{}, err
	}
	if check != "ok" {
		return BackupInfo{}, fmt.Errorf("the copy fails SQLite's check: %s", check)
	}
	var info BackupInfo
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM keys").Scan(&info.Keys); err != nil {
		return BackupInfo{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return BackupInfo{}, err
	}
	info.Bytes = fi.Size()
	return info, nil
}

// CheckRestoreFile returns a FileError if from cannot be a keygate backup
// to put in place of the store at path: it is path itself, is not there,
// or is no SQLite database holding keygate's keys. It reads little of
// from (RestoreSQLite checks the whole of it before it copies it), and
// nothing of the store, so a restore says a mistyped FILE before it asks
// for the gateways to be stopped.
func CheckRestoreFile(ctx context.Context, path, from string) error {
	fail := func(err error) error {
		return fmt.Errorf("keygate store: restore %s from %s: %w", path, from, &FileError{err})
	}
	if a, b := filepath.Clean(path), filepath.Clean(from); a == b {
		return fail(errors.New("the backup is the store itself"))
	}
	if _, err := os.Stat(from); err != nil {
		return fail(err)
	}
	db, err := sql.Open("sqlite", "file:"+escapeSQLitePath(from)+"?mode=ro&immutable=1")
	if err != nil {
		return fail(fmt.Errorf("not a keygate backup: %w", err))
	}
	defer db.Close()
	var one int
	if err := db.QueryRowContext(ctx, "SELECT 1 FROM keys LIMIT 1").Scan(&one); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fail(fmt.Errorf("not a keygate backup: %w", err))
	}
	return nil
}

// ErrNoRestore means the store is not restored by keygate: PostgreSQL is
// restored with its own tools (pg_restore).
var ErrNoRestore = errors.New("a PostgreSQL store is restored with PostgreSQL's own tools (pg_restore); see docs/guarantees.md#backups")

// ErrStoreOpen means a process has the SQLite store open, which a restore
// would replace under it.
var ErrStoreOpen = errors.New("the store is in use")

// CheckSQLiteClosed returns ErrStoreOpen, naming the process, if another
// process has the SQLite store at path open. The caller must not have it
// open: see sqliteHolder.
func CheckSQLiteClosed(path string) error {
	pid, open, err := sqliteHolder(path)
	if err != nil || !open {
		return err
	}
	who := "another process" // in another PID namespace
	if pid > 0 {
		who = fmt.Sprintf("process %d", pid)
	}
	return fmt.Errorf("%w: %s has it open (a gateway, or `caddy keys`); stop it first", ErrStoreOpen, who)
}

// RestoreSQLite puts the backup at from in place of the SQLite store at
// path, which nothing may have open: no gateway, no other `caddy keys`. It
// refuses (ErrStoreOpen) if a process has it open, before it starts and
// again before the rename. The backup is checked first, and copied beside path under another name,
// where prepare (if not nil) may change it as a store, before the copy,
// made private (0600) and given path's owner, replaces path in one rename.
// So the store at path is the old one or the whole new one, prepared,
// whatever fails. The replaced file's write-ahead log and index are removed
// from beside it first: SQLite would read the restored file with them.
func RestoreSQLite(ctx context.Context, path, from string, prepare func(context.Context, Store) error) (BackupInfo, error) {
	fail := func(err error) (BackupInfo, error) {
		return BackupInfo{}, fmt.Errorf("keygate store: restore %s from %s: %w", path, from, err)
	}
	if err := CheckRestoreFile(ctx, path, from); err != nil {
		return BackupInfo{}, err
	}
	if err := CheckSQLiteClosed(path); err != nil {
		return fail(err)
	}
	info, err := checkBackup(ctx, from)
	if err != nil {
		return fail(&FileError{fmt.Errorf("not a keygate backup: %w", err)})
	}
	in, err := os.Open(from)
	if err != nil {
		return fail(err)
	}
	defer in.Close()
	// A new machine has no store directory until a gateway has run: it is
	// made as opening a store makes it.
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".restoring-*") // 0600
	if err != nil {
		return fail(err)
	}
	tmp := f.Name()
	defer func() { // nothing once renamed, but a prepare cut short
		for _, f := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
			os.Remove(f)
		}
	}()
	if _, err := io.Copy(f, in); err != nil {
		f.Close()
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if prepare != nil {
		db, err := OpenSQLite(ctx, tmp)
		if err != nil {
			return fail(err)
		}
		err = prepare(ctx, db)
		// Closing the last connection checkpoints the copy's log into it
		// and removes the log.
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fail(err)
		}
	}
	if err := sameOwner(tmp, path); err != nil {
		return fail(err)
	}
	// Again, after what may have been minutes of copying.
	if err := CheckSQLiteClosed(path); err != nil {
		return fail(err)
	}
	for _, log := range []string{path + "-wal", path + "-shm"} {
		if err := os.Remove(log); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	info.Path = path
	return info, nil
}

// KeepEvents appends to to, a restored backup, the audit events of from,
// the store it replaces, that the backup does not hold: the history of
// every change made after the backup was taken (who revoked, rotated,
// issued what, and when), which a restore would otherwise lose along with
// the keys those changes made. An audit log is never rolled back.
//
// When the backup's log is the start of from's (a backup of this store:
// its last event is from's event of the same seq), the later events keep
// their seqs, so the log reads on as before the restore and a reader
// going on after the last seq it saw misses nothing. Otherwise (a backup
// of another store) every event of from is appended, numbered after the
// backup's. It returns how many it appended.
func KeepEvents(ctx context.Context, from, to Store) (int, error) {
	n := 0
	err := onDB(from, func(src *DB) error {
		return onDB(to, func(dst *DB) error {
			return dst.writeKeys(ctx, func(tx *sql.Tx) error {
				var err error
				n, err = keepEvents(ctx, src, tx, dst.d)
				return err
			})
		})
	})
	if err != nil {
		return n, fmt.Errorf("keygate store: keeping the replaced store's audit events: %w", err)
	}
	return n, nil
}

func keepEvents(ctx context.Context, src *DB, tx *sql.Tx, d *dialect) (int, error) {
	const cols = "seq, at, action, key_id, actor, reason, detail"
	var last int64
	var at int64
	var action, keyID string
	err := tx.QueryRowContext(ctx, "SELECT seq, at, action, key_id FROM events ORDER BY seq DESC LIMIT 1").Scan(&last, &at, &action, &keyID)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	prefix := last == 0
	if !prefix {
		var n int
		if err := src.db.QueryRowContext(ctx, src.d.rebind("SELECT count(*) FROM events WHERE seq = $1 AND at = $2 AND action = $3 AND key_id = $4"),
			last, at, action, keyID).Scan(&n); err != nil {
			return 0, err
		}
		prefix = n == 1
	}
	after, insert := last, cols
	if !prefix {
		after, insert = 0, strings.TrimPrefix(cols, "seq, ") // numbered anew
	}
	rows, err := src.db.QueryContext(ctx, src.d.rebind("SELECT "+insert+" FROM events WHERE seq > $1 ORDER BY seq"), after)
	if err != nil {
		return 0, err
	}
	n, err := insertRows(rows, into{ctx: ctx, tx: tx, d: d}, "events", insert, "")
	if err != nil {
		return 0, err
	}
	return n, advanceEventSeq(ctx, tx, d)
}

// AppendEvents appends audit events that no change to a key of st
// carries, in one transaction, numbered after every event before them as
// any change's are: a restore's events of the keys it leaves out, which
// the restored store no longer holds. Each names its key: every event is
// a key's. It sets each event's Seq.
func AppendEvents(ctx context.Context, st Store, evs []*Event) error {
	for _, ev := range evs {
		if ev.KeyID == "" || ev.Action == "" {
			return fmt.Errorf("keygate store: appending audit events: an event without a key or an action (key %q, action %q)", ev.KeyID, ev.Action)
		}
	}
	if len(evs) == 0 {
		return nil
	}
	err := onDB(st, func(db *DB) error {
		return db.writeKeys(ctx, func(tx *sql.Tx) error {
			for _, ev := range evs {
				if err := db.insertEvent(ctx, tx, ev); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("keygate store: appending audit events: %w", err)
	}
	return nil
}

// KeysLastEventIs returns the ids of the keys whose newest audit event in
// st is action, in no particular order: for a restore, the keys an
// earlier restore removed (see AppendEvents) that the backup it puts back
// may hold again.
func KeysLastEventIs(ctx context.Context, st Store, action string) ([]string, error) {
	var ids []string
	err := onDB(st, func(db *DB) error {
		rows, err := db.db.QueryContext(ctx, db.d.rebind(`SELECT key_id FROM events e WHERE action = $1
			AND NOT EXISTS (SELECT 1 FROM events l WHERE l.key_id = e.key_id AND l.seq > e.seq)`), action)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("keygate store: keys whose last event is %s: %w", action, err)
	}
	return ids, nil
}

// advanceEventSeq makes the next event on a store into which events were
// written with their seqs numbered after the last of them: SQLite's
// AUTOINCREMENT takes the largest seq inserted as its own; a PostgreSQL
// sequence is told.
func advanceEventSeq(ctx context.Context, tx *sql.Tx, d *dialect) error {
	if d != postgresDialect {
		return nil
	}
	_, err := tx.ExecContext(ctx, "SELECT setval(pg_get_serial_sequence('events', 'seq'), (SELECT MAX(seq) FROM events)) WHERE EXISTS (SELECT 1 FROM events)")
	return err
}
