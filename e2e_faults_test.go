package keygate_test

import (
	"bytes"
	"cmp"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/verifier"
)

// Faults an operator meets in production, with the real binary: a busy key
// behind an address another client keeps failing from, a disk that fills up
// before a graceful stop, the SQLite file deleted under a running gateway.

// TestBusyKeyIsNeverLockedOutByItsNeighbour: one address (a shared NAT) has
// a valid key in constant use and another client sending bad keys, enough to
// keep the address past failed_auth_limit. The valid key's cache entry
// expires at every cache_ttl; it must be refilled, not refused, every time.
// (Before, each expiry refused it with auth_rate_limited for 2-4 s, until
// the address happened to have a token left.)
func TestBusyKeyIsNeverLockedOutByItsNeighbour(t *testing.T) {
	const (
		ttl        = 2 * time.Second
		boundaries = 6
	)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		failed_auth_limit 20/m
		cache_ttl 2s
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)})
	k := g.issue("--name", "busy", "--scope", "mail.send")
	time.Sleep(500 * time.Millisecond) // the change-log poll has seen the issue
	refills := g.metric("keygate_store_queries_total")

	var stop atomic.Bool
	var valid, refused, bad, badLimited atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() { // the neighbour: a broken integration retrying
		for !stop.Load() {
			r := g.call("POST", "/v3/mail/send", "kg_live_broken-integration", nil)
			bad.Add(1)
			if r.code() == "auth_rate_limited" {
				badLimited.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	wg.Go(func() { // the busy key
		for !stop.Load() {
			r := g.call("POST", "/v3/mail/send", k.Key, nil)
			valid.Add(1)
			if r.Status != 202 {
				refused.Add(1)
				t.Errorf("valid request %d refused: %d %s", valid.Load(), r.Status, r.Body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	time.Sleep(boundaries*ttl + ttl/2)
	stop.Store(true)
	wg.Wait()

	t.Logf("%d of %d valid requests refused over %d cache_ttl boundaries; %d of %d bad ones auth_rate_limited",
		refused.Load(), valid.Load(), boundaries, badLimited.Load(), bad.Load())
	if badLimited.Load() < bad.Load()*3/4 {
		t.Errorf("only %d of %d bad requests were auth_rate_limited: the address was not kept past its limit", badLimited.Load(), bad.Load())
	}
	if n := g.metric("keygate_store_queries_total") - refills; n < boundaries-1 {
		t.Errorf("%v store queries: the busy key's entry was not refilled at each boundary", n)
	}
}

// tmpfs mounts a small tmpfs at a new directory for the test, so a test can
// fill a disk. It needs root; where it cannot mount, it skips, except in CI
// (CI=true), where skipping would hide that the fault was never tested.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	return mountTmpfs(t, filepath.Join(t.TempDir(), "tmpfs"), "size="+size+",mode=0700")
}

// mountTmpfs mounts a tmpfs with options at dir, which it creates, as
// tmpfs does.
func mountTmpfs(t *testing.T, dir, options string) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", options, "tmpfs", dir).CombinedOutput(); err != nil {
		msg := "mounting a tmpfs to fill a disk needs root (and CAP_SYS_ADMIN in a container): " + strings.TrimSpace(string(out))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	// Registered before any gateway starts, so it runs after they are
	// stopped.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the disk is full, and returns its name.
func fill(t *testing.T, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return name
		}
	}
}

func (g *gateway) usage(id string) usageJSON {
	g.t.Helper()
	var u usageJSON
	if err := json.Unmarshal([]byte(g.keys("usage", id, "--json")), &u); err != nil {
		g.t.Fatal(err)
	}
	return u
}

// send makes n allowed requests with key.
func (g *gateway) send(key string, n int) {
	g.t.Helper()
	for i := range n {
		if r := g.call("POST", "/v3/mail/send", key, nil); r.Status != 202 {
			g.t.Fatalf("request %d of %d: %d %s\ngateway log:\n%s", i+1, n, r.Status, r.Body, g.logs())
		}
	}
}

// waitLog waits for a log line containing want.
func (g *gateway) waitLog(want string) {
	g.t.Helper()
	if eventually(g.t, 10*time.Second, func() bool { return strings.Contains(g.logs(), want) }) < 0 {
		g.t.Fatalf("no log line with %q:\n%s", want, g.logs())
	}
}

// TestDiskFullAtGracefulStop: the disk holding the SQLite store fills up,
// flushes fail, and then caddy is stopped gracefully. Before, the counts
// since the disk filled were lost without a word. Now the final flush keeps
// them in Caddy's data directory and the next start adds them; when that
// directory is on the full disk too, the stop says at ERROR how many
// requests' counts are lost.
func TestDiskFullAtGracefulStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		// dataOnDisk puts Caddy's data directory on the full disk too,
		// as the default store path does.
		dataOnDisk bool
	}{
		{"the counts are kept elsewhere and added at the next start", false},
		{"the counts cannot be kept and the loss is logged with its size", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := tmpfs(t, "4m")
			up := newUpstream(t)
			gc := gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: "sqlite:" + filepath.Join(disk, "keys.db")}
			if tc.dataOnDisk {
				gc.env = []string{"XDG_DATA_HOME=" + disk}
			}
			g := startGateway(t, gc)
			k := g.issue("--name", "busy", "--scope", "mail.send")
			g.send(k.Key, 50)
			if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Allowed == 50 }) < 0 {
				t.Fatal("the first 50 requests were not flushed")
			}

			filler := fill(t, disk)
			g.send(k.Key, 30)
			g.waitLog("writing usage counts") // a flush failed
			g.stop()

			logs := g.logs()
			final := ""
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, "final usage flush failed") {
					final = line
				}
			}
			if !strings.Contains(final, `"level":"error"`) {
				t.Fatalf("no ERROR line for the failed final flush:\n%s", logs)
			}
			if tc.dataOnDisk {
				if !strings.Contains(final, "the counts of 30 requests are lost") {
					t.Errorf("the final flush line does not say 30 requests' counts are lost: %s", final)
				}
				return
			}
			if !strings.Contains(final, "the counts of 30 requests are kept in") {
				t.Fatalf("the final flush line does not say 30 requests' counts are kept: %s", final)
			}

			os.Remove(filler)
			g.start()
			if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Allowed == 80 }) < 0 {
				t.Fatalf("usage after the restart: %+v, want 80 allowed\n%s", g.usage(k.ID), g.logs())
			}
			g.send(k.Key, 1)
			g.stop()
			if u := g.usage(k.ID); u.Allowed != 81 {
				t.Errorf("usage after another stop: %d allowed, want 81", u.Allowed)
			}
		})
	}
}

// TestAFullDiskRefusesKeyChangesAndHoldsCounts: while the disk holding the
// SQLite store is full, a revoke and an issue, through the admin API and
// caddy keys, are refused as the store failing (503 store_unavailable,
// exit status 5, naming the full disk), never answered as made: the key
// still works, as the refusal says. The counts of the requests answered
// meanwhile are held, and written once when there is room again, when the
// revoke made again takes effect.
func TestAFullDiskRefusesKeyChangesAndHoldsCounts(t *testing.T) {
	disk := tmpfs(t, "2m")
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: "sqlite:" + filepath.Join(disk, "keys.db")})
	k := g.issue("--name", "leaked", "--scope", "mail.send")
	g.send(k.Key, 20)
	if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Allowed == 20 }) < 0 {
		t.Fatal("the first 20 requests were not flushed")
	}

	filler := fill(t, disk)
	g.send(k.Key, 30)
	g.waitLog("writing usage counts to the store failed")
	const full = "database or disk is full"
	if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 503 || r.code() != "store_unavailable" || !strings.Contains(string(r.Body), full) {
		t.Errorf("the admin API's revoke on a full disk: %d %s, want 503 store_unavailable naming the full disk", r.Status, r.Body)
	}
	if _, errOut, err := g.keysRaw("revoke", k.ID, "--reason", "leaked", "--yes"); exitStatus(t, err) != 5 || !strings.Contains(errOut, full) {
		t.Errorf("caddy keys revoke on a full disk: %v %q, want exit status 5 naming the full disk", err, errOut)
	}
	if r := g.admin("POST", "/keygate/keys", map[string]any{"name": "new", "scopes": []string{"mail.send"}}); r.Status != 503 || r.code() != "store_unavailable" || keyPattern.Match(r.Body) {
		t.Errorf("the admin API's issue on a full disk: %d %s, want 503 store_unavailable and no key", r.Status, r.Body)
	}
	if out, errOut, err := g.keysRaw("issue", "--name", "new", "--scope", "mail.send"); exitStatus(t, err) != 5 || keyPattern.MatchString(out+errOut) {
		t.Errorf("caddy keys issue on a full disk: %v %q %q, want exit status 5 and no key", err, out, errOut)
	}
	time.Sleep(time.Second) // a revocation made would be enforced by now
	g.send(k.Key, 1)        // not revoked, as every refusal said

	os.Remove(filler)
	if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Allowed == 51 }) < 0 {
		t.Fatalf("usage once there is room: %+v, want 51 allowed\n%s", g.usage(k.ID), g.logs())
	}
	if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 200 {
		t.Fatalf("the revoke once there is room: %d %s", r.Status, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.code() != "revoked_key" {
		t.Errorf("the revoked key: %d %s", r.Status, r.Body)
	}
	g.stop()
	if u := g.usage(k.ID); u.Allowed != 51 {
		t.Errorf("usage after the stop: %d allowed, want 51 (each count written once)", u.Allowed)
	}
}

// TestAGatewayStartsOnAFullDisk: a gateway started (a host rebooted, a
// service restarted) while the disk of its SQLite store is full loads its
// config, answers keys 503 store_unavailable and serves once there is
// room, as for a store that does not answer; caddy keys exits 5. (Before,
// SQLite could not make the store's shared-memory index, which a graceful
// stop removes, and said "disk I/O error": the config was refused, so
// caddy exited at start with every site it serves, and caddy keys took it
// for invalid input, exit status 2.)
func TestAGatewayStartsOnAFullDisk(t *testing.T) {
	disk := tmpfs(t, "2m")
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: "sqlite:" + filepath.Join(disk, "keys.db")})
	k := g.issue("--name", "k", "--scope", "mail.send")
	g.send(k.Key, 3)
	g.stop()

	filler := fill(t, disk)
	g.start()
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 503 || r.code() != "store_unavailable" || r.Header.Get("Retry-After") != "1" {
		t.Errorf("a key on a gateway started on a full disk: %d %s, want 503 store_unavailable with Retry-After: 1", r.Status, r.Body)
	}
	g.waitLog("the store does not answer")
	if _, errOut, err := g.keysRaw("list"); exitStatus(t, err) != 5 {
		t.Errorf("caddy keys list on a full disk: %v %q, want exit status 5", err, errOut)
	}

	os.Remove(filler)
	if eventually(t, 5*time.Second, func() bool { return g.call("POST", "/v3/mail/send", k.Key, nil).Status == 202 }) < 0 {
		t.Fatalf("the key once there is room:\n%s", g.logs())
	}
	g.stop()
	if u := g.usage(k.ID); u.Allowed != 4 {
		t.Errorf("usage: %d allowed, want 4", u.Allowed)
	}
}

// TestAPostgresServerWithAFullDiskIsUnavailable: PostgreSQL's disk fills up
// (keygate's tables moved to a tablespace on a small tmpfs, then filled).
// A revoke and an issue are refused as the store failing, as on SQLite:
// 503 store_unavailable through the admin API, exit status 5 from caddy
// keys, saying what PostgreSQL said. (Before, its refusal, SQLSTATE 53100
// "could not extend file … No space left on device", was answered 500
// internal_error and exit status 1, which say a person should look rather
// than to try again.) The key still works, the counts are held, and all is
// written once there is room again.
func TestAPostgresServerWithAFullDiskIsUnavailable(t *testing.T) {
	needBinary(t)
	// The server runs as postgres when the tests run as root
	// (testservers.StartPostgres): the tablespace is its, in a directory
	// it can reach. Mounted before the server starts, so it is unmounted
	// after the server stops.
	owner := os.Getuid()
	if owner == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		owner, _ = strconv.Atoi(u.Uid)
	}
	parent, err := os.MkdirTemp("/tmp", "keygate-full-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	disk := mountTmpfs(t, filepath.Join(parent, "disk"), fmt.Sprintf("size=1m,mode=0700,uid=%d", owner))
	pg := testservers.StartPostgres(t)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: pg.URI})
	k := g.issue("--name", "leaked", "--scope", "mail.send")
	g.send(k.Key, 20)
	if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Allowed == 20 }) < 0 {
		t.Fatal("the first 20 requests were not flushed")
	}

	db, err := sql.Open("pgx", pg.URI)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLESPACE full_disk LOCATION '" + disk + "'"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DO $$ DECLARE t text; BEGIN
		FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
			EXECUTE format('ALTER TABLE %I SET TABLESPACE full_disk', t);
		END LOOP; END $$`); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, disk)

	// The tables' pages have room for a few changes still: issue until
	// one needs a page more.
	const full = "No space left on device"
	var r *response
	for i := 0; i < 1000; i++ {
		if r = g.admin("POST", "/keygate/keys", map[string]any{"name": "filling", "scopes": []string{"mail.send"}}); r.Status != 201 {
			break
		}
	}
	if r.Status != 503 || r.code() != "store_unavailable" || !strings.Contains(string(r.Body), full) || keyPattern.Match(r.Body) {
		t.Errorf("the admin API's issue on PostgreSQL with a full disk: %d %s, want 503 store_unavailable saying %q and no key", r.Status, r.Body, full)
	}
	if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 503 || r.code() != "store_unavailable" || r.Header.Get("Retry-After") != "1" {
		t.Errorf("the admin API's revoke on PostgreSQL with a full disk: %d %s, want 503 store_unavailable with Retry-After: 1", r.Status, r.Body)
	}
	if _, errOut, err := g.keysRaw("revoke", k.ID, "--reason", "leaked", "--yes"); exitStatus(t, err) != 5 || !strings.Contains(errOut, full) {
		t.Errorf("caddy keys revoke on PostgreSQL with a full disk: %v %q, want exit status 5 saying %q", err, errOut, full)
	}
	time.Sleep(time.Second) // a revocation made would be enforced by now
	g.send(k.Key, 30)       // not revoked, as every refusal said
	g.waitLog("writing usage counts to the store failed")

	os.Remove(filler)
	if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Allowed == 50 }) < 0 {
		t.Fatalf("usage once there is room: %+v, want 50 allowed\n%s", g.usage(k.ID), g.logs())
	}
	if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 200 {
		t.Fatalf("the revoke once there is room: %d %s", r.Status, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.code() != "revoked_key" {
		t.Errorf("the revoked key: %d %s", r.Status, r.Body)
	}
}

// TestAReloadToAPathWithNoStoreSaysItMadeANewOne: an operator moves the
// store and reloads with a `store` path that names no file (a typo, a copy
// not made yet). The gateway makes a new store there, as at a first start,
// and every key its clients hold gets invalid_key. Before, the log said only
// "opened the key store" at INFO, where `caddy keys issue` says it is
// creating a store; now a WARN line says the store is new and empty, and
// names its path. A path that holds a store is opened without it.
func TestAReloadToAPathWithNoStoreSaysItMadeANewOne(t *testing.T) {
	needBinary(t)
	up := newUpstream(t)
	oldPath := filepath.Join(t.TempDir(), "keys.db")
	gc := gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: "sqlite:" + oldPath}
	k := (&gateway{t: t, store: gc.store}).issue("--name", "crm", "--scope", "mail.send")
	g := startGateway(t, gc)
	g.send(k.Key, 1)
	if strings.Contains(g.logs(), "made new") {
		t.Errorf("a gateway that opened an existing store says it made one:\n%s", g.logs())
	}

	moved := filepath.Join(t.TempDir(), "keys.db") // the copy was never made
	cf, err := os.ReadFile(g.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.config, bytes.ReplaceAll(cf, []byte(oldPath), []byte(moved)), 0o600); err != nil {
		t.Fatal(err)
	}
	g.reload()
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.code() != "invalid_key" {
		t.Fatalf("a key of the old store, on the new empty one: %d %s", r.Status, r.Body)
	}
	var said string
	for _, l := range strings.Split(g.logs(), "\n") {
		if strings.Contains(l, "made new") {
			said = l
		}
	}
	if !strings.Contains(said, `"level":"warn"`) || !strings.Contains(said, `"path":"`+moved+`"`) ||
		!strings.Contains(said, "holds no keys") {
		t.Errorf("the reload to %s made a new store; want a WARN line that says so, naming the path; got %q\n%s",
			moved, said, g.logs())
	}
}

// TestStoreFileDeletedWhileRunning: the SQLite file is deleted under a
// running gateway. Before, the gateway went on with the deleted file without
// a word, `caddy keys issue` created a new file the gateway never read, and
// every count after the delete was lost. Now the gateway says so at ERROR
// within a poll, keeps answering keys, holds the counts, and switches to
// whatever file is put at the path: a backup put back, or a new store.
func TestStoreFileDeletedWhileRunning(t *testing.T) {
	needBinary(t)
	up := newUpstream(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.db")
	gc := gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: "sqlite:" + path}
	g := &gateway{t: t, store: gc.store}
	// A backup holding the key, taken before the gateway starts.
	k := g.issue("--name", "survivor", "--scope", "mail.send")
	backup, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g = startGateway(t, gc)
	if !strings.Contains(g.logs(), `"msg":"keygate: opened the key store","store":"sqlite:`+path+`"`) {
		t.Errorf("the startup log does not name the store:\n%s", g.logs())
	}
	g.send(k.Key, 5)
	if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Allowed == 5 }) < 0 {
		t.Fatal("the first 5 requests were not flushed")
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	g.waitLog("the file was deleted or moved away while open")
	for _, line := range strings.Split(g.logs(), "\n") {
		if strings.Contains(line, "deleted or moved away") && !strings.Contains(line, `"level":"error"`) {
			t.Errorf("the deleted file is reported below ERROR: %s", line)
		}
	}
	g.send(k.Key, 10) // still answered; counted in memory

	// The backup put back: the gateway switches to it and writes the
	// counts it held there.
	if err := os.WriteFile(path, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	g.waitLog("the store file was replaced while open")
	if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Allowed == 10 }) < 0 {
		t.Fatalf("the 10 requests made while the file was gone: %+v\n%s", g.usage(k.ID), g.logs())
	}

	// Deleted again, and a new store made by the CLI: the gateway
	// follows it, so a key issued there works and the old one does not.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the gateway has seen the delete
	fresh := g.issue("--name", "fresh", "--scope", "mail.send")
	if eventually(t, 2*time.Second, func() bool { return g.call("POST", "/v3/mail/send", fresh.Key, nil).Status == 202 }) < 0 {
		t.Fatalf("a key issued in the new store is not accepted:\n%s", g.logs())
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 401 || r.code() != "invalid_key" {
		t.Errorf("a key only in the deleted file: %d %s, want 401 invalid_key", r.Status, r.Body)
	}
	g.stop()
	if u := g.usage(fresh.ID); u.Allowed != 1 {
		t.Errorf("the new key's usage: %d allowed, want 1", u.Allowed)
	}
}

// TestAKilledGatewayLosesAtMostTheLastSecondOfCounts: caddy killed with
// SIGKILL between usage flushes (docs/guarantees.md, Faults: crash, kill
// -9) loses the counts of the requests it answered since its last flush,
// which runs every second, and no others. Killed at three points of the
// flush's second, a request answered more than a second before the kill
// (and a little more for a flush the busy machine runs late) is counted.
func TestAKilledGatewayLosesAtMostTheLastSecondOfCounts(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL})
	const slack = 300 * time.Millisecond // a flush the scheduler runs late
	for _, run := range []time.Duration{2000, 2330, 2660} {
		k := g.issue("--name", "killed", "--scope", "mail.send")
		var answered []time.Time
		for start := time.Now(); time.Since(start) < run*time.Millisecond; {
			g.send(k.Key, 1)
			answered = append(answered, time.Now())
			time.Sleep(2 * time.Millisecond)
		}
		g.kill()
		killed := time.Now()
		g.start()
		counted := g.usage(k.ID).Allowed
		if counted > int64(len(answered)) {
			t.Fatalf("%d requests counted of %d answered", counted, len(answered))
		}
		lost := answered[counted:] // flushed in order: the last ones are lost
		oldest := time.Duration(0)
		if len(lost) > 0 {
			oldest = killed.Sub(lost[0])
		}
		t.Logf("killed after %v: %d of %d requests counted; the oldest lost answered %v before the kill",
			run*time.Millisecond, counted, len(answered), oldest.Round(time.Millisecond))
		if oldest > time.Second+slack {
			t.Errorf("a request answered %v before the kill lost its count; at most the last second's are lost", oldest)
		}
	}
}

// A store file missing beside its write-ahead log (a gateway killed after
// the file was deleted): the CLI refuses to create a store there, which the
// left-over log would corrupt, and says what to do.
func TestCLIRefusesAStoreBesideAnOrphanLog(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL})
	k := g.issue("--name", "a", "--scope", "mail.send")
	g.send(k.Key, 1)
	g.kill() // leaves keys.db-wal and keys.db-shm
	path := strings.TrimPrefix(g.store, "sqlite:")
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Skipf("the killed gateway left no write-ahead log: %v", err)
	}
	os.Remove(path)
	_, stderr, err := g.keysRaw("issue", "--name", "b", "--scope", "mail.send")
	if err == nil || !strings.Contains(stderr, "write-ahead log") || !strings.Contains(stderr, "keys.db-wal") {
		t.Errorf("caddy keys issue beside an orphan log: %v\n%s", err, stderr)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("the refused command created the store file")
	}
}

// TestPostgresOutageIsAFewLogLines: while PostgreSQL is down, the change-log
// poll (every 200 ms) and the usage flush (every second) each log the
// outage once, not once per attempt, then one line when it is back. The
// startup line names the store with its password redacted.
func TestPostgresOutageIsAFewLogLines(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	// Trust authentication ignores the password; it is there to be redacted.
	uri := strings.Replace(pg.URI, "postgres@", "postgres:hunter2-secret@", 1)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: uri})
	k := g.issue("--name", "a", "--scope", "mail.send")
	if !strings.Contains(g.logs(), `"msg":"keygate: opened the key store","store":"postgres://postgres:xxxxx@127.0.0.1`) {
		t.Errorf("the startup log does not name the store with its password redacted:\n%s", g.logs())
	}
	allowed := g.untilCached(k.Key)

	// Log lines about the store since before the outage, not at start-up.
	occurrences := func(logs, s string) int { return strings.Count(logs, `"msg":"keygate: `+s) }
	before := g.logs()
	since := func(s string) int { return occurrences(g.logs(), s) - occurrences(before, s) }
	pg.Stop()
	g.send(k.Key, 3) // cached: still answered, counted in memory
	// Keys not in the cache: 503, and the reason in the log, once.
	other, err := verifier.Generate("kg", "live")
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if r := g.call("POST", "/v3/mail/send", other, nil); r.Status != 503 || r.code() != "store_unavailable" {
			t.Fatalf("a key not in the cache while PostgreSQL is down: %d %s", r.Status, r.Body)
		}
	}
	// The admin API answers as the gateway answers a key it cannot look up.
	if a := g.admin("GET", "/keygate/keys", nil); a.Status != 503 || a.code() != "store_unavailable" ||
		a.Header.Get("Retry-After") == "" || strings.Contains(string(a.Body), "hunter2-secret") {
		t.Errorf("the admin API's key list while PostgreSQL is down: %d %v %s", a.Status, a.Header, a.Body)
	}
	time.Sleep(4 * time.Second)
	pg.Start()
	for _, back := range []string{"reading the key change log works again", "writing usage counts works again"} {
		if eventually(t, 10*time.Second, func() bool { return since(back) > 0 }) < 0 {
			t.Fatalf("no log line %q after the outage:\n%s", back, g.logs())
		}
	}
	g.stop()

	logs := g.logs()
	if strings.Contains(logs, "hunter2-secret") {
		t.Error("a log line holds the store's password")
	}
	count := func(s string) int { return occurrences(logs, s) - occurrences(before, s) }
	poll, flush := count("reading the key change log"), count("writing usage counts")
	t.Logf("a 4 s outage: %d change-log lines, %d usage-flush lines", poll, flush)
	if n := count("looking a key up in the store failed"); n != 1 {
		t.Errorf("%d lines saying why keys not in the cache got 503, want 1:\n%s", n, logs)
	}
	// Began and works again, each; one attempt every 200 ms and every
	// second would be about 20 and 4 lines.
	if poll != 2 || flush != 2 {
		t.Errorf("%d change-log lines and %d usage-flush lines for one outage, want 2 each:\n%s", poll, flush, logs)
	}
	if u := g.usage(k.ID); u.Allowed != int64(allowed+3) {
		t.Errorf("usage after the outage: %d allowed, want %d", u.Allowed, allowed+3)
	}
}

// untilCached sends key until the gateway answers it from its cache with the
// entry current, so that a store outage finds it there, and returns how many
// requests it sent (all allowed). The key's own change-log entry (its issue)
// voids an entry cached before the gateway reads that entry, which it does
// within 1 s (CONTRACT.md §7); and a gateway whose first store calls outlast
// the 2 s store timeout (a loaded CI machine) fails closed until its next
// successful poll. So it waits that second out, then until a request costs
// no store query.
func (g *gateway) untilCached(key string) (allowed int) {
	g.t.Helper()
	time.Sleep(1200 * time.Millisecond)
	fromCache := func() bool {
		if g.call("POST", "/v3/mail/send", key, nil).Status != 202 {
			return false
		}
		allowed++
		q := g.metric("keygate_store_queries_total")
		if g.call("POST", "/v3/mail/send", key, nil).Status != 202 {
			return false
		}
		allowed++
		return g.metric("keygate_store_queries_total") == q
	}
	if eventually(g.t, 15*time.Second, fromCache) < 0 {
		g.t.Fatalf("the gateway never answered the key from its cache:\n%s", g.logs())
	}
	return allowed
}

// TestAStopWhilePostgresDoesNotAnswerKeepsItsCounts: PostgreSQL accepts
// connections and never answers (SIGSTOP: as a network partition that drops
// packets, or a server stuck), and the gateway is stopped. The stop must end
// well inside systemd's TimeoutStopSec=30s (deploy/keygate.service), with the
// counts held in the spill: a process killed at that timeout loses every
// count of the outage. Before, a periodic flush under way waited out its
// 10 s, then the final flush tried three times: the stop took 25–34 s.
func TestAStopWhilePostgresDoesNotAnswerKeepsItsCounts(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: pg.URI})
	k := g.issue("--name", "a", "--scope", "mail.send")
	var uncached []string
	for i := range 6 {
		uncached = append(uncached, g.issue("--name", fmt.Sprint("uncached-", i), "--scope", "mail.send").Key)
	}
	allowed := g.untilCached(k.Key)

	pg.Pause()
	g.send(k.Key, 20) // cached: answered, counted in memory
	allowed += 20
	// A periodic flush (every second) is now waiting on the store.
	time.Sleep(1500 * time.Millisecond)

	// Keys not in the cache get 503 store_unavailable: one request at a
	// time waits out the store's 2 s timeout to find out whether it is
	// back, one a second; the others are answered at once instead of each
	// waiting 2 s for the same answer.
	var slow int
	began := time.Now()
	for _, key := range uncached {
		start := time.Now()
		r := g.call("POST", "/v3/mail/send", key, nil)
		if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "store_unavailable") {
			t.Errorf("a key not in the cache while PostgreSQL does not answer: %d %s, want 503 store_unavailable", r.Status, r.Body)
		}
		if time.Since(start) > time.Second {
			slow++
		}
	}
	if took := time.Since(began); slow > 1 || took > 4*time.Second {
		t.Errorf("%d keys not in the cache took %v, %d of them over a second: want one at most to wait for the store", len(uncached), took, slow)
	}
	start := time.Now()
	go func() {
		// Answered once caddy has stopped, or never.
		if resp, err := http.Post("http://"+g.adminAddr+"/stop", "", nil); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("caddy did not stop within 15 s while PostgreSQL did not answer (systemd kills it at 30 s):\n%s", g.logs())
	}
	t.Logf("caddy stop while PostgreSQL does not answer: %v", time.Since(start).Round(100*time.Millisecond))
	if !strings.Contains(g.logs(), "the final usage flush failed; the counts of ") {
		t.Fatalf("no line saying the final flush kept the counts:\n%s", g.logs())
	}

	pg.Resume()
	g.start()
	if eventually(t, 10*time.Second, func() bool { return g.usage(k.ID).Allowed == int64(allowed) }) < 0 {
		t.Errorf("usage after the restart: %d allowed, want %d\n%s", g.usage(k.ID).Allowed, allowed, g.logs())
	}
}

// TestCountsAStopKeptAreInTheQuotaOfTheNextStart: a stop while PostgreSQL
// is down keeps its counts in the data directory, for the next start to
// add. A key's quota read at that start, before they were added (its first
// send after PostgreSQL came back, within a second of the start), holds
// them too: until session 37 it did not, and the key could send them again
// before the period ended.
func TestCountsAStopKeptAreInTheQuotaOfTheNextStart(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: quotaCaddyfile, upstream: up.URL, store: pg.URI}) // quota 4/d
	k := g.issue("--name", "kept", "--scope", "mail.send")
	send := func(n int) *response {
		var to []string
		for i := range n {
			to = append(to, fmt.Sprintf("r%d@example.org", i))
		}
		return g.call("POST", "/v3/mail/send", k.Key, sgBody("a@example.com", to...))
	}
	if r := send(1); r.Status != http.StatusAccepted {
		t.Fatalf("1 of 4: %d %s", r.Status, r.Body)
	}
	if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Recipients == 1 }) < 0 {
		t.Fatal("the first send was not written")
	}
	pg.Stop()
	if r := send(2); r.Status != http.StatusAccepted { // the key and its quota count are in memory
		t.Fatalf("3 of 4 while PostgreSQL is down: %d %s", r.Status, r.Body)
	}
	g.stop()
	if !strings.Contains(g.logs(), "the final usage flush failed; the counts of 1 request are kept") {
		t.Fatalf("no line saying the final flush kept the counts:\n%s", g.logs())
	}

	pg.Start()
	g.start()
	if r := send(2); r.code() != "quota_exceeded" {
		t.Errorf("2 more at once after the restart, 1 of 4 left: %d %s, want quota_exceeded", r.Status, r.Body)
	}
	if r := send(1); r.Status != http.StatusAccepted {
		t.Errorf("4 of 4 after the restart: %d %s", r.Status, r.Body)
	}
	if eventually(t, 5*time.Second, func() bool { return g.usage(k.ID).Recipients == 4 }) < 0 {
		t.Errorf("usage after the restart: %d recipients, want 4", g.usage(k.ID).Recipients)
	}
}

// TestBackupWhileServingAndRestore: an operator backs up the SQLite store
// with `caddy keys backup` while the gateway serves, later puts the backup
// back: the keys, revocations and usage of the moment of the backup return,
// and the backup holds no key.
func TestBackupWhileServingAndRestore(t *testing.T) {
	needBinary(t)
	up := newUpstream(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.db")
	gc := gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: "sqlite:" + path}
	g := startGateway(t, gc)
	kept := g.issue("--name", "kept", "--scope", "mail.send")
	revoked := g.issue("--name", "revoked", "--scope", "mail.send")
	g.keys("revoke", revoked.ID, "--reason", "leaked")
	g.send(kept.Key, 5)
	if eventually(t, 5*time.Second, func() bool { return g.usage(kept.ID).Allowed == 5 }) < 0 {
		t.Fatal("the first 5 requests were not flushed")
	}

	// Sends go on during the backup.
	stop := make(chan struct{})
	var sending sync.WaitGroup
	sending.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				g.call("POST", "/v3/mail/send", kept.Key, nil)
			}
		}
	})
	backup := filepath.Join(dir, "backup.db")
	var info struct {
		Path  string `json:"path"`
		Keys  int    `json:"keys"`
		Bytes int64  `json:"bytes"`
	}
	if err := json.Unmarshal([]byte(g.keys("backup", "--json", backup)), &info); err != nil {
		t.Fatal(err)
	}
	close(stop)
	sending.Wait()
	if info.Path != backup || info.Keys != 2 || info.Bytes == 0 {
		t.Errorf("caddy keys backup --json: %+v, want 2 keys", info)
	}
	if _, errOut, err := g.keysRaw("backup", backup); err == nil || !strings.Contains(errOut, "exists") {
		t.Errorf("a backup onto the last one: %v %q, want it refused", err, errOut)
	}
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []issuedKey{kept, revoked} {
		if bytes.Contains(b, []byte(k.Key)) || bytes.Contains(b, []byte(k.Key[len("kg_live_")+8:])) {
			t.Errorf("the backup holds key %s", k.ID)
		}
	}

	// Changes after the backup: a key issued, the kept key revoked.
	later := g.issue("--name", "later", "--scope", "mail.send")
	g.keys("revoke", kept.ID, "--reason", "rotated out")
	g.stop()

	// Restored as docs/guarantees.md says: with caddy stopped, the store's
	// log files removed and the backup copied over the store file.
	for _, f := range []string{path + "-wal", path + "-shm"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	g.start()
	if r := g.call("POST", "/v3/mail/send", kept.Key, nil); r.Status != 202 {
		t.Errorf("the kept key after the restore: %d %s, want 202 (it was valid at the backup)", r.Status, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", revoked.Key, nil); r.code() != "revoked_key" {
		t.Errorf("the revoked key after the restore: %d %s, want revoked_key", r.Status, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", later.Key, nil); r.code() != "invalid_key" {
		t.Errorf("a key issued after the backup, after the restore: %d %s, want invalid_key", r.Status, r.Body)
	}
	if u := g.usage(kept.ID); u.Allowed < 5 {
		t.Errorf("the kept key's usage after the restore: %d allowed, want at least the 5 before the backup", u.Allowed)
	}
}

// TestRestoreKeepsWhatStoppedKeysSinceTheBackup: `caddy keys restore` puts a
// backup back as docs/guarantees.md's manual steps do, and also keeps what
// stopped a key after the backup was taken: a key revoked since (say, as
// leaked) stays revoked, a key rotated since ends when its grace did. The
// manual steps make both work again (TestBackupWhileServingAndRestore).
func TestRestoreKeepsWhatStoppedKeysSinceTheBackup(t *testing.T) {
	needBinary(t)
	up := newUpstream(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.db")
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL, store: "sqlite:" + path})
	steady := g.issue("--name", "steady", "--scope", "mail.send")
	leaked := g.issue("--name", "leaked", "--scope", "mail.send")
	rotated := g.issue("--name", "rotated", "--scope", "mail.send")
	g.send(steady.Key, 3)
	if eventually(t, 5*time.Second, func() bool { return g.usage(steady.ID).Allowed == 3 }) < 0 {
		t.Fatal("the first 3 requests were not flushed")
	}
	backup := filepath.Join(dir, "backup.db")
	g.keys("backup", backup)

	g.keys("revoke", leaked.ID, "--reason", "posted in a ticket", "--yes")
	g.keys("rotate", rotated.ID, "--grace", "0")
	later := g.issue("--name", "later", "--scope", "mail.send")
	g.keys("update", steady.ID, "--name", "steady-renamed", "--reason", "new name")
	newer := filepath.Join(dir, "newer.db") // holds later
	g.keys("backup", newer)
	// Not while the gateway has the store open: it would go on with the
	// file pulled from under it.
	if _, errOut, err := g.keysRaw("restore", backup, "--yes"); exitStatus(t, err) != 4 || !strings.Contains(errOut, fmt.Sprintf("process %d has it open", g.cmd.Process.Pid)) {
		t.Errorf("restore while the gateway runs: %v %q, want it refused with exit 4 (conflict), naming the gateway's process", err, errOut)
	}
	if r := g.call("POST", "/v3/mail/send", leaked.Key, nil); r.code() != "revoked_key" {
		t.Errorf("the leaked key after a refused restore: %d %s", r.Status, r.Body)
	}
	before := g.keys("events", "--json")
	g.stop()

	// A file that is not a backup is refused, and the store left as it was.
	bad := filepath.Join(dir, "notes.txt")
	os.WriteFile(bad, []byte("not a database"), 0o600)
	if _, errOut, err := g.keysRaw("restore", bad, "--yes"); err == nil || !strings.Contains(errOut, "not a keygate backup") {
		t.Errorf("restore from a text file: %v %q, want it refused as not a keygate backup", err, errOut)
	}
	if out := g.keys("show", later.ID); !strings.Contains(out, later.ID) {
		t.Errorf("the store after a refused restore lacks the key issued last:\n%s", out)
	}

	var res struct {
		Keys    int `json:"keys"`
		Carried struct {
			Revoked, Disabled, Expiring, Gone, Reverted []string
		} `json:"carried"`
	}
	if _, errOut, err := g.keysRaw("restore", backup, "--yes", "--reason", "disk\x1blost"); err == nil || !strings.Contains(errOut, "reason") {
		t.Errorf("restore with a reason holding a control character: %v %q, want it refused", err, errOut)
	}
	if out := g.keys("show", later.ID); !strings.Contains(out, later.ID) {
		t.Errorf("the store after a restore refused for its reason lacks the key issued last:\n%s", out)
	}
	if err := json.Unmarshal([]byte(g.keys("restore", backup, "--yes", "--json", "--reason", "disk lost")), &res); err != nil {
		t.Fatal(err)
	}
	if res.Keys != 3 || !slices.Equal(res.Carried.Revoked, []string{leaked.ID}) || !slices.Equal(res.Carried.Expiring, []string{rotated.ID}) ||
		len(res.Carried.Disabled) != 0 || len(res.Carried.Gone) != 2 || !slices.Contains(res.Carried.Gone, later.ID) ||
		!slices.Equal(res.Carried.Reverted, []string{steady.ID}) {
		t.Errorf("caddy keys restore --json: %+v; want 3 keys, %s revoked again, %s ending at its rotation, two gone (%s and %s's successor), %s's name put back",
			res, leaked.ID, rotated.ID, later.ID, rotated.ID, steady.ID)
	}
	for _, f := range []string{path + "-wal", path + "-shm"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left beside the restored store", f)
		}
	}

	g.start()
	for _, c := range []struct {
		what string
		key  issuedKey
		want string
	}{
		{"a key no one touched", steady, ""},
		{"a key revoked after the backup", leaked, "revoked_key"},
		{"a key rotated after the backup, with no grace", rotated, "expired_key"},
		{"a key issued after the backup", later, "invalid_key"},
	} {
		r := g.call("POST", "/v3/mail/send", c.key.Key, nil)
		if c.want == "" && r.Status != 202 || c.want != "" && r.code() != c.want {
			t.Errorf("%s, after the restore: %d %s, want %s", c.what, r.Status, r.Body, cmp.Or(c.want, "202"))
		}
	}
	if u := g.usage(steady.ID); u.Allowed < 3 {
		t.Errorf("usage after the restore: %d allowed, want the 3 before the backup", u.Allowed)
	}
	if out := g.keys("events", leaked.ID); !strings.Contains(out, "kept from the store a backup replaced: disk lost") || !strings.Contains(out, "posted in a ticket") {
		t.Errorf("the leaked key's events after the restore do not say why it is revoked:\n%s", out)
	}
	// The audit log is never rolled back: every event of the replaced
	// store (the revocation, the rotation, the key issued after the
	// backup, the rename) is still there as it was, under the seq a SIEM
	// read it at, and the restore's own events come after them: what it
	// carried over, the keys it left out, and the name it put back.
	type event struct {
		Seq                           int64
		At                            time.Time
		Action, Actor, Reason, Detail string
		KeyID                         string `json:"key_id"`
	}
	var was, now []event
	if err := errors.Join(json.Unmarshal([]byte(before), &was), json.Unmarshal([]byte(g.keys("events", "--json")), &now)); err != nil {
		t.Fatal(err)
	}
	if len(now) < len(was) || !slices.Equal(now[:len(was)], was) {
		t.Errorf("the events after the restore:\n%+v\ndo not start with the replaced store's:\n%+v", now, was)
	} else if carried := now[len(was):]; len(carried) != 5 || carried[0].Seq <= was[len(was)-1].Seq ||
		!strings.Contains(carried[0].Reason, "kept from the store a backup replaced") ||
		carried[4].KeyID != steady.ID || carried[4].Detail != "name: steady-renamed → steady" || carried[4].Reason != "put back as the backup had it: disk lost" {
		t.Errorf("the restore's own events after the replaced store's: %+v, want the two it carried over, the two keys it left out and the name it put back", carried)
	} else {
		// Each key the restore left out has an event saying it is gone
		// (until session 34 none did: its history ended on a key that
		// worked), and a SIEM reading on from the last seq it shipped
		// reads them.
		abs, _ := filepath.Abs(backup)
		fi, _ := os.Stat(backup)
		wantDetail := fmt.Sprintf("backup %q (written %s): clients now get invalid_key", abs, fi.ModTime().UTC().Format(time.RFC3339))
		var removed []string
		for _, ev := range carried[2:4] {
			removed = append(removed, ev.KeyID)
			if ev.Action != "removed" || ev.Reason != "not in the backup put back: disk lost" || ev.Detail != wantDetail || !strings.HasPrefix(ev.Actor, "cli ") {
				t.Errorf("the event of %s, left out by the restore: %+v; want it removed, by the CLI, naming the backup (%s)", ev.KeyID, ev, wantDetail)
			}
		}
		if !slices.Equal(removed, res.Carried.Gone) {
			t.Errorf("removed events for %v, want one for each key gone, %v", removed, res.Carried.Gone)
		}
		var shipped []event
		json.Unmarshal([]byte(g.keys("events", "--after", strconv.FormatInt(was[len(was)-1].Seq, 10), "--json")), &shipped)
		if !slices.Equal(shipped, carried) {
			t.Errorf("the events after the last one shipped before the restore: %+v, want the restore's %+v", shipped, carried)
		}
	}
	// A key the restore left out keeps its history, by its id too, and it
	// ends on the restore's removal of it.
	if out := g.keys("events", later.ID); !strings.Contains(out, "issued") || !strings.Contains(out, "name: later") ||
		!strings.Contains(out, "removed") || !strings.Contains(out, "clients now get invalid_key") {
		t.Errorf("the events of %s, issued after the backup:\n%s", later.ID, out)
	}
	for _, path := range []string{"/keygate/keys/" + later.ID + "/events", "/keygate/events?key=" + later.ID} {
		var evs []event
		r := g.admin("GET", path, nil)
		if json.Unmarshal(r.Body, &evs); r.Status != 200 || len(evs) < 2 || !strings.Contains(evs[0].Detail, "name: later") ||
			evs[len(evs)-1].Action != "removed" || !strings.Contains(evs[len(evs)-1].Detail, "invalid_key") {
			t.Errorf("GET %s: %d %s; want the key's issue and, last, its removal", path, r.Status, r.Body)
		}
	}

	// Putting the newer backup back brings the keys the first restore left
	// out back, and their history says so rather than ending on their
	// removal.
	g.stop()
	var again struct {
		Carried struct{ Back []string } `json:"carried"`
	}
	if err := json.Unmarshal([]byte(g.keys("restore", newer, "--yes", "--json")), &again); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.Carried.Back, res.Carried.Gone) {
		t.Errorf("restoring the newer backup brought back %v, want the keys the first restore left out, %v", again.Carried.Back, res.Carried.Gone)
	}
	g.start()
	if r := g.call("POST", "/v3/mail/send", later.Key, nil); r.Status != 202 {
		t.Errorf("a key back with the newer backup: %d %s", r.Status, r.Body)
	}
	var laterEvs []event
	json.Unmarshal([]byte(g.keys("events", later.ID, "--json")), &laterEvs)
	if n := len(laterEvs); n < 3 || laterEvs[n-2].Action != "removed" || laterEvs[n-1].Action != "restored" ||
		!strings.Contains(laterEvs[n-1].Detail, "newer.db") || !strings.Contains(laterEvs[n-1].Detail, "name: later") {
		t.Errorf("the events of %s, back with the newer backup: %+v; want them to end on its removal, then its return", later.ID, laterEvs)
	}
	// No event holds a key, the restore's included.
	all := g.keys("events", "--json")
	for _, k := range []issuedKey{steady, leaked, rotated, later} {
		if strings.Contains(all, k.Key) {
			t.Errorf("the audit log holds %s's key", k.ID)
		}
	}
}

// sendgridSendSite is a SendGrid site whose keys send through keygate to
// the test's upstream.
var sendgridSendSite = site(sendgridSendSiteBody)

// sendgridSendSiteBody is the site's directives.
const sendgridSendSiteBody = `
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`

// TestSlowClientsDeclaringLargeBodiesHoldLittleMemory: 200 connections with
// a valid key each declare a 10 MB send and send 1 KB of it, then wait. The
// gateway's heap stays near what they sent (until session 12 each declared
// length was allocated up front: 1.9 GB for these 200), and a normal send
// still goes through meanwhile.
func TestSlowClientsDeclaringLargeBodiesHoldLittleMemory(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: sendgridSendSite, upstream: up.URL})
	k := g.issue("--name", "slow", "--scope", "mail.send")
	before := g.heapAlloc()
	host := strings.TrimPrefix(g.siteURL, "http://")
	head := "POST /v3/mail/send HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + k.Key +
		"\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{" + strings.Repeat(" ", 1023)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 200 {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
	}
	// A normal send is answered while they wait; half a second later the
	// gateway has long read what the slow ones sent.
	if r := g.call("POST", "/v3/mail/send", k.Key, []byte(`{"personalizations":[{"to":[{"email":"ann@example.org"}]}],"from":{"email":"orders@shop.example"},"subject":"hi","content":[{"type":"text/plain","value":"hi"}]}`), "Content-Type", "application/json"); r.Status != 202 {
		t.Fatalf("a send beside the slow clients: %d %s", r.Status, r.Body)
	}
	time.Sleep(500 * time.Millisecond)
	if grown := g.heapAlloc() - before; grown > 64<<20 {
		t.Errorf("200 slow clients that sent 1 KB each grew the heap by %d MB", grown>>20)
	}
}

// Clients with a valid key that send large bodies at once, to an upstream
// that is slow to answer, make the gateway hold every body while its send
// is in flight. Under a memory limit of 256 MiB (a quarter of it, 64 MiB,
// for bodies), twelve 8 MB sends at once cannot all be held: those past
// the bound wait, their uploads paused, and go on when the upstream
// answers the ones before them. Without the bound all twelve were held.
func TestLargeBodiesAtOnceStayWithinTheBound(t *testing.T) {
	release := make(chan struct{})
	var arrived atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		arrived.Add(1)
		<-release
		w.WriteHeader(http.StatusAccepted)
	}))
	defer up.Close()
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	defer open()
	g := startGateway(t, gatewayConfig{caddyfile: sendgridSendSite, upstream: up.URL, env: []string{"GOMEMLIMIT=256MiB"}})
	k := g.issue("--name", "bulk", "--scope", "mail.send")
	before := g.heapAlloc()
	pad := strings.Repeat("x", 8<<20)
	body := []byte(`{"personalizations":[{"to":[{"email":"ann@example.org"}]}],"from":{"email":"orders@shop.example"},` +
		`"subject":"hi","content":[{"type":"text/plain","value":"` + pad + `"}]}`)

	const sends = 12
	statuses := make(chan int, sends)
	for range sends {
		go func() {
			req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+k.Key)
			req.Header.Set("Content-Type", "application/json")
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				statuses <- 0
				return
			}
			r.Body.Close()
			statuses <- r.StatusCode
		}()
	}
	// The sends that fit reach the upstream; the others wait for room.
	held, still := int32(0), time.Now()
	for deadline := time.Now().Add(8 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n := arrived.Load(); n != held {
			held, still = n, time.Now()
		}
		if held > 0 && time.Since(still) > time.Second {
			break
		}
	}
	if held == 0 || held >= sends || held > 8 {
		t.Errorf("%d of %d sends of 8 MB reached the upstream at once; want some, at most 8 under a 64 MiB bound", held, sends)
	}
	// The heap also holds garbage (each body's smaller buffers before it
	// grew), so only a gross excess is an error here; the count above is
	// the bound's measure.
	grown := g.heapAlloc() - before
	if grown > 192<<20 {
		t.Errorf("with %d sends of 8 MB held and the others waiting, the heap grew by %d MB", held, grown>>20)
	}
	t.Logf("%d of %d sends of 8 MB held at once; the heap grew by %d MB", held, sends, grown>>20)
	open()
	for range sends {
		if code := <-statuses; code != http.StatusAccepted {
			t.Errorf("a send: %d, want every one passed on once the upstream answered", code)
		}
	}
}

// TestAGatewayStartsWhileItsStoreIsDown: a node started while PostgreSQL is
// down (restarted during a failover) loads its config instead of exiting:
// a well-formed key gets 503 store_unavailable, a malformed one
// invalid_key, the console a page that says so. Once PostgreSQL answers,
// the node serves as usual within seconds, without a restart.
func TestAGatewayStartsWhileItsStoreIsDown(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	up := newUpstream(t)
	pg.Stop()
	g := startGateway(t, gatewayConfig{upstream: up.URL, store: pg.URI, caddyfile: site(`
	` + demoConsole + `
	handle /up {
		respond "up"
	}
	handle {
		keygate {
			store {STORE}
			scope mail.send POST /v3/mail/send
		}
		reverse_proxy {UPSTREAM}
	}
`)})
	consoleAt := func(path string) (int, string, string) {
		req, _ := http.NewRequest("GET", g.siteURL+"/console/"+path, nil)
		req.SetBasicAuth("demo", "keygate-demo")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	console := func() (int, string) {
		status, _, page := consoleAt("")
		return status, page
	}
	unknown, err := verifier.Generate("kg", "live")
	if err != nil {
		t.Fatal(err)
	}
	if r := g.call("POST", "/v3/mail/send", unknown, nil); r.Status != 503 || r.code() != "store_unavailable" || r.Header.Get("Retry-After") == "" {
		t.Errorf("a well-formed key while the store has not answered since the start: %d %v %s", r.Status, r.Header, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", "kg_live_nope", nil); r.code() != "invalid_key" {
		t.Errorf("a malformed key while the store has not answered since the start: %d %s", r.Status, r.Body)
	}
	if status, page := console(); status != 503 || !strings.Contains(page, "The key store is unavailable") {
		t.Errorf("the console while the store has not answered since the start: %d\n%s", status, page)
	} else if !strings.Contains(page, `href="/console/static/console.css?v=`) {
		t.Errorf("the console's unavailable page links its stylesheet outside the console:\n%s", page)
	}
	// The page is styled: its stylesheet needs no store.
	if status, ctype, _ := consoleAt("static/console.css"); status != 200 || !strings.HasPrefix(ctype, "text/css") {
		t.Errorf("the console's stylesheet while the store has not answered since the start: %d %s", status, ctype)
	}
	if !strings.Contains(g.logs(), "the store does not answer") {
		t.Errorf("the start does not say the store does not answer:\n%s", g.logs())
	}
	// The config loaded: the site's routes without keygate serve as usual.
	if r := g.call("GET", "/up", "", nil); r.Status != 200 || string(r.Body) != "up" {
		t.Errorf("a route without keygate while the store has not answered since the start: %d %s", r.Status, r.Body)
	}

	pg.Start()
	if eventually(t, 15*time.Second, func() bool {
		return strings.Count(g.logs(), "the store answers: requests are served again") == 2 // the gateway's and the console's
	}) < 0 {
		t.Fatalf("the gateway never attached to the store once it answered:\n%s", g.logs())
	}
	k := g.issue("--name", "after", "--scope", "mail.send")
	if eventually(t, 5*time.Second, func() bool { return g.call("POST", "/v3/mail/send", k.Key, nil).Status == 202 }) < 0 {
		t.Errorf("a key issued once the store answered is not served:\n%s", g.logs())
	}
	if status, page := console(); status != 200 || !strings.Contains(page, "after") {
		t.Errorf("the console once the store answered: %d\n%s", status, page)
	}
}

// TestBackupAndRestoreSayOneKey: `caddy keys backup` and `caddy keys
// restore` count in words a person reads, one key as "1 key". Until session
// 34 restore said "restored 1 keys".
func TestBackupAndRestoreSayOneKey(t *testing.T) {
	needBinary(t)
	dir := t.TempDir()
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: newUpstream(t).URL, store: "sqlite:" + filepath.Join(dir, "keys.db")})
	g.issue("--name", "only", "--scope", "mail.send")
	backup := filepath.Join(dir, "backup.db")
	if out := g.keys("backup", backup); !strings.HasPrefix(out, "backed up 1 key, ") {
		t.Errorf("caddy keys backup of a store of one key says %q, want \"backed up 1 key, …\"", out)
	}
	g.stop()
	if out := g.keys("restore", backup, "--yes"); !strings.HasPrefix(out, "restored 1 key, ") {
		t.Errorf("caddy keys restore of a backup of one key says %q, want \"restored 1 key, …\"", out)
	}
}

// TestARestoreFromAWrongFileSaysSoWhileTheGatewayRuns: a restore whose
// FILE is mistyped, or is no keygate backup, says so (exit 2) while the
// gateway still runs, before it asks for the gateways to be stopped. Until
// session 37 it answered "the store is in use …; stop it first" (exit 4), so
// an operator stopped production to be told only then that the file was
// wrong, with the gateway down while they looked for the right one.
func TestARestoreFromAWrongFileSaysSoWhileTheGatewayRuns(t *testing.T) {
	needBinary(t)
	dir := t.TempDir()
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: newUpstream(t).URL, store: "sqlite:" + filepath.Join(dir, "keys.db")})
	k := g.issue("--name", "kept", "--scope", "mail.send")
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	g.keys("backup", backup)
	for _, c := range []struct{ file, says string }{
		{filepath.Join(dir, "typo.db"), "no such file"},
		{text, "not a keygate backup"},
	} {
		out, errOut, err := g.keysRaw("restore", c.file, "--yes")
		if code := exitStatus(t, err); code != 2 || out != "" || !strings.Contains(errOut, c.file) || !strings.Contains(errOut, c.says) || strings.Contains(errOut, "in use") {
			t.Errorf("restore %s while the gateway runs: exit %d, stderr %q; want exit 2 saying %q of the file, not that the store is in use", c.file, code, errOut, c.says)
		}
	}
	// A good backup is still refused while the gateway has the store open.
	if _, errOut, err := g.keysRaw("restore", backup, "--yes"); exitStatus(t, err) != 4 || !strings.Contains(errOut, "in use") {
		t.Errorf("restore of a backup while the gateway runs: %v %q, want exit 4, the store in use", err, errOut)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
		t.Errorf("a send after the refused restores: %d %s", r.Status, r.Body)
	}
}

// TestATimeoutADBASetIsTheStoreUnavailable: a lock_timeout or a
// statement_timeout set for keygate's role or database (here for every
// session, so the gateway's own open ones take it too) cancels a statement
// that waits on a lock another session holds (a DBA's LOCK TABLE, a
// migration). The admin API answers the change 503 store_unavailable with
// Retry-After, saying which setting cancelled it, caddy keys exits 5, and a
// key the gateway has not cached is answered 503 store_unavailable, never
// let through; once the lock is let go, the same change is made.
func TestATimeoutADBASetIsTheStoreUnavailable(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: newUpstream(t).URL, store: pg.URI})
	k := g.issue("--name", "crm", "--scope", "mail.send")
	cold := g.issue("--name", "never-used", "--scope", "mail.send")

	db, err := sql.Open("pgx", pg.URI)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	set := func(qs ...string) {
		t.Helper()
		for _, q := range append(qs, "SELECT pg_reload_conf()") {
			if _, err := db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond) // the sessions read it
	}
	// Another session holds the keys table: every statement that reads or
	// writes it waits.
	holder, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	if _, err := holder.Exec("SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0; LOCK TABLE keys IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		setting, said string
	}{
		{"lock_timeout", "lock timeout"},
		{"statement_timeout", "statement timeout"},
	} {
		set("ALTER SYSTEM RESET lock_timeout", "ALTER SYSTEM RESET statement_timeout", "ALTER SYSTEM SET "+c.setting+" = '300ms'")
		r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"})
		if r.Status != 503 || r.code() != "store_unavailable" || r.Header.Get("Retry-After") != "1" || !strings.Contains(string(r.Body), c.said) || !strings.Contains(string(r.Body), "at its "+c.setting) {
			t.Errorf("the admin API's revoke past %s: %d %s; want 503 store_unavailable with Retry-After: 1 saying %q and naming %s", c.setting, r.Status, r.Body, c.said, c.setting)
		}
		r = g.admin("POST", "/keygate/keys", map[string]any{"name": "later", "scopes": []string{"mail.send"}})
		if r.Status != 503 || r.code() != "store_unavailable" || keyPattern.Match(r.Body) {
			t.Errorf("the admin API's issue past %s: %d %s; want 503 store_unavailable and no key", c.setting, r.Status, r.Body)
		}
		for _, args := range [][]string{{"revoke", k.ID, "--reason", "leaked", "--yes"}, {"issue", "--name", "later", "--scope", "mail.send"}} {
			out, errOut, err := g.keysRaw(args...)
			if exitStatus(t, err) != 5 || !strings.Contains(errOut, "at its "+c.setting) || keyPattern.MatchString(out) {
				t.Errorf("caddy keys %v past %s: %v %q %q; want exit status 5 naming %s", args[0], c.setting, err, out, errOut, c.setting)
			}
		}
		if r := revokeSend(g, cold.Key); r.Status != 503 || r.code() != "store_unavailable" || r.Header.Get("Retry-After") == "" {
			t.Errorf("a key not cached, past %s: %d %s; want 503 store_unavailable with Retry-After", c.setting, r.Status, r.Body)
		}
	}

	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 200 {
		t.Fatalf("the revoke once the lock is let go: %d %s", r.Status, r.Body)
	}
	if r := revokeSend(g, k.Key); r.code() != "revoked_key" {
		t.Errorf("the revoked key: %d %s", r.Status, r.Body)
	}
	if r := revokeSend(g, cold.Key); r.Status != 202 {
		t.Errorf("the key not cached, once the lock is let go: %d %s", r.Status, r.Body)
	}
}
