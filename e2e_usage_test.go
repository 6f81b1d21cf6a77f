package keygate_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
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
		Allowed    int64            `json:"allowed"`
		Denied     map[string]int64 `json:"denied"`
		Recipients int64            `json:"recipients"`
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

// TestAReloadThatShortensTheRetentionPrunesSoon: an operator lowers
// usage_retention with `caddy reload` to free the disk of years of rows.
// Before, the store was pruned a few seconds after it was opened and then
// hourly, and the reload opens no store (the same one stays open), so the
// old rows stayed for up to an hour; now they go a few seconds after it.
func TestAReloadThatShortensTheRetentionPrunesSoon(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: up.URL}) // the default, 400d
	k := g.issue("--name", "old", "--scope", "mail.send")
	g.send(k.Key, 1)
	const pruneFirst = 5 * time.Second   // after the store opens, and now after such a reload
	time.Sleep(pruneFirst + time.Second) // the start's prune is done: the next is an hour away

	addFortyDaysOfUsage(t, g, k.ID)
	allowed := func() int64 { return g.longUsage(k.ID).Allowed }
	if n := allowed(); n != 71 {
		t.Fatalf("before the reload: %d allowed, want 71", n)
	}

	cf, err := os.ReadFile(g.config)
	if err != nil {
		t.Fatal(err)
	}
	shorter := strings.Replace(string(cf), "\t\tstore ", "\t\tusage_retention 40d\n\t\tstore ", 1)
	if shorter == string(cf) {
		t.Fatalf("no store line to put usage_retention beside:\n%s", cf)
	}
	if err := os.WriteFile(g.config, []byte(shorter), 0o600); err != nil {
		t.Fatal(err)
	}
	g.reload()
	var n int64
	if eventually(t, 3*pruneFirst, func() bool { n = allowed(); return n != 71 }) < 0 {
		t.Fatalf("usage older than 40d still there %v after a reload to usage_retention 40d:\n%s", 3*pruneFirst, g.logs())
	}
	if n != 21 {
		t.Errorf("after the reload's prune: %d allowed, want 21 (the 39-day-old hour and the send)", n)
	}
}

// addFortyDaysOfUsage writes usage from before the test into the gateway's
// store: 50 requests an hour 41 days ago, past a 40d retention, and 20 an
// hour 39 days ago, inside it, each hour from a client address of its own.
func addFortyDaysOfUsage(t *testing.T, g *gateway, keyID string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, g.store)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	err = st.AddUsage(ctx, []store.UsageDelta{
		{KeyID: keyID, Hour: now.Add(-41 * 24 * time.Hour), Counts: map[string]int64{"allowed": 50}, IPs: map[string]int64{"198.51.100.41": 50}},
		{KeyID: keyID, Hour: now.Add(-39 * 24 * time.Hour), Counts: map[string]int64{"allowed": 20}, IPs: map[string]int64{"198.51.100.39": 20}},
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
}

// longUsage is a key's usage over the last 2,000 hours, as caddy keys
// usage --json answers it.
func (g *gateway) longUsage(id string) usageJSON {
	g.t.Helper()
	var u usageJSON
	if err := json.Unmarshal([]byte(g.keys("usage", id, "--since", "2000h", "--json")), &u); err != nil {
		g.t.Fatal(err)
	}
	return u
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
	addFortyDaysOfUsage(t, g, k.ID)
	usage := func() usageJSON { return g.longUsage(k.ID) }
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

// TestReloadUnderLoad: an operator reloads the configuration four times
// while clients send on kept-alive connections, as SDKs do, then stops the
// gateway. No request gets a 5xx; every answer a client got is in the
// usage counts, and nothing else is, except requests whose answer the
// client lost when a reload closed its connection (each such request may
// or may not have been answered); a quota is never granted twice and a
// rate never refilled by a reload.
func TestReloadUnderLoad(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testReloadUnderLoad(t, "", "") })
	// A cluster node: keys and usage on PostgreSQL, limits and quotas
	// leased from Redis.
	t.Run("postgres+redis", func(t *testing.T) {
		needBinary(t)
		pg, redis := testservers.StartPostgres(t), testservers.StartRedis(t)
		testReloadUnderLoad(t, pg.URI, "ratelimit redis redis://"+redis.Addr)
	})
}

func testReloadUnderLoad(t *testing.T, store, limits string) {
	up := newUpstream(t)
	cf := site(`
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
		` + limits + `
	}
	reverse_proxy {UPSTREAM}
`)
	g := startGateway(t, gatewayConfig{caddyfile: cf, upstream: up.URL, store: store})
	const quota, rate = 40, 30 // a day; a minute
	names := []string{"plain", "quota", "rate"}
	keys := []issuedKey{
		g.issue("--name", "plain", "--scope", "mail.send"),
		g.issue("--name", "quota", "--scope", "mail.send", "--quota", fmt.Sprintf("%d/d", quota)),
		g.issue("--name", "rate", "--scope", "mail.send", "--rate", fmt.Sprintf("%d/m", rate)),
	}
	body := []byte(`{"personalizations":[{"to":[{"email":"ann@example.org"}]}],"from":{"email":"orders@shop.example"},"subject":"Your order","content":[{"type":"text/plain","value":"Thanks"}]}`)

	// What the clients saw, per key.
	type seen struct {
		answers, allowed, lost int64
		denied                 map[string]int64
		fivexx                 []string
		lostErr                error // the first
	}
	var mu sync.Mutex
	seenBy := map[string]*seen{}
	for _, k := range keys {
		seenBy[k.ID] = &seen{denied: map[string]int64{}}
	}
	stop := make(chan struct{})
	var workers sync.WaitGroup
	start := time.Now()
	for w := range 6 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			c := &http.Client{Timeout: 10 * time.Second} // kept-alive connections
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[i%len(keys)]
				req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+k.Key)
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				var r *response
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					r = &response{Status: resp.StatusCode, Body: b}
				}
				mu.Lock()
				s := seenBy[k.ID]
				switch {
				case err != nil:
					s.lost++
					if s.lostErr == nil {
						s.lostErr = err
					}
				case r.Status >= 500:
					s.fivexx = append(s.fivexx, fmt.Sprintf("%d %s", r.Status, r.Body))
				case r.Status == http.StatusAccepted:
					s.answers++
					s.allowed++
				default:
					s.answers++
					s.denied[r.code()]++
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	for range 4 {
		g.reload()
		time.Sleep(700 * time.Millisecond)
	}
	close(stop)
	workers.Wait()
	elapsed := time.Since(start)
	g.stop()

	var allowedSum int64
	for i, k := range keys {
		name, s := names[i], seenBy[k.ID]
		var u usageJSON
		if err := json.Unmarshal([]byte(g.keys("usage", k.ID, "--json")), &u); err != nil {
			t.Fatal(err)
		}
		allowedSum += u.Allowed
		counted := u.Allowed
		for _, n := range u.Denied {
			counted += n
		}
		t.Logf("%s: clients got %d answers (%d allowed, denied %v), lost %d (%v); usage counts %d (%d allowed, denied %v)",
			name, s.answers, s.allowed, s.denied, s.lost, s.lostErr, counted, u.Allowed, u.Denied)
		if len(s.fivexx) > 0 {
			t.Errorf("%s: %d answers were 5xx, e.g. %s", name, len(s.fivexx), s.fivexx[0])
		}
		if counted < s.answers || counted > s.answers+s.lost {
			t.Errorf("%s: usage counts %d requests; clients got %d answers and lost %d", name, counted, s.answers, s.lost)
		}
		if u.Allowed < s.allowed || u.Allowed > s.allowed+s.lost || u.Recipients != u.Allowed {
			t.Errorf("%s: usage counts %d allowed with %d recipients; clients saw %d allowed and lost %d", name, u.Allowed, u.Recipients, s.allowed, s.lost)
		}
		for code, n := range s.denied {
			if u.Denied[code] < n {
				t.Errorf("%s: usage counts %d %s; clients saw %d", name, u.Denied[code], code, n)
			}
		}
		switch name {
		case "plain":
			if s.allowed < 100 {
				t.Errorf("plain: only %d sends allowed in %v", s.allowed, elapsed)
			}
		case "quota":
			if u.Allowed != quota || s.denied["quota_exceeded"] == 0 {
				t.Errorf("quota: %d sends allowed (want exactly the quota, %d), %d refused", u.Allowed, quota, s.denied["quota_exceeded"])
			}
		case "rate":
			// The bucket holds 30 and refills one every 2 s.
			limit := int64(rate) + int64(elapsed/(2*time.Second)) + 1
			if u.Allowed > limit || s.denied["rate_limited"] == 0 {
				t.Errorf("rate: %d sends allowed in %v (at most %d), %d refused", u.Allowed, elapsed.Round(time.Millisecond), limit, s.denied["rate_limited"])
			}
		}
	}
	// Every send keygate counted as allowed reached the provider, once.
	if up.count() != int(allowedSum) {
		t.Errorf("the upstream got %d sends; usage counts %d allowed", up.count(), allowedSum)
	}
}

// TestAReloadThatRenamesTheStoreCountsRequestsInFlight: a reload whose
// store URI differs (another path to the same file here; a new password or
// pool size in a PostgreSQL URI) closes the old handlers' store while
// requests they took are still in flight, since Caddy does not wait for
// them on a reload. Their usage is still written.
func TestAReloadThatRenamesTheStoreCountsRequestsInFlight(t *testing.T) {
	t.Run("then serves on", func(t *testing.T) { testReloadRenamingTheStore(t, false) })
	// A stop right after they finish: the exit writes what the store the
	// reload left behind still holds.
	t.Run("then stops", func(t *testing.T) { testReloadRenamingTheStore(t, true) })
}

// renamableStore is an upstream answering 202 after 2 s, the directory
// of a store (real), and rename, which reloads g's config with the store
// named by another path to that directory (a symlink).
func renamableStore(t *testing.T) (slow *httptest.Server, real string, rename func(g *gateway)) {
	slow = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(2 * time.Second)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(slow.Close)
	dir := t.TempDir()
	real, alias := filepath.Join(dir, "real"), filepath.Join(dir, "alias")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, alias); err != nil {
		t.Fatal(err)
	}
	return slow, real, func(g *gateway) {
		t.Helper()
		cf, err := os.ReadFile(g.config)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(g.config, bytes.ReplaceAll(cf, []byte(real), []byte(alias)), 0o600); err != nil {
			t.Fatal(err)
		}
		g.reload()
	}
}

func testReloadRenamingTheStore(t *testing.T, stop bool) {
	slow, real, rename := renamableStore(t)
	g := startGateway(t, gatewayConfig{caddyfile: usageCaddyfile, upstream: slow.URL, store: "sqlite:" + filepath.Join(real, "keys.db")})
	k := g.issue("--name", "slow", "--scope", "mail.send")

	const inFlight = 20
	var answered atomic.Int64
	var wg sync.WaitGroup
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", nil)
			req.Header.Set("Authorization", "Bearer "+k.Key)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				if resp.StatusCode == http.StatusAccepted {
					answered.Add(1)
				}
				resp.Body.Close()
			}
		}()
	}
	time.Sleep(700 * time.Millisecond) // all at the upstream by now
	rename(g)
	wg.Wait()
	if answered.Load() != inFlight {
		t.Fatalf("%d of %d requests in flight across the reload were answered 202", answered.Load(), inFlight)
	}
	if stop {
		g.stop()
		if u := g.usage(k.ID); u.Allowed != inFlight {
			t.Errorf("usage counts %d allowed; %d requests in flight across a reload that renamed the store were answered 202, then caddy stopped:\n%s",
				u.Allowed, inFlight, g.logs())
		}
		return
	}
	if eventually(t, 10*time.Second, func() bool { return g.usage(k.ID).Allowed == inFlight }) < 0 {
		t.Errorf("usage counts %d allowed; %d requests in flight across a reload that renamed the store were answered 202:\n%s",
			g.usage(k.ID).Allowed, inFlight, g.logs())
	}
}

// A reload that renames the store (another path to the same file here)
// opens a backend of its own, and the keys' limits decided on this node go
// on across it: a request bucket is not full again, and a recipient quota
// holds the send still in flight. (Before, each store had its own, so the
// new one started the bucket full and the quota from the store's count,
// without the send: a quota of 5 a day took 10 recipients, a 2/m key a
// third request.)
func TestAReloadThatRenamesTheStoreKeepsTheKeysLimits(t *testing.T) {
	slow, real, rename := renamableStore(t)
	g := startGateway(t, gatewayConfig{caddyfile: sendgridSendSite, upstream: slow.URL, store: "sqlite:" + filepath.Join(real, "keys.db")})
	quota := g.issue("--name", "quota", "--scope", "mail.send", "--quota", "5/d")
	rate := g.issue("--name", "rate", "--scope", "mail.send", "--rate", "2/m")
	five := sgBody("app@shop.example", "a@x.org", "b@x.org", "c@x.org", "d@x.org", "e@x.org")
	one := sgBody("app@shop.example", "a@x.org")
	var wg sync.WaitGroup
	for _, k := range []string{quota.Key, rate.Key, rate.Key} {
		wg.Go(func() {
			body := one
			if k == quota.Key {
				body = five
			}
			if r := g.call("POST", "/v3/mail/send", k, body); r.Status != http.StatusAccepted {
				t.Errorf("a send before the reload: %d %s", r.Status, r.Body)
			}
		})
	}
	time.Sleep(700 * time.Millisecond) // all at the upstream by now
	rename(g)
	if r := g.call("POST", "/v3/mail/send", quota.Key, five); r.code() != "quota_exceeded" { // SendGrid's status for it: 401
		t.Errorf("5 more recipients on a quota of 5 a day, with 5 in flight across the reload: %d %s", r.Status, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", rate.Key, one); r.Status != http.StatusTooManyRequests || r.code() != "rate_limited" {
		t.Errorf("a third request of a 2/m key across the reload: %d %s", r.Status, r.Body)
	}
	wg.Wait()
}

var countsCaddyfile = `{
	admin {ADMIN}
	log kg {
		include http.handlers.keygate
		level DEBUG
		output file {LOG}.kg
		format json
	}
}
http://127.0.0.1:{PORT} {
	bind 127.0.0.1
	log {
		output file {LOG}
		format json
	}
	log_append decision {keygate.decision}
	log_append recipients {keygate.recipients}
	` + demoConsole + `
	handle {
		keygate {
			store {STORE}
			mail_api sendgrid
			max_body 4KB
			metrics per_key
			scope mail.send POST /v3/mail/send
			scope mail.read GET /v3/*
		}
		reverse_proxy {UPSTREAM}
	}
}
`

// tally is what one surface says of one key.
type tally struct {
	allowed    int64
	denied     map[string]int64
	recipients int64
	read       int64 // the recipients of the sends read (the log's and the placeholder's), counted or not
}

func (t tally) String() string {
	return fmt.Sprintf("allowed=%d denied=%v recipients=%d (read %d)", t.allowed, t.denied, t.recipients, t.read)
}

func (t tally) equal(o tally) bool {
	return t.allowed == o.allowed && t.recipients == o.recipients && t.read == o.read && maps.Equal(t.denied, o.denied)
}

// TestEverySurfaceCountsAMixedWorkloadAlike sends one mixed workload (sends
// allowed and refused for each reason, reads, provider 2xx/4xx/5xx, a
// client gone mid-upload, one gone while the provider answers, a key
// rotated in its grace) across a reload and a stop and start, and checks
// that the CLI, the admin API, the console, keygate's log, Caddy's access
// log, /metrics and the upstream count it alike.
func TestEverySurfaceCountsAMixedWorkloadAlike(t *testing.T) {
	var mu sync.Mutex
	got := 0
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		mu.Lock()
		got++
		mu.Unlock()
		if d, err := time.ParseDuration(r.Header.Get("X-Delay")); err == nil {
			time.Sleep(d)
		}
		status := http.StatusAccepted
		if s, err := strconv.Atoi(r.Header.Get("X-Answer")); err == nil {
			status = s
		}
		w.WriteHeader(status)
	}))
	defer up.Close()
	g := startGateway(t, gatewayConfig{caddyfile: countsCaddyfile, upstream: up.URL})

	main := g.issue("--name", "main", "--scope", "*", "--sender-domain", "shop.example.com", "--max-recipients", "5")
	fenced := g.issue("--name", "fenced", "--scope", "*", "--allow-ip", "10.0.0.0/8")
	quota := g.issue("--name", "quota", "--scope", "*", "--quota", "4/d")
	rated := g.issue("--name", "rated", "--scope", "*", "--rate", "2/m")
	revoked := g.issue("--name", "revoked", "--scope", "*")
	g.keys("revoke", revoked.ID, "--yes")
	gone := g.issue("--name", "gone", "--scope", "*")
	g.keys("rotate", gone.ID, "--grace", "0")
	graced := g.issue("--name", "graced", "--scope", "*")
	g.keys("rotate", graced.ID, "--grace", "1h")

	want := map[string]*tally{}
	for _, k := range []issuedKey{main, fenced, quota, rated, revoked, gone, graced} {
		want[k.ID] = &tally{denied: map[string]int64{}}
	}
	metricsWant := map[string]float64{}   // keygate_requests_total by decision, since the process started
	perKeyWant := map[[2]string]float64{} // keygate_key_requests_total by key id and decision, likewise
	forwarded := 0
	to := func(n int) []string {
		r := make([]string, n)
		for i := range r {
			r[i] = fmt.Sprintf("r%d@example.org", i)
		}
		return r
	}
	// do sends one request and books what the client saw: a send the
	// provider answered 2xx counts its recipients, any other none.
	do := func(k issuedKey, method, path string, body []byte, rcpts int, hdr ...string) {
		t.Helper()
		r := g.call(method, path, k.Key, body, hdr...)
		w := want[k.ID]
		decision := "allowed"
		if c := r.code(); c != "" {
			decision = c
		}
		if decision == "allowed" || decision == "quota_exceeded" || decision == "rate_limited" {
			w.read += int64(rcpts)
		}
		if decision == "allowed" {
			w.allowed++
			forwarded++
			if r.Status/100 == 2 {
				w.recipients += int64(rcpts)
			}
		} else {
			w.denied[decision]++
		}
		metricsWant[decision]++
		perKeyWant[[2]string{k.ID, decision}]++
	}
	send := func(k issuedKey, from string, n int, hdr ...string) {
		t.Helper()
		do(k, "POST", "/v3/mail/send", sgBody(from, to(n)...), n, hdr...)
	}
	const shop = "a@shop.example.com"

	send(main, shop, 3)
	send(main, shop, 2, "X-Answer", "400")
	send(main, shop, 4, "X-Answer", "503")
	send(main, "a@evil.example.com", 1)
	send(main, shop, 6)
	do(main, "POST", "/v3/mail/send", []byte(`{"personalizations":`), 0)
	do(main, "POST", "/v3/mail/send", sgBody(shop+strings.Repeat(" ", 5000), "r@example.org"), 0)
	do(main, "GET", "/v3/stats", nil, 0)
	send(fenced, shop, 1)
	send(quota, shop, 3)
	g.reload()
	send(quota, shop, 3)
	do(rated, "GET", "/v3/stats", nil, 0)
	do(rated, "GET", "/v3/stats", nil, 0)
	do(rated, "GET", "/v3/stats", nil, 0)
	send(revoked, shop, 1)
	send(gone, shop, 1)
	send(graced, shop, 2)

	// A client gone mid-upload: counted as client_closed, never forwarded.
	c, err := net.Dial("tcp", strings.TrimPrefix(g.siteURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v3/mail/send HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n{\"personalizations\":", strings.TrimPrefix(g.siteURL, "http://"), main.Key)
	time.Sleep(100 * time.Millisecond)
	c.Close()
	want[main.ID].denied["client_closed"]++
	metricsWant["client_closed"]++
	perKeyWant[[2]string{main.ID, "client_closed"}]++

	// A client that gives up while the provider, which has the send,
	// answers: allowed, its recipients counted (docs/caddyfile.md, step 5).
	req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", bytes.NewReader(sgBody(shop, to(2)...)))
	req.Header.Set("Authorization", "Bearer "+main.Key)
	req.Header.Set("X-Delay", "1s")
	impatient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 300 * time.Millisecond}
	if resp, err := impatient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the send waiting for a slow provider was answered %d", resp.StatusCode)
	}
	want[main.ID].allowed++
	want[main.ID].recipients += 2
	want[main.ID].read += 2
	forwarded++
	metricsWant["allowed"]++
	perKeyWant[[2]string{main.ID, "allowed"}]++
	for _, code := range []string{"allowed", "sender_not_allowed", "too_many_recipients", "invalid_payload", "payload_too_large",
		"ip_not_allowed", "quota_exceeded", "rate_limited", "revoked_key", "expired_key"} {
		if metricsWant[code] == 0 {
			t.Fatalf("the workload met no %s: %v", code, metricsWant)
		}
	}
	if want[graced.ID].allowed != 1 {
		t.Fatalf("the key rotated in its grace was refused: %v", want[graced.ID])
	}

	// /metrics counts every decision of the process since it started,
	// through the reload: each as the clients saw it, the others 0.
	checkMetrics := func() {
		t.Helper()
		counted := regexp.MustCompile(`(?m)^keygate_requests_total\{decision="(\w+)"\} (\S+)$`)
		perKey := regexp.MustCompile(`(?m)^keygate_key_requests_total\{decision="(\w+)",key_id="(\w+)"\} (\S+)$`)
		var m string
		agree := func() bool {
			m = g.metrics()
			lines := counted.FindAllStringSubmatch(m, -1)
			for _, l := range lines {
				if n, _ := strconv.ParseFloat(l[2], 64); n != metricsWant[l[1]] {
					return false
				}
			}
			keyed := perKey.FindAllStringSubmatch(m, -1)
			for _, l := range keyed {
				if n, _ := strconv.ParseFloat(l[3], 64); n != perKeyWant[[2]string{l[2], l[1]}] {
					return false
				}
			}
			return len(lines) > 0 && len(keyed) == len(perKeyWant)
		}
		if eventually(t, 3*time.Second, agree); !agree() { // the client gone mid-upload is counted as keygate sees it go
			t.Errorf("/metrics does not count what the clients saw, %v and per key %v:\n%s", metricsWant, perKeyWant, grepLines(m, "requests_total{"))
		}
	}
	checkMetrics()
	g.stop()
	g.start()
	metricsWant, perKeyWant = map[string]float64{}, map[[2]string]float64{}
	send(main, shop, 1)
	send(graced, shop, 1, "X-Answer", "500")
	checkMetrics()
	eventually(t, 5*time.Second, func() bool { // counts land in the store within a second
		var u usageJSON
		json.Unmarshal(g.admin("GET", "/keygate/keys/"+graced.ID+"/usage", nil).Body, &u)
		return u.Allowed == want[graced.ID].allowed
	})

	mu.Lock()
	if forwarded != got {
		t.Errorf("the upstream received %d requests, keygate allowed %d", got, forwarded)
	}
	mu.Unlock()
	logged, accessed := logTallies(t, g.logPath+".kg", "key_id", "recipients", "keygate request"), logTallies(t, g.logPath, "user_id", "recipients", "handled request")
	for id, w := range want {
		var cli, api usageJSON
		json.Unmarshal([]byte(g.keys("usage", id, "--json")), &cli)
		json.Unmarshal(g.admin("GET", "/keygate/keys/"+id+"/usage", nil).Body, &api)
		hours := tally{denied: map[string]int64{}}
		for _, h := range cli.Hours {
			hours.allowed += h.Allowed
			hours.recipients += h.Recipients
			for d, n := range h.Denied {
				hours.denied[d] += n
			}
		}
		_, page := consoleUser{t: t, prefix: "/console"}.do(g, "GET", "/keys/"+id, nil)
		surfaces := map[string]tally{
			"caddy keys usage":   {allowed: cli.Allowed, denied: cli.Denied, recipients: cli.Recipients},
			"its hourly buckets": hours,
			"the admin API":      {allowed: api.Allowed, denied: api.Denied, recipients: api.Recipients},
			"keygate's log":      logged[id],
			"the access log":     accessed[id],
		}
		for name, s := range surfaces {
			if name == "keygate's log" || name == "the access log" {
				// The logs say how many recipients each send read had,
				// counted or not (docs/monitoring.md#usage-log); the usage
				// counts those of the sends the provider took.
				s.recipients = w.recipients
			} else {
				s.read = w.read
			}
			if !s.equal(*w) {
				t.Errorf("key %s: %s says %v; the clients saw %v", id, name, s, w)
			}
		}
		var denied int64
		for _, n := range w.denied {
			denied += n
		}
		for _, f := range []struct {
			label string
			n     int64
		}{{"Allowed", w.allowed}, {"Refused", denied}, {"Recipients", w.recipients}} {
			if !strings.Contains(page, fmt.Sprintf("<dt>%s</dt><dd>%d</dd>", f.label, f.n)) {
				t.Errorf("key %s: the console's page does not show %s %d:\n%s", id, f.label, f.n, regexp.MustCompile(`(?s)<dl class="totals">.*?</dl>`).FindString(page))
			}
		}
	}
}

// logTallies reads a JSON log's lines with message msg and tallies them by
// the key id in field idField: decision and recipients.
func logTallies(t *testing.T, path, idField, recipField, msg string) map[string]tally {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]tally{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) != nil || l["msg"] != msg {
			continue
		}
		id, _ := l[idField].(string)
		if id == "" {
			continue
		}
		s := out[id]
		if s.denied == nil {
			s.denied = map[string]int64{}
		}
		d, _ := l["decision"].(string)
		if d == "allowed" {
			s.allowed++
		} else {
			s.denied[d]++
		}
		switch v := l[recipField].(type) {
		case float64:
			s.read += int64(v)
		case string:
			n, _ := strconv.Atoi(v)
			s.read += int64(n)
		}
		out[id] = s
	}
	return out
}

// The CLI's tables give times in the machine's zone and name it: in India
// (UTC+5:30) an hour of usage from 02:00 UTC is 07:30 IST, and a key's
// expiry and its events say IST too. (Before, the zone was unnamed and the
// usage hour printed as 07:00, its minutes dropped by the format: an hour
// that began at 07:30 there.) So does rotate of when the old key stops. On a
// machine in UTC they say UTC.
func TestTheCLIsTimesNameTheirZone(t *testing.T) {
	needBinary(t)
	dir := t.TempDir()
	g := &gateway{t: t, dir: dir, store: "sqlite:" + filepath.Join(dir, "keys.db"), env: []string{"TZ=Asia/Kolkata"}}
	year := strconv.Itoa(time.Now().Year() + 4)
	k := g.issue("--name", "zoned", "--scope", "mail.send", "--expires", year+"-01-01T00:00:00Z")
	hour := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	st, err := store.Open(context.Background(), g.store)
	if err != nil {
		t.Fatal(err)
	}
	err = st.AddUsage(context.Background(), []store.UsageDelta{{KeyID: k.ID, Hour: hour,
		Counts: map[string]int64{"allowed": 3}, IPs: map[string]int64{"198.51.100.7": 3}}})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	ist := time.FixedZone("IST", 5*3600+1800)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"usage", k.ID}, hour.In(ist).Format("2006-01-02 15:04 IST") + "  3"},
		{[]string{"show", k.ID}, year + "-01-01 05:30 IST"},
		{[]string{"list"}, year + "-01-01 05:30 IST"},
		{[]string{"events", k.ID}, " IST "},
	} {
		if out := g.keys(c.args...); !strings.Contains(out, c.want) {
			t.Errorf("TZ=Asia/Kolkata caddy keys %s: want %q in\n%s", strings.Join(c.args, " "), c.want, out)
		}
	}
	g.env = []string{"TZ=UTC"}
	if out := g.keys("show", k.ID); !strings.Contains(out, year+"-01-01 00:00 UTC") {
		t.Errorf("TZ=UTC caddy keys show: want %s-01-01 00:00 UTC in\n%s", year, out)
	}
	// The old key's end, said by rotate (until session 37 in RFC 3339 UTC).
	g.env = []string{"TZ=Asia/Kolkata"}
	if out := g.keys("rotate", k.ID, "--grace", "1h"); !regexp.MustCompile(`keeps working until \d{4}-\d\d-\d\d \d\d:\d\d IST \(in `).MatchString(out) {
		t.Errorf("TZ=Asia/Kolkata caddy keys rotate: want the old key's end in IST in\n%s", out)
	}
}

// TestAStopPastTheGracePeriodCountsTheSendsInFlight: with Caddy's
// grace_period set, `caddy stop` waits that long for requests in flight,
// then the process exits under those still waiting on the provider, which
// has had their sends whole and may send them. They are counted, as sends
// whose answer was lost: in the key's usage and so in its recipient quota
// after the restart, and the log says how many the stop counted so. Until
// session 37 they were counted nowhere and nothing said so: the key could
// send those recipients again past its quota.
func TestAStopPastTheGracePeriodCountsTheSendsInFlight(t *testing.T) {
	const slow = 3
	var seen atomic.Int32
	had := make(chan struct{}, slow)
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // the provider has the send whole
		if seen.Add(1) <= slow {
			had <- struct{}{}
			time.Sleep(4 * time.Second) // and answers after the grace period
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer provider.Close()
	cf := strings.Replace(quotaCaddyfile, "\tadmin {ADMIN}\n", "\tadmin {ADMIN}\n\tgrace_period 1s\n", 1) // quota 4/d
	g := startGateway(t, gatewayConfig{caddyfile: cf, upstream: provider.URL})
	k := g.issue("--name", "in-flight", "--scope", "mail.send")
	one := sgBody("a@example.com", "r@example.org")

	var wg sync.WaitGroup
	for range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", bytes.NewReader(one))
			req.Header.Set("Authorization", "Bearer "+k.Key)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
				t.Errorf("a send in flight at the stop was answered %d", resp.StatusCode)
			}
		}()
	}
	for range slow {
		select {
		case <-had:
		case <-time.After(10 * time.Second):
			t.Fatal("the sends did not reach the provider")
		}
	}
	began := time.Now()
	g.stop()
	wg.Wait()
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("the stop took %v with a grace period of 1s", took)
	}
	u := g.usage(k.ID)
	if u.Allowed != slow || u.Recipients != slow || u.Statuses["5xx"] != slow {
		t.Errorf("after the stop: %d allowed, %d recipients, statuses %v; want the %d sends in flight, each as ended "+
			"without an answer, their recipients kept", u.Allowed, u.Recipients, u.Statuses, slow)
	}
	if !strings.Contains(g.logs(), "keygate: the gateway stopped (its grace_period ran out) with 3 requests still waiting") {
		t.Errorf("no line says the stop counted the requests in flight:\n%s", g.logs())
	}

	// The quota of the next start holds them: 1 of 4 is left.
	g.start()
	if r := g.call("POST", "/v3/mail/send", k.Key, sgBody("a@example.com", "r1@example.org", "r2@example.org")); r.code() != "quota_exceeded" {
		t.Errorf("2 more recipients after the 3 sent in flight, of a quota of 4: %d %s, want quota_exceeded", r.Status, r.Body)
	}
	if r := g.call("POST", "/v3/mail/send", k.Key, one); r.Status != http.StatusAccepted {
		t.Errorf("the 4th recipient of 4: %d %s", r.Status, r.Body)
	}
}

// TestASignalDuringTrafficLosesNoCount: SIGTERM (what systemctl stop and
// docker stop send) and a first SIGINT (Ctrl-C) stop the gateway as
// `caddy stop` does: every send a client saw accepted is in the key's
// usage after the process exited.
func TestASignalDuringTrafficLosesNoCount(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			up := newUpstream(t)
			g := startGateway(t, gatewayConfig{caddyfile: sendgridSendSite, upstream: up.URL})
			k := g.issue("--name", "signalled", "--scope", "mail.send")
			body := sgBody("orders@shop.example", "ann@example.org")
			var accepted, unanswered atomic.Int64
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := &http.Client{Timeout: 10 * time.Second} // kept-alive connections, as SDKs
					for refused := 0; refused < 20; {
						req, _ := http.NewRequest("POST", g.siteURL+"/v3/mail/send", bytes.NewReader(body))
						req.Header.Set("Authorization", "Bearer "+k.Key)
						resp, err := c.Do(req)
						if err != nil {
							if strings.Contains(err.Error(), "connection refused") {
								refused++ // the listener is gone
								time.Sleep(10 * time.Millisecond)
							} else {
								unanswered.Add(1)
							}
							continue
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							accepted.Add(1)
						}
						time.Sleep(5 * time.Millisecond)
					}
				}()
			}
			time.Sleep(time.Second)
			g.cmd.Process.Signal(sig)
			select {
			case <-g.done:
			case <-time.After(20 * time.Second):
				t.Fatalf("caddy did not exit after %v:\n%s", sig, g.logs())
			}
			wg.Wait()
			u := g.usage(k.ID)
			if a, n := accepted.Load(), unanswered.Load(); a < 50 || u.Allowed < a || u.Allowed > a+n {
				t.Errorf("after %v: usage counts %d allowed; the clients saw %d accepted and %d unanswered", sig, u.Allowed, a, n)
			}
		})
	}
}
