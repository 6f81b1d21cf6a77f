package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The store Open returns for a SQLite path passes the same conformance
// suite as the file it wraps.
func TestSQLiteFileConformance(t *testing.T) {
	testStoreConformance(t, func(t *testing.T) Store {
		s, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "keys.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func openFollowing(t *testing.T, path string) *sqliteFile {
	t.Helper()
	s, err := Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*sqliteFile)
}

func removeStoreFiles(t *testing.T, path string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

// The gateway's store with its file deleted: keys are still read from the
// open file, writes are refused rather than lost with it, and the pool never
// creates a file at the path, however many connections it opens.
func TestSQLiteFileDeletedWhileOpenKeepsReadingAndRefusesWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.db")
	gw := openFollowing(t, path)
	rec := minimalRecord("key_before", time.Now())
	mustCreate(t, gw, rec)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	if _, err := gw.LastChange(ctx); !errors.Is(err, ErrFileGone) {
		t.Fatalf("LastChange after the delete = %v, want ErrFileGone", err)
	}
	if err := gw.AddUsage(ctx, []UsageDelta{{KeyID: rec.ID, Hour: time.Now(), Counts: map[string]int64{"allowed": 1}}}); !errors.Is(err, ErrFileGone) {
		t.Errorf("AddUsage after the delete = %v, want ErrFileGone", err)
	}
	if err := gw.CreateKey(ctx, minimalRecord("key_after", time.Now()), Event{Action: "issued"}); !errors.Is(err, ErrFileGone) {
		t.Errorf("CreateKey after the delete = %v, want ErrFileGone", err)
	}
	if _, err := gw.UpdateKey(ctx, rec.ID, &Event{}, func(*Record) error { return nil }); !errors.Is(err, ErrFileGone) {
		t.Errorf("UpdateKey after the delete = %v, want ErrFileGone", err)
	}
	if got, err := gw.KeyByDigest(ctx, rec.Digest); err != nil || got.ID != rec.ID {
		t.Errorf("KeyByDigest after the delete = %v, %v; want the key from the open file", got, err)
	}
	// Connections the pool opens now, as it does under load, must fail
	// rather than create a file.
	for range 8 {
		if c, err := gw.db.db.Conn(ctx); err == nil {
			defer c.Close()
		}
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s%s is at the path after the delete (%v)", filepath.Base(path), suffix, err)
		}
	}
	if gw.Generation() != 0 {
		t.Error("the store switched with no file to switch to")
	}
}

// `caddy keys issue` after the file was deleted under a running gateway:
// the CLI creates a new store at the path, and the gateway's store switches
// to it at its next poll, so both use one file again.
func TestSQLiteFileFollowsANewFileAtItsPath(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.db")
	gw := openFollowing(t, path)
	old := minimalRecord("key_old", time.Now())
	mustCreate(t, gw, old)
	removeStoreFiles(t, path)

	cli := openTestSQLite(t, path)
	fresh := minimalRecord("key_new", time.Now())
	mustCreate(t, cli, fresh)

	if _, err := gw.LastChange(ctx); err != nil {
		t.Fatalf("LastChange with a new file at the path = %v", err)
	}
	if gw.Generation() != 1 {
		t.Errorf("Generation() = %d after one switch, want 1", gw.Generation())
	}
	if got, err := gw.KeyByDigest(ctx, fresh.Digest); err != nil || got.ID != fresh.ID {
		t.Errorf("the gateway's store does not read the new file's key: %v, %v", got, err)
	}
	if _, err := gw.KeyByDigest(ctx, old.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("the gateway's store still reads the deleted file's key: %v", err)
	}
	if err := gw.AddUsage(ctx, []UsageDelta{{KeyID: fresh.ID, Hour: time.Now(), Counts: map[string]int64{"allowed": 3}}}); err != nil {
		t.Fatal(err)
	}
	if rep, err := cli.Usage(ctx, fresh.ID, time.Now().Add(-time.Hour)); err != nil || rep.Allowed != 3 {
		t.Errorf("usage the gateway wrote, as the CLI reads it: %+v, %v", rep, err)
	}

	// Closing the old file left the new file's log alone (SQLite sees
	// the old file moved): another process opening the file now reads
	// what the CLI wrote.
	again := openTestSQLite(t, path)
	if _, err := again.KeyByDigest(ctx, fresh.Digest); err != nil {
		t.Errorf("the new file lost its key: %v", err)
	}
}

// A file moved over the path while open (a backup put back): the store
// removes the old file's log from the path before opening the new file, so
// the new file is never read with the old file's log.
func TestSQLiteFileFollowsAFileMovedOverItsPath(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.db")
	gw := openFollowing(t, path)
	old := minimalRecord("key_old", time.Now())
	mustCreate(t, gw, old)
	// Changes the old file has only in its log.
	for i := range 50 {
		mustCreate(t, gw, minimalRecord("key_old_"+string(rune('a'+i%26))+time.Now().Format("150405.000000000"), time.Now()))
	}

	backup := filepath.Join(dir, "backup.db")
	b := openTestSQLite(t, backup)
	restored := minimalRecord("key_restored", time.Now())
	mustCreate(t, b, restored)
	b.Close()
	if err := os.Rename(backup, path); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.LastChange(ctx); err != nil {
		t.Fatalf("LastChange after the move = %v", err)
	}
	if got, err := gw.KeyByDigest(ctx, restored.Digest); err != nil || got.ID != restored.ID {
		t.Fatalf("the moved file's key: %v, %v", got, err)
	}
	if _, err := gw.KeyByDigest(ctx, old.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("the old file's key is read from the new file: %v", err)
	}
	if n := len(mustChanges(t, gw, 0)); n != 1 {
		t.Errorf("the moved file has %d changes, want its own 1 (the old log was applied to it)", n)
	}
}

// The CLI must not create a store where a deleted file's log is left: a
// new file there would be read with that log.
func TestOpenSQLiteRefusesToCreateAFileBesideAnOrphanLog(t *testing.T) {
	for _, suffix := range []string{"-wal", "-shm"} {
		t.Run(suffix, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.db")
			if err := os.WriteFile(path+suffix, []byte("left over"), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, uri := range []string{"sqlite:" + path} {
				s, err := Open(context.Background(), uri)
				if err == nil {
					s.Close()
					t.Fatal("Open created a store beside an orphan log")
				}
				if !errors.Is(err, ErrOrphanLog) {
					t.Errorf("Open = %v, want ErrOrphanLog", err)
				}
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused open created %s", path)
			}
		})
	}
}
