package store

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Unavailable tells a store that did not answer from one that refused what
// was asked: the admin API and the console answer the first 503 and the
// second as what it is.
func TestUnavailableTellsAnOutageFromARefusal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A port nothing listens on: refused at once.
	_, refused := OpenPostgres(ctx, "postgres://kg@127.0.0.1:1/kg?connect_timeout=2")
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},
		{"a connection refused", refused, true},
		{"a deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), true},
		{"the file moved away", fmt.Errorf("write: %w", ErrFileGone), true},
		{"a server shutting down", &pgconn.PgError{Code: "57P01"}, true},
		{"a connection exception", &pgconn.PgError{Code: "08006"}, true},
		{"a standby refusing a write", &pgconn.PgError{Code: "25006"}, true},
		{"a server whose disk is full", &pgconn.PgError{Code: "53100"}, true},
		{"a server out of memory", &pgconn.PgError{Code: "53200"}, true},
		// Cancelled at a timeout a DBA set, or ended against another
		// transaction: the change was not made, and a try later may be.
		{"a statement past statement_timeout", &pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"}, true},
		{"a statement an administrator cancelled", &pgconn.PgError{Code: "57014", Message: "canceling statement due to user request"}, true},
		{"a lock wait past lock_timeout", &pgconn.PgError{Code: "55P03", Message: "canceling statement due to lock timeout"}, true},
		{"a session idle in a transaction past its timeout", &pgconn.PgError{Code: "25P03"}, true},
		{"a session idle past its timeout", &pgconn.PgError{Code: "57P05"}, true},
		{"a deadlock", &pgconn.PgError{Code: "40P01"}, true},
		{"a serialization failure", &pgconn.PgError{Code: "40001"}, true},
		{"no such key", fmt.Errorf("show: %w", ErrNotFound), false},
		{"a unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"an ordinary error", errors.New("something else"), false},
		// A store path that cannot be made is the configuration's fault.
		{"a missing directory", &fs.PathError{Op: "mkdir", Path: "/proc/nope", Err: syscall.ENOENT}, false},
		{"a read-only file system", fmt.Errorf("open store: %w", &fs.PathError{Op: "open", Path: "/usr/keys.db", Err: syscall.EROFS}), false},
		{"a network timeout", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{"no file descriptors left, for a moment", &fs.PathError{Op: "open", Path: "/var/lib/keys.db", Err: syscall.EMFILE}, true},
		{"permission denied", &fs.PathError{Op: "open", Path: "/var/lib/keys.db", Err: syscall.EACCES}, false},
		{"a reset connection", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		// Certificates no retry mends.
		{"an unknown authority", &net.OpError{Op: "remote error", Err: fmt.Errorf("tls: %w", x509.UnknownAuthorityError{})}, false},
		{"a certificate for another host", fmt.Errorf("tls: %w", x509.HostnameError{Host: "db"}), false},
		// PgBouncer's 08P01 for its own passing errors is an outage.
		{"a pooler full", &pgconn.PgError{Code: "08P01", Message: "no more connections allowed (max_client_conn)"}, true},
	} {
		if got := Unavailable(c.err); got != c.want {
			t.Errorf("%s (%v): Unavailable = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// An SQLite file another process holds a write lock on past busy_timeout
// is unavailable, not broken.
func TestUnavailableSQLiteLockedByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	s := openTestSQLite(t, path)
	// Another writer, in a transaction it keeps open: SQLite's locks are
	// the same between two connections of one process as between two
	// processes.
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(context.Background(), "ROLLBACK")
	// The write waits out busy_timeout (5 s), then gives up.
	err = s.CreateKey(context.Background(), minimalRecord("key_locked", time.Now()), Event{Action: "issued", Actor: "test"})
	if err == nil || !Unavailable(err) {
		t.Errorf("a write while another process holds the lock: %v, want an error Unavailable reports", err)
	}
}

// A full disk is an outage, not a refusal: the admin API answers 503 with
// Retry-After, and the write is tried again once there is room. SQLite
// answers SQLITE_FULL past max_page_count as it does on a full disk.
func TestUnavailableSQLiteFull(t *testing.T) {
	s := openTestSQLite(t, filepath.Join(t.TempDir(), "keys.db"))
	ctx := context.Background()
	s.db.SetMaxOpenConns(1) // the pragma is the connection's
	var pages int
	if err := s.db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages+1)); err != nil {
		t.Fatal(err)
	}
	var err error
	for i := 0; err == nil && i < 1000; i++ {
		err = s.CreateKey(ctx, minimalRecord(fmt.Sprint("key_full", i), time.Now()), Event{Action: "issued", Reason: string(make([]byte, 2000))})
	}
	if err == nil || !Unavailable(err) || !isFull(err) {
		t.Errorf("a write to a full database: %v; Unavailable = %v, want true", err, Unavailable(err))
	}
}
