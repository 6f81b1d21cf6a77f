package testservers

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Postgres is a throwaway PostgreSQL server owned by one test.
type Postgres struct {
	// URI connects to the database "keygate" as the superuser.
	URI string

	t       testing.TB
	bin     string
	dir     string
	port    int
	asOwner []string // runuser prefix when running as root

	mu      sync.Mutex
	running bool
	paused  []int // the processes Pause stopped
}

// StartPostgres initialises a cluster in a temporary directory and starts
// it on a free loopback port (no fsync: a test database), with a database
// "keygate". PostgreSQL refuses to run as root, so as root the server runs
// as the "postgres" user the Debian package creates. The server is stopped
// when the test ends.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	p := &Postgres{t: t, bin: postgresBin(t), port: FreePort(t)}
	// As root the server runs as another user, who must be able to reach
	// the directory: /tmp is open to all, whereas $TMPDIR may sit under a
	// private home.
	parent := ""
	if os.Geteuid() == 0 {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "keygate-pg-")
	if err != nil {
		t.Fatalf("testservers: postgres data directory: %v", err)
	}
	p.dir = dir
	t.Cleanup(p.Close)
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skipOrFail(t, "running as root needs the postgres user; install it with: apt-get install postgresql")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatalf("testservers: postgres data directory: %v", err)
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("testservers: postgres data directory: %v", err)
		}
		p.asOwner = []string{"runuser", "-u", "postgres", "--"}
	}
	p.run("initdb", "-D", p.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	p.URI = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/keygate?sslmode=disable", p.port)
	p.Start()
	p.run("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres", "keygate")
	return p
}

// CreateDatabase creates another database on the server and returns its
// URI, so tests can each have an empty one.
func (p *Postgres) CreateDatabase(name string) string {
	p.t.Helper()
	p.run("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres", name)
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, name)
}

// RequirePassword gives the superuser password and makes the server ask
// for it on every TCP connection (scram-sha-256), as a real server does, so
// a wrong password is refused rather than let in by trust; it returns URI
// with the password in it. Afterwards CreateDatabase and Load, which connect
// without one, no longer work.
func (p *Postgres) RequirePassword(password string) string {
	p.t.Helper()
	port := strconv.Itoa(p.port)
	p.run("psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "keygate", "-v", "ON_ERROR_STOP=1", "-q",
		"-c", "ALTER USER postgres PASSWORD '"+strings.ReplaceAll(password, "'", "''")+"'")
	hba := "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(p.data(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		p.t.Fatalf("testservers: %v", err)
	}
	p.run("pg_ctl", "-D", p.data(), "reload")
	if err := waitUntil(10*time.Second, func() error {
		if p.command("psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "keygate", "-w", "-q", "-c", "SELECT 1").Run() == nil {
			return errors.New("a connection without the password is still let in")
		}
		return nil
	}); err != nil {
		p.t.Fatalf("testservers: postgres on port %d: %v", p.port, err)
	}
	return strings.Replace(p.URI, "postgres@", "postgres:"+url.PathEscape(password)+"@", 1)
}

// Load runs an SQL file (a plain pg_dump, say) in the database "keygate"
// with psql, stopping at its first error. The file is read here and given
// on psql's standard input, since the server's user may not reach it.
func (p *Postgres) Load(file string) {
	p.t.Helper()
	f, err := os.Open(file)
	if err != nil {
		p.t.Fatalf("testservers: %v", err)
	}
	defer f.Close()
	cmd := p.command("psql", "-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres", "-d", "keygate",
		"-v", "ON_ERROR_STOP=1", "-q", "-f", "-")
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("testservers: psql -f %s: %v\n%s", file, err, out)
	}
}

// Start starts the server (again, after Stop) on the same port and data.
func (p *Postgres) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return
	}
	// max_connections above the default 100: a PgBouncer in front keeps
	// up to its pool size of idle server connections to each test's
	// database for minutes after the test, and one test binary makes a
	// database per test.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
		p.port, p.dir)
	p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "postgres.log"), "-o", opts, "-w", "-t", "30", "start")
	p.running = true
	if err := waitUntil(10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		p.t.Fatalf("testservers: postgres on port %d: %v", p.port, err)
	}
}

// Stop stops the server, as an outage: every client connection drops and
// new ones are refused until Start. Everything committed is kept. (An
// immediate stop would lose the last commits, since the server runs with
// synchronous_commit=off, and a test restarting the server expects them.)
func (p *Postgres) Stop() { p.stop("fast") }

// Close stops the server at once and removes its files.
func (p *Postgres) Close() {
	p.stop("immediate")
	os.RemoveAll(p.dir)
}

func (p *Postgres) stop(mode string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return
	}
	p.runQuiet("pg_ctl", "-D", p.data(), "-m", mode, "-w", "stop")
	p.running = false
}

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

func (p *Postgres) run(name string, args ...string) {
	p.t.Helper()
	if out, err := p.command(name, args...).CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
		p.t.Fatalf("testservers: %s: %v\n%s\n%s", name, err, out, log)
	}
}

func (p *Postgres) runQuiet(name string, args ...string) {
	_ = p.command(name, args...).Run()
}

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, p.asOwner...), filepath.Join(p.bin, name)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = p.dir
	return cmd
}

// postgresBin finds the directory of initdb, pg_ctl and createdb: the newest
// of Debian's /usr/lib/postgresql/<version>/bin, else PATH.
func postgresBin(t testing.TB) string {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	// By version number, not text: 9.6 is older than 15.
	version := func(path string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(path))), 64)
		return v
	}
	slices.SortFunc(matches, func(a, b string) int { return cmp.Compare(version(a), version(b)) })
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1])
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(path), "createdb")); err == nil {
			return filepath.Dir(path)
		}
	}
	skipOrFail(t, "initdb not found in PATH or /usr/lib/postgresql/*/bin; install it with: apt-get install postgresql")
	return ""
}

// Pause stops every process of the server with SIGSTOP, as a server that
// accepts connections (the kernel completes them) and never answers: a
// network partition, a host frozen, a server stuck. Resume ends it. The
// server is resumed when the test ends, so it can stop.
func (p *Postgres) Pause() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(p.data(), "postmaster.pid"))
	if err != nil {
		p.t.Fatalf("testservers: postgres pid: %v", err)
	}
	postmaster, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		p.t.Fatalf("testservers: postgres pid: %v", err)
	}
	// The postmaster first, so it forks no backend the loop would miss.
	p.paused = append([]int{postmaster}, childrenOf(postmaster)...)
	for _, pid := range p.paused {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	p.t.Cleanup(p.Resume)
}

// Resume undoes Pause.
func (p *Postgres) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pid := range p.paused {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	p.paused = nil
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		var state string
		var ppid int
		if n, _ := fmt.Sscan(string(stat[i+1:]), &state, &ppid); n == 2 && ppid == pid {
			kids = append(kids, child)
		}
	}
	return kids
}

// StartStandby makes a streaming standby of p, as a managed service's
// high-availability replica: a copy taken with pg_basebackup (which writes
// standby.signal and the primary's address) in a directory of its own,
// started on another free loopback port. It answers reads and refuses
// writes (SQLSTATE 25006, read_only_sql_transaction) until Promote. It is
// stopped when the test ends. The copy asks for an immediate checkpoint:
// a spread one made pg_basebackup wait over a minute.
func (p *Postgres) StartStandby() *Postgres {
	p.t.Helper()
	s := &Postgres{t: p.t, bin: p.bin, port: FreePort(p.t), asOwner: p.asOwner}
	parent := ""
	if len(p.asOwner) > 0 {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "keygate-pg-")
	if err != nil {
		p.t.Fatalf("testservers: standby data directory: %v", err)
	}
	s.dir = dir
	p.t.Cleanup(s.Close)
	if len(p.asOwner) > 0 {
		// The primary's directory is the postgres user's already.
		fi, err := os.Stat(p.dir)
		if err != nil {
			p.t.Fatalf("testservers: standby data directory: %v", err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if err := os.Chmod(dir, 0o755); err != nil {
			p.t.Fatalf("testservers: standby data directory: %v", err)
		}
		if err := os.Chown(dir, int(st.Uid), int(st.Gid)); err != nil {
			p.t.Fatalf("testservers: standby data directory: %v", err)
		}
	}
	s.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres", "-D", s.data(),
		"-X", "stream", "-R", "--no-sync", "--checkpoint=fast")
	s.URI = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/keygate?sslmode=disable", s.port)
	s.Start()
	return s
}

// Promote ends a standby's recovery: it becomes a primary that takes
// writes, as a failover does.
func (p *Postgres) Promote() {
	p.t.Helper()
	p.run("pg_ctl", "-D", p.data(), "-w", "-t", "30", "promote")
}

// Addr is the server's host:port.
func (p *Postgres) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }
