package keygate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/caddy-keygate/internal/benchbody"
	"github.com/keygate/caddy-keygate/keys"
)

// sendTo serves one send request with body through h, handing it to next.
func sendTo(t *testing.T, h *Handler, key string, body benchbody.Body, next caddyhttp.Handler) int {
	t.Helper()
	return serveSend(t, h, key, body, next).Code
}

// serveSend is sendTo with the whole response.
func serveSend(t *testing.T, h *Handler, key string, body benchbody.Body, next caddyhttp.Handler) *httptest.ResponseRecorder {
	t.Helper()
	return serveBody(t, h, next, key, "POST", body.Path, body.ContentType, body.Data)
}

// serveBody serves one request with key in Authorization and, when ctype is
// not "", body as that Content-Type. It may be called from any goroutine.
func serveBody(t *testing.T, h *Handler, next caddyhttp.Handler, key, method, target, ctype string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+key)
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Error(err)
	}
	return w
}

// serveSESv1 serves one request of SES's v1 API: body, when there is one,
// as the form its clients post.
func serveSESv1(t *testing.T, h *Handler, key, method, target, body string) *httptest.ResponseRecorder {
	t.Helper()
	ctype := ""
	if body != "" {
		ctype = "application/x-www-form-urlencoded; charset=utf-8"
	}
	return serveBody(t, h, okNextReading, key, method, target, ctype, []byte(body))
}

// The transport that sends a body upstream may still read it, and close it,
// after reverse_proxy has returned: the body's pooled buffer must not be
// handed to the next request before then.
func TestSendBodyBufferIsNotReusedWhileTheUpstreamMayReadIt(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/mail/send"}}})
	_, key := issue(t, st, "mail.send")
	first, second := benchbody.Get("sendgrid-2k"), benchbody.SendGrid(12)
	if len(first.Data) > 4<<10 || len(second.Data) > 4<<10 {
		t.Fatal("both bodies must fall in the same pool size class")
	}

	var late io.ReadCloser
	keep := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		late = r.Body // read and closed after the handler returned, as a transport may
		w.WriteHeader(http.StatusAccepted)
		return nil
	})
	if code := sendTo(t, h, key, first, keep); code != http.StatusAccepted {
		t.Fatalf("first send: %d", code)
	}
	for range 20 {
		if code := sendTo(t, h, key, second, okNextReading); code != http.StatusAccepted {
			t.Fatalf("second send: %d", code)
		}
	}
	got, err := io.ReadAll(late)
	late.Close()
	if err != nil || !bytes.Equal(got, first.Data) {
		t.Fatalf("the first body read after later requests: %d bytes, %v; want its own %d bytes unchanged", len(got), err, len(first.Data))
	}
}

// okNextReading reads and closes the body, as reverse_proxy's transport does.
var okNextReading = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	w.WriteHeader(http.StatusAccepted)
	return nil
})

// okNextDraining reads the body to its end without closing it.
var okNextDraining = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusAccepted)
	return nil
})

// Once read to the end or closed, a body's buffer is reused: inspecting a
// send allocates nothing in proportion to the body.
func TestSendBodyBufferIsReused(t *testing.T) {
	for name, next := range map[string]caddyhttp.Handler{"read and closed": okNextReading, "read to the end": okNextDraining} {
		t.Run(name, func(t *testing.T) { testBodyReuse(t, next) })
	}
}

func testBodyReuse(t *testing.T, next caddyhttp.Handler) {
	if raceDetector {
		t.Skip("the race detector makes sync.Pool drop items at random")
	}
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/mail/send"}}})
	_, key := issue(t, st, "mail.send")
	body := benchbody.Get("sendgrid-200k")
	r := httptest.NewRequest("POST", body.Path, nil)
	rd := bytes.NewReader(body.Data)
	w := &benchWriter{h: http.Header{}}
	serve := func() {
		rd.Reset(body.Data)
		r.Body = io.NopCloser(rd)
		r.ContentLength = int64(len(body.Data))
		r.Header = http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {body.ContentType}}
		q := r.WithContext(context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		if err := h.ServeHTTP(w, q, next); err != nil || w.status != http.StatusAccepted {
			t.Fatalf("send: %d %v", w.status, err)
		}
	}
	serve()
	var before, after runtimeMem
	before.read()
	const n = 50
	for range n {
		serve()
	}
	after.read()
	if per := (after.bytes - before.bytes) / n; per > uint64(len(body.Data))/4 {
		t.Errorf("%d bytes allocated per %d-byte send, want the body's buffer reused", per, len(body.Data))
	}
}

// runtimeMem reads the total bytes allocated so far.
type runtimeMem struct{ bytes uint64 }

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.bytes = s.TotalAlloc
}

// spyBody hands out data, then fails as a client that went away, and
// records the largest buffer it was offered to read into (what it had
// delivered before the call plus the room offered).
type spyBody struct {
	data    []byte
	off     int
	largest int
}

func (s *spyBody) Read(p []byte) (int, error) {
	s.largest = max(s.largest, s.off+len(p))
	if s.off == len(s.data) {
		return 0, errors.New("the client went away")
	}
	n := copy(p, s.data[s.off:])
	s.off += n
	return n, nil
}

// A declared Content-Length is not memory reserved: a client that declares
// 10 MB and sends little makes readBody hold little (32 KB up front, then at
// most eight times what arrived).
func TestReadBodyHoldsWhatArrivedNotWhatWasDeclared(t *testing.T) {
	const declared = 10 << 20
	for _, sent := range []int{0, 1 << 10, 32 << 10, 40 << 10, 300 << 10} {
		spy := &spyBody{data: bytes.Repeat([]byte("x"), sent)}
		r := httptest.NewRequest("POST", "/v3/mail/send", nil)
		r.Body, r.ContentLength = io.NopCloser(spy), declared
		if _, err := readBody(r, declared); err == nil {
			t.Fatalf("%d of %d bytes sent: no error", sent, declared)
		}
		if limit := max(presize, 8*sent); spy.largest > limit {
			t.Errorf("%d of %d bytes sent: a buffer of %d bytes, want at most %d", sent, declared, spy.largest, limit)
		}
	}
}

// Whatever the length, declared or not, readBody returns the body as sent;
// a body shorter or longer than declared is an error, and an undeclared one
// is read up to limit+1 bytes.
func TestReadBodyReadsTheBodyAsSent(t *testing.T) {
	const limit = 3 << 20
	for _, n := range []int{0, 1, presize - 1, presize, presize + 1, 200 << 10, 1 << 20, 2<<20 + 7, limit} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + i>>9)
		}
		for _, declared := range []bool{true, false} {
			r := httptest.NewRequest("POST", "/v3/mail/send", bytes.NewReader(data))
			if !declared {
				r.ContentLength = -1
			}
			sb, err := readBody(r, limit)
			if err != nil || !bytes.Equal(sb.bytes(), data) {
				t.Fatalf("%d bytes (declared %v): %v, got %d bytes back, equal %v", n, declared, err, len(sb.bytes()), err == nil && bytes.Equal(sb.bytes(), data))
			}
			if got, _ := io.ReadAll(sb); !bytes.Equal(got, data) {
				t.Fatalf("%d bytes (declared %v): read back %d bytes, not the body", n, declared, len(got))
			}
			sb.finish()
		}
	}
	over := httptest.NewRequest("POST", "/", bytes.NewReader(make([]byte, limit+10)))
	over.ContentLength = -1
	if sb, err := readBody(over, limit); err != nil || len(sb.bytes()) != limit+1 {
		t.Errorf("an undeclared body past the limit: %v, %d bytes read, want limit+1", err, len(sb.bytes()))
	} else {
		sb.finish()
	}
	for _, c := range []struct {
		declared, sent int
	}{{100, 99}, {100, 101}, {100 << 10, 99 << 10}, {100 << 10, 101 << 10}} {
		r := httptest.NewRequest("POST", "/", io.MultiReader(bytes.NewReader(make([]byte, c.sent))))
		r.ContentLength = int64(c.declared)
		if _, err := readBody(r, limit); err == nil {
			t.Errorf("%d bytes sent for a declared %d: no error", c.sent, c.declared)
		}
	}
}

// Sends keygate does not read, such as SES v1's SendBounce (a form POSTed
// to "/") and a provider's campaign sends (SendGrid's Single Send, by PUT). A key limited to sender domains that may reach them (a
// full-access key here) must not send around its limits that way: the
// request is refused; a key without limits passes, as with other bodies
// keygate cannot read.
func TestUnreadSendAPIsAreRefusedForRestrictedKeys(t *testing.T) {
	for _, c := range []struct {
		dialect, method, path, ctype, body string
	}{
		{"ses", "POST", "/", "application/x-www-form-urlencoded; charset=utf-8",
			"Action=SendBounce&Version=2010-12-01&OriginalMessageId=m1&BounceSender=ceo%40evil.example" +
				"&BouncedRecipientInfoList.member.1.Recipient=a%40rcpt.example"},
		// Campaign and broadcast sends, whose sender and recipients are
		// stored at the provider.
		{"resend", "POST", "/broadcasts/b-1/send", "application/json", ""},
		{"resend", "POST", "/inboxes/in-1/drafts/d-1/send", "application/json", ""},
		{"resend", "POST", "/events/send", "application/json", `{"event":"signup","email":"a@rcpt.example","payload":{"link":"https://evil.example/"}}`},
		{"resend", "POST", "/inboxes/in-1/threads/t-1/emails/e-1/forward", "application/json", `{"to":["a@rcpt.example","b@rcpt.example"]}`},
		// A message stored at Mailgun, sent again to any address.
		{"mailgun", "POST", "/v3/domains/mg.shop.example/messages/k-1", "application/x-www-form-urlencoded", "to=a%40rcpt.example%2Cb%40rcpt.example"},
		{"mailgun", "POST", "/v4/inbox/tests", "application/json", `{"from":"ceo@evil.example","subject":"s","html":"h"}`},
		{"ses", "POST", "/v2/email/identities", "application/json", `{"EmailIdentity":"a@rcpt.example"}`},
		{"ses", "POST", "/v1/email/identities", "application/json", `{"EmailIdentity":"a@rcpt.example"}`},
		{"ses", "POST", "/", "application/x-www-form-urlencoded", "Action=VerifyEmailIdentity&Version=2010-12-01&EmailAddress=a%40rcpt.example"},
		{"ses", "POST", "/v2/email/deliverability-dashboard/test", "application/json",
			`{"FromEmailAddress":"ceo@evil.example","Content":{"Simple":{"Subject":{"Data":"s"},"Body":{"Text":{"Data":"t"}}}}}`},
		{"brevo", "POST", "/v3/emailCampaigns/7/sendNow", "application/json", ""},
		{"brevo", "POST", "/v3/contacts/doubleOptinConfirmation", "application/json",
			`{"email":"a@rcpt.example","includeListIds":[1],"templateId":2,"redirectionUrl":"https://evil.example/"}`},
		{"mailjet", "POST", "/v3/REST/newsletter/7/test", "application/json", `{"Recipients":[{"Email":"a@rcpt.example","Name":"A"}]}`},
		{"brevo", "POST", "/v3/emailCampaigns/7/sendReport", "application/json", `{"email":{"to":["a@rcpt.example","b@rcpt.example"],"body":"text of the client's own"}}`},
		{"brevo", "POST", "/v3/smsCampaigns/7/sendReport", "application/json", `{"email":{"to":["a@rcpt.example","b@rcpt.example"],"body":"text of the client's own"}}`},
		{"mailgun", "POST", "/v5/sandbox/auth_recipients?email=a%40rcpt.example", "application/json", ""},
		// Senders created, which the provider mails to verify.
		{"brevo", "POST", "/v3/senders", "application/json", `{"email":"a@rcpt.example","name":"A"}`},
		{"postmark", "POST", "/senders/", "application/json", `{"FromEmail":"a@rcpt.example","Name":"A"}`},
		{"postmark", "POST", "/senders/12/resend", "application/json", ""},
		{"sendgrid", "POST", "/v3/verified_senders", "application/json", `{"nickname":"a","from_email":"a@rcpt.example","reply_to":"a@rcpt.example","address":"x","city":"y","country":"z"}`},
		{"sendgrid", "POST", "/v3/verified_senders/resend/7", "application/json", ""},
		{"mailjet", "POST", "/v3/REST/sender", "application/json", `{"Email":"a@rcpt.example"}`},
		{"sendgrid", "PUT", "/v3/marketing/singlesends/s-1/schedule", "application/json", `{"send_at":"now"}`},
		{"resend", "POST", "/broadcasts", "application/json", `{"from":"ceo@evil.example","segment_id":"s-1","send":true}`},
		{"brevo", "POST", "/v3/emailCampaigns", "application/json", `{"name":"n","sender":{"email":"ceo@evil.example"},"scheduledAt":"2026-12-01T10:00:00Z"}`},
	} {
		h, st := testHandler(t, &Handler{MailAPI: c.dialect})
		name, scopes, domains := "limited", []string{"*"}, []string{"shop.example"}
		res, err := keys.New(st, keys.Options{}).Issue(context.Background(),
			keys.Spec{Name: &name, Scopes: &scopes, SenderDomains: &domains, Force: true}, "test")
		if err != nil {
			t.Fatal(err)
		}
		_, open := issue(t, st, "*")
		send := func(key string) *httptest.ResponseRecorder {
			return serveBody(t, h, okNextReading, key, c.method, c.path, c.ctype, []byte(c.body))
		}
		if w := send(res.Key); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "invalid_payload") {
			t.Errorf("%s %s %s with a key limited to shop.example: %d %s, want 400 invalid_payload", c.dialect, c.method, c.path, w.Code, w.Body)
		}
		if w := send(open); w.Code != http.StatusAccepted {
			t.Errorf("%s %s %s with a key without limits: %d %s, want it passed on", c.dialect, c.method, c.path, w.Code, w.Body)
		}
		// A broadcast or campaign created as a draft sends nothing (sending
		// it is a request of its own, refused above): the limited key may.
		if c.path == "/broadcasts" || c.path == "/v3/emailCampaigns" {
			draft := `{"from":"ceo@evil.example","sender":{"email":"ceo@evil.example"},"segment_id":"s-1"}`
			if w := serveBody(t, h, okNextReading, res.Key, "POST", c.path, c.ctype, []byte(draft)); w.Code != http.StatusAccepted {
				t.Errorf("%s: a draft with a key limited to shop.example: %d %s, want it passed on", c.path, w.Code, w.Body)
			}
		}
	}
}

// A POST whose override header names another method is done as that method
// by an upstream that honours the header (keygate scopes it so): a send as
// that method is a send here too, refused for a restricted key.
func TestASendByAnOverriddenMethodIsASend(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid"})
	name, scopes, domains := "limited", []string{"*"}, []string{"shop.example"}
	res, err := keys.New(st, keys.Options{}).Issue(context.Background(),
		keys.Spec{Name: &name, Scopes: &scopes, SenderDomains: &domains, Force: true}, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "/v3/marketing/singlesends/s-1/schedule", strings.NewReader(`{"send_at":"now"}`))
	r.Header.Set("Authorization", "Bearer "+res.Key)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-HTTP-Method-Override", "PUT")
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, okNextReading); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "invalid_payload") {
		t.Errorf("a Single Send scheduled by a POST overridden to PUT, with a key limited to shop.example: %d %s, want 400 invalid_payload", w.Code, w.Body)
	}
}

// SES's v1 API sends every action to "/": keygate reads its sends (from the
// form, or from the query string of a GET) and scopes them as the SES v2
// endpoint that sends the same way, so a key that may send through SES's v2
// API may send through its v1 API, under the same sender rules, and a scope
// line for "/" covers only the actions that send no mail.
func TestSESv1SendsAreReadAndScopedAsV2(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "ses", Scopes: []ScopeRule{
		{Scope: "mail.send", Method: "POST", Path: "/v2/email/outbound-*"},
		{Scope: "ses.admin", Path: "/"},
	}})
	issueLimited := func(scope string) string {
		name, scopes, domains := scope, []string{scope}, []string{"shop.example"}
		res, err := keys.New(st, keys.Options{}).Issue(context.Background(),
			keys.Spec{Name: &name, Scopes: &scopes, SenderDomains: &domains, Force: true}, "test")
		if err != nil {
			t.Fatal(err)
		}
		return res.Key
	}
	sender, admin := issueLimited("mail.send"), issueLimited("ses.admin")
	const (
		send     = "Action=SendEmail&Version=2010-12-01&Source=orders%40shop.example&Destination.ToAddresses.member.1=a%40rcpt.example"
		evilSend = "Action=SendEmail&Version=2010-12-01&Source=ceo%40evil.example&Destination.ToAddresses.member.1=a%40rcpt.example"
		list     = "Action=ListIdentities&Version=2010-12-01"
	)
	for _, c := range []struct {
		what, key, method, target, body string
		status                          int
		code                            string
	}{
		{"a send from the key's domain", sender, "POST", "/", send, 202, ""},
		{"a send from another domain", sender, "POST", "/", evilSend, 403, "sender_not_allowed"},
		{"a send from another domain in a GET's query string", sender, "GET", "/?" + evilSend, "", 403, "sender_not_allowed"},
		{"a send from the key's domain in a GET's query string", sender, "GET", "/?" + send, "", 202, ""},
		{"an action that sends no mail, with a send key", sender, "POST", "/", list, 403, "insufficient_scope"},
		{"a send, with a key for the other actions", admin, "POST", "/", send, 403, "insufficient_scope"},
		{"an action that sends no mail, with a key for it", admin, "POST", "/", list, 202, ""},
		{"a send hidden behind another action in the body", sender, "POST", "/?Action=SendEmail&Source=ceo%40evil.example", list, 400, "invalid_payload"},
		{"a form without an action", sender, "POST", "/", "Source=orders%40shop.example", 400, "invalid_payload"},
	} {
		w := serveSESv1(t, h, c.key, c.method, c.target, c.body)
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.code) {
			t.Errorf("%s: %d %s, want %d %s", c.what, w.Code, w.Body, c.status, c.code)
		}
		// Every refusal is in the XML SES's v1 clients read.
		if c.code != "" && !strings.HasPrefix(w.Body.String(), "<ErrorResponse") {
			t.Errorf("%s: the refusal is not SES's XML: %s", c.what, w.Body)
		}
	}
}

// SES's v1 actions that send no mail share "/" with the sends, so each is
// scoped by its name (a POST to /GetSendQuota), and a line for "/" covers
// the actions no line names: a key can read quotas without being able to
// delete identities.
func TestSESv1ActionsAreScopedByName(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "ses", Scopes: []ScopeRule{
		{Scope: "mail.send", Method: "POST", Path: "/v2/email/outbound-*"},
		{Scope: "ses.read", Method: "POST", Path: "/Get*"},
		{Scope: "ses.read", Method: "POST", Path: "/List*"},
		{Scope: "ses.admin", Path: "/"},
	}})
	_, reader := issue(t, st, "ses.read")
	_, admin := issue(t, st, "ses.admin")
	_, sender := issue(t, st, "mail.send")
	const send = "Action=SendEmail&Source=orders%40shop.example&Destination.ToAddresses.member.1=a%40rcpt.example"
	for _, c := range []struct {
		what, key, method, target, body string
		status                          int
		scope                           string // the scope a refusal names
	}{
		{"a listing, with a key for the lines naming it", reader, "POST", "/", "Action=ListIdentities", 202, ""},
		{"a quota, asked by GET", reader, "GET", "/?Action=GetSendQuota&Version=2010-12-01", "", 202, ""},
		{"a deletion, with a key for reading", reader, "POST", "/", "Action=DeleteIdentity&Identity=shop.example", 403, "ses.admin"},
		{"a deletion, with a key for the line for /", admin, "POST", "/", "Action=DeleteIdentity&Identity=shop.example", 202, ""},
		{"a quota, with a key for the line for / only", admin, "POST", "/", "Action=GetSendQuota", 403, "ses.read"},
		{"SendBounce, which no line names", reader, "POST", "/", "Action=SendBounce&BounceSender=a%40shop.example", 403, "ses.admin"},
		{"SendBounce, with a key for /", admin, "POST", "/", "Action=SendBounce&BounceSender=a%40shop.example", 202, ""},
		{"a name made up to match a line", reader, "POST", "/", "Action=Get%2F..%2FDeleteIdentity", 403, "ses.admin"},
		{"a send, with a key for reading", reader, "POST", "/", send, 403, "mail.send"},
		{"a send, with a send key", sender, "POST", "/", send, 202, ""},
	} {
		w := serveSESv1(t, h, c.key, c.method, c.target, c.body)
		if w.Code != c.status {
			t.Errorf("%s: %d %s, want %d", c.what, w.Code, w.Body, c.status)
		}
		if c.scope != "" && !strings.Contains(w.Body.String(), "insufficient_scope: the API key lacks the scope this route requires: "+c.scope+"<") {
			t.Errorf("%s: the refusal does not name %s: %s", c.what, c.scope, w.Body)
		}
	}
}

// withBodyLimit bounds the send bodies held at once to limit for the test,
// and checks that every byte a body took was given back by its end.
func withBodyLimit(t *testing.T, limit int64) {
	t.Helper()
	was, used := bodies.limit.Load(), bodies.used.Load()
	if used != 0 {
		t.Fatalf("send bodies hold %d bytes before the test: an earlier test did not give back what its bodies took", used)
	}
	bodies.limit.Store(limit)
	t.Cleanup(func() {
		bodies.limit.Store(was)
		if now := bodies.used.Load(); now != used {
			t.Errorf("send bodies hold %d bytes after the test, want %d: a body did not give back what it took", now, used)
		}
	})
}

// Clients with a valid key that send large bodies at once cannot make the
// gateway hold more than its bound: a body that finds no room waits for the
// bodies before it to be done, and past bodyWait is refused with 503
// gateway_busy and Retry-After.
func TestSendBodiesHeldAtOnceAreBounded(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/mail/send"}}})
	_, key := issue(t, st, "mail.send")
	// A 40 KB send holds a 64 KB buffer while the chain has it; two do not
	// fit in 100 KB.
	withBodyLimit(t, 100<<10)
	wait := bodyWait
	t.Cleanup(func() { bodyWait = wait })
	body := benchbody.SendGrid(1)
	body.Data = bytes.Replace(body.Data, []byte(`"subject":`), []byte(`"x":"`+strings.Repeat("x", 40<<10)+`","subject":`), 1)
	send := func(next caddyhttp.Handler) *httptest.ResponseRecorder { return serveSend(t, h, key, body, next) }

	entered, leave := make(chan struct{}), make(chan struct{})
	holding := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		close(entered)
		<-leave
		return okNextReading.ServeHTTP(w, r)
	})
	first := make(chan int, 1)
	go func() { first <- send(holding).Code }()
	select {
	case <-entered:
	case code := <-first:
		t.Fatalf("the first large body, alone: %d, want it held by the next handler", code)
	}
	if held := bodies.used.Load(); held != 64<<10 {
		t.Errorf("a 40 KB body holds %d bytes of the bound, want 64 KB (the size class of its length)", held)
	}

	bodyWait = 100 * time.Millisecond
	if w := send(okNextReading); w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"gateway_busy"`) || w.Header().Get("Retry-After") != "1" {
		t.Errorf("a second large body while the first is held, past the wait: %d %s (Retry-After %q); want 503 gateway_busy, Retry-After 1",
			w.Code, w.Body, w.Header().Get("Retry-After"))
	}

	// A client gone while it waits is not refused as gateway_busy.
	bodyWait = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r := httptest.NewRequestWithContext(ctx, "POST", body.Path, bytes.NewReader(body.Data))
	r.Header.Set("Authorization", "Bearer "+key)
	r.Header.Set("Content-Type", body.ContentType)
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	start := time.Now()
	if err := h.ServeHTTP(w, r, okNextReading); err != nil {
		t.Fatal(err)
	}
	if w.Code != 499 || !strings.Contains(w.Body.String(), `"client_closed"`) || time.Since(start) > 5*time.Second {
		t.Errorf("a body whose client went away while it waited: %d %s after %v; want 499 client_closed at once",
			w.Code, w.Body, time.Since(start))
	}

	third := make(chan int, 1)
	go func() { third <- send(okNextReading).Code }()
	time.Sleep(50 * time.Millisecond) // the third waits for room
	close(leave)
	if code := <-first; code != http.StatusAccepted {
		t.Errorf("the first body: %d, want it passed on", code)
	}
	if code := <-third; code != http.StatusAccepted {
		t.Errorf("a body that waited for the first: %d, want it passed on once the first was done", code)
	}
	if code := send(okNextReading).Code; code != http.StatusAccepted {
		t.Errorf("a large body once the others are done: %d, want it passed on", code)
	}
	// A body larger than the whole bound (a max_body above it) passes alone.
	bodies.limit.Store(50 << 10)
	bodyWait = 100 * time.Millisecond
	if code := send(okNextReading).Code; code != http.StatusAccepted {
		t.Errorf("a body larger than the bound, alone: %d, want it passed on", code)
	}
}

// Whatever becomes of a send body (passed on, refused for its sender or its
// size, unreadable, cut short, left unread by the next handler), it gives
// back what it took from the bound (withBodyLimit checks).
// requestBodyMaxSize is a body as Caddy's request_body handler passes it on
// with max_size: its error past the size is a 413 HandlerError wrapping
// http.MaxBytesError.
type requestBodyMaxSize struct{ io.ReadCloser }

func (b requestBodyMaxSize) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		err = caddyhttp.Error(http.StatusRequestEntityTooLarge, err)
	}
	return n, err
}

func TestEverySendBodyGivesBackWhatItHeld(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", MaxBody: 64 << 10, Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/mail/send"}}})
	withBodyLimit(t, 1<<30)
	name, scopes, domains := "limited", []string{"mail.send"}, []string{"shop.example.com"}
	res, err := keys.New(st, keys.Options{}).Issue(context.Background(),
		keys.Spec{Name: &name, Scopes: &scopes, SenderDomains: &domains, Force: true}, "test")
	if err != nil {
		t.Fatal(err)
	}
	good := benchbody.SendGrid(3)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		what   string
		body   io.Reader
		length int64 // the declared length: -1 for none (chunked), 0 for the body's own
		next   caddyhttp.Handler
		want   int
		ctx    context.Context // the request's, if not the default
		limit  int64           // Caddy's request_body max_size before keygate, if not 0
	}{
		{"passed on and read upstream", bytes.NewReader(good.Data), 0, okNextReading, 202, nil, 0},
		{"passed on, never read", bytes.NewReader(good.Data), 0, okNext, 202, nil, 0},
		{"refused for its sender", strings.NewReader(`{"from":{"email":"ceo@evil.example"},"personalizations":[{"to":[{"email":"a@b.org"}]}]}`), 0, okNextReading, 403, nil, 0},
		{"not JSON", strings.NewReader(`{"from":`), 0, okNextReading, 400, nil, 0},
		{"declared larger than max_body", bytes.NewReader(make([]byte, 100<<10)), 0, okNextReading, 413, nil, 0},
		{"sent larger than max_body, undeclared", bytes.NewReader(make([]byte, 100<<10)), -1, okNextReading, 413, nil, 0},
		{"shorter than declared", bytes.NewReader(good.Data), int64(len(good.Data)) + 10, okNextReading, 400, nil, 0},
		{"its client gone mid-body", io.MultiReader(bytes.NewReader(good.Data[:100]), iotest.ErrReader(errors.New("http2: stream reset"))),
			int64(len(good.Data)), okNextReading, 499, gone, 0},
		{"larger than Caddy's request_body max_size", bytes.NewReader(good.Data), 0, okNextReading, 413, nil, 100},
	} {
		r := httptest.NewRequest("POST", "/v3/mail/send", c.body)
		if c.ctx != nil {
			r = r.WithContext(c.ctx)
		}
		if c.length != 0 {
			r.ContentLength = c.length
		}
		if c.limit != 0 {
			r.Body = requestBodyMaxSize{http.MaxBytesReader(httptest.NewRecorder(), r.Body, c.limit)}
		}
		r.Header.Set("Authorization", "Bearer "+res.Key)
		r.Header.Set("Content-Type", "application/json")
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, c.next); err != nil {
			t.Fatal(err)
		}
		if w.Code != c.want {
			t.Errorf("%s: %d %s, want %d", c.what, w.Code, w.Body, c.want)
		}
	}
}

// TestUnreadableBodiesSayWhy: a send body that could not be read is
// invalid_payload with the reason a client can act on (its length header,
// a read timeout), never the error's own text, which may name addresses.
func TestUnreadableBodiesSayWhy(t *testing.T) {
	r := httptest.NewRequest("POST", "/v3/mail/send", nil)
	for _, c := range []struct {
		err  error
		want string
	}{
		{io.ErrUnexpectedEOF, "the request body could not be read: it ended before its Content-Length"},
		{errBodyTooLong, "the request body could not be read: it is longer than its Content-Length"},
		{&net.OpError{Op: "read", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 443}, Err: os.ErrDeadlineExceeded},
			"the request body could not be read: reading it timed out"},
		{&net.OpError{Op: "read", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 443}, Err: syscall.ECONNRESET},
			"the request body could not be read"},
	} {
		if d := bodyError(r, c.err); d.code != InvalidPayload || d.message != c.want {
			t.Errorf("bodyError(%v) = %s %q, want invalid_payload %q", c.err, d.code, d.message, c.want)
		}
	}
}

// A send with two Content-Type headers is refused before its body is read:
// keygate reads the first, and a provider reading the last would parse the
// body another way (another multipart boundary) than keygate checked it.
func TestASendWithTwoContentTypesIsRefused(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "mailgun", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/*/messages"}}})
	_, key := issue(t, st, "mail.send")
	body := benchbody.Get("mailgun-2k")
	r := httptest.NewRequest("POST", body.Path, bytes.NewReader(body.Data))
	r.Header.Set("Authorization", "Bearer "+key)
	r.Header.Add("Content-Type", body.ContentType)
	r.Header.Add("Content-Type", "multipart/form-data; boundary=another")
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, okNextReading); err != nil {
		t.Fatal(err)
	}
	if e := decodeError(t, w); w.Code != 400 || e.Error.Code != "invalid_payload" || !strings.Contains(e.Error.Message, "Content-Type") {
		t.Errorf("two Content-Type headers: %d %s, want 400 invalid_payload naming Content-Type", w.Code, w.Body)
	}
	if w := serveSend(t, h, key, body, okNextReading); w.Code != 202 {
		t.Errorf("the same send with one: %d %s", w.Code, w.Body)
	}
}

// A compressed send body is refused saying why, not as malformed JSON; a
// send body larger than max_body says the limit and how to raise it.
func TestASendIsRefusedForWhatItIsNot(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", MaxBody: 1 << 20, Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/mail/send"}}})
	_, key := issue(t, st, "mail.send")
	body := benchbody.Get("sendgrid-2k")
	for _, c := range []struct {
		name      string
		encodings []string
		data      []byte
		status    int
		want      string
	}{
		{"gzip", []string{"gzip"}, body.Data, 400, `Content-Encoding "gzip", which this gateway does not read; send it uncompressed`},
		// A provider that inflates may read the second header, or the
		// second coding of a list.
		{"gzip in a second header, after identity", []string{"identity", "gzip"}, body.Data, 400, `Content-Encoding "gzip", which`},
		{"gzip in a second header, after an empty one", []string{"", "gzip"}, body.Data, 400, `Content-Encoding "gzip", which`},
		{"gzip after identity in a list", []string{"identity, gzip"}, body.Data, 400, `Content-Encoding "gzip", which`},
		{"too large", nil, bytes.Repeat([]byte(" "), 2<<20), 413, "(max_body 1.0 MiB); the gateway's operator can raise max_body"},
	} {
		r := httptest.NewRequest("POST", body.Path, bytes.NewReader(c.data))
		r.Header.Set("Authorization", "Bearer "+key)
		r.Header.Set("Content-Type", body.ContentType)
		for _, e := range c.encodings {
			r.Header.Add("Content-Encoding", e)
		}
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, okNextReading); err != nil {
			t.Fatal(err)
		}
		if e := decodeError(t, w); w.Code != c.status || !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("%s: %d %s, want %d saying %q", c.name, w.Code, w.Body, c.status, c.want)
		}
	}
	for _, encodings := range [][]string{{"identity"}, {"Identity", ""}, {"identity, identity"}} {
		r := httptest.NewRequest("POST", body.Path, bytes.NewReader(body.Data))
		r.Header.Set("Authorization", "Bearer "+key)
		r.Header.Set("Content-Type", body.ContentType)
		for _, e := range encodings {
			r.Header.Add("Content-Encoding", e)
		}
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, okNextReading); err != nil {
			t.Fatal(err)
		}
		if w.Code != 202 {
			t.Errorf("Content-Encoding %q: %d %s, want 202", encodings, w.Code, w.Body)
		}
	}
}
