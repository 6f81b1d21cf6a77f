package keygate_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

// Jepsen-style checks of the promise that a change which takes a key's
// right away is never undone: clients send with many keys while other
// keys are revoked, disabled or narrowed through each surface, every
// request's start and end are recorded, and an upstream that counts what
// it was passed (not the status a client saw) is the judge. A request that
// started after a change's acknowledgment plus the surface's bound (0 on
// the node that acknowledged it, 1 s elsewhere) must not reach upstream.

// linCaddyfile: a cache_ttl far longer than any bound, so a stale cache
// entry shows as a violation rather than expiring unnoticed.
var linCaddyfile = site(`
	` + demoConsole + `
	handle {
		keygate {
			store {STORE}
			cache_ttl 10m
			mail_api sendgrid
			failed_auth_limit 100000/m
			scope mail.send POST /v3/mail/send
			scope templates.read GET /v3/templates*
		}
		reverse_proxy {UPSTREAM}
	}
`)

// countingUpstream records the X-Op header of every request passed to it:
// what a provider would have received.
type countingUpstream struct {
	URL string
	mu  sync.Mutex
	got map[int64]time.Time
}

func newCountingUpstream(t *testing.T) *countingUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	u := &countingUpstream{URL: "http://" + ln.Addr().String(), got: map[int64]time.Time{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if id, err := strconv.ParseInt(r.Header.Get("X-Op"), 10, 64); err == nil {
			u.mu.Lock()
			u.got[id] = time.Now()
			u.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{}`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return u
}

func (u *countingUpstream) passed(id int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.got[id]
	return ok
}

// linOp is one client request.
type linOp struct {
	id         int64
	node, key  int
	start, end time.Time
	status     int
}

// linKey is a key the clients use, with what is done to it.
type linKey struct {
	id, key string
	what    string // the change, for messages
	surface string // admin, cli, console, time
	node    int    // the node that acknowledged it; -1: none (CLI, time)
	ack     time.Time
	// allowance is how many requests per node may still pass after the
	// bound (a lowered rate keeps the tokens left, capped at the new size).
	allowance int
	done      bool
}

// clients sends from workers goroutines to random keys on random nodes
// until ctx ends, with a pause between requests (a functional run, not a
// load test).
func clients(ctx context.Context, nodes []*gateway, keys []*linKey, workers int) []linOp {
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	body := string(sgBody("app@shop.example", "a@x.org"))
	var next atomic.Int64
	var mu sync.Mutex
	var all []linOp
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ops []linOp
			for ctx.Err() == nil {
				op := linOp{id: next.Add(1), node: rand.IntN(len(nodes)), key: rand.IntN(len(keys))}
				req, _ := http.NewRequest("POST", nodes[op.node].siteURL+"/v3/mail/send", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keys[op.key].key)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Op", strconv.FormatInt(op.id, 10))
				op.start = time.Now()
				resp, err := hc.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					op.status = resp.StatusCode
				}
				op.end = time.Now()
				ops = append(ops, op)
				time.Sleep(5 * time.Millisecond)
			}
			mu.Lock()
			all = append(all, ops...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all
}

// checkLinear fails the test for every request that reached upstream
// although it started after its key's change was acknowledged plus the
// bound, and logs per surface how long after the acknowledgment the last
// passed request started (negative: none after it) and the first refused.
func checkLinear(t *testing.T, ops []linOp, up *countingUpstream, keys []*linKey, nodes int, elsewhere time.Duration, outage [2]time.Time) {
	t.Helper()
	type stat struct{ lastPass, firstRefusal []time.Duration }
	stats := map[string]*stat{}
	for ki, k := range keys {
		if k.ack.IsZero() {
			continue
		}
		for n := range nodes {
			bound := elsewhere
			// When the change was made: a rotation's acknowledgment is
			// the old key's end, one grace period (1 s) after it was made
			// on its node; another node learns of that end as of any
			// change, through the store.
			made := k.ack
			switch {
			case k.node == n || k.what == "expiry": // known to every node from the start
				bound = 0
			case k.what == "rotate":
				made = k.ack.Add(-time.Second)
				bound = max(0, made.Add(elsewhere).Sub(k.ack))
			}
			if k.node != n && k.what != "expiry" && !outage[0].IsZero() && made.After(outage[0].Add(-elsewhere)) && made.Before(outage[1]) {
				// A node that could not read the store serves its cache
				// until it can again (guarantees.md): the bound runs from
				// the outage's end. (A rotation made just before
				// PostgreSQL paused failed here one run in ten: its old
				// key's end was held to bound 0 on the other node.)
				bound = max(bound, outage[1].Add(elsewhere).Sub(k.ack))
			}
			lastPass, firstRefusal := time.Duration(-1<<62), time.Duration(1<<62)
			var late []linOp
			for _, op := range ops {
				if op.key != ki || op.node != n {
					continue
				}
				since := op.start.Sub(k.ack)
				if up.passed(op.id) {
					lastPass = max(lastPass, since)
					if since > bound {
						late = append(late, op)
					}
				} else if since > 0 && op.status >= 400 {
					firstRefusal = min(firstRefusal, since)
				}
			}
			if len(late) > k.allowance {
				t.Errorf("%s (%s via %s, acknowledged by node %d): node %d passed %d requests started more than %v after the acknowledgment; the latest started %v after it",
					k.id, k.what, k.surface, k.node, n, len(late), bound, lastPass)
			}
			name := fmt.Sprintf("%s via %s, node %s", k.what, k.surface, map[bool]string{true: "same", false: "other"}[k.node == n || k.node < 0])
			s := stats[name]
			if s == nil {
				s = &stat{}
				stats[name] = s
			}
			s.lastPass = append(s.lastPass, lastPass)
			s.firstRefusal = append(s.firstRefusal, firstRefusal)
		}
	}
	names := make([]string, 0, len(stats))
	for n := range stats {
		names = append(names, n)
	}
	slices.Sort(names)
	ms := func(ds []time.Duration) string {
		var out []string
		for _, d := range ds {
			switch {
			case d <= -1<<61:
				out = append(out, "-")
			case d >= 1<<61:
				out = append(out, "∞")
			default:
				out = append(out, fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)))
			}
		}
		return strings.Join(out, " ")
	}
	for _, n := range names {
		t.Logf("%-45s last passed start (ms after ack): %s; first refused: %s", n, ms(stats[n].lastPass), ms(stats[n].firstRefusal))
	}
}

// consoleRevoke revokes a key through g's console form, as a person does.
func consoleRevoke(t *testing.T, g *gateway, id, name string) {
	t.Helper()
	u := consoleUser{t: t, prefix: "/console"}
	token := u.formToken(g)
	resp, page := u.do(g, http.MethodPost, "/keys/"+id+"/revoke", url.Values{"csrf": {token}, "confirm": {name}, "reason": {"linearizability"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("console revoke of %s: %d\n%s", id, resp.StatusCode, page)
	}
}

// change applies k's change through its surface and records the
// acknowledgment (the moment the answer arrived).
func change(t *testing.T, nodes []*gateway, k *linKey, name string) {
	t.Helper()
	g := nodes[max(k.node, 0)]
	switch k.surface + " " + k.what {
	case "admin revoke":
		if r := g.admin("POST", "/keygate/keys/"+k.id+"/revoke", map[string]string{"reason": "lin"}); r.Status != 200 {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
	case "admin disable":
		if r := g.admin("PATCH", "/keygate/keys/"+k.id, map[string]any{"disabled": true}); r.Status != 200 {
			t.Fatalf("disable: %d %s", r.Status, r.Body)
		}
	case "admin scope":
		if r := g.admin("PATCH", "/keygate/keys/"+k.id, map[string]any{"scopes": []string{"templates.read"}}); r.Status != 200 {
			t.Fatalf("scope: %d %s", r.Status, r.Body)
		}
	case "admin sender":
		if r := g.admin("PATCH", "/keygate/keys/"+k.id, map[string]any{"sender_domains": []string{"other.example"}}); r.Status != 200 {
			t.Fatalf("sender: %d %s", r.Status, r.Body)
		}
	case "admin ip":
		if r := g.admin("PATCH", "/keygate/keys/"+k.id, map[string]any{"allowed_ips": []string{"203.0.113.0/24"}}); r.Status != 200 {
			t.Fatalf("ip: %d %s", r.Status, r.Body)
		}
	case "admin rate":
		if r := g.admin("PATCH", "/keygate/keys/"+k.id, map[string]any{"rate": "1/h"}); r.Status != 200 {
			t.Fatalf("rate: %d %s", r.Status, r.Body)
		}
	case "console revoke":
		consoleRevoke(t, g, k.id, name)
	case "cli revoke":
		g.keys("revoke", k.id, "--yes")
	case "cli disable":
		g.keys("update", k.id, "--disable")
	case "cli scope":
		g.keys("update", k.id, "--scope", "templates.read")
	case "cli sender":
		g.keys("update", k.id, "--sender-domain", "other.example")
	case "cli ip":
		g.keys("update", k.id, "--allow-ip", "203.0.113.0/24")
	case "cli quota":
		g.keys("update", k.id, "--quota", "1/d")
	default:
		t.Fatalf("no such change: %s %s", k.surface, k.what)
	}
	k.ack = time.Now()
}

// linRun issues keys for each change, lets clients send with them (and
// with keys nothing happens to), applies the changes one after another and
// checks the history.
func linRun(t *testing.T, nodes []*gateway, up *countingUpstream, plan []*linKey, elsewhere time.Duration, during func() (outage [2]time.Time)) {
	t.Helper()
	keys := plan
	for i := range 3 {
		keys = append(keys, &linKey{what: fmt.Sprintf("control-%d", i)})
	}
	for i, k := range keys {
		args := []string{"--name", fmt.Sprintf("lin-%d", i), "--scope", "mail.send"}
		if k.what == "expiry" {
			args = append(args, "--expires", time.Now().Add(2*time.Second).UTC().Format(time.RFC3339Nano))
		}
		var out struct {
			issuedKey
			ExpiresAt *time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal([]byte(nodes[0].keys(append([]string{"issue", "--json"}, args...)...)), &out); err != nil {
			t.Fatal(err)
		}
		k.id, k.key = out.ID, out.Key
		if k.what == "expiry" {
			k.ack = *out.ExpiresAt
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var ops []linOp
	done := make(chan struct{})
	go func() { ops = clients(ctx, nodes, keys, 3); close(done) }()
	time.Sleep(500 * time.Millisecond) // every key cached on every node
	var outage [2]time.Time
	for i, k := range plan {
		switch k.what {
		case "expiry":
		case "rotate":
			g := nodes[max(k.node, 0)]
			r := g.admin("POST", "/keygate/keys/"+k.id+"/rotate", map[string]string{"grace": "1s"})
			var res struct {
				OldKeyEnds *time.Time `json:"old_key_ends"`
			}
			if r.Status != 201 || json.Unmarshal(r.Body, &res) != nil || res.OldKeyEnds == nil {
				t.Fatalf("rotate: %d %s", r.Status, r.Body)
			}
			k.ack = *res.OldKeyEnds
		default:
			change(t, nodes, k, fmt.Sprintf("lin-%d", i))
		}
		if during != nil && i == len(plan)/2 {
			outage = during()
		}
		time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond) // past every bound, grace and expiry
	cancel()
	<-done
	passed := 0
	for _, op := range ops {
		if up.passed(op.id) {
			passed++
		}
	}
	t.Logf("%d requests, %d passed upstream", len(ops), passed)
	checkLinear(t, ops, up, keys, len(nodes), elsewhere, outage)
}

// linPlan is one change of each kind through each surface.
func linPlan(nodes int) []*linKey {
	var plan []*linKey
	for n := range nodes {
		for _, what := range []string{"revoke", "disable", "scope", "sender", "ip"} {
			plan = append(plan, &linKey{what: what, surface: "admin", node: n})
		}
		plan = append(plan, &linKey{what: "rate", surface: "admin", node: n, allowance: 1})
		plan = append(plan, &linKey{what: "revoke", surface: "console", node: n})
		plan = append(plan, &linKey{what: "rotate", surface: "time", node: n})
	}
	for _, what := range []string{"revoke", "disable", "scope", "sender", "ip", "quota"} {
		plan = append(plan, &linKey{what: what, surface: "cli", node: -1})
	}
	plan = append(plan, &linKey{what: "expiry", surface: "time", node: -1})
	rand.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	return plan
}

func TestLinearizableRevocationSQLite(t *testing.T) {
	needBinary(t)
	up := newCountingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: linCaddyfile, upstream: up.URL})
	linRun(t, []*gateway{g}, up, linPlan(1), time.Second, nil)
}

func TestLinearizableRevocationSQLiteAcrossReload(t *testing.T) {
	needBinary(t)
	up := newCountingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: linCaddyfile, upstream: up.URL})
	plan := linPlan(1)
	var wg sync.WaitGroup
	linRun(t, []*gateway{g}, up, plan, time.Second, func() [2]time.Time {
		// Reloads while the other half of the changes are made.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				g.reload()
				time.Sleep(100 * time.Millisecond)
			}
		}()
		return [2]time.Time{}
	})
	wg.Wait()
}

func TestLinearizableRevocationCluster(t *testing.T) {
	linCluster(t, nil)
}

// linCluster runs linRun on two nodes sharing a new PostgreSQL, with
// outage (given the server) as its outage, if any.
func linCluster(t *testing.T, outage func(pg *testservers.Postgres) [2]time.Time) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	up := newCountingUpstream(t)
	cfg := gatewayConfig{caddyfile: linCaddyfile, upstream: up.URL, store: pg.URI}
	nodes := []*gateway{startGateway(t, cfg), startGateway(t, cfg)}
	var during func() [2]time.Time
	if outage != nil {
		during = func() [2]time.Time { return outage(pg) }
	}
	linRun(t, nodes, up, linPlan(2), time.Second, during)
}

// TestLinearizableRevocationWhileSQLiteIsLocked: half the changes are made
// while another process holds SQLite's write lock for 2 s (the CLI and the
// admin API wait for it, within their busy timeout).
func TestLinearizableRevocationWhileSQLiteIsLocked(t *testing.T) {
	needBinary(t)
	up := newCountingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: linCaddyfile, upstream: up.URL})
	path := strings.TrimPrefix(g.store, "sqlite:")
	var wg sync.WaitGroup
	linRun(t, []*gateway{g}, up, linPlan(1), time.Second, func() [2]time.Time {
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(2 * time.Second)
			conn.ExecContext(context.Background(), "COMMIT")
			conn.Close()
			db.Close()
		}()
		return [2]time.Time{}
	})
	wg.Wait()
}

// TestLinearizableRevocationAfterPostgresRestarts: half the changes are made
// just after PostgreSQL was stopped for 2 s and started again.
func TestLinearizableRevocationAfterPostgresRestarts(t *testing.T) {
	linCluster(t, func(pg *testservers.Postgres) [2]time.Time {
		began := time.Now()
		pg.Stop()
		time.Sleep(2 * time.Second)
		pg.Start()
		return [2]time.Time{began, time.Now()}
	})
}

// TestLinearizableRevocationAfterPostgresPauses: the same after PostgreSQL
// stopped answering (SIGSTOP) for 3 s.
func TestLinearizableRevocationAfterPostgresPauses(t *testing.T) {
	linCluster(t, func(pg *testservers.Postgres) [2]time.Time {
		began := time.Now()
		pg.Pause()
		time.Sleep(3 * time.Second)
		pg.Resume()
		return [2]time.Time{began, time.Now()}
	})
}
