package keygate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	keygate "github.com/keygate/caddy-keygate"
	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/mailapi"
)

// The Caddyfiles in examples/ are what operators copy into production, so
// each one must load in the real binary exactly as shipped: adapted,
// provisioned (its store opened) and validated, with its {env.…}
// placeholders set.

var (
	envPlaceholder = regexp.MustCompile(`\{env\.([A-Za-z0-9_]+)\}`)
	mailAPILine    = regexp.MustCompile(`(?m)^\s*mail_api\s+(\S+)`)
	keyHeaderLine  = regexp.MustCompile(`(?m)^\s*key_header\s+(\S+)`)
	headerUpLine   = regexp.MustCompile(`(?m)^\s*header_up\s+.*$`)
	deletion       = regexp.MustCompile(`^\s*header_up\s+-\S+\s*$`)
)

func exampleCaddyfiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("examples/*/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 9 {
		t.Fatalf("examples/: want the demo, seven providers and a cluster, found %d Caddyfiles: %v", len(files), files)
	}
	return files
}

func TestExamplesValidateInTheBinary(t *testing.T) {
	needBinary(t)
	for _, file := range exampleCaddyfiles(t) {
		t.Run(filepath.Base(filepath.Dir(file)), func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			env := append(os.Environ(),
				"XDG_DATA_HOME="+filepath.Join(dir, "data"),
				"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
			)
			for _, name := range placeholderEnv(string(src)) {
				env = append(env, name+"="+exampleEnvValue(t, name))
			}
			cmd := exec.Command(caddyBin, "adapt", "--validate", "--config", file)
			cmd.Env = env
			var stderr strings.Builder
			cmd.Stderr = &stderr
			adapted, err := cmd.Output()
			if err != nil {
				t.Fatalf("caddy adapt --validate --config %s: %v\n%s", file, err, stderr.String())
			}
			if filepath.Base(filepath.Dir(file)) != "demo" {
				upstreamLearnsNothing(t, file, adapted)
			}
			// Warnings are how keygate and Caddy report a config that loads
			// but does not do what it says (a POST scope that is no send
			// endpoint, an unformatted Caddyfile): an example has none.
			for _, line := range strings.Split(stderr.String(), "\n") {
				if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
					t.Errorf("%s: %s", file, line)
				}
			}
		})
	}
}

// upstreamLearnsNothing checks, in a production example's adapted JSON,
// that every reverse_proxy deletes what Caddy would tell the provider about
// the network behind the gateway.
func upstreamLearnsNothing(t *testing.T, file string, adapted []byte) {
	t.Helper()
	var cfg any
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatalf("%s: the adapted config: %v", file, err)
	}
	proxies := 0
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "reverse_proxy" {
				proxies++
				var deleted []string
				if h, ok := v["headers"].(map[string]any); ok {
					if r, ok := h["request"].(map[string]any); ok {
						ds, _ := r["delete"].([]any)
						for _, d := range ds {
							if d, ok := d.(string); ok {
								deleted = append(deleted, d)
							}
						}
					}
				}
				for _, want := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Via"} {
					if !slices.Contains(deleted, want) {
						t.Errorf("%s: reverse_proxy sends the provider %s (header_up -%s)", file, want, want)
					}
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(cfg)
	if proxies == 0 {
		t.Errorf("%s: no reverse_proxy in the adapted config", file)
	}
}

// placeholderEnv lists the environment variables a Caddyfile reads.
func placeholderEnv(src string) []string {
	var names []string
	seen := map[string]bool{}
	for _, m := range envPlaceholder.FindAllStringSubmatch(src, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			names = append(names, m[1])
		}
	}
	return names
}

// exampleEnvValue gives a variable the examples read a value they can load
// with: real throwaway servers for the cluster's store and Redis (the store
// is opened while validating), a dummy for provider credentials (read only
// per request).
func exampleEnvValue(t *testing.T, name string) string {
	switch name {
	case "KEYGATE_STORE":
		return testservers.StartPostgres(t).URI
	case "KEYGATE_REDIS":
		return "redis://" + testservers.StartRedis(t).Addr + "/0"
	default:
		return "dummy-" + strings.ToLower(name)
	}
}

func TestExamplesKeepSecretsOutOfTheFileAndTheAccessLog(t *testing.T) {
	for _, file := range exampleCaddyfiles(t) {
		name := filepath.Base(filepath.Dir(file))
		if name == "demo" {
			continue // talks to a pretend provider on localhost
		}
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			src := string(b)
			for _, line := range headerUpLine.FindAllString(src, -1) {
				if deletion.MatchString(line) {
					continue
				}
				if !strings.Contains(line, "{env.") && !strings.Contains(line, "{file.") {
					t.Errorf("%s: %q: the provider's credential must come from {env.…} or {file.…}", file, strings.TrimSpace(line))
				}
			}
			if !regexp.MustCompile(`(?m)^\s*log\s*\{`).MatchString(src) {
				t.Errorf("%s: no access log: a production example shows the one it needs", file)
			}
			for _, header := range keyHeaders(t, src) {
				want := fmt.Sprintf("request>headers>%s delete", header)
				if !strings.Contains(src, want) {
					t.Errorf("%s: keys may arrive in %s, but the access log does not delete it: want %q", file, header, want)
				}
			}
		})
	}
}

// keyHeaders lists the request headers other than Authorization in which a
// site's keygate reads keys: its mail_api dialect's and its key_header
// lines, canonical as the access log records them.
func keyHeaders(t *testing.T, src string) []string {
	t.Helper()
	var headers []string
	for _, m := range mailAPILine.FindAllStringSubmatch(src, -1) {
		d, ok := mailapi.Lookup(m[1])
		if !ok {
			t.Fatalf("mail_api %q: unknown dialect", m[1])
		}
		headers = append(headers, d.KeyHeaders()...)
	}
	for _, m := range keyHeaderLine.FindAllStringSubmatch(src, -1) {
		headers = append(headers, http.CanonicalHeaderKey(m[1]))
	}
	return headers
}

// docsCaddyfile is a Caddyfile snippet of the docs that is configuration
// (not a syntax summary with <placeholders>), unindented when it sits in a
// list item.
type docsCaddyfile struct {
	where string // file:line of its fence
	body  string
}

func docsCaddyfiles(t *testing.T) []docsCaddyfile {
	t.Helper()
	docs, _ := filepath.Glob("docs/*.md")
	snippet := regexp.MustCompile("(?ms)```caddyfile\n(.*?)^[ \t]*```")
	var all []docsCaddyfile
	for _, file := range append(docs, "README.md") {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range snippet.FindAllSubmatchIndex(src, -1) {
			text := string(src[m[2]:m[3]])
			if strings.Contains(text, "<") {
				continue
			}
			// A snippet inside a list item is indented as the item.
			lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
			indent := len(lines[0]) - len(strings.TrimLeft(lines[0], " "))
			for i, l := range lines {
				lines[i] = strings.TrimPrefix(l, strings.Repeat(" ", indent))
			}
			where := fmt.Sprintf("%s:%d", file, bytes.Count(src[:m[0]], []byte("\n"))+1)
			all = append(all, docsCaddyfile{where, strings.Join(lines, "\n") + "\n"})
		}
	}
	if len(all) < 5 {
		t.Fatalf("found %d Caddyfile snippets in the docs", len(all))
	}
	return all
}

// The Caddyfile snippets of the docs are as `caddy fmt` writes them, so a
// snippet pasted into a Caddyfile draws no "input is not formatted" warning.
func TestDocsCaddyfilesAreFormatted(t *testing.T) {
	needBinary(t)
	for _, s := range docsCaddyfiles(t) {
		cmd := exec.Command(caddyBin, "fmt", "-")
		cmd.Stdin = strings.NewReader(s.body)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("caddy fmt of the snippet at %s: %v", s.where, err)
		}
		if string(out) != s.body {
			t.Errorf("%s: a snippet is not as caddy fmt writes it:\n%s\ncaddy fmt:\n%s", s.where, s.body, out)
		}
	}
}

// elided is a snippet line that stands for configuration left out.
var elided = regexp.MustCompile(`(?m)^\s*(\S+\s+)?…\s*$`)

// The Caddyfile snippets of the docs load: `caddy adapt` of each, put where
// it goes (global options and sites as they are; a site's directives in a
// site, a keygate block's lines in a keygate block), draws neither an
// error nor a warning. A snippet with lines left out (`…` alone) is a
// sketch and is skipped; one whose `…` stands inside a value (a password
// in a URL) is not. Adapting checks what the Caddyfile says (keygate's own
// checks included: scope lines, options given twice) without opening
// stores or log files.
func TestDocsCaddyfilesAdapt(t *testing.T) {
	needBinary(t)
	n := 0
	for _, s := range docsCaddyfiles(t) {
		if elided.MatchString(s.body) {
			continue
		}
		first := ""
		for _, l := range strings.Split(s.body, "\n") {
			if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
				first = f[0]
				break
			}
		}
		config := s.body
		switch {
		case first == "{", strings.ContainsAny(first, ".:"):
			// Global options, or a site with its address.
		case first == "scope", first == "ratelimit":
			config = "localhost {\n\tkeygate {\n" + s.body + "\t}\n}\n"
		default:
			config = "localhost {\n" + s.body + "}\n"
		}
		file := filepath.Join(t.TempDir(), "Caddyfile")
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(caddyBin, "adapt", "--config", file)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if _, err := cmd.Output(); err != nil {
			t.Errorf("%s: caddy adapt: %v\n%s\n%s", s.where, err, config, stderr.String())
			continue
		}
		for _, line := range strings.Split(stderr.String(), "\n") {
			// Wrapped, a snippet is indented as caddy fmt would not.
			if (strings.Contains(line, `"level":"warn"`) && !strings.Contains(line, "not formatted")) || strings.Contains(line, `"level":"error"`) {
				t.Errorf("%s: %s", s.where, line)
			}
		}
		n++
	}
	if n < 10 {
		t.Errorf("adapted %d Caddyfile snippets of the docs", n)
	}
}

// The handlers' JSON in docs/caddyfile.md is what configs are written from
// (`caddy run --config caddy.json`, the admin API's /load): each example
// decodes strictly into the handler it names, as Caddy decodes it, and the
// page names every field each handler has, so an option added to a handler
// cannot be left out of its JSON there.
func TestDocsHandlerJSONNamesEveryField(t *testing.T) {
	src, err := os.ReadFile("docs/caddyfile.md")
	if err != nil {
		t.Fatal(err)
	}
	handlers := map[string]any{"keygate": keygate.Handler{}, "keygate_console": keygate.Console{}}
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(src, -1) {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(m[1], &fields); err != nil {
			t.Fatalf("docs/caddyfile.md: a JSON block does not parse: %v\n%s", err, m[1])
		}
		var name string
		_ = json.Unmarshal(fields["handler"], &name)
		h, ok := handlers[name]
		if !ok {
			continue
		}
		seen[name] = true
		delete(fields, "handler") // Caddy's module name, not a field
		body, _ := json.Marshal(fields)
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(reflect.New(reflect.TypeOf(h)).Interface()); err != nil {
			t.Errorf("docs/caddyfile.md: the %s handler's JSON does not load: %v", name, err)
		}
		typ := reflect.TypeOf(h)
		for i := range typ.NumField() {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			if !bytes.Contains(src, []byte(`"`+tag+`"`)) {
				t.Errorf("docs/caddyfile.md: the %s handler's field %q is not in its JSON", name, tag)
			}
		}
	}
	for name := range handlers {
		if !seen[name] {
			t.Errorf("docs/caddyfile.md: no JSON example of the %s handler", name)
		}
	}
}
