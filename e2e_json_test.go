package keygate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

// Operators who configure Caddy with JSON and its admin API (POST /load,
// PATCH /config/…) rather than a Caddyfile: what they push is checked and
// applied as a Caddyfile's would be.

// handlerPath is the admin API path (/config/…) of the first handler named
// name in the running config.
func (g *gateway) handlerPath(name string) string {
	g.t.Helper()
	r := g.admin("GET", "/config/", nil)
	var cfg any
	if err := json.Unmarshal(r.Body, &cfg); r.Status != 200 || err != nil {
		g.t.Fatalf("GET /config/: %d %v", r.Status, err)
	}
	var walk func(v any, path string) string
	walk = func(v any, path string) string {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == name {
				return path
			}
			for k, x := range v {
				if p := walk(x, path+"/"+k); p != "" {
					return p
				}
			}
		case []any:
			for i, x := range v {
				if p := walk(x, fmt.Sprintf("%s/%d", path, i)); p != "" {
					return p
				}
			}
		}
		return ""
	}
	p := walk(cfg, "/config")
	if p == "" {
		g.t.Fatalf("no %s handler in the running config", name)
	}
	return p
}

// configRequest sends raw JSON to the admin API, as curl -d would.
func (g *gateway) configRequest(method, path, body string) (int, string) {
	g.t.Helper()
	req, _ := http.NewRequest(method, "http://"+g.adminAddr+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// Caddy puts up a new config's admin endpoint before it provisions the
// config's apps, and keeps it when they fail: /metrics then reads the
// refused config's registry. keygate's series must stay on it, with their
// counts, while the old config goes on serving; a scrape that loses them
// silences every alert on keygate_* after one rejected push.
func TestKeygateMetricsStayAfterARefusedConfigLoad(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL})
	k := g.issue("--name", "metered", "--scope", "mail.send")
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
		t.Fatalf("send: %d %s", r.Status, r.Body)
	}
	const allowed = `keygate_requests_total{decision="allowed"} 1`
	if m := g.metrics(); !strings.Contains(m, allowed) {
		t.Fatalf("/metrics lacks %s before any reload", allowed)
	}

	// PUT: the route has no rate yet (PATCH replaces only what exists).
	status, body := g.configRequest("PUT", g.handlerPath("keygate")+"/rate", `"10/x"`)
	if status < 400 || !strings.Contains(body, `rate \"10/x\"`) {
		t.Fatalf("PUT rate \"10/x\": %d %s; want it refused, naming the rate", status, body)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
		t.Fatalf("send after the refused PUT: %d %s", r.Status, r.Body)
	}
	if m := g.metrics(); !strings.Contains(m, `keygate_requests_total{decision="allowed"} 2`) {
		t.Errorf("after a refused config load, /metrics lacks keygate_requests_total{decision=\"allowed\"} 2:\n%s", grepLines(m, "keygate_requests_total"))
	}
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// What the Caddyfile refuses as it reads it, JSON must not get past load:
// handwritten JSON skips the Caddyfile's checks, and a value keygate
// quietly replaced with a default (or a whoami path that matches nothing)
// would run a config other than the one written. Caddy refuses unknown
// fields and wrong types for every module, so a misspelt scope field
// cannot leave a route unscoped.
func TestHandwrittenJSONIsCheckedAsTheCaddyfileIs(t *testing.T) {
	needBinary(t)
	for _, c := range []struct{ handler, want string }{
		{`{"handler":"keygate","rate":"10/m","scopes":[{"scope":"mail.send","method":"POST","path":"/v3/mail/send"}]}`, ""},
		{`{"handler":"keygate","scopez":[{"scope":"mail.send","path":"/v3/mail/send"}]}`, `unknown field \"scopez\"`},
		{`{"handler":"keygate","scopes":[{"scope":"mail.send","methd":"POST","path":"/v3/mail/send"}]}`, `unknown field \"methd\"`},
		{`{"handler":"keygate","burst":"10"}`, "cannot unmarshal string"},
		{`{"handler":"keygate","cache_ttl":"30x"}`, `unknown unit \"x\"`},
		{`{"handler":"keygate","rate":"10/x"}`, `rate \"10/x\"`},
		{`{"handler":"keygate","scopes":[{"scope":"mail.send","method":"POST","path":"v3/mail/send"}]}`, "must start with /"},
		{`{"handler":"keygate","whoami":"keygate/whoami"}`, `whoami \"keygate/whoami\": want a path starting with /`},
		{`{"handler":"keygate","cache_ttl":"-5s"}`, "cache_ttl -5s: want a positive duration"},
		{`{"handler":"keygate","rate":"10/m","burst":-3}`, "burst -3: want a positive whole number"},
		{`{"handler":"keygate","burst":10}`, "burst 10: want a positive whole number, with a rate"},
		{`{"handler":"keygate","max_body":-1}`, "max_body -1: want a size in bytes"},
		{`{"handler":"keygate","max_body":5000000000}`, "max_body 5000000000: want a size in bytes"},
		{`{"handler":"keygate","ratelimit_redis":"redis://127.0.0.1:1/0","ratelimit_redis_timeout":1}`, "timeout 1ns: want a duration between 1ms and 10s"},
		{`{"handler":"keygate","ratelimit_redis":"redis://127.0.0.1:1/0","ratelimit_redis_timeout":-1000000}`, "timeout -1ms: want a duration between 1ms and 10s"},
		{`{"handler":"keygate_console","admin":["ann"]}`, `unknown field \"admin\"`},
	} {
		dir := t.TempDir()
		cfg := fmt.Sprintf(`{"admin":{"listen":"127.0.0.1:%d"},"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:%d"],`+
			`"routes":[{"handle":[%s,{"handler":"static_response","body":"ok"}]}]}}}}}`, freePort(t), freePort(t), c.handler)
		file := filepath.Join(dir, "caddy.json")
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(caddyBin, "validate", "--config", file)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
		out, err := cmd.CombinedOutput()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: caddy validate: %v\n%s", c.handler, err, out)
		case c.want != "" && err == nil:
			t.Errorf("%s: caddy validate takes it; want it refused with %s", c.handler, c.want)
		case c.want != "" && !strings.Contains(string(out), c.want):
			t.Errorf("%s: caddy validate refuses it, but its error lacks %s:\n%s", c.handler, c.want, out)
		}
	}
}

// docsJSONConfigs returns the whole configs (those with "apps") that
// docs/json-config.md shows, in order.
func docsJSONConfigs(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("docs/json-config.md")
	if err != nil {
		t.Fatal(err)
	}
	var configs []string
	for _, m := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(src, -1) {
		if bytes.Contains(m[1], []byte(`"apps"`)) {
			configs = append(configs, string(m[1]))
		}
	}
	if len(configs) != 2 {
		t.Fatalf("docs/json-config.md: want the demo and the production site, found %d configs", len(configs))
	}
	return configs
}

// Both configs of docs/json-config.md load in the real binary as shown,
// the production one with its store and Redis from the environment.
func TestDocsJSONConfigsValidate(t *testing.T) {
	needBinary(t)
	for i, cfg := range docsJSONConfigs(t) {
		dir := t.TempDir()
		file := filepath.Join(dir, "caddy.json")
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(caddyBin, "validate", "--config", file)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
			"KEYGATE_STORE=sqlite:"+filepath.Join(dir, "keys.db"),
			"KEYGATE_REDIS=redis://"+testservers.StartRedis(t).Addr+"/0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docs/json-config.md, config %d: caddy validate: %v\n%s", i+1, err, out)
		} else if strings.Contains(string(out), `"level":"warn"`) || strings.Contains(string(out), `"level":"error"`) {
			t.Errorf("docs/json-config.md, config %d: caddy validate warns:\n%s", i+1, out)
		}
	}
}

// The demo of docs/json-config.md, run from its JSON on free ports, does
// what the README's demo does, and the admin API calls the page shows
// change the running handler as it says.
func TestDocsJSONDemoRunsAndChangesLive(t *testing.T) {
	demo := strings.NewReplacer(`"localhost:2019"`, `"{ADMIN}"`, `"127.0.0.1:8025"`, `"127.0.0.1:{PORT}"`,
		`"127.0.0.1:8026"`, `"{UPSTREAM}"`, `"localhost:8026"`, `"{UPSTREAM}"`).Replace(docsJSONConfigs(t)[0])
	provider := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	g := startGateway(t, gatewayConfig{caddyfile: demo, json: true, upstream: provider, env: []string{"DEMO_PROVIDER_KEY=demo-provider-secret"}})
	g.store = "sqlite:" + filepath.Join(g.dir, "data", "caddy", "keygate", "keys.db") // the default store
	k := g.issue("--name", "json-demo", "--scope", "mail.send")
	host := []string{"Host", "localhost"}

	if r := g.call("POST", "/v3/mail/send", "", nil, host...); r.Status != 401 || r.code() != "missing_key" {
		t.Errorf("a send without a key: %d %s; want 401 missing_key", r.Status, r.Body)
	}
	send := []byte(`{"personalizations":[{"to":[{"email":"a@example.com"}]}],"from":{"email":"app@example.com"},"subject":"s","content":[{"type":"text/plain","value":"v"}]}`)
	r := g.call("POST", "/v3/mail/send", k.Key, send, append(host, "Content-Type", "application/json")...)
	if r.Status != 202 || !strings.Contains(string(r.Body), `"you_sent_authorization":"Bearer demo-provider-secret"`) || !strings.Contains(string(r.Body), k.ID) {
		t.Errorf("a send: %d %s; want 202 from the provider with its own credential and the key id", r.Status, r.Body)
	}
	if r := g.call("GET", "/v3/templates", k.Key, nil, host...); r.Status != 403 || r.code() != "insufficient_scope" {
		t.Errorf("templates with a mail.send key: %d %s; want 403 insufficient_scope", r.Status, r.Body)
	}
	if r := g.call("GET", "/console/", "", nil, append(host, "Authorization", "Basic ZGVtbzprZXlnYXRlLWRlbW8=")...); r.Status != 200 {
		t.Errorf("the console as demo: %d", r.Status)
	}

	limit := func() string {
		var who struct {
			Rate *struct {
				Limit string `json:"limit"`
				Burst int    `json:"burst"`
			} `json:"rate_limit"`
			Quota string `json:"quota"`
		}
		r := g.call("GET", "/keygate/whoami", k.Key, nil, host...)
		if err := json.Unmarshal(r.Body, &who); r.Status != 200 || err != nil || who.Rate == nil {
			t.Fatalf("whoami: %d %s", r.Status, r.Body)
		}
		return fmt.Sprintf("%s burst %d quota %q", who.Rate.Limit, who.Rate.Burst, who.Quota)
	}
	if got := limit(); got != `60/m burst 10 quota "1000/d"` {
		t.Fatalf("whoami before any change: %s", got)
	}
	for _, c := range []struct{ method, path, body string }{
		{"PATCH", "/id/gateway-keygate/rate", `"300/m"`},
		{"DELETE", "/id/gateway-keygate/burst", ""},
		{"PUT", "/id/gateway-keygate/burst", `50`},
		{"DELETE", "/id/gateway-keygate/quota", ""},
	} {
		if status, body := g.configRequest(c.method, c.path, c.body); status != 200 {
			t.Fatalf("%s %s %s: %d %s", c.method, c.path, c.body, status, body)
		}
	}
	if got := limit(); got != `300/m burst 50 quota ""` {
		t.Errorf("whoami after the admin API's changes: %s; want 300/m burst 50 and no quota", got)
	}
	if status, body := g.configRequest("PATCH", "/id/gateway-keygate/rate", `"10/x"`); status < 400 || !strings.Contains(body, `unit \"x\" is not one of s, m, h, d`) {
		t.Errorf(`PATCH rate "10/x": %d %s; want it refused with the reason`, status, body)
	}
	if got := limit(); got != `300/m burst 50 quota ""` {
		t.Errorf("whoami after a refused change: %s; want the running config's 300/m burst 50", got)
	}
}
