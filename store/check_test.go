package store

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Check is what `caddy validate` does with a store: it reports the schema
// version and refuses what Open refuses, and leaves nothing changed or made.
func TestCheckLeavesTheStoreAsItIs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Run("a store not made yet", func(t *testing.T) {
		path := filepath.Join(dir, "new", "sub", "keys.db")
		if v, err := Check(ctx, "sqlite:"+path); err != nil || v != 0 {
			t.Fatalf("Check = %d, %v; want 0", v, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "new")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Check left the directories it would make: %v", err)
		}
	})
	t.Run("a store to keep", func(t *testing.T) {
		path := filepath.Join(dir, "keys.db")
		st, err := Open(ctx, "sqlite:"+path)
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		before, _ := os.ReadFile(path)
		if v, err := Check(ctx, "sqlite:"+path); err != nil || v != SchemaVersion() {
			t.Fatalf("Check = %d, %v; want %d", v, err, SchemaVersion())
		}
		if after, _ := os.ReadFile(path); string(after) != string(before) {
			t.Error("Check changed the file")
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(path + suffix); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Check left %s beside the store: %v", filepath.Base(path+suffix), err)
			}
		}
		// A newer keygate's store is refused, as Open refuses it.
		execSQLite(t, path, "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
		if _, err := Check(ctx, "sqlite:"+path); err == nil || !strings.Contains(err.Error(), "schema version 99 is newer") {
			t.Errorf("Check of a newer schema: %v", err)
		}
	})
	t.Run("a store in use keeps its log", func(t *testing.T) {
		path := filepath.Join(dir, "inuse.db")
		st, err := Open(ctx, "sqlite:"+path)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if v, err := Check(ctx, "sqlite:"+path); err != nil || v != SchemaVersion() {
			t.Fatalf("Check = %d, %v; want %d", v, err, SchemaVersion())
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(path + suffix); err != nil {
				t.Errorf("Check removed the log of a store in use: %v", err)
			}
		}
	})
	t.Run("another application's file", func(t *testing.T) {
		path := filepath.Join(dir, "app.db")
		execSQLite(t, path, "CREATE TABLE users (id INTEGER)")
		if _, err := Check(ctx, "sqlite:"+path); !errors.Is(err, ErrNotAStore) {
			t.Errorf("Check = %v; want ErrNotAStore", err)
		}
	})
	t.Run("a log without its file", func(t *testing.T) {
		path := filepath.Join(dir, "gone.db")
		if err := os.WriteFile(path+"-wal", nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Check(ctx, "sqlite:"+path); !errors.Is(err, ErrOrphanLog) {
			t.Errorf("Check = %v; want ErrOrphanLog", err)
		}
	})
	t.Run("a directory", func(t *testing.T) {
		if _, err := Check(ctx, "sqlite:"+dir); err == nil || Unavailable(err) {
			t.Errorf("Check of a directory = %v; want a refusal", err)
		}
	})
}

// execSQLite runs statements on the SQLite file at path as another program
// would, outside any store.
func execSQLite(t *testing.T, path, statements string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(statements); err != nil {
		t.Fatal(err)
	}
}

// On PostgreSQL too: an empty database is version 0 and stays empty, an
// opened one is this keygate's version, and a search_path naming no schema
// that exists is refused, as Open refuses it.
func TestCheckPostgres(t *testing.T) {
	ctx := context.Background()
	uri := testPostgresURI(t)
	if v, err := Check(ctx, uri); err != nil || v != 0 {
		t.Fatalf("Check of an empty database = %d, %v; want 0", v, err)
	}
	if v, err := Check(ctx, uri); err != nil || v != 0 {
		t.Fatalf("Check made keygate's tables: %d, %v", v, err)
	}
	openTestPostgres(t, uri).Close()
	if v, err := Check(ctx, uri); err != nil || v != SchemaVersion() {
		t.Fatalf("Check of an opened store = %d, %v; want %d", v, err, SchemaVersion())
	}
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	nowhere := uri + sep + "search_path=nowhere"
	if _, err := Check(ctx, nowhere); err == nil || Unavailable(err) {
		t.Errorf("Check with a search_path naming no schema: %v; want a refusal", err)
	}
	if _, err := Open(ctx, nowhere); err == nil {
		t.Errorf("Open with a search_path naming no schema succeeded")
	}
}

// A role that may not create tables in its schema (PostgreSQL 15's public,
// for any role but its owner) cannot have keygate make or migrate them:
// validating a config says so, rather than that the store is made when
// the config runs, which would then fail.
func TestCheckPostgresRoleThatMayNotCreate(t *testing.T) {
	ctx := context.Background()
	uri := testPostgresURI(t)
	admin, err := sql.Open("pgx", uri)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "DROP ROLE IF EXISTS kg_reader; CREATE ROLE kg_reader LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC"); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("kg_reader")
	if _, err := Check(ctx, u.String()); err == nil || !strings.Contains(err.Error(), `role "kg_reader" may not create tables in schema "public"`) ||
		!strings.Contains(err.Error(), "GRANT CREATE ON SCHEMA public TO kg_reader") {
		t.Errorf("Check as a role that may not create tables: %v; want a refusal saying what to grant", err)
	}
	if _, err := admin.ExecContext(ctx, "GRANT CREATE ON SCHEMA public TO kg_reader"); err != nil {
		t.Fatal(err)
	}
	if v, err := Check(ctx, u.String()); err != nil || v != 0 {
		t.Errorf("Check once granted: %d, %v; want 0", v, err)
	}
}
