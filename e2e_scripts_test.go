package keygate_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The CLI and the admin API as the scripts of a platform team use them: a
// CI job issuing keys, a nightly rotation, an offboarding revoke, a
// dashboard reading lists. A script reads JSON and exit statuses, not
// sentences.

// scriptGateway starts a gateway whose route requires mail.send.
func scriptGateway(t *testing.T) *gateway {
	up := newUpstream(t)
	return startGateway(t, gatewayConfig{caddyfile: site(`
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`), upstream: up.URL})
}

// exitStatus is the exit status of a finished command (0 when err is nil).
func exitStatus(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("the command did not run: %v", err)
	}
	if ee != nil {
		return ee.ExitCode()
	}
	return 0
}

func TestCLIFailuresTellScriptsWhatWentWrong(t *testing.T) {
	g := scriptGateway(t)
	k := g.issue("--name", "crm", "--scope", "mail.send")
	g.keys("rotate", k.ID, "--grace", "1h")
	gone := g.issue("--name", "old", "--scope", "mail.send")
	g.keys("revoke", gone.ID)
	missing := "sqlite:" + filepath.Join(t.TempDir(), "typo.db")
	// A free port: nothing answers there, the connection is refused at once.
	down := fmt.Sprintf("postgres://u:pw@127.0.0.1:%d/db?connect_timeout=2", freePort(t))
	// The FILE of backup and restore is the command line's too: a file that
	// is there already, or is no backup (a text file is "not a database" to
	// SQLite, which in the store itself would be damage, exit 5).
	files := t.TempDir()
	text := filepath.Join(files, "notes.txt")
	if err := os.WriteFile(text, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		args   []string
		status int
		code   string
		store  string // default: the gateway's
	}{
		{"an unknown id is not_found", []string{"show", "key_doesnotexist"}, 3, "not_found", ""},
		{"an owner without active keys is not_found", []string{"revoke", "--owner", "nobody"}, 3, "not_found", ""},
		{"a value the CLI refuses is invalid_input", []string{"update", k.ID, "--rate", "fast"}, 2, "invalid_input", ""},
		{"a missing argument is invalid_input", []string{"show"}, 2, "invalid_input", ""},
		{"an unknown flag is invalid_input", []string{"list", "--bogus"}, 2, "invalid_input", ""},
		{"a mistyped subcommand is invalid_input", []string{"revok", k.ID}, 2, "invalid_input", ""},
		{"rotating a key rotated already is a conflict", []string{"rotate", k.ID}, 4, "conflict", ""},
		{"rotating a revoked key is a conflict", []string{"rotate", gone.ID}, 4, "conflict", ""},
		{"an empty id is invalid_input, never not_found", []string{"show", ""}, 2, "invalid_input", ""},
		{"an empty id is invalid_input, never every key's events", []string{"events", ""}, 2, "invalid_input", ""},
		{"an id with an escape sequence is invalid_input, not written back to the terminal", []string{"show", "key_\x1b[2J\x1b]0;pwned\a"}, 2, "invalid_input", ""},
		{"a key given as an owner is invalid_input, never an empty list", []string{"list", "--owner", k.Key}, 2, "invalid_input", ""},
		{"an empty --allow-ip is invalid_input, never a key usable from any address", []string{"issue", "--name", "crm", "--scope", "mail.send", "--allow-ip", ""}, 2, "invalid_input", ""},
		{"an empty --sender-domain is invalid_input, never a key that sends from any domain", []string{"issue", "--name", "crm", "--scope", "mail.send", "--sender-domain", " , "}, 2, "invalid_input", ""},
		{"an update's empty --allow-ip is invalid_input, never a restriction lifted", []string{"update", k.ID, "--allow-ip", ""}, 2, "invalid_input", ""},
		{"a backup onto a file that exists is invalid_input", []string{"backup", text}, 2, "invalid_input", ""},
		{"a backup into a directory that does not exist is invalid_input", []string{"backup", filepath.Join(files, "no", "b.db")}, 2, "invalid_input", ""},
		{"a restore from a file that is no backup is invalid_input, never a damaged store", []string{"restore", text, "--yes"}, 2, "invalid_input", missing},
		{"a restore from a file that does not exist is invalid_input", []string{"restore", filepath.Join(files, "none.db"), "--yes"}, 2, "invalid_input", missing},
		{"a store that does not exist is invalid_input, never not_found", []string{"show", k.ID}, 2, "invalid_input", missing},
		{"a store that does not answer is store_unavailable", []string{"show", k.ID}, 5, "store_unavailable", down},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, asJSON := range []bool{false, true} {
				args := c.args
				if asJSON {
					args = append(append([]string{}, args...), "--json")
				}
				st := g.store
				if c.store != "" {
					st = c.store
				}
				var out, stderr bytes.Buffer
				cmd := exec.Command(caddyBin, append(append([]string{"keys"}, args...), "--store", st)...)
				cmd.Env, cmd.Stdout, cmd.Stderr = g.environ(), &out, &stderr
				err := cmd.Run()
				if got := exitStatus(t, err); got != c.status {
					t.Errorf("%v: exit status %d, want %d; stderr: %s", args, got, c.status, stderr.String())
				}
				if out.Len() > 0 {
					t.Errorf("%v: a failure printed on stdout: %q", args, out.String())
				}
				if strings.ContainsAny(stderr.String(), "\x1b\a") || strings.Contains(stderr.String(), k.Key[len("kg_live_"):]) {
					t.Errorf("%v: stderr writes back a control character or a key: %q", args, stderr.String())
				}
				lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
				last := lines[len(lines)-1]
				if !asJSON {
					if strings.HasPrefix(last, "{") || !strings.HasPrefix(last, "caddy keys") {
						t.Errorf("%v: without --json the error is one line for people: %q", args, last)
					}
					continue
				}
				var e struct {
					Error struct{ Code, Message string }
				}
				if err := json.Unmarshal([]byte(last), &e); err != nil || e.Error.Code != c.code || e.Error.Message == "" {
					t.Errorf("%v: stderr's last line is not {\"error\":{\"code\":%q,…}}: %q (%v)", args, c.code, last, err)
				}
				if strings.Contains(last, "pw@") {
					t.Errorf("%v: the error repeats the store's password: %s", args, last)
				}
			}
		})
	}
}

// A script that builds its JSON from variables sends `"allowed_ips":
// ["$CIDR"]` with CIDR unset as [""]: refused as the CLI refuses --allow-ip
// "", never a key usable from any address or a restriction lifted. An
// empty list is the deliberate way to lift one; a field left out changes
// nothing.
func TestTheAdminAPIRefusesAListOfOnlyEmptyValues(t *testing.T) {
	g := scriptGateway(t)
	k := g.issue("--name", "crm", "--scope", "mail.send", "--allow-ip", "10.0.0.0/8", "--sender-domain", "example.com")
	count := func() int {
		var recs []json.RawMessage
		json.Unmarshal(g.admin("GET", "/keygate/keys", nil).Body, &recs)
		return len(recs)
	}
	before := count()
	for _, c := range []struct{ name, method, body, says string }{
		{"an issue's empty allowed_ips", "POST", `{"name":"crm","scopes":["mail.send"],"allowed_ips":[""]}`, "allowed IPs"},
		{"an issue's blank sender_domains", "POST", `{"name":"crm","scopes":["mail.send"],"sender_domains":[" "]}`, "sender domains"},
		{"an issue's allowed_ips of commas", "POST", `{"name":"crm","scopes":["mail.send"],"allowed_ips":[" , ",""]}`, "allowed IPs"},
		{"an issue's allowed_ips as a string", "POST", `{"name":"crm","scopes":["mail.send"],"allowed_ips":""}`, "allowed_ips"},
		{"an update's empty allowed_ips", "PATCH", `{"allowed_ips":[""]}`, "allowed IPs"},
		{"an update's blank sender_domains", "PATCH", `{"sender_domains":[" "]}`, "sender domains"},
		{"an update's empty add_allowed_ips", "PATCH", `{"add_allowed_ips":[""]}`, "allowed IPs"},
		{"an update's empty remove_sender_domains", "PATCH", `{"remove_sender_domains":[""]}`, "sender domains"},
		{"an update's empty scopes", "PATCH", `{"scopes":[""]}`, "scopes"},
	} {
		path := "/keygate/keys"
		if c.method == "PATCH" {
			path += "/" + k.ID
		}
		if r := g.admin(c.method, path, []byte(c.body)); r.Status != 400 || r.code() != "invalid_input" || !strings.Contains(string(r.Body), c.says) {
			t.Errorf("%s: %d %s, want 400 invalid_input naming %s", c.name, r.Status, r.Body, c.says)
		}
	}
	if n := count(); n != before {
		t.Errorf("refused issues made %d keys", n-before)
	}
	rec := func() map[string]any {
		var m map[string]any
		json.Unmarshal(g.admin("GET", "/keygate/keys/"+k.ID, nil).Body, &m)
		return m
	}
	if m := rec(); fmt.Sprint(m["allowed_ips"], m["sender_domains"]) != "[10.0.0.0/8] [example.com]" {
		t.Errorf("refused updates changed the key: %v %v", m["allowed_ips"], m["sender_domains"])
	}
	if r := g.admin("PATCH", "/keygate/keys/"+k.ID, []byte(`{"max_recipients":5,"sender_domains":null}`)); r.Status != 200 {
		t.Errorf("an update leaving the lists out: %d %s", r.Status, r.Body)
	} else if m := rec(); fmt.Sprint(m["allowed_ips"], m["sender_domains"]) != "[10.0.0.0/8] [example.com]" {
		t.Errorf("an update leaving the lists out changed them: %v %v", m["allowed_ips"], m["sender_domains"])
	}
	if r := g.admin("PATCH", "/keygate/keys/"+k.ID, []byte(`{"allowed_ips":[],"sender_domains":[]}`)); r.Status != 200 {
		t.Errorf("an update's empty lists: %d %s", r.Status, r.Body)
	} else if m := rec(); m["allowed_ips"] != nil || m["sender_domains"] != nil {
		t.Errorf("an update's empty lists did not lift the restrictions: %v %v", m["allowed_ips"], m["sender_domains"])
	}
	if r := g.admin("POST", "/keygate/keys", []byte(`{"name":"any","scopes":["mail.send"],"allowed_ips":[]}`)); r.Status != 201 || strings.Contains(string(r.Body), "allowed_ips") {
		t.Errorf("an issue's empty allowed_ips: %d %s, want a key without allowed IPs", r.Status, r.Body)
	}
}

func TestARepeatedRevokeSaysItWasDoneAlready(t *testing.T) {
	g := scriptGateway(t)
	type answer struct {
		ID           string   `json:"id"`
		RevokedAt    *string  `json:"revoked_at"`
		RevokeReason string   `json:"revoke_reason"`
		Warning      *string  `json:"warning"`
		Warnings     []string `json:"warnings"`
	}
	cli := func(id, reason string) answer {
		t.Helper()
		var a answer
		out := g.keys("revoke", id, "--reason", reason, "--json")
		if err := json.Unmarshal([]byte(out), &a); err != nil {
			t.Fatalf("revoke --json: %v: %s", err, out)
		}
		return a
	}
	api := func(id, reason string) answer {
		t.Helper()
		r := g.admin("POST", "/keygate/keys/"+id+"/revoke", map[string]string{"reason": reason})
		var a answer
		if err := json.Unmarshal(r.Body, &a); r.Status != 200 || err != nil {
			t.Fatalf("POST revoke: %d %s", r.Status, r.Body)
		}
		return a
	}
	for _, first := range []struct {
		name   string
		revoke func(id, reason string) answer
	}{{"CLI", cli}, {"admin API", api}} {
		for _, again := range []struct {
			name   string
			revoke func(id, reason string) answer
		}{{"CLI", cli}, {"admin API", api}} {
			t.Run(first.name+" then "+again.name, func(t *testing.T) {
				k := g.issue("--name", "offboarded", "--scope", "mail.send")
				done := first.revoke(k.ID, "left the company")
				if done.Warning != nil || done.RevokedAt == nil {
					t.Fatalf("first revoke: %+v", done)
				}
				repeat := again.revoke(k.ID, "retried")
				if repeat.Warning == nil || !strings.Contains(*repeat.Warning, "already revoked") {
					t.Errorf("a repeated revoke does not say it changed nothing: %+v", repeat)
				}
				// Read where issue, rotate and update put theirs, too.
				if len(repeat.Warnings) != 1 || repeat.Warning == nil || repeat.Warnings[0] != *repeat.Warning || done.Warnings != nil {
					t.Errorf("warnings of a repeated revoke: %q (first revoke: %q), want [the warning]", repeat.Warnings, done.Warnings)
				}
				if repeat.RevokeReason != "left the company" || *repeat.RevokedAt != *done.RevokedAt {
					t.Errorf("a repeated revoke changed the first one's time or reason: %+v, then %+v", done, repeat)
				}
			})
		}
	}
}

func TestListsFilterAsScriptsAskAndRefuseWhatTheyDoNotRead(t *testing.T) {
	g := scriptGateway(t)
	live := g.issue("--name", "crm", "--scope", "mail.send", "--owner", "sales")
	test := g.issue("--name", "crm-staging", "--scope", "mail.send", "--owner", "sales", "--env", "test")
	gone := g.issue("--name", "old", "--scope", "mail.send", "--owner", "ops")
	g.keys("revoke", gone.ID)
	off := g.issue("--name", "paused", "--scope", "mail.send", "--owner", "ops")
	g.keys("update", off.ID, "--disable")

	idsOf := func(t *testing.T, body []byte) string {
		t.Helper()
		var recs []struct{ ID string }
		if err := json.Unmarshal(body, &recs); err != nil {
			t.Fatalf("not an array of records: %v: %s", err, body)
		}
		var out []string
		for _, r := range recs {
			out = append(out, r.ID)
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		name  string
		query string
		args  []string
		want  []string
	}{
		{"revoked keys only", "status=revoked", []string{"--status", "revoked"}, []string{gone.ID}},
		{"disabled keys of an owner", "owner=ops&status=disabled", []string{"--owner", "ops", "--status", "disabled"}, []string{off.ID}},
		{"test keys", "env=test", []string{"--env", "test"}, []string{test.ID}},
		{"active live keys, oldest first", "env=live&status=active", []string{"--env", "live", "--status", "active"}, []string{live.ID}},
		{"everything, oldest first", "all=true", []string{"--all"}, []string{live.ID, test.ID, gone.ID, off.ID}},
		{"a page", "all=true&limit=2", []string{"--all", "--limit", "2"}, []string{live.ID, test.ID}},
		{"the page after a key", "all=true&limit=2&after=" + test.ID, []string{"--all", "--limit", "2", "--after", test.ID}, []string{gone.ID, off.ID}},
		{"a page of a filter, after a key it leaves out", "owner=ops&after=" + gone.ID, []string{"--owner", "ops", "--after", gone.ID}, []string{off.ID}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := strings.Join(c.want, " ")
			r := g.admin("GET", "/keygate/keys?"+c.query, nil)
			if got := idsOf(t, r.Body); r.Status != 200 || got != want {
				t.Errorf("GET /keygate/keys?%s: %d %q, want %q", c.query, r.Status, got, want)
			}
			out := g.keys(append([]string{"list", "--json"}, c.args...)...)
			if got := idsOf(t, []byte(out)); got != want {
				t.Errorf("caddy keys list %v: %q, want %q", c.args, got, want)
			}
		})
	}

	t.Run("a filter that is not one is refused, never answered with every key", func(t *testing.T) {
		for _, path := range []string{
			"/keygate/keys?status=Revoked",
			"/keygate/keys?env=prod",
			"/keygate/keys?state=revoked",
			"/keygate/keys?limit=five",
			"/keygate/keys?limit=-1",
			"/keygate/keys?after=key_nosuchkey",
			"/keygate/keys?page=2",
			"/keygate/events?id=" + live.ID,
			"/keygate/keys/" + live.ID + "?fields=id",
			"/keygate/keys/" + live.ID + "/events?key=" + gone.ID,
			// Read whole or not at all: Go's parser drops a pair after a
			// ';' or with a bad escape, and Get reads a repeated one's first.
			"/keygate/keys?status=revoked;limit=1",
			"/keygate/keys?status=%zzrevoked",
			"/keygate/keys?status=revoked&status=active",
			"/keygate/keys?owner=" + live.Key,
			"/keygate/events?key=",
		} {
			r := g.admin("GET", path, nil)
			if r.Status != 400 || r.code() != "invalid_input" {
				t.Errorf("GET %s: %d %s, want 400 invalid_input", path, r.Status, r.Body)
			}
			if strings.Contains(string(r.Body), live.Key[len("kg_live_"):]) {
				t.Errorf("GET %s: the answer repeats the key: %s", path, r.Body)
			}
		}
		if r := g.admin("GET", "/keygate/keys?owner=sales&store="+g.store, nil); r.Status != 200 {
			t.Errorf("?store= is read by every route: %d %s", r.Status, r.Body)
		}
		_, stderr, err := g.keysRaw("list", "--status", "gone", "--json")
		if exitStatus(t, err) != 2 || !strings.Contains(stderr, "invalid_input") {
			t.Errorf("caddy keys list --status gone: %v %s", err, stderr)
		}
		_, stderr, err = g.keysRaw("list", "--after", "key_nosuchkey", "--json")
		if exitStatus(t, err) != 2 || !strings.Contains(stderr, "invalid_input") {
			t.Errorf("caddy keys list --after key_nosuchkey: %v %s", err, stderr)
		}
	})

	t.Run("a full page links to the next; the pages hold every key once", func(t *testing.T) {
		var walked []string
		path := "/keygate/keys?all=true&limit=1"
		for range 10 {
			r := g.admin("GET", path, nil)
			if r.Status != 200 {
				t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
			}
			if got := idsOf(t, r.Body); got != "" {
				walked = append(walked, got)
			}
			link := r.Header.Get("Link")
			if link == "" {
				break
			}
			m := regexp.MustCompile(`^<(/keygate/keys\?[^>]+)>; rel="next"$`).FindStringSubmatch(link)
			if m == nil {
				t.Fatalf("GET %s: Link %q, want <…>; rel=\"next\"", path, link)
			}
			path = m[1]
		}
		if got, want := strings.Join(walked, " "), strings.Join([]string{live.ID, test.ID, gone.ID, off.ID}, " "); got != want {
			t.Errorf("walking the Link headers: %q, want %q", got, want)
		}
		out, stderr, err := g.keysRaw("list", "--all", "--limit", "3")
		if err != nil || strings.Count(out, "\n") != 4 || !strings.Contains(stderr, "--after "+gone.ID) {
			t.Errorf("caddy keys list --limit 3 (a full page): %v\n%s\n%s; want 3 keys and the next page's --after on stderr", err, out, stderr)
		}
	})

	t.Run("a body is one JSON value, read whole or refused", func(t *testing.T) {
		k := g.issue("--name", "pasted", "--scope", "mail.send")
		var manyScopes strings.Builder
		for i := range 100000 {
			fmt.Fprintf(&manyScopes, "s%d,", i)
		}
		for _, c := range []struct {
			path string
			body []byte
			says string
		}{
			{"/keygate/revoke", []byte(`{"key":"` + k.Key + `"} {"owner":"sales"}`), "more after its first value"},
			{"/keygate/keys/" + k.ID + "/revoke", []byte(`{"reason":"a"}` + "\n" + `{"reason":"b"}`), "more after its first value"},
			{"/keygate/keys/" + k.ID + "/revoke", []byte(`{"reason":"` + strings.Repeat("a", 1<<20) + `"}`), "larger than"},
			// 100,000 scopes in one string: refused at once, not a 503
			// after each was compared with every other for half a minute.
			{"/keygate/keys", fmt.Appendf(nil, `{"name":"many","scopes":["%s"],"force":true}`, manyScopes.String()), "at most 1000"},
		} {
			r := g.admin("POST", c.path, c.body)
			if r.Status != 400 || r.code() != "invalid_input" || !strings.Contains(string(r.Body), c.says) {
				t.Errorf("POST %s %.60q…: %d %.300s, want 400 invalid_input saying %q", c.path, c.body, r.Status, r.Body, c.says)
			}
		}
		if r := g.admin("GET", "/keygate/keys/"+k.ID, nil); strings.Contains(string(r.Body), "revoked_at") {
			t.Errorf("a refused body revoked the key: %s", r.Body)
		}
	})

	t.Run("a page's Link keeps the query as the caller wrote it, after set once", func(t *testing.T) {
		for _, c := range []struct{ query, want string }{
			{"store=" + g.store + "&status=active&limit=1", "store=" + g.store + "&status=active&limit=1&after=" + live.ID},
			{"after=" + live.ID + "&all=true&limit=1&store=" + g.store, "all=true&limit=1&store=" + g.store + "&after=" + test.ID},
		} {
			r := g.admin("GET", "/keygate/keys?"+c.query, nil)
			if want := "</keygate/keys?" + c.want + `>; rel="next"`; r.Status != 200 || r.Header.Get("Link") != want {
				t.Errorf("GET /keygate/keys?%s: %d Link %q, want %q", c.query, r.Status, r.Header.Get("Link"), want)
			}
		}
		r := g.admin("GET", "/keygate/events?store="+g.store+"&after=0&limit=1", nil)
		if want := "</keygate/events?store=" + g.store + `&limit=1&after=1>; rel="next"`; r.Header.Get("Link") != want {
			t.Errorf("GET /keygate/events?store=…&after=0&limit=1: %d Link %q, want %q", r.Status, r.Header.Get("Link"), want)
		}
	})
}

// documentedFields reads the table of a record's fields in
// docs/admin-api.md: field → type, and whether it is always present.
func documentedFields(t *testing.T) map[string]struct {
	typ    string
	always bool
} {
	t.Helper()
	doc, err := os.ReadFile("docs/admin-api.md")
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]struct {
		typ    string
		always bool
	}{}
	row := regexp.MustCompile("^\\| `([a-z_]+)` \\| ([a-z ]+) \\| ([^|]*) \\|$")
	for _, line := range strings.Split(string(doc), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			fields[m[1]] = struct {
				typ    string
				always bool
			}{m[2], strings.HasPrefix(m[3], "always")}
		}
	}
	if len(fields) < 20 {
		t.Fatalf("docs/admin-api.md documents %d record fields; its table was not found", len(fields))
	}
	return fields
}

func TestRecordsHaveTheFieldsTheDocsListTheSameInTheCLIAndTheAdminAPI(t *testing.T) {
	g := scriptGateway(t)
	doc := documentedFields(t)
	k := g.issue("--name", "crm", "--owner", "sales", "--scope", "mail.send", "--rate", "100/m", "--burst", "20",
		"--allow-ip", "127.0.0.1", "--sender-domain", "example.com", "--quota", "1000/d", "--max-recipients", "50",
		"--allow-on-behalf-of", "--expires", "90d")
	if r := g.call("POST", "/v3/mail/send", k.Key, []byte(`{}`)); r.Status != 202 {
		t.Fatalf("the key does not work: %d %s", r.Status, r.Body)
	}
	if eventually(t, 5*time.Second, func() bool {
		g.admin("GET", "/keygate/keys/"+k.ID+"/usage", nil) // writes the counts held in memory
		return strings.Contains(g.keys("show", k.ID, "--json"), "last_used_at")
	}) < 0 {
		t.Fatal("last_used_at never written")
	}
	var next issuedKey
	json.Unmarshal([]byte(g.keys("rotate", k.ID, "--json")), &next)
	g.keys("revoke", k.ID, "--reason", "rotated")
	plain := g.issue("--name", "plain", "--scope", "mail.send")

	seen := map[string]bool{}
	for _, id := range []string{k.ID, next.ID, plain.ID} {
		api := g.admin("GET", "/keygate/keys/"+id, nil)
		cli := g.keys("show", id, "--json")
		var a, c map[string]any
		if err := json.Unmarshal(api.Body, &a); api.Status != 200 || err != nil {
			t.Fatalf("GET /keygate/keys/%s: %d %s", id, api.Status, api.Body)
		}
		if err := json.Unmarshal([]byte(cli), &c); err != nil {
			t.Fatalf("caddy keys show %s --json: %v: %s", id, err, cli)
		}
		if !reflect.DeepEqual(a, c) {
			t.Errorf("%s: the admin API and the CLI write the record differently:\nAPI: %s\nCLI: %s", id, api.Body, cli)
		}
		for name, v := range a {
			seen[name] = true
			d, ok := doc[name]
			if !ok {
				t.Errorf("%s: field %q is not in docs/admin-api.md's table", id, name)
				continue
			}
			if got := jsonType(v); got != d.typ {
				t.Errorf("%s: field %q is a %s (%v); docs/admin-api.md says %s", id, name, got, v, d.typ)
			}
		}
		for name, d := range doc {
			if _, ok := a[name]; d.always && !ok {
				t.Errorf("%s: field %q, always present by docs/admin-api.md, is missing: %s", id, name, api.Body)
			}
		}
	}
	for name := range doc {
		if !seen[name] {
			t.Errorf("docs/admin-api.md documents field %q, which no record had", name)
		}
	}
}

// jsonType names v's JSON type as docs/admin-api.md's table does.
func jsonType(v any) string {
	switch v := v.(type) {
	case string:
		if _, err := time.Parse(time.RFC3339Nano, v); err == nil && strings.HasSuffix(v, "Z") {
			return "time"
		}
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		for _, e := range v {
			if _, ok := e.(string); !ok {
				return "array"
			}
		}
		return "array of strings"
	case nil:
		return "null"
	}
	return "object"
}

// The audit-log shipping loop docs/monitoring.md shows, run as written with
// the CLI on PATH: two runs, with a change between them, copy every event
// once, in order.
func TestTheDocsAuditShippingLoopCopiesEveryEventOnce(t *testing.T) {
	if _, err := exec.LookPath("jq"); err != nil {
		msg := "jq not found in PATH; install it with: apt-get install jq"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	src, err := os.ReadFile("docs/monitoring.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(src), "## Shipping the audit log")
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(section)
	if m == nil {
		t.Fatal("docs/monitoring.md: no sh block under Shipping the audit log")
	}
	g := scriptGateway(t)
	bin := t.TempDir()
	if err := os.Symlink(caddyBin, filepath.Join(bin, "caddy")); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	ship := func() {
		t.Helper()
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", m[1])
		cmd.Dir = work
		cmd.Env = append(g.environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "KEYGATE_STORE="+g.store)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("the docs' loop: %v\n%s", err, out)
		}
	}
	for i := range 3 {
		g.issue("--name", fmt.Sprintf("k%d", i), "--scope", "mail.send")
	}
	ship()
	k := g.issue("--name", "later", "--scope", "mail.send")
	g.keys("revoke", k.ID, "--reason", "test")
	ship()

	var want []int64
	var all []struct{ Seq int64 }
	json.Unmarshal([]byte(g.keys("events", "--json")), &all)
	for _, e := range all {
		want = append(want, e.Seq)
	}
	copied, err := os.ReadFile(filepath.Join(work, "keygate-audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, line := range strings.Split(strings.TrimSpace(string(copied)), "\n") {
		var e struct{ Seq int64 }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("copied line %q: %v", line, err)
		}
		got = append(got, e.Seq)
	}
	if len(want) != 5 || !slices.Equal(got, want) {
		t.Errorf("copied %v, the log holds %v (want 5 events, each once)", got, want)
	}
}

// caddy keys run without --store or $KEYGATE_STORE uses the running user's
// default store. Run as another user than the gateway's (root, beside the
// README's caddy service), that is another file: its refusal and the note of
// an issue that creates it say whose default it is and how to reach the
// service's (until session 37 a refusal said to check --store and
// $KEYGATE_STORE, neither of which was given, and an issue made a store no
// gateway reads with a bare note).
func TestTheDefaultStoreSaysWhoseItIs(t *testing.T) {
	needBinary(t)
	home := t.TempDir()
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KEYGATE_STORE=") && !strings.HasPrefix(e, "XDG_DATA_HOME=") && !strings.HasPrefix(e, "HOME=") {
			env = append(env, e)
		}
	}
	env = append(env, "HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, "data"))
	me := "unknown"
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	keys := func(args ...string) (string, int) {
		cmd := exec.Command(caddyBin, append([]string{"keys"}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), exitStatus(t, err)
	}
	path := filepath.Join(home, "data", "caddy", "keygate", "keys.db")
	if out, code := keys("list"); code != 2 || !strings.Contains(out, path) || !strings.Contains(out, "the default store of user "+me) || !strings.Contains(out, "runuser -u caddy -- caddy keys") {
		t.Errorf("caddy keys list with no store: exit %d\n%s\nwant exit 2 naming %s as user %s's default and how to run as the service's user", code, out, path, me)
	}
	if out, code := keys("issue", "--name", "first", "--scope", "mail.send"); code != 0 || !strings.Contains(out, "the default store of user "+me) {
		note, _, _ := strings.Cut(out, "\n") // not the key
		t.Errorf("caddy keys issue with no store: exit %d, %q, want a note naming it user %s's default", code, note, me)
	}
	// Given, a missing store is the path given: no word of users.
	typo := filepath.Join(home, "typo.db")
	if out, code := keys("list", "--store", typo); code != 2 || strings.Contains(out, "default") {
		t.Errorf("caddy keys list --store %s: exit %d\n%s", typo, code, out)
	}
}
