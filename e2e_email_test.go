package keygate_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// One site per dialect, told apart by Host, all in front of the recording
// upstream; a fifth site routes test keys to a sandbox upstream.
const emailCaddyfile = `{
	admin {ADMIN}
}
http://sendgrid.localhost:{PORT}, http://postmark.localhost:{PORT}, http://mailgun.localhost:{PORT}, http://ses.localhost:{PORT} {
	bind 127.0.0.1
	@sendgrid host sendgrid.localhost
	@postmark host postmark.localhost
	@mailgun host mailgun.localhost
	@ses host ses.localhost
	route @sendgrid {
		keygate {
			store {STORE}
			mail_api sendgrid
			max_body 64KB
			scope mail.send POST /v3/mail/send
			scope templates.read GET /v3/templates*
		}
		reverse_proxy {UPSTREAM} {
			header_up Authorization "Bearer {env.PROVIDER_API_KEY}"
		}
	}
	route @postmark {
		keygate {
			store {STORE}
			mail_api postmark
			key_header X-Postmark-Server-Token
			scope mail.send POST /email*
		}
		reverse_proxy {UPSTREAM} {
			header_up X-Postmark-Server-Token {env.PROVIDER_API_KEY}
		}
	}
	route @mailgun {
		keygate {
			store {STORE}
			mail_api mailgun
			scope mail.send POST /v3/*
		}
		reverse_proxy {UPSTREAM}
	}
	route @ses {
		keygate {
			store {STORE}
			mail_api ses
			scope mail.send POST /v2/email/outbound-emails
		}
		reverse_proxy {UPSTREAM}
	}
}
`

func sgBody(from string, to ...string) []byte {
	var rcpts []string
	for _, a := range to {
		rcpts = append(rcpts, fmt.Sprintf(`{"email":%q}`, a))
	}
	return []byte(fmt.Sprintf(`{"personalizations":[{"to":[%s]}],"from":{"email":%q},"subject":"Hi","content":[{"type":"text/plain","value":"hello"}]}`,
		strings.Join(rcpts, ","), from))
}

func TestEmailPolicy(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: emailCaddyfile, upstream: up.URL})
	sg := func(key string, body []byte) *response {
		return g.call("POST", "/v3/mail/send", key, body, "Host", "sendgrid.localhost", "Content-Type", "application/json")
	}
	k := g.issue("--name", "shop", "--scope", "mail.send", "--sender-domain", "shop.example.com",
		"--sender-domain", "*.mail.example.com", "--max-recipients", "3", "--quota", "5/d")

	t.Run("an allowed sender passes and the upstream gets the body byte for byte", func(t *testing.T) {
		body := sgBody("orders@shop.example.com", "a@x.org")
		r := sg(k.Key, body)
		if r.Status != 202 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		got := up.last()
		if !bytes.Equal(got.Body, body) {
			t.Errorf("upstream body differs:\n%s\n%s", got.Body, body)
		}
		if got.Header.Get("Authorization") != "Bearer provider-secret-123" {
			t.Errorf("upstream Authorization %q", got.Header.Get("Authorization"))
		}
		if !strings.Contains(r.Header.Get("RateLimit-Policy"), `"quota";q=5`) || !strings.Contains(r.Header.Get("RateLimit"), `"quota";r=4`) {
			t.Errorf("quota headers: %q / %q", r.Header.Get("RateLimit-Policy"), r.Header.Get("RateLimit"))
		}
	})

	cases := []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"a foreign sender is sender_not_allowed", sgBody("ceo@evil.example", "a@x.org"), 403, "sender_not_allowed"},
		{"a subdomain needs a *. entry", sgBody("x@sub.shop.example.com", "a@x.org"), 403, "sender_not_allowed"},
		{"a per-personalization From override is checked too",
			[]byte(`{"personalizations":[{"to":[{"email":"a@x.org"}],"from":{"email":"ceo@evil.example"}}],"from":{"email":"orders@shop.example.com"},"subject":"x","content":[{"type":"text/plain","value":"x"}]}`),
			403, "sender_not_allowed"},
		{"more recipients than allowed is too_many_recipients", sgBody("a@news.mail.example.com", "1@x.org", "2@x.org", "3@x.org", "4@x.org"), 403, "too_many_recipients"},
		{"the BCC mail setting's address counts as a recipient",
			[]byte(`{"personalizations":[{"to":[{"email":"1@x.org"},{"email":"2@x.org"},{"email":"3@x.org"}]}],"from":{"email":"orders@shop.example.com"},"subject":"x","content":[{"type":"text/plain","value":"x"}],"mail_settings":{"bcc":{"enable":true,"email":"spy@evil.example"}}}`),
			403, "too_many_recipients"},
		{"malformed JSON is invalid_payload", []byte(`{"personalizations":[`), 400, "invalid_payload"},
		// Overlong UTF-8 spells "from" in a name and a line feed in a
		// header's value to a decoder such as Jackson, which reads such
		// forms as the characters they spell.
		{"a member name that is not UTF-8 is invalid_payload",
			[]byte("{\"personalizations\":[{\"to\":[{\"email\":\"a@x.org\"}]}],\"from\":{\"email\":\"orders@shop.example.com\"},\"fr\xc1\xafm\":{\"email\":\"ceo@evil.example\"},\"subject\":\"x\",\"content\":[{\"type\":\"text/plain\",\"value\":\"x\"}]}"),
			400, "invalid_payload"},
		{"a header value that is not UTF-8 is invalid_payload",
			[]byte("{\"personalizations\":[{\"to\":[{\"email\":\"a@x.org\"}]}],\"from\":{\"email\":\"orders@shop.example.com\"},\"headers\":{\"X-A\":\"b\xc0\x8d\xc0\x8aFrom: ceo@evil.example\"},\"subject\":\"x\",\"content\":[{\"type\":\"text/plain\",\"value\":\"x\"}]}"),
			400, "invalid_payload"},
		{"an oversize body is payload_too_large", append(sgBody("a@shop.example.com", "a@x.org")[:10], bytes.Repeat([]byte(" "), 70<<10)...), 413, "payload_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count()
			r := sg(k.Key, tc.body)
			if r.Status != tc.status || r.code() != tc.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
			// A refused sender is named by its domain, to be found in a batch.
			if tc.code == "sender_not_allowed" && !strings.Contains(string(r.Body), `the sender domain \"`) {
				t.Errorf("the refusal does not name the sender domain: %s", r.Body)
			}
			if up.count() != before {
				t.Error("the upstream was called")
			}
		})
	}

	t.Run("the recipient quota counts recipients and answers quota_exceeded", func(t *testing.T) {
		// 1 used above; 3 more fit (4 of 5), then 2 do not.
		if r := sg(k.Key, sgBody("a@shop.example.com", "1@x.org", "2@x.org", "3@x.org")); r.Status != 202 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		// SendGrid answers used-up credits with 401, which its SDKs do not retry.
		r := sg(k.Key, sgBody("a@shop.example.com", "1@x.org", "2@x.org"))
		if r.Status != 401 || r.code() != "quota_exceeded" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%d %s %v", r.Status, r.Body, r.Header)
		}
		// The refusal says what is left, not that the quota is used up
		// (until session 35 it did, beside RateLimit: "quota";r=1).
		if want := "the message has 2 recipients, more than the 1 left of the API key's recipient quota of 5 per day"; r.message() != want {
			t.Errorf("two recipients with one left: %q, want %q", r.message(), want)
		}
		if r := sg(k.Key, sgBody("a@shop.example.com", "1@x.org")); r.Status != 202 {
			t.Errorf("the last recipient of the quota: %d %s", r.Status, r.Body)
		}
		if r := sg(k.Key, sgBody("a@shop.example.com", "1@x.org")); r.code() != "quota_exceeded" ||
			r.message() != "the API key's recipient quota of 5 per day is used up" {
			t.Errorf("a recipient past the quota: %d %s", r.Status, r.Body)
		}
	})

	t.Run("postmark batch: every message's sender and recipients count", func(t *testing.T) {
		pk := g.issue("--name", "pm", "--scope", "mail.send", "--sender-domain", "shop.example.com", "--max-recipients", "3")
		pm := func(path, body string) *response {
			return g.call("POST", path, "", []byte(body), "Host", "postmark.localhost", "X-Postmark-Server-Token", pk.Key, "Content-Type", "application/json")
		}
		ok := `[{"From":"a@shop.example.com","To":"x@y.org, z@y.org","Subject":"s","TextBody":"t"},{"From":"Shop <b@shop.example.com>","To":"q@y.org","Subject":"s","TextBody":"t"}]`
		if r := pm("/email/batch", ok); r.Status != 202 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if tok := up.last().Header.Get("X-Postmark-Server-Token"); tok != "provider-secret-123" {
			t.Errorf("upstream token %q", tok)
		}
		bad := `[{"From":"a@shop.example.com","To":"x@y.org"},{"From":"b@evil.example","To":"q@y.org"}]`
		if r := pm("/email/batch", bad); r.code() != "sender_not_allowed" {
			t.Errorf("foreign sender in a batch: %d %s", r.Status, r.Body)
		}
		if r := pm("/email", `{"From":"a@shop.example.com","To":"1@y.org","Cc":"2@y.org","Bcc":"3@y.org, 4@y.org"}`); r.code() != "too_many_recipients" {
			t.Errorf("To+Cc+Bcc over the limit: %d %s", r.Status, r.Body)
		}
	})

	// A framework that binds a body by its Content-Type (ASP.NET, Rails)
	// reads this JSON as a form whose From is another.
	t.Run("a JSON send with a form Content-Type is refused for restricted keys", func(t *testing.T) {
		pk := g.issue("--name", "pm-form", "--scope", "mail.send", "--sender-domain", "shop.example.com")
		body := []byte(`{"X":"&From=ceo%40evil.example&Y=","From":"a@shop.example.com","To":"x@y.org"}`)
		for _, ct := range []string{"application/x-www-form-urlencoded", "Multipart/Form-Data; boundary=b"} {
			before := up.count()
			r := g.call("POST", "/email", "", body, "Host", "postmark.localhost", "X-Postmark-Server-Token", pk.Key, "Content-Type", ct)
			if r.code() != "invalid_payload" || !strings.Contains(string(r.Body), "form Content-Type") || up.count() != before {
				t.Errorf("%s: %d %s", ct, r.Status, r.Body)
			}
		}
		if r := g.call("POST", "/email", "", body, "Host", "postmark.localhost", "X-Postmark-Server-Token", pk.Key, "Content-Type", "application/json"); r.Status != 202 {
			t.Errorf("as JSON: %d %s", r.Status, r.Body)
		}
	})

	// Express's body-parser decodes a JSON body in any "utf-*" charset the
	// Content-Type names: in UTF-7, "+AGY-rom" is "from", and JSON.parse
	// keeps the last of two.
	t.Run("a JSON send in UTF-7 is invalid_payload", func(t *testing.T) {
		sk := g.issue("--name", "sg-utf7", "--scope", "mail.send", "--sender-domain", "shop.example.com")
		body := []byte(`{"personalizations":[{"to":[{"email":"a@x.org"}]}],"from":{"email":"orders@shop.example.com"},"subject":"x",` +
			`"content":[{"type":"text/plain","value":"x"}],"+AGY-rom":{"email":"ceo@evil.example"}}`)
		before := up.count()
		r := g.call("POST", "/v3/mail/send", sk.Key, body, "Host", "sendgrid.localhost", "Content-Type", "application/json; charset=utf-7")
		if r.Status != 400 || r.code() != "invalid_payload" || up.count() != before {
			t.Errorf("%d %s", r.Status, r.Body)
		}
		if r := g.call("POST", "/v3/mail/send", sk.Key, body, "Host", "sendgrid.localhost", "Content-Type", "application/json; charset=utf-8"); r.Status != 202 {
			t.Errorf("in UTF-8: %d %s", r.Status, r.Body)
		}
	})

	// The route's scope line is /email*, as docs/providers.md suggests: a
	// path IIS or a framework routing by extension serves as /email must
	// be read as that send. IIS reads a backslash as a slash, and Caddy
	// passes one on as %5C.
	t.Run("postmark: /email., /email.json and /email%5Cbatch are read as /email and /email/batch", func(t *testing.T) {
		pk := g.issue("--name", "pm-ext", "--scope", "mail.send", "--sender-domain", "shop.example.com")
		for _, path := range []string{"/email.", "/email.json", "/email/batch.json", "/email%5Cbatch", "/email%5C"} {
			before := up.count()
			body := `{"From":"ceo@evil.example","To":"x@y.org"}`
			if strings.Contains(path, "batch") {
				body = "[" + body + "]"
			}
			r := g.call("POST", path, "", []byte(body), "Host", "postmark.localhost", "X-Postmark-Server-Token", pk.Key, "Content-Type", "application/json")
			if r.code() != "sender_not_allowed" || up.count() != before {
				t.Errorf("%s with a foreign From: %d %s", path, r.Status, r.Body)
			}
		}
	})

	t.Run("mailgun form and multipart bodies", func(t *testing.T) {
		mk := g.issue("--name", "mg", "--scope", "mail.send", "--sender-domain", "mg.example.com")
		form := url.Values{"from": {"Shop <shop@mg.example.com>"}, "to": {"a@x.org, b@x.org"}, "subject": {"s"}, "text": {"t"}}
		body := []byte(form.Encode())
		r := g.call("POST", "/v3/mg.example.com/messages", mk.Key, body, "Host", "mailgun.localhost", "Content-Type", "application/x-www-form-urlencoded")
		if r.Status != 202 || !bytes.Equal(up.last().Body, body) {
			t.Fatalf("urlencoded: %d %s", r.Status, r.Body)
		}
		var mp bytes.Buffer
		w := multipart.NewWriter(&mp)
		w.WriteField("from", "boss@evil.example")
		w.WriteField("to", "a@x.org")
		w.Close()
		r = g.call("POST", "/v3/mg.example.com/messages", mk.Key, mp.Bytes(), "Host", "mailgun.localhost", "Content-Type", w.FormDataContentType())
		if r.code() != "sender_not_allowed" {
			t.Errorf("multipart foreign sender: %d %s", r.Status, r.Body)
		}
		// Fields in the query string could reach a provider that merges
		// them with the body's; keygate reads only the body.
		before := up.count()
		r = g.call("POST", "/v3/mg.example.com/messages?h:From=ceo@evil.example", mk.Key, body, "Host", "mailgun.localhost", "Content-Type", "application/x-www-form-urlencoded")
		if r.Status != 400 || r.code() != "invalid_payload" || up.count() != before {
			t.Errorf("a form send with a query string: %d %s", r.Status, r.Body)
		}
		// A part named both ways: Go reads the RFC 2231 name (x), PHP's
		// and Python's cgi parsers the plain one (h:From).
		twoNames := []byte("--b\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nshop@mg.example.com\r\n" +
			"--b\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\na@x.org\r\n" +
			"--b\r\nContent-Disposition: form-data; name*=UTF-8''x; name=\"h:From\"\r\n\r\nceo@evil.example\r\n--b--\r\n")
		r = g.call("POST", "/v3/mg.example.com/messages", mk.Key, twoNames, "Host", "mailgun.localhost", "Content-Type", "multipart/form-data; boundary=b")
		if r.Status != 400 || r.code() != "invalid_payload" || up.count() != before {
			t.Errorf("a part named in RFC 2231's form beside a plain name: %d %s", r.Status, r.Body)
		}
		// A boundary after a bare line feed: the text's content to Go, a
		// part's end (and a h:From part after it) to PHP, Python's cgi and
		// Werkzeug.
		hiddenPart := []byte("--b\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nshop@mg.example.com\r\n" +
			"--b\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\na@x.org\r\n" +
			"--b\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nhi\n--b\nContent-Disposition: form-data; name=\"h:From\"\n\n" +
			"ceo@evil.example\r\n--b--\r\n")
		r = g.call("POST", "/v3/mg.example.com/messages", mk.Key, hiddenPart, "Host", "mailgun.localhost", "Content-Type", "multipart/form-data; boundary=b")
		if r.Status != 400 || r.code() != "invalid_payload" || up.count() != before {
			t.Errorf("a boundary after a bare line feed: %d %s", r.Status, r.Body)
		}
	})

	t.Run("mailgun: the sending domain in the path must be one of the key's sender domains", func(t *testing.T) {
		mk := g.issue("--name", "mg-shop", "--scope", "mail.send", "--sender-domain", "shop.example.com", "--sender-domain", "mg.shop.example.com")
		form := []byte(url.Values{"from": {"Shop <orders@shop.example.com>"}, "to": {"a@x.org"}, "subject": {"s"}, "text": {"t"}}.Encode())
		formType := "application/x-www-form-urlencoded"
		var mime bytes.Buffer
		w := multipart.NewWriter(&mime)
		w.WriteField("to", "a@x.org")
		fw, _ := w.CreateFormFile("message", "message.mime")
		fw.Write([]byte("From: Shop <orders@shop.example.com>\r\nTo: a@x.org\r\nSubject: s\r\n\r\nbody"))
		w.Close()
		cases := []struct {
			name, path, ctype string
			body              []byte
			code              string // "" for a send that reaches the upstream
		}{
			{"the key's own sending domain passes", "/v3/mg.shop.example.com/messages", formType, form, ""},
			{"the domain is compared ignoring case", "/v3/MG.Shop.Example.com/messages", formType, form, ""},
			{"another domain of the account is sender_not_allowed though the From is allowed",
				"/v3/billing.example.com/messages", formType, form, "sender_not_allowed"},
			{"an exact entry does not cover a subdomain as sending domain", "/v3/eu.shop.example.com/messages", formType, form, "sender_not_allowed"},
			{"messages.mime is checked too", "/v3/billing.example.com/messages.mime", w.FormDataContentType(), mime.Bytes(), "sender_not_allowed"},
			{"dot segments cannot smuggle another domain past the check",
				"/v3/mg.shop.example.com/../billing.example.com/messages", formType, form, "sender_not_allowed"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := up.count()
				r := g.call("POST", tc.path, mk.Key, tc.body, "Host", "mailgun.localhost", "Content-Type", tc.ctype)
				if tc.code == "" {
					if r.Status != 202 || up.count() != before+1 || up.last().Path != tc.path {
						t.Fatalf("%d %s; upstream path %q", r.Status, r.Body, up.last().Path)
					}
					return
				}
				if r.Status != 403 || r.code() != tc.code || !strings.Contains(string(r.Body), "sending domain") {
					t.Fatalf("got %d %s, want 403 %s naming the sending domain", r.Status, r.Body, tc.code)
				}
				if up.count() != before {
					t.Error("the upstream was called")
				}
			})
		}
	})

	t.Run("ses v2 simple and raw content", func(t *testing.T) {
		sk := g.issue("--name", "ses", "--scope", "mail.send", "--sender-domain", "shop.example.com")
		ses := func(body string) *response {
			return g.call("POST", "/v2/email/outbound-emails", sk.Key, []byte(body), "Host", "ses.localhost", "Content-Type", "application/json")
		}
		if r := ses(`{"FromEmailAddress":"a@shop.example.com","Destination":{"ToAddresses":["x@y.org"]},"Content":{"Simple":{"Subject":{"Data":"s"},"Body":{"Text":{"Data":"t"}}}}}`); r.Status != 202 {
			t.Errorf("simple: %d %s", r.Status, r.Body)
		}
		raw := base64.StdEncoding.EncodeToString([]byte("From: ceo@evil.example\r\nTo: x@y.org\r\nSubject: s\r\n\r\nbody"))
		if r := ses(`{"Destination":{"ToAddresses":["x@y.org"]},"Content":{"Raw":{"Data":"` + raw + `"}}}`); r.code() != "sender_not_allowed" {
			t.Errorf("raw MIME with a foreign From: %d %s", r.Status, r.Body)
		}
		// Recipients keygate cannot read must not escape a quota: a key
		// with only a quota may not send a raw message it cannot count.
		qk := g.issue("--name", "ses-quota", "--scope", "mail.send", "--quota", "2/d")
		unreadable := base64.StdEncoding.EncodeToString([]byte("From: a@shop.example.com\r\nTo: r1@x.org; r2@x.org; r3@x.org\r\nSubject: s\r\n\r\nbody"))
		r := g.call("POST", "/v2/email/outbound-emails", qk.Key, []byte(`{"Content":{"Raw":{"Data":"`+unreadable+`"}}}`),
			"Host", "ses.localhost", "Content-Type", "application/json")
		if r.Status != 400 || r.code() != "invalid_payload" {
			t.Errorf("unreadable raw MIME from a quota-only key: %d %s, want 400 invalid_payload", r.Status, r.Body)
		}
	})
}

var sandboxCaddyfile = site(`
	keygate {
		store {STORE}
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
	}
	@test vars {keygate.key.env} test
	reverse_proxy @test {env.SANDBOX_UPSTREAM}
	reverse_proxy {UPSTREAM} {
		header_up Authorization "Bearer {env.PROVIDER_API_KEY}"
	}
`)

func TestTestKeysNeverReachTheLiveUpstream(t *testing.T) {
	live, sandbox := newUpstream(t), newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: sandboxCaddyfile, upstream: live.URL,
		env: []string{"SANDBOX_UPSTREAM=" + strings.TrimPrefix(sandbox.URL, "http://")}})
	testKey := g.issue("--name", "ci", "--scope", "mail.send", "--env", "test")
	liveKey := g.issue("--name", "prod", "--scope", "mail.send")
	body := sgBody("a@example.com", "b@example.org")
	for i := 0; i < 3; i++ {
		if r := g.call("POST", "/v3/mail/send", testKey.Key, body); r.Status != 202 {
			t.Fatalf("test key: %d %s", r.Status, r.Body)
		}
	}
	if live.count() != 0 || sandbox.count() != 3 {
		t.Fatalf("test key requests: live got %d, sandbox %d", live.count(), sandbox.count())
	}
	if r := g.call("POST", "/v3/mail/send", liveKey.Key, body); r.Status != 202 || live.count() != 1 || sandbox.count() != 3 {
		t.Fatalf("live key: %d, live got %d, sandbox %d", r.Status, live.count(), sandbox.count())
	}
}

var quotaCaddyfile = site(`
	keygate {
		store {STORE}
		mail_api sendgrid
		quota 4/d
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy {UPSTREAM}
`)

func TestQuotaSurvivesReloadAndRestart(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: quotaCaddyfile, upstream: up.URL})
	k := g.issue("--name", "quota", "--scope", "mail.send")
	send := func(n int) *response {
		var to []string
		for i := 0; i < n; i++ {
			to = append(to, fmt.Sprintf("r%d@example.org", i))
		}
		return g.call("POST", "/v3/mail/send", k.Key, sgBody("a@example.com", to...))
	}
	if r := send(2); r.Status != 202 {
		t.Fatalf("2 of 4: %d %s", r.Status, r.Body)
	}
	g.reload()
	if r := send(1); r.Status != 202 {
		t.Fatalf("3 of 4 after reload: %d %s", r.Status, r.Body)
	}
	g.stop()
	g.start()
	if r := send(2); r.Status != 401 || r.code() != "quota_exceeded" { // SendGrid's status for used-up credits
		t.Fatalf("5 of 4 after a restart: %d %s (the quota forgot what was spent)", r.Status, r.Body)
	}
	if r := send(1); r.Status != 202 {
		t.Fatalf("4 of 4 after a restart: %d %s", r.Status, r.Body)
	}
}

// TestARotatedKeySharesItsQuotaWithTheKeyItReplaced: a rotation is a new
// secret for the same integration, not a new quota. The new key goes on
// from what the old one sent in the period, the old one (still valid in
// its grace period) from what both sent, on a running gateway, after a
// restart (the count read from the store), and on a second rotation. Until
// session 37 each key had a quota of its own: a key with a 4/d quota that
// had sent 3 could send 4 more once rotated, and its old key 1 more.
func TestARotatedKeySharesItsQuotaWithTheKeyItReplaced(t *testing.T) {
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{caddyfile: quotaCaddyfile, upstream: up.URL}) // quota 4/d
	old := g.issue("--name", "rotated", "--scope", "mail.send")
	send := func(key string, n int) *response {
		var to []string
		for i := range n {
			to = append(to, fmt.Sprintf("r%d@example.org", i))
		}
		return g.call("POST", "/v3/mail/send", key, sgBody("a@example.com", to...))
	}
	rotate := func(id string) issuedKey {
		var k issuedKey
		if err := json.Unmarshal([]byte(g.keys("rotate", id, "--json")), &k); err != nil || k.Key == "" {
			t.Fatalf("rotate %s: %v", id, err)
		}
		return k
	}
	if r := send(old.Key, 3); r.Status != http.StatusAccepted {
		t.Fatalf("3 of 4 with the old key: %d %s", r.Status, r.Body)
	}
	next := rotate(old.ID)
	if r := send(next.Key, 2); r.code() != "quota_exceeded" {
		t.Errorf("2 more with the new key, 1 of 4 left: %d %s, want quota_exceeded", r.Status, r.Body)
	}
	if r := send(next.Key, 1); r.Status != http.StatusAccepted {
		t.Errorf("4 of 4 with the new key: %d %s", r.Status, r.Body)
	}
	for name, k := range map[string]issuedKey{"old (in its grace period)": old, "new": next} {
		if r := send(k.Key, 1); r.code() != "quota_exceeded" {
			t.Errorf("5 of 4 with the %s key: %d %s, want quota_exceeded", name, r.Status, r.Body)
		}
	}

	// The next start reads the count of both keys from the store.
	g.stop()
	g.start()
	for name, k := range map[string]issuedKey{"old": old, "new": next} {
		if r := send(k.Key, 1); r.code() != "quota_exceeded" {
			t.Errorf("5 of 4 with the %s key after a restart: %d %s, want quota_exceeded", name, r.Status, r.Body)
		}
	}
	// And a second rotation goes on from all three.
	third := rotate(next.ID)
	if r := send(third.Key, 1); r.code() != "quota_exceeded" {
		t.Errorf("5 of 4 with the key of a second rotation: %d %s, want quota_exceeded", r.Status, r.Body)
	}
	// Each key's usage is its own.
	for k, want := range map[string]int64{old.ID: 3, next.ID: 1, third.ID: 0} {
		if u := g.usage(k); u.Recipients != want {
			t.Errorf("%s: usage counts %d recipients, want %d", k, u.Recipients, want)
		}
	}
	if up.count() != 2 {
		t.Errorf("the provider had %d sends, want 2", up.count())
	}
}

// SendGrid reports its own limits in X-RateLimit-* on the answers of its
// endpoints other than mail/send, and on its 429s, under the names keygate
// writes for the key's: through the real proxy the client reads one value
// of each, the key's, and on SendGrid's own 429 SendGrid's. Its answer to a
// send it takes has none, so keygate's answer to a send it passes has none
// either (the key's limit is in RateLimit), and its rate_limited has them.
func TestProviderRateHeadersThroughTheProxy(t *testing.T) {
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("X-Message-Id", "sg-1")
		status := http.StatusAccepted
		if r.Header.Get("X-Test-Status") == "429" {
			status = http.StatusTooManyRequests
		}
		if r.URL.Path != "/v3/mail/send" || status == http.StatusTooManyRequests {
			h.Set("X-RateLimit-Limit", "600")
			h.Set("X-RateLimit-Remaining", "0")
			h.Set("X-RateLimit-Reset", "1800000060")
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(provider.Close)
	g := startGateway(t, gatewayConfig{caddyfile: emailCaddyfile, upstream: provider.URL})
	k := g.issue("--name", "shop", "--scope", "mail.send", "--scope", "templates.read", "--rate", "3/m")
	call := func(method, path, status string, body []byte) http.Header {
		t.Helper()
		resp := g.call(method, path, k.Key, body,
			"Host", "sendgrid.localhost", "Content-Type", "application/json", "X-Test-Status", status)
		if fmt.Sprint(resp.Status) != status {
			t.Fatalf("%s %s: status %d, want %s: %s", method, path, resp.Status, status, resp.Body)
		}
		names := []string{"Ratelimit", "Ratelimit-Policy", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"}
		if path == "/v3/mail/send" && status == "202" {
			names = names[:2]
		}
		for _, name := range names {
			if v := resp.Header.Values(name); len(v) != 1 {
				t.Errorf("%s %s, status %s: %s has %d values %q, want 1", method, path, status, name, len(v), v)
			}
		}
		return resp.Header
	}
	if h := call("GET", "/v3/templates", "202", nil); h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Remaining") != "2" {
		t.Errorf("a proxied answer reads the provider's limits, not the key's: %v", h)
	}
	if h := call("GET", "/v3/templates", "429", nil); h.Get("X-RateLimit-Limit") != "600" || h.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("the provider's 429 reads the key's limits, not the ones that refused it: %v", h)
	}
	send := sgBody("a@shop.example.com", "b@example.org")
	if h := call("POST", "/v3/mail/send", "202", send); len(h.Values("X-RateLimit-Limit")) != 0 || !strings.Contains(h.Get("RateLimit"), "r=0") {
		t.Errorf("a send SendGrid took carries X-RateLimit-*, as SendGrid's own answer does not, or lacks the key's RateLimit: %v", h)
	}
	if h := call("POST", "/v3/mail/send", "429", send); h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("keygate's rate_limited on a send does not carry the key's limits in X-RateLimit-*: %v", h)
	}
}
