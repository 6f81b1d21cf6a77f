package keygate_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	keygate "github.com/keygate/caddy-keygate"
)

var update = flag.Bool("update", false, "rewrite golden files")

func adapt(t *testing.T, src string) ([]byte, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, _, err := adapter.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	return out, err
}

// TestCaddyfileGolden adapts every testdata/caddyfile/*.caddyfile and
// compares the JSON with the .json beside it (go test -update rewrites).
func TestCaddyfileGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/caddyfile/*.caddyfile")
	if len(files) == 0 {
		t.Fatal("no golden Caddyfiles")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := adapt(t, string(src))
			if err != nil {
				t.Fatal(err)
			}
			var pretty bytes.Buffer
			json.Indent(&pretty, out, "", "\t")
			pretty.WriteByte('\n')
			golden := strings.TrimSuffix(f, ".caddyfile") + ".json"
			if *update {
				os.WriteFile(golden, pretty.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("adapted config differs from %s:\n%s", golden, pretty.String())
			}
		})
	}
}

func TestCaddyfileOrderedBeforeReverseProxyWithoutOrderOption(t *testing.T) {
	out, err := adapt(t, ":8080 {\n\treverse_proxy 127.0.0.1:9000\n\tkeygate\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if k, r := strings.Index(s, `"handler":"keygate"`), strings.Index(s, `"handler":"reverse_proxy"`); k < 0 || r < 0 || k > r {
		t.Fatalf("keygate is not ordered before reverse_proxy: %s", s)
	}
}

// keygate runs before basic auth whichever spelling the site uses: Caddy
// 2.11 still takes its deprecated basicauth, ordered right before
// basic_auth, and keygate (ordered before basic_auth) ran after it, so
// renaming it as Caddy's warning asks moved keygate.
func TestKeygateRunsBeforeBasicAuthWhicheverItsSpelling(t *testing.T) {
	for _, directive := range []string{"basic_auth", "basicauth"} {
		t.Run(directive, func(t *testing.T) {
			out, err := adapt(t, ":8080 {\n\t"+directive+" /console/* {\n\t\tann $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG\n\t}\n"+
				"\tkeygate\n\treverse_proxy 127.0.0.1:9000\n}\n")
			if err != nil {
				t.Fatal(err)
			}
			s := string(out)
			if k, a := strings.Index(s, `"handler":"keygate"`), strings.Index(s, `"handler":"authentication"`); k < 0 || a < 0 || k > a {
				t.Fatalf("keygate is not ordered before %s: %s", directive, s)
			}
		})
	}
}

// keygate's place among the directives holds in a site, in handle and in
// handle_path alike, and the global order option moves it in each, as it
// moves Caddy's own directives (docs/caddyfile.md).
func TestTheOrderOptionMovesKeygateInEverySite(t *testing.T) {
	// forward_auth is a reverse_proxy to its auth service, which the rewrite
	// to its uri tells apart from the provider's.
	const body = "keygate\n\treverse_proxy 127.0.0.1:9000\n\tforward_auth 127.0.0.1:9091 {\n\t\turi /api/verify\n\t}\n"
	blocks := map[string]string{
		"site":        ":8080 {\n\t" + body + "}\n",
		"handle":      ":8080 {\n\thandle /v3/* {\n\t" + body + "}\n}\n",
		"handle_path": ":8080 {\n\thandle_path /api/* {\n\t" + body + "}\n}\n",
	}
	for _, tc := range []struct {
		name, global     string
		afterForwardAuth bool
	}{
		{"without an order option keygate runs first", "", false},
		{"order keygate after forward_auth runs it after forward_auth", "{\n\torder keygate after forward_auth\n}\n", true},
	} {
		for where, block := range blocks {
			t.Run(tc.name+" in a "+where, func(t *testing.T) {
				out, err := adapt(t, tc.global+block)
				if err != nil {
					t.Fatal(err)
				}
				s := string(out)
				k := strings.Index(s, `"handler":"keygate"`)
				auth := strings.Index(s, `"uri":"/api/verify"`)
				proxy := strings.LastIndex(s, `"handler":"reverse_proxy"`)
				if k < 0 || auth < 0 || k > proxy || (k > auth) != tc.afterForwardAuth {
					t.Fatalf("keygate at %d, forward_auth at %d, the provider's reverse_proxy at %d: %s", k, auth, proxy, s)
				}
			})
		}
	}
}

func TestCaddyfileErrorsNameLineAndValue(t *testing.T) {
	cases := []struct {
		name, option, want string
	}{
		{"unknown option", "colour blue", `unknown option "colour"`},
		{"bad env", "env prod", `env "prod"`},
		{"bad rate unit", "rate 10/w", `unit "w"`},
		{"bad rate count", "rate ten/m", `"ten"`},
		{"burst without number", "rate 10/m burst x", `burst "x"`},
		{"bad method", "scope mail.send PUTT /v3/mail/send", `method "PUTT" is not an HTTP method`},
		{"scope without path", "scope mail.send", `scope: want <name> [<METHOD>] <path>`},
		{"scope with a method and no path", "scope mail.send POST", `path "POST" must start with / or *`},
		{"scope with a path and a stray word", "scope mail.send /x extra", `scope "mail.send": want <name> [<METHOD>] <path>, got "/x extra"`},
		{"bad method keeps its spelling", "scope mail.send Putt /x", `method "Putt" is not an HTTP method`},
		{"an empty method is no method", `scope mail.send "" /x`, `scope "mail.send": method "" is not an HTTP method`},
		{"bad scope name", "scope Mail!Send /x", `scope "Mail!Send"`},
		{"bad prefix", "prefix K", `prefix "K"`},
		{"an empty key_header", `key_header ""`, `key_header "" is not a header name`},
		{"a key_header with a character no header name has", "key_header X-Api(Key)", `key_header "X-Api(Key)" is not a header name`},
		{"bad cache_ttl", "cache_ttl soon", `cache_ttl "soon"`},
		{"bad mail_api", "mail_api pigeon", `mail_api "pigeon"`},
		{"bad quota", "quota 10/w", `unit "w"`},
		{"bad max_body", "max_body huge", `max_body "huge"`},
		{"max_body past its bound names the bound in GiB", "max_body 1.1GB", `max_body "1.1GB" is not a size between 1B and 1GiB (1,073,741,824 bytes`},
		{"bad store", "store mysql://x", `mysql://x: unknown scheme "mysql"`},
		{"a store that is not a URI hides its password", "store \"host=db password=hunter2\"", `password=xxxxx: not a URI`},
		{"ratelimit without redis", "ratelimit memcached x", `ratelimit: want redis <url>`},
		{"two values", "whoami /a /b", `whoami: want exactly one value`},
		{"access_log_filtered with a value", "access_log_filtered yes", `access_log_filtered takes no value, got "yes"`},
		{"a block after a scope line", "scope mail.send POST /v3/mail/send {\n\t\t}", `keygate: scope takes no block`},
		{"unknown metrics mode", "metrics per_host", `metrics "per_host": want per_key`},
		{"usage_retention not a duration", "usage_retention forever", `usage_retention "forever": want a duration such as 400d, or off`},
		{"usage_retention too long to represent", "usage_retention 9999999999d", `usage_retention "9999999999d": want a duration such as 400d, or off`},
		{"usage_retention shorter than a quota month", "usage_retention 7d", `usage_retention "7d": want at least 32d`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := ":8080 {\n\tkeygate {\n\t\t" + tc.option + "\n\t}\n}\n"
			_, err := adapt(t, src)
			if err == nil {
				t.Fatalf("no error for %q", tc.option)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Caddyfile:3") {
				t.Errorf("error %q should contain %q and the line Caddyfile:3", err, tc.want)
			}
		})
	}
}

func TestCaddyfileNamesAScopeLineThatNeverDecides(t *testing.T) {
	src := ":8080 {\n\tkeygate {\n\t\tscope templates.read /v3*\n\t\tscope mail.send POST /v3/mail/send\n\t}\n}\n"
	_, err := adapt(t, src)
	want := "scope mail.send POST /v3/mail/send never decides: scope templates.read /v3*, before it, matches every request it does"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Caddyfile:4") {
		t.Errorf("%v, want an error at Caddyfile:4 saying %q", err, want)
	}
}

// TestCaddyfileNamesTheLineOfAClashBetweenOptions: options that are each
// fine but clash together are refused as the Caddyfile is read, at the line
// that makes the clash, not only when the config is provisioned (where the
// error named neither the file nor the line).
func TestCaddyfileNamesTheLineOfAClashBetweenOptions(t *testing.T) {
	for _, tc := range []struct {
		name, first, second, want string
	}{
		{"whoami then the mail_api sending there", "whoami /v3/mail/send", "mail_api sendgrid",
			"whoami /v3/mail/send is a path mail_api sendgrid sends mail at"},
		{"mail_api then a whoami where it sends", "mail_api postmark", "whoami /email/batch",
			"whoami /email/batch is a path mail_api postmark sends mail at"},
		{"whoami then a scope line's exact path", "whoami /v3/x", "scope s POST /v3/x",
			"whoami /v3/x is the path of scope s POST /v3/x"},
		{"a scope line then a whoami at its path", "scope s /v3/x", "whoami /v3/x",
			"whoami /v3/x is the path of scope s /v3/x"},
		{"redis cluster then sentinel", "ratelimit redis redis://h:1 {\n\t\t\tcluster", "\tsentinel mymaster\n\t\t}",
			"cluster and sentinel are two kinds of Redis: name one"},
		{"redis sentinel then cluster", "ratelimit redis redis://h:1 {\n\t\t\tsentinel mymaster", "\tcluster\n\t\t}",
			"cluster and sentinel are two kinds of Redis: name one"},
		{"tls_cert without tls_key", "ratelimit redis rediss://h:1 {\n\t\t\ttls_ca /ca.pem", "\ttls_cert /c.pem\n\t\t}",
			"keygate: ratelimit redis: tls_cert without tls_key: tls_cert and tls_key go together"},
		{"tls_key without tls_cert", "ratelimit redis rediss://h:1 {\n\t\t\ttls_server_name r", "\ttls_key /k.pem\n\t\t}",
			"keygate: ratelimit redis: tls_key without tls_cert: tls_cert and tls_key go together"},
		// As access_log_filtered says it (until session 37 Caddy's "wrong
		// argument count or unexpected line ending after 'yes'").
		{"exact with a value", "ratelimit redis redis://h:1 {\n\t\t\ttimeout 1s", "\texact yes\n\t\t}",
			`keygate: ratelimit redis: exact takes no value, got "yes"`},
		{"cluster with a value", "ratelimit redis redis://h:1 {\n\t\t\ttimeout 1s", "\tcluster on\n\t\t}",
			`keygate: ratelimit redis: cluster takes no value, got "on"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := ":8080 {\n\tkeygate {\n\t\t" + tc.first + "\n\t\t" + tc.second + "\n\t}\n}\n"
			line := "Caddyfile:" + strconv.Itoa(strings.Count(src[:strings.Index(src, tc.second)], "\n")+1)
			_, err := adapt(t, src)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), ", at "+line) {
				t.Errorf("%q: error %v, want %q at %s", src, err, tc.want, line)
			}
		})
	}
}

func TestCaddyfileRateLimitRedisOptions(t *testing.T) {
	out, err := adapt(t, ":8080 {\n\tkeygate {\n\t\tratelimit redis redis://h:1/0 {\n\t\t\texact\n\t\t}\n\t}\n}\n")
	if err != nil || !strings.Contains(string(out), `"ratelimit_exact":true`) {
		t.Errorf("ratelimit redis with exact: %s, %v; want ratelimit_exact", out, err)
	}
	out, err = adapt(t, ":8080 {\n\tkeygate {\n\t\tratelimit redis redis://h:1/0\n\t}\n}\n")
	if err != nil || strings.Contains(string(out), `ratelimit_exact`) {
		t.Errorf("ratelimit redis without a block: %s, %v; want leases (no ratelimit_exact)", out, err)
	}
	out, err = adapt(t, ":8080 {\n\tkeygate {\n\t\tratelimit redis rediss://h:1/0 {\n\t\t\tcluster\n\t\t\ttimeout 250ms\n\t\t\ttls_ca /etc/ca.pem\n"+
		"\t\t\ttls_cert /etc/c.pem\n\t\t\ttls_key /etc/k.pem\n\t\t\ttls_server_name redis.internal\n\t\t}\n\t}\n}\n")
	if want := `"ratelimit_redis_cluster":true,"ratelimit_redis_timeout":250000000,"ratelimit_redis_tls":{"ca":"/etc/ca.pem","cert":"/etc/c.pem","key":"/etc/k.pem","server_name":"redis.internal"}`; err != nil || !strings.Contains(string(out), want) {
		t.Errorf("ratelimit redis with tls and timeout: %s, %v; want %s", out, err, want)
	}
	out, err = adapt(t, ":8080 {\n\tkeygate {\n\t\tratelimit redis redis://sentinel:26379 {\n\t\t\tsentinel mymaster\n\t\t}\n\t}\n}\n")
	if err != nil || !strings.Contains(string(out), `"ratelimit_redis_sentinel":"mymaster"`) {
		t.Errorf("ratelimit redis with sentinel: %s, %v; want ratelimit_redis_sentinel", out, err)
	}
	block := func(lines string) string {
		return ":8080 {\n\tkeygate {\n\t\tratelimit redis redis://h:1/0 {\n\t\t\t" + lines + "\n\t\t}\n\t}\n}\n"
	}
	for src, want := range map[string]string{
		block("fast"):       `keygate: ratelimit redis: unknown option "fast" (want exact, cluster, sentinel, timeout, tls_ca, tls_cert, tls_key or tls_server_name), at Caddyfile:4`,
		block("exact yes"):  `Caddyfile:4`,
		block("timeout 1h"): `timeout "1h" is not a duration between 1ms and 10s (e.g. 250ms), at Caddyfile:4`,
		block("timeout"):    `timeout: want exactly one value, got 0, at Caddyfile:4`,
		block("tls_ca /x"):  `tls_ca needs a rediss:// URL, at Caddyfile:4`,
	} {
		if _, err := adapt(t, src); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", src, err, want)
		}
	}
}

// FuzzCaddyfile feeds arbitrary option lines to the keygate directive: the
// adapter must return a config or an error, never panic.
func FuzzCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"rate 10/m burst 5", "scope mail.send POST /v3/mail/send", "store sqlite:/x.db", "env live",
		"cache_ttl 1m", "max_body 5MB", "quota 10/mo", "ratelimit redis redis://h:1/0", "key_header X-Api-Key",
		"whoami /w", "mail_api sendgrid", "failed_auth_limit 3/s", "prefix acme", "rate 1/x burst", "metrics per_key", "access_log_filtered",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, option string) {
		src := ":8080 {\n\tkeygate {\n\t\t" + option + "\n\t}\n}\n"
		adapter := caddyconfig.GetAdapter("caddyfile")
		_, _, _ = adapter.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	})
}

// validate adapts a Caddyfile and provisions it as `caddy validate` does.
func validate(t *testing.T, src string) error {
	t.Helper()
	out, err := adapt(t, src)
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	return caddy.Validate(&cfg)
}

// TestAccessLogThatWritesKeyHeadersIsRefused: Caddy's access log writes
// every request header but Authorization as the client sent it, so a
// server with an access log and keys arriving in such a header is refused
// at load, naming the headers and the lines that fix it, unless the keygate
// block says access_log_filtered.
func TestAccessLogThatWritesKeyHeadersIsRefused(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", dir)
	logFile := filepath.Join(dir, "access.log")
	siteLog := "\tlog {\n\t\toutput file " + logFile + "\n\t}\n"
	gateway := func(log, options string) string {
		return "{\n\tadmin off\n}\nhttp://a.localhost:8080 {\n" + log + "\tkeygate {\n\t\tstore sqlite:" + filepath.Join(dir, "keys.db") +
			"\n" + options + "\t}\n\treverse_proxy 127.0.0.1:9\n}\n"
	}
	cases := []struct {
		name, src string
		want      []string // all in the refusal; none: accepted
	}{
		{"a key_header on a site with a log", gateway(siteLog, "\t\tkey_header x-api-key\n"), []string{
			"X-Api-Key (key_header)", "this server has an access log",
			"\tlog {\n\t\tformat filter {\n\t\t\trequest>headers>X-Api-Key delete\n\t\t}\n\t}\n",
			"\taccess_log_filtered\n", `"access_log_filtered": true`, `"wrap <name>"`}},
		{"Postmark's headers on a site with a log", gateway(siteLog, "\t\tmail_api postmark\n"), []string{
			"X-Postmark-Server-Token (mail_api postmark), X-Postmark-Account-Token (mail_api postmark)",
			"\t\t\trequest>headers>X-Postmark-Server-Token delete\n\t\t\trequest>headers>X-Postmark-Account-Token delete\n"}},
		{"Brevo's header on a site with a log", gateway(siteLog, "\t\tmail_api brevo\n"), []string{"Api-Key (mail_api brevo)"}},
		{"a key_header and a dialect header, each once", gateway(siteLog, "\t\tkey_header Api-Key\n\t\tkey_header X-Api-Key\n\t\tmail_api brevo\n"), []string{
			"Api-Key (key_header), X-Api-Key (key_header);",
			"\t\t\trequest>headers>Api-Key delete\n\t\t\trequest>headers>X-Api-Key delete\n\t\t}"}},
		{"a log on another site of the same address", strings.Replace(gateway("", "\t\tkey_header X-Api-Key\n"), "http://a", "http://b.localhost:8080 {\n"+siteLog+"\trespond ok\n}\nhttp://a", 1),
			[]string{"X-Api-Key (key_header)"}},
		{"log_credentials writes Authorization to the log", strings.Replace(gateway("", ""), "admin off", "admin off\n\tservers {\n\t\tlog_credentials\n\t}", 1),
			[]string{"Authorization (log_credentials)", "request>headers>Authorization delete"}},
		{"a key_header on a site without a log", gateway("", "\t\tkey_header X-Api-Key\n"), nil},
		{"only Authorization: Bearer on a site with a log", gateway(siteLog, "\t\tmail_api sendgrid\n"), nil},
		{"access_log_filtered confirms the filter", gateway(siteLog, "\t\tkey_header X-Api-Key\n\t\tmail_api postmark\n\t\taccess_log_filtered\n"), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(t, tc.src)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != nil && err == nil:
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the refusal lacks %q:\n%v", w, err)
				}
			}
		})
	}

	t.Run("the printed lines are the fix", func(t *testing.T) {
		src := gateway(siteLog, "\t\tkey_header X-Api-Key\n\t\tmail_api postmark\n")
		err := validate(t, src)
		if err == nil {
			t.Fatal("accepted")
		}
		// An operator merges the printed log block into the site's and
		// adds the printed option line to the keygate block.
		parts := strings.Split(err.Error(), "\n\n")
		if len(parts) < 4 {
			t.Fatalf("want the log block and the option as paragraphs of their own:\n%v", err)
		}
		block, option := parts[1], parts[3]
		fixed := strings.Replace(src, siteLog, strings.Replace(block+"\n", "\tlog {\n", siteLog[:len(siteLog)-3], 1), 1)
		fixed = strings.Replace(fixed, "\t\tmail_api postmark\n", "\t\tmail_api postmark\n\t"+option+"\n", 1)
		if err := validate(t, fixed); err != nil {
			t.Fatalf("the fixed Caddyfile is refused: %v\n%s", err, fixed)
		}
		out, _ := adapt(t, fixed)
		adapted := strings.ReplaceAll(string(out), `\u003e`, ">")
		for _, field := range []string{"request>headers>X-Api-Key", "request>headers>X-Postmark-Server-Token", "request>headers>X-Postmark-Account-Token"} {
			if !strings.Contains(adapted, `"`+field+`":{"filter":"delete"}`) {
				t.Errorf("the adapted log has no delete filter for %s:\n%s", field, out)
			}
		}
	})
}

// directiveBlocks returns every block of the named directive in the
// golden Caddyfiles and the docs' examples, as written there: the seeds of
// the Unmarshal fuzz targets.
func directiveBlocks(f *testing.F, directive string) []string {
	files, _ := filepath.Glob("testdata/caddyfile/*.caddyfile")
	docs, _ := filepath.Glob("docs/*.md")
	var blocks []string
	for _, name := range append(files, docs...) {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		var block []string
		depth := 0
		for _, line := range strings.Split(string(src), "\n") {
			if depth == 0 && strings.TrimSpace(line) != directive+" {" {
				continue
			}
			block = append(block, line)
			depth += strings.Count(line, "{") - strings.Count(line, "}")
			if depth <= 0 {
				blocks = append(blocks, strings.Join(block, "\n"))
				block, depth = nil, 0
			}
		}
	}
	if len(blocks) == 0 {
		f.Fatalf("no %s block in the golden Caddyfiles or the docs", directive)
	}
	return blocks
}

// atLine matches where Caddy's dispenser says an error is.
var atLine = regexp.MustCompile(`, at Testfile:(\d+)`)

// fuzzUnmarshal reads src as one directive's tokens into u, as Caddy's
// adapter hands them over, and fails the test on a panic (the fuzzer's)
// or on an error that does not name a line of src: an operator must be
// told where the mistake is.
func fuzzUnmarshal(t *testing.T, u caddyfile.Unmarshaler, src string) {
	tokens, err := caddyfile.Tokenize([]byte(src), "Testfile")
	if err != nil || len(tokens) == 0 {
		return // the lexer's own error, before any directive runs
	}
	err = u.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	if err == nil {
		return
	}
	m := atLine.FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("%q: the error names no line: %v", src, err)
	}
	if n, _ := strconv.Atoi(m[1]); n < 1 || n > strings.Count(src, "\n")+1 {
		t.Fatalf("%q: the error names line %d of %d: %v", src, n, strings.Count(src, "\n")+1, err)
	}
}

// FuzzUnmarshalCaddyfile feeds arbitrary keygate blocks to the handler's
// UnmarshalCaddyfile: it must return the handler or an error naming a line
// of the block, never panic.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, b := range directiveBlocks(f, "keygate") {
		f.Add(b)
	}
	f.Add("keygate {\n\tscope mail.send POST /v3/mail/send\n\trate 1/x burst\n\tratelimit redis rediss://h:1 {\n\t\ttls_cert /c\n\t}\n}")
	f.Fuzz(func(t *testing.T, src string) {
		fuzzUnmarshal(t, new(keygate.Handler), src)
	})
}

// FuzzUnmarshalConsoleCaddyfile is FuzzUnmarshalCaddyfile for the
// keygate_console directive.
func FuzzUnmarshalConsoleCaddyfile(f *testing.F) {
	for _, b := range directiveBlocks(f, "keygate_console") {
		f.Add(b)
	}
	f.Add("keygate_console {\n\tadmin\n\tuser alice\n\tgateway_url ftp://x\n}")
	f.Fuzz(func(t *testing.T, src string) {
		fuzzUnmarshal(t, new(keygate.Console), src)
	})
}
