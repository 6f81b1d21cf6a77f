package keygate

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/caddy-keygate/internal/benchbody"
)

func init() {
	caddy.RegisterModule(benchUpstream{})
	httpcaddyfile.RegisterHandlerDirective("bench_upstream", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		return benchUpstream{}, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("bench_upstream", httpcaddyfile.After, "reverse_proxy")
}

// benchUpstream stands in for reverse_proxy and the provider in
// BenchmarkHotPathServer: it reads the request body, as reverse_proxy does to
// send it upstream, and answers with what reverse_proxy would copy from the
// provider of the path (benchbody.AnswerFor, which bench/upstream serves):
// its headers and body, the Date its net/http adds, and reverse_proxy's Via.
type benchUpstream struct{}

func (benchUpstream) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.bench_upstream", New: func() caddy.Module { return benchUpstream{} }}
}

var benchDate, benchVia = []string{"Mon, 30 Nov 2026 21:18:31 GMT"}, []string{"1.1 Caddy"}

func (benchUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
	}
	h := w.Header()
	h["Date"], h["Via"] = benchDate, benchVia
	benchbody.AnswerFor(r.URL.Path).Serve(w)
	return nil
}

// BenchmarkHotPathServer is what a request pays inside a real
// caddyhttp.Server, where BenchmarkHotPath measures keygate's ServeHTTP
// alone: the server's own per-request work (replacer, vars, the request clone
// for its error log, the route's host matcher and subroute), keygate, and a
// no-op upstream that reads the body. Each case runs with keygate
// ("keygate…") and without it ("plain…") on the same body, so the difference
// is what keygate adds to a request in Caddy. Caddy is loaded from a
// Caddyfile as an operator writes it; the server's ServeHTTP is called
// directly (no sockets, no HTTP parsing, no upstream round trip, which cost
// both variants the same). Default log level (INFO), log output discarded.
func BenchmarkHotPathServer(b *testing.B) {
	quietBackground(b)
	dir := b.TempDir()
	storeURI := "sqlite:" + filepath.Join(dir, "keys.db")
	ports := map[string]int{"plain": 18901, "keygate": 18902, "sendgrid": 18903, "mailgun": 18904, "postmark": 18905, "sendgrid-quota": 18906}
	site := func(name, keygate string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n%s\n\tbench_upstream\n}\n", ports[name], keygate)
	}
	kg := func(opts string) string {
		return "\tkeygate {\n\t\tstore " + storeURI + "\n\t\trate 1000000000/s\n\t\tcache_ttl 1h\n" + opts + "\t}"
	}
	cfg := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tauto_https off\n\tstorage file_system %s\n\tlog {\n\t\toutput discard\n\t}\n}\n", filepath.Join(dir, "data")) +
		site("plain", "") +
		site("keygate", kg("\t\tscope mail.send POST /v3/mail/send\n")) +
		site("sendgrid", kg("\t\tmail_api sendgrid\n\t\tscope mail.send POST /v3/mail/send\n")) +
		site("mailgun", kg("\t\tmail_api mailgun\n\t\tscope mail.send POST /v3/*/messages\n")) +
		site("postmark", kg("\t\tmail_api postmark\n\t\tscope mail.send POST /email*\n")) +
		site("sendgrid-quota", kg("\t\tmail_api sendgrid\n\t\tscope mail.send POST /v3/mail/send\n\t\tquota 1000000000/d\n"))
	servers := loadCaddy(b, cfg)
	server := func(name string) *caddyhttp.Server {
		for _, s := range servers {
			for _, l := range s.Listen {
				if strings.HasSuffix(l, fmt.Sprint(":", ports[name])) {
					return s
				}
			}
		}
		b.Fatalf("no server listens on %d", ports[name])
		return nil
	}

	var be *backend
	backends.Range(func(_, v any) bool { be = v.(*backend); return false })
	_, key := issue(b, be.store, "mail.send")
	if err := be.verifier.Sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	dialectOf := map[string]string{"sendgrid": "sendgrid", "mailgun": "mailgun", "postmark": "postmark"}

	cases := []struct {
		name string
		body benchbody.Body
	}{{name: "keygate"}}
	for _, n := range benchbody.Names {
		cases = append(cases, struct {
			name string
			body benchbody.Body
		}{name: n, body: benchbody.Get(n)})
	}
	for _, c := range cases {
		for _, variant := range []string{"plain", "keygate"} {
			srv := server("plain")
			if variant == "keygate" {
				srv = server("keygate")
				if c.body.Name != "" {
					srv = server(dialectOf[strings.SplitN(c.name, "-", 2)[0]])
				}
			}
			name := variant
			if c.body.Name != "" {
				name += "-" + c.body.Name
			}
			b.Run(name, func(b *testing.B) {
				benchServer(b, srv, be, c.body, variant == "keygate", key)
			})
		}
	}
	// The 2 KB send again on a route with a recipient quota (one node's
	// counters): against keygate-sendgrid-2k, what counting the quota adds.
	b.Run("keygate-quota-sendgrid-2k", func(b *testing.B) {
		benchServer(b, server("sendgrid-quota"), be, benchbody.Get("sendgrid-2k"), true, key)
	})
}

// quietBackground lengthens the backend's change-log poll and usage flush
// when KEYGATE_BENCH_QUIET=1 (bench/instr.sh sets it): under callgrind a
// benchmark runs ~50x slower, so the 200ms poll would add its work to every
// operation and make the instruction counts of two runs differ by chance.
func quietBackground(tb testing.TB) {
	if os.Getenv("KEYGATE_BENCH_QUIET") != "1" {
		return
	}
	flush, poll := usageFlushInterval, verifierPollInterval
	usageFlushInterval, verifierPollInterval = time.Hour, time.Hour
	tb.Cleanup(func() { usageFlushInterval, verifierPollInterval = flush, poll })
}

// benchServer sends b.N requests to srv through its ServeHTTP, each a fresh
// request prepared outside the timer, as net/http would hand it over, with
// a response writer of its own whose header map is new and empty, as
// net/http makes one for each request (so a response with more headers
// pays for the map's growth, as it does in a server).
func benchServer(b *testing.B, srv *caddyhttp.Server, be *backend, body benchbody.Body, auth bool, key string) {
	path, ctype := "/v3/mail/send", ""
	if body.Name != "" {
		path, ctype = body.Path, body.ContentType
	}
	const batch = 256
	reqs := make([]*http.Request, batch)
	readers := make([]bytes.Reader, batch)
	writers := make([]benchWriter, batch)
	prepare := func() {
		for i := range reqs {
			writers[i] = benchWriter{h: make(http.Header)}
			r := httptest.NewRequest("POST", path, nil)
			r.RemoteAddr = "127.0.0.1:40000"
			r.Host = "127.0.0.1"
			r.Header = http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}}
			if auth {
				r.Header["Authorization"] = []string{"Bearer " + key}
			}
			if body.Name != "" {
				readers[i].Reset(body.Data)
				r.Body = io.NopCloser(&readers[i])
				r.ContentLength = int64(len(body.Data))
				r.Header["Content-Type"] = []string{ctype}
				r.Header["Content-Length"] = []string{fmt.Sprint(len(body.Data))}
			}
			reqs[i] = r
		}
	}
	want := benchbody.AnswerFor(path).Status
	prepare()
	srv.ServeHTTP(&writers[0], reqs[0])
	if writers[0].status != want {
		b.Fatalf("warm-up request answered %d", writers[0].status)
	}
	time.Sleep(50 * time.Millisecond) // let the cache's asynchronous set land
	queries := be.verifier.Stats().StoreQueries
	if body.Name != "" {
		b.SetBytes(int64(len(body.Data)))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			prepare()
			b.StartTimer()
		}
		w := &writers[i%batch]
		srv.ServeHTTP(w, reqs[i%batch])
		if w.status != want {
			b.Fatalf("request %d answered %d", i, w.status)
		}
	}
	b.StopTimer()
	if got := be.verifier.Stats().StoreQueries; got != queries {
		b.Errorf("%d store queries during the benchmark: the hot path is not served from the cache", got-queries)
	}
}

// benchWriter is a ResponseWriter that keeps only the status. Like
// net/http's, it lets http.ResponseController set deadlines and flush.
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header              { return w.h }
func (w *benchWriter) Write(p []byte) (int, error)      { return len(p), nil }
func (w *benchWriter) WriteHeader(code int)             { w.status = code }
func (w *benchWriter) FlushError() error                { return nil }
func (w *benchWriter) SetReadDeadline(time.Time) error  { return nil }
func (w *benchWriter) SetWriteDeadline(time.Time) error { return nil }

// loadCaddy runs a Caddyfile config in this process and returns its HTTP
// servers; Caddy stops when the benchmark ends.
func loadCaddy(tb testing.TB, cfg string) []*caddyhttp.Server {
	tb.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	js, warnings, err := adapter.Adapt([]byte(cfg), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		tb.Fatalf("adapting the benchmark's Caddyfile: %v\n%s", err, cfg)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "not formatted") {
			tb.Logf("Caddyfile: %s", w.Message)
		}
	}
	if err := caddy.Load(js, true); err != nil {
		tb.Fatalf("loading the benchmark's config: %v", err)
	}
	tb.Cleanup(func() { caddy.Stop() })
	app, err := caddy.ActiveContext().App("http")
	if err != nil {
		tb.Fatal(err)
	}
	var out []*caddyhttp.Server
	for _, s := range app.(*caddyhttp.App).Servers {
		out = append(out, s)
	}
	return out
}

var _ caddyhttp.MiddlewareHandler = benchUpstream{}
