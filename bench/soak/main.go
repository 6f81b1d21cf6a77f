// Command soak drives a running keygate gateway for a long time the way
// production does, all at once, and samples the process every minute: SDK-
// shaped SendGrid sends from many keys (a few busy, most idle, recipients
// counted) and client IPs (X-Forwarded-For), unknown keys from many
// addresses (the failed-auth limiter), keys issued, updated, disabled,
// rotated and revoked through the admin API and `caddy keys`, `caddy reload`,
// console page loads and /metrics scrapes. It checks that no revoked,
// disabled or ended key gets through, and at the end that each key's usage
// (`caddy keys usage`, the admin API, per-key /metrics) matches what it sent.
// bench/soak.sh starts the gateway, its upstream and this; run it by hand,
// never in the test suite. Each minute's row goes to stdout and -out (CSV).
//
//	go run ./bench/soak -gw http://127.0.0.1:31301 -admin 127.0.0.1:31300 \
//	    -caddy ./caddy -caddyfile Caddyfile -store sqlite:keys.db -pid 1234 -dur 25m
//
// -verify STATE checks a stopped-and-started gateway against the state file a
// soak wrote: every key's usage as it was, revoked keys refused, live keys
// answered.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	gw          = flag.String("gw", "http://127.0.0.1:31301", "gateway site (mail_api sendgrid)")
	admin       = flag.String("admin", "127.0.0.1:31300", "Caddy admin address")
	consoleURL  = flag.String("console", "", "console base URL with a trailing slash (empty: no console loads)")
	consoleUser = flag.String("console-user", "ann:soak", "console basic_auth user:password")
	caddyBin    = flag.String("caddy", "./caddy", "caddy binary, for caddy keys and caddy reload")
	caddyfile   = flag.String("caddyfile", "", "Caddyfile to reload (cache_ttl 30s and 31s alternate, so each reload is a change)")
	storeURI    = flag.String("store", "", "the store, for caddy keys --store")
	pidFlag     = flag.Int("pid", 0, "caddy's process id (RSS, CPU, fds)")
	logFile     = flag.String("log", "", "caddy's log file (bytes per request, warnings)")
	rowsCmd     = flag.String("rows", "", "shell command printing figures of the store's rows, one line (e.g. usage, usage_ips, events, most IPs of a key-hour)")
	dbFile      = flag.String("db", "", "SQLite file (its size and its -wal's)")
	unknownFile = flag.String("unknown", "", "file of well-formed unknown keys (go run ./bench/keys)")
	dur         = flag.Duration("dur", 25*time.Minute, "how long to drive load")
	nKeys       = flag.Int("keys", 3000, "keys to issue at the start")
	nBusy       = flag.Int("busy", 30, "busy keys among them")
	rps         = flag.Int("rps", 100, "sends per second in all")
	reloadEvery = flag.Duration("reload", 90*time.Second, "caddy reload interval")
	cliEvery    = flag.Duration("cli", 20*time.Second, "caddy keys change interval")
	out         = flag.String("out", "soak.csv", "CSV of the per-minute samples")
	stateFile   = flag.String("state", "soak-state.json", "keys and counts written at the end, for -verify")
	verify      = flag.String("verify", "", "check a restarted gateway against this state file and exit")
)

type key struct {
	ID, Secret string
	Busy       bool
	// Stopped: when a revoke, disable or a rotation's grace end was
	// confirmed; the key must be refused on requests that start after
	// StopBy. Zero: live.
	StopBy     time.Time `json:",omitempty"`
	StopReason string    `json:",omitempty"`
	Disabled   bool      `json:",omitempty"`
	Allowed    int64
	Recipients int64
}

type soak struct {
	mu      sync.Mutex
	keys    []*key
	byID    map[string]*key
	busy    []*key
	unknown []string
	client  *http.Client

	// per-minute counters, swapped by the sampler
	sends, ok2xx, denied, bad, unexpected, violations atomic.Int64
	latMu                                             sync.Mutex
	lat                                               []time.Duration
	adminOK, adminFail, cliOK, cliFail, reloads       atomic.Int64
	reloadFail, consoleOK, consoleFail, scrapes       atomic.Int64
	dropped                                           atomic.Int64
	codes                                             sync.Map // code -> *atomic.Int64
	lastMetrics                                       atomic.Value
}

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	s := &soak{byID: map[string]*key{}, client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 128},
	}}
	if *verify != "" {
		s.verifyState(*verify)
		return
	}
	if *unknownFile != "" {
		b, err := os.ReadFile(*unknownFile)
		if err != nil {
			log.Fatal(err)
		}
		s.unknown = strings.Fields(string(b))
	}
	s.issueAll()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	run := func(f func(chan struct{})) { wg.Add(1); go func() { defer wg.Done(); f(stop) }() }
	run(s.load)
	run(s.adminChurn)
	run(s.cliChurn)
	run(s.reloader)
	run(s.consoleLoads)
	run(s.scraper)
	done := make(chan struct{})
	go func() { s.sampler(done); close(done) }()
	time.Sleep(*dur)
	close(stop)
	wg.Wait()
	done <- struct{}{}
	<-done
	time.Sleep(3 * time.Second) // the usage flush runs every second
	s.check()
}

// ---- keys ----

func (s *soak) adminDo(method, path string, body any) (int, []byte) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+*admin+path, r)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		s.adminFail.Add(1)
		log.Printf("admin %s %s: %v", method, path, err)
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 {
		s.adminOK.Add(1)
	} else {
		s.adminFail.Add(1)
		log.Printf("admin %s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return resp.StatusCode, b
}

func (s *soak) issue(name string, busy bool) *key {
	code, b := s.adminDo("POST", "/keygate/keys", map[string]any{
		"name": name, "owner": fmt.Sprintf("team-%d", rand.IntN(40)),
		"scopes": []string{"mail.send"}, "quota": "1000000/d", "reason": "soak",
	})
	if code != 201 {
		return nil
	}
	var r struct{ ID, Key string }
	json.Unmarshal(b, &r)
	k := &key{ID: r.ID, Secret: r.Key, Busy: busy}
	s.mu.Lock()
	s.keys = append(s.keys, k)
	s.byID[k.ID] = k
	if busy {
		s.busy = append(s.busy, k)
	}
	s.mu.Unlock()
	return k
}

func (s *soak) issueAll() {
	start := time.Now()
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := 0; i < *nKeys; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			s.issue(fmt.Sprintf("soak-%d", i), i < *nBusy)
		}(i)
	}
	wg.Wait()
	log.Printf("issued %d keys in %v", len(s.keys), time.Since(start).Round(time.Millisecond))
}

// pick returns a live key (busy or idle) or nil.
func (s *soak) pick(busy bool) *key {
	s.mu.Lock()
	defer s.mu.Unlock()
	pool := s.keys
	if busy {
		pool = s.busy
	}
	for range 20 {
		if len(pool) == 0 {
			return nil
		}
		k := pool[rand.IntN(len(pool))]
		if k.StopBy.IsZero() && !k.Disabled {
			return k
		}
	}
	return nil
}

// leaked returns the first live busy key.
func (s *soak) leaked() *key {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.busy {
		if k.StopBy.IsZero() && !k.Disabled {
			return k
		}
	}
	return nil
}

func (s *soak) pickStopped() *key {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 50 {
		k := s.keys[rand.IntN(len(s.keys))]
		if !k.StopBy.IsZero() && time.Now().After(k.StopBy) {
			return k
		}
	}
	return nil
}

// stopped marks k refused from after (a revoke through this process's admin
// API is enforced on the next request; another process's within a second).
func (s *soak) stopped(k *key, after time.Time, why string) {
	s.mu.Lock()
	k.StopBy, k.StopReason = after, why
	if k.Busy {
		for i, b := range s.busy {
			if b == k {
				s.busy = append(s.busy[:i], s.busy[i+1:]...)
				break
			}
		}
	}
	s.mu.Unlock()
}

func (s *soak) replaceBusy(old, nk *key) {
	if old.Busy && nk != nil {
		s.mu.Lock()
		nk.Busy = true
		s.busy = append(s.busy, nk)
		s.mu.Unlock()
	}
}

// ---- load ----

var recipientsBody = func(n int) []byte {
	var to []string
	for i := range n {
		to = append(to, fmt.Sprintf(`{"email":"r%d-%d@example.net"}`, i, rand.IntN(1e6)))
	}
	return []byte(`{"personalizations":[{"to":[` + strings.Join(to, ",") +
		`]}],"from":{"email":"news@soak.example"},"subject":"soak","content":[{"type":"text/plain","value":"hello"}]}`)
}

type job struct {
	k      *key
	secret string
	ip     string
	kind   byte // 'g' good, 's' stopped, 'u' unknown
}

func (s *soak) load(stop chan struct{}) {
	jobs := make(chan job, 64)
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				s.send(j)
			}
		}()
	}
	t := time.NewTicker(time.Second / time.Duration(*rps))
	defer t.Stop()
	attacker := "198.51.100.66"
	for {
		select {
		case <-stop:
			close(jobs)
			wg.Wait()
			return
		case <-t.C:
		}
		var j job
		switch p := rand.IntN(100); {
		case p < 65:
			j = job{k: s.pick(true), kind: 'g'}
		case p < 85:
			j = job{k: s.pick(false), kind: 'g'}
		case p < 87: // a leaked busy key used from a botnet: a new address each time
			j = job{k: s.leaked(), kind: 'g',
				ip: fmt.Sprintf("172.%d.%d.%d", 16+rand.IntN(16), rand.IntN(256), 1+rand.IntN(254))}
		case p < 92:
			j = job{k: s.pickStopped(), kind: 's'}
		case p < 96 && len(s.unknown) > 0: // a botnet: each unknown key from a new address
			j = job{secret: s.unknown[rand.IntN(len(s.unknown))], kind: 'u',
				ip: fmt.Sprintf("%d.%d.%d.%d", 11+rand.IntN(100), rand.IntN(256), rand.IntN(256), 1+rand.IntN(254))}
		case len(s.unknown) > 0: // one misconfigured client behind one address
			j = job{secret: s.unknown[rand.IntN(len(s.unknown))], kind: 'u', ip: attacker}
		}
		if j.k != nil {
			j.secret = j.k.Secret
		}
		if j.secret == "" {
			continue
		}
		if j.ip == "" {
			j.ip = fmt.Sprintf("10.1.%d.%d", rand.IntN(2), 1+rand.IntN(250)) // ~500 client IPs
		}
		select {
		case jobs <- j:
		default:
			s.dropped.Add(1)
		}
	}
}

var codeRE = regexp.MustCompile(`"code"\s*:\s*"([a-z_]+)"`)

func (s *soak) send(j job) {
	n := 1 + rand.IntN(4)
	req, _ := http.NewRequest("POST", *gw+"/v3/mail/send", bytes.NewReader(recipientsBody(n)))
	req.Header.Set("Authorization", "Bearer "+j.secret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sendgrid/8.1.0;nodejs")
	req.Header.Set("X-Forwarded-For", j.ip)
	start := time.Now()
	resp, err := s.client.Do(req)
	s.sends.Add(1)
	if err != nil {
		s.unexpected.Add(1)
		log.Printf("send: %v", err)
		return
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	el := time.Since(start)
	s.latMu.Lock()
	s.lat = append(s.lat, el)
	s.latMu.Unlock()
	code := "ok"
	if resp.StatusCode/100 != 2 {
		code = "?"
		if m := codeRE.FindSubmatch(b); m != nil {
			code = string(m[1])
		}
	}
	c, _ := s.codes.LoadOrStore(code, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	switch {
	case resp.StatusCode == 202:
		s.ok2xx.Add(1)
		if j.k != nil {
			s.mu.Lock()
			j.k.Allowed++
			j.k.Recipients += int64(n)
			stopBy, why := j.k.StopBy, j.k.StopReason
			s.mu.Unlock()
			if !stopBy.IsZero() && start.After(stopBy) {
				s.violations.Add(1)
				log.Printf("VIOLATION: key %s (%s at %s) got through at %s", j.k.ID, why, stopBy.Format(time.StampMilli), start.Format(time.StampMilli))
			}
		}
		if j.kind == 'u' {
			s.violations.Add(1)
			log.Printf("VIOLATION: unknown key got through")
		}
	case j.kind == 'g' && code == "revoked_key", j.kind == 'g' && code == "disabled_key", j.kind == 'g' && code == "expired_key":
		s.denied.Add(1) // raced a revoke/disable/rotation this process made
	case j.kind == 'g':
		s.unexpected.Add(1)
		log.Printf("send with live key %s: %d %s", j.k.ID, resp.StatusCode, strings.TrimSpace(string(b)))
	default:
		s.bad.Add(1)
	}
}

// ---- churn ----

func (s *soak) adminChurn(stop chan struct{}) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		n++
		switch n % 6 {
		case 0:
			s.issue(fmt.Sprintf("soak-new-%d", n), false)
		case 1: // update an idle or busy key's settings
			if k := s.pick(n%12 == 1); k != nil {
				s.adminDo("PATCH", "/keygate/keys/"+k.ID, map[string]any{
					"name": fmt.Sprintf("soak-upd-%d", n), "max_recipients": 10 + n%5, "reason": "soak update"})
			}
		case 2: // rotate: the new key replaces the old, which ends after 5 s of grace
			if k := s.pick(n%12 == 2); k != nil {
				code, b := s.adminDo("POST", "/keygate/keys/"+k.ID+"/rotate", map[string]any{"grace": "5s", "reason": "soak rotate"})
				if code == 201 {
					var r struct{ ID, Key string }
					json.Unmarshal(b, &r)
					nk := &key{ID: r.ID, Secret: r.Key}
					s.mu.Lock()
					s.keys = append(s.keys, nk)
					s.byID[nk.ID] = nk
					s.mu.Unlock()
					s.replaceBusy(k, nk)
					// The grace ends 5 s after the rotation; a second more
					// for the clock of the answer.
					s.stopped(k, time.Now().Add(6*time.Second), "rotated, grace 5s")
				}
			}
		case 3: // revoke an idle key
			if k := s.pick(false); k != nil && !k.Busy {
				if code, _ := s.adminDo("POST", "/keygate/keys/"+k.ID+"/revoke", map[string]any{"reason": "soak revoke"}); code == 200 {
					s.stopped(k, time.Now(), "revoked (admin)")
				}
			}
		case 4: // disable a key, and enable it again next time round
			if k := s.pick(false); k != nil && !k.Busy {
				if code, _ := s.adminDo("PATCH", "/keygate/keys/"+k.ID, map[string]any{"disabled": true, "reason": "soak disable"}); code == 200 {
					s.mu.Lock()
					k.Disabled = true
					s.mu.Unlock()
					s.stopped(k, time.Now(), "disabled (admin)")
				}
			}
		case 5:
			s.mu.Lock()
			var d *key
			for _, k := range s.keys {
				if k.Disabled {
					d = k
					break
				}
			}
			s.mu.Unlock()
			if d != nil {
				// Live again only once the answer is in: until then a
				// refusal is expected and a pass is not a violation.
				s.mu.Lock()
				d.StopBy = time.Time{}
				s.mu.Unlock()
				if code, _ := s.adminDo("PATCH", "/keygate/keys/"+d.ID, map[string]any{"disabled": false, "reason": "soak enable"}); code == 200 {
					s.mu.Lock()
					d.Disabled = false
					s.mu.Unlock()
				}
			}
		}
	}
}

func (s *soak) cli(args ...string) ([]byte, error) {
	full := append([]string{"keys", "--store", *storeURI}, args...)
	full = append(full, "--json")
	cmd := exec.Command(*caddyBin, full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		s.cliFail.Add(1)
		log.Printf("caddy keys %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		return nil, err
	}
	s.cliOK.Add(1)
	return b, nil
}

func (s *soak) cliChurn(stop chan struct{}) {
	t := time.NewTicker(*cliEvery)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		n++
		switch n % 4 {
		case 0:
			b, err := s.cli("issue", "--name", fmt.Sprintf("soak-cli-%d", n), "--scope", "mail.send", "--owner", "team-cli", "--quota", "1000000/d")
			if err == nil {
				var r struct{ ID, Key string }
				json.Unmarshal(b, &r)
				k := &key{ID: r.ID, Secret: r.Key}
				s.mu.Lock()
				s.keys = append(s.keys, k)
				s.byID[k.ID] = k
				s.mu.Unlock()
			}
		case 1:
			if k := s.pick(false); k != nil && !k.Busy {
				if _, err := s.cli("revoke", k.ID, "--reason", "soak cli revoke"); err == nil {
					// another process: the gateway sees it within a second
					s.stopped(k, time.Now().Add(1500*time.Millisecond), "revoked (caddy keys)")
				}
			}
		case 2:
			if k := s.pick(true); k != nil {
				s.cli("update", k.ID, "--max-recipients", strconv.Itoa(20+n%5), "--reason", "soak cli update")
			}
		case 3:
			if k := s.pick(true); k != nil {
				s.cli("usage", k.ID)
			}
		}
	}
}

func (s *soak) reloader(stop chan struct{}) {
	if *caddyfile == "" {
		return
	}
	t := time.NewTicker(*reloadEvery)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		b, err := os.ReadFile(*caddyfile)
		if err != nil {
			log.Fatal(err)
		}
		c := string(b)
		if strings.Contains(c, "cache_ttl 30s") {
			c = strings.ReplaceAll(c, "cache_ttl 30s", "cache_ttl 31s")
		} else {
			c = strings.ReplaceAll(c, "cache_ttl 31s", "cache_ttl 30s")
		}
		os.WriteFile(*caddyfile, []byte(c), 0o644)
		cmd := exec.Command(*caddyBin, "reload", "--config", *caddyfile, "--adapter", "caddyfile", "--address", *admin)
		if o, err := cmd.CombinedOutput(); err != nil {
			s.reloadFail.Add(1)
			log.Printf("caddy reload: %v: %s", err, o)
		} else {
			s.reloads.Add(1)
		}
	}
}

func (s *soak) consoleLoads(stop chan struct{}) {
	if *consoleURL == "" {
		return
	}
	user, pass, _ := strings.Cut(*consoleUser, ":")
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		u := *consoleURL
		switch n % 4 {
		case 1:
			if k := s.pick(n%8 == 1); k != nil {
				u += "keys/" + k.ID
			}
		case 2:
			u += "review"
		case 3:
			u += "?q=soak-1&status=active"
		}
		req, _ := http.NewRequest("GET", u, nil)
		req.SetBasicAuth(user, pass)
		resp, err := s.client.Do(req)
		if err != nil {
			s.consoleFail.Add(1)
			log.Printf("console %s: %v", u, err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			s.consoleOK.Add(1)
		} else {
			s.consoleFail.Add(1)
			log.Printf("console %s: %d", u, resp.StatusCode)
		}
	}
}

func (s *soak) scrapeMetrics() string {
	resp, err := s.client.Get("http://" + *admin + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s.scrapes.Add(1)
	return string(b)
}

func (s *soak) scraper(stop chan struct{}) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if m := s.scrapeMetrics(); m != "" {
			s.lastMetrics.Store(m)
		}
	}
}

// ---- sampling ----

func metricValue(m, name string) float64 {
	var sum float64
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func series(m, prefix string) int {
	n := 0
	for _, l := range strings.Split(m, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") && strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

func procStat(pid int) (rssKB, cpuTicks int64, fds int) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				rssKB, _ = strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		cpuTicks = u + st
	}
	if e, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		fds = len(e)
	}
	return
}

func fileSize(p string) int64 {
	if fi, err := os.Stat(p); err == nil {
		return fi.Size()
	}
	return 0
}

// logLines counts the log's lines since offset by level and the messages of
// warn and error lines.
func logLines(path string, offset int64) (size int64, warn, errs int, msgs map[string]int) {
	msgs = map[string]int{}
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, msgs
	}
	defer f.Close()
	f.Seek(offset, io.SeekStart)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var l struct{ Level, Logger, Msg string }
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch l.Level {
		case "warn":
			warn++
		case "error":
			errs++
		default:
			continue
		}
		msg := l.Msg
		if len(msg) > 140 {
			msg = msg[:140]
		}
		msgs[l.Level+" "+l.Logger+": "+msg]++
	}
	size = fileSize(path)
	return
}

func (s *soak) sampler(done chan struct{}) {
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	hdr := "min,sends,ok,bad,unexp,viol,dropped,p50ms,p99ms,maxms,rssMB,heapMB,heapSysMB,goroutines,fds,cpu%,dbMB,walMB,rows,series,keyseries,known,backlog,logB/req,warn,err,reloads,admin,cli,console"
	fmt.Fprintln(f, hdr)
	fmt.Println(strings.ReplaceAll(hdr, ",", " "))
	var logOff int64
	if *logFile != "" {
		logOff = fileSize(*logFile)
	}
	_, cpu0, _ := procStat(*pidFlag)
	t0 := time.Now()
	last := t0
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	allMsgs := map[string]int{}
	for min := 1; ; min++ {
		final := false
		select {
		case <-t.C:
		case <-done:
			final = true
		}
		now := time.Now()
		s.latMu.Lock()
		lat := s.lat
		s.lat = nil
		s.latMu.Unlock()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		q := func(p float64) float64 {
			if len(lat) == 0 {
				return 0
			}
			return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
		}
		rss, cpu, fds := procStat(*pidFlag)
		cpuPct := float64(cpu-cpu0) / 100 / now.Sub(last).Seconds() * 100
		cpu0, last = cpu, now
		var vars struct {
			Memstats struct{ HeapAlloc, HeapSys uint64 }
		}
		if resp, err := s.client.Get("http://" + *admin + "/debug/vars"); err == nil {
			json.NewDecoder(resp.Body).Decode(&vars)
			resp.Body.Close()
		}
		m := s.scrapeMetrics()
		rows := "-"
		if *rowsCmd != "" {
			if o, err := exec.Command("sh", "-c", *rowsCmd).Output(); err == nil {
				rows = strings.Join(strings.Fields(string(o)), "/")
			}
		}
		var logB, warn, errs int
		if *logFile != "" {
			size, w, e, msgs := logLines(*logFile, logOff)
			logB, warn, errs = int(size-logOff), w, e
			logOff = size
			for k, v := range msgs {
				if allMsgs[k] == 0 {
					log.Printf("new log line: %s", k)
				}
				allMsgs[k] += v
			}
		}
		sends := s.sends.Swap(0)
		perReq := 0
		if sends > 0 {
			perReq = logB / int(sends)
		}
		row := []string{
			strconv.Itoa(min), strconv.FormatInt(sends, 10), strconv.FormatInt(s.ok2xx.Swap(0), 10),
			strconv.FormatInt(s.bad.Swap(0), 10), strconv.FormatInt(s.unexpected.Swap(0), 10),
			strconv.FormatInt(s.violations.Load(), 10), strconv.FormatInt(s.dropped.Swap(0), 10),
			fmt.Sprintf("%.1f", q(.5)), fmt.Sprintf("%.1f", q(.99)), fmt.Sprintf("%.0f", q(1)),
			fmt.Sprintf("%.0f", float64(rss)/1024), fmt.Sprintf("%.0f", float64(vars.Memstats.HeapAlloc)/(1<<20)),
			fmt.Sprintf("%.0f", float64(vars.Memstats.HeapSys)/(1<<20)),
			fmt.Sprintf("%.0f", metricValue(m, "go_goroutines")), strconv.Itoa(fds), fmt.Sprintf("%.0f", cpuPct),
			fmt.Sprintf("%.1f", float64(fileSize(*dbFile))/(1<<20)), fmt.Sprintf("%.1f", float64(fileSize(*dbFile+"-wal"))/(1<<20)),
			rows, strconv.Itoa(series(m, "")), strconv.Itoa(series(m, "keygate_key_requests_total")),
			fmt.Sprintf("%.0f", metricValue(m, "keygate_known_digests")), fmt.Sprintf("%.0f", metricValue(m, "keygate_usage_backlog")),
			strconv.Itoa(perReq), strconv.Itoa(warn), strconv.Itoa(errs),
			fmt.Sprintf("%d/%d", s.reloads.Load(), s.reloadFail.Load()),
			fmt.Sprintf("%d/%d", s.adminOK.Load(), s.adminFail.Load()),
			fmt.Sprintf("%d/%d", s.cliOK.Load(), s.cliFail.Load()),
			fmt.Sprintf("%d/%d", s.consoleOK.Load(), s.consoleFail.Load()),
		}
		fmt.Fprintln(f, strings.Join(row, ","))
		fmt.Println(strings.Join(row, " "))
		if final {
			var codes []string
			s.codes.Range(func(k, v any) bool {
				codes = append(codes, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
				return true
			})
			sort.Strings(codes)
			log.Printf("answers: %s", strings.Join(codes, " "))
			for k, v := range allMsgs {
				log.Printf("log: %6d × %s", v, k)
			}
			log.Printf("keygate metrics at the end:\n%s", grepLines(m, "keygate_requests_total", "keygate_cache", "keygate_store_queries", "keygate_unknown", "keygate_limiter", "keygate_usage_flush_errors", "keygate_store_errors"))
			return
		}
	}
}

func grepLines(m string, prefixes ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(m, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}

// ---- the end ----

type usage struct {
	Allowed    int64
	Recipients int64
}

func (s *soak) usageOf(id string) (usage, bool) {
	code, b := s.adminDo("GET", "/keygate/keys/"+id+"/usage", nil)
	var u usage
	return u, code == 200 && json.Unmarshal(b, &u) == nil
}

func (s *soak) check() {
	m := s.scrapeMetrics()
	perKey := map[string]int64{}
	re := regexp.MustCompile(`keygate_key_requests_total\{([^}]*)\} (\S+)`)
	for _, mm := range re.FindAllStringSubmatch(m, -1) {
		if !strings.Contains(mm[1], `decision="allowed"`) {
			continue
		}
		id := regexp.MustCompile(`key_id="([^"]+)"`).FindStringSubmatch(mm[1])
		v, _ := strconv.ParseFloat(mm[2], 64)
		if id != nil {
			perKey[id[1]] += int64(v)
		}
	}
	s.mu.Lock()
	keys := append([]*key(nil), s.keys...)
	s.mu.Unlock()
	var used, badUsage, badMetric, cliChecked, badCLI int
	var sumAllowed, sumRecip int64
	for _, k := range keys {
		sumAllowed += k.Allowed
		sumRecip += k.Recipients
		if k.Allowed == 0 {
			continue
		}
		used++
		u, ok := s.usageOf(k.ID)
		if !ok || u.Allowed != k.Allowed || u.Recipients != k.Recipients {
			badUsage++
			log.Printf("MISMATCH usage %s: sent %d/%d recipients, store says %d/%d", k.ID, k.Allowed, k.Recipients, u.Allowed, u.Recipients)
		}
		if len(perKey) > 0 && perKey[k.ID] != k.Allowed {
			badMetric++
			log.Printf("MISMATCH metrics %s: sent %d, keygate_key_requests_total allowed %d", k.ID, k.Allowed, perKey[k.ID])
		}
		if k.Busy && cliChecked < 10 {
			cliChecked++
			b, err := s.cli("usage", k.ID)
			var cu usage
			if err != nil || json.Unmarshal(b, &cu) != nil || cu != (usage{k.Allowed, k.Recipients}) {
				badCLI++
				log.Printf("MISMATCH caddy keys usage %s: sent %d/%d, CLI says %d/%d", k.ID, k.Allowed, k.Recipients, cu.Allowed, cu.Recipients)
			}
		}
	}
	log.Printf("end: %d keys, %d used, %d allowed sends, %d recipients; usage mismatches %d, per-key metric mismatches %d, caddy keys usage mismatches %d of %d; violations %d",
		len(keys), used, sumAllowed, sumRecip, badUsage, badMetric, badCLI, cliChecked, s.violations.Load())
	log.Printf("keygate_requests_total allowed on /metrics: %.0f (this process since start)", metricValueLabel(m, "keygate_requests_total", `decision="allowed"`))
	b, _ := json.Marshal(keys)
	if err := os.WriteFile(*stateFile, b, 0o600); err != nil {
		log.Fatal(err)
	}
	log.Printf("state written to %s", filepath.Clean(*stateFile))
}

func metricValueLabel(m, name, label string) float64 {
	var sum float64
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, name+"{") && strings.Contains(l, label) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func (s *soak) verifyState(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	var keys []*key
	if err := json.Unmarshal(b, &keys); err != nil {
		log.Fatal(err)
	}
	var bad, checked, stoppedRefused, liveOK int
	for _, k := range keys {
		if k.Allowed > 0 {
			checked++
			if u, ok := s.usageOf(k.ID); !ok || u.Allowed != k.Allowed || u.Recipients != k.Recipients {
				bad++
				log.Printf("MISMATCH after restart %s: sent %d/%d, store says %d/%d", k.ID, k.Allowed, k.Recipients, u.Allowed, u.Recipients)
			}
		}
	}
	// one send with a few stopped and a few live keys: refused / taken
	for _, k := range keys {
		if stoppedRefused+liveOK >= 40 {
			break
		}
		stopped := !k.StopBy.IsZero()
		req, _ := http.NewRequest("POST", *gw+"/v3/mail/send", bytes.NewReader(recipientsBody(1)))
		req.Header.Set("Authorization", "Bearer "+k.Secret)
		resp, err := s.client.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case stopped && resp.StatusCode == 202:
			bad++
			log.Printf("VIOLATION after restart: %s (%s) got through", k.ID, k.StopReason)
		case stopped:
			stoppedRefused++
		case resp.StatusCode == 202:
			liveOK++
		default:
			bad++
			log.Printf("live key %s after restart: %d", k.ID, resp.StatusCode)
		}
	}
	log.Printf("verify: %d used keys' usage checked, %d stopped keys refused, %d live keys taken, %d problems", checked, stoppedRefused, liveOK, bad)
	if bad > 0 {
		os.Exit(1)
	}
}
