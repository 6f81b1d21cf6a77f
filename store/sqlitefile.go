package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrFileGone means the SQLite file a store opened is no longer at its path:
// deleted or moved away while open, or replaced by a file that cannot be
// opened. The store keeps reading the file it has open, and refuses writes,
// which would be lost with that file.
var ErrFileGone = errors.New("the file was deleted or moved away while open: keys are still read from the file " +
	"this process has open, but writes and usage counts wait until a store file is at the path again, " +
	"which is then used instead")

// Replaceable is implemented by a store whose database may be swapped for
// another while it is open: the SQLite store that Open returns follows its
// path when the file there is replaced.
type Replaceable interface {
	// Generation changes whenever the store switches to another database;
	// whoever caches what the store said must then drop all of it.
	Generation() uint64
}

// sqliteFile is the SQLite store a path names, as Open returns it. Before
// every poll of the change log and every write, it checks (one stat) that
// the path still names the file it has open, so the gateway and the
// `caddy keys` CLI can never use two different files under one name for
// longer than a poll:
//
//   - If the path names no file, its own write-ahead log and index are
//     removed from the path (they belong to the file that is gone, and a new
//     file created beside them would be read with them), reads go on from
//     the open file, and writes fail with ErrFileGone.
//   - If the path names another file, the store opens that one, switches to
//     it (Generation changes) and closes the old file.
type sqliteFile struct {
	path string

	mu       sync.RWMutex // shared by every call, exclusive while switching
	db       *DB
	file     os.FileInfo // what db opened at path
	wal, shm os.FileInfo // db's -wal and -shm files, as they were at open

	switching sync.Mutex // one switch at a time
	gen       atomic.Uint64
}

// openSQLiteFile opens the SQLite store at path, creating it if needed, and
// follows the path from then on.
func openSQLiteFile(ctx context.Context, path string) (*sqliteFile, error) {
	db, err := OpenSQLite(ctx, path)
	if err != nil {
		return nil, err
	}
	s := &sqliteFile{path: path}
	if err := s.use(db); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// use makes db, just opened at s.path, the store's database. The caller
// holds mu exclusively, or is the only user.
func (s *sqliteFile) use(db *DB) error {
	fi, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("keygate store: sqlite %s: %w", s.path, err)
	}
	s.db, s.file = db, fi
	s.wal, _ = os.Stat(s.path + "-wal")
	s.shm, _ = os.Stat(s.path + "-shm")
	return nil
}

// Generation counts the switches to another file at the path.
func (s *sqliteFile) Generation() uint64 { return s.gen.Load() }

// follow makes sure the path still names the open file, switching to the
// file the path names now if it is another one.
func (s *sqliteFile) follow(ctx context.Context) error {
	fi, err := os.Stat(s.path)
	s.mu.RLock()
	same := err == nil && os.SameFile(fi, s.file)
	s.mu.RUnlock()
	if same {
		return nil
	}
	s.switching.Lock()
	defer s.switching.Unlock()
	// Again: another call may have switched meanwhile. The fields only
	// change under switching, so they may be read without mu here.
	if fi, err = os.Stat(s.path); err == nil && os.SameFile(fi, s.file) {
		return nil
	}
	s.removeOwnLogs()
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("keygate store: sqlite %s: %w (%v)", s.path, ErrFileGone, err)
		}
		return fmt.Errorf("keygate store: sqlite %s: %w", s.path, ErrFileGone)
	}
	next, err := openSQLite(ctx, s.path, false)
	if err != nil {
		return fmt.Errorf("keygate store: sqlite %s: %w; the file now at the path cannot be opened: %w", s.path, ErrFileGone, err)
	}
	s.mu.Lock()
	old := s.db
	err = s.use(next)
	if err == nil {
		s.gen.Add(1)
	}
	s.mu.Unlock()
	if err != nil {
		next.Close()
		return fmt.Errorf("keygate store: sqlite %s: %w", s.path, ErrFileGone)
	}
	// SQLite's last connection to a file removes its -wal and -shm by
	// name when it closes, unless it sees the file has moved
	// (SQLITE_FCNTL_HAS_MOVED): the old file's, so the new file's are safe.
	old.Close()
	return nil
}

// removeOwnLogs removes the open file's -wal and -shm from the path once the
// file is no longer there. The open connections keep using them.
func (s *sqliteFile) removeOwnLogs() {
	for _, f := range []struct {
		suffix string
		fi     os.FileInfo
	}{{"-wal", s.wal}, {"-shm", s.shm}} {
		if f.fi == nil {
			continue
		}
		if fi, err := os.Stat(s.path + f.suffix); err == nil && os.SameFile(fi, f.fi) {
			os.Remove(s.path + f.suffix)
		}
	}
}

// read runs fn on the current database.
func read[T any](s *sqliteFile, fn func(db *DB) (T, error)) (T, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return fn(s.db)
}

// write runs fn on the current database once the path is known to name it.
func write[T any](ctx context.Context, s *sqliteFile, fn func(db *DB) (T, error)) (T, error) {
	if err := s.follow(ctx); err != nil {
		var zero T
		return zero, err
	}
	return read(s, fn)
}

// CreateKey implements Store.
func (s *sqliteFile) CreateKey(ctx context.Context, rec *Record, ev Event) error {
	_, err := write(ctx, s, func(db *DB) (struct{}, error) { return struct{}{}, db.CreateKey(ctx, rec, ev) })
	return err
}

// Key implements Store.
func (s *sqliteFile) Key(ctx context.Context, id string) (*Record, error) {
	return read(s, func(db *DB) (*Record, error) { return db.Key(ctx, id) })
}

// KeyByDigest implements Store.
func (s *sqliteFile) KeyByDigest(ctx context.Context, d Digest) (*Record, error) {
	return read(s, func(db *DB) (*Record, error) { return db.KeyByDigest(ctx, d) })
}

// EachDigest implements DigestLister.
func (s *sqliteFile) EachDigest(ctx context.Context, fn func(Digest)) error {
	_, err := read(s, func(db *DB) (struct{}, error) { return struct{}{}, db.EachDigest(ctx, fn) })
	return err
}

// EachKey implements KeyWalker.
func (s *sqliteFile) EachKey(ctx context.Context, fn func(*Record) error) error {
	_, err := read(s, func(db *DB) (struct{}, error) { return struct{}{}, db.EachKey(ctx, fn) })
	return err
}

// ListKeys implements Store.
func (s *sqliteFile) ListKeys(ctx context.Context, f ListFilter) ([]*Record, error) {
	return read(s, func(db *DB) ([]*Record, error) { return db.ListKeys(ctx, f) })
}

// CountKeys implements Store.
func (s *sqliteFile) CountKeys(ctx context.Context, f ListFilter) (int, error) {
	return read(s, func(db *DB) (int, error) { return db.CountKeys(ctx, f) })
}

// UpdateKey implements Store.
func (s *sqliteFile) UpdateKey(ctx context.Context, id string, ev *Event, fn func(*Record) error) (*Record, error) {
	return write(ctx, s, func(db *DB) (*Record, error) { return db.UpdateKey(ctx, id, ev, fn) })
}

// RotateKey implements Store.
func (s *sqliteFile) RotateKey(ctx context.Context, id string, graceEnd time.Time, ev *Event, next func(old *Record) (*Record, error)) (*Record, error) {
	return write(ctx, s, func(db *DB) (*Record, error) { return db.RotateKey(ctx, id, graceEnd, ev, next) })
}

// LastChange implements Store. Gateways poll it, so it is where a replaced
// or deleted file is noticed first.
func (s *sqliteFile) LastChange(ctx context.Context) (int64, error) {
	return write(ctx, s, func(db *DB) (int64, error) { return db.LastChange(ctx) })
}

// Changes implements Store.
func (s *sqliteFile) Changes(ctx context.Context, after int64) ([]Change, error) {
	return read(s, func(db *DB) ([]Change, error) { return db.Changes(ctx, after) })
}

// AddUsage implements Store.
func (s *sqliteFile) AddUsage(ctx context.Context, deltas []UsageDelta) error {
	_, err := write(ctx, s, func(db *DB) (struct{}, error) { return struct{}{}, db.AddUsage(ctx, deltas) })
	return err
}

// Usage implements Store.
func (s *sqliteFile) Usage(ctx context.Context, id string, since time.Time) (*UsageReport, error) {
	return read(s, func(db *DB) (*UsageReport, error) { return db.Usage(ctx, id, since) })
}

// Recipients implements Store.
func (s *sqliteFile) Recipients(ctx context.Context, id string, since time.Time) (int64, error) {
	return read(s, func(db *DB) (int64, error) { return db.Recipients(ctx, id, since) })
}

// PruneUsage implements Store.
func (s *sqliteFile) PruneUsage(ctx context.Context, before time.Time) (int64, error) {
	return write(ctx, s, func(db *DB) (int64, error) { return db.PruneUsage(ctx, before) })
}

// Activity implements Store.
func (s *sqliteFile) Activity(ctx context.Context, ids []string, since time.Time) (map[string][]HourUsage, error) {
	return read(s, func(db *DB) (map[string][]HourUsage, error) { return db.Activity(ctx, ids, since) })
}

// RecordRouteScopes implements Store.
func (s *sqliteFile) RecordRouteScopes(ctx context.Context, lines []RouteScope) error {
	_, err := write(ctx, s, func(db *DB) (struct{}, error) { return struct{}{}, db.RecordRouteScopes(ctx, lines) })
	return err
}

// RouteScopes implements Store.
func (s *sqliteFile) RouteScopes(ctx context.Context, since time.Time) ([]RouteScope, error) {
	return read(s, func(db *DB) ([]RouteScope, error) { return db.RouteScopes(ctx, since) })
}

// RecordRoutePrefixes implements Store.
func (s *sqliteFile) RecordRoutePrefixes(ctx context.Context, prefixes []string, at time.Time) error {
	_, err := write(ctx, s, func(db *DB) (struct{}, error) { return struct{}{}, db.RecordRoutePrefixes(ctx, prefixes, at) })
	return err
}

// RoutePrefixes implements Store.
func (s *sqliteFile) RoutePrefixes(ctx context.Context, since time.Time) ([]string, error) {
	return read(s, func(db *DB) ([]string, error) { return db.RoutePrefixes(ctx, since) })
}

// Owners implements Store.
func (s *sqliteFile) Owners(ctx context.Context, limit int) ([]string, error) {
	return read(s, func(db *DB) ([]string, error) { return db.Owners(ctx, limit) })
}

// ConsoleSecret implements Store.
func (s *sqliteFile) ConsoleSecret(ctx context.Context, name, candidate string) (string, error) {
	return write(ctx, s, func(db *DB) (string, error) { return db.ConsoleSecret(ctx, name, candidate) })
}

// Answer implements Store.
func (s *sqliteFile) Answer(ctx context.Context, id string, now time.Time) (*Answer, error) {
	return read(s, func(db *DB) (*Answer, error) { return db.Answer(ctx, id, now) })
}

// PruneAnswers implements Store.
func (s *sqliteFile) PruneAnswers(ctx context.Context, now time.Time) (int64, error) {
	return write(ctx, s, func(db *DB) (int64, error) { return db.PruneAnswers(ctx, now) })
}

// PutFlash implements Store.
func (s *sqliteFile) PutFlash(ctx context.Context, id, data string, expires, now time.Time) error {
	_, err := write(ctx, s, func(db *DB) (struct{}, error) { return struct{}{}, db.PutFlash(ctx, id, data, expires, now) })
	return err
}

// TakeFlash implements Store.
func (s *sqliteFile) TakeFlash(ctx context.Context, id string, now time.Time) (string, error) {
	return write(ctx, s, func(db *DB) (string, error) { return db.TakeFlash(ctx, id, now) })
}

// Events implements Store.
func (s *sqliteFile) Events(ctx context.Context, f EventFilter) ([]Event, error) {
	return read(s, func(db *DB) ([]Event, error) { return db.Events(ctx, f) })
}

// Close implements Store.
func (s *sqliteFile) Close() error {
	s.switching.Lock()
	defer s.switching.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
}

// Backup implements Backuper.
func (s *sqliteFile) Backup(ctx context.Context, path string) (BackupInfo, error) {
	return read(s, func(db *DB) (BackupInfo, error) { return db.Backup(ctx, path) })
}

var (
	_ Store       = (*sqliteFile)(nil)
	_ Replaceable = (*sqliteFile)(nil)
	_ Backuper    = (*sqliteFile)(nil)
)
