package keygate_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestConsoleInABrowser runs the console's browser suite (console/browser,
// a module of its own so that chromedp stays out of the plugin's module
// graph) against the caddy binary this package built. Chromium missing:
// the suite skips, or fails when CI=true. Screenshots of every page go to
// $KEYGATE_CONSOLE_SCREENSHOTS, or a temporary directory the suite prints.
func TestConsoleInABrowser(t *testing.T) {
	needBinary(t)
	bin, err := filepath.Abs(caddyBin)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "test", "-count=1", "-v", "./...")
	cmd.Dir = "console/browser"
	cmd.Env = append(os.Environ(), "KEYGATE_TEST_CADDY="+bin)
	out, err := cmd.CombinedOutput()
	t.Logf("go test ./... in console/browser:\n%s", out)
	if err != nil {
		t.Fatalf("the console's browser suite failed: %v", err)
	}
	if m := regexp.MustCompile(`(?m)^\s+console_test.go:\d+: (the browser test needs .*)$`).FindSubmatch(out); m != nil && bytes.Contains(out, []byte("--- SKIP")) {
		t.Skip(string(m[1]))
	}
}

// The quick start's demo serves the console at /console/ behind its demo
// user, beside the gateway, as the README says.
func TestDemoServesTheConsole(t *testing.T) {
	src, err := os.ReadFile("examples/demo/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	cf := strings.NewReplacer(
		"localhost:2019", "{ADMIN}",
		"http://localhost:8025", "http://127.0.0.1:{PORT}",
		"localhost:8026", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	).Replace(string(src))
	g := startGateway(t, gatewayConfig{caddyfile: cf})
	get := func(path, user, pass string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, g.siteURL+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, tc := range []struct {
		path, user, pass string
		want             int
	}{
		{"/console/", "", "", http.StatusUnauthorized},
		{"/console/", "demo", "wrong", http.StatusUnauthorized},
		{"/console/", "demo", "keygate-demo", http.StatusOK},
		{"/console/new", "demo", "keygate-demo", http.StatusOK},
		{"/console", "", "", http.StatusFound},
		{"/v3/mail/send", "", "", http.StatusUnauthorized}, // the gateway: missing_key
	} {
		if got := get(tc.path, tc.user, tc.pass).StatusCode; got != tc.want {
			t.Errorf("GET %s as %q: %d, want %d", tc.path, tc.user, got, tc.want)
		}
	}
}
