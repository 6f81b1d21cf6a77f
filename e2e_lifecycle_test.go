package keygate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var lifecycleCaddyfile = site(`
	log {
		output file {LOG}
	}
	keygate {
		store {STORE}
		env live
		cache_ttl 10m
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)

type record struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Owner       string     `json:"owner"`
	Scopes      []string   `json:"scopes"`
	Disabled    bool       `json:"disabled"`
	ExpiresAt   *time.Time `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	RotatedFrom string     `json:"rotated_from"`
	RotatedTo   string     `json:"rotated_to"`
	Key         string     `json:"key"`
}

func TestKeyLifecycle(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: lifecycleCaddyfile, upstream: up.URL})
	send := func(key string) *response { return g.call("POST", "/v3/mail/send", key, []byte(`{}`)) }
	var all []issuedKey

	t.Run("rotation: the old key works during the grace period, then expired_key", func(t *testing.T) {
		old := g.issue("--name", "rotating", "--scope", "mail.send", "--owner", "web")
		var next record
		if err := json.Unmarshal([]byte(g.keys("rotate", old.ID, "--grace", "2s", "--json")), &next); err != nil {
			t.Fatal(err)
		}
		all = append(all, old, issuedKey{next.ID, next.Key})
		if next.RotatedFrom != old.ID || next.Key == "" || next.Key == old.Key {
			t.Fatalf("rotated record: %+v", next)
		}
		if evs := g.keys("events", next.ID); !strings.Contains(evs, "issued") || !strings.Contains(evs, "by rotating "+old.ID) {
			t.Errorf("the new key's events do not say where it came from:\n%s", evs)
		}
		if r := send(next.Key); r.Status != 202 {
			t.Errorf("new key: %d %s", r.Status, r.Body)
		}
		if r := send(old.Key); r.Status != 202 {
			t.Errorf("old key within grace: %d %s", r.Status, r.Body)
		}
		if eventually(t, 5*time.Second, func() bool { return send(old.Key).code() == "expired_key" }) < 0 {
			t.Fatal("old key still works after the grace period")
		}
		if r := send(old.Key); !strings.Contains(string(r.Body), "it was rotated, and its grace period has ended; use the key that replaced it ("+next.ID+")") {
			t.Errorf("the old key after its grace period is not told of its successor: %s", r.Body)
		}
		var shown record
		json.Unmarshal([]byte(g.keys("show", old.ID, "--json")), &shown)
		if shown.RotatedTo != next.ID {
			t.Errorf("old record's rotated_to = %q, want %s", shown.RotatedTo, next.ID)
		}
	})

	t.Run("disable and enable from the CLI are enforced within 1s", func(t *testing.T) {
		k := g.issue("--name", "toggled", "--scope", "mail.send")
		all = append(all, k)
		send(k.Key)
		g.keys("update", k.ID, "--disable")
		if took := eventually(t, 2*time.Second, func() bool { return send(k.Key).code() == "disabled_key" }); took < 0 || took > time.Second {
			t.Fatalf("disable took %v", took)
		}
		g.keys("update", k.ID, "--enable")
		if took := eventually(t, 2*time.Second, func() bool { return send(k.Key).Status == 202 }); took < 0 || took > time.Second {
			t.Fatalf("enable took %v", took)
		}
	})

	t.Run("a scope change from the CLI is enforced within 1s", func(t *testing.T) {
		k := g.issue("--name", "rescoped", "--scope", "mail.send")
		all = append(all, k)
		send(k.Key)
		g.keys("update", k.ID, "--scope", "templates.read")
		if took := eventually(t, 2*time.Second, func() bool { return send(k.Key).code() == "insufficient_scope" }); took < 0 || took > time.Second {
			t.Fatalf("scope change took %v", took)
		}
	})

	t.Run("allowed IPs: outside the CIDRs is ip_not_allowed", func(t *testing.T) {
		in := g.issue("--name", "loopback-only", "--scope", "mail.send", "--allow-ip", "127.0.0.0/8", "--allow-ip", "::1/128")
		out := g.issue("--name", "office-only", "--scope", "mail.send", "--allow-ip", "203.0.113.0/24")
		all = append(all, in, out)
		if r := send(in.Key); r.Status != 202 {
			t.Errorf("inside: %d %s", r.Status, r.Body)
		}
		if r := send(out.Key); r.Status != 403 || r.code() != "ip_not_allowed" {
			t.Errorf("outside: %d %s", r.Status, r.Body)
		}
	})

	t.Run("a test key on an env live route is env_not_allowed", func(t *testing.T) {
		k := g.issue("--name", "staging", "--scope", "mail.send", "--env", "test")
		all = append(all, k)
		if !strings.HasPrefix(k.Key, "kg_test_") {
			t.Fatalf("test key %q", k.Key[:8])
		}
		if r := send(k.Key); r.Status != 403 || r.code() != "env_not_allowed" {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})

	t.Run("admin API: issue, list, show, update, revoke with immediate effect", func(t *testing.T) {
		r := g.admin("POST", "/keygate/keys", map[string]any{"name": "via-admin", "owner": "ops", "scopes": []string{"mail.send"}, "expires": "30d"})
		if r.Status != 201 {
			t.Fatalf("issue: %d %s", r.Status, r.Body)
		}
		var k record
		json.Unmarshal(r.Body, &k)
		all = append(all, issuedKey{k.ID, k.Key})
		if send(k.Key).Status != 202 {
			t.Fatal("admin-issued key does not work")
		}
		if r := g.admin("GET", "/keygate/keys?owner=ops", nil); r.Status != 200 || !strings.Contains(string(r.Body), k.ID) {
			t.Errorf("list: %d %s", r.Status, r.Body)
		}
		shown := g.admin("GET", "/keygate/keys/"+k.ID, nil)
		if shown.Status != 200 || !strings.Contains(string(shown.Body), `"via-admin"`) || shown.Header.Get("ETag") == "" {
			t.Errorf("show: %d %v %s", shown.Status, shown.Header, shown.Body)
		}
		// If-Match: a change made on the settings as read applies; a
		// second one made on the same reading is refused, not applied.
		etag := shown.Header.Get("ETag")
		if r := g.admin("PATCH", "/keygate/keys/"+k.ID, map[string]any{"max_recipients": 5}, "If-Match", etag); r.Status != 200 {
			t.Errorf("update with the current ETag: %d %s", r.Status, r.Body)
		}
		if r := g.admin("PATCH", "/keygate/keys/"+k.ID, map[string]any{"max_recipients": 7}, "If-Match", etag); r.Status != 412 || r.code() != "conflict" {
			t.Errorf("update with a stale ETag: %d %s, want 412 conflict", r.Status, r.Body)
		}
		var after struct {
			MaxRecipients int `json:"max_recipients"`
		}
		if r := g.admin("GET", "/keygate/keys/"+k.ID, nil); json.Unmarshal(r.Body, &after) != nil || after.MaxRecipients != 5 {
			t.Errorf("after a stale update: %s", r.Body)
		}
		if r := g.admin("PATCH", "/keygate/keys/"+k.ID, map[string]any{"disabled": true}); r.Status != 200 {
			t.Errorf("update: %d %s", r.Status, r.Body)
		}
		if c := send(k.Key).code(); c != "disabled_key" {
			t.Errorf("the very next request after an admin disable: %q", c)
		}
		g.admin("PATCH", "/keygate/keys/"+k.ID, map[string]any{"disabled": false})
		if r := send(k.Key); r.Status != 202 {
			t.Errorf("after enable: %d", r.Status)
		}
		// Requests that would change nothing or mislead are refused.
		for _, c := range []struct {
			method, path string
			body         any
			status       int
			want         string
		}{
			{"PATCH", "/keygate/keys/" + k.ID, map[string]any{}, 400, "nothing to change"},
			{"POST", "/keygate/keys", map[string]any{"name": "x", "scopes": []string{"mail.send"}, "expires": "2020-01-01T00:00:00Z"}, 400, "not in the future"},
			{"POST", "/keygate/keys", map[string]any{"name": "two\nlines", "scopes": []string{"mail.send"}}, 400, "printable"},
			{"GET", "/keygate/keys?store=sqlite:" + filepath.Join(t.TempDir(), "typo", "keys.db"), nil, 400, "no keygate store"},
			{"GET", "/keygate/keys?store=" + url.QueryEscape("postgres://kg:hunter2@127.0.0.1:1/kg?connect_timeout=2"), nil, 503, "the key store is unavailable"},
			{"GET", "/keygate/keys?all=maybe", nil, 400, "want true or false"},
			{"GET", "/keygate/events?key=key_nope", nil, 404, "not found"},
		} {
			if r := g.admin(c.method, c.path, c.body); r.Status != c.status || !strings.Contains(string(r.Body), c.want) || strings.Contains(string(r.Body), "hunter2") {
				t.Errorf("%s %s: %d %s, want %d %q", c.method, c.path, r.Status, r.Body, c.status, c.want)
			}
		}
		if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]any{"reason": "done"}); r.Status != 200 || strings.Contains(string(r.Body), "warning") {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		if r := g.admin("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]any{"reason": "again"}); r.Status != 200 ||
			!strings.Contains(string(r.Body), `"warning": "key `+k.ID+` was already revoked on`) || !strings.Contains(string(r.Body), `"revoke_reason": "done"`) {
			t.Errorf("revoking a revoked key again: %d %s, want 200 with the first reason and a warning", r.Status, r.Body)
		}
		if c := send(k.Key).code(); c != "revoked_key" {
			t.Errorf("the very next request after an admin revoke: %q", c)
		}
	})

	t.Run("admin API: a leaked key reported by value is revoked at once", func(t *testing.T) {
		k := g.issue("--name", "leaky", "--scope", "mail.send")
		all = append(all, k)
		send(k.Key)
		if r := g.admin("POST", "/keygate/revoke", map[string]any{"key": k.Key, "reason": "pastebin"}); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if c := send(k.Key).code(); c != "revoked_key" {
			t.Errorf("next request: %q", c)
		}
	})

	t.Run("admin API: bad input is 400 with a message, unknown ids 404", func(t *testing.T) {
		cases := []struct {
			method, path string
			body         any
			status       int
			want         string
		}{
			{"POST", "/keygate/keys", map[string]any{"scopes": []string{"mail.send"}}, 400, "name is required"},
			{"POST", "/keygate/keys", map[string]any{"name": "x", "scopes": []string{"mail.send"}, "rate": "fast"}, 400, `rate "fast"`},
			{"POST", "/keygate/keys", map[string]any{"name": "x", "scopes": []string{"mail.send"}, "allowed_ips": []string{"nope"}}, 400, `allowed IP "nope"`},
			{"POST", "/keygate/keys", map[string]any{"name": "x", "colour": "red"}, 400, "colour"},
			{"POST", "/keygate/keys", "not an object", 400, "invalid JSON"},
			{"GET", "/keygate/keys/key_doesnotexist", nil, 404, "not found"},
			{"POST", "/keygate/keys/key_doesnotexist/revoke", map[string]any{}, 404, "not found"},
			{"POST", "/keygate/revoke", map[string]any{}, 400, "exactly one of"},
			{"POST", "/keygate/revoke", map[string]any{"key": "kg_live_typo"}, 400, "no keygate key found"},
		}
		codes := map[int]string{400: "invalid_input", 404: "not_found"}
		for _, c := range cases {
			r := g.admin(c.method, c.path, c.body)
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			json.Unmarshal(r.Body, &e)
			if r.Status != c.status || e.Error.Code != codes[c.status] || !strings.Contains(e.Error.Message, c.want) {
				t.Errorf("%s %s %v: %d %s, want %d %s containing %q", c.method, c.path, c.body, r.Status, r.Body, c.status, codes[c.status], c.want)
			}
		}
	})

	t.Run("CLI: revoke by key and by owner, with reasons", func(t *testing.T) {
		a := g.issue("--name", "a", "--scope", "mail.send", "--owner", "contractor")
		b := g.issue("--name", "b", "--scope", "mail.send", "--owner", "contractor")
		leaked := g.issue("--name", "leaked", "--scope", "mail.send")
		all = append(all, a, b, leaked)
		g.keys("revoke", "--owner", "contractor", "--reason", "contract ended")
		g.keys("revoke", "--key", leaked.Key, "--reason", "found in a public repo")
		for _, k := range []issuedKey{a, b, leaked} {
			if eventually(t, 2*time.Second, func() bool { return send(k.Key).code() == "revoked_key" }) < 0 {
				t.Errorf("%s not revoked", k.ID)
			}
		}
		_, stderr, err := g.keysRaw("revoke", "key_nope")
		if err == nil || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "not found") {
			t.Errorf("revoking an unknown id: err=%v stderr=%q", err, stderr)
		}
		// Any subcommand but issue refuses a store file that does not
		// exist (a mistyped --store), and creates nothing.
		typo := filepath.Join(t.TempDir(), "typo", "keys.db")
		if _, stderr, err := g.keysRaw("events", "key_nope"); err == nil || !strings.Contains(stderr, "not found") {
			t.Errorf("events of an unknown id: err=%v stderr=%q", err, stderr)
		}
		list := exec.Command(caddyBin, "keys", "list", "--store", "sqlite:"+typo)
		list.Env = g.environ()
		if out, err := list.CombinedOutput(); err == nil || !strings.Contains(string(out), "no keygate store at "+typo) {
			t.Errorf("list on a missing store: err=%v output=%q", err, out)
		}
		if _, err := os.Stat(typo); err == nil {
			t.Error("list created the mistyped store")
		}
		// A typo in the subcommand fails in one line; it must not print
		// help and exit 0, which a script would take for success.
		stdout, stderr, err := g.keysRaw("revok", a.ID)
		if err == nil || stdout != "" || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, `unknown subcommand "revok"; did you mean revoke?`) {
			t.Errorf("a mistyped subcommand: err=%v stdout=%q stderr=%q", err, stdout, stderr)
		}
		// A missing argument or an unknown flag reads as every other error.
		for args, want := range map[string]string{
			"show":         "caddy keys show: accepts 1 arg(s), received 0 (usage: caddy keys show ID)",
			"list --bogus": "caddy keys list: unknown flag: --bogus (usage: caddy keys list",
			// Issue's flags update cannot honour say why.
			"update " + a.ID + " --env test":  "caddy keys update: --env: a key's env and prefix are part of its text",
			"update " + a.ID + " --prefix ab": "caddy keys update: --prefix: a key's env and prefix are part of its text",
		} {
			stdout, stderr, err := g.keysRaw(strings.Fields(args)...)
			if err == nil || stdout != "" || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.HasPrefix(stderr, want) {
				t.Errorf("caddy keys %s: err=%v stdout=%q stderr=%q, want %q", args, err, stdout, stderr, want)
			}
		}
		// A subcommand's flag given before it would take the subcommand
		// for its value, and run nothing with exit status 0.
		for _, args := range [][]string{{"--bogus", "list"}, {"--yes", "revoke", a.ID}, {"--store", "list"}} {
			stdout, stderr, err := g.keysRaw(args...)
			want := "caddy keys: flag " + args[0] + " goes after the subcommand"
			if args[0] == "--store" {
				want = "caddy keys: --store needs a value"
			}
			if err == nil || stdout != "" || !strings.Contains(stderr, want) {
				t.Errorf("caddy keys %s: err=%v stdout=%q stderr=%q, want %q", strings.Join(args, " "), err, stdout, stderr, want)
			}
		}
		// --store followed by another flag takes that flag for its value:
		// said so, not read as a store URI (no such store, or a file named
		// "--json" made by issue).
		for _, args := range [][]string{{"keys", "--store", "--json", "list"}, {"keys", "list", "--store", "--json"}} {
			cmd := exec.Command(caddyBin, args...)
			cmd.Env = g.environ()
			if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "--store needs a value") {
				t.Errorf("caddy %s: err=%v output=%q, want --store needs a value", strings.Join(args, " "), err, out)
			}
		}
		// A key pasted where a flag's value belongs is refused without
		// being repeated: stderr goes to terminals and CI logs.
		pasted := g.issue("--name", "pasted-as-a-value", "--scope", "mail.send").Key
		for _, args := range [][]string{
			{"issue", "--name", "x", "--scope", "mail.send", "--burst", pasted}, // a flag's parse error
			{"usage", a.ID, "--since", pasted},
			{"events", a.ID, "--limit", pasted},
			{pasted},                // as the subcommand
			{"--" + pasted, "list"}, // as a flag before the subcommand
		} {
			_, stderr, err := g.keysRaw(args...)
			if err == nil || strings.Contains(stderr, pasted[len("kg_live_"):][:43]) {
				t.Errorf("caddy keys %s: err=%v stderr=%q, want it refused without the key", strings.Join(args[:len(args)-1], " "), err, stderr)
			}
		}
		store := exec.Command(caddyBin, "keys", "list", "--store", "sqlite:"+filepath.Join(t.TempDir(), pasted))
		store.Env = g.environ()
		if out, err := store.CombinedOutput(); err == nil || strings.Contains(string(out), pasted[len("kg_live_"):][:43]) {
			t.Errorf("a key pasted as the store: err=%v output=%q, want it refused without the key", err, out)
		}
	})

	t.Run("CLI: revoke --key - reads a leaked key from stdin and never prints it", func(t *testing.T) {
		leaked := g.issue("--name", "pasted", "--scope", "mail.send")
		all = append(all, leaked)
		if r := send(leaked.Key); r.Status != 202 {
			t.Fatalf("before: %d %s", r.Status, r.Body)
		}
		// The slip of giving the key where its id belongs is refused,
		// without the key in the error (a terminal, a CI log), and so is
		// a key pasted into a reason. The admin API's answer for the key
		// in its path does not repeat it either.
		for _, args := range [][]string{{"revoke", leaked.Key, "--yes"}, {"show", leaked.Key}, {"revoke", leaked.ID, "--yes", "--reason", "found " + leaked.Key}} {
			if out, errOut, err := g.keysRaw(args...); err == nil || strings.Contains(out+errOut, leaked.Key[8:51]) || !strings.Contains(errOut, "API key") {
				t.Errorf("caddy keys %s with the key: err=%v, stdout %q, stderr %q; want it refused, naming no key", args[0], err, out, errOut)
			}
		}
		if r := g.admin("GET", "/keygate/keys/"+leaked.Key, nil); r.Status != 400 || bytes.Contains(r.Body, []byte(leaked.Key[8:51])) {
			t.Errorf("GET /keygate/keys/<key>: %d %s; want 400 without the key", r.Status, r.Body)
		}
		if r := g.admin("GET", "/keygate/nothing/"+leaked.Key, nil); r.Status != 404 || bytes.Contains(r.Body, []byte(leaked.Key[8:51])) {
			t.Errorf("GET /keygate/nothing/<key>: %d %s; want 404 without the key", r.Status, r.Body)
		}
		if r := send(leaked.Key); r.Status != 202 {
			t.Fatalf("the key after the refused commands: %d %s", r.Status, r.Body)
		}
		out, errOut, err := g.keysStdin(strings.NewReader(leaked.Key+"\n"), "revoke", "--key", "-", "--reason", "pasted in chat", "--json")
		if err != nil {
			t.Fatalf("%v: %s", err, errOut)
		}
		var rec record
		if err := json.Unmarshal([]byte(out), &rec); err != nil || rec.ID != leaked.ID || rec.RevokedAt == nil {
			t.Fatalf("revoked record: %v %s", err, out)
		}
		if strings.Contains(out+errOut, leaked.Key[8:]) {
			t.Error("the output contains the key")
		}
		if eventually(t, 2*time.Second, func() bool { return send(leaked.Key).code() == "revoked_key" }) < 0 {
			t.Error("not revoked")
		}
		if evs := g.keys("events", leaked.ID, "--json"); !strings.Contains(evs, "leak_reported") || !strings.Contains(evs, "pasted in chat") {
			t.Errorf("events: %s", evs)
		}
	})

	t.Run("CLI: revoke --key - refuses bad input in one line that does not echo it", func(t *testing.T) {
		kept := g.issue("--name", "kept", "--scope", "mail.send")
		all = append(all, kept)
		typo := kept.Key[:len(kept.Key)-1] + "0" // the last checksum character changed
		if typo == kept.Key {
			typo = kept.Key[:len(kept.Key)-1] + "1"
		}
		cases := []struct {
			name, stdin string
			args        []string
			want        string
		}{
			{"a value that is not shaped like a key", "kg_live_hunter2-not-a-real-key\n", nil, "no keygate key found"},
			{"a key with a typo (wrong checksum)", typo + "\n", nil, "no keygate key found"},
			{"nothing on stdin", "", nil, "no key on standard input"},
			{"an id as well as --key -", kept.Key + "\n", []string{kept.ID}, "exactly one of"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				out, errOut, err := g.keysStdin(strings.NewReader(tc.stdin), append([]string{"revoke", "--key", "-", "--yes"}, tc.args...)...)
				if err == nil || out != "" {
					t.Fatalf("exit %v, stdout %q", err, out)
				}
				if strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, tc.want) {
					t.Errorf("stderr %q, want one line containing %q", errOut, tc.want)
				}
				if in := strings.TrimSpace(tc.stdin); in != "" && strings.Contains(errOut, in[8:]) {
					t.Errorf("stderr %q echoes the input", errOut)
				}
			})
		}
		if r := send(kept.Key); r.Status != 202 {
			t.Errorf("a refused revoke revoked the key: %d %s", r.Status, r.Body)
		}
	})

	t.Run("audit lists unused, expiring, full-access and never-expiring keys", func(t *testing.T) {
		full := g.issue("--name", "god-mode", "--scope", "*")
		soon := g.issue("--name", "expiring", "--scope", "mail.send", "--expires", "2d")
		all = append(all, full, soon)
		time.Sleep(1100 * time.Millisecond) // "unused for 1s"
		type entry struct {
			ID string `json:"id"`
		}
		var rep struct {
			Unused     []entry `json:"unused"`
			Expiring   []entry `json:"expiring"`
			FullAccess []entry `json:"full_access"`
			NoExpiry   []entry `json:"no_expiry"`
		}
		if err := json.Unmarshal([]byte(g.keys("audit", "--unused", "1s", "--expiring", "7d", "--json")), &rep); err != nil {
			t.Fatal(err)
		}
		sections := map[string][]entry{"unused": rep.Unused, "expiring": rep.Expiring, "full_access": rep.FullAccess, "no_expiry": rep.NoExpiry}
		has := func(section, id string) bool {
			for _, e := range sections[section] {
				if e.ID == id {
					return true
				}
			}
			return false
		}
		for _, c := range []struct{ section, id string }{
			{"full_access", full.ID}, {"expiring", soon.ID}, {"no_expiry", full.ID}, {"unused", full.ID},
		} {
			if !has(c.section, c.id) {
				t.Errorf("audit %s lacks %s", c.section, c.id)
			}
		}
		if has("no_expiry", soon.ID) {
			t.Error("a key with an expiry is listed as never expiring")
		}
		human := g.keys("audit")
		if !strings.Contains(human, "Full-access keys (*)") || !strings.Contains(human, "god-mode") {
			t.Errorf("human audit:\n%s", human)
		}
	})

	t.Run("events record every change with actor and reason", func(t *testing.T) {
		out := g.keys("events", "--json")
		var evs []struct {
			Action, KeyID, Actor, Reason string
		}
		if err := json.Unmarshal([]byte(out), &evs); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range evs {
			seen[e.Action] = true
			if e.Actor == "" {
				t.Errorf("event without actor: %+v", e)
			}
		}
		for _, a := range []string{"issued", "rotated", "disabled", "enabled", "updated", "revoked", "leak_reported"} {
			if !seen[a] {
				t.Errorf("no %q event in %s", a, out)
			}
		}
		if !strings.Contains(out, "contract ended") || !strings.Contains(out, "admin-api") || !strings.Contains(out, "cli ") {
			t.Errorf("events lack reasons or actors: %s", out)
		}
		// The newest few, from the CLI and the admin API alike.
		var newest, viaAdmin []struct{ Seq int64 }
		json.Unmarshal([]byte(g.keys("events", "--limit", "2", "--json")), &newest)
		json.Unmarshal(g.admin("GET", "/keygate/events?limit=2", nil).Body, &viaAdmin)
		if len(evs) < 3 || len(newest) != 2 || len(viaAdmin) != 2 || newest[1].Seq != viaAdmin[1].Seq || newest[0].Seq >= newest[1].Seq {
			t.Errorf("the newest 2 of %d events: %+v from the CLI, %+v from the admin API", len(evs), newest, viaAdmin)
		}
		if r := g.admin("GET", "/keygate/events?limit=-1", nil); r.Status != 400 || !strings.Contains(string(r.Body), "limit") {
			t.Errorf("a negative limit: %d %s", r.Status, r.Body)
		}

		// Read forward from a cursor, as an audit shipper does: the admin
		// API's pages follow their Link, the CLI's --after the last seq,
		// and both read the whole log once, in order.
		var all []struct{ Seq int64 }
		json.Unmarshal([]byte(out), &all)
		var viaLinks []int64
		for next, pages := "/keygate/events?after=0&limit=3", 0; next != ""; pages++ {
			r := g.admin("GET", next, nil)
			var page []struct{ Seq int64 }
			if r.Status != 200 || json.Unmarshal(r.Body, &page) != nil || pages > len(all) {
				t.Fatalf("GET %s: %d %s", next, r.Status, r.Body)
			}
			for _, e := range page {
				viaLinks = append(viaLinks, e.Seq)
			}
			next = ""
			if link := r.Header.Get("Link"); link != "" {
				next = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
			}
		}
		var viaCLI []int64
		for after := int64(0); ; {
			var page []struct{ Seq int64 }
			if err := json.Unmarshal([]byte(g.keys("events", "--after", strconv.FormatInt(after, 10), "--limit", "4", "--json")), &page); err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, e := range page {
				viaCLI = append(viaCLI, e.Seq)
			}
			after = page[len(page)-1].Seq
		}
		var want []int64
		for _, e := range all {
			want = append(want, e.Seq)
		}
		if !slices.Equal(viaLinks, want) || !slices.Equal(viaCLI, want) {
			t.Errorf("read forward: %v following Link, %v with --after; want %v", viaLinks, viaCLI, want)
		}
		if r := g.admin("GET", "/keygate/events?after=x", nil); r.Status != 400 || !strings.Contains(string(r.Body), "after") {
			t.Errorf("a cursor that is not a seq: %d %s", r.Status, r.Body)
		}
		if text := g.keys("events", "--after", strconv.FormatInt(want[len(want)-2], 10)); !strings.HasPrefix(text, "SEQ") || !strings.Contains(text, strconv.FormatInt(want[len(want)-1], 10)) {
			t.Errorf("the text table names no seq to go on from:\n%s", text)
		}
	})

	t.Run("list, show, audit and events never print a key", func(t *testing.T) {
		outputs := []string{
			g.keys("list", "--all"), g.keys("list", "--all", "--json"), g.keys("audit", "--json"),
			g.keys("events", "--json"), string(g.admin("GET", "/keygate/keys?all=true", nil).Body),
			string(g.admin("GET", "/keygate/events", nil).Body),
		}
		for _, k := range all {
			outputs = append(outputs, g.keys("show", k.ID), g.keys("show", k.ID, "--json"))
		}
		for _, out := range outputs {
			for _, k := range all {
				if k.Key != "" && strings.Contains(out, k.Key[8:30]) {
					t.Fatalf("output contains key %s", k.ID)
				}
			}
		}
		if !strings.Contains(g.keys("list"), "in ") {
			t.Error("list does not show relative expiry")
		}
	})
}

func TestKeyManagementAsAPersonExpects(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	keygate {
		store {STORE}
		cache_ttl 10m
		scope mail.send POST /v3/mail/send
		scope templates.read GET /v3/templates*
	}
	reverse_proxy {UPSTREAM}
`), upstream: up.URL})

	t.Run("--scope replaces, --add-scope and --remove-scope change one, each change says what and why", func(t *testing.T) {
		k := g.issue("--name", "crm", "--scope", "mail.send", "--sender-domain", "example.com")
		g.keys("update", k.ID, "--add-scope", "templates.read", "--add-sender-domain", "shop.example.com", "--reason", "needs templates")
		if r := g.call("GET", "/v3/templates", k.Key, nil); r.Status != 202 {
			t.Errorf("after --add-scope: %d %s", r.Status, r.Body)
		}
		if r := g.call("POST", "/v3/mail/send", k.Key, []byte(`{}`)); r.Status == 403 {
			t.Errorf("--add-scope dropped mail.send: %s", r.Body)
		}
		g.keys("update", k.ID, "--remove-scope", "mail.send", "--reason", "read only from now on")
		var rec record
		json.Unmarshal([]byte(g.keys("show", k.ID, "--json")), &rec)
		if strings.Join(rec.Scopes, " ") != "templates.read" {
			t.Errorf("scopes after --remove-scope: %v", rec.Scopes)
		}
		events := g.keys("events", k.ID)
		for _, want := range []string{"scopes: mail.send → mail.send templates.read", "sender domains: example.com → example.com shop.example.com", "needs templates", "scopes: mail.send templates.read → templates.read", "read only from now on"} {
			if !strings.Contains(events, want) {
				t.Errorf("events lack %q:\n%s", want, events)
			}
		}
		if _, stderr, err := g.keysRaw("update", k.ID, "--remove-scope", "mail.send"); err == nil || !strings.Contains(stderr, "does not have it") {
			t.Errorf("removing a scope the key lacks: %v %q", err, stderr)
		}
		help, _, _ := g.keysRaw("update", "--help")
		for _, want := range []string{"replaces every scope", "none gives back the route's rate", "none gives back the route's quota",
			"--allow-on-behalf-of=false takes that away", "only empty values"} {
			if !strings.Contains(help, want) {
				t.Errorf("update --help does not say %q:\n%s", want, help)
			}
		}
	})

	t.Run("a scope no route uses: the CLI warns, the admin API refuses unless forced", func(t *testing.T) {
		_, stderr, err := g.keysRaw("issue", "--name", "typo", "--scope", "mail.sned")
		if err != nil || !strings.Contains(stderr, `warning: scope "mail.sned": no route`) {
			t.Errorf("CLI: err=%v stderr=%q", err, stderr)
		}
		// --json carries them too, for scripts, on issue and on update.
		var updated struct {
			ID       string   `json:"id"`
			Warnings []string `json:"warnings"`
		}
		k := g.issue("--name", "typo2", "--scope", "mail.send")
		out, _, err := g.keysRaw("update", k.ID, "--add-scope", "mail.sned", "--json")
		if err != nil || json.Unmarshal([]byte(out), &updated) != nil || updated.ID != k.ID || len(updated.Warnings) == 0 {
			t.Errorf("update --json with a scope no route uses: err=%v %s", err, out)
		}
		r := g.admin("POST", "/keygate/keys", map[string]any{"name": "typo", "scopes": []string{"mail.sned"}})
		if r.Status != 400 || !strings.Contains(string(r.Body), `"invalid_input"`) || !strings.Contains(string(r.Body), "mail.send, templates.read") {
			t.Errorf("admin API without force: %d %s", r.Status, r.Body)
		}
		r = g.admin("POST", "/keygate/keys", map[string]any{"name": "typo", "scopes": []string{"mail.sned"}, "force": true})
		if r.Status != 201 || !strings.Contains(string(r.Body), `"warnings"`) {
			t.Errorf("admin API with force: %d %s", r.Status, r.Body)
		}
		if r := g.admin("GET", "/keygate/scopes", nil); r.Status != 200 || !strings.Contains(string(r.Body), `"/v3/templates*"`) {
			t.Errorf("scopes the routes use: %d %s", r.Status, r.Body)
		}
	})

	t.Run("insufficient_scope names the scope the route needs", func(t *testing.T) {
		k := g.issue("--name", "reader", "--scope", "templates.read")
		r := g.call("POST", "/v3/mail/send", k.Key, []byte(`{}`))
		if r.code() != "insufficient_scope" || !strings.Contains(string(r.Body), "requires: mail.send") {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})

	t.Run("duplicate names warn; revoke --owner with no match fails", func(t *testing.T) {
		g.issue("--name", "shop", "--owner", "web", "--scope", "mail.send")
		if _, stderr, _ := g.keysRaw("issue", "--name", "shop", "--owner", "web", "--scope", "mail.send"); !strings.Contains(stderr, `also named "shop"`) {
			t.Errorf("a second key of one owner with one name: %q", stderr)
		}
		_, stderr, err := g.keysRaw("revoke", "--owner", "nobody", "--yes")
		if err == nil || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, `owner "nobody" not found`) {
			t.Errorf("revoke --owner nobody: err=%v stderr=%q", err, stderr)
		}
		gone := g.issue("--name", "gone", "--scope", "mail.send")
		g.keys("revoke", gone.ID, "--yes", "--reason", "test")
		if _, stderr, err := g.keysRaw("revoke", gone.ID, "--yes", "--reason", "again"); err != nil || !strings.Contains(stderr, "already revoked") {
			t.Errorf("revoking a revoked key again: err=%v stderr=%q", err, stderr)
		}
	})

	t.Run("a bare path names an SQLite store", func(t *testing.T) {
		path := strings.TrimPrefix(g.store, "sqlite:")
		cmd := exec.Command(caddyBin, "keys", "list", "--store", path, "--json")
		cmd.Env = g.environ()
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"crm"`) {
			t.Errorf("--store %s: %v %s", path, err, out)
		}
		fresh := filepath.Join(t.TempDir(), "new", "keys.db")
		for i, want := range []string{"creating it", ""} {
			cmd := exec.Command(caddyBin, "keys", "issue", "--store", fresh, "--name", "first"+strconv.Itoa(i), "--scope", "mail.send")
			cmd.Env = g.environ()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil || (want == "") != (stderr.Len() == 0) || !strings.Contains(stderr.String(), want) {
				t.Errorf("issue %d into a new store: err=%v stderr=%q, want %q", i+1, err, stderr.String(), want)
			}
		}
	})

	t.Run("admin API: one error shape, 405 with Allow for a wrong method", func(t *testing.T) {
		r := g.admin("DELETE", "/keygate/keys/key_x", nil)
		if r.Status != 405 || r.Header.Get("Allow") != "GET, PATCH" || !strings.Contains(string(r.Body), `"code": "method_not_allowed"`) {
			t.Errorf("DELETE a key: %d %v %s", r.Status, r.Header, r.Body)
		}
		k := g.issue("--name", "gone", "--scope", "mail.send")
		g.keys("revoke", k.ID, "--yes")
		r = g.admin("POST", "/keygate/keys/"+k.ID+"/rotate", nil)
		if r.Status != 409 || !strings.Contains(string(r.Body), `"code": "conflict"`) {
			t.Errorf("rotating a revoked key: %d %s", r.Status, r.Body)
		}
		if r := g.admin("GET", "/keygate/nope", nil); r.Status != 404 || !strings.Contains(string(r.Body), `"code": "not_found"`) {
			t.Errorf("an unknown route: %d %s", r.Status, r.Body)
		}
	})

	t.Run("help points at keygate's own reference", func(t *testing.T) {
		out, _, _ := g.keysRaw("--help")
		if !strings.Contains(out, "docs/cli.md") || strings.Contains(out, "caddyserver.com/docs/command-line") {
			t.Errorf("caddy keys --help:\n%s", out)
		}
	})
}

// TestTheCLIIssuesKeysOfThePrefixTheRoutesAccept: on a store whose gateway
// accepts acme_ keys, `caddy keys issue` without --prefix issues one, and
// a prefix no route accepts is issued with a warning.
func TestTheCLIIssuesKeysOfThePrefixTheRoutesAccept(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	keygate {
		store {STORE}
		prefix acme
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`), upstream: up.URL})
	k := g.issue("--name", "crm", "--scope", "mail.send")
	if !strings.HasPrefix(k.Key, "acme_live_") {
		t.Fatalf("the CLI issued %.10s… on a store whose routes accept acme keys", k.Key)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
		t.Errorf("the key the CLI issued: %d %s", r.Status, r.Body)
	}
	_, stderr, err := g.keysRaw("issue", "--name", "other", "--scope", "mail.send", "--prefix", "kg")
	if err != nil || !strings.Contains(stderr, `warning: prefix "kg": no route on this store's gateways accepts it (they accept acme)`) {
		t.Errorf("a prefix no route accepts: err=%v stderr=%q", err, stderr)
	}

	// `caddy validate` of another config on the same store leaves all of
	// that as it was: a config that never runs has no routes to report.
	other := filepath.Join(g.dir, "other.Caddyfile")
	if err := os.WriteFile(other, []byte("http://127.0.0.1:9 {\n\tkeygate {\n\t\tstore "+g.store+
		"\n\t\tprefix other\n\t\tscope reports.read GET /reports\n\t}\n\trespond 202\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	validate := exec.Command(caddyBin, "validate", "--config", other, "--adapter", "caddyfile")
	validate.Env = g.environ()
	if out, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	if k := g.issue("--name", "after-validate", "--scope", "mail.send"); !strings.HasPrefix(k.Key, "acme_live_") {
		t.Errorf("after caddy validate of a config with prefix other, the CLI issued %.10s…", k.Key)
	}
	_, stderr, err = g.keysRaw("issue", "--name", "reports", "--scope", "reports.read")
	if err != nil || !strings.Contains(stderr, `scope "reports.read": no route on this store's gateways requires it (routes use mail.send)`) {
		t.Errorf("a scope only a validated config names: err=%v stderr=%q", err, stderr)
	}
}

// A PostgreSQL store is backed up and restored with PostgreSQL's own tools:
// backup and restore say so without opening it, so they neither migrate
// the schema of a database an upgrade's backup is about to be taken of
// (docs/deploy.md takes it with the version being left) nor wait for a
// server that does not answer, and they write nothing.
func TestBackupAndRestoreOfAPostgresStoreSaySoWithoutOpeningIt(t *testing.T) {
	needBinary(t)
	dir := t.TempDir()
	// Nothing listens on port 1: a command that tried to connect would
	// fail with a dial error instead.
	uri := "postgres://keygate:hunter2@127.0.0.1:1/keygate?sslmode=disable&connect_timeout=1"
	for _, sub := range []string{"backup", "restore"} {
		file := filepath.Join(dir, sub+".db")
		if sub == "restore" {
			if err := os.WriteFile(file, []byte("a backup"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		args := []string{"keys", "--store", uri, sub, file}
		if sub == "restore" {
			args = append(args, "--yes")
		}
		cmd := exec.Command(caddyBin, args...)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		tool := map[string]string{"backup": "pg_dump", "restore": "pg_restore"}[sub]
		if err == nil || !strings.Contains(stderr.String(), "PostgreSQL's own tools ("+tool+")") ||
			strings.Contains(stderr.String(), "dial") || strings.Contains(stderr.String(), "hunter2") {
			t.Errorf("caddy keys %s on a PostgreSQL store: %v %q, want it refused as one %s backs up, without connecting", sub, err, stderr.String(), tool)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "backup.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("backup of a PostgreSQL store wrote a file: %v", err)
	}
}

// On a cluster node the store's URI, password and all, is in the file the
// service reads its environment from: `caddy keys --envfile` finds it there
// (before or after the subcommand) instead of on a command line that ps
// shows, and names a line it cannot read without quoting it.
func TestTheCLIReadsTheStoreFromAnEnvironmentFile(t *testing.T) {
	needBinary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "keys.db")
	env := filepath.Join(dir, "keygate.env")
	if err := os.WriteFile(env, []byte("# the gateway's environment\nexport KEYGATE_STORE='sqlite:"+db+"'\nSENDGRID_API_KEY=SG.x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := func(args ...string) (string, string, error) {
		cmd := exec.Command(caddyBin, append([]string{"keys"}, args...)...)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "KEYGATE_STORE=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	out, stderr, err := keys("--envfile", env, "issue", "--name", "crm", "--scope", "mail.send", "--json")
	var k issuedKey
	if err != nil || json.Unmarshal([]byte(out), &k) != nil {
		t.Fatalf("issue with --envfile before the subcommand: %v\n%s%s", err, out, stderr)
	}
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("the key is not in the store the file names: %v", err)
	}
	if out, stderr, err := keys("list", "--envfile", env); err != nil || !strings.Contains(out, k.ID) {
		t.Errorf("list with --envfile after the subcommand: %v\n%s%s", err, out, stderr)
	}
	// Set but empty in the shell (KEYGATE_STORE= caddy keys …) is as unset:
	// it would otherwise mean the default store.
	empty := exec.Command(caddyBin, "keys", "list", "--envfile", env)
	empty.Env = append(os.Environ(), "KEYGATE_STORE=", "XDG_DATA_HOME="+filepath.Join(dir, "data"))
	if out, err := empty.CombinedOutput(); err != nil || !strings.Contains(string(out), k.ID) {
		t.Errorf("--envfile with KEYGATE_STORE set empty: %v\n%s", err, out)
	}
	for text, want := range map[string]string{
		"KEYGATE_STORE postgres://kg:hunter2@db/kg\n":                              "line 1 is not KEY=VALUE",
		"# a comment\nKEYGATE_STORE='postgres://kg:hunter2@db/kg' # the primary\n": "line 2 opens a quote it does not close",
		"KEYGATE_STORE=postgres://kg:hunter2@db/kg # the primary\n":                "line 1 has a comment after its value",
	} {
		bad := filepath.Join(dir, "bad.env")
		if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, stderr, err := keys("list", "--envfile", bad); err == nil || !strings.Contains(stderr, want) || strings.Contains(stderr, "hunter2") {
			t.Errorf("%q: err=%v stderr=%q, want %q and no secret", text, err, stderr, want)
		}
	}
	// --envfile="$FILE" with FILE unset would use the default store.
	if _, stderr, err := keys("list", "--envfile="); err == nil || !strings.Contains(stderr, "--envfile is empty") {
		t.Errorf("an empty --envfile: err=%v stderr=%q", err, stderr)
	}
}

// With handlers on two stores, the admin API asks which one, in JSON a
// program reads as written ("?store=<uri>", not "\u003curi\u003e").
func TestTheAdminAPIAsksWhichStoreOfSeveral(t *testing.T) {
	up := newUpstream(t)
	other := "sqlite:" + filepath.Join(t.TempDir(), "other.db")
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	handle /a/* {
		keygate {
			store {STORE}
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
`), upstream: up.URL})
	r := g.admin("GET", "/keygate/keys", nil)
	if r.Status != 400 || r.code() != "invalid_input" || !strings.Contains(string(r.Body), "name one with ?store=<uri>") {
		t.Errorf("GET /keygate/keys with two stores: %d %s", r.Status, r.Body)
	}
	if r := g.admin("GET", "/keygate/keys?store="+url.QueryEscape(other), nil); r.Status != 200 {
		t.Errorf("GET /keygate/keys?store=%s: %d %s", other, r.Status, r.Body)
	}
}

// The /keygate/ routes are behind Caddy's own checks of its admin endpoint,
// as /config/ is: with origins and enforce_origin, a request from another
// Host or Origin (a browser page's cross-site request, a DNS rebinding)
// gets Caddy's 403 before keygate reads it, and issues nothing
// (docs/admin-api.md).
func TestTheAdminRoutesObeyCaddysOriginChecks(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: `{
	admin {ADMIN} {
		origins {ADMIN} ops.example
		enforce_origin
	}
}
http://127.0.0.1:{PORT} {
	bind 127.0.0.1
	keygate {
		store {STORE}
		scope mail.send POST /send
	}
	reverse_proxy {UPSTREAM}
}
`, upstream: up.URL})
	issue := map[string]any{"name": "crm", "scopes": []string{"mail.send"}}
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
		says string // Caddy's error, as docs/admin-api.md quotes it
	}{
		{"no Origin", nil, 403, `{"error":"client is not allowed to access from origin ''"}`},
		{"another Origin", []string{"Origin", "http://evil.example"}, 403, `{"error":"client is not allowed to access from origin 'http://evil.example'"}`},
		{"another Host", []string{"Host", "evil.example", "Origin", "http://ops.example"}, 403, `{"error":"host not allowed: evil.example"}`},
		{"an Origin origins lists", []string{"Origin", "http://ops.example"}, 201, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := g.admin("POST", "/keygate/keys", issue, tc.hdr...)
			if r.Status != tc.want || tc.want == 403 && (r.code() != "" || bytes.Contains(r.Body, []byte("kg_"))) {
				t.Errorf("POST /keygate/keys: %d %s, want %d (Caddy's own 403 when not allowed)", r.Status, r.Body, tc.want)
			}
			if tc.says != "" && strings.TrimSpace(string(r.Body)) != tc.says {
				t.Errorf("POST /keygate/keys: %s, want Caddy's %s", r.Body, tc.says)
			}
			if c := g.admin("GET", "/config/", nil, tc.hdr...); (c.Status == 403) != (tc.want == 403) {
				t.Errorf("GET /config/ answered %d where /keygate/keys answered %d", c.Status, r.Status)
			}
		})
	}
	if r := g.admin("GET", "/keygate/keys", nil, "Origin", "http://ops.example"); r.Status != 200 || strings.Count(string(r.Body), `"id"`) != 1 {
		t.Errorf("the keys after one allowed issue: %d %s", r.Status, r.Body)
	}
}

// Rotating the provider's own credential touches the gateway only
// (docs/deploy.md): read from a file with {file.…}, the next request
// carries the new one, with no reload or restart.
func TestTheProviderCredentialRotatesInTheGatewayOnly(t *testing.T) {
	up := newUpstream(t)
	secret := filepath.Join(t.TempDir(), "provider.key")
	if err := os.WriteFile(secret, []byte("SG.old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
	}
	handle /v3/mail/send {
		reverse_proxy {UPSTREAM} {
			header_up Authorization "Bearer {file.` + secret + `}"
		}
	}
`), upstream: up.URL})
	k := g.issue("--name", "crm", "--scope", "mail.send")
	sent := func() string {
		t.Helper()
		if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
			t.Fatalf("send: %d %s", r.Status, r.Body)
		}
		return up.last().Header.Get("Authorization")
	}
	if got := sent(); got != "Bearer SG.old" {
		t.Fatalf("the provider got %q", got)
	}
	if err := os.WriteFile(secret, []byte("SG.new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := sent(); got != "Bearer SG.new" {
		t.Errorf("after the file changed, the provider got %q, want the new credential", got)
	}
}

// On a machine shared with other users or untrusted processes, the admin
// endpoint goes on a Unix socket only Caddy's user can open
// (docs/admin-api.md): the /keygate/ routes answer there as on TCP.
func TestTheAdminRoutesServeAUnixSocketOnlyItsUserOpens(t *testing.T) {
	needBinary(t)
	dir, err := os.MkdirTemp("", "kg-sock") // short: a socket's path holds at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, port := filepath.Join(dir, "admin.sock"), freePort(t)
	cf := fmt.Sprintf("{\n\tadmin unix/%s|0600\n}\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tkeygate {\n\t\tstore sqlite:%s\n"+
		"\t\tscope mail.send POST /send\n\t}\n\trespond 204\n}\n", sock, port, filepath.Join(dir, "keys.db"))
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(caddyBin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	admin := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	var resp *http.Response
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err = admin.Post("http://localhost/keygate/keys", "application/json",
			strings.NewReader(`{"name":"crm","scopes":["mail.send"]}`))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin socket did not answer: %v\n%s", err, out.String())
		}
	}
	var issued struct{ Key string }
	json.NewDecoder(resp.Body).Decode(&issued)
	resp.Body.Close()
	if resp.StatusCode != 201 || issued.Key == "" {
		t.Fatalf("POST /keygate/keys on the socket: %d, key %q", resp.StatusCode, issued.Key)
	}
	if fi, err := os.Stat(sock); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("the admin socket's mode: %v, want 0600", fi.Mode().Perm())
	}
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/send", port), nil)
	req.Header.Set("Authorization", "Bearer "+issued.Key)
	if r, err := client.Do(req); err != nil || r.StatusCode != 204 {
		t.Errorf("the key issued on the socket, at the gateway: %v %v", r, err)
	} else {
		r.Body.Close()
	}
}

// A body value of the wrong JSON type is refused naming the field as it is
// sent and what it takes, in JSON's words (docs/admin-api.md: "the message
// names the field and value"). Until session 37 the message was Go's,
// `json: cannot unmarshal string into Go struct field Spec.allowed_ips of
// type []string`, naming a Go type the caller never saw.
func TestAdminAPIWrongTypesNameTheFieldAsSent(t *testing.T) {
	g := startGateway(t, gatewayConfig{upstream: newUpstream(t).URL, caddyfile: site(`
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)})
	k := g.issue("--name", "typed", "--scope", "mail.send")
	for _, c := range []struct {
		method, path, body, want string
	}{
		{"POST", "/keygate/keys", `{"name":"x","scopes":["mail.send"],"allowed_ips":""}`, `"allowed_ips": want an array of strings, got a string`},
		{"POST", "/keygate/keys", `{"name":5,"scopes":["mail.send"]}`, `"name": want a string, got a number`},
		{"POST", "/keygate/keys", `{"name":"x","scopes":["mail.send"],"burst":1.5}`, `"burst": want a whole number, got 1.5`},
		{"POST", "/keygate/keys", `{"name":"x","scopes":["mail.send"],"allow_on_behalf_of":"yes"}`, `"allow_on_behalf_of": want true or false, got a string`},
		{"POST", "/keygate/keys", `["x"]`, `want a JSON object, got an array`},
		{"PATCH", "/keygate/keys/" + k.ID, `{"disabled":"true"}`, `"disabled": want true or false, got a string`},
		{"POST", "/keygate/keys/" + k.ID + "/rotate", `{"grace":24}`, `"grace": want a string, got a number`},
		// The fields a new key needs, named as the body names them (until
		// session 37 as the CLI's flags: "e.g. --name crm-sync").
		{"POST", "/keygate/keys", `{"scopes":["mail.send"]}`, `name is required (e.g. "name": "crm-sync")`},
		{"POST", "/keygate/keys", `{"name":"x"}`, `at least one scope is required (e.g. "scopes": ["mail.send"]; "*" is full access)`},
		{"POST", "/keygate/keys", `{"name":"x","scopes":[]}`, `at least one scope is required (e.g. "scopes": ["mail.send"]; "*" is full access)`},
	} {
		r := g.admin(c.method, c.path, json.RawMessage(c.body))
		if m := r.denial().Message; r.Status != 400 || r.code() != "invalid_input" || !strings.Contains(m, c.want) || strings.Contains(m, "Go ") || strings.Contains(m, "--") {
			t.Errorf("%s %s %s: %d %s, want 400 invalid_input saying %s", c.method, c.path, c.body, r.Status, r.Body, c.want)
		}
	}
	// The CLI names its flags for the same refusals.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"issue", "--scope", "mail.send"}, "caddy keys issue: name is required (e.g. --name crm-sync)"},
		{[]string{"issue", "--name", "x"}, "caddy keys issue: at least one scope is required (e.g. --scope mail.send; * is full access)"},
	} {
		if _, errOut, err := g.keysRaw(c.args...); exitStatus(t, err) != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("keys %s: %v %q, want exit 2 saying %q", strings.Join(c.args, " "), err, errOut, c.want)
		}
	}
}

// docs/admin-api.md: "the CLI and the admin API write the same record the
// same way". Byte for byte, a name holding &, < and > included: until
// session 37 `caddy keys … --json` escaped them (`Tom \u0026 Jerry`), so a
// script grepping the CLI's JSON for a name the admin API writes as typed
// found nothing; its errors did so too.
func TestTheCLIWritesARecordAsTheAdminAPIDoes(t *testing.T) {
	g := startGateway(t, gatewayConfig{upstream: newUpstream(t).URL, caddyfile: site(`
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)})
	k := g.issue("--name", "Tom & Jerry <ops>", "--owner", "a&b", "--scope", "mail.send")
	cli := g.keys("show", k.ID, "--json")
	api := g.admin("GET", "/keygate/keys/"+k.ID, nil)
	if api.Status != 200 || cli != string(api.Body) || !strings.Contains(cli, `"name": "Tom & Jerry <ops>"`) {
		t.Errorf("caddy keys show --json:\n%s\nGET /keygate/keys/%s:\n%s\nwant the same bytes, the name as typed", cli, k.ID, api.Body)
	}
	if _, errOut, _ := g.keysRaw("issue", "--name", "x", "--scope", "<b>", "--json"); !strings.Contains(errOut, `scope \"<b>\"`) {
		t.Errorf("caddy keys issue --scope '<b>' --json: %s, want the scope as typed in the JSON error", errOut)
	}
}
