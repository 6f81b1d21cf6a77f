package keygate_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/store"
)

// upgradeKeys is testdata/upgrade/keys.json: per engine, each key's id and
// value as the older keygate issued them (testdata/upgrade/make.sh).
type upgradeKeys map[string]map[string][2]string

var upgradeCaddyfile = site(`
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
		scope templates.read GET /v3/templates*
		mail_api sendgrid
		usage_retention off
	}
	reverse_proxy {UPSTREAM}
`)

// An operator upgrading keygate keeps every key, setting, count and audit
// event the older version wrote, on either engine: testdata/upgrade holds
// stores written by the first release (schema version 1, with the keys it
// issued), which this version migrates as it opens them and then serves as
// if it had written them itself.
func TestAnUpgradeKeepsEveryKeyCountAndEvent(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "upgrade", "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fixture upgradeKeys
	if err := json.Unmarshal(raw, &fixture); err != nil {
		t.Fatal(err)
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		needBinary(t)
		db, err := os.ReadFile(filepath.Join("testdata", "upgrade", "sqlite.db"))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "keys.db")
		if err := os.WriteFile(path, db, 0o600); err != nil {
			t.Fatal(err)
		}
		stored := func() []byte {
			var all []byte
			for _, f := range []string{path, path + "-wal"} {
				b, _ := os.ReadFile(f)
				all = append(all, b...)
			}
			return all
		}
		version := func() int { return schemaVersion(t, "sqlite", path) }
		if v := version(); v != 1 {
			t.Fatalf("testdata/upgrade/sqlite.db is at schema version %d, not the first release's (remake it with make.sh)", v)
		}
		validatedOnly(t, "sqlite:"+path, version)
		upgraded(t, "sqlite:"+path, fixture["sqlite"], stored)
		if v := version(); v != store.SchemaVersion() {
			t.Errorf("after the upgrade the store is at schema version %d, want %d", v, store.SchemaVersion())
		}
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		needBinary(t)
		pg := testservers.StartPostgres(t)
		pg.Load(filepath.Join("testdata", "upgrade", "postgres.sql"))
		version := func() int { return schemaVersion(t, "pgx", pg.URI) }
		if v := version(); v != 1 {
			t.Fatalf("testdata/upgrade/postgres.sql is at schema version %d, not the first release's (remake it with make.sh)", v)
		}
		validatedOnly(t, pg.URI, version)
		upgraded(t, pg.URI, fixture["postgres"], nil)
		if v := version(); v != store.SchemaVersion() {
			t.Errorf("after the upgrade the store is at schema version %d, want %d", v, store.SchemaVersion())
		}
	})
}

// validatedOnly validates a config naming an older store with this
// version's binary, as an operator does before deploying it: the store is
// checked, and left at the older version, which the binary still serving it
// could not start on again once migrated.
func validatedOnly(t *testing.T, storeURI string, version func() int) {
	t.Helper()
	logs, err := validateCaddyfile(t, storeSite, "TEST_STORE="+storeURI)
	if err != nil {
		t.Fatalf("caddy adapt --validate with the older store: %v\n%s", err, logs)
	}
	if v := version(); v != 1 {
		t.Fatalf("validating a config migrated the store to schema version %d:\n%s", v, logs)
	}
	if !strings.Contains(logs, `"schema_version":1,"schema_version_here":`+strconv.Itoa(store.SchemaVersion())) {
		t.Errorf("validating does not say the store's schema stays at version 1:\n%s", logs)
	}
}

// schemaVersion reads a store's schema version as keygate records it.
func schemaVersion(t *testing.T, driver, source string) int {
	t.Helper()
	db, err := sql.Open(driver, source)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow("SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		t.Fatalf("%s: %v", driver, err)
	}
	return v
}

// upgraded runs this version's gateway and CLI on an older store holding
// keys (name → id and value); stored, if not nil, returns the store's files.
func upgraded(t *testing.T, storeURI string, keys map[string][2]string, stored func() []byte) {
	id := func(name string) string { return keys[name][0] }
	key := func(name string) string { return keys[name][1] }
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: upgradeCaddyfile, upstream: up.URL, store: storeURI})

	usageOf := func(name string) usageJSON {
		t.Helper()
		var u usageJSON
		if out := g.keys("usage", id(name), "--since", "3650d", "--json"); json.Unmarshal([]byte(out), &u) != nil {
			t.Fatalf("usage %s: %s", name, out)
		}
		return u
	}
	// The counts the older version flushed, before this one adds any.
	if u := usageOf("crm"); u.Allowed != 3 || u.Recipients != 6 || u.Statuses["2xx"] != 3 {
		t.Fatalf("crm-sync's usage after the upgrade: %+v, want 3 allowed sends of 6 recipients", u)
	}
	if u := usageOf("leaked"); u.Allowed != 1 || u.Denied["revoked_key"] != 1 {
		t.Fatalf("the revoked key's usage after the upgrade: %+v, want 1 allowed and 1 revoked_key", u)
	}
	if u := usageOf("paused"); u.Denied["disabled_key"] != 1 {
		t.Fatalf("the disabled key's usage after the upgrade: %+v, want 1 disabled_key", u)
	}

	// Every key's settings, as the older version stored them.
	var crm struct {
		Name          string   `json:"name"`
		Owner         string   `json:"owner"`
		Scopes        []string `json:"scopes"`
		Rate          string   `json:"rate"`
		Quota         string   `json:"quota"`
		SenderDomains []string `json:"sender_domains"`
		MaxRecipients int      `json:"max_recipients"`
		ExpiresAt     string   `json:"expires_at"`
		LastUsedAt    string   `json:"last_used_at"`
	}
	if err := json.Unmarshal([]byte(g.keys("show", id("crm"), "--json")), &crm); err != nil {
		t.Fatal(err)
	}
	if crm.Name != "crm-sync" || crm.Owner != "sales" || strings.Join(crm.Scopes, " ") != "mail.send" || crm.Rate != "100/m" ||
		crm.Quota != "1000/d" || strings.Join(crm.SenderDomains, " ") != "example.com" || crm.MaxRecipients != 50 ||
		!strings.HasPrefix(crm.ExpiresAt, "2099-01-01") || crm.LastUsedAt == "" {
		t.Fatalf("crm-sync's record after the upgrade: %+v", crm)
	}

	// The gateway answers every key as the older version did.
	send := func(name, from string, recipients int) *response {
		to := make([]string, recipients)
		for i := range to {
			to[i] = `{"email":"u` + string(rune('a'+i)) + `@example.org"}`
		}
		body := `{"personalizations":[{"to":[` + strings.Join(to, ",") + `]}],"from":{"email":"crm@` + from +
			`"},"subject":"s","content":[{"type":"text/plain","value":"v"}]}`
		return g.call("POST", "/v3/mail/send", key(name), []byte(body), "Content-Type", "application/json")
	}
	for _, c := range []struct {
		what string
		r    *response
		want string // a denial's code, or "" for a request passed upstream
	}{
		{"crm-sync sends", send("crm", "example.com", 2), ""},
		{"crm-sync from a domain it may not send from", send("crm", "example.net", 1), "sender_not_allowed"},
		{"the test key from its allowed address", g.call("GET", "/v3/templates", key("ops"), nil), ""},
		{"the revoked key", send("leaked", "example.com", 1), "revoked_key"},
		{"the rotated key past its grace", send("old", "example.com", 1), "expired_key"},
		{"the key that replaced it", send("new", "example.com", 1), ""},
		{"the disabled key", g.call("GET", "/v3/templates", key("paused"), nil), "disabled_key"},
		{"the disabled key, on a route outside its scope", send("paused", "example.com", 1), "disabled_key"},
	} {
		if got := c.r.code(); got != c.want || (c.want == "" && c.r.Status != 202) {
			t.Errorf("%s: %d %s, want %q", c.what, c.r.Status, c.r.Body, c.want)
		}
	}
	if up.count() != 3 {
		t.Errorf("the provider got %d requests, want 3", up.count())
	}

	// And changes them as it changes its own.
	g.keys("update", id("paused"), "--enable", "--reason", "after the upgrade")
	if eventually(t, 2*time.Second, func() bool { return g.call("GET", "/v3/templates", key("paused"), nil).Status == 202 }) < 0 {
		t.Error("the key enabled after the upgrade is still refused")
	}
	if r := g.admin("POST", "/keygate/keys/"+id("crm")+"/revoke", map[string]string{"reason": "after the upgrade"}); r.Status != 200 {
		t.Fatalf("revoke through the admin API: %d %s", r.Status, r.Body)
	}
	if r := send("crm", "example.com", 1); r.code() != "revoked_key" { // the next request (CONTRACT.md §7)
		t.Errorf("the key revoked after the upgrade: %d %s", r.Status, r.Body)
	}

	// The audit trail runs on from the older version's events.
	var events []struct {
		Action string `json:"action"`
		KeyID  string `json:"key_id"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(g.keys("events", "--json")), &events); err != nil {
		t.Fatal(err)
	}
	var trail []string
	for _, e := range events {
		for name, k := range keys {
			if e.KeyID == k[0] {
				trail = append(trail, e.Action+" "+name+" "+e.Reason)
			}
		}
	}
	for _, want := range []string{"issued crm ", "issued leaked ", "revoked leaked pasted in a support ticket", "rotated old ",
		"disabled paused ", "enabled paused after the upgrade", "revoked crm after the upgrade"} {
		if !strings.Contains(strings.Join(trail, "\n")+"\n", want+"\n") {
			t.Errorf("the audit events lack %q:\n%s", want, strings.Join(trail, "\n"))
		}
	}

	// Counts written after the upgrade add to the older ones.
	g.stop()
	if u := usageOf("crm"); u.Allowed != 4 || u.Recipients != 8 || u.Denied["sender_not_allowed"] != 1 || u.Denied["revoked_key"] != 1 {
		t.Errorf("crm-sync's usage after sending on the upgraded store: %+v, want 4 allowed of 8 recipients, "+
			"1 sender_not_allowed and 1 revoked_key", u)
	}
	if stored != nil {
		files := stored()
		for name, k := range keys {
			if bytes.Contains(files, []byte(k[1])) {
				t.Errorf("the %s key's value is in the store's files", name)
			}
		}
	}
}
