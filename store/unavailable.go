package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keygate/caddy-keygate/internal/tlsfault"
)

// Unavailable reports whether err means the store could not be reached or
// did not answer, rather than refusing what was asked of it: a connection
// refused, cut or timed out, a PostgreSQL server shutting down, not yet
// accepting connections, or short of disk or memory, an SQLite file locked
// by another process past busy_timeout, on a full disk, or moved away while
// open. Those are worth trying again in a moment; the admin API answers
// them 503 store_unavailable, as the gateway answers a key it cannot look
// up.
func Unavailable(err error) bool {
	if err == nil || misconfigured(err) {
		return false
	}
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		// The server answered: with a connection exception (class 08),
		// shutting down or starting (57P01–57P03: admin_shutdown,
		// crash_shutdown, cannot_connect_now), taking no writes
		// (25006: a standby not promoted yet, an old primary demoted,
		// which a name that follows the primary may still reach for a
		// moment in a failover), or short of a resource (class 53: its
		// disk full, 53100, out of memory, every connection slot taken),
		// as an SQLite store on a full disk is; or with a refusal that
		// trying again will not change (a wrong password, 28P01; no such
		// database, 3D000), even while connecting.
		// A statement the server cancelled at a timeout set for keygate's
		// role or database, or the server (statement_timeout, 57014, which
		// pg_cancel_backend says too; lock_timeout, 55P03, while another
		// session held a lock), or a session it ended at one
		// (idle_in_transaction_session_timeout, 25P03;
		// idle_session_timeout, 57P05), and a transaction it chose to end
		// against another (a deadlock, 40P01; a serialization failure,
		// 40001, under a default_transaction_isolation a role set) are
		// worth trying again as well: the change was not made, and a try
		// when the lock is let go goes through. A timeout every statement
		// runs past says so in the message (CancelledBy).
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" ||
			pe.Code == readOnlySQLTransaction || strings.HasPrefix(pe.Code, "53") ||
			CancelledBy(err) != "" || pe.Code == "40P01" || pe.Code == "40001"
	case errors.Is(err, ErrFileGone), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		networkError(err), errors.As(err, &ce), isBusy(err), isFull(err):
		return true
	}
	return false
}

// CancelledBy names the server setting whose timeout cancelled the
// statement err answers, or ended its session: statement_timeout (or an
// administrator cancelled it), lock_timeout,
// idle_in_transaction_session_timeout or idle_session_timeout; "" if none
// did. A DBA may set them for keygate's
// role or database (ALTER ROLE … SET statement_timeout), where a value
// keygate's statements always run past makes every try fail: what answers
// such an error names the setting.
func CancelledBy(err error) string {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return ""
	}
	switch pe.Code {
	case "57014":
		// query_canceled: an administrator's pg_cancel_backend says "due
		// to user request", and so does a statement_timeout that fires as
		// the statement ends (seen with 1ms), so the words cannot tell
		// them apart.
		return "statement_timeout"
	case "55P03": // lock_not_available: NOWAIT, which keygate never asks, or lock_timeout
		return "lock_timeout"
	case "25P03":
		return "idle_in_transaction_session_timeout"
	case "57P05":
		return "idle_session_timeout"
	}
	return ""
}

// misconfigured reports a connection refused for a reason no retry mends,
// though it comes as a connection error: the server's certificate not
// trusted or not for the host named (sslmode=verify-full, sslrootcert), a
// server that does not speak TLS to a URI that requires it, or a startup
// parameter a pooler in front of the server refuses (PgBouncer's 08P01
// "unsupported startup parameter").
func misconfigured(err error) bool {
	var (
		ce *pgconn.ConnectError
		pe *pgconn.PgError
	)
	switch {
	case tlsfault.Untrusted(err):
		return true
	case errors.As(err, &ce):
		// pgconn says this one only in words. PgBouncer answers 08P01 to
		// nearly every error of its own, passing ones included (its
		// max_client_conn reached, a server login failing while
		// PostgreSQL restarts): only its refusal of a parameter is for good.
		return strings.Contains(err.Error(), "server refused TLS connection") ||
			errors.As(err, &pe) && pe.Code == "08P01" && strings.HasPrefix(pe.Message, "unsupported startup parameter")
	}
	return false
}

// networkError reports whether err comes from the network, or the system
// ran short for a moment (a dial, read or write that failed or timed out,
// no file descriptors left): worth trying again. A system error that says
// the path is wrong (no such directory, not a directory, a directory,
// permission denied, a read-only file system) is the configuration's
// fault, an SQLite path no retry will mend.
func networkError(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) {
		return false
	}
	if errno, ok := ne.(syscall.Errno); ok {
		switch errno {
		case syscall.ENOENT, syscall.ENOTDIR, syscall.EISDIR, syscall.EACCES, syscall.EPERM, syscall.EROFS:
			return false
		}
	}
	return true
}
