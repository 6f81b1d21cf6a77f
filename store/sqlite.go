package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLite is the embedded store: one database file shared by the gateway and
// the `caddy keys` CLI, which may run as separate processes at once.
type SQLite = DB

//go:embed schema_sqlite.sql
var schemaSQLite string

var sqliteDialect = &dialect{
	name: "sqlite",
	// Append, never edit.
	migrations:   []migration{{1, schemaSQLite}, {2, schemaUsageHour}, {3, schemaRouteScopes}, {4, schemaConsole}, {5, schemaRoutePrefixes}, {6, schemaAnswers}},
	serialWrites: true,
	prepare:      true,
	// The write lock, taken at BEGIN (_txlock=immediate), already orders
	// every writer, so change sequences commit in order.
	rebind: rebindSQLite,
	nocase: func(c string) string { return c + " COLLATE NOCASE" },
}

// sqliteLower lowercases in Go: SQLite's own lower() and LIKE fold ASCII
// letters only, so "müller" would not find "Müller".
func sqliteLower(expr string) string { return "keygate_lower(" + expr + ")" }

func init() {
	sqlite.MustRegisterDeterministicScalarFunction("keygate_lower", 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		switch v := args[0].(type) {
		case string:
			return strings.ToLower(v), nil
		case []byte:
			return strings.ToLower(string(v)), nil
		}
		return args[0], nil
	})
}

// rebindSQLite turns $N into ?N, SQLite's numbered parameter with the same
// meaning.
func rebindSQLite(query string) string {
	return strings.ReplaceAll(query, "$", "?")
}

// sqliteParams apply to every pooled connection. busy_timeout makes a
// writer wait for another process's transaction instead of failing;
// _txlock=immediate makes every transaction take the write lock at BEGIN, so
// a read-then-write transaction never fails upgrading its lock; mode=rw
// opens the file without ever creating it, so a connection the pool opens
// after the file was deleted fails instead of starting an empty store at the
// path. synchronous(FULL) makes each commit wait for the write-ahead log to
// reach the disk: under NORMAL, the log was synced only at checkpoints, so a
// revocation answered as made sat in the OS's cache for up to half a minute,
// and a power loss or a kernel crash then undid it (the leaked key worked
// again). It costs one fsync a commit: a usage flush a second, and each key
// change. WAL mode is not among them: it is a property of the file, set once
// by useWAL.
const sqliteParams = "_pragma=busy_timeout(5000)" +
	"&_pragma=synchronous(FULL)" +
	"&_pragma=foreign_keys(1)" +
	"&_txlock=immediate" +
	"&mode=rw"

// OpenSQLite opens (creating if needed) the SQLite store at path and applies
// any pending migrations. The file and its directory are private to the
// user: they hold every key's digest and settings.
//
// It refuses to create the file where its write-ahead log is left without
// it (see ErrOrphanLog), and to open an empty file (see ErrEmptyFile).
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	return openSQLite(ctx, path, true)
}

// ErrOrphanLog means a SQLite store file is missing while its write-ahead
// log (-wal) or shared-memory index (-shm) is still beside it: a running
// gateway still has the deleted file open, or a crash left them. A new file
// created there would be read with the old file's log, which corrupts it.
var ErrOrphanLog = errors.New("the file is missing but its write-ahead log is still there " +
	"(a process may still have the deleted file open, or a crash left the log); a new store there would be corrupted")

// ErrEmptyFile means a SQLite store's file is empty (0 bytes), which a
// store keygate made never is, even while it is being made (createSQLite):
// the file was truncated or replaced. Opened as a new store, it would
// answer every key with invalid_key, and its schema would hide the loss.
var ErrEmptyFile = errors.New("the file is empty (0 bytes), which a keygate store never is: it was truncated or " +
	"replaced (a full disk, a crash, a copy cut short); move it away and restore a backup " +
	"(caddy keys restore FILE), or remove it to start a store without keys")

// openSQLite is OpenSQLite; without create, a missing file is an error.
func openSQLite(ctx context.Context, path string, create bool) (*SQLite, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("keygate store: sqlite %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		for _, suffix := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(path + suffix); err == nil {
				return nil, fmt.Errorf("keygate store: sqlite %s: %w: stop every gateway using it, then remove %s-wal and %s-shm",
					path, ErrOrphanLog, filepath.Base(path), filepath.Base(path))
			}
		}
		if create {
			if err := createSQLite(ctx, path); err != nil {
				return nil, fmt.Errorf("keygate store: sqlite %s: %w", path, err)
			}
		}
	case err == nil && fi.Mode().IsRegular() && fi.Size() == 0:
		return nil, fmt.Errorf("keygate store: sqlite %s: %w", path, ErrEmptyFile)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("keygate store: sqlite %s: %w", path, err)
	}
	f.Close()
	return openSQLiteDB(ctx, path)
}

// createSQLite makes a new store at path whole: it is made and migrated
// beside path under another name, private (0600) whatever the umask, then
// linked to path. So the file at path is never empty, even while it is
// being made (see ErrEmptyFile). If another process made one there
// meanwhile, that one is kept.
func createSQLite(ctx context.Context, path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".new-*") // 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	f.Close()
	defer func() {
		for _, f := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
			os.Remove(f)
		}
	}()
	db, err := openSQLiteDB(ctx, tmp)
	if err != nil {
		return err
	}
	// Everything into the file itself, not its log, before it is linked.
	var busy, logged, moved int
	err = db.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logged, &moved)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil && busy != 0 {
		err = errors.New("a new store could not be checkpointed")
	}
	if err != nil {
		return err
	}
	// A link, unlike a rename, fails if a file appeared at path meanwhile.
	err = linkFile(tmp, path)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return nil
	}
	// A file system without hard links (vfat, some network and FUSE
	// mounts) gets a rename, unless a store appeared there meanwhile.
	if _, serr := os.Lstat(path); serr == nil {
		return nil
	}
	if rerr := os.Rename(tmp, path); rerr != nil {
		return fmt.Errorf("%w (and renaming it into place: %v)", err, rerr)
	}
	return nil
}

// linkFile is os.Link; a test stands in a file system without hard links.
var linkFile = os.Link

// openSQLiteDB opens the SQLite file at path, which exists, as a store.
func openSQLiteDB(ctx context.Context, path string) (*SQLite, error) {
	db, err := sql.Open("sqlite", "file:"+escapeSQLitePath(path)+"?"+sqliteParams)
	if err != nil {
		return nil, fmt.Errorf("keygate store: sqlite %s: %w", path, err)
	}
	// Readers run in parallel under WAL; more connections than this only
	// queue on the one write lock.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)

	s := &DB{db: db, d: sqliteDialect, lower: sqliteLower}
	if err := notForeign(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("keygate store: sqlite %s: %w", path, err)
	}
	if err := useWAL(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("keygate store: sqlite %s: %w", path, err)
	}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("keygate store: sqlite %s: %w", path, err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Chmod(path+suffix, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			db.Close()
			return nil, fmt.Errorf("keygate store: sqlite %s: %w", path, err)
		}
	}
	return s, nil
}

// notForeign refuses a database that holds tables but not keygate's: a
// mistyped --store or store path naming another application's file would
// otherwise be switched to WAL mode and given keygate's tables. keygate's
// own have its schema_migrations (with applied_at, which Rails' and
// golang-migrate's tables of that name lack), keys and events.
func notForeign(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
	if err != nil {
		return err
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(tables) == 0 {
		return err
	}
	if slices.Contains(tables, "keys") && slices.Contains(tables, "events") && slices.Contains(tables, "schema_migrations") {
		var n int
		err := db.QueryRowContext(ctx, "SELECT count(*) FROM pragma_table_info('schema_migrations') WHERE name = 'applied_at'").Scan(&n)
		if err != nil || n == 1 {
			return err
		}
	}
	if len(tables) > 5 {
		tables = append(tables[:5], "…")
	}
	return fmt.Errorf("%w: it holds other tables (%s) and not keygate's; name a new file or a keygate store",
		ErrNotAStore, strings.Join(tables, ", "))
}

// ErrNotAStore means an SQLite file holds another application's tables.
var ErrNotAStore = errors.New("not a keygate store")

// useWAL switches the file to write-ahead logging, which lets the gateway
// read while the CLI writes. The switch needs the file to itself, and SQLite
// answers SQLITE_BUSY at once rather than waiting for another process that
// is opening the same new file, so it is retried for as long as
// busy_timeout would wait. Once the file is in WAL mode, the switch is a
// no-op that every later open passes straight through.
func useWAL(ctx context.Context, db *sql.DB) error {
	const wait = 5 * time.Second
	deadline := time.Now().Add(wait)
	for backoff := time.Millisecond; ; backoff = min(2*backoff, 50*time.Millisecond) {
		var mode string
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		switch {
		case err == nil && strings.EqualFold(mode, "wal"):
			return nil
		case err == nil:
			return fmt.Errorf("journal mode is %q, want wal", mode)
		case !isBusy(err) || time.Now().After(deadline):
			return fmt.Errorf("switch to WAL mode: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

// isBusy reports whether err is SQLite's "database is locked".
func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

// isFull reports whether err is SQLite's "database or disk is full": a
// write to try again once there is room. Opening a store on a full disk
// fails otherwise: its shared-memory index (-shm), which a graceful stop
// removes, cannot grow to its first 32 KB, and SQLite says "disk I/O
// error" (SQLITE_IOERR_SHMSIZE).
func isFull(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && (e.Code()&0xff == sqlite3.SQLITE_FULL || e.Code() == sqlite3.SQLITE_IOERR_SHMSIZE)
}

// Damaged reports whether err is SQLite finding the store's file damaged
// ("database disk image is malformed", "file is not a database"): no retry
// mends it, and the gateway refuses the keys it cannot read (503
// store_unavailable), so the admin API and the console answer 503 as well,
// saying so; the file must be restored from a backup.
func Damaged(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	code := e.Code() & 0xff
	return code == sqlite3.SQLITE_CORRUPT || code == sqlite3.SQLITE_NOTADB
}

// escapeSQLitePath escapes the characters SQLite's URI filenames give a
// meaning to, so any path opens as itself.
func escapeSQLitePath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}
