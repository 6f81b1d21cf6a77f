package keygate_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

// The end-to-end tests run the real caddy binary built from ./cmd/caddy,
// as an operator would, with the CLI in separate processes.

var caddyBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "keygate-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddyBin = filepath.Join(dir, "caddy")
	if bin := os.Getenv("KEYGATE_TEST_CADDY"); bin != "" {
		caddyBin = bin // a binary built beforehand (e.g. for a quick re-run)
	} else if !testing.Short() {
		build := exec.Command("go", "build", "-o", caddyBin, "./cmd/caddy")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building ./cmd/caddy:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needBinary(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(caddyBin); err != nil {
		t.Skip("end-to-end test: the caddy binary is built unless -short is given")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	return testservers.FreePort(t)
}

// upstream records what the email provider would receive.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, recorded{r.Method, r.URL.Path, r.Header.Clone(), body})
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"upstream":"ok"}`)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstream) last() recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return recorded{}
	}
	return u.reqs[len(u.reqs)-1]
}

// gateway is one running caddy process.
type gateway struct {
	t         *testing.T
	dir       string
	store     string
	adminAddr string
	siteURL   string
	config    string
	cmd       *exec.Cmd
	logPath   string
	env       []string
	done      chan struct{}
	quotaRoom sync.Once
}

// quotaRoom is how much of a UTC day an end-to-end test that gives a key a
// recipient quota is sure of: its sends and what it asserts of them land in
// one quota period (a day, or a month, which ends where a day does), not
// on both sides of midnight UTC, where a quota used up is fresh again.
const quotaRoom = 5 * time.Minute

// roomForQuota waits, the first time a test's gateway is given a quota
// (its config or a key's) within quotaRoom of midnight UTC, for the next
// day (testservers.RoomInPeriod).
func (g *gateway) roomForQuota() {
	g.t.Helper()
	g.quotaRoom.Do(func() { testservers.RoomInPeriod(g.t, time.Now, testservers.Day, quotaRoom) })
}

// site wraps the body of a site in what every end-to-end Caddyfile shares:
// the admin endpoint and a site bound to loopback.
func site(body string) string {
	return "{\n\tadmin {ADMIN}\n}\nhttp://127.0.0.1:{PORT} {\n\tbind 127.0.0.1" + body + "}\n"
}

// gatewayConfig fills a Caddyfile template: {ADMIN}, {PORT}, {STORE},
// {UPSTREAM} are replaced.
type gatewayConfig struct {
	caddyfile string
	json      bool // caddyfile is Caddy's JSON, run without an adapter
	upstream  string
	store     string // default: sqlite in the test's temp dir
	env       []string
}

func startGateway(t *testing.T, gc gatewayConfig) *gateway {
	t.Helper()
	needBinary(t)
	dir := t.TempDir()
	g := &gateway{t: t, dir: dir, store: gc.store, env: gc.env}
	if strings.Contains(gc.caddyfile, "quota") {
		g.roomForQuota()
	}
	if g.store == "" {
		g.store = "sqlite:" + filepath.Join(dir, "keys.db")
	}
	g.logPath = filepath.Join(dir, "caddy.log")
	g.config = filepath.Join(dir, "Caddyfile")
	if gc.json {
		g.config = filepath.Join(dir, "caddy.json")
	}
	// freePort's ports are free when it returns, not when caddy binds them.
	// They lie outside the range outgoing connections take theirs from
	// (testservers.FreePort), but a server of a test running in parallel
	// may still take one meanwhile. Then caddy exits at once, and the
	// gateway starts again on other ports.
	for attempt := 1; ; attempt++ {
		g.adminAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		port := freePort(t)
		g.siteURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		g.writeConfig(gc.caddyfile, gc.upstream, port)
		exited := g.tryStart()
		if exited == "" {
			return g
		}
		if attempt == 3 || !strings.Contains(exited, "address already in use") {
			t.Fatalf("caddy exited at start:\n%s", exited)
		}
		os.Remove(g.logPath + ".stderr")
		os.Remove(g.logPath)
	}
}

func (g *gateway) writeConfig(tmpl, up string, port int) {
	cf := strings.NewReplacer(
		"{ADMIN}", g.adminAddr,
		"{PORT}", fmt.Sprint(port),
		"{STORE}", g.store,
		"{UPSTREAM}", strings.TrimPrefix(up, "http://"),
		"{LOG}", g.logPath,
	).Replace(tmpl)
	if err := os.WriteFile(g.config, []byte(cf), 0o600); err != nil {
		g.t.Fatal(err)
	}
}

// port is the site's port, for writeConfig before a reload.
func (g *gateway) port() int {
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(g.siteURL, "http://"))
	n, err := strconv.Atoi(p)
	if err != nil {
		g.t.Fatalf("site URL %s: %v", g.siteURL, err)
	}
	return n
}

func (g *gateway) environ() []string {
	return append(append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(g.dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(g.dir, "config"),
		"PROVIDER_API_KEY=provider-secret-123",
	), g.env...)
}

func (g *gateway) start() {
	if exited := g.tryStart(); exited != "" {
		g.t.Fatalf("caddy exited at start:\n%s", exited)
	}
}

// tryStart starts caddy and waits until it serves; if caddy exits first,
// it returns the log.
func (g *gateway) tryStart() (exited string) {
	t := g.t
	logf, err := os.OpenFile(g.logPath+".stderr", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	g.cmd = exec.Command(caddyBin, append([]string{"run", "--config", g.config}, g.adapter()...)...)
	g.cmd.Env = g.environ()
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.done = make(chan struct{})
	go func() { g.cmd.Wait(); logf.Close(); close(g.done) }()
	t.Cleanup(func() { g.kill() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-g.done:
			return g.logs()
		default:
		}
		resp, err := http.Get("http://" + g.adminAddr + "/config/")
		if err == nil {
			resp.Body.Close()
			if c, err := net.Dial("tcp", strings.TrimPrefix(g.siteURL, "http://")); err == nil {
				c.Close()
				return ""
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("caddy did not start:\n%s", g.logs())
	return ""
}

func (g *gateway) kill() {
	if g.cmd != nil && g.cmd.Process != nil {
		g.cmd.Process.Kill()
		<-g.done
	}
}

// stop stops caddy gracefully through its admin API and waits for exit.
func (g *gateway) stop() {
	g.t.Helper()
	resp, err := http.Post("http://"+g.adminAddr+"/stop", "", nil)
	if err != nil {
		g.t.Fatalf("caddy stop: %v", err)
	}
	resp.Body.Close()
	select {
	case <-g.done:
	case <-time.After(20 * time.Second):
		g.t.Fatal("caddy did not stop")
	}
}

// reload runs `caddy reload` as an operator would.
func (g *gateway) reload() {
	g.t.Helper()
	cmd := exec.Command(caddyBin, append([]string{"reload", "--config", g.config, "--address", g.adminAddr, "--force"}, g.adapter()...)...)
	cmd.Env = g.environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		g.t.Fatalf("caddy reload: %v\n%s\n%s", err, out, g.logs())
	}
}

// adapter is the --adapter flag for the gateway's config: none for JSON.
func (g *gateway) adapter() []string {
	if strings.HasSuffix(g.config, ".json") {
		return nil
	}
	return []string{"--adapter", "caddyfile"}
}

func (g *gateway) logs() string {
	b, _ := os.ReadFile(g.logPath + ".stderr")
	c, _ := os.ReadFile(g.logPath)
	return string(b) + string(c)
}

// keys runs `caddy keys ARGS --store STORE` and returns stdout; it fails
// the test on a non-zero exit unless wantErr.
func (g *gateway) keys(args ...string) string {
	g.t.Helper()
	out, errOut, err := g.keysRaw(args...)
	if err != nil {
		g.t.Fatalf("caddy keys %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func (g *gateway) keysRaw(args ...string) (string, string, error) {
	return g.keysStdin(nil, args...)
}

// keysStdin is keysRaw with stdin (nil: the null device).
func (g *gateway) keysStdin(stdin io.Reader, args ...string) (string, string, error) {
	for _, a := range args {
		if a == "--quota" || strings.HasPrefix(a, "--quota=") {
			g.roomForQuota()
		}
	}
	cmd := exec.Command(caddyBin, append(append([]string{"keys"}, args...), "--store", g.store)...)
	cmd.Env = g.environ()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

type issuedKey struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

func (g *gateway) issue(args ...string) issuedKey {
	g.t.Helper()
	var k issuedKey
	out := g.keys(append([]string{"issue", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.Key == "" || k.ID == "" {
		g.t.Fatalf("issue: %v: %s", err, out)
	}
	return k
}

// call sends a request to the gateway with an optional bearer key.
// heapAlloc is the Go heap the gateway holds, from its admin /debug/vars.
func (g *gateway) heapAlloc() int64 {
	g.t.Helper()
	var v struct {
		Memstats struct{ HeapAlloc int64 } `json:"memstats"`
	}
	if r := g.admin("GET", "/debug/vars", nil); r.Status != 200 || json.Unmarshal(r.Body, &v) != nil {
		g.t.Fatalf("GET /debug/vars: %d", r.Status)
	}
	return v.Memstats.HeapAlloc
}

func (g *gateway) call(method, path, key string, body []byte, hdr ...string) *response {
	g.t.Helper()
	req, err := http.NewRequest(method, g.siteURL+path, bytes.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// client opens a connection per request: a `caddy reload` closes idle
// connections, and a POST on one the server just closed fails with EOF
// (net/http retries only idempotent requests), which would make the exact
// request counts of the tests flaky.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// code returns the contract error code of a denial body, or "".
func (r *response) code() string { return r.denial().Code }

// message returns the contract error message of a denial body, or "".
func (r *response) message() string { return r.denial().Message }

func (r *response) denial() (e struct{ Code, Message string }) {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &body)
	return struct{ Code, Message string }(body.Error)
}

// admin calls the admin API with body JSON-encoded, or as it is when it is
// a []byte.
func (g *gateway) admin(method, path string, body any, hdr ...string) *response {
	g.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte: // sent as it is, not JSON-encoded
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
		if bytes.Contains(j, []byte(`"quota"`)) {
			g.roomForQuota()
		}
	}
	req, _ := http.NewRequest(method, "http://"+g.adminAddr+path, rd)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// internalRoot returns the PEM root certificate of Caddy's internal CA
// (the admin API's /pki/ca/local), once every https site of the gateway
// completes a TLS handshake verified by it (certificates are issued in the
// background at start).
func (g *gateway) internalRoot(sites ...string) []byte {
	g.t.Helper()
	var ca struct {
		Root string `json:"root_certificate"`
	}
	r := g.admin("GET", "/pki/ca/local", nil)
	if err := json.Unmarshal(r.Body, &ca); r.Status != 200 || err != nil || ca.Root == "" {
		g.t.Fatalf("GET /pki/ca/local: %d %s", r.Status, r.Body)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(ca.Root)) {
		g.t.Fatalf("the internal CA's root is not PEM: %q", ca.Root)
	}
	for _, site := range sites {
		addr := strings.TrimPrefix(site, "https://")
		var err error
		if eventually(g.t, 15*time.Second, func() bool {
			var c *tls.Conn
			if c, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}); err == nil {
				c.Close()
			}
			return err == nil
		}) < 0 {
			g.t.Fatalf("%s: no verified TLS handshake: %v\n%s", site, err, g.logs())
		}
	}
	return []byte(ca.Root)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1
}
