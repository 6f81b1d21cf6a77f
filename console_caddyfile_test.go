package keygate_test

import (
	"strings"
	"testing"
)

// The console is written before basic_auth in the golden Caddyfile on
// purpose: the directive order, not the line order, must put the
// authentication first.
func TestConsoleIsOrderedAfterTheAuthenticationHandlers(t *testing.T) {
	for _, auth := range []string{
		"basic_auth {\n\t\t\tann $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG\n\t\t}",
		"forward_auth 127.0.0.1:9091 {\n\t\t\turi /api/verify\n\t\t\tcopy_headers Remote-User\n\t\t}",
	} {
		src := ":8080 {\n\thandle_path /console/* {\n\t\tkeygate_console\n\t\t" + auth + "\n\t}\n}\n"
		out, err := adapt(t, src)
		if err != nil {
			t.Fatal(err)
		}
		s := string(out)
		first := strings.Index(s, `"handler":"authentication"`)
		if first < 0 {
			first = strings.Index(s, `"handler":"reverse_proxy"`) // forward_auth
		}
		console := strings.Index(s, `"handler":"keygate_console"`)
		if first < 0 || console < 0 || console < first {
			t.Errorf("keygate_console is not after %s:\n%s", strings.Fields(auth)[0], s)
		}
	}
}

func TestConsoleCaddyfileErrorsNameLineAndValue(t *testing.T) {
	for _, tc := range []struct {
		name, option, want string
	}{
		{"unknown option", "colour blue", `unknown option "colour"`},
		{"a block after an option that takes none", "admin ann {\n\t\t}", `keygate_console: admin takes no block`},
		{"admin without a name", "admin", "admin: name at least one user"},
		{"an empty admin", `admin alice ""`, "admin: an empty user name"},
		{"an admin with spaces around it", `admin " alice"`, `admin " alice": a user name with spaces around it, which no sign-in names`},
		{"bad store", "store mysql://x", `unknown scheme "mysql"`},
		{"gateway_url not a URL", "gateway_url mail-gw.example.com", `gateway_url "mail-gw.example.com"`},
		{"owner with two values", "owner a b", "owner: want exactly one value"},
		{"anonymous takes no value", "insecure_anonymous_loopback yes", `insecure_anonymous_loopback takes no value, got "yes"`},
		{"gateway_url without a host", "gateway_url https://", `gateway_url "https://": want an http:// or https:// URL with a host`},
		{"a user that is no placeholder", "user Remote-User", `user "Remote-User": want a placeholder that names the signed-in person`},
		{"signout_url neither URL nor path", "signout_url auth.example.com/logout", `signout_url "auth.example.com/logout": want an http:// or https:// URL with a host, or a path`},
		{"signout_url to another site without its scheme", "signout_url //auth.example.com/logout", `signout_url "//auth.example.com/logout"`},
		{"signout_url to another site by a backslash", `signout_url /\\auth.example.com/logout`, `signout_url "/\\\\auth.example.com/logout"`},
		{"signout_url of another scheme", "signout_url javascript:alert(1)", `signout_url "javascript:alert(1)"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(t, ":8080 {\n\tkeygate_console {\n\t\t"+tc.option+"\n\t}\n}\n")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Caddyfile:3") {
				t.Errorf("error %v, want %q at Caddyfile:3", err, tc.want)
			}
		})
	}
}

// An option given twice is refused at its second line: the last one
// silently winning hides a mistake (two stores, two users).
func TestAnOptionGivenTwiceIsRefused(t *testing.T) {
	for _, tc := range []struct {
		directive, lines, want string
	}{
		{"keygate", "store sqlite:/a.db\n\t\tstore sqlite:/b.db", "keygate: store is given twice (first on line 3)"},
		{"keygate", "mail_api sendgrid\n\t\tmail_api postmark", "keygate: mail_api is given twice (first on line 3)"},
		{"keygate_console", "user {http.auth.user.id}\n\t\tuser {http.request.header.Remote-User}", "keygate_console: user is given twice (first on line 3)"},
	} {
		_, err := adapt(t, ":8080 {\n\t"+tc.directive+" {\n\t\t"+tc.lines+"\n\t}\n}\n")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Caddyfile:4") {
			t.Errorf("%s: error %v, want %q at Caddyfile:4", tc.lines, err, tc.want)
		}
	}
	// The options meant to be repeated still are.
	for _, src := range []string{
		":8080 {\n\tkeygate {\n\t\tscope a /a\n\t\tscope b /b\n\t\tkey_header X-A\n\t\tkey_header X-B\n\t}\n}\n",
		":8080 {\n\tkeygate_console {\n\t\tadmin ann\n\t\tadmin bob\n\t}\n}\n",
		// A placeholder in gateway_url is checked once replaced.
		":8080 {\n\tkeygate_console {\n\t\tgateway_url https://{env.GW_HOST}/mail\n\t}\n}\n",
		":8080 {\n\tkeygate_console {\n\t\tsignout_url https://auth.example.com/logout?rd=https%3A%2F%2Fmail.example.com%2Fconsole%2F\n\t}\n}\n",
		":8080 {\n\tkeygate_console {\n\t\tsignout_url /oauth2/sign_out\n\t}\n}\n",
	} {
		if _, err := adapt(t, src); err != nil {
			t.Errorf("%q: %v", src, err)
		}
	}
}
