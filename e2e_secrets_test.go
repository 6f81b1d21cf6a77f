package keygate_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/store"
)

// A store or Redis URL whose "//" was left out (postgres:kg:PASSWORD@db/kg,
// redis:PASSWORD@host), given through {env.…} as the docs say to, is
// refused without its password. The store's was taken for a relative SQLite
// path: caddy validate said "Valid configuration", logged the path with the
// password in it, and caddy run made the file under its working directory.
// The Redis URL was read by go-redis as a Redis on localhost:6379 without a
// password, and logged whole as the Redis that did not answer.
//
// So is one whose password holds a character that ends it unencoded ('/',
// '?', '#', as generated passwords hold): net/url read "kg:5432/Secret@db/kg"
// as the host kg on port 5432 and the path "/Secret@db/kg", so the store was
// waited for as an outage, caddy validate said "Valid configuration", and
// the log named the store with the password's rest as its database;
// go-redis's error ("invalid URL path: /Secret@…") quoted it in the refusal.
func TestAURLWithoutItsSlashesIsRefusedWithoutItsPassword(t *testing.T) {
	needBinary(t)
	const secret = "Hunter2Secret"
	cf := site(`
	keygate {
		store {env.KG_STORE}
		ratelimit redis {env.KG_REDIS}
		scope mail.send POST /send
	}
	respond 200
`)
	const unencoded = "not a URL: characters such as % # ? / @ in the user name or password must be percent-encoded"
	for _, tc := range []struct {
		name, store, redis, want string
	}{
		{"a PostgreSQL URI", "postgres:kg:" + secret + "@127.0.0.1/keygate", "", "postgres:xxxxx: want postgres://…"},
		{"a PostgreSQL URI with one slash", "postgresql:/kg:" + secret + "@127.0.0.1/keygate", "", "postgresql:xxxxx: want postgresql://…"},
		{"a Redis URL", "", "redis:" + secret + "@127.0.0.1:" + strconv.Itoa(freePort(t)), `ratelimit redis \"redis:xxxxx\": want redis://`}, // as the JSON log line quotes it
		{"a PostgreSQL password of digits, a slash and more", "postgres://kg:5432/" + secret + "@127.0.0.1/keygate", "", unencoded},
		{"a PostgreSQL password holding @ and a slash", "postgres://kg:p@ss/" + secret + "@127.0.0.1/keygate", "", unencoded},
		{"a PostgreSQL password with a question mark", "postgresql://kg:5432?" + secret + "@127.0.0.1/keygate", "", unencoded},
		{"a Redis password of digits, a slash and more", "", "redis://kg:6379/" + secret + "@127.0.0.1:6379/0", unencoded},
		{"a Redis password holding @ and a slash", "", "rediss://:p@ss/" + secret + "@127.0.0.1:6379", unencoded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			work := filepath.Join(dir, "work") // caddy's working directory: nothing may appear in it
			os.Mkdir(work, 0o700)
			body := cf
			if tc.redis == "" {
				body = strings.Replace(body, "\t\tratelimit redis {env.KG_REDIS}\n", "", 1)
			}
			if tc.store == "" {
				tc.store = "sqlite:" + filepath.Join(dir, "keys.db")
			}
			path := filepath.Join(dir, "Caddyfile")
			os.WriteFile(path, []byte(strings.NewReplacer("{ADMIN}", "127.0.0.1:0", "{PORT}", strconv.Itoa(freePort(t))).Replace(body)), 0o600)
			env := append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "KG_STORE="+tc.store, "KG_REDIS="+tc.redis)

			validate := exec.Command(caddyBin, "validate", "--config", path, "--adapter", "caddyfile")
			validate.Env, validate.Dir = env, work
			out, err := validate.CombinedOutput()
			if err == nil {
				t.Errorf("caddy validate accepted it:\n%s", out)
			}
			if !bytes.Contains(out, []byte(tc.want)) || bytes.Contains(out, []byte(secret)) {
				t.Errorf("caddy validate said, want %q and never the password:\n%s", tc.want, out)
			}
			if tc.redis == "" {
				issue := exec.Command(caddyBin, "keys", "issue", "--store", tc.store, "--name", "x", "--scope", "mail.send")
				issue.Env, issue.Dir = env, work
				var stdout, stderr bytes.Buffer
				issue.Stdout, issue.Stderr = &stdout, &stderr
				err := issue.Run()
				if code := exitCode(err); code != 2 || !strings.Contains(stderr.String(), tc.want) || strings.Contains(stderr.String()+stdout.String(), secret) {
					t.Errorf("caddy keys issue --store %s: exit %d, want 2 with %q and never the password:\n%s%s", tc.store, code, tc.want, stdout.String(), stderr.String())
				}
			}
			if made, _ := os.ReadDir(work); len(made) > 0 {
				t.Errorf("left in the working directory: %s", made[0].Name())
			}
		})
	}
}

// exitCode is the exit status a command's Run or Wait error gives.
func exitCode(err error) int {
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// keyOf is the "key" of an issue's JSON answer.
func keyOf(t *testing.T, body []byte) string {
	t.Helper()
	var k issuedKey
	if err := json.Unmarshal(body, &k); err != nil || k.Key == "" {
		t.Fatalf("no key in %s: %v", body, err)
	}
	return k.Key
}

// Where handlers use several stores, the admin API is told which by the
// name its error lists, the password written xxxxx: Caddy's admin log
// writes the URI of every request, so ?store= with the store's URI put the
// PostgreSQL password in it (the name listed was not taken: keygate opened
// it with the password "xxxxx", refused by the server).
func TestTheAdminAPITakesAStoreByTheNameItGivesIt(t *testing.T) {
	needBinary(t)
	const secret = "AdminLogSecret7"
	pg := testservers.StartPostgres(t)
	pgURI := pg.RequirePassword(secret)
	up := newUpstream(t)
	other := "sqlite:" + filepath.Join(t.TempDir(), "other.db")
	g := startGateway(t, gatewayConfig{store: pgURI, upstream: up.URL, env: []string{"KG_PG=" + pgURI}, caddyfile: site(`
	handle /a/* {
		keygate {
			store {env.KG_PG}
			scope mail.send POST /a/send
		}
		reverse_proxy {UPSTREAM}
	}
	handle /b/* {
		keygate {
			store ` + other + `
			scope mail.send POST /b/send
		}
		reverse_proxy {UPSTREAM}
	}
`)})
	name := store.RedactURI(pgURI)
	if name == pgURI || strings.Contains(name, secret) {
		t.Fatalf("the store's name %q holds its password", name)
	}
	r := g.admin("GET", "/keygate/keys", nil)
	if r.Status != 400 || !strings.Contains(string(r.Body), name) {
		t.Errorf("GET /keygate/keys with two stores: %d %s, want 400 listing %s", r.Status, r.Body, name)
	}
	q := "?store=" + url.QueryEscape(name)
	r = g.admin("POST", "/keygate/keys"+q, map[string]any{"name": "by-name", "scopes": []string{"mail.send"}})
	if r.Status != 201 {
		t.Fatalf("POST /keygate/keys%s: %d %s", q, r.Status, r.Body)
	}
	key := keyOf(t, r.Body)
	if got := g.call("POST", "/a/send", key, []byte("{}")); got.Status != 202 {
		t.Errorf("the key issued by the store's name: %d %s on its store's route", got.Status, got.Body)
	}
	if got := g.call("POST", "/b/send", key, []byte("{}")); got.Status != 401 {
		t.Errorf("the key issued by the store's name: %d %s on the other store's route", got.Status, got.Body)
	}
	if r := g.admin("GET", "/keygate/keys"+q, nil); r.Status != 200 || !strings.Contains(string(r.Body), "by-name") {
		t.Errorf("GET /keygate/keys%s: %d %s", q, r.Status, r.Body)
	}
	time.Sleep(100 * time.Millisecond) // the admin log line is written before the answer; let it reach the file
	if logs := g.logs(); strings.Contains(logs, secret) {
		t.Errorf("the password is in caddy's log:\n%s", logs)
	} else if !strings.Contains(logs, "/keygate/keys?store=") {
		t.Errorf("caddy's log has no admin request line to look in:\n%s", logs)
	}
}

// The forms that read a secret from stdin keep it off the command line
// every local user sees (/proc/<pid>/cmdline, what ps prints) while the
// command runs: revoke --key -, copy-store --to -, and --idempotency-key -
// (which with the store unlocks the key it made for a day; it could only be
// given on the command line). And issue --json,
// as a CI job captures it ($(… | jq -r .key)), writes the key on stdout
// only: stderr, which the job's log shows, has the warnings.
func TestSecretsGivenOnStdinAreNeverOnTheCommandLine(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	keygate {
		store {STORE}
		scope mail.send POST /send
	}
	reverse_proxy {UPSTREAM}
`), upstream: up.URL})

	// running starts caddy keys ARGS with a stdin it has not written to
	// yet, and returns what /proc says of the process while it waits on it,
	// and a func that writes the secret and waits for the exit.
	running := func(t *testing.T, args ...string) (cmdline, environ string, finish func(secret string) (string, string, error)) {
		t.Helper()
		cmd := exec.Command(caddyBin, append(append([]string{"keys"}, args...), "--store", g.store)...)
		cmd.Env = g.environ()
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		proc := fmt.Sprintf("/proc/%d/", cmd.Process.Pid)
		c, err := os.ReadFile(proc + "cmdline")
		if err != nil {
			t.Fatal(err)
		}
		e, _ := os.ReadFile(proc + "environ")
		return string(c), string(e), func(secret string) (string, string, error) {
			io.WriteString(in, secret+"\n")
			in.Close()
			err := cmd.Wait()
			return stdout.String(), stderr.String(), err
		}
	}

	t.Run("issue --json: the key on stdout only", func(t *testing.T) {
		// A scope no route uses: a warning on stderr.
		out, errOut, err := g.keysRaw("issue", "--json", "--name", "ci", "--scope", "templates.read")
		if err != nil || !strings.Contains(errOut, "warning:") {
			t.Fatalf("issue: %v, stderr %q", err, errOut)
		}
		key := keyOf(t, []byte(out))
		if strings.Contains(errOut, key) || strings.Contains(errOut, key[len("kg_live_"):]) {
			t.Errorf("the key is on stderr: %s", errOut)
		}
	})

	t.Run("revoke --key -", func(t *testing.T) {
		k := g.issue("--name", "leaked", "--scope", "mail.send")
		cmdline, environ, finish := running(t, "revoke", "--key", "-", "--json", "--reason", "leaked")
		out, errOut, err := finish(k.Key)
		if err != nil || !strings.Contains(out, k.ID) || !strings.Contains(out, "revoked_at") {
			t.Fatalf("revoke --key -: %v\n%s%s", err, out, errOut)
		}
		secret := k.Key[len("kg_live_"):]
		if strings.Contains(cmdline, secret) || strings.Contains(environ, secret) {
			t.Errorf("the key is in the running command's /proc cmdline or environ: %q", cmdline)
		}
		if strings.Contains(out+errOut, secret) {
			t.Errorf("the key is printed:\n%s%s", out, errOut)
		}
	})

	t.Run("issue --idempotency-key -", func(t *testing.T) {
		var keys []string
		for _, idem := range []string{"IdemSecret-5b1c9e", "IdemSecret-5b1c9e", "IdemSecret-other"} {
			cmdline, environ, finish := running(t, "issue", "--json", "--name", "retried", "--scope", "mail.send", "--idempotency-key", "-")
			out, errOut, err := finish(idem)
			if err != nil {
				t.Fatalf("issue --idempotency-key -: %v\n%s%s", err, out, errOut)
			}
			keys = append(keys, keyOf(t, []byte(out)))
			if strings.Contains(cmdline, idem) || strings.Contains(environ, idem) {
				t.Errorf("the idempotency key is in the running command's /proc cmdline or environ: %q", cmdline)
			}
		}
		if keys[0] != keys[1] {
			t.Errorf("the run again with the idempotency key from stdin made another key")
		}
		if keys[2] == keys[0] {
			t.Errorf("a run with another idempotency key from stdin answered the first run's key")
		}
	})

	t.Run("copy-store --to -", func(t *testing.T) {
		pg := testservers.StartPostgres(t)
		const password = "CopyStoreSecret9"
		to := pg.RequirePassword(password)
		g.stop() // copy-store refuses an SQLite store a gateway has open
		cmdline, environ, finish := running(t, "copy-store", "--to", "-", "--json")
		out, errOut, err := finish(to)
		if err != nil || !strings.Contains(out, `"keys": 4`) {
			t.Fatalf("copy-store --to -: %v\n%s%s", err, out, errOut)
		}
		if strings.Contains(cmdline, password) || strings.Contains(environ, password) {
			t.Errorf("the password is in the running command's /proc cmdline or environ: %q", cmdline)
		}
		if strings.Contains(out+errOut, password) {
			t.Errorf("the password is printed:\n%s%s", out, errOut)
		}
	})
}
