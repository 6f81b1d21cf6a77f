package keygate_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// A script that issues or rotates a key through the admin API and does not
// get the answer (a timeout, a store that hung) sends the request again
// under the same Idempotency-Key: it gets the first answer, the key
// included, and nothing new is made.
func TestTheAdminAPIAnswersARepeatedIdempotencyKeyOnce(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: lifecycleCaddyfile, upstream: up.URL})
	var shown []string // every key the admin API answered with
	named := func(name string) int {
		t.Helper()
		var recs []record
		r := g.admin("GET", "/keygate/keys?all=true", nil)
		if err := json.Unmarshal(r.Body, &recs); err != nil {
			t.Fatalf("list: %v: %s", err, r.Body)
		}
		n := 0
		for _, rec := range recs {
			if rec.Name == name {
				n++
			}
		}
		return n
	}
	made := func(r *response) issuedKey {
		t.Helper()
		var k issuedKey
		if err := json.Unmarshal(r.Body, &k); err != nil || k.Key == "" {
			t.Fatalf("answer %d without a key: %v: %s", r.Status, err, r.Body)
		}
		shown = append(shown, k.Key)
		return k
	}

	t.Run("an issue repeated makes one key and answers the first answer again, said to be a replay", func(t *testing.T) {
		body := json.RawMessage(`{"name":"idem-crm","scopes":["mail.send"],"expires":"90d"}`)
		first := g.admin("POST", "/keygate/keys", body, "Idempotency-Key", "3f0c9a5e-issue-1")
		again := g.admin("POST", "/keygate/keys", body, "Idempotency-Key", "3f0c9a5e-issue-1")
		if first.Status != 201 || again.Status != 201 {
			t.Fatalf("statuses %d, %d: %s / %s", first.Status, again.Status, first.Body, again.Body)
		}
		made(first)
		if !bytes.Equal(first.Body, again.Body) {
			t.Errorf("the repeat answered\n%s\nnot the first answer\n%s", again.Body, first.Body)
		}
		if first.Header.Get("Idempotent-Replayed") != "" || again.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("Idempotent-Replayed: %q, then %q; want none, then true",
				first.Header.Get("Idempotent-Replayed"), again.Header.Get("Idempotent-Replayed"))
		}
		if n := named("idem-crm"); n != 1 {
			t.Errorf("%d keys named idem-crm, want 1", n)
		}
	})

	t.Run("the same Idempotency-Key with another body is refused and makes nothing", func(t *testing.T) {
		r := g.admin("POST", "/keygate/keys", json.RawMessage(`{"name":"idem-other","scopes":["mail.send"]}`),
			"Idempotency-Key", "3f0c9a5e-issue-1")
		if r.Status != 422 || r.code() != "invalid_input" || !strings.Contains(string(r.Body), "Idempotency-Key") {
			t.Errorf("got %d %s, want 422 invalid_input naming Idempotency-Key", r.Status, r.Body)
		}
		if n := named("idem-other"); n != 0 {
			t.Errorf("%d keys named idem-other, want none", n)
		}
	})

	t.Run("a rotation repeated answers the same new key and leaves the old key's grace as it was", func(t *testing.T) {
		old := made(g.admin("POST", "/keygate/keys", map[string]any{"name": "idem-rotated", "scopes": []string{"mail.send"}}))
		path := "/keygate/keys/" + old.ID + "/rotate"
		body := json.RawMessage(`{"grace":"1h","reason":"scheduled"}`)
		first := g.admin("POST", path, body, "Idempotency-Key", "rotate-"+old.ID)
		if first.Status != 201 {
			t.Fatalf("rotate: %d %s", first.Status, first.Body)
		}
		made(first)
		var before record
		json.Unmarshal(g.admin("GET", "/keygate/keys/"+old.ID, nil).Body, &before)
		again := g.admin("POST", path, body, "Idempotency-Key", "rotate-"+old.ID)
		if again.Status != 201 || !bytes.Equal(first.Body, again.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("the repeat answered %d %s\nwant 201 and the first answer, replayed:\n%s", again.Status, again.Body, first.Body)
		}
		var after record
		json.Unmarshal(g.admin("GET", "/keygate/keys/"+old.ID, nil).Body, &after)
		if before.ExpiresAt == nil || after.ExpiresAt == nil || !after.ExpiresAt.Equal(*before.ExpiresAt) {
			t.Errorf("the old key ends at %v after the repeat, want %v", after.ExpiresAt, before.ExpiresAt)
		}
		if n := named("idem-rotated"); n != 2 {
			t.Errorf("%d keys named idem-rotated, want 2 (the old and its one successor)", n)
		}
	})

	t.Run("a malformed Idempotency-Key is refused naming the header", func(t *testing.T) {
		body := json.RawMessage(`{"name":"idem-bad","scopes":["mail.send"]}`)
		for _, hdr := range [][]string{
			{""},
			{strings.Repeat("k", 256)},
			{"two words"},
			{"clé"},
			{"one", "two"},
		} {
			req, _ := http.NewRequest("POST", "http://"+g.adminAddr+"/keygate/keys", bytes.NewReader(body))
			for _, v := range hdr {
				req.Header.Add("Idempotency-Key", v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r := response{Status: resp.StatusCode}
			r.Body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if r.Status != 400 || r.code() != "invalid_input" || !strings.Contains(string(r.Body), "Idempotency-Key") {
				t.Errorf("Idempotency-Key %q: %d %s, want 400 invalid_input naming the header", hdr, r.Status, r.Body)
			}
		}
		if n := named("idem-bad"); n != 0 {
			t.Errorf("%d keys named idem-bad, want none", n)
		}
	})

	t.Run("concurrent duplicates make exactly one key", func(t *testing.T) {
		body := json.RawMessage(`{"name":"idem-race","scopes":["mail.send"]}`)
		const n = 12
		answers := make([]*response, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { answers[i] = g.admin("POST", "/keygate/keys", body, "Idempotency-Key", "race-1") })
		}
		wg.Wait()
		var ok []byte
		for _, r := range answers {
			switch {
			case r.Status == 201 && ok == nil:
				ok = r.Body
				made(r)
			case r.Status == 201 && !bytes.Equal(r.Body, ok):
				t.Errorf("two different answers:\n%s\n%s", ok, r.Body)
			case r.Status == 409 && r.code() == "conflict":
			case r.Status != 201:
				t.Errorf("got %d %s, want 201 or 409 conflict", r.Status, r.Body)
			}
		}
		if c := named("idem-race"); c != 1 {
			t.Errorf("%d keys named idem-race, want 1", c)
		}
	})

	t.Run("no key it answered is in the database files", func(t *testing.T) {
		files, _ := filepath.Glob(strings.TrimPrefix(g.store, "sqlite:") + "*")
		if len(files) == 0 || len(shown) < 4 {
			t.Fatalf("files %v, keys %d", files, len(shown))
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range shown {
				if bytes.Contains(b, []byte(k)) || bytes.Contains(b, []byte(k[8:40])) {
					t.Errorf("%s holds a key the admin API answered with", filepath.Base(f))
				}
			}
		}
	})
}

// The CLI takes the same key as --idempotency-key: a run repeated after it
// exited 5 (the store did not answer) prints the first run's key.
func TestTheCLIAnswersARepeatedIdempotencyKeyOnce(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: lifecycleCaddyfile, upstream: up.URL})
	run := func(args ...string) (issuedKey, string) {
		t.Helper()
		out, errOut, err := g.keysRaw(args...)
		var k issuedKey
		if err != nil || json.Unmarshal([]byte(out), &k) != nil || k.Key == "" {
			t.Fatalf("keys %s: %v: %s %s", args[0], err, out, errOut)
		}
		return k, errOut
	}
	issue := []string{"issue", "--json", "--name", "cli-idem", "--scope", "mail.send", "--idempotency-key", "cli-issue-1"}
	first, _ := run(issue...)
	again, note := run(issue...)
	if again != first || !strings.Contains(note, "nothing new was made") {
		t.Errorf("the repeat printed %+v (stderr %q), want the first run's key %+v and a note", again, note, first)
	}
	// Refusals name the flag and speak of commands, not of the admin API's
	// header and requests (until session 37: "Idempotency-Key: this key
	// was used for another request (another method, path or body)").
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"issue", "--name", "cli-idem-2", "--scope", "mail.send", "--idempotency-key", "cli-issue-1"},
			"caddy keys issue: --idempotency-key: this value was used within 24h for another command or other flags"},
		{[]string{"rotate", first.ID, "--idempotency-key", "cli-issue-1"},
			"caddy keys rotate: --idempotency-key: this value was used within 24h for another command or other flags"},
		{[]string{"issue", "--name", "cli-idem-3", "--scope", "mail.send", "--idempotency-key", "a b"},
			"caddy keys issue: --idempotency-key: want visible ASCII characters only"},
	} {
		if _, errOut, err := g.keysRaw(c.args...); exitStatus(t, err) != 2 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "Idempotency-Key") {
			t.Errorf("keys %s: %v %q, want exit 2 saying %q", strings.Join(c.args, " "), err, errOut, c.want)
		}
	}
	rotate := []string{"rotate", first.ID, "--json", "--grace", "1h", "--idempotency-key", "cli-rotate-1"}
	r1, _ := run(rotate...)
	r2, _ := run(rotate...)
	if r1 != r2 {
		t.Errorf("the repeated rotation printed %+v, want %+v", r2, r1)
	}
	var recs []record
	json.Unmarshal([]byte(g.keys("list", "--all", "--json")), &recs)
	if len(recs) != 2 {
		t.Errorf("%d keys, want 2 (the issued one and its successor)", len(recs))
	}
}
