package keygate_test

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// demoUser is the demo's console user in a Caddyfile: demo / keygate-demo.
const demoUser = `basic_auth {
			demo $2a$14$S/PXxpQXLY2JdRqYKrrfj.LCC8FjErPlahUmwPO2dMWlxYPUaIqnq
		}`

// demoConsole is the console under /console/ of a test's site, signed in
// to as demoUser, an admin, on the site's store.
const demoConsole = `handle_path /console/* {
		` + demoUser + `
		keygate_console {
			store {STORE}
			admin demo
		}
	}`

var (
	keyPattern  = regexp.MustCompile(`kg_(live|test)_[0-9A-Za-z]{49}`)
	formPattern = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

// consoleUser drives a gateway's console as the demo user's browser does:
// signed in, forms posted same-origin, and, so that a test sees each step,
// redirects not followed and cookies handed on by the test.
type consoleUser struct {
	t      *testing.T
	host   string // the Host header; "" for the gateway's own address
	prefix string // where the console is mounted: "/console", or ""
	// signIn puts the person's credentials on a request (default: the
	// demo user's basic_auth).
	signIn func(*http.Request)
}

var noRedirects = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// do sends one request to the console page at path (under the prefix;
// a Location the console answered already has it) and returns the response
// with its body read.
func (u consoleUser) do(g *gateway, method, path string, form url.Values, cookies ...*http.Cookie) (*http.Response, string) {
	u.t.Helper()
	if !strings.HasPrefix(path, u.prefix+"/") {
		path = u.prefix + path
	}
	req, err := http.NewRequest(method, g.siteURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		u.t.Fatal(err)
	}
	if u.host != "" {
		req.Host = u.host
	}
	if u.signIn != nil {
		u.signIn(req)
	} else {
		req.SetBasicAuth("demo", "keygate-demo")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for _, c := range cookies {
		req.AddCookie(c) // a browser sends it to every node of the name: cookies ignore ports
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// formToken returns the form token g's new-key page carries.
func (u consoleUser) formToken(g *gateway) string {
	u.t.Helper()
	_, page := u.do(g, http.MethodGet, "/new", nil)
	m := formPattern.FindStringSubmatch(page)
	if m == nil {
		u.t.Fatalf("the console's new-key page has no form token:\n%s", page)
	}
	return m[1]
}

// create posts the new-key form to g and returns where the console sends
// the browser and the reveal cookie it sets.
func (u consoleUser) create(g *gateway, token, name string) (string, []*http.Cookie) {
	u.t.Helper()
	resp, _ := u.do(g, http.MethodPost, "/new", url.Values{"csrf": {token}, "name": {name}, "scope": {"mail.send"}, "expires": {"30d"}})
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, u.prefix+"/reveal/") || len(resp.Cookies()) != 1 {
		u.t.Fatalf("creating a key in the console: %d, Location %q, cookies %v", resp.StatusCode, loc, resp.Cookies())
	}
	return loc, resp.Cookies()
}

// TestATeamOfCaddyUsersManagesItsKeysTogether: docs/console.md's teams of
// basic_auth users. Caddy's map names each person's team and the console's
// owner reads it: a key one member creates is the team's, which another
// member sees and revokes; another team sees none of it, not even by its
// id; someone the map does not name is refused rather than shown the keys
// that have no owner.
func TestATeamOfCaddyUsersManagesItsKeysTogether(t *testing.T) {
	const hash = "$2a$14$S/PXxpQXLY2JdRqYKrrfj.LCC8FjErPlahUmwPO2dMWlxYPUaIqnq" // keygate-demo
	g := startGateway(t, gatewayConfig{caddyfile: site(`
	handle_path /console/* {
		basic_auth {
			raj ` + hash + `
			mia ` + hash + `
			bob ` + hash + `
			eve ` + hash + `
		}
		map {http.auth.user.id} {console_team} {
			raj marketing
			mia marketing
			bob sales
		}
		keygate_console {
			store {STORE}
			owner {console_team}
		}
	}
`)})
	as := func(user string) consoleUser {
		return consoleUser{t: t, prefix: "/console", signIn: func(r *http.Request) { r.SetBasicAuth(user, "keygate-demo") }}
	}
	raj, mia, bob, eve := as("raj"), as("mia"), as("bob"), as("eve")

	loc, cookies := raj.create(g, raj.formToken(g), "Spring newsletter")
	if resp, page := raj.do(g, http.MethodGet, loc, nil, cookies...); resp.StatusCode != http.StatusOK || !keyPattern.MatchString(page) {
		t.Fatalf("raj's new key's page: %d", resp.StatusCode)
	}
	_, list := mia.do(g, http.MethodGet, "/", nil)
	id := regexp.MustCompile(`/console/keys/(key_[0-9A-Za-z]+)">Spring newsletter<`).FindStringSubmatch(list)
	if id == nil || !strings.Contains(list, "marketing") {
		t.Fatalf("mia's keys page does not list the key raj made for their team:\n%s", list)
	}
	if resp, page := bob.do(g, http.MethodGet, "/keys/"+id[1], nil); resp.StatusCode != http.StatusNotFound || strings.Contains(page, "Spring newsletter") {
		t.Errorf("bob, of another team, opens the key: %d", resp.StatusCode)
	}
	if resp, _ := eve.do(g, http.MethodGet, "/", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("eve, in no team, opens the console: %d, want 403", resp.StatusCode)
	}
	resp, _ := mia.do(g, http.MethodPost, "/keys/"+id[1]+"/revoke", url.Values{"csrf": {mia.formToken(g)}, "confirm": {"Spring newsletter"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("mia revokes the team's key: %d", resp.StatusCode)
	}
	if _, page := raj.do(g, http.MethodGet, "/keys/"+id[1], nil); !strings.Contains(page, "console mia from") || !strings.Contains(page, "console raj from") {
		t.Errorf("the key's history does not name who issued and who revoked it:\n%s", page)
	}
}
