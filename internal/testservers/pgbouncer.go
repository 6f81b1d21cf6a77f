package testservers

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PgBouncer is a throwaway PgBouncer in front of a test's Postgres, as
// managed PostgreSQL services put one in front of theirs.
type PgBouncer struct {
	// URI connects to the database "keygate" through the pooler.
	URI string
}

// StartPgBouncer starts PgBouncer on a free loopback port in front of pg,
// pooling in mode ("transaction" or "session"), every database passed
// through with trust authentication; settings are more lines of its
// [pgbouncer] section ("max_client_conn = 2"). Like PostgreSQL, PgBouncer refuses to
// run as root, so as root it runs as the "postgres" user. It is stopped when
// the test ends.
func StartPgBouncer(t testing.TB, pg *Postgres, mode string, settings ...string) *PgBouncer {
	t.Helper()
	bin := "/usr/sbin/pgbouncer" // Debian's, outside a user's PATH
	if _, err := os.Stat(bin); err != nil {
		bin = lookBinary(t, "pgbouncer", "apt-get install pgbouncer")
	}
	dir, err := os.MkdirTemp(filepath.Dir(pg.dir), "keygate-pgbouncer-")
	if err != nil {
		t.Fatalf("testservers: pgbouncer directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := FreePort(t)
	conf := filepath.Join(dir, "pgbouncer.ini")
	users := filepath.Join(dir, "users.txt")
	write := func(path, text string) {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatalf("testservers: %v", err)
		}
	}
	write(users, `"postgres" ""`+"\n")
	write(conf, fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
max_client_conn = 500
default_pool_size = 20
logfile = %s
%s
`, pg.port, port, users, mode, filepath.Join(dir, "pgbouncer.log"), strings.Join(settings, "\n")))
	if os.Geteuid() == 0 {
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatalf("testservers: pgbouncer directory: %v", err)
		}
	}
	cmd := exec.Command(bin, conf)
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skipOrFail(t, "running as root needs the postgres user; install it with: apt-get install postgresql")
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatalf("testservers: %v", err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("testservers: starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			for _, name := range []string{"stdout.log", "pgbouncer.log"} {
				log, _ := os.ReadFile(filepath.Join(dir, name))
				t.Logf("testservers: pgbouncer's %s:\n%s", name, log)
			}
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitUntil(10*time.Second, func() error {
		select {
		case <-exited:
			return nil
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
		t.Fatalf("testservers: pgbouncer on %s: %v\n%s", addr, err, log)
	}
	select {
	case <-exited:
		log, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
		t.Fatalf("testservers: pgbouncer exited at start:\n%s", log)
	default:
	}
	return &PgBouncer{URI: fmt.Sprintf("postgres://postgres@%s/keygate?sslmode=disable", addr)}
}
