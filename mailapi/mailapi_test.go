package mailapi

import (
	"bytes"
	"mime/multipart"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimRight(b, "\n")
}

const jsonType = "application/json"

func multipartBody(t testing.TB, fields [][2]string) ([]byte, string) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, f := range fields {
		if f[0] == "message" {
			fw, _ := w.CreateFormFile("message", "message.mime")
			fw.Write([]byte(f[1]))
			continue
		}
		w.WriteField(f[0], f[1])
	}
	w.Close()
	return buf.Bytes(), w.FormDataContentType()
}

func TestInspectReadsSendersAndCountsRecipients(t *testing.T) {
	mgMultipart, mgType := multipartBody(t, [][2]string{{"from", "Shop <shop@mg.example.com>"}, {"to", "a@example.com, b@example.com"}, {"bcc", "c@example.com"}, {"text", "hi"}})
	mgMIME, mimeType := multipartBody(t, [][2]string{{"to", "a@example.com"}, {"to", "b@example.com"}, {"message", "From: Boss <boss@mg.example.com>\r\nTo: a@example.com\r\nSubject: x\r\n\r\nbody"}})
	cases := []struct {
		name, dialect, path, contentType string
		body                             []byte
		senders                          []string
		recipients                       int
		opaque                           bool
	}{
		{"sendgrid: top-level from, a personalization override, to+cc+bcc of every personalization", "sendgrid", "/v3/mail/send", jsonType,
			fixture(t, "sendgrid.json"), []string{"orders@shop.example.com", "sales@shop.example.com"}, 5, false},
		{"postmark: address lists with commas inside quoted names", "postmark", "/email", jsonType,
			fixture(t, "postmark.json"), []string{"sender@shop.example.com"}, 3, false},
		{"postmark: batch array", "postmark", "/email/batch", jsonType,
			fixture(t, "postmark_batch.json"), []string{"sender@shop.example.com", "sender2@shop.example.com"}, 4, false},
		{"postmark: batch with templates wrapped in Messages", "postmark", "/email/batchWithTemplates", jsonType,
			fixture(t, "postmark_batch_templates.json"), []string{"sender@shop.example.com", "sender@shop.example.com"}, 3, false},
		{"postmark: a trailing slash is the same endpoint", "postmark", "/email/", jsonType,
			fixture(t, "postmark.json"), []string{"sender@shop.example.com"}, 3, false},
		{"resend: to as an array, cc as a string", "resend", "/emails", jsonType,
			fixture(t, "resend.json"), []string{"onboarding@shop.example.com"}, 3, false},
		{"resend: batch", "resend", "/emails/batch", jsonType,
			fixture(t, "resend_batch.json"), []string{"onboarding@shop.example.com", "onboarding@shop.example.com"}, 4, false},
		{"ses: simple content", "ses", "/v2/email/outbound-emails", jsonType,
			fixture(t, "ses.json"), []string{"sender@shop.example.com"}, 2, false},
		{"ses: raw MIME gives the sender and its header recipients", "ses", "/v2/email/outbound-emails", jsonType,
			fixture(t, "ses_raw.json"), []string{"sender@shop.example.com"}, 3, false},
		{"ses: unreadable raw MIME is opaque", "ses", "/v2/email/outbound-emails", jsonType,
			[]byte(`{"Destination":{"ToAddresses":["a@example.com"]},"Content":{"Raw":{"Data":"bm90IG1pbWU="}}}`), nil, 1, true},
		{"mailjet: every message", "mailjet", "/v3.1/send", jsonType,
			fixture(t, "mailjet.json"), []string{"pilot@shop.example.com", "pilot@shop.example.com"}, 4, false},
		{"brevo: top-level and messageVersions recipients", "brevo", "/v3/smtp/email", jsonType,
			fixture(t, "brevo.json"), []string{"senderalex@shop.example.com"}, 4, false},
		{"mailpit: Bcc is a plain string array", "mailpit", "/api/v1/send", jsonType,
			fixture(t, "mailpit.json"), []string{"john@shop.example.com"}, 4, false},
		{"mailgun: urlencoded with repeated to fields, sending domain from the path", "mailgun", "/v3/mg.example.com/messages", "application/x-www-form-urlencoded",
			fixture(t, "mailgun.form"), []string{"mailgun@mg.example.com", "@mg.example.com"}, 4, false},
		{"mailgun: multipart", "mailgun", "/v3/MG.example.com/messages", mgType,
			mgMultipart, []string{"shop@mg.example.com", "@mg.example.com"}, 3, false},
		{"mailgun: messages.mime takes From from the MIME and recipients from the form", "mailgun", "/v3/mg.example.com/messages.mime", mimeType,
			mgMIME, []string{"boss@mg.example.com", "@mg.example.com"}, 2, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := Lookup(tc.dialect)
			if !ok {
				t.Fatalf("no dialect %q", tc.dialect)
			}
			orig := bytes.Clone(tc.body)
			m, err := d.Inspect(tc.path, tc.contentType, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(m.Senders, tc.senders) || m.Recipients != tc.recipients || m.Opaque != tc.opaque {
				t.Errorf("got senders %q, %d recipients, opaque %v; want %q, %d, %v", m.Senders, m.Recipients, m.Opaque, tc.senders, tc.recipients, tc.opaque)
			}
			if !bytes.Equal(orig, tc.body) {
				t.Error("Inspect modified the body")
			}
		})
	}
}

func TestInspectRejectsInvalidPayloads(t *testing.T) {
	cases := []struct {
		name, dialect, path, contentType, body, want string
	}{
		{"malformed JSON", "sendgrid", "/v3/mail/send", jsonType, `{"personalizations":[`, "invalid JSON"},
		{"not an object", "sendgrid", "/v3/mail/send", jsonType, `[1,2]`, "want"},
		{"missing from", "sendgrid", "/v3/mail/send", jsonType, `{"personalizations":[{"to":[{"email":"a@b.org"}]}]}`, `"from"`},
		{"missing personalizations", "sendgrid", "/v3/mail/send", jsonType, `{"from":{"email":"a@b.org"}}`, `"personalizations"`},
		{"from of the wrong type", "sendgrid", "/v3/mail/send", jsonType, `{"from":"a@b.org","personalizations":[]}`, `"from"`},
		{"recipient without an email", "sendgrid", "/v3/mail/send", jsonType, `{"from":{"email":"a@b.org"},"personalizations":[{"to":[{"name":"x"}]}]}`, `"to"[0]`},
		{"bad address", "postmark", "/email", jsonType, `{"From":"a@b.org","To":"not an address"}`, `"To"`},
		{"two senders in From", "postmark", "/email", jsonType, `{"From":"a@b.org, c@d.org","To":"x@y.org"}`, `"From"`},
		{"empty batch", "postmark", "/email/batch", jsonType, `[]`, "no messages"},
		{"batch element without From", "resend", "/emails/batch", jsonType, `[{"to":"a@b.org"}]`, "message 0"},
		{"to of the wrong type", "resend", "/emails", jsonType, `{"from":"a@b.org","to":5}`, `"to"`},
		{"ses raw that is not base64", "ses", "/v2/email/outbound-emails", jsonType, `{"Content":{"Raw":{"Data":"!!"}}}`, "base64"},
		{"mailjet without Messages", "mailjet", "/v3.1/send", jsonType, `{}`, `"Messages"`},
		{"mailgun without from", "mailgun", "/v3/mg.example.com/messages", "application/x-www-form-urlencoded", "to=a%40b.org", `"from"`},
		{"mailgun with a JSON body", "mailgun", "/v3/mg.example.com/messages", jsonType, `{}`, "Content-Type"},
		{"not a send endpoint", "sendgrid", "/v3/templates", jsonType, `{}`, "not a sendgrid send endpoint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := Lookup(tc.dialect)
			_, err := d.Inspect(tc.path, tc.contentType, []byte(tc.body))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestIsSend(t *testing.T) {
	cases := []struct {
		dialect, method, path string
		want                  bool
	}{
		{"sendgrid", "POST", "/v3/mail/send", true},
		{"sendgrid", "POST", "/v3/mail/send/", true},
		{"sendgrid", "GET", "/v3/mail/send", false},
		{"sendgrid", "POST", "/v3/mail/send/extra", false},
		{"sendgrid", "POST", "/v3/templates", false},
		{"mailgun", "POST", "/v3/mg.example.com/messages", true},
		{"mailgun", "POST", "/v3/mg.example.com/messages.mime", true},
		{"mailgun", "POST", "/v3//messages", false},
		{"mailgun", "POST", "/v3/domains", false},
		{"postmark", "POST", "/email/batchWithTemplates", true},
		{"postmark", "POST", "/emails", false},
		{"resend", "POST", "/emails", true},
	}
	for _, tc := range cases {
		d, _ := Lookup(tc.dialect)
		if got := d.IsSend(tc.method, tc.path); got != tc.want {
			t.Errorf("%s IsSend(%s %s) = %v, want %v", tc.dialect, tc.method, tc.path, got, tc.want)
		}
	}
	d, _ := Lookup("mailgun")
	if n := testing.AllocsPerRun(100, func() { d.IsSend("POST", "/v3/mg.example.com/messages") }); n != 0 {
		t.Errorf("IsSend allocates %v times", n)
	}
}

func TestSenderAllowed(t *testing.T) {
	domains := []string{"shop.example.com", "*.mail.example.com"}
	cases := []struct {
		addr string
		want bool
	}{
		{"a@shop.example.com", true},
		{"a@SHOP.Example.com", true},
		{"a@sub.shop.example.com", false},
		{"a@mail.example.com", false},
		{"a@news.mail.example.com", true},
		{"a@x.news.mail.example.com", true},
		{"a@evilmail.example.com", false},
		{"a@example.com", false},
		{"@shop.example.com", true},
		{"no-at-sign", false},
	}
	for _, tc := range cases {
		if got := SenderAllowed(tc.addr, domains); got != tc.want {
			t.Errorf("SenderAllowed(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if !SenderAllowed("any@where.org", nil) {
		t.Error("an empty domain list must allow every sender")
	}
}

func TestNamesListsEveryDialect(t *testing.T) {
	want := []string{"brevo", "mailgun", "mailjet", "mailpit", "postmark", "resend", "sendgrid", "ses"}
	if got := Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %v", got)
	}
}

// FuzzInspect feeds arbitrary bodies to every dialect's endpoints: Inspect
// must return a Message or an error, never panic.
func FuzzInspect(f *testing.F) {
	for _, name := range []string{"sendgrid.json", "postmark.json", "postmark_batch.json", "postmark_batch_templates.json",
		"resend.json", "resend_batch.json", "ses.json", "ses_raw.json", "mailjet.json", "brevo.json", "mailpit.json", "mailgun.form"} {
		b, _ := os.ReadFile(filepath.Join("testdata", name))
		f.Add(uint8(0), b)
	}
	mp, _ := multipartBody(f, [][2]string{{"from", "a@b.org"}, {"to", "c@d.org"}, {"message", "From: a@b.org\r\n\r\nx"}})
	f.Add(uint8(1), mp)
	type target struct {
		d           *Dialect
		path, ctype string
	}
	var targets []target
	for _, n := range Names() {
		d, _ := Lookup(n)
		for _, ep := range d.endpoints {
			path := strings.ReplaceAll(ep.path, "*", "mg.example.com")
			targets = append(targets, target{d, path, jsonType})
			if ep.shape == form || ep.shape == mimeForm {
				targets = append(targets,
					target{d, path, "application/x-www-form-urlencoded"},
					target{d, path, "multipart/form-data; boundary=" + boundaryOf(mp)})
			}
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		for i := 0; i < 3; i++ {
			tg := targets[(int(which)+i*7)%len(targets)]
			m, err := tg.d.Inspect(tg.path, tg.ctype, body)
			if err == nil && m.Recipients < 0 {
				t.Fatal("negative recipient count")
			}
		}
	})
}

func boundaryOf(mp []byte) string {
	line, _, _ := bytes.Cut(mp, []byte("\r\n"))
	return string(bytes.TrimPrefix(line, []byte("--")))
}

// BenchmarkInspectSendGrid20KB is a typical newsletter send: one
// personalization, a few recipients, 20 KB of HTML.
func BenchmarkInspectSendGrid20KB(b *testing.B) {
	html := strings.Repeat(`<p class=\"x\">Hello there, this is a newsletter paragraph with some text.</p>\n`, 250)
	body := []byte(`{"personalizations":[{"to":[{"email":"a@example.org","name":"A"},{"email":"b@example.org"}],"cc":[{"email":"c@example.org"}]}],` +
		`"from":{"email":"news@shop.example.com","name":"Shop"},"subject":"News","content":[{"type":"text/plain","value":"hello"},{"type":"text/html","value":"` + html + `"}]}`)
	d, _ := Lookup("sendgrid")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := d.Inspect("/v3/mail/send", jsonType, body)
		if err != nil || m.Recipients != 3 {
			b.Fatal(m, err)
		}
	}
}
