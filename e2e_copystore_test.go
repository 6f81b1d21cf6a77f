package keygate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/store"
)

var copyStoreCaddyfile = site(`
	log {
		output file {LOG}
	}
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)

// TestCopyStoreMovesAGatewayFromSQLiteToPostgres is the move docs/cluster.md
// describes: keys issued and used on SQLite answer the same way on
// PostgreSQL after `caddy keys copy-store`, with their usage, their audit
// events and what their quota has left.
func TestCopyStoreMovesAGatewayFromSQLiteToPostgres(t *testing.T) {
	pg := testservers.StartPostgres(t)
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: copyStoreCaddyfile, upstream: up.URL})

	live := g.issue("--name", "crm", "--owner", "sales", "--scope", "mail.send")
	revoked := g.issue("--name", "leaked", "--scope", "mail.send")
	g.keys("revoke", revoked.ID, "--reason", "leaked in a log", "--yes")
	old := g.issue("--name", "rotating", "--scope", "mail.send")
	var next issuedKey
	if err := json.Unmarshal([]byte(g.keys("rotate", old.ID, "--grace", "2h", "--json")), &next); err != nil {
		t.Fatal(err)
	}
	quota := g.issue("--name", "newsletter", "--scope", "mail.send", "--quota", "10/d")
	allKeys := []issuedKey{live, revoked, old, next, quota}

	recipients := func(n int) []byte {
		var to []string
		for i := range n {
			to = append(to, fmt.Sprintf("r%d@example.org", i))
		}
		return sgBody("news@shop.example", to...)
	}
	answers := func(g *gateway) []string {
		var got []string
		for _, k := range []issuedKey{live, revoked, old, next} {
			r := g.call("POST", "/v3/mail/send", k.Key, recipients(1))
			got = append(got, fmt.Sprintf("%d %s", r.Status, r.code()))
		}
		return got
	}
	before := answers(g)
	if want := []string{"202 ", "401 revoked_key", "202 ", "202 "}; !reflect.DeepEqual(before, want) {
		t.Fatalf("on SQLite the keys answer %q, want %q", before, want)
	}
	if r := g.call("POST", "/v3/mail/send", quota.Key, recipients(7)); r.Status != 202 {
		t.Fatalf("7 of the quota's 10: %d %s", r.Status, r.Body)
	}

	t.Run("refused while a gateway runs on the SQLite store", func(t *testing.T) {
		out, errOut, err := g.keysRaw("copy-store", "--to", pg.URI)
		if code := exitStatus(t, err); code != 4 || out != "" || !strings.Contains(errOut, "the store is in use") ||
			strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("exit %d, stdout %q, stderr %q; want exit 4 and one line saying the store is in use", code, out, errOut)
		}
	})
	// What is wrong with the target is said while the gateway still runs,
	// before anyone stops it for a copy that could not have run (until
	// session 37 these were "the store is in use", exit 4, too).
	t.Run("a target that cannot take the copy is said while a gateway runs", func(t *testing.T) {
		full := filepath.Join(t.TempDir(), "full.db")
		g.keys("backup", full) // a store with keys
		down := fmt.Sprintf("postgres://u:pw@127.0.0.1:%d/db?connect_timeout=2", freePort(t))
		for _, c := range []struct {
			to, says string
			code     int
		}{
			{"sqlite:" + full, "holds keys already", 4},
			{down, "the store to copy into", 5},
		} {
			out, errOut, err := g.keysRaw("copy-store", "--to", c.to)
			if code := exitStatus(t, err); code != c.code || out != "" || !strings.Contains(errOut, c.says) || strings.Contains(errOut, "in use") {
				t.Errorf("copy-store --to %s: exit %d, stderr %q; want exit %d saying %q", store.RedactURI(c.to), code, errOut, c.code, c.says)
			}
		}
	})
	g.stop()

	// Usage from a few client addresses, as a gateway behind a proxy counts it.
	ctx := context.Background()
	st, err := store.Open(ctx, g.store)
	if err != nil {
		t.Fatal(err)
	}
	err = st.AddUsage(ctx, []store.UsageDelta{{KeyID: live.ID, Hour: time.Now().Add(-3 * time.Hour),
		Counts: map[string]int64{"allowed": 9}, IPs: map[string]int64{"198.51.100.1": 5, "198.51.100.2": 3, "2001:db8::7": 1}}})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	usage := func(g *gateway, id string) usageJSON {
		var u usageJSON
		if err := json.Unmarshal([]byte(g.keys("usage", id, "--since", "48h", "--json")), &u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	usageBefore := map[string]usageJSON{}
	for _, k := range allKeys {
		usageBefore[k.ID] = usage(g, k.ID)
	}
	if u := usageBefore[live.ID]; len(u.TopIPs) != 4 {
		t.Fatalf("the source's usage of %s from %+v, want 4 addresses", live.ID, u.TopIPs)
	}
	eventsBefore := g.keys("events", "--json")

	var outputs []string
	copyStore := func(args ...string) (string, string, int) {
		out, errOut, err := g.keysRaw(append([]string{"copy-store"}, args...)...)
		outputs = append(outputs, out, errOut)
		return out, errOut, exitStatus(t, err)
	}
	t.Run("refused into the same file under another name", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "link.db")
		if err := os.Symlink(strings.TrimPrefix(g.store, "sqlite:"), link); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out, errOut, code := copyStore("--to", link)
		if code != 2 || out != "" || !strings.Contains(errOut, "--to names the store copied from") || time.Since(start) > 3*time.Second {
			t.Errorf("exit %d after %v, stdout %q, stderr %q; want exit 2 at once, saying --to names the store copied from",
				code, time.Since(start), out, errOut)
		}
	})
	// The URI read from stdin, as an operator keeps its password out of
	// ps: `--to -`.
	out, errOut, err := g.keysStdin(strings.NewReader(pg.URI+"\n"), "copy-store", "--to", "-")
	outputs = append(outputs, out, errOut)
	if code := exitStatus(t, err); code != 0 {
		t.Fatalf("copy-store --to -: exit %d: %s%s", code, out, errOut)
	}
	var evs []struct {
		Seq    int64  `json:"seq"`
		Action string `json:"action"`
	}
	if err := json.Unmarshal([]byte(eventsBefore), &evs); err != nil || len(evs) == 0 {
		t.Fatalf("events: %v", err)
	}
	if want := fmt.Sprintf("copied 5 keys, %d events, ", len(evs)); !strings.HasPrefix(out, want) || !strings.HasSuffix(out, " to "+pg.URI+"\n") {
		t.Errorf("copy-store printed %q, want %q… to %s", out, want, pg.URI)
	}

	t.Run("refused into a store that holds keys", func(t *testing.T) {
		out, errOut, code := copyStore("--to", pg.URI, "--json")
		if code != 4 || out != "" || !strings.Contains(errOut, `"conflict"`) || !strings.Contains(errOut, "holds keys already: 5 keys") {
			t.Errorf("exit %d, stdout %q, stderr %q; want exit 4 naming the 5 keys", code, out, errOut)
		}
	})
	t.Run("an unreachable target is one line, exit 5, without its password", func(t *testing.T) {
		down := fmt.Sprintf("postgres://keygate:s3cretpw@127.0.0.1:%d/keygate?sslmode=disable&connect_timeout=2", freePort(t))
		out, errOut, code := copyStore("--to", down)
		if code != 5 || out != "" || strings.Contains(errOut, "s3cretpw") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 ||
			!strings.Contains(errOut, "the store to copy into") {
			t.Errorf("exit %d, stdout %q, stderr %q; want exit 5 and one line naming the target, password redacted", code, out, errOut)
		}
	})

	h := startGateway(t, gatewayConfig{caddyfile: copyStoreCaddyfile, upstream: up.URL, store: pg.URI})
	for _, k := range allKeys {
		if a, b := usageBefore[k.ID], usage(h, k.ID); !reflect.DeepEqual(a, b) {
			t.Errorf("usage of %s:\non SQLite     %+v\non PostgreSQL %+v", k.ID, a, b)
		}
	}
	if after := h.keys("events", "--json"); after != eventsBefore {
		t.Errorf("events differ:\non SQLite     %s\non PostgreSQL %s", eventsBefore, after)
	}
	if after := answers(h); !reflect.DeepEqual(after, before) {
		t.Errorf("on PostgreSQL the keys answer %q, on SQLite %q", after, before)
	}
	// 7 of 10 were spent on SQLite: 3 are left, not 10.
	if r := h.call("POST", "/v3/mail/send", quota.Key, recipients(4)); r.code() != "quota_exceeded" {
		t.Errorf("4 more of the quota's 10 after 7: %d %s", r.Status, r.Body)
	}
	if r := h.call("POST", "/v3/mail/send", quota.Key, recipients(3)); r.Status != 202 {
		t.Errorf("the last 3 of the quota's 10: %d %s", r.Status, r.Body)
	}
	// The audit log goes on after the copied events.
	h.keys("revoke", live.ID, "--yes")
	last := evs[len(evs)-1].Seq
	if err := json.Unmarshal([]byte(h.keys("events", "--after", fmt.Sprint(last), "--json")), &evs); err != nil ||
		len(evs) != 1 || evs[0].Seq <= last || evs[0].Action != "revoked" {
		t.Errorf("events after %d on PostgreSQL: %+v, %v", last, evs, err)
	}

	h.stop()
	text := strings.Join(outputs, "\n") + g.logs() + h.logs()
	for _, k := range allKeys {
		if strings.Contains(text, k.Key) {
			t.Errorf("key %s appears in copy-store's output or the gateways' logs", k.ID)
		}
	}
}
