package keygate_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// ssoConsoleCaddyfile puts the console behind single sign-on as
// docs/console.md (Mounting it) says: forward_auth asks the SSO, copies the
// person and their groups onto the request, and the console reads them. The
// second console keeps the default user, {http.auth.user.id}, which
// forward_auth never sets. The last two are the mistakes the page warns of:
// a header the console reads that copy_headers does not list, and a console
// before forward_auth in a route.
var ssoConsoleCaddyfile = site(`
	handle_path /console/* {
		forward_auth {UPSTREAM} {
			uri /api/authz/forward-auth
			copy_headers Remote-User Remote-Groups
		}
		keygate_console {
			store {STORE}
			user {http.request.header.Remote-User}
			owner {http.request.header.Remote-Groups}
			admin ann
			signout_url https://sso.example.com/logout?rd=https%3A%2F%2Fmail.example.com%2Fconsole%2F
		}
	}
	handle_path /default/* {
		forward_auth {UPSTREAM} {
			uri /api/authz/forward-auth
			copy_headers Remote-User Remote-Groups
		}
		keygate_console {
			store {STORE}
			admin ann
		}
	}
	forward_auth /sited/* {UPSTREAM} {
		uri /api/authz/forward-auth
		copy_headers Remote-User
	}
	handle_path /sited/* {
		keygate_console {
			store {STORE}
			user {http.request.header.Remote-User}
		}
	}
	handle_path /uncopied/* {
		forward_auth {UPSTREAM} {
			uri /api/authz/forward-auth
			copy_headers Remote-User
		}
		keygate_console {
			store {STORE}
			user {http.request.header.Remote-User}
			owner {http.request.header.Remote-Groups}
		}
	}
	handle_path /misordered/* {
		route {
			keygate_console {
				store {STORE}
				user {http.request.header.Remote-User}
			}
			forward_auth {UPSTREAM} {
				uri /api/authz/forward-auth
				copy_headers Remote-User
			}
		}
	}
`)

// ssoSessions is what the test's SSO knows: a session cookie's person and
// groups. "public" is a session the SSO lets through without naming anyone,
// as Authelia's bypass policy and oauth2-proxy's skip_auth_routes do.
var ssoSessions = map[string][2]string{
	"ann-session": {"ann", "security"},
	"raj-session": {"raj", "web"},
	"mia-session": {"mia", "marketing"},
	"public":      {"", ""},
}

// sso is the forward_auth endpoint of an SSO (Authelia, authentik,
// oauth2-proxy): 200 with Remote-User and Remote-Groups for a known session
// cookie, 401 for any other request.
type sso struct {
	*httptest.Server
	uris chan string // X-Forwarded-Uri of each question: the path its rules are applied to
}

func newSSO(t *testing.T) *sso {
	uris := make(chan string, 100)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case uris <- r.Header.Get("X-Forwarded-Uri"):
		default:
		}
		c, err := r.Cookie("sso")
		who, ok := ssoSessions[""]
		if err == nil {
			who, ok = ssoSessions[c.Value]
		}
		if r.URL.Path != "/api/authz/forward-auth" || !ok {
			http.Error(w, "sign in at the SSO", http.StatusUnauthorized)
			return
		}
		if who[0] != "" {
			w.Header().Set("Remote-User", who[0])
			w.Header().Set("Remote-Groups", who[1])
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(s.Close)
	return &sso{s, uris}
}

// ssoUser signs in to the SSO with a session cookie and sends the headers
// given on every request: a client forging what the SSO would say.
func ssoUser(t *testing.T, prefix, session string, forged ...string) consoleUser {
	return consoleUser{t: t, prefix: prefix, signIn: func(r *http.Request) {
		if session != "" {
			r.AddCookie(&http.Cookie{Name: "sso", Value: session})
		}
		for i := 0; i+1 < len(forged); i += 2 {
			r.Header.Set(forged[i], forged[i+1])
		}
	}}
}

// TestTheConsoleBehindForwardAuth: the console reads the person and the
// team from the headers forward_auth copies from the SSO's answer, and a
// client that sends those headers itself gets nothing from them: forward_auth
// replaces them with the SSO's, deletes them when the SSO names no one, and
// answers the SSO's 401 for a request it refuses. Without the user option the
// console refuses everyone (forward_auth sets no {http.auth.user.id}). A
// header copy_headers does not list, or a console that runs before
// forward_auth, is the client's to write.
func TestTheConsoleBehindForwardAuth(t *testing.T) {
	sso := newSSO(t)
	g := startGateway(t, gatewayConfig{caddyfile: ssoConsoleCaddyfile, upstream: sso.URL})
	// Inside handle_path the SSO is asked about the path without the
	// prefix: its rules for /console do not apply there.
	ssoUser(t, "/console", "ann-session").do(g, http.MethodGet, "/keys/none", nil)
	if uri := <-sso.uris; uri != "/keys/none" {
		t.Errorf("the SSO was asked about %q, want /keys/none", uri)
	}
	// In the site, forward_auth runs before handle_path: the whole path.
	ssoUser(t, "/sited", "ann-session").do(g, http.MethodGet, "/keys/none", nil)
	if uri := <-sso.uris; uri != "/sited/keys/none" {
		t.Errorf("the SSO was asked about %q, want /sited/keys/none", uri)
	}
	g.issue("--name", "ann's audit key", "--owner", "security", "--scope", "mail.send")
	g.issue("--name", "spring campaign", "--owner", "marketing", "--scope", "mail.send")

	// who returns the status and the person the console's header names.
	who := func(u consoleUser) (int, string, string) {
		t.Helper()
		resp, page := u.do(g, http.MethodGet, "/", nil)
		_, after, _ := strings.Cut(page, `<p class="who">`)
		name, _, _ := strings.Cut(after, "</p>")
		return resp.StatusCode, name, page
	}

	team := func(user, owner string) string {
		return user + ` <span class="tag" title="You manage the keys of this owner">` + owner + `</span>`
	}
	for _, tc := range []struct {
		name          string
		u             consoleUser
		status        int
		who           string
		sees, notSees string
	}{
		{"an admin signed in", ssoUser(t, "/console", "ann-session"), 200, `ann <span class="tag">admin</span>`, "spring campaign", ""},
		{"a team member sees the team's keys only", ssoUser(t, "/console", "mia-session"), 200, team("mia", "marketing"), "spring campaign", "audit key"},
		{"a forged user is replaced by the SSO's", ssoUser(t, "/console", "raj-session", "Remote-User", "ann", "Remote-Groups", "marketing"),
			200, team("raj", "web"), "", "spring campaign"},
		{"a forged user on a request the SSO refuses", ssoUser(t, "/console", "", "Remote-User", "ann", "Remote-Groups", "security"),
			401, "", "sign in at the SSO", "audit key"},
		{"a forged user on a request the SSO lets through unnamed", ssoUser(t, "/console", "public", "Remote-User", "ann", "Remote-Groups", "security"),
			401, "", "Sign-in required", "audit key"},
		{"a forged user in other spelling", ssoUser(t, "/console", "public", "remote-user", "ann", "REMOTE-GROUPS", "security"),
			401, "", "Sign-in required", "audit key"},
		{"forward_auth in the site before handle_path", ssoUser(t, "/sited", "raj-session", "Remote-User", "ann"), 200, "raj", "", ""},
		{"the default user is never set by forward_auth", ssoUser(t, "/default", "ann-session"), 401, "", "Sign-in required", "audit key"},
		// The mistakes: the client's own header is believed.
		{"a header copy_headers does not list is the client's", ssoUser(t, "/uncopied", "raj-session", "Remote-Groups", "marketing"),
			200, team("raj", "marketing"), "spring campaign", ""},
		{"a console before forward_auth in a route never asks the SSO", ssoUser(t, "/misordered", "", "Remote-User", "ann"), 200, "ann", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.u.t = t
			status, name, page := who(tc.u)
			if status != tc.status || name != tc.who || !strings.Contains(page, tc.sees) || tc.notSees != "" && strings.Contains(page, tc.notSees) {
				t.Errorf("%d, signed in as %q, want %d, %q, seeing %q and not %q:\n%s", status, name, tc.status, tc.who, tc.sees, tc.notSees, page)
			}
		})
	}

	// A key raj makes is his team's, and its event names him.
	raj := ssoUser(t, "/console", "raj-session", "Remote-User", "ann", "Remote-Groups", "marketing")
	raj.create(g, raj.formToken(g), "web shop")
	list := g.keys("list", "--owner", "web")
	if !strings.Contains(list, "web shop") {
		t.Errorf("raj's key is not the web team's:\n%s", list)
	}
	if events := g.keys("events"); !strings.Contains(events, "console raj from 127.0.0.1") {
		t.Errorf("the events do not name raj as the key's maker:\n%s", events)
	}
}

// TestSigningOutOfTheSSOFromTheConsole: with signout_url, a person the SSO
// signed in gets Sign out in the console's header, which sends the browser
// to the SSO's sign-out; without it (the /sited console) the console, which
// cannot end that sign-in, offers none.
func TestSigningOutOfTheSSOFromTheConsole(t *testing.T) {
	sso := newSSO(t)
	g := startGateway(t, gatewayConfig{caddyfile: ssoConsoleCaddyfile, upstream: sso.URL})
	mia := ssoUser(t, "/console", "mia-session")
	if _, page := mia.do(g, http.MethodGet, "/", nil); !strings.Contains(page, `action="/console/signout"`) {
		t.Errorf("the console with signout_url offers no Sign out:\n%s", page)
	}
	resp, page := mia.do(g, http.MethodPost, "/signout", url.Values{"csrf": {mia.formToken(g)}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "https://sso.example.com/logout?rd=https%3A%2F%2Fmail.example.com%2Fconsole%2F" {
		t.Errorf("Sign out: %d to %q, want 303 to the SSO's sign-out:\n%s", resp.StatusCode, resp.Header.Get("Location"), page)
	}
	if _, page := ssoUser(t, "/sited", "raj-session").do(g, http.MethodGet, "/", nil); strings.Contains(page, "signout") {
		t.Errorf("the console without signout_url offers Sign out to an SSO sign-in it cannot end:\n%s", page)
	}
}
