package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5/stdlib"
)

// Check reports the schema version of the store a URI names without opening
// it for use: nothing is left created, switched to WAL mode or migrated. It is
// what `caddy validate` needs of a store: Open would move an older store to
// this keygate's schema, which the older binary still serving it could then
// not start on again. A store not made yet (a missing SQLite file, an empty
// database) is version 0. Check refuses what Open refuses: a malformed URI,
// a store it cannot reach or read (Unavailable tells which), another
// application's SQLite file, an empty one, a schema newer than this keygate
// knows.
func Check(ctx context.Context, uri string) (int, error) {
	uri, err := ParseURI(uri)
	if err != nil {
		return 0, err
	}
	var version int
	if path, ok := SQLitePath(uri); ok {
		if version, err = checkSQLite(ctx, path); err != nil {
			return 0, fmt.Errorf("keygate store: sqlite %s: %w", path, err)
		}
	} else if version, err = checkPostgres(ctx, uri); err != nil {
		return 0, fmt.Errorf("keygate store: postgres %s: %w", RedactURI(uri), err)
	}
	if latest := SchemaVersion(); version > latest {
		return 0, fmt.Errorf("keygate store: %s: %w", RedactURI(uri), newerSchema(version, latest))
	}
	return version, nil
}

func checkSQLite(ctx context.Context, path string) (int, error) {
	fi, err := os.Stat(path)
	if err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
		return 0, ErrEmptyFile
	}
	if errors.Is(err, os.ErrNotExist) {
		for _, suffix := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(path + suffix); err == nil {
				return 0, ErrOrphanLog
			}
		}
		return 0, couldCreate(filepath.Dir(path))
	}
	// Opened as the gateway opens it, so a directory or a file the
	// gateway's user may not write is refused here too.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	f.Close()
	// Read-write but query_only, not mode=ro: a read-only connection to a
	// WAL store no one else has open makes its -wal and -shm and, unable to
	// checkpoint, leaves them behind when it closes (with the store then
	// moved or restored, they are an orphan log that stops the gateway).
	// As the last connection, this one removes them, as the gateway does.
	db, err := sql.Open("sqlite", "file:"+escapeSQLitePath(path)+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if err := notForeign(ctx, db); err != nil {
		return 0, err
	}
	return schemaVersionOf(ctx, db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
}

// couldCreate reports whether a store file could be made in dir, as Open
// would make it (with the directories it lacks), leaving nothing behind:
// the directories it made to find out are removed again.
func couldCreate(dir string) error {
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
			break
		}
		made = append(made, d)
	}
	defer func() {
		for _, d := range made { // deepest first
			os.Remove(d)
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".keygate-check-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

func checkPostgres(ctx context.Context, uri string) (int, error) {
	cfg, _, err := postgresConfig(uri)
	if err != nil {
		return 0, err
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	// Open would create keygate's tables in the first schema of the
	// role's search_path: with none that exists, it fails.
	var schema sql.NullString
	if err := db.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return 0, err
	}
	if !schema.Valid {
		return 0, errors.New("no schema to hold keygate's tables: the role's search_path names none that exists " +
			"(or none the role may use: GRANT USAGE ON SCHEMA …)")
	}
	version, err := schemaVersionOf(ctx, db, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_migrations'")
	if err != nil || version >= SchemaVersion() {
		return version, err
	}
	// Open will create tables there (PostgreSQL 15 gives no role but the
	// schema's owner that right in public).
	var create bool
	var role string
	if err := db.QueryRowContext(ctx, "SELECT has_schema_privilege(current_schema(), 'CREATE'), current_user").Scan(&create, &role); err != nil {
		return 0, err
	}
	if !create {
		what := "make keygate's tables"
		if version > 0 {
			what = fmt.Sprintf("move them from schema version %d to %d", version, SchemaVersion())
		}
		return 0, fmt.Errorf("role %q may not create tables in schema %q, which opening the store does to %s: "+
			"GRANT CREATE ON SCHEMA %s TO %s, or open it once as a role that may", role, schema.String, what, schema.String, role)
	}
	return version, nil
}

// schemaVersionOf is the newest migration a database records, 0 for one
// without keygate's schema_migrations table (hasTable counts it).
func schemaVersionOf(ctx context.Context, db *sql.DB, hasTable string) (int, error) {
	var n, version int
	if err := db.QueryRowContext(ctx, hasTable).Scan(&n); err != nil || n == 0 {
		return 0, err
	}
	err := db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&version)
	return version, err
}

// newerSchema is the refusal of a store migrated by a newer keygate.
func newerSchema(current, latest int) error {
	return fmt.Errorf("schema version %d is newer than this keygate knows (%d)", current, latest)
}
