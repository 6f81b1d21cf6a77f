package keygate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
