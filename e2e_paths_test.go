package keygate_test

import (
	"bufio"
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
	route @sendgrid {
		keygate {
			store {STORE}
			mail_api sendgrid
			scope mail.send POST /v3/mail/send
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
	var mu sync.Mutex
	var got []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		got = append(got, r.RequestURI)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer up.Close()
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return ""
		}
		s := got[len(got)-1]
		got = nil
		return s
	}
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
				r := rawRequest(t, g, form, s.provider, s.ctype, s.body, api.Key)
				if r.Status != 403 || r.code() != "insufficient_scope" || !strings.Contains(r.message(), "mail.send") {
					t.Errorf("a key without mail.send: %d %s, want 403 insufficient_scope naming mail.send", r.Status, r.Body)
				}
				if u := last(); u != "" {
					t.Errorf("the upstream got %s", u)
				}
				r = rawRequest(t, g, form, s.provider, s.ctype, s.body, send.Key)
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
	for _, p := range []string{"/v3/templates;x", "/v3/mail/send/x", "/v3/mail/sends"} {
		if r := rawRequest(t, g, p, "sendgrid", "application/json", `{}`, api.Key); r.Status != 202 {
			t.Errorf("%s with the api scope: %d %s, want 202", p, r.Status, r.Body)
		}
		last()
	}
}

// rawRequest POSTs body to the gateway with the request target written as
// it is (Go's client would escape a backslash), on the provider's route.
func rawRequest(t *testing.T, g *gateway, target, provider, ctype, body, key string) *response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(g.siteURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Provider: %s\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		target, provider, key, ctype, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}
