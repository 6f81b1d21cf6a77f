package keygate_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

var usageCaddyfile = site(`
	log {
		output file {LOG}
	}
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)

type usageJSON struct {
	Allowed    int64            `json:"allowed"`
	Denied     map[string]int64 `json:"denied"`
	Recipients int64            `json:"recipients"`
	LastUsedAt *string          `json:"last_used_at"`
	Statuses   map[string]int64 `json:"statuses"`
	Hours      []struct {
		Allowed int64 `json:"allowed"`
	} `json:"hours"`
	TopIPs []struct {
		IP       string `json:"ip"`
		Requests int64  `json:"requests"`
	} `json:"top_ips"`
	Signals []string `json:"signals"`
}

func TestUsageCountsSurviveReloadAndStop(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL})
	k := g.issue("--name", "counted", "--scope", "*")
	scoped := g.issue("--name", "narrow", "--scope", "mail.send")

	// Count what the clients saw; the store must report exactly that.
	allowed, denied := int64(0), map[string]int64{}
	call := func(method, path, key string) {
		r := g.call(method, path, key, nil)
		if r.Status == 202 {
			allowed++
		} else {
			denied[r.code()]++
		}
	}
	for i := 0; i < 7; i++ {
		call("POST", "/v3/mail/send", k.Key)
	}
	for i := 0; i < 3; i++ { // insufficient_scope on the narrow key
		call("GET", "/v3/stats", scoped.Key)
	}
	g.reload()
	for i := 0; i < 5; i++ {
		call("POST", "/v3/mail/send", k.Key)
	}
	g.keys("update", k.ID, "--disable")
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && denied["disabled_key"] < 2; {
		call("POST", "/v3/mail/send", k.Key)
		time.Sleep(20 * time.Millisecond)
	}
	if allowed < 12 || denied["insufficient_scope"] != 3 || denied["disabled_key"] != 2 {
		t.Fatalf("clients saw allowed=%d denied=%v", allowed, denied)
	}

	metrics := g.metrics()
	for _, m := range []string{"keygate_requests_total{decision=\"allowed\"}", "keygate_cache_hits_total", "keygate_store_queries_total", "keygate_usage_flush_seconds"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if strings.Contains(metrics, k.ID) {
		t.Error("/metrics has a per-key label")
	}

	g.stop()

	var u usageJSON
	if err := json.Unmarshal([]byte(g.keys("usage", k.ID, "--json")), &u); err != nil {
		t.Fatal(err)
	}
	if u.Allowed != allowed || u.Denied["disabled_key"] != 2 {
		t.Errorf("usage reports allowed=%d denied=%v; clients saw allowed=%d and 2 disabled_key", u.Allowed, u.Denied, allowed)
	}
	if u.LastUsedAt == nil || len(u.Hours) == 0 || len(u.TopIPs) == 0 || u.TopIPs[0].IP != "127.0.0.1" {
		t.Errorf("usage lacks last_used_at, hours or top IPs: %+v", u)
	}
	if u.Statuses["2xx"] != u.Allowed {
		t.Errorf("statuses %v, allowed %d", u.Statuses, u.Allowed)
	}
	if !strings.Contains(strings.Join(u.Signals, "\n"), "disabled_key") {
		t.Errorf("signals do not flag the disabled key still being presented: %v", u.Signals)
	}

	var narrow usageJSON
	json.Unmarshal([]byte(g.keys("usage", scoped.ID, "--json")), &narrow)
	if narrow.Allowed != 0 || narrow.Denied["insufficient_scope"] != 3 {
		t.Errorf("narrow key usage: allowed %d denied %v, want 0 and 3 insufficient_scope", narrow.Allowed, narrow.Denied)
	}
	if human := g.keys("usage", k.ID); !strings.Contains(human, "allowed:") || !strings.Contains(human, "127.0.0.1") {
		t.Errorf("human usage output:\n%s", human)
	}
}

func (g *gateway) metrics() string {
	resp, err := http.Get("http://" + g.adminAddr + "/metrics")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metric returns the value of one unlabelled metric from the admin
// endpoint's /metrics.
func (g *gateway) metric(name string) float64 {
	for _, line := range strings.Split(g.metrics(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				g.t.Fatalf("metric %s: %q", name, line)
			}
			return f
		}
	}
	g.t.Fatalf("metric %s not on /metrics", name)
	return 0
}

func TestUsageRetentionDeletesOldHours(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	log {
		output file {LOG}
	}
	keygate {
		store {STORE}
		scope mail.send POST /v3/mail/send
		usage_retention 40d
	}
	reverse_proxy {UPSTREAM}
`), upstream: up.URL})
	k := g.issue("--name", "old", "--scope", "mail.send")
	for i := 0; i < 3; i++ {
		if r := g.call("POST", "/v3/mail/send", k.Key, nil); r.Status != 202 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	g.stop()

	// History from before this test: one hour past the retention, one
	// inside it.
	ctx := context.Background()
	st, err := store.Open(ctx, g.store)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	err = st.AddUsage(ctx, []store.UsageDelta{
		{KeyID: k.ID, Hour: now.Add(-41 * 24 * time.Hour), Counts: map[string]int64{"allowed": 50}, IPs: map[string]int64{"198.51.100.41": 50}},
		{KeyID: k.ID, Hour: now.Add(-39 * 24 * time.Hour), Counts: map[string]int64{"allowed": 20}, IPs: map[string]int64{"198.51.100.39": 20}},
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	usage := func() usageJSON {
		var u usageJSON
		if err := json.Unmarshal([]byte(g.keys("usage", k.ID, "--since", "2000h", "--json")), &u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	if u := usage(); u.Allowed != 73 {
		t.Fatalf("before the gateway prunes: %d allowed, want 73", u.Allowed)
	}

	g.start() // the first prune runs 5 s after the store is opened
	var u usageJSON
	if eventually(t, 30*time.Second, func() bool { u = usage(); return u.Allowed != 73 }) < 0 {
		t.Fatalf("usage older than 40d still there after 30 s:\n%s", g.logs())
	}
	if u.Allowed != 23 || len(u.TopIPs) != 2 {
		t.Errorf("after pruning: %d allowed from %+v; want 23 from 127.0.0.1 and 198.51.100.39", u.Allowed, u.TopIPs)
	}
	for _, ip := range u.TopIPs {
		if ip.IP == "198.51.100.41" {
			t.Errorf("the pruned hour's client IP is still reported: %+v", u.TopIPs)
		}
	}
	// The counter and the log line follow the prune's last delete.
	var n float64
	if eventually(t, 5*time.Second, func() bool { n = g.metric("keygate_usage_pruned_rows_total"); return n == 2 }) < 0 {
		t.Errorf("keygate_usage_pruned_rows_total = %v, want 2 (one usage row, one client-IP row)", n)
	}
	if eventually(t, 5*time.Second, func() bool { return strings.Contains(g.logs(), "deleted usage past its retention") }) < 0 {
		t.Errorf("no log line for the prune:\n%s", g.logs())
	}
}
