package keygate_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Each route has its send lines and, after them, a line for the rest of
// the provider's API.
const pathsCaddyfile = `{
	admin {ADMIN}
}
http://127.0.0.1:{PORT} {
	bind 127.0.0.1
	@sendgrid header X-Provider sendgrid
	@postmark header X-Provider postmark
	@mailgun header X-Provider mailgun
	@resend header X-Provider resend
	@ses header X-Provider ses
	@plain header X-Provider plain
	@narrow header X-Provider narrow
	@templated header X-Provider templated
	route @sendgrid {
		keygate {
			store {STORE}
			mail_api sendgrid
			scope mail.send POST /v3/mail/send
			scope templates.write POST /v3/templates
			scope stats.read GET /v3/stats/
			scope api /*
		}
		reverse_proxy {UPSTREAM}
	}
	route @postmark {
		keygate {
			store {STORE}
			mail_api postmark
			scope mail.send POST /email
			scope mail.send POST /email/withTemplate
			scope api /*
		}
		reverse_proxy {UPSTREAM}
	}
	route @mailgun {
		keygate {
			store {STORE}
			mail_api mailgun
			scope mail.send POST /v3/shop.example/messages
			scope api /*
		}
		reverse_proxy {UPSTREAM}
	}
	route @resend {
		keygate {
			store {STORE}
			mail_api resend
			scope mail.send POST /emails
			scope api /*
		}
		reverse_proxy {UPSTREAM}
	}
	route @ses {
		keygate {
			store {STORE}
			mail_api ses
			scope mail.send POST /v2/email/outbound-emails
			scope account.read POST /GetSendQuota
			scope api /*
			whoami /keygate/whoami
		}
		reverse_proxy {UPSTREAM}
	}
	route @plain {
		keygate {
			store {STORE}
			scope mail.send POST /v3/mail/send
		}
		reverse_proxy {UPSTREAM}
	}
	route @templated {
		keygate {
			store {STORE}
			mail_api postmark
			scope templates.send POST /email/withTemplate/*
			scope mail.send POST /email*
		}
		reverse_proxy {UPSTREAM}
	}
	route @narrow {
		keygate {
			store {STORE}
			mail_api sendgrid
			scope mail.send POST /v3/mail/send
		}
		reverse_proxy {UPSTREAM}
	}
}
`

// A send path written as a server that drops what keygate drops would read
// it (";parameters", a trailing slash, dot or space, a backslash, a format
// extension; the rest of the path after an escaped '?' or '#' or a NUL, a
// final line feed; the path after the host of "//host/path", which a URL
// parser reads as a host and a path) is inspected as the send, and is
// scoped as the send: it needs the send line's scope, not the broader
// line's that the path as written matches. Until session 35 a key holding
// only that broader scope (here "api", for templates and stats) sent mail
// through /v3/mail/send;x, /emails/ or /email.json, where a provider that
// drops them sends, and a send to /email%3Fx, /email%0A or //host/email was
// not even inspected. The path goes upstream as the client wrote it.
func TestASendPathWrittenOtherwiseNeedsTheSendScope(t *testing.T) {
	up, last := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	api := g.issue("--name", "api", "--scope", "api")
	send := g.issue("--name", "send", "--scope", "mail.send")

	sends := []struct{ provider, path, ctype, body string }{
		{"sendgrid", "/v3/mail/send", "application/json", `{"personalizations":[{"to":[{"email":"a@x.org"}]}],"from":{"email":"a@shop.example"},"subject":"x","content":[{"type":"text/plain","value":"x"}]}`},
		{"postmark", "/email", "application/json", `{"From":"a@shop.example","To":"a@x.org","Subject":"x","TextBody":"x"}`},
		{"postmark", "/email/withTemplate", "application/json", `{"From":"a@shop.example","To":"a@x.org","TemplateAlias":"t","TemplateModel":{}}`},
		{"mailgun", "/v3/shop.example/messages", "application/x-www-form-urlencoded", `from=a@shop.example&to=a@x.org&subject=x&text=x`},
		{"resend", "/emails", "application/json", `{"from":"a@shop.example","to":"a@x.org","subject":"x","text":"x"}`},
	}
	for _, s := range sends {
		p := s.path
		i := strings.LastIndexByte(p, '/')
		forms := []string{p + ";x", p + ";jsessionid=1", p + "/", p + ".", p + "%20", p + ".json", p + "\\", p + "%5C",
			strings.ToUpper(p) + ";x", "/x/..;y" + p, p + "%3Fx", p + "%23x", p + "%00", p + "%0A",
			"//gateway.example" + p, "///gateway.example" + p, "/\\gateway.example" + p}
		if i > 0 {
			forms = append(forms, p[:i]+";x"+p[i:])
		}
		for _, form := range forms {
			t.Run(s.provider+" "+form, func(t *testing.T) {
				r := rawRequest(t, g, "POST", form, s.provider, s.ctype, s.body, "Bearer "+api.Key)
				if r.Status != 403 || r.code() != "insufficient_scope" || !strings.Contains(r.message(), "mail.send") {
					t.Errorf("a key without mail.send: %d %s, want 403 insufficient_scope naming mail.send", r.Status, r.Body)
				}
				if u := last(); u != "" {
					t.Errorf("the upstream got %s", u)
				}
				r = rawRequest(t, g, "POST", form, s.provider, s.ctype, s.body, "Bearer "+send.Key)
				if r.Status != 202 {
					t.Errorf("a key with mail.send: %d %s, want 202", r.Status, r.Body)
				}
				if u := last(); u != form && u != strings.ReplaceAll(form, "\\", "%5C") {
					t.Errorf("the upstream got %q, want the path as sent (%q)", u, form)
				}
			})
		}
	}

	// Other paths are scoped as they are.
	for _, p := range []string{"/v3/suppression;x", "/v3/mail/send/x", "/v3/mail/sends"} {
		if r := rawRequest(t, g, "POST", p, "sendgrid", "application/json", `{}`, "Bearer "+api.Key); r.Status != 202 {
			t.Errorf("%s with the api scope: %d %s, want 202", p, r.Status, r.Body)
		}
		last()
	}
}

// Any other path is scoped as it is written and as a server that reads
// paths leniently reads it (";parameters" dropped, a trailing slash, dot
// or space, a backslash as a slash, the rest after an escaped '?' or '#'
// or a NUL, a final line feed, the host of "//host/path"): the key needs
// the scopes of both. Until session 35, with "scope templates.write POST
// /v3/templates" before "scope api /*", a key holding only api created
// templates at /v3/templates;x or /v3/templates/, which Java's servlet
// containers and Express serve as /v3/templates. A line written with a
// trailing slash keeps matching its path.
func TestAPathWrittenOtherwiseNeedsTheScopeOfItsLine(t *testing.T) {
	up, last := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	api := g.issue("--name", "api", "--scope", "api")
	both := g.issue("--name", "templates", "--scope", "api", "--scope", "templates.write")
	stats := g.issue("--name", "stats", "--scope", "stats.read")

	const p = "/v3/templates"
	for _, form := range []string{p + ";x", p + ";jsessionid=1", p + "/", p + ".", p + "%20", p + "\\", p + "%5C",
		p + "%3Fx", p + "%23x", p + "%00", p + "%0A", "/v3;x/templates", "/x/..;y" + p, "/V3/Templates/",
		"//gateway.example" + p, "///gateway.example" + p, "/\\gateway.example" + p} {
		t.Run(form, func(t *testing.T) {
			r := rawRequest(t, g, "POST", form, "sendgrid", "application/json", `{}`, "Bearer "+api.Key)
			if r.Status != 403 || r.code() != "insufficient_scope" || !strings.Contains(r.message(), "templates.write") {
				t.Errorf("a key without templates.write: %d %s, want 403 insufficient_scope naming templates.write", r.Status, r.Body)
			}
			if u := last(); u != "" {
				t.Errorf("the upstream got %s", u)
			}
			r = rawRequest(t, g, "POST", form, "sendgrid", "application/json", `{}`, "Bearer "+both.Key)
			if r.Status != 202 {
				t.Errorf("a key with templates.write and api: %d %s, want 202", r.Status, r.Body)
			}
			if u := last(); u != form && u != strings.ReplaceAll(form, "\\", "%5C") {
				t.Errorf("the upstream got %q, want the path as sent (%q)", u, form)
			}
		})
	}

	for _, c := range []struct {
		what, method, target string
		key                  issuedKey
		status               int
	}{
		{"the line's own path", "POST", p, api, 403},
		{"a line with a trailing slash, at its path", "GET", "/v3/stats/", stats, 202},
		{"a line with a trailing slash, at its path with parameters", "GET", "/v3/stats/;x", stats, 403}, // as written: api
		{"at its path with parameters, by the broader line's key", "GET", "/v3/stats;x", api, 403},
		{"at its path with parameters, by a key with both", "GET", "/v3/stats;x", both, 403},
		{"another path, with parameters", "POST", "/v3/suppression;x", api, 202},
		{"another path, with a trailing slash", "GET", "/v3/suppression/", api, 202},
		{"another path after a host", "GET", "//gateway.example/v3/suppression", api, 202},
		{"a base URL with a trailing slash, by a key with both", "POST", "/" + p, both, 202},
	} {
		r := rawRequest(t, g, c.method, c.target, "sendgrid", "application/json", `{}`, "Bearer "+c.key.Key)
		if r.Status != c.status {
			t.Errorf("%s (%s %s): %d %s, want %d", c.what, c.method, c.target, r.Status, r.Body, c.status)
		}
		last()
	}
}

// SES's v1 API (the Query API) names its action in its parameters, which
// a server reading them whatever the path sends: a form POSTed to another
// path than "/", or a request with an Action parameter in its query
// string, is read as the Query API too, its sends inspected and scoped as
// the v2 send. Until session 35, POST /x with Action=SendEmail passed
// uninspected to any key whose scope covered /x; until session 36 it
// still did without a Content-Type, which Rack reads as a form.
func TestAnSESv1RequestAtAnotherPathIsReadAsOne(t *testing.T) {
	up, last := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	api := g.issue("--name", "api", "--scope", "api")
	// A v1 request at /x needs the scope of /x (api) as well as its
	// action's (TestAnSESv1ActionDoesNotScopeTheRequestAtAnotherPath).
	send := g.issue("--name", "send", "--scope", "mail.send", "--scope", "api", "--sender-domain", "shop.example")

	const (
		form     = "application/x-www-form-urlencoded; charset=utf-8"
		sendForm = "Action=SendEmail&Version=2010-12-01&Source=a%40shop.example&Destination.ToAddresses.member.1=a%40x.org&Message.Subject.Data=x&Message.Body.Text.Data=x"
		evilForm = "Action=SendEmail&Version=2010-12-01&Source=ceo%40evil.example&Destination.ToAddresses.member.1=a%40x.org&Message.Subject.Data=x&Message.Body.Text.Data=x"
	)
	for _, c := range []struct {
		what, method, target, ctype, body string
		key                               issuedKey
		status                            int
		want                              string // in the answer
	}{
		{"a form send at /x, by a key without mail.send", "POST", "/x", form, sendForm, api, 403, "mail.send"},
		{"a form send at /.json, by a key without mail.send", "POST", "/.json", form, sendForm, api, 403, "mail.send"},
		{"a form send at a v2 path, by a key without mail.send", "POST", "/v2/email/templates", form, sendForm, api, 403, "mail.send"},
		{"a send in a GET's query at /x, by a key without mail.send", "GET", "/x?" + sendForm, "", "", api, 403, "mail.send"},
		{"a send in a POST's query at /x, with a JSON body", "POST", "/x?" + sendForm, "application/json", `{}`, api, 400, "invalid_payload"},
		{"a form send at /x from another domain", "POST", "/x", form, evilForm, send, 403, "evil.example"},
		{"a form send at /x", "POST", "/x", form, sendForm, send, 202, ""},
		{"a form without an action at /x", "POST", "/x", form, "x=1", api, 400, ""},
		// Rack reads the body of a POST without a Content-Type as a form.
		{"a send without a Content-Type at /x", "POST", "/x", "", sendForm, api, 400, "invalid_payload"},
		{"a POST without a Content-Type or a body at /x", "POST", "/x", "", "", api, 202, ""},
		{"a v2 request at another path", "POST", "/v2/email/templates", "application/json", `{"TemplateName":"t"}`, api, 202, ""},
		{"a v2 request with a query", "GET", "/v2/email/identities?PageSize=1", "", "", api, 202, ""},
	} {
		r := rawRequest(t, g, c.method, c.target, "ses", c.ctype, c.body, sesAuth(c.key.Key))
		if r.Status != c.status || !strings.Contains(string(r.Body), c.want) {
			t.Errorf("%s: %d %s, want %d naming %q", c.what, r.Status, r.Body, c.status, c.want)
		}
		u := last()
		switch {
		case c.status == 202 && u != c.target:
			t.Errorf("%s: the upstream got %q, want %q", c.what, u, c.target)
		case c.status != 202 && u != "":
			t.Errorf("%s: the upstream got %s", c.what, u)
		}
	}
	// whoami, which a v1 request is not, answers as before.
	if r := rawRequest(t, g, "GET", "/keygate/whoami", "ses", "", "", sesAuth(api.Key)); r.Status != 200 || !strings.Contains(string(r.Body), `"api"`) {
		t.Errorf("whoami: %d %s", r.Status, r.Body)
	}
}

// A send endpoint written otherwise is scoped as the endpoint and as it is
// written: a line written for the path as a client writes it still
// decides. With scope templates.send POST /email/withTemplate/* before
// scope mail.send POST /email*, Django-Anymail's POST /email/withTemplate/
// needed templates.send until session 35, which scoped it as
// /email/withTemplate alone, so a key holding only mail.send sent through
// the templates line's path; it needs both now.
func TestASendPathWrittenOtherwiseKeepsTheScopeOfItsLine(t *testing.T) {
	up, last := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	send := g.issue("--name", "send", "--scope", "mail.send")
	templates := g.issue("--name", "templates", "--scope", "templates.send")
	both := g.issue("--name", "both", "--scope", "mail.send", "--scope", "templates.send")
	const body = `{"From":"a@shop.example","To":"a@x.org","TemplateAlias":"t","TemplateModel":{}}`
	for _, c := range []struct {
		what, target string
		key          issuedKey
		status       int
		want         string
	}{
		{"the path as Anymail writes it, by a key with mail.send alone", "/email/withTemplate/", send, 403, "templates.send"},
		{"the path as Anymail writes it, by a key with templates.send alone", "/email/withTemplate/", templates, 403, "mail.send"},
		{"the path as Anymail writes it, by a key with both", "/email/withTemplate/", both, 200, ""},
		{"with parameters after the slash, by a key with mail.send alone", "/email/withTemplate/;x", send, 403, "templates.send"},
		{"the endpoint as it is, by a key with mail.send alone", "/email/withTemplate", send, 200, ""},
	} {
		r := rawRequest(t, g, "POST", c.target, "templated", "application/json", body, "Bearer "+c.key.Key)
		if r.Status != c.status && !(c.status == 200 && r.Status == 202) || c.status == 403 && !strings.Contains(r.message(), c.want) {
			t.Errorf("%s: %d %s, want %d naming %q", c.what, r.Status, r.Body, c.status, c.want)
		}
		if u := last(); c.status != 403 && u != c.target || c.status == 403 && u != "" {
			t.Errorf("%s: the upstream got %q", c.what, u)
		}
	}
}

// A v1 request at another path than "/" (an Action in a v2 request's query
// string, a form POSTed to /x) is scoped as its action and as the request
// it also is: the key needs both. Until session 36 it was scoped as its
// action alone, so a key holding only mail.send deleted an identity with
// DELETE /v2/email/identities/shop.example?Action=SendEmail&…, a v2 request
// SES does whatever its query string says, which needs scope api here.
func TestAnSESv1ActionDoesNotScopeTheRequestAtAnotherPath(t *testing.T) {
	up, last := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	send := g.issue("--name", "send", "--scope", "mail.send", "--sender-domain", "shop.example")
	both := g.issue("--name", "both", "--scope", "mail.send", "--scope", "api", "--sender-domain", "shop.example")

	const (
		form     = "application/x-www-form-urlencoded"
		sendForm = "Action=SendEmail&Version=2010-12-01&Source=a%40shop.example&Destination.ToAddresses.member.1=a%40x.org&Message.Subject.Data=x&Message.Body.Text.Data=x"
	)
	for _, c := range []struct {
		what, method, target, ctype, body string
		key                               issuedKey
		status                            int
	}{
		{"a v2 delete with a send in its query, by a key with mail.send alone", "DELETE", "/v2/email/identities/shop.example?" + sendForm, "", "", send, 403},
		{"a form send at /x, by a key with mail.send alone", "POST", "/x", form, sendForm, send, 403},
		{"a v2 delete with a send in its query, by a key with both scopes", "DELETE", "/v2/email/identities/shop.example?" + sendForm, "", "", both, 202},
		{"a form send at /x, by a key with both scopes", "POST", "/x", form, sendForm, both, 202},
		{"a v1 send at /, by a key with mail.send alone", "POST", "/", form, sendForm, send, 202},
	} {
		r := rawRequest(t, g, c.method, c.target, "ses", c.ctype, c.body, sesAuth(c.key.Key))
		if r.Status != c.status || c.status == 403 && !strings.Contains(string(r.Body), "insufficient_scope: the API key lacks the scope this route requires: api") {
			t.Errorf("%s: %d %s, want %d", c.what, r.Status, r.Body, c.status)
		}
		if u := last(); c.status == 202 && u != c.target || c.status != 202 && u != "" {
			t.Errorf("%s: the upstream got %q", c.what, u)
		}
	}
}

// An SES v1 parameter after a ';' is refused: a reader that splits
// parameters at ';' as at '&' (Rack 2's query strings, Python's parse_qs
// before 3.9.2) and keeps the last of a repeated one reads
// "Action=GetSendQuota&x=1;Action=SendEmail" as a send. Until session 36
// keygate read it as GetSendQuota, so a key holding only account.read (the
// examples' line for it) sent mail, uninspected, through such a server.
func TestAnSESv1ParameterAfterASemicolonIsRefused(t *testing.T) {
	up, last := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	read := g.issue("--name", "read", "--scope", "account.read")
	const (
		form = "application/x-www-form-urlencoded"
		send = "Source=a%40shop.example;Destination.ToAddresses.member.1=a%40x.org;Message.Subject.Data=x;Message.Body.Text.Data=x"
	)
	sesCases(t, g, last, read.Key, "invalid_payload: ses payload: a parameter after a ", []sesCase{
		{"a GetSendQuota", "POST", "/", form, "Action=GetSendQuota&Version=2010-12-01", 202},
		{"a send after a ';' in the body", "POST", "/", form, "Action=GetSendQuota&x=1;Action=SendEmail;" + send, 400},
		{"a send after a ';' in the query", "GET", "/?Action=GetSendQuota&x=1;Action=SendEmail;" + send, "", "", 400},
		{"a send after a ';' in the query of a POST", "POST", "/?x=1;Action=SendEmail", form, "Action=GetSendQuota", 400},
	})
}

// A send path with a letter that is the endpoint's only as Unicode folds
// case ("/v3/mail/ſend", a long s, which strings.EqualFold and Java's
// equalsIgnoreCase read as "send") is scoped as the send it is inspected
// as. Until session 36 keygate inspected it as the send but matched its
// lines against it as written, which no "send" line matches (a path
// matcher lower-cases it, and "ſ" is lower case already), so a key holding
// only the broader line's scope sent mail through it.
func TestASendPathWithAFoldedLetterNeedsTheSendScope(t *testing.T) {
	up, last := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	api := g.issue("--name", "api", "--scope", "api")
	send := g.issue("--name", "send", "--scope", "mail.send")
	for _, c := range []struct{ provider, target, ctype, body string }{
		{"sendgrid", "/v3/mail/%C5%BFend", "application/json", `{"personalizations":[{"to":[{"email":"a@x.org"}]}],"from":{"email":"a@shop.example"},"subject":"x","content":[{"type":"text/plain","value":"x"}]}`},
		{"resend", "/email%C5%BF", "application/json", `{"from":"a@shop.example","to":"a@x.org","subject":"x","text":"x"}`},
		{"mailgun", "/v3/shop.example/me%C5%BF%C5%BFages", "application/x-www-form-urlencoded", `from=a@shop.example&to=a@x.org&subject=x&text=x`},
	} {
		r := rawRequest(t, g, "POST", c.target, c.provider, c.ctype, c.body, "Bearer "+api.Key)
		if r.Status != 403 || !strings.Contains(string(r.Body), "requires: mail.send") {
			t.Errorf("%s %s with the api key: %d %s, want 403 naming mail.send", c.provider, c.target, r.Status, r.Body)
		}
		if u := last(); u != "" {
			t.Errorf("%s %s with the api key: the upstream got %q", c.provider, c.target, u)
		}
		if r := rawRequest(t, g, "POST", c.target, c.provider, c.ctype, c.body, "Bearer "+send.Key); r.Status != 202 {
			t.Errorf("%s %s with the send key: %d %s, want 202", c.provider, c.target, r.Status, r.Body)
		}
		if u := last(); u != c.target {
			t.Errorf("%s %s with the send key: the upstream got %q", c.provider, c.target, u)
		}
	}
}

// An SES v1 request with another method than POST is read from its body
// too when it has one: Rack reads a form body whatever the method, and
// Rails' params take the body's Action over the query's. Until session 36
// GET /?Action=GetSendQuota was read from its query string alone, so a key
// holding only account.read sent the SendEmail in its body, uninspected.
func TestAnSESv1ActionInTheBodyOfAGetIsRead(t *testing.T) {
	up, last := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	read := g.issue("--name", "read", "--scope", "account.read")
	const (
		form = "application/x-www-form-urlencoded"
		send = "Action=SendEmail&Source=a%40shop.example&Destination.ToAddresses.member.1=a%40x.org&Message.Subject.Data=x&Message.Body.Text.Data=x"
	)
	sesCases(t, g, last, read.Key, "Action is given twice", []sesCase{
		{"a GetSendQuota by GET", "GET", "/?Action=GetSendQuota", "", "", 202},
		{"a GetSendQuota by GET with the action in its body too", "GET", "/?Action=GetSendQuota", form, "Action=GetSendQuota", 202},
		{"a send in the body of a GET", "GET", "/?Action=GetSendQuota", form, send, 400},
		{"a send in the body of a PUT", "PUT", "/?Action=GetSendQuota", form, send, 400},
		{"a send in the body of a GET at another path", "GET", "/x?Action=GetSendQuota", form, send, 400},
	})
}

// A POST's _method query parameter is read as its override headers are:
// Symfony (so Laravel, which turns it on) and Express's
// methodOverride('_method') do the method it names. Until session 36 it was
// not read, so with scope mail.send POST /emails before scope api /*, a key
// holding only mail.send listed the account's sent emails through
// POST /emails?_method=GET (with any send in its body) on such an upstream.
func TestAMethodInTheQueryNeedsTheScopeOfThatMethod(t *testing.T) {
	up, last := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	send := g.issue("--name", "send", "--scope", "mail.send")
	const body = `{"from":"a@shop.example","to":"a@x.org","subject":"x","text":"x"}`
	for _, c := range []struct {
		target string
		status int
	}{
		{"/emails?_method=GET", 403},
		{"/emails?x=1&_method=delete", 403},
		{"/emails?%5Fmethod=GET", 403},
		{"/emails?.method=GET", 403},
		{"/emails?_method=GET&_method=POST", 403}, // two methods: refused
		{"/emails?_method=POST", 202},
		{"/emails?_methods=GET", 202},
		{"/emails", 202},
	} {
		r := rawRequest(t, g, "POST", c.target, "resend", "application/json", body, "Bearer "+send.Key)
		if r.Status != c.status || c.status == 403 && !strings.Contains(string(r.Body), "insufficient_scope") {
			t.Errorf("POST %s: %d %s, want %d", c.target, r.Status, r.Body, c.status)
		}
		if u := last(); c.status == 202 && u != c.target || c.status != 202 && u != "" {
			t.Errorf("POST %s: the upstream got %q", c.target, u)
		}
	}
}

// sesAuth is a SigV4 Authorization header with key as its access key id,
// as SES's clients send one.
func sesAuth(key string) string {
	return "AWS4-HMAC-SHA256 Credential=" + key + "/20261202/us-east-1/ses/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123abcd"
}

// A denial that names the request's path (no scope line matches it) is
// JSON whatever bytes the path holds: until session 35 a NUL, another
// control character or a byte that is no UTF-8 (/x%00, /x%0B, /x%FF) was
// written as Go writes it in a string ("\x00", "\v"), which is no JSON, so
// a client's SDK failed to read the refusal.
func TestADenialNamingAnOddPathIsJSON(t *testing.T) {
	up, _ := recordingUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: pathsCaddyfile, upstream: up.URL})
	send := g.issue("--name", "send", "--scope", "mail.send")
	for _, provider := range []string{"plain", "narrow"} {
		for _, target := range []string{"/x%00", "/x%01y", "/x%0B", "/x%7F", "/x%FF", "/x%E2%80%A8", `/x"\\`, "/caf%C3%A9"} {
			r := rawRequest(t, g, "POST", target, provider, "application/json", `{}`, "Bearer "+send.Key)
			if r.Status != 403 || !json.Valid(r.Body) || !strings.Contains(r.message(), "no scope line matches POST /x") &&
				!strings.Contains(r.message(), "no scope line matches POST /café") {
				t.Errorf("%s %s: %d %q, want 403 with a JSON body naming the path", provider, target, r.Status, r.Body)
			}
		}
	}
}

// recordingUpstream is an upstream that answers 202 and records the
// request target of each request; last returns the latest (and forgets
// them), "" when none came.
func recordingUpstream(t *testing.T) (*httptest.Server, func() string) {
	var mu sync.Mutex
	var got []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		got = append(got, r.RequestURI)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(up.Close)
	return up, func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return ""
		}
		s := got[len(got)-1]
		got = nil
		return s
	}
}

// rawRequest sends body to the gateway with the request target written as
// it is (Go's client would escape a backslash), on the provider's route,
// with the Authorization header auth.
func rawRequest(t *testing.T, g *gateway, method, target, provider, ctype, body, auth string) *response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(g.siteURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Provider: %s\r\nAuthorization: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		method, target, provider, auth, ctype, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// sesCase is a request of SES's v1 API and the status the gateway answers it
// with.
type sesCase struct {
	what, method, target, ctype, body string
	status                            int
}

// sesCases sends each case with key on the SES route: a 202 reaches the
// upstream as written, a 400 names refused in its body and reaches nothing.
func sesCases(t *testing.T, g *gateway, last func() string, key, refused string, cases []sesCase) {
	t.Helper()
	for _, c := range cases {
		r := rawRequest(t, g, c.method, c.target, "ses", c.ctype, c.body, sesAuth(key))
		if r.Status != c.status || c.status == 400 && !strings.Contains(string(r.Body), refused) {
			t.Errorf("%s: %d %s, want %d", c.what, r.Status, r.Body, c.status)
		}
		if u := last(); c.status == 202 && u != c.target || c.status != 202 && u != "" {
			t.Errorf("%s: the upstream got %q", c.what, u)
		}
	}
}
