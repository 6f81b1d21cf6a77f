package keygate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// logsCaddyfile has keys arrive in every header Caddy writes to its logs as
// the client sent it (a key_header, Postmark's and Brevo's), an access log
// with the filter keygate asks for, a SendGrid site whose access log has no
// filter (keys arrive in Authorization only, which Caddy redacts), every other log at DEBUG on stderr, and
// an upstream that refuses connections, so Caddy's error path runs too.
// {FILTER}, {CONFIRM}, {ERRORS} and {DEAD} are filled by the test.
const logsCaddyfile = `{
	admin {ADMIN}
	debug
}
http://gw.localhost:{PORT}, http://postmark.localhost:{PORT}, http://brevo.localhost:{PORT}, http://console.localhost:{PORT} {
	bind 127.0.0.1
	log {
		output file {LOG}
{FILTER}
	}
	@gw host gw.localhost
	@postmark host postmark.localhost
	@brevo host brevo.localhost
	@console host console.localhost
	route @gw {
		keygate {
			store {STORE}
			key_header X-Api-Key
			scope mail.send POST /v3/mail/send
			scope mail.send POST /down/*
{CONFIRM}
		}
		handle /down/* {
			reverse_proxy {DEAD}
		}
		reverse_proxy {UPSTREAM}
	}
	route @postmark {
		keygate {
			store {STORE}
			mail_api postmark
			scope mail.send POST /email
{CONFIRM}
		}
		reverse_proxy {DEAD}
	}
	route @brevo {
		keygate {
			store {STORE}
			mail_api brevo
			scope mail.send POST /v3/smtp/email
{CONFIRM}
		}
		reverse_proxy {DEAD}
	}
	route @console {
		` + demoUser + `
		keygate_console {
			store {STORE}
			admin demo
		}
	}
{ERRORS}
}
http://sendgrid.localhost:{PORT} {
	bind 127.0.0.1
	log {
		output file {LOG}.sendgrid
	}
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
}
# Any other host name: refused and not logged (docs/monitoring.md). Without
# this site Caddy writes such a request to its default access log, which
# filters nothing, and keygate never runs for it.
http://:{PORT} {
	bind 127.0.0.1
	abort
}
`

// The lines an operator adds after keygate refused the configuration.
const (
	keyHeaderFilter = `		format filter {
			request>headers>X-Api-Key delete
			request>headers>X-Postmark-Server-Token delete
			request>headers>X-Postmark-Account-Token delete
			request>headers>Api-Key delete
		}`
	confirmFilter = "\t\t\taccess_log_filtered"
)

func logsConfig(filter, confirm, errors string, dead int) string {
	return strings.NewReplacer("{FILTER}", filter, "{CONFIRM}", confirm, "{ERRORS}", errors,
		"{DEAD}", fmt.Sprintf("127.0.0.1:%d", dead)).Replace(logsCaddyfile)
}

// TestNoKeyInAnyLog runs the gateway as an operator would and greps every
// file it wrote, and its stderr, for every key a client sent.
func TestNoKeyInAnyLog(t *testing.T) {
	needBinary(t)
	dead := freePort(t) // nothing listens here: reverse_proxy answers 502

	t.Run("an access log without the filter is refused at load, naming the headers and the fix", func(t *testing.T) {
		dir := t.TempDir()
		cf := strings.NewReplacer("{ADMIN}", "127.0.0.1:0", "{PORT}", "1", "{STORE}", "sqlite:"+filepath.Join(dir, "keys.db"),
			"{UPSTREAM}", "127.0.0.1:1", "{LOG}", filepath.Join(dir, "access.log")).Replace(logsConfig("", "", "", dead))
		path := filepath.Join(dir, "Caddyfile")
		os.WriteFile(path, []byte(cf), 0o600)
		cmd := exec.Command(caddyBin, "validate", "--config", path, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("caddy validate accepted an access log that records X-Api-Key:\n%s", out)
		}
		for _, want := range []string{"X-Api-Key", "request>headers>X-Api-Key delete", "format filter", "access_log_filtered"} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("the refusal does not contain %q:\n%s", want, out)
			}
		}
	})

	for _, tc := range []struct{ name, errors string }{
		{"without handle_errors", ""},
		{"with handle_errors", "\thandle_errors {\n\t\trespond \"gateway trouble: {err.status_code}\" {err.status_code}\n\t}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t)
			g := startGateway(t, gatewayConfig{caddyfile: logsConfig(keyHeaderFilter, confirmFilter, tc.errors, dead), upstream: up.URL})
			var used []string
			issue := func() string {
				k := g.issue("--name", "logs", "--scope", "mail.send")
				used = append(used, k.Key)
				return k.Key
			}
			postmark := []byte(`{"From":"a@shop.example.com","To":"b@example.org","Subject":"x","TextBody":"x"}`)
			brevo := []byte(`{"sender":{"email":"a@shop.example.com"},"to":[{"email":"b@example.org"}],"subject":"x","textContent":"x"}`)
			type call struct {
				name, host, path string
				body             []byte
				bearer           string
				hdr              []string
				status           []int // any of these
				// skipped is where the request holds a key Caddy's access
				// log would write ("" if nowhere): it is left out of that
				// log, and keygate logs it instead.
				skipped string
			}
			k1, k2, k3, k4, k5, k6, k7, k8, k9 := issue(), issue(), issue(), issue(), issue(), issue(), issue(), issue(), issue()
			wrong := k7[:len(k7)-1] + "0" // same shape, bad checksum
			if strings.HasSuffix(k7, "0") {
				wrong = k7[:len(k7)-1] + "1"
			}
			used = append(used, wrong)
			wrong9 := k9[:len(k9)-1] + "0"
			if strings.HasSuffix(k9, "0") {
				wrong9 = k9[:len(k9)-1] + "1"
			}
			used = append(used, wrong9)
			sendgrid := []byte(`{"personalizations":[{"to":[{"email":"b@example.org"}]}],"from":{"email":"a@shop.example.com"},"subject":"x","content":[{"type":"text/plain","value":"x"}]}`)
			errStatus := 502
			calls := []call{
				{"key_header, proxied", "gw.localhost", "/v3/mail/send", []byte(`{}`), "", []string{"X-Api-Key", k1}, []int{202}, ""},
				{"key_header, upstream unreachable", "gw.localhost", "/down/x", nil, "", []string{"X-Api-Key", k2}, []int{errStatus}, ""},
				{"bearer, upstream unreachable", "gw.localhost", "/down/x", nil, k3, nil, []int{errStatus}, ""},
				{"key_header, insufficient scope", "gw.localhost", "/other", nil, "", []string{"X-Api-Key", k2}, []int{403}, ""},
				{"key_header, bad checksum", "gw.localhost", "/down/x", nil, "", []string{"X-Api-Key", wrong}, []int{401}, ""},
				// Two different keys in one request are refused (CONTRACT §4).
				{"bearer beside a stray key_header", "gw.localhost", "/down/x", nil, k3, []string{"X-Api-Key", k4}, []int{401}, ""},
				// The dialect's own header authenticates once the handler
				// reads it; until then it is missing_key. Either way the
				// header must not reach a log.
				{"postmark server token", "postmark.localhost", "/email", postmark, "", []string{"X-Postmark-Server-Token", k5}, []int{errStatus, 401}, ""},
				{"postmark account token", "postmark.localhost", "/email", postmark, "", []string{"X-Postmark-Account-Token", k5}, []int{errStatus, 401}, ""},
				{"postmark header beside a bearer key", "postmark.localhost", "/email", postmark, k6, []string{"X-Postmark-Server-Token", k6}, []int{errStatus}, ""},
				{"brevo api-key", "brevo.localhost", "/v3/smtp/email", brevo, "", []string{"Api-Key", k7}, []int{errStatus, 401}, ""},
				{"brevo api-key beside a bearer key", "brevo.localhost", "/v3/smtp/email", brevo, k6, []string{"Api-Key", k6}, []int{errStatus}, ""},
				// Keys where a SendGrid route reads none, in what its
				// access log writes as sent.
				{"sendgrid bearer", "sendgrid.localhost", "/v3/mail/send", sendgrid, k8, nil, []int{202}, ""},
				{"sendgrid key in X-Api-Key", "sendgrid.localhost", "/v3/mail/send", sendgrid, "", []string{"X-Api-Key", k8}, []int{401}, "X-Api-Key"},
				{"sendgrid bearer and the same key in X-Api-Key", "sendgrid.localhost", "/v3/mail/send", sendgrid, k8, []string{"X-Api-Key", k8}, []int{202}, "X-Api-Key"},
				{"sendgrid key in Postmark's header", "sendgrid.localhost", "/v3/mail/send", sendgrid, "", []string{"X-Postmark-Server-Token", k9}, []int{401}, "X-Postmark-Server-Token"},
				{"sendgrid mistyped key in Api-Key beside a bearer key", "sendgrid.localhost", "/v3/mail/send", sendgrid, k8, []string{"Api-Key", wrong9}, []int{202}, "Api-Key"},
				{"sendgrid key in the query beside a bearer key", "sendgrid.localhost", "/v3/mail/send?api_key=" + k9, sendgrid, k8, nil, []int{401}, "the URL"},
				{"sendgrid key in the query only", "sendgrid.localhost", "/v3/mail/send?api_key=" + k9, sendgrid, "", nil, []int{401}, "the URL"},
				{"sendgrid key in the query, encoded twice", "sendgrid.localhost", "/v3/mail/send?api_key=" + strings.ReplaceAll(k9, "_", "%255F"), sendgrid, k8, nil, []int{401}, "the URL"},
				{"sendgrid key in the query, encoded twice, after a %25", "sendgrid.localhost", "/v3/mail/send?note=100%25&api_key=" + strings.ReplaceAll(k9, "_", "%255F"), sendgrid, k8, nil, []int{401}, "the URL"},
				{"sendgrid key in the path, encoded twice", "sendgrid.localhost", "/v3/mail/send/" + strings.ReplaceAll(k9, "_", "%255F"), sendgrid, k8, nil, []int{401}, "the URL"},
				// Keys in headers that no provider reads: stripped before
				// the upstream, left out of the access log.
				{"sendgrid bearer and the same key in X-Auth-Token", "sendgrid.localhost", "/v3/mail/send", sendgrid, k8, []string{"X-Auth-Token", "Token " + k8}, []int{202}, "X-Auth-Token"},
				{"sendgrid mistyped key in User-Agent beside a bearer key", "sendgrid.localhost", "/v3/mail/send", sendgrid, k8, []string{"User-Agent", "crm-sync/1.0 " + wrong9}, []int{202}, "User-Agent"},
				{"sendgrid bearer and another key in the Referer", "sendgrid.localhost", "/v3/mail/send", sendgrid, k8, []string{"Referer", "https://crm.example/settings?key=" + k9}, []int{401}, "Referer"},
				{"key_header site, a key in X-Auth-Token only", "gw.localhost", "/v3/mail/send", []byte(`{}`), "", []string{"X-Auth-Token", k1}, []int{401}, "X-Auth-Token"},
			}
			for _, c := range calls {
				hdr := append([]string{"Host", c.host, "Content-Type", "application/json", "X-Canary", "canary-" + c.name}, c.hdr...)
				r := g.call("POST", c.path, c.bearer, c.body, hdr...)
				ok := false
				for _, s := range c.status {
					ok = ok || r.Status == s
				}
				if !ok {
					t.Errorf("%s: status %d %s, want one of %v", c.name, r.Status, r.Body, c.status)
				}
				if tc.errors != "" && r.Status == errStatus && !bytes.Contains(r.Body, []byte("gateway trouble: 502")) {
					t.Errorf("%s: handle_errors did not answer the 502: %q", c.name, r.Body)
				}
			}
			// The gateway reached by its address, with a key in a header
			// Caddy logs as sent: no site names the host, so no keygate
			// runs, and the catch-all site keeps it out of every log.
			unmapped := issue()
			req, _ := http.NewRequest("POST", g.siteURL+"/email", bytes.NewReader(postmark))
			req.Host = "127.0.0.1"
			req.Header.Set("X-Postmark-Server-Token", unmapped)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
				t.Errorf("a request for a host no site names: %d, want the connection aborted", resp.StatusCode)
			}
			// A key made in the console: its reveal token (a cookie) and
			// the key must reach no file either, the store's included.
			key, token := consoleKey(t, g)
			used = append(used, key)
			// A key pasted into the console's search where its script did
			// not run arrives in the query: redirected to its hint, and the
			// request left out of the access log.
			if resp, _ := (consoleUser{t: t, host: "console.localhost"}).do(g, http.MethodGet, "/?q="+key, nil); resp.StatusCode != http.StatusSeeOther ||
				strings.Contains(resp.Header.Get("Location"), key) {
				t.Errorf("a console search for a whole key: %d to %q, want a redirect to its hint", resp.StatusCode, resp.Header.Get("Location"))
			}
			g.stop() // flushes every log

			var files []string
			all := map[string][]byte{}
			filepath.WalkDir(g.dir, func(path string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					b, _ := os.ReadFile(path)
					all[path] = b
					files = append(files, path)
				}
				return nil
			})
			access := append(all[g.logPath], all[g.logPath+".sendgrid"]...)
			for _, c := range calls {
				// The access log records headers: the control proves the
				// grep below reads what a key header would have been
				// written to.
				inAccess := bytes.Contains(access, []byte("canary-"+c.name))
				switch {
				case c.skipped == "" && !inAccess:
					t.Errorf("the access log has no line for %q", c.name)
				case c.skipped != "" && inAccess:
					t.Errorf("the access log has a line for %q, which holds a key in %s", c.name, c.skipped)
				case c.skipped != "" && !bytes.Contains(all[g.logPath+".stderr"], []byte(`"access_log_skipped":"a key in `+c.skipped+`"`)):
					t.Errorf("keygate's log has no line for %q, left out of the access log", c.name)
				}
			}
			if !bytes.Contains(all[g.logPath+".stderr"], []byte(`"level":"debug"`)) {
				t.Error("stderr has no DEBUG lines: the test does not see what DEBUG logging writes")
			}
			for _, key := range used {
				secret := []byte(key[len("kg_live_"):][:43]) // the whole key contains it
				for path, b := range all {
					if i := bytes.Index(b, secret); i >= 0 {
						line := b[bytes.LastIndexByte(b[:i], '\n')+1:]
						if j := bytes.IndexByte(line, '\n'); j >= 0 {
							line = line[:j]
						}
						t.Errorf("%s contains a key:\n%s", path, bytes.ReplaceAll(line, secret, []byte("<SECRET>")))
					}
				}
			}
			for path, b := range all {
				if bytes.Contains(b, []byte(token)) {
					t.Errorf("%s contains the console's reveal token", path)
				}
			}
			if !bytes.Contains(access, []byte(`"/reveal/`)) {
				t.Error("the access log has no line for the console's reveal page")
			}
			t.Logf("grepped %d files for %d keys", len(files), len(used))
		})
	}
}

// consoleKey creates a key in g's console (on console.localhost) as a
// browser does, and returns it from its reveal page with the reveal
// cookie's value.
func consoleKey(t *testing.T, g *gateway) (key, token string) {
	t.Helper()
	u := consoleUser{t: t, host: "console.localhost"}
	loc, cookies := u.create(g, u.formToken(g), "from-the-console")
	_, page := u.do(g, http.MethodGet, loc, nil, cookies...)
	if key = keyPattern.FindString(page); key == "" {
		t.Fatalf("the console's reveal page shows no key:\n%s", page)
	}
	return key, cookies[0].Value
}

// Caddy's tracing records the request's path as the span's url.path, and a
// span named from {http.request.uri} holds the whole URL: a key a client put
// in the URL (refused, and left out of the access log) went with both to the
// tracing backend. keygate takes it out of the span. The collector here
// reads OTLP over HTTP; a key is found in the raw protobuf as sent.
func TestAKeyInTheURLStaysOutOfTraces(t *testing.T) {
	var mu sync.Mutex
	var exported []byte
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		exported = append(exported, b...)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	tracing {
		span "{http.request.method} {http.request.uri}"
		span_attributes {
			key_id {keygate.key.id}
		}
	}
	keygate {
		store {STORE}
		scope misc.read GET /x*
	}
	reverse_proxy {UPSTREAM}
`), upstream: up.URL, env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_BSP_SCHEDULE_DELAY=100"}})
	k := g.issue("--name", "traced", "--scope", "misc.read")
	secret := k.Key[strings.LastIndexByte(k.Key, '_')+1:]
	for _, path := range []string{"/x/" + k.Key, "/x?api_key=" + k.Key, "/x/" + strings.ReplaceAll(k.Key, "_", "%5F")} {
		if r := g.call("GET", path, "", nil); r.Status != 401 || r.code() != "missing_key" {
			t.Errorf("GET %s: %d %s, want 401 missing_key", path, r.Status, r.Body)
		}
	}
	if r := g.call("GET", "/x/ok", k.Key, nil); r.Status != 202 {
		t.Errorf("GET /x/ok: %d %s", r.Status, r.Body)
	}
	got := func() []byte {
		mu.Lock()
		defer mu.Unlock()
		return bytes.Clone(exported)
	}
	if eventually(t, 10*time.Second, func() bool { return bytes.Count(got(), []byte("url.path")) >= 4 }) < 0 {
		t.Fatalf("the collector got %d spans, want 4:\n%s", bytes.Count(got(), []byte("url.path")), g.logs())
	}
	spans := got()
	if bytes.Contains(spans, []byte(secret)) {
		t.Errorf("an exported span holds the key's secret: %q", spans)
	}
	for _, want := range []string{"GET /x/kg_live_…", "/x/kg_live_…", k.ID, "GET /x/ok"} {
		if !bytes.Contains(spans, []byte(want)) {
			t.Errorf("the spans lack %q: %q", want, spans)
		}
	}
}

// Caddy's admin endpoint logs each request it receives at INFO, headers
// included, before keygate answers it; at DEBUG, the rewrite of a
// handle_path in front of keygate logs the request as the client sent it.
// Neither line is keygate's to leave out. docs/admin-api.md and
// docs/monitoring.md give the default log's filter that does: this test
// runs without it (so it sees that Caddy still writes both, and the docs
// are still needed) and with it, verbatim from the docs.
func TestTheDefaultLogFilterKeepsAdminAndRewriteLinesFree(t *testing.T) {
	docs := func(page, start string) string {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		i := strings.Index(s, start)
		if i < 0 {
			t.Fatalf("%s has no block beginning %q", page, start)
		}
		s = s[i:]
		return s[:strings.Index(s, "```")]
	}
	adminFilter := docs("docs/admin-api.md", "{\n\tlog {")
	if !strings.Contains(adminFilter, "headers>Idempotency-Key delete") || !strings.Contains(adminFilter, "uri regexp") {
		t.Fatalf("docs/admin-api.md's filter does not delete the Idempotency-Key or cut the URI:\n%s", adminFilter)
	}
	// The block is indented as a list item's.
	debugFilter := strings.ReplaceAll(docs("docs/monitoring.md", "{\n  \tdebug\n  \tlog {"), "\n  ", "\n")
	for _, tc := range []struct {
		name   string
		global string
		leaks  bool
	}{
		{"without the filter", "{\n\tdebug\n}", true},
		{"with docs/admin-api.md's filter", adminFilter, false},
		{"with docs/monitoring.md's filter", debugFilter, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug := strings.Contains(tc.global, "debug")
			global := strings.Replace(tc.global, "{", "{\n\tadmin {ADMIN}", 1)
			up := newUpstream(t)
			g := startGateway(t, gatewayConfig{caddyfile: global + `
http://127.0.0.1:{PORT} {
	bind 127.0.0.1
	handle_path /sendgrid/* {
		keygate {
			store {STORE}
			mail_api sendgrid
			key_header X-Api-Key
			scope mail.send POST /v3/mail/send
		}
		reverse_proxy {UPSTREAM}
	}
}
`, upstream: up.URL})
			idem := "b0e5a2d4-6f1c-4a8e-9d3b-" + fmt.Sprint(time.Now().UnixNano()%1e12)
			r := g.admin("POST", "/keygate/keys", map[string]any{"name": "crm", "scopes": []string{"mail.send"}}, "Idempotency-Key", idem)
			if r.Status != 201 {
				t.Fatalf("POST /keygate/keys: %d %s", r.Status, r.Body)
			}
			var issued struct{ Key string }
			json.Unmarshal(r.Body, &issued)
			secret := issued.Key[len("kg_live_"):][:43]
			if r := g.call("POST", "/sendgrid/v3/mail/send", "", []byte(`{"personalizations":[{"to":[{"email":"b@example.org"}]}],"from":{"email":"a@example.com"},"subject":"x","content":[{"type":"text/plain","value":"x"}]}`),
				"X-Api-Key", issued.Key, "Content-Type", "application/json"); r.Status != 202 {
				t.Errorf("a send with the key in X-Api-Key: %d %s", r.Status, r.Body)
			}
			if r := g.call("GET", "/sendgrid/v3/templates?api_key="+issued.Key, "", nil); r.Status != 401 {
				t.Errorf("a key in the query: %d %s", r.Status, r.Body)
			}
			if r := g.admin("GET", "/keygate/keys/"+issued.Key, nil); r.Status != 400 {
				t.Errorf("an admin URL holding a key: %d %s", r.Status, r.Body)
			}
			g.stop()
			b, _ := os.ReadFile(g.logPath + ".stderr")
			log := string(b)
			if !strings.Contains(log, `"logger":"admin.api","msg":"received request"`) ||
				debug && !strings.Contains(log, `"logger":"http.handlers.rewrite"`) {
				t.Fatalf("the log lacks the admin endpoint's or the rewrite's line, which the test looks into:\n%s", log)
			}
			for what, s := range map[string]string{"the Idempotency-Key": idem, "the key": secret} {
				if strings.Contains(log, s) != tc.leaks {
					t.Errorf("%s in Caddy's log: %v, want %v:\n%s", what, !tc.leaks, tc.leaks, log)
				}
			}
		})
	}
}

// A placeholder of the header a key arrives in is read where it is used:
// in what runs after keygate (a deferred header, log_append, header_up,
// handle_errors) keygate has removed the header and it is empty; in what
// runs before it (header without '>', log_append '<') it is the key as the
// client sent it, which then goes into the response and the access log
// (docs/caddyfile.md#placeholders).
func TestAKeysHeaderPlaceholderIsEmptyOnceKeygateRan(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	log {
		output file {LOG}
	}
	header X-Before {http.request.header.Authorization}
	header >X-After {http.request.header.Authorization}
	log_append <before {http.request.header.Authorization}
	log_append after {http.request.header.Authorization}
	keygate {
		store {STORE}
		scope mail.send POST /send
	}
	reverse_proxy {UPSTREAM} {
		header_up X-Client-Authorization {http.request.header.Authorization}
	}
`), upstream: up.URL})
	key := g.issue("--name", "crm", "--scope", "mail.send").Key
	secret := key[len("kg_live_"):]
	r := g.call("POST", "/send", key, []byte(`{}`))
	if r.Status != 202 {
		t.Fatalf("POST /send: %d %s", r.Status, r.Body)
	}
	if v := r.Header.Get("X-After"); v != "" {
		t.Errorf("header >X-After {http.request.header.Authorization}: %q, want empty", v)
	}
	if v := up.last().Header.Get("X-Client-Authorization"); strings.Contains(v, secret) {
		t.Errorf("header_up {http.request.header.Authorization} sent the key upstream: %q", v)
	}
	if v := r.Header.Get("X-Before"); !strings.Contains(v, secret) {
		t.Errorf("header X-Before (before keygate): %q, want the key as sent, as docs/caddyfile.md says", v)
	}
	g.stop()
	access, err := os.ReadFile(g.logPath)
	if err != nil {
		t.Fatal(err)
	}
	var line struct {
		Before string `json:"before"`
		After  string `json:"after"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(access), &line); err != nil {
		t.Fatalf("the access log: %v\n%s", err, access)
	}
	if line.After != "" {
		t.Errorf("log_append after: %q, want empty", line.After)
	}
	if !strings.Contains(line.Before, secret) {
		t.Errorf("log_append <before: %q, want the key as sent, as docs/caddyfile.md says", line.Before)
	}
}

// TestKeygateEmitsTheCaddyEventsTheDocsName: docs/monitoring.md's Caddy
// events, by the names a subscription gives (keygate.key_denied for a
// revoked, expired or disabled key; keygate.rate_limited for rate_limited
// and quota_exceeded) and with the data it lists (key_id, key_name, owner,
// decision, client_ip). Caddy logs each event it emits at DEBUG (logger
// events), which is how this test, with no event handler plugin in the
// binary, sees them.
func TestKeygateEmitsTheCaddyEventsTheDocsName(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: `{
	admin {ADMIN}
	debug
}
http://127.0.0.1:{PORT} {
	bind 127.0.0.1
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
		rate 1/h
	}
	reverse_proxy {UPSTREAM}
}
`, upstream: up.URL})
	limited := g.issue("--name", "busy", "--owner", "ops", "--scope", "mail.send")
	revoked := g.issue("--name", "gone", "--owner", "sales", "--scope", "mail.send")
	disabled := g.issue("--name", "paused", "--owner", "sales", "--scope", "mail.send")
	g.keys("revoke", revoked.ID, "--yes")
	g.keys("update", disabled.ID, "--disable")
	for _, k := range []issuedKey{limited, limited, revoked, disabled} {
		g.call("POST", "/v3/mail/send", k.Key, nil)
	}
	type event struct {
		Name string            `json:"name"`
		Data map[string]string `json:"data"`
	}
	want := []event{
		{"keygate.rate_limited", map[string]string{"key_id": limited.ID, "key_name": "busy", "owner": "ops", "decision": "rate_limited", "client_ip": "127.0.0.1"}},
		{"keygate.key_denied", map[string]string{"key_id": revoked.ID, "key_name": "gone", "owner": "sales", "decision": "revoked_key", "client_ip": "127.0.0.1"}},
		{"keygate.key_denied", map[string]string{"key_id": disabled.ID, "key_name": "paused", "owner": "sales", "decision": "disabled_key", "client_ip": "127.0.0.1"}},
	}
	var got []event
	eventually(t, 5*time.Second, func() bool {
		got = nil
		for _, line := range strings.Split(g.logs(), "\n") {
			var e struct {
				event
				Logger, Msg string
			}
			if json.Unmarshal([]byte(line), &e) == nil && e.Logger == "events" && e.Msg == "event" && strings.HasPrefix(e.Name, "keygate.") {
				got = append(got, e.event)
			}
		}
		return len(got) >= len(want)
	})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keygate's events:\n%+v\nwant\n%+v", got, want)
	}
}
