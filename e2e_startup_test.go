package keygate_test

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

// validateCaddyfile loads a Caddyfile in the real binary as `caddy adapt
// --validate` does (every module provisioned, the store opened) and returns
// what it logged.
func validateCaddyfile(t *testing.T, caddyfile string, env ...string) (string, error) {
	t.Helper()
	needBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "adapt", "--validate", "--config", path)
	cmd.Env = append(append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
	), env...)
	var logs strings.Builder
	cmd.Stderr = &logs
	err := cmd.Run()
	return logs.String(), err
}

const storeSite = "http://127.0.0.1:9 {\n\tkeygate {\n\t\tstore {env.TEST_STORE}\n\t\tscope mail.send /send\n\t}\n\trespond 202\n}\n"

// `caddy validate` says which store it checked (it does not open it for
// use: see TestAnUpgradeKeepsEveryKeyCountAndEvent), never with its password.
func TestValidateNamesTheStoreItChecked(t *testing.T) {
	needBinary(t)
	t.Run("sqlite: its path", func(t *testing.T) {
		uri := "sqlite:" + filepath.Join(t.TempDir(), "keys.db")
		logs, err := validateCaddyfile(t, storeSite, "TEST_STORE="+uri)
		if err != nil {
			t.Fatalf("%v\n%s", err, logs)
		}
		if !regexp.MustCompile(`"msg":"keygate: checked [^"]*","store":"` + regexp.QuoteMeta(uri) + `"`).MatchString(logs) {
			t.Errorf("want a line naming %s:\n%s", uri, logs)
		}
	})
	t.Run("postgres: its address without the password", func(t *testing.T) {
		u, err := url.Parse(testservers.StartPostgres(t).URI)
		if err != nil {
			t.Fatal(err)
		}
		const password = "pw-that-must-not-be-logged" // the test server trusts any password
		u.User = url.UserPassword(u.User.Username(), password)
		logs, err := validateCaddyfile(t, storeSite, "TEST_STORE="+u.String())
		if err != nil {
			t.Fatalf("%v\n%s", err, logs)
		}
		want := `","store":"postgres://` + u.User.Username() + ":xxxxx@" + u.Host
		if !strings.Contains(logs, `"msg":"keygate: checked`) || !strings.Contains(logs, want) {
			t.Errorf("want a line containing %s:\n%s", want, logs)
		}
		if strings.Contains(logs, password) {
			t.Errorf("the log contains the store's password:\n%s", logs)
		}
	})
}

// A cluster node whose environment lacks a variable must not start on a
// store or limits of its own.
func TestAStoreOrRedisThatIsEmptyOncePlaceholdersAreReplacedIsRefused(t *testing.T) {
	for _, tc := range []struct{ name, option, want, directive string }{
		{"store", "store {env.KEYGATE_TEST_UNSET}",
			`keygate: store \"{env.KEYGATE_TEST_UNSET}\" is empty once its placeholders are replaced`, ""},
		{"ratelimit redis", "ratelimit redis {env.KEYGATE_TEST_UNSET}",
			`keygate: ratelimit redis \"{env.KEYGATE_TEST_UNSET}\" is empty once its placeholders are replaced`, ""},
		// The console's store is "as the gateway's": on a cluster an unset
		// variable made it manage keys in a local SQLite file no gateway
		// reads.
		{"the console's store", "store {env.KEYGATE_TEST_UNSET}",
			`keygate_console: store \"{env.KEYGATE_TEST_UNSET}\" is empty once its placeholders are replaced`, "console"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caddyfile := "http://127.0.0.1:9 {\n\tkeygate {\n\t\t" + tc.option + "\n\t\tscope mail.send /send\n\t}\n\trespond 202\n}\n"
			if tc.directive == "console" {
				caddyfile = "http://127.0.0.1:9 {\n\tbasic_auth {\n\t\tann $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG\n\t}\n" +
					"\tkeygate_console {\n\t\t" + tc.option + "\n\t}\n}\n"
			}
			logs, err := validateCaddyfile(t, caddyfile)
			if err == nil {
				t.Fatalf("validated with %s unset:\n%s", tc.option, logs)
			}
			if !strings.Contains(logs, tc.want) {
				t.Errorf("want %s:\n%s", tc.want, logs)
			}
		})
	}
}

// An SQLite path the gateway cannot make or open is the configuration's
// fault, not an outage: the config is refused, naming the path, instead of
// loading routes that answer 503 until someone reads a warning.
func TestAStorePathThatCannotBeUsedIsRefused(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path string }{
		{"under a directory that cannot exist", "/proc/keygate-nope/keys.db"},
		{"under a regular file", filepath.Join(file, "keys.db")},
		{"a directory", dir},
		{"an empty file (a store truncated)", file},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs, err := validateCaddyfile(t, storeSite, "TEST_STORE=sqlite:"+tc.path)
			if err == nil {
				t.Fatalf("validated with store %s:\n%s", tc.path, logs)
			}
			if !strings.Contains(logs, tc.path) {
				t.Errorf("the error does not name %s:\n%s", tc.path, logs)
			}
			if strings.Contains(logs, "does not answer") {
				t.Errorf("taken for an outage:\n%s", logs)
			}
		})
	}
}

// `caddy validate` opens the store to check it, and closes it before it
// exits: no write-ahead log is left beside the file (one left behind makes
// the next start refuse to create a store there).
func TestValidateClosesTheStoreItOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	logs, err := validateCaddyfile(t, storeSite, "TEST_STORE=sqlite:"+path)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	for _, f := range []string{path + "-wal", path + "-shm"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("caddy validate left %s behind: the store was not closed\n%s", filepath.Base(f), logs)
		}
	}
}

// key_header takes placeholders as store does: `key_header
// {env.KEY_HEADER}` reads keys from the header the variable names (it was
// kept as it was written, so the route read a header "{Env.key_header}"
// no client sends and told clients to send that), and one that is empty
// once replaced is refused at load.
func TestAKeyHeaderTakesPlaceholders(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, env: []string{"KG_TEST_KEY_HEADER=X-Custom-Key"}, caddyfile: site(`
	keygate {
		store {STORE}
		key_header {env.KG_TEST_KEY_HEADER}
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)})
	k := g.issue("--name", "crm", "--scope", "mail.send")
	r := g.call("POST", "/v3/mail/send", "", []byte(`{}`), "X-Custom-Key", k.Key)
	if r.Status != 202 {
		t.Fatalf("a key in the header {env.KG_TEST_KEY_HEADER} names: %d %s", r.Status, r.Body)
	}
	if v := up.last().Header.Get("X-Custom-Key"); v != "" {
		t.Errorf("upstream saw X-Custom-Key %q", v)
	}
	if r := g.call("POST", "/v3/mail/send", "", []byte(`{}`)); strings.Contains(string(r.Body), "{") && strings.Contains(string(r.Body), "env.") {
		t.Errorf("the denial names the placeholder, not the header: %s", r.Body)
	}

	caddyfile := "http://127.0.0.1:9 {\n\tkeygate {\n\t\tkey_header {env.KEYGATE_TEST_UNSET}\n\t\tscope mail.send /send\n\t}\n\trespond 202\n}\n"
	logs, err := validateCaddyfile(t, caddyfile)
	if err == nil {
		t.Fatalf("validated with key_header {env.KEYGATE_TEST_UNSET} unset:\n%s", logs)
	}
	if want := `keygate: key_header \"{env.KEYGATE_TEST_UNSET}\" is empty once its placeholders are replaced`; !strings.Contains(logs, want) {
		t.Errorf("want %s:\n%s", want, logs)
	}
}
