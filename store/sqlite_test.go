package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func openTestSQLite(t testing.TB, path string) *SQLite {
	t.Helper()
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openStoreFile opens, as Open does, a new SQLite store file in a
// directory of its own, and returns the store, the directory and the path.
func openStoreFile(t *testing.T) (Store, string, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.db")
	st, err := Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	return st, dir, path
}

func TestSQLiteConformance(t *testing.T) {
	testStoreConformance(t, func(t *testing.T) Store {
		return openTestSQLite(t, filepath.Join(t.TempDir(), "keys.db"))
	})
}

func TestOpenSQLiteMakesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "keygate")
	path := filepath.Join(dir, "keys.db")
	s := openTestSQLite(t, path)
	// A write makes SQLite create the -wal and -shm files.
	mustCreate(t, s, minimalRecord("key_mode", time.Now()))

	checks := []struct {
		path string
		want os.FileMode
	}{{dir, 0o700}, {path, 0o600}, {path + "-wal", 0o600}, {path + "-shm", 0o600}}
	for _, c := range checks {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != c.want {
			t.Errorf("%s: mode %v, want %v", c.path, got, c.want)
		}
	}
}

// TestSQLiteCommitsReachTheDiskBeforeTheyAreAnswered: every connection of
// a SQLite store, as the gateway and caddy keys open it, syncs the
// write-ahead log at each commit (synchronous FULL). Under NORMAL the log
// was synced only at checkpoints: the admin API answered a revoke 200 with
// its commit in the OS's cache alone (strace of the real caddy: no fsync
// between the revoke's log frames and the answer), and a power loss or a
// kernel crash in the next half minute took the revocation back, so the
// leaked key worked again.
func TestSQLiteCommitsReachTheDiskBeforeTheyAreAnswered(t *testing.T) {
	ctx := context.Background()
	st, _, _ := openStoreFile(t)
	defer st.Close()
	db := st.(*sqliteFile).db.db
	// Every connection the pool holds at once, each asked on its own.
	var conns []*sql.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 8 {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		var mode int
		if err := c.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != 2 { // FULL
			t.Errorf("connection %d: PRAGMA synchronous = %d, want 2 (FULL): a commit is answered before the disk holds it", len(conns), mode)
		}
	}
}

func TestSQLiteMigrations(t *testing.T) {
	t.Run("reopening applies nothing twice and keeps the data", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keys.db")
		s := openTestSQLite(t, path)
		mustCreate(t, s, minimalRecord("key_kept", time.Now()))
		s.Close()
		s = openTestSQLite(t, path)
		mustKey(t, s, "key_kept")
		if got := migrationVersions(t, s); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6}) {
			t.Errorf("schema_migrations = %v, want [1 2 3 4 5 6]", got)
		}
	})

	t.Run("a version 1 file gets the later migrations and prunes through the hour indexes", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keys.db")
		s := openTestSQLite(t, path)
		for _, q := range []string{"DROP INDEX usage_hour", "DROP INDEX usage_ips_hour", "DROP TABLE route_scopes", "DROP TABLE console_secrets", "DROP TABLE console_flashes", "DROP TABLE route_prefixes", "DROP TABLE idempotent_answers", "DELETE FROM schema_migrations WHERE version > 1"} {
			if _, err := s.db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		s = openTestSQLite(t, path)
		if got := migrationVersions(t, s); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6}) {
			t.Errorf("schema_migrations = %v, want [1 2 3 4 5 6]", got)
		}
		for _, q := range []string{
			"SELECT key_id, hour, metric FROM usage WHERE hour < 1 LIMIT 10",
			"SELECT key_id, hour, ip FROM usage_ips WHERE hour < 1 LIMIT 10",
		} {
			var plan strings.Builder
			rows, err := s.db.Query("EXPLAIN QUERY PLAN " + q)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan.WriteString(detail + "; ")
			}
			rows.Close()
			if !strings.Contains(plan.String(), "_hour") {
				t.Errorf("%s: plan %q does not use the hour index", q, plan.String())
			}
		}
	})

	t.Run("processes opening a new file at once all succeed", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keys.db")
		var wg sync.WaitGroup
		stores := make([]*SQLite, 4)
		errs := make([]error, len(stores))
		for i := range stores {
			wg.Go(func() { stores[i], errs[i] = OpenSQLite(context.Background(), path) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("open %d: %v", i, err)
			}
			defer stores[i].Close()
		}
		if got := migrationVersions(t, stores[0]); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6}) {
			t.Errorf("schema_migrations = %v, want [1 2 3 4 5 6]", got)
		}
	})

	t.Run("a schema newer than this build is refused", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keys.db")
		s := openTestSQLite(t, path)
		if _, err := s.db.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)"); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := OpenSQLite(context.Background(), path); err == nil || !strings.Contains(err.Error(), "99") {
			t.Errorf("OpenSQLite err = %v, want it to refuse schema version 99", err)
		}
	})
}

func migrationVersions(t *testing.T, s *SQLite) []int {
	t.Helper()
	rows, err := s.db.Query("SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	return got
}

// Two handles on one file behave like the gateway and the CLI in two
// processes: each has its own pool and its own write mutex.
func TestSQLiteTwoHandlesShareOneFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.db")
	gateway, cli := openTestSQLite(t, path), openTestSQLite(t, path)

	seen := mustLastChange(t, gateway)
	rec := minimalRecord("key_shared", time.Now())
	mustCreate(t, cli, rec)
	if _, err := cli.UpdateKey(ctx, rec.ID, &Event{Action: "revoked"}, func(r *Record) error {
		now := time.Now()
		r.RevokedAt = &now
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	changes := mustChanges(t, gateway, seen)
	if len(changes) != 2 || changes[0].Digest != rec.Digest || changes[1].Digest != rec.Digest {
		t.Errorf("gateway sees changes %+v, want two of the key's digest", changes)
	}
	got, err := gateway.KeyByDigest(ctx, rec.Digest)
	if err != nil || !got.Revoked() {
		t.Errorf("gateway reads %+v, %v; want the revoked key", got, err)
	}

	// Both write usage at once; neither loses an update nor sees SQLITE_BUSY.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, s := range []*SQLite{gateway, cli} {
		wg.Go(func() {
			for range 100 {
				if err := s.AddUsage(ctx, []UsageDelta{{KeyID: rec.ID, Hour: time.Now(), Counts: map[string]int64{"allowed": 1}}}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rep, err := cli.Usage(ctx, rec.ID, time.Now().Add(-time.Hour))
	if err != nil || rep.Allowed != 200 {
		t.Errorf("allowed = %v, %v; want 200", rep, err)
	}
}

func TestSQLiteFileNeverHoldsTheKey(t *testing.T) {
	const key = "kg_live_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgXyZ123"
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.db")
	s := openTestSQLite(t, path)
	rec := fullRecord("key_secret", time.Now())
	rec.Digest = sha256.Sum256([]byte(key))
	rec.Hint = key[:len("kg_live_")+8] + "…"
	mustCreate(t, s, rec)
	if err := s.AddUsage(context.Background(), []UsageDelta{{KeyID: rec.ID, Hour: time.Now(), Counts: map[string]int64{"allowed": 1}}}); err != nil {
		t.Fatal(err)
	}
	secret := key[len("kg_live_")+8:] // what the hint must not reveal
	files, _ := filepath.Glob(path + "*")
	if len(files) < 2 {
		t.Fatalf("files %v, want the database and its WAL", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(key)) || bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s contains the key", f)
		}
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, tc := range []struct {
		name      string
		uri       string
		wantErr   string // empty: opens
		forbidden string // must not appear in the error
	}{
		{"sqlite with an absolute path", "sqlite:" + filepath.Join(dir, "abs.db"), "", ""},
		{"sqlite with a path holding URI characters", "sqlite:" + filepath.Join(dir, "odd?name#1%.db"), "", ""},
		{"sqlite without a path", "sqlite:", "want sqlite:PATH", ""},
		{"postgres that cannot be reached", "postgres://kg:hunter2@db.invalid/keygate?connect_timeout=1", "keygate store: postgres", "hunter2"},
		{"postgresql that cannot be reached", "postgresql://kg:hunter2@db.invalid/keygate?connect_timeout=1", "keygate store: postgres", "hunter2"},
		{"an unknown scheme is named", "mysql://kg:hunter2@db/keygate", `unknown scheme "mysql"`, "hunter2"},
		{"a bare absolute path is an SQLite file", filepath.Join(dir, "bare.db"), "", ""},
		{"a key=value string hides its password", "host=db password=hunter2", "not a URI", "hunter2"},
		// Without the fix a relative SQLite path: a file made in the
		// working directory, the password in its name.
		{"postgres without // is refused, not a file", "postgres:kg:hunter2@db/keygate", "postgres:xxxxx: want postgres://…", "hunter2"},
		{"postgres with one / is refused", "postgresql:/kg:hunter2@db/keygate", "postgresql:xxxxx: want postgresql://…", "hunter2"},
		// Without the fix the host kg on port 5432 and the database
		// "hunter2@db.invalid/keygate", tried as an outage and named in its error.
		{"a password with an unencoded / is refused unquoted", "postgres://kg:5432/hunter2@db.invalid/keygate?connect_timeout=1",
			"postgres://xxxxx: not a URL: characters such as % # ? / @ in the user name or password must be percent-encoded", "hunter2"},
		{"the same password percent-encoded is read", "postgres://kg:5432%2Fhunter2@db.invalid/keygate?connect_timeout=1", "keygate store: postgres", "hunter2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(ctx, tc.uri)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded, want %q", tc.uri, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Open(%q) = %v, want %q", tc.uri, err, tc.wantErr)
			}
			if tc.forbidden != "" && strings.Contains(err.Error(), tc.forbidden) {
				t.Errorf("Open(%q) error %q reveals %q", tc.uri, err, tc.forbidden)
			}
		})
	}

	t.Run("relative paths open under the working directory", func(t *testing.T) {
		t.Chdir(t.TempDir())
		for _, uri := range []string{"sqlite:sub/rel.db", "sub/bare.db"} {
			s, err := Open(ctx, uri)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
		for _, f := range []string{"rel.db", "bare.db"} {
			if _, err := os.Stat(filepath.Join("sub", f)); err != nil {
				t.Error(err)
			}
		}
	})

}

func TestRedactURI(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"a password in userinfo", "postgres://kg:hunter2@db:5432/keygate?sslmode=disable", "postgres://kg:xxxxx@db:5432/keygate?sslmode=disable"},
		{"a user without password is kept", "postgres://kg@db/keygate", "postgres://kg@db/keygate"},
		{"a password query parameter", "postgres://db/keygate?user=kg&password=hunter2", "postgres://db/keygate?user=kg&password=xxxxx"},
		{"a key=value connection string", "host=db user=kg password=hunter2 dbname=keygate", "host=db user=kg password=xxxxx dbname=keygate"},
		{"a quoted password in a connection string", `host=db password='hun ter\'2' dbname=keygate`, "host=db password=xxxxx dbname=keygate"},
		{"the client key's password", "postgres://kg:a@db/keygate?sslmode=verify-full&sslpassword=TopSecret", "postgres://kg:xxxxx@db/keygate?sslmode=verify-full&sslpassword=xxxxx"},
		{"an access token parameter", "postgres://db/keygate?user=kg&auth_token=abc", "postgres://db/keygate?user=kg&auth_token=xxxxx"},
		{"a name that only contains pass", "postgres://db/keygate?passage=1&user=kg", "postgres://db/keygate?passage=1&user=kg"},
		{"a name with an escape in it", "postgres://db/keygate?user=kg&pass%77ord=hunter2", "postgres://db/keygate?user=kg&pass%77ord=xxxxx"},
		{"an unparseable uri keeps only its scheme", "postgres://kg:hun%zzter2@db/keygate", "postgres://xxxxx"},
		{"a sqlite path is unchanged", "sqlite:/var/lib/caddy/keygate/keys.db", "sqlite:/var/lib/caddy/keygate/keys.db"},
		{"a connection string whose password holds ://", "host=db password=ab://cd dbname=keygate", "host=db password=xxxxx dbname=keygate"},
		{"a connection string with :// after its password", "host=db password=hunter2 application_name=http://crm", "host=db password=xxxxx application_name=http://crm"},
		{"a URI whose // was left out keeps only its scheme", "redis:hunter2@db:6379", "redis:xxxxx"},
		{"a postgres URI whose // was left out", "postgres:kg:hunter2@db/keygate", "postgres:xxxxx"},
		{"a password with an unencoded slash keeps only its scheme", "postgres://kg:5432/hunter2@db/keygate", "postgres://xxxxx"},
		{"a password with @ and an unencoded slash", "redis://kg:p@ss/hunter2@db:6379/0", "redis://xxxxx"},
		{"a password with an unencoded question mark", "postgres://kg:5432?hunter2@db/keygate", "postgres://xxxxx"},
		{"a password with an unencoded hash", "rediss://:6379#hunter2@db:6379", "rediss://xxxxx"},
		{"an @ in a query value is kept", "postgres://kg:a@db/keygate?application_name=crm@web", "postgres://kg:xxxxx@db/keygate?application_name=crm@web"},
		{"a relative path is unchanged", "keys.db", "keys.db"},
		{"a Windows path is unchanged", `C:\keygate\keys.db`, `C:\keygate\keys.db`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RedactURI(tc.in); got != tc.want {
				t.Errorf("RedactURI(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestDefaultSQLitePath(t *testing.T) {
	if got, want := DefaultSQLitePath("/var/lib/caddy"), filepath.FromSlash("/var/lib/caddy/keygate/keys.db"); got != want {
		t.Errorf("DefaultSQLitePath = %q, want %q", got, want)
	}
}

func TestSQLiteRefusesUnstorableValues(t *testing.T) {
	far := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		edit func(r *Record)
		want string
	}{
		{"an expiry past 2262", func(r *Record) { r.ExpiresAt = &far }, "expires at 9999"},
		{"a rate with an unnamed period", func(r *Record) { r.Rate = &Rate{N: 5, Per: 90 * time.Second} }, "rate"},
		{"a quota with an unknown period", func(r *Record) { r.Quota = &Quota{N: 5, Per: "w"} }, "quota"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestSQLite(t, filepath.Join(t.TempDir(), "keys.db"))
			rec := minimalRecord("key_bad", time.Now())
			tc.edit(rec)
			err := s.CreateKey(context.Background(), rec, Event{Action: "issued"})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "key_bad") {
				t.Errorf("CreateKey err = %v, want one naming key_bad and %q", err, tc.want)
			}
		})
	}
}

// BenchmarkKeyByDigest looks keys up in a store of 100k keys, as a gateway
// does on a cache miss.
func BenchmarkKeyByDigest(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	s := openTestSQLite(b, filepath.Join(b.TempDir(), "keys.db"))
	fillKeys(b, s, n)

	for _, bc := range []struct {
		name   string
		digest func(i int) Digest
		want   error
	}{
		{"hit", func(i int) Digest { return benchDigest(i % n) }, nil},
		{"miss", func(i int) Digest { return benchDigest(n + i) }, ErrNotFound},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var lat []time.Duration
			i := 0
			for b.Loop() {
				start := time.Now()
				_, err := s.KeyByDigest(ctx, bc.digest(i))
				lat = append(lat, time.Since(start))
				if (err == nil) != (bc.want == nil) {
					b.Fatalf("KeyByDigest: %v", err)
				}
				i++
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

func benchDigest(i int) Digest { return sha256.Sum256(fmt.Appendf(nil, "bench %d", i)) }

// fillKeys inserts n keys in one transaction, far faster than n CreateKey
// calls and exactly the rows CreateKey writes.
func fillKeys(tb testing.TB, s *SQLite, n int) {
	tb.Helper()
	created := time.Now().Add(-time.Hour)
	err := s.write(context.Background(), func(tx *sql.Tx) error {
		for i := range n {
			rec := fullRecord(fmt.Sprintf("key_%07d", i), created)
			rec.Digest = benchDigest(i)
			if err := s.insertKey(context.Background(), tx, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// A backup taken while another handle writes: a consistent, private,
// self-contained copy that opens as a store with every key, and never a
// file that was there.
func TestSQLiteBackup(t *testing.T) {
	ctx := context.Background()
	st, dir, path := openStoreFile(t)
	defer st.Close()
	writer := openTestSQLite(t, path)
	revoked := minimalRecord("key_revoked", time.Now())
	mustCreate(t, writer, revoked)
	if _, err := writer.UpdateKey(ctx, revoked.ID, &Event{Action: "revoked"}, func(r *Record) error {
		now := time.Now()
		r.RevokedAt = &now
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Keys are issued throughout the backup.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var issued atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := writer.CreateKey(ctx, minimalRecord(fmt.Sprintf("key_busy%04d", i), time.Now()), Event{Action: "issued"}); err != nil {
				t.Error(err)
				return
			}
			issued.Add(1)
		}
	})
	for issued.Load() < 20 {
		time.Sleep(time.Millisecond)
	}
	backup := filepath.Join(dir, "backup.db")
	info, err := st.(Backuper).Backup(ctx, backup)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if info.Path != backup || info.Keys < 21 || info.Keys > int(issued.Load())+1 {
		t.Errorf("backup info %+v, want at least 21 and at most %d keys", info, issued.Load()+1)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != info.Bytes {
		t.Errorf("the backup file: %v, %v; want mode 0600 and %d bytes", fi, err, info.Bytes)
	}
	if extra, _ := filepath.Glob(backup + "[-.]*"); len(extra) > 0 {
		t.Errorf("files beside the backup: %v", extra)
	}

	// It opens as a store: the keys it counted, the revocation kept.
	copied, err := OpenSQLite(ctx, backup)
	if err != nil {
		t.Fatal(err)
	}
	defer copied.Close()
	if n, err := copied.CountKeys(ctx, ListFilter{All: true}); err != nil || n != info.Keys {
		t.Errorf("the backup opened holds %d keys (%v), want %d", n, err, info.Keys)
	}
	if rec, err := copied.Key(ctx, revoked.ID); err != nil || !rec.Revoked() {
		t.Errorf("the revoked key in the backup: %+v, %v", rec, err)
	}

	// A backup cut short leaves nothing: no file at the path, no partial
	// copy beside it.
	cut, cancel := context.WithCancel(ctx)
	cancel()
	short := filepath.Join(dir, "short.db")
	if _, err := st.(Backuper).Backup(cut, short); err == nil {
		t.Error("a backup with a cancelled context succeeded")
	}
	if left, _ := filepath.Glob(short + "*"); len(left) > 0 {
		t.Errorf("a backup cut short left %v", left)
	}

	// No file, or one in a directory that does not exist: a clear error,
	// and nothing written anywhere.
	for path, want := range map[string]string{
		"":                                    "no file named",
		filepath.Join(dir, "missing", "b.db"): "the directory " + filepath.Join(dir, "missing") + " does not exist",
	} {
		if _, err := st.(Backuper).Backup(ctx, path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a backup to %q: %v, want an error saying %q", path, err, want)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*partial*")); len(left) > 0 {
		t.Errorf("refused backups left %v", left)
	}

	// A file already at the path is never overwritten.
	if _, err := st.(Backuper).Backup(ctx, backup); err == nil || !errors.Is(err, os.ErrExist) {
		t.Errorf("a backup onto an existing file: %v, want it refused", err)
	}
	if n, err := copied.CountKeys(ctx, ListFilter{All: true}); err != nil || n != info.Keys {
		t.Errorf("after a refused backup onto it, the file holds %d keys (%v)", n, err)
	}
}

// storeWithBackup makes a closed SQLite store file holding key_inthebackup
// and key_afterthebackup, and a backup of it taken between the two.
func storeWithBackup(t *testing.T) (dir, path, backup string) {
	t.Helper()
	st, dir, path := openStoreFile(t)
	mustCreate(t, st, minimalRecord("key_inthebackup", time.Now()))
	backup = filepath.Join(dir, "backup.db")
	if _, err := st.(Backuper).Backup(context.Background(), backup); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, st, minimalRecord("key_afterthebackup", time.Now()))
	st.Close()
	return dir, path, backup
}

// TestRestoreSQLite: a backup replaces the store file whole, private and
// owned as the store was (as root, for a store the caddy user runs on), the
// replaced file's write-ahead log and index go, and what is not a backup
// is refused before anything is touched.
func TestRestoreSQLite(t *testing.T) {
	ctx := context.Background()
	dir, path, backup := storeWithBackup(t)
	for _, f := range []string{path + "-wal", path + "-shm"} {
		os.WriteFile(f, []byte("left by a crash"), 0o600)
	}
	root := os.Getuid() == 0
	if root {
		if err := os.Chown(path, 12345, 12346); err != nil {
			t.Fatal(err)
		}
	}

	notBackup := filepath.Join(dir, "notes.txt")
	os.WriteFile(notBackup, []byte("not a database"), 0o600)
	for _, from := range []string{notBackup, filepath.Join(dir, "missing.db"), path} {
		if _, err := RestoreSQLite(ctx, path, from, nil); err == nil {
			t.Errorf("restore from %s: no error", from)
		}
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Error("a refused restore removed the store's write-ahead log")
	}
	// A prepare that fails leaves the store as it was, and nothing beside it.
	if _, err := RestoreSQLite(ctx, path, backup, func(ctx context.Context, st Store) error {
		mustCreate(t, st, minimalRecord("key_prepared", time.Now()))
		return errors.New("carrying over failed")
	}); err == nil || !strings.Contains(err.Error(), "carrying over failed") {
		t.Errorf("restore with a failing prepare: %v", err)
	}
	if extra, _ := filepath.Glob(path + ".*"); len(extra) > 0 {
		t.Errorf("files left beside the store by a failed restore: %v", extra)
	}
	kept := openTestSQLite(t, path)
	if _, err := kept.Key(ctx, "key_afterthebackup"); err != nil {
		t.Errorf("the store after a failed restore lacks its last key: %v", err)
	}
	kept.Close()
	for _, f := range []string{path + "-wal", path + "-shm"} {
		os.WriteFile(f, []byte("left by a crash"), 0o600)
	}

	info, err := RestoreSQLite(ctx, path, backup, func(ctx context.Context, st Store) error {
		mustCreate(t, st, minimalRecord("key_prepared", time.Now()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if info.Path != path || info.Keys != 1 {
		t.Errorf("restore info %+v, want %s with 1 key", info, path)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the restored store: %v, %v; want mode 0600", fi, err)
	}
	if uid, gid, ok := ownerOf(fi); root && ok && (uid != 12345 || gid != 12346) {
		t.Errorf("the restored store is owned by %d:%d, want the replaced store's 12345:12346", uid, gid)
	}
	if extra, _ := filepath.Glob(path + "[-.]*"); len(extra) > 0 {
		t.Errorf("files beside the restored store: %v", extra)
	}
	restored := openTestSQLite(t, path)
	if _, err := restored.Key(ctx, "key_inthebackup"); err != nil {
		t.Errorf("the backup's key: %v", err)
	}
	if _, err := restored.Key(ctx, "key_afterthebackup"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a key issued after the backup: %v, want ErrNotFound", err)
	}
	if _, err := restored.Key(ctx, "key_prepared"); err != nil {
		t.Errorf("what prepare wrote to the copy: %v", err)
	}
}

// TestKeepEventsNeverRollsTheLogBack: a restore keeps the replaced store's
// events the backup lacks. A backup of this store reads on under the seqs
// the events had, the next event after them; a backup of another store
// gets every replaced event after its own, numbered anew.
func TestKeepEventsNeverRollsTheLogBack(t *testing.T) {
	ctx := context.Background()
	dir, path, backup := storeWithBackup(t)
	replaced := openTestSQLite(t, path)
	was := mustEvents(t, replaced, EventFilter{})
	other := openTestSQLite(t, filepath.Join(dir, "other.db"))
	mustCreate(t, other, minimalRecord("key_elsewhere", time.Now()))
	otherBackup := filepath.Join(dir, "other-backup.db")
	if _, err := other.Backup(ctx, otherBackup); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		from     string
		want     []string // key ids, oldest first
		renumber bool
	}{
		{"a backup of this store", backup, []string{"key_inthebackup", "key_afterthebackup"}, false},
		{"a backup of another store", otherBackup, []string{"key_elsewhere", "key_inthebackup", "key_afterthebackup"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := os.ReadFile(c.from)
			if err != nil {
				t.Fatal(err)
			}
			copied := filepath.Join(t.TempDir(), "restored.db")
			if err := os.WriteFile(copied, b, 0o600); err != nil {
				t.Fatal(err)
			}
			restored := openTestSQLite(t, copied)
			kept := 1 // the event after the backup
			if c.renumber {
				kept = len(was) // every one
			}
			if n, err := KeepEvents(ctx, replaced, restored); err != nil || n != kept {
				t.Fatalf("KeepEvents: %d, %v; want %d", n, err, kept)
			}
			mustCreate(t, restored, minimalRecord("key_next", time.Now()))
			got := mustEvents(t, restored, EventFilter{})
			var ids []string
			for i, e := range got {
				ids = append(ids, e.KeyID)
				if i > 0 && e.Seq <= got[i-1].Seq {
					t.Errorf("event %d's seq %d after %d", i, e.Seq, got[i-1].Seq)
				}
			}
			if !slices.Equal(ids, append(c.want, "key_next")) {
				t.Errorf("events of %v, want %v then key_next", ids, c.want)
			}
			if !c.renumber && !slices.Equal(got[:len(was)], was) {
				t.Errorf("events %+v, want the replaced store's %+v as they were", got[:len(was)], was)
			}
		})
	}
}

// A new machine has no store directory until a gateway has run there: a
// restore onto it makes the directory, private, as opening a store does.
func TestRestoreSQLiteOntoANewMachine(t *testing.T) {
	_, _, backup := storeWithBackup(t)
	dir := filepath.Join(t.TempDir(), "data", "caddy", "keygate")
	path := filepath.Join(dir, "keys.db")
	info, err := RestoreSQLite(context.Background(), path, backup, nil)
	if err != nil || info.Keys != 1 {
		t.Fatalf("restore onto a new machine: %+v, %v", info, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the store's directory: %v, %v; want mode 0700", fi, err)
	}
	restored := openTestSQLite(t, path)
	defer restored.Close()
	if _, err := restored.Key(context.Background(), "key_inthebackup"); err != nil {
		t.Errorf("the backup's key: %v", err)
	}
}

// A restore refuses a store another process has open, naming the process,
// both before it starts and after the copy (a gateway started meanwhile),
// and leaves the store as it was.
func TestRestoreSQLiteRefusesAStoreInUse(t *testing.T) {
	ctx := context.Background()
	_, path, backup := storeWithBackup(t) // closed: POSIX locks are per process
	inUse := func(what string, pid int, err error) {
		t.Helper()
		if want := fmt.Sprintf("process %d has it open", pid); !errors.Is(err, ErrStoreOpen) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ErrStoreOpen saying %q", what, err, want)
		}
		if extra, _ := filepath.Glob(path + ".*"); len(extra) > 0 {
			t.Errorf("%s: files left beside the store: %v", what, extra)
		}
	}

	gateway, release := holdStore(t, path)
	inUse("CheckSQLiteClosed", gateway, CheckSQLiteClosed(path))
	_, err := RestoreSQLite(ctx, path, backup, nil)
	inUse("restore", gateway, err)
	release()
	if err := CheckSQLiteClosed(path); err != nil {
		t.Errorf("CheckSQLiteClosed once the other process is gone: %v", err)
	}

	_, err = RestoreSQLite(ctx, path, backup, func(ctx context.Context, _ Store) error {
		gateway, release = holdStore(t, path) // a gateway starting while the copy is made
		return nil
	})
	inUse("restore with the store opened during the copy", gateway, err)
	release()
	kept := openTestSQLite(t, path)
	if _, err := kept.Key(ctx, "key_afterthebackup"); err != nil {
		t.Errorf("the store after the refused restores lacks its last key: %v", err)
	}
}

// holdStore starts this test binary again as a process that opens the
// SQLite store at path, reads from it and keeps it open until release.
func holdStore(t *testing.T, path string) (pid int, release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHoldStore$")
	cmd.Env = append(os.Environ(), "KEYGATE_HOLD_STORE="+path)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			in.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("the process holding the store: %v", err)
			}
		})
	}
	t.Cleanup(release)
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "open\n" {
		t.Fatalf("the process holding the store: %q %v", line, err)
	}
	return cmd.Process.Pid, release
}

// TestHoldStore is holdStore's other process.
func TestHoldStore(t *testing.T) {
	path := os.Getenv("KEYGATE_HOLD_STORE")
	if path == "" {
		return // not run as holdStore's process
	}
	st, err := Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Key(context.Background(), "key_inthebackup"); err != nil {
		t.Fatal(err)
	}
	fmt.Println("open")
	io.Copy(io.Discard, os.Stdin)
}

// Both engines migrate to the same version, the one SchemaVersion names.
func TestBothEnginesMigrateToSchemaVersion(t *testing.T) {
	for _, d := range []*dialect{sqliteDialect, postgresDialect} {
		if got := d.migrations[len(d.migrations)-1].version; got != SchemaVersion() {
			t.Errorf("%s migrates to version %d, SchemaVersion is %d", d.name, got, SchemaVersion())
		}
	}
}

// Another application's SQLite file named as the store (a mistyped
// --store) is refused and left as it was: not switched to WAL mode, not
// given keygate's tables.
func TestSQLiteRefusesAnotherApplicationsDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	execSQLite(t, path, "CREATE TABLE orders (id INTEGER PRIMARY KEY); CREATE TABLE customers (id INTEGER PRIMARY KEY)")

	_, err := Open(context.Background(), "sqlite:"+path)
	if !errors.Is(err, ErrNotAStore) || !strings.Contains(err.Error(), "customers, orders") || Unavailable(err) {
		t.Fatalf("opening another application's database: %v, want a refusal naming its tables", err)
	}
	// Rails and golang-migrate name their migrations table as keygate does.
	for _, schema := range []string{
		"CREATE TABLE schema_migrations (version varchar NOT NULL PRIMARY KEY); CREATE TABLE ar_internal_metadata (key varchar)",
		"CREATE TABLE schema_migrations (version uint64, dirty bool); CREATE TABLE keys (id text); CREATE TABLE events (id text)",
	} {
		other := filepath.Join(t.TempDir(), "app.db")
		execSQLite(t, other, schema)
		if _, err := Open(context.Background(), "sqlite:"+other); !errors.Is(err, ErrNotAStore) {
			t.Errorf("a database of %q: %v, want it refused as not a keygate store", schema, err)
		}
	}
	other, _ := sql.Open("sqlite", "file:"+path)
	defer other.Close()
	var mode string
	var tables int
	other.QueryRow("PRAGMA journal_mode").Scan(&mode)
	other.QueryRow("SELECT count(*) FROM sqlite_master WHERE type = 'table'").Scan(&tables)
	if mode != "delete" || tables != 2 {
		t.Errorf("the refused database is in journal mode %q with %d tables, want delete and its 2", mode, tables)
	}
}

// A store file found empty was truncated or replaced (a full disk, a crash
// after a copy that was never synced): opened as a new store, it would have
// answered every key invalid_key while `caddy keys list` printed an empty
// table. It is refused, by Open and by Check, and left as it is.
func TestAnEmptyStoreFileIsRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(ctx, "sqlite:"+path); !errors.Is(err, ErrEmptyFile) || Unavailable(err) || !strings.Contains(err.Error(), path) {
		if err == nil {
			s.Close()
		}
		t.Errorf("opening an empty file: %v, want ErrEmptyFile naming the file", err)
	}
	if _, err := Check(ctx, "sqlite:"+path); !errors.Is(err, ErrEmptyFile) {
		t.Errorf("checking an empty file: %v, want ErrEmptyFile", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("the refused file: %v, %v; want it left empty", fi, err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("opening the empty file left %s%s: %v", path, suffix, err)
		}
	}
}

// A new store is made whole before it is at its path: processes that open
// it at once while it is being made (a gateway and `caddy keys` on a new
// machine) never find it empty, and all of them end on one store.
func TestANewStoreIsNeverEmptyAtItsPath(t *testing.T) {
	ctx := context.Background()
	for round := range 5 {
		path := filepath.Join(t.TempDir(), "keys.db")
		errs := make(chan error, 6)
		stores := make(chan *SQLite, 6)
		for range 6 {
			go func() {
				s, err := OpenSQLite(ctx, path)
				errs <- err
				stores <- s
			}()
		}
		for range 6 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: one of six opening a new store at once: %v", round, err)
			}
		}
		var all []*SQLite
		for range 6 {
			s := <-stores
			defer s.Close()
			all = append(all, s)
		}
		mustCreate(t, all[0], minimalRecord("key_one", time.Now()))
		for i, s := range all {
			if n, err := s.CountKeys(ctx, ListFilter{All: true}); err != nil || n != 1 {
				t.Errorf("round %d: opener %d sees %d keys (%v), want the one the first made", round, i, n, err)
			}
		}
		if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) > 3 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("round %d: files beside the store: %v, want keys.db and its -wal and -shm", round, names)
		}
	}
}

// FuzzRedactURI proves a store URI's password, in any of the places pgx
// reads one, shows in neither RedactURI's rendering of it nor the error a
// URI gives, whatever the rest of the URI holds: both are the same with
// another password.
func FuzzRedactURI(f *testing.F) {
	for _, c := range []struct {
		form       uint8
		pass, rest string
	}{
		{0, "hunter22", "db:5432/keygate?sslmode=disable"},
		{0, "hunter22", "db/keygate?connect_timeout=abc"},
		{0, "hunter22", "db/keygate#frag"},
		{0, "hunter22", "db:x/keygate"},
		{1, "hunter22", "user=kg&sslmode=bogus"},
		{1, "hunter22", "pool_max_conns=-1"},
		{2, "hunter22", "dbname=keygate sslmode=disable"},
		{2, "hunter22", "dbname='keygate"},
		{2, "hunter22", "=x"},
		{3, "hunter22", ""},
		{0, "000000", "# 00000"}, // the rest escaped ("%2000000") holds the password, but not from it
		{2, "000000", "://"},     // no URI: the text before "://" was quoted as its scheme
		{4, "hunter22", "db/keygate"},
		{4, "hunter22", "db:5432/keygate?sslmode=disable"},
	} {
		f.Add(c.form, c.pass, c.rest)
	}
	f.Fuzz(func(t *testing.T, form uint8, pass, rest string) {
		if len(pass) < 6 || strings.ContainsFunc(pass, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
		}) {
			return // not a password only where a password goes
		}
		uri := func(pass string) string {
			switch form % 5 {
			case 0:
				return "postgres://kg:" + pass + "@" + rest
			case 4: // its "//" left out
				return "postgres:kg:" + pass + "@" + rest
			case 1:
				return "postgres://db/keygate?password=" + pass + "&" + rest
			case 2:
				return "host=db password=" + pass + " " + rest
			}
			return "postgresql://db/keygate?" + rest + "&sslpassword=" + pass
		}
		// What is said of the URI is the same whatever its password: none
		// of it shows.
		other := strings.Repeat("q", len(pass))
		if pass == other {
			other = strings.Repeat("z", len(pass))
		}
		a, b := uri(pass), uri(other)
		if ra, rb := RedactURI(a), RedactURI(b); ra != rb {
			t.Fatalf("RedactURI(%q) = %q, with another password %q", a, ra, rb)
		}
		_, ea := ParseURI(a)
		_, eb := ParseURI(b)
		if fmt.Sprint(ea) != fmt.Sprint(eb) {
			t.Fatalf("ParseURI(%q): %v; with another password: %v", a, ea, eb)
		}
		if form%5 == 4 {
			return // refused by ParseURI, which every open and check goes through first
		}
		_, _, ea = postgresConfig(a)
		_, _, eb = postgresConfig(b)
		if fmt.Sprint(ea) != fmt.Sprint(eb) {
			t.Fatalf("postgresConfig(%q): %v; with another password: %v", a, ea, eb)
		}
	})
}

// A key used from a botnet brings up to 1,000 new client IPs every flush,
// hour after hour, once its hour holds MaxHourIPs: each of them should be
// turned away at the cost of a lookup, as an address the hour holds is
// added to, not of counting the hour's rows again (which made such a flush
// ~10 times dearer than one of known addresses, ~70 ms against ~8, the
// SQLite write lock held all along). The two sub-benchmarks compare them.
func BenchmarkSQLiteFlushIntoAFullHour(b *testing.B) {
	s := openTestSQLite(b, filepath.Join(b.TempDir(), "keys.db"))
	ctx := context.Background()
	h := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	mustCreate(b, s, minimalRecord("key_botnet", h))
	flush := func(from int) {
		if err := s.AddUsage(ctx, botnetBatch(h, from)); err != nil {
			b.Fatal(err)
		}
	}
	flush(0) // the hour is full
	b.Run("known-ips", func(b *testing.B) {
		for b.Loop() {
			flush(0)
		}
	})
	b.Run("new-ips", func(b *testing.B) {
		round := 0
		for b.Loop() {
			round++
			flush(round * MaxHourIPs)
		}
	})
}

// botnetBatch is one flush of MaxHourIPs client IPs of key_botnet in hour
// h, numbered from from.
func botnetBatch(h time.Time, from int) []UsageDelta {
	ips := make(map[string]int64, MaxHourIPs)
	for i := from; i < from+MaxHourIPs; i++ {
		ips[fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&0xff, i&0xff)] = 1
	}
	return []UsageDelta{{KeyID: "key_botnet", Hour: h, IPs: ips}}
}

// A file system without hard links (vfat, some network mounts) still gets a
// new store: it is renamed into place instead, whole and private.
func TestANewStoreOnAFileSystemWithoutLinks(t *testing.T) {
	defer func(l func(string, string) error) { linkFile = l }(linkFile)
	linkFile = func(string, string) error { return &os.LinkError{Op: "link", Err: syscall.EPERM} }
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.db")
	s, err := Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatalf("a new store where links are refused: %v", err)
	}
	s.Close()
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the new store: %v, %v; want a private file that is not empty", fi, err)
	}
	if s, err = Open(ctx, "sqlite:"+path); err != nil {
		t.Fatalf("opening it again: %v", err)
	}
	s.Close()
	if left, _ := filepath.Glob(filepath.Join(dir, "keys.db.new-*")); len(left) > 0 {
		t.Errorf("the store's making left %v behind", left)
	}
}
