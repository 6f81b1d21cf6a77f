package mailapi

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"mime/multipart"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	jsonType = "application/json"
	formType = "application/x-www-form-urlencoded"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// multipartForm builds a Mailgun multipart body; a "message" field becomes a
// file part, as Mailgun's client libraries send it.
func multipartForm(t testing.TB, fields ...[2]string) ([]byte, string) {
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

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestInspect(t *testing.T) {
	mgMultipart, mgType := multipartForm(t, [2]string{"from", "Shop <shop@mg.example.com>"},
		[2]string{"to", "a@example.com, b@example.com"}, [2]string{"bcc", "c@example.com"}, [2]string{"text", "hi"})
	mgMIME, mimeType := multipartForm(t, [2]string{"to", "a@example.com"}, [2]string{"to", "b@example.com"},
		[2]string{"message", "From: Boss <boss@mg.example.com>\r\nTo: a@example.com\r\nSubject: x\r\n\r\nbody"})
	mgBadMIME, badMIMEType := multipartForm(t, [2]string{"to", "a@example.com"}, [2]string{"message", "From: <<<\r\n\r\nbody"})
	mgHeader, mgHeaderType := multipartForm(t, [2]string{"from", "shop@mg.example.com"}, [2]string{"h:From", "CEO <ceo@evil.example>"}, [2]string{"to", "a@example.com"})
	mgSender, mgSenderType := multipartForm(t, [2]string{"from", "shop@mg.example.com"}, [2]string{"h:Sender", "CEO <ceo@evil.example>"}, [2]string{"to", "a@example.com"})
	mgMIMESender, mimeSenderType := multipartForm(t, [2]string{"to", "a@example.com"},
		[2]string{"message", "From: Shop <shop@mg.example.com>\r\nSender: ceo@evil.example\r\nTo: a@example.com\r\nSubject: x\r\n\r\nbody"})
	sesSender := base64.StdEncoding.EncodeToString([]byte("From: shop@mg.example.com\r\nSender: CEO <ceo@evil.example>\r\nTo: a@example.com\r\nSubject: x\r\n\r\nbody"))

	tests := []struct {
		name, dialect, path, contentType string
		body                             []byte
		senders                          []string
		recipients                       int
		opaque                           bool
	}{
		{name: "sendgrid: top-level from (lower-cased) and a personalization's from override, to+cc+bcc of every personalization",
			dialect: "sendgrid", path: "/v3/mail/send", body: fixture(t, "sendgrid.json"),
			senders: []string{"sales@shop.example.com", "orders@shop.example.com"}, recipients: 5},
		{name: "sendgrid: member names match case-insensitively, so a From spelled differently is still seen",
			dialect: "sendgrid", path: "/v3/mail/send",
			body:    []byte(`{"FROM":{"Email":"a@shop.example.com"},"Personalizations":[{"TO":[{"EMAIL":"x@example.com"}]}]}`),
			senders: []string{"a@shop.example.com"}, recipients: 1},
		{name: "sendgrid: folding is Unicode's, as encoding/json's: a name with the long s (ſ), longer in bytes, still matches",
			dialect: "sendgrid", path: "/v3/mail/send",
			body:    []byte(`{"from":{"email":"a@shop.example.com"},"perſonalizations":[{"to":[{"email":"x@example.com"}],"bcc":[{"email":"y@example.com"}]}],"\u017fubject":"x"}`),
			senders: []string{"a@shop.example.com"}, recipients: 2},
		{name: "sendgrid: a repeated member counts every time it appears, whichever one the provider keeps",
			dialect: "sendgrid", path: "/v3/mail/send",
			body:    []byte(`{"from":{"email":"a@shop.example.com"},"from":{"email":"ceo@evil.example"},"personalizations":[{"to":[{"email":"x@example.com"}]}]}`),
			senders: []string{"a@shop.example.com", "ceo@evil.example"}, recipients: 1},
		{name: "sendgrid: the BCC mail setting's address is a recipient",
			dialect: "sendgrid", path: "/v3/mail/send",
			body: []byte(`{"from":{"email":"a@shop.example.com"},"personalizations":[{"to":[{"email":"x@example.com"}]}],` +
				`"mail_settings":{"sandbox_mode":{"enable":false},"bcc":{"enable":true,"email":"spy@evil.example"}}}`),
			senders: []string{"a@shop.example.com"}, recipients: 2},
		{name: "sendgrid: the BCC mail setting's address gets a copy of every personalization's email",
			dialect: "sendgrid", path: "/v3/mail/send",
			body: []byte(`{"from":{"email":"a@shop.example.com"},"mail_settings":{"bcc":{"enable":true,"email":"spy@evil.example"}},` +
				`"personalizations":[{"to":[{"email":"x@example.com"}]},{"to":[{"email":"y@example.com"}]},{"to":[{"email":"z@example.com"}]}]}`),
			senders: []string{"a@shop.example.com"}, recipients: 3 + 3},
		{name: "sendgrid: escaped member names and values are decoded",
			dialect: "sendgrid", path: "/v3/mail/send",
			body:    []byte(`{"fr\u006fm":{"email":"a\u0040shop.example.com"},"personalizations":[{"to":[{"email":"x@example.com"}]}]}`),
			senders: []string{"a@shop.example.com"}, recipients: 1},
		{name: "sendgrid: null and empty recipient fields count zero",
			dialect: "sendgrid", path: "/v3/mail/send",
			body:    []byte(`{"from":{"email":"a@shop.example.com"},"personalizations":[{"to":[{"email":"x@example.com"}],"cc":null,"bcc":[]}]}`),
			senders: []string{"a@shop.example.com"}, recipients: 1},
		{name: "postmark: address lists with commas inside quoted names; an empty Bcc counts zero",
			dialect: "postmark", path: "/email", body: fixture(t, "postmark.json"),
			senders: []string{"sender@shop.example.com"}, recipients: 3},
		{name: "postmark: a From holding two addresses reports both",
			dialect: "postmark", path: "/email", body: []byte(`{"From":"a@shop.example.com, b@evil.example","To":"x@example.com"}`),
			senders: []string{"a@shop.example.com", "b@evil.example"}, recipients: 1},
		{name: "postmark: names in encoded words of charsets net/mail does not decode (ISO-2022-JP, Shift_JIS, windows-1252) are read as any name",
			dialect: "postmark", path: "/email", body: []byte(`{"From":"=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?= <a@shop.example.com>",` +
				`"To":"=?Shift_JIS?B?k/qWe4zq?= <x@example.com>, =?windows-1252?Q?Caf=E9?= <y@example.com>","Cc":"=?koi8-r?b?8NLJ18XU?= =?x?q?=ZZ?= <z@example.com>"}`),
			senders: []string{"a@shop.example.com"}, recipients: 3},
		{name: "postmark: an encoded word in another charset names no address: the addr-spec after it is the sender",
			dialect: "postmark", path: "/email", body: []byte(`{"From":"=?ISO-2022-JP?B?` + b64("a@shop.example.com") + `?= <ceo@evil.example>","To":"x@example.com"}`),
			senders: []string{"ceo@evil.example"}, recipients: 1},
		{name: "postmark: withTemplate reads like a single email",
			dialect: "postmark", path: "/email/withTemplate", body: []byte(`{"TemplateAlias":"welcome","TemplateModel":{},"From":"a@shop.example.com","To":"x@example.com"}`),
			senders: []string{"a@shop.example.com"}, recipients: 1},
		{name: "postmark: a batch counts every message",
			dialect: "postmark", path: "/email/batch", body: fixture(t, "postmark_batch.json"),
			senders: []string{"sender@shop.example.com", "sender2@shop.example.com"}, recipients: 4},
		{name: "postmark: a batch repeating one From, another between, and a From of two addresses repeated: every sender counts",
			dialect: "postmark", path: "/email/batch",
			body: []byte(`[{"From":"Shop <a@shop.example.com>","To":"x@example.com"},{"From":"Shop <a@shop.example.com>","To":"y@example.com"},` +
				`{"From":"ceo@evil.example","To":"z@example.com"},{"From":"Shop <a@shop.example.com>","To":"w@example.com"},` +
				`{"From":"a@shop.example.com, b@evil.example","To":"v@example.com"},{"From":"a@shop.example.com, b@evil.example","To":"u@example.com"}]`),
			senders: []string{"a@shop.example.com", "ceo@evil.example", "a@shop.example.com", "b@evil.example", "a@shop.example.com", "b@evil.example"}, recipients: 6},
		{name: "postmark: batchWithTemplates wrapped in Messages",
			dialect: "postmark", path: "/email/batchWithTemplates", body: fixture(t, "postmark_batch_templates.json"),
			senders: []string{"sender@shop.example.com"}, recipients: 3},
		{name: "postmark: batchWithTemplates as a bare array",
			dialect: "postmark", path: "/email/batchWithTemplates", body: fixture(t, "postmark_batch.json"),
			senders: []string{"sender@shop.example.com", "sender2@shop.example.com"}, recipients: 4},
		{name: "postmark: a trailing slash is the same endpoint",
			dialect: "postmark", path: "/email/", body: fixture(t, "postmark.json"),
			senders: []string{"sender@shop.example.com"}, recipients: 3},
		{name: "resend: to as an array, cc as a string",
			dialect: "resend", path: "/emails", body: fixture(t, "resend.json"),
			senders: []string{"onboarding@shop.example.com"}, recipients: 3},
		{name: "resend: a batch counts every message",
			dialect: "resend", path: "/emails/batch", body: fixture(t, "resend_batch.json"),
			senders: []string{"onboarding@shop.example.com"}, recipients: 4},
		{name: "ses: simple content",
			dialect: "ses", path: "/v2/email/outbound-emails", body: fixture(t, "ses.json"),
			senders: []string{"sender@shop.example.com"}, recipients: 2},
		{name: "ses: Pinpoint Email's send, the v2 one's shape",
			dialect: "ses", path: "/v1/email/outbound-emails", body: fixture(t, "ses.json"),
			senders: []string{"sender@shop.example.com"}, recipients: 2},
		{name: "ses: raw MIME without FromEmailAddress gives the sender; the Destination gives the recipients",
			dialect: "ses", path: "/v2/email/outbound-emails", body: fixture(t, "ses_raw.json"),
			senders: []string{"sender@shop.example.com"}, recipients: 1},
		{name: "ses: raw MIME without a Destination gives the recipients too, whatever the charset of the names",
			dialect: "ses", path: "/v2/email/outbound-emails", body: fixture(t, "ses_raw_headers.json"),
			senders: []string{"cafe@shop.example.com"}, recipients: 3},
		{name: "ses: both FromEmailAddress and the raw From header are senders",
			dialect: "ses", path: "/v2/email/outbound-emails",
			body:    []byte(`{"FromEmailAddress":"a@shop.example.com","Content":{"Raw":{"Data":"` + b64("From: ceo@evil.example\r\nTo: x@example.com\r\n\r\nhi") + `"}}}`),
			senders: []string{"a@shop.example.com", "ceo@evil.example"}, recipients: 1},
		{name: "ses: raw MIME that cannot be read is opaque, not an error",
			dialect: "ses", path: "/v2/email/outbound-emails",
			body:       []byte(`{"Destination":{"ToAddresses":["a@example.com"]},"Content":{"Raw":{"Data":"` + b64("no headers at all") + `"}}}`),
			recipients: 1, opaque: true},
		{name: "ses: raw data that is not base64 is opaque",
			dialect: "ses", path: "/v2/email/outbound-emails",
			body:   []byte(`{"Content":{"Raw":{"Data":"!!"}}}`),
			opaque: true},
		{name: "ses: a bulk send counts every entry's destination",
			dialect: "ses", path: "/v2/email/outbound-bulk-emails", body: fixture(t, "ses_bulk.json"),
			senders: []string{"news@shop.example.com"}, recipients: 3},
		{name: "ses: a bulk send's template headers and an entry's ReplacementHeaders name senders too",
			dialect: "ses", path: "/v2/email/outbound-bulk-emails",
			body: []byte(`{"FromEmailAddress":"a@shop.example","DefaultContent":{"Template":{"TemplateName":"t","Headers":[{"Name":"From","Value":"ceo@evil.example"}]}},` +
				`"BulkEmailEntries":[{"Destination":{"ToAddresses":["x@example.com"]},"ReplacementHeaders":[{"Name":"Sender","Value":"boss@evil.example"}]}]}`),
			senders: []string{"a@shop.example", "ceo@evil.example", "boss@evil.example"}, recipients: 1},
		{name: "postmark: a bulk send's Headers, for every message or one's, name senders too",
			dialect: "postmark", path: "/email/bulk",
			body: []byte(`{"From":"a@shop.example","Headers":[{"Name":"From","Value":"ceo@evil.example"}],` +
				`"Messages":[{"To":"x@example.com","Headers":[{"Name":"Sender","Value":"boss@evil.example"}]}]}`),
			senders: []string{"a@shop.example", "ceo@evil.example", "boss@evil.example"}, recipients: 1},
		{name: "ses: a custom verification email is sent as a stored template's sender, which keygate cannot see",
			dialect: "ses", path: "/v2/email/outbound-custom-verification-emails",
			body:       []byte(`{"EmailAddress":"a@example.com","TemplateName":"verify"}`),
			recipients: 1, opaque: true},
		{name: "ses: a v1 SendEmail (a form to /) names its Source and numbered Destination lists",
			dialect: "ses", path: "/", contentType: "application/x-www-form-urlencoded; charset=utf-8",
			body: []byte("Action=SendEmail&Version=2010-12-01&Source=Shop+%3Corders%40shop.example%3E" +
				"&Destination.ToAddresses.member.1=a%40example.com&Destination.ToAddresses.member.2=b%40example.com" +
				"&Destination.CcAddresses.member.1=c%40example.com&Destination.BccAddresses.member.1=d%40example.com" +
				"&Message.Subject.Data=hi&Message.Body.Text.Data=from%3A+ceo%40evil.example"),
			senders: []string{"orders@shop.example"}, recipients: 4},
		{name: "ses: a v1 SendRawEmail names the MIME From and Source, and its Destinations",
			dialect: "ses", path: "/", contentType: "application/x-www-form-urlencoded",
			body: []byte("Action=SendRawEmail&Source=orders%40shop.example&Destinations.member.1=a%40example.com" +
				"&RawMessage.Data=" + url.QueryEscape(b64("From: ceo@evil.example\r\nTo: x@example.com, y@example.com\r\n\r\nhi"))),
			senders: []string{"orders@shop.example", "ceo@evil.example"}, recipients: 1},
		{name: "ses: a v1 SendRawEmail without Destinations counts the MIME recipients",
			dialect: "ses", path: "/", contentType: "application/x-www-form-urlencoded",
			body:    []byte("Action=SendRawEmail&RawMessage.Data=" + url.QueryEscape(b64("From: a@shop.example\r\nTo: x@example.com, y@example.com\r\n\r\nhi"))),
			senders: []string{"a@shop.example"}, recipients: 2},
		{name: "ses: a v1 SendBulkTemplatedEmail counts every destination",
			dialect: "ses", path: "/", contentType: "application/x-www-form-urlencoded",
			body: []byte("Action=SendBulkTemplatedEmail&Source=news%40shop.example&Template=t&DefaultTemplateData=%7B%7D" +
				"&Destinations.member.1.Destination.ToAddresses.member.1=a%40example.com" +
				"&Destinations.member.1.Destination.ToAddresses.member.2=b%40example.com" +
				"&Destinations.member.2.Destination.CcAddresses.member.1=c%40example.com" +
				"&Destinations.member.2.ReplacementTemplateData=%7B%7D"),
			senders: []string{"news@shop.example"}, recipients: 3},
		{name: "ses: a v1 SendRawEmail whose MIME cannot be read is opaque",
			dialect: "ses", path: "/", contentType: "application/x-www-form-urlencoded",
			body:   []byte("Action=SendRawEmail&RawMessage.Data=!!"),
			opaque: true},
		{name: "postmark: a bulk send names its From and every message's recipients",
			dialect: "postmark", path: "/email/bulk",
			body: []byte(`{"From":"News <news@shop.example>","Subject":"s","TextBody":"t","MessageStream":"broadcast",` +
				`"Messages":[{"To":"a@example.com","TemplateModel":{"n":1}},{"To":"b@example.com, c@example.com","Cc":"d@example.com","Bcc":"e@example.com"}]}`),
			senders: []string{"news@shop.example"}, recipients: 5},
		{name: "mailjet: a send of the older v3 API names FromEmail, Recipients and the header lists",
			dialect: "mailjet", path: "/v3/send",
			body: []byte(`{"FromEmail":"ceo@evil.example","FromName":"CEO","Recipients":[{"Email":"a@example.com","Name":"A"}],` +
				`"To":"B <b@example.com>, c@example.com","Cc":"d@example.com","Bcc":"e@example.com","Subject":"s","Text-part":"t"}`),
			senders: []string{"ceo@evil.example"}, recipients: 5},
		{name: "mailjet: a v3 batch names every message's sender and recipients",
			dialect: "mailjet", path: "/v3/send",
			body: []byte(`{"Messages":[{"FromEmail":"a@shop.example","Recipients":[{"Email":"x@example.com"}]},` +
				`{"FromEmail":"ceo@evil.example","To":"y@example.com, z@example.com"}]}`),
			senders: []string{"a@shop.example", "ceo@evil.example"}, recipients: 3},
		{name: "mailjet: a v3 batch from mailjet-apiv3-go, whose top level has an empty FromEmail",
			dialect: "mailjet", path: "/v3/send",
			body:    []byte(`{"FromEmail":"","FromName":"","Subject":"","Messages":[{"FromEmail":"a@shop.example","FromName":"","Subject":"s","To":"x@example.com"}]}`),
			senders: []string{"a@shop.example"}, recipients: 1},
		{name: "mailjet: a v3 template without FromEmail may send as the template's sender",
			dialect: "mailjet", path: "/v3/send", body: []byte(`{"Mj-TemplateID":"7","Recipients":[{"Email":"x@example.com"}]}`),
			recipients: 1, opaque: true},
		{name: "mailjet: every message",
			dialect: "mailjet", path: "/v3.1/send", body: fixture(t, "mailjet.json"),
			senders: []string{"pilot@shop.example.com"}, recipients: 4},
		{name: "mailjet: Globals give every message its From and add their recipients to each",
			dialect: "mailjet", path: "/v3.1/send", body: fixture(t, "mailjet_globals.json"),
			senders: []string{"pilot@shop.example.com"}, recipients: 4},
		{name: "mailjet: TemplateErrorReporting is a recipient: Mailjet sends it a copy of a message whose template fails",
			dialect: "mailjet", path: "/v3.1/send",
			body: []byte(`{"Messages":[{"From":{"Email":"a@shop.example"},"To":[{"Email":"x@example.com"}],"TemplateLanguage":true,` +
				`"HTMLPart":"{{ broken","TemplateErrorReporting":{"Email":"spy@evil.example","Name":"S"}}]}`),
			senders: []string{"a@shop.example"}, recipients: 2},
		{name: "mailjet: TemplateErrorReporting in Globals is a recipient of every message",
			dialect: "mailjet", path: "/v3.1/send",
			body: []byte(`{"Globals":{"From":{"Email":"a@shop.example"},"TemplateErrorReporting":{"Email":"spy@evil.example"}},` +
				`"Messages":[{"To":[{"Email":"x@example.com"}]},{"To":[{"Email":"y@example.com"}]}]}`),
			senders: []string{"a@shop.example"}, recipients: 4},
		{name: "mailjet: a v3 send's Mj-TemplateErrorReporting is a recipient",
			dialect: "mailjet", path: "/v3/send",
			body:    []byte(`{"FromEmail":"a@shop.example","To":"x@example.com","Mj-TemplateLanguage":true,"Mj-TemplateErrorReporting":"spy@evil.example"}`),
			senders: []string{"a@shop.example"}, recipients: 2},
		{name: "mailjet: a message on a template without From is opaque",
			dialect: "mailjet", path: "/v3.1/send", body: []byte(`{"Messages":[{"TemplateID":1,"To":[{"Email":"a@example.com"}]}]}`),
			recipients: 1, opaque: true},
		{name: "mailjet: a template in Globals may give every message without From the template's sender (Django-Anymail's template_id, from_email None)",
			dialect: "mailjet", path: "/v3.1/send",
			body:       []byte(`{"Globals":{"Subject":"s","TemplateID":7,"TemplateLanguage":true},"Messages":[{"To":[{"Email":"a@example.com"},{"Email":"b@example.com"}]}]}`),
			recipients: 2, opaque: true},
		{name: "mailjet: a template in Globals after the messages is theirs too",
			dialect: "mailjet", path: "/v3.1/send", body: []byte(`{"Messages":[{"To":[{"Email":"a@example.com"}]},{"To":[{"Email":"b@example.com"}]}],"Globals":{"TemplateID":7}}`),
			recipients: 2, opaque: true},
		{name: "mailjet: a message's own From wins over a template in Globals",
			dialect: "mailjet", path: "/v3.1/send", body: []byte(`{"Globals":{"TemplateID":7},"Messages":[{"From":{"Email":"a@shop.example"},"To":[{"Email":"x@example.com"}]}]}`),
			senders: []string{"a@shop.example"}, recipients: 1},
		{name: "brevo: top-level and messageVersions recipients",
			dialect: "brevo", path: "/v3/smtp/email", body: fixture(t, "brevo.json"),
			senders: []string{"senderalex@shop.example.com"}, recipients: 4},
		{name: "brevo: the top-level cc and bcc receive every message version, counted once a version",
			dialect: "brevo", path: "/v3/smtp/email",
			body: []byte(`{"sender":{"email":"a@shop.example"},"cc":[{"email":"c@example.com"}],"messageVersions":[` +
				`{"to":[{"email":"x@example.com"}]},{"to":[{"email":"y@example.com"}]},{"to":[{"email":"z@example.com"}]}],` +
				`"bcc":[{"email":"b1@example.com"},{"email":"b2@example.com"}]}`),
			senders: []string{"a@shop.example"}, recipients: 3 + 3*3},
		{name: "brevo: a version's own cc replaces the top-level one at Brevo, and both count (keygate errs towards seeing more)",
			dialect: "brevo", path: "/v3/smtp/email",
			body: []byte(`{"sender":{"email":"a@shop.example"},"bcc":[{"email":"b@example.com"}],"messageVersions":[` +
				`{"to":[{"email":"x@example.com"}],"bcc":[{"email":"v@example.com"}]},{"to":[{"email":"y@example.com"}]}]}`),
			senders: []string{"a@shop.example"}, recipients: 2 + 1 + 2},
		{name: "brevo: without messageVersions the cc and bcc count once",
			dialect: "brevo", path: "/v3/smtp/email",
			body:    []byte(`{"sender":{"email":"a@shop.example"},"to":[{"email":"x@example.com"}],"cc":[{"email":"c@example.com"}],"bcc":[{"email":"b@example.com"}]}`),
			senders: []string{"a@shop.example"}, recipients: 3},
		{name: "mailgun: with recipient-variables each to gets a message of its own, and cc and bcc a copy of every one",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: formType,
			body: []byte("from=a%40shop.example&to=x%40example.com&to=y%40example.com%2C+z%40example.com&cc=c%40example.com" +
				"&bcc=b1%40example.com%2C+b2%40example.com&recipient-variables=%7B%7D"),
			senders: []string{"a@shop.example"}, recipients: 3 + 3*3},
		{name: "mailgun: recipient-variables count after the fields they split too",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: formType,
			body:    []byte("recipient-variables=%7B%22x%40example.com%22%3A%7B%7D%7D&from=a%40shop.example&bcc=b%40example.com&to=x%40example.com&to=y%40example.com"),
			senders: []string{"a@shop.example"}, recipients: 2 + 2},
		{name: "mailgun: recipient-variables given as the SMTP header split the message too (keygate errs towards seeing more)",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: formType,
			body:    []byte("from=a%40shop.example&to=x%40example.com&to=y%40example.com&cc=c%40example.com&h%3AX-Mailgun-Recipient-Variables=%7B%7D"),
			senders: []string{"a@shop.example"}, recipients: 2 + 2},
		{name: "mailgun: without recipient-variables the cc and bcc count once",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: formType,
			body:    []byte("from=a%40shop.example&to=x%40example.com&to=y%40example.com&cc=c%40example.com&bcc=b%40example.com&recipient-variables="),
			senders: []string{"a@shop.example"}, recipients: 4},
		{name: "mailgun: a multipart batch send counts the copies too",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: "multipart/form-data; boundary=b",
			body: []byte("--b\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\na@shop.example\r\n" +
				"--b\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\nx@example.com\r\n" +
				"--b\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\ny@example.com\r\n" +
				"--b\r\nContent-Disposition: form-data; name=\"bcc\"\r\n\r\nb@example.com\r\n" +
				"--b\r\nContent-Disposition: form-data; name=\"recipient-variables\"\r\n\r\n{}\r\n--b--\r\n"),
			senders: []string{"a@shop.example"}, recipients: 2 + 2},
		{name: "mailgun: a stored template without from hides the sender (the template's From is sent)",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: formType, body: []byte("template=welcome&to=a%40example.com"),
			recipients: 1, opaque: true},
		{name: "resend: a stored template without from hides the sender",
			dialect: "resend", path: "/emails", body: []byte(`{"template":{"id":"t-1","variables":{"n":1}},"to":"a@example.com"}`),
			recipients: 1, opaque: true},
		{name: "resend: a template beside a from is not opaque (the from is sent)",
			dialect: "resend", path: "/emails", body: []byte(`{"from":"a@shop.example","template":{"id":"t-1"},"to":"x@example.com"}`),
			senders: []string{"a@shop.example"}, recipients: 1},
		{name: "brevo: a template without a sender hides the sender",
			dialect: "brevo", path: "/v3/smtp/email", body: fixture(t, "brevo_template.json"),
			recipients: 1, opaque: true},
		{name: "brevo: a sender given by id is opaque",
			dialect: "brevo", path: "/v3/smtp/email", body: []byte(`{"sender":{"id":2},"to":[{"email":"a@example.com"}],"subject":"s","htmlContent":"h"}`),
			recipients: 1, opaque: true},
		{name: "brevo: a sender id beside an email is opaque too (Brevo may prefer the id)",
			dialect: "brevo", path: "/v3/smtp/email", body: []byte(`{"sender":{"email":"a@shop.example.com","id":7},"to":[{"email":"a@example.com"}],"subject":"s","htmlContent":"h"}`),
			senders: []string{"a@shop.example.com"}, recipients: 1, opaque: true},
		{name: "brevo: a template beside an explicit sender is not (the sender wins)",
			dialect: "brevo", path: "/v3/smtp/email", body: []byte(`{"sender":{"email":"a@shop.example.com"},"templateId":3,"to":[{"email":"a@example.com"}]}`),
			senders: []string{"a@shop.example.com"}, recipients: 1},
		{name: "mailpit: Bcc is a plain string array",
			dialect: "mailpit", path: "/api/v1/send", body: fixture(t, "mailpit.json"),
			senders: []string{"john@shop.example.com"}, recipients: 4},
		{name: "mailgun: urlencoded with repeated to fields",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: formType, body: fixture(t, "mailgun.form"),
			senders: []string{"mailgun@mg.example.com"}, recipients: 4},
		{name: "mailgun: multipart",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: mgType, body: mgMultipart,
			senders: []string{"shop@mg.example.com"}, recipients: 3},
		{name: "mailgun: an h:From header is a sender too",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: mgHeaderType, body: mgHeader,
			senders: []string{"shop@mg.example.com", "ceo@evil.example"}, recipients: 1},
		{name: "mailgun: an h:Sender header is a sender too",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: mgSenderType, body: mgSender,
			senders: []string{"shop@mg.example.com", "ceo@evil.example"}, recipients: 1},
		{name: "mailgun: messages.mime's Sender header is a sender too",
			dialect: "mailgun", path: "/v3/mg.example.com/messages.mime", contentType: mimeSenderType, body: mgMIMESender,
			senders: []string{"shop@mg.example.com", "ceo@evil.example"}, recipients: 1},
		{name: "ses: raw content's Sender header is a sender too",
			dialect: "ses", path: "/v2/email/outbound-emails", body: []byte(`{"Content":{"Raw":{"Data":"` + sesSender + `"}}}`),
			senders: []string{"shop@mg.example.com", "ceo@evil.example"}, recipients: 1},
		{name: "sendgrid: a From or Sender among custom headers, top-level or a personalization's, is a sender too",
			dialect: "sendgrid", path: "/v3/mail/send",
			body: []byte(`{"from":{"email":"a@shop.example"},"headers":{"sender":"CEO <ceo@evil.example>","X-Tag":"t"},` +
				`"personalizations":[{"to":[{"email":"x@example.com"}],"headers":{"From":"boss@evil.example"}}]}`),
			senders: []string{"a@shop.example", "ceo@evil.example", "boss@evil.example"}, recipients: 1},
		{name: "resend: a Sender among custom headers is a sender too",
			dialect: "resend", path: "/emails", body: []byte(`{"from":"a@shop.example","to":"x@example.com","headers":{"Sender":"ceo@evil.example"}}`),
			senders: []string{"a@shop.example", "ceo@evil.example"}, recipients: 1},
		{name: "mailjet: a From among a message's Headers is a sender too",
			dialect: "mailjet", path: "/v3.1/send",
			body:    []byte(`{"Messages":[{"From":{"Email":"a@shop.example"},"To":[{"Email":"x@example.com"}],"Headers":{"From":"ceo@evil.example"}}]}`),
			senders: []string{"a@shop.example", "ceo@evil.example"}, recipients: 1},
		{name: "mailjet: a Sender beside a template does not stand in for the template's From",
			dialect: "mailjet", path: "/v3.1/send",
			body:    []byte(`{"Messages":[{"Sender":{"Email":"a@shop.example"},"TemplateID":1,"To":[{"Email":"x@example.com"}]}]}`),
			senders: []string{"a@shop.example"}, recipients: 1, opaque: true},
		{name: "brevo: a Sender among custom headers does not stand in for a template's sender",
			dialect: "brevo", path: "/v3/smtp/email",
			body:    []byte(`{"templateId":3,"headers":{"Sender":"a@shop.example"},"to":[{"email":"x@example.com"}]}`),
			senders: []string{"a@shop.example"}, recipients: 1, opaque: true},
		{name: "postmark: a From or Sender in Headers, as a name and a value, is a sender too; other headers are not",
			dialect: "postmark", path: "/email",
			body: []byte(`{"From":"a@shop.example","To":"x@example.com","Headers":[{"Name":"X-Tag","Value":"not an address"},` +
				`{"Value":"ceo@evil.example","Name":"SENDER"},{"Name":"From","Value":"b\u0040evil.example"}]}`),
			senders: []string{"a@shop.example", "ceo@evil.example", "b@evil.example"}, recipients: 1},
		{name: "postmark: a header pair's From counts whichever of a repeated Name a decoder keeps",
			dialect: "postmark", path: "/email",
			body: []byte(`{"From":"a@shop.example","To":"x@example.com","Headers":[{"Name":"From","Value":"ceo@evil.example","Name":"X-Tag"},` +
				`{"name":"Sender","Value":"boss@evil.example","Name":"X-Other"}]}`),
			senders: []string{"a@shop.example", "ceo@evil.example", "boss@evil.example"}, recipients: 1},
		{name: "postmark: every value of a From pair with a repeated Value counts",
			dialect: "postmark", path: "/email",
			body:    []byte(`{"From":"a@shop.example","To":"x@example.com","Headers":[{"Name":"From","Value":"ceo@evil.example","Value":"a@shop.example"}]}`),
			senders: []string{"a@shop.example", "ceo@evil.example", "a@shop.example"}, recipients: 1},
		{name: "ses: a Sender in a simple message's Headers is a sender too",
			dialect: "ses", path: "/v2/email/outbound-emails",
			body: []byte(`{"FromEmailAddress":"a@shop.example","Destination":{"ToAddresses":["x@example.com"]},` +
				`"Content":{"Simple":{"Subject":{"Data":"s"},"Body":{"Text":{"Data":"t"}},"Headers":[{"Name":"Sender","Value":"ceo@evil.example"}]}}}`),
			senders: []string{"a@shop.example", "ceo@evil.example"}, recipients: 1},
		{name: "mailgun: messages.mime takes From from the MIME and recipients from the form",
			dialect: "mailgun", path: "/v3/mg.example.com/messages.mime", contentType: mimeType, body: mgMIME,
			senders: []string{"boss@mg.example.com"}, recipients: 2},
		{name: "mailgun: messages.mime whose headers cannot be read is opaque",
			dialect: "mailgun", path: "/v3/mg.example.com/messages.mime", contentType: badMIMEType, body: mgBadMIME,
			recipients: 1, opaque: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := Lookup(tt.dialect)
			if !ok {
				t.Fatalf("no dialect %q", tt.dialect)
			}
			ct := tt.contentType
			if ct == "" {
				ct = jsonType
			}
			orig := bytes.Clone(tt.body)
			m, err := d.Inspect(tt.path, ct, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(m.Senders, tt.senders) || m.Recipients != tt.recipients || m.Opaque != tt.opaque {
				t.Errorf("got senders %q, %d recipients, opaque %v; want %q, %d, %v",
					m.Senders, m.Recipients, m.Opaque, tt.senders, tt.recipients, tt.opaque)
			}
			if !bytes.Equal(orig, tt.body) {
				t.Error("Inspect modified the body")
			}
		})
	}
}

func TestInspectSendingDomain(t *testing.T) {
	form := []byte("from=shop%40shop.example.com&to=a%40example.com")
	mime, mimeType := multipartForm(t, [2]string{"to", "a@example.com"},
		[2]string{"message", "From: shop@shop.example.com\r\nTo: a@example.com\r\n\r\nbody"})
	tests := []struct {
		name, dialect, path, contentType string
		body                             []byte
		want                             []string
	}{
		{name: "mailgun: the domain in the path is a sending domain",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", contentType: formType, body: form, want: []string{"mg.example.com"}},
		{name: "mailgun: messages.mime names its sending domain too",
			dialect: "mailgun", path: "/v3/mg.example.com/messages.mime", contentType: mimeType, body: mime, want: []string{"mg.example.com"}},
		{name: "mailgun: the sending domain is lower-cased",
			dialect: "mailgun", path: "/v3/MG.Example.COM/messages", contentType: formType, body: form, want: []string{"mg.example.com"}},
		{name: "mailgun: repeated and trailing slashes do not hide the domain",
			dialect: "mailgun", path: "//v3//mg.example.com//messages/", contentType: formType, body: form, want: []string{"mg.example.com"}},
		{name: "mailgun: dot segments resolve first, so the domain is the one the cleaned path names",
			dialect: "mailgun", path: "/v3/shop.example.com/../billing.example.com/messages", contentType: formType, body: form, want: []string{"billing.example.com"}},
		{name: "mailgun: a dot segment after the domain does not replace it",
			dialect: "mailgun", path: "/v3/mg.example.com/./x/../messages", contentType: formType, body: form, want: []string{"mg.example.com"}},
		{name: "mailgun: a backslash separates segments, so the domain is the one IIS would read",
			dialect: "mailgun", path: `/v3\mg.example.com\..\billing.example.com\messages`, contentType: formType, body: form, want: []string{"billing.example.com"}},
		{name: "sendgrid: a fixed send path names no sending domain",
			dialect: "sendgrid", path: "/v3/mail/send", contentType: jsonType, body: fixture(t, "sendgrid.json"), want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := Lookup(tt.dialect)
			m, err := d.Inspect(tt.path, tt.contentType, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(m.SendingDomains, tt.want) {
				t.Errorf("sending domains %q, want %q", m.SendingDomains, tt.want)
			}
		})
	}
}

// TestSendingDomainTakesNoAllocationOfItsOwn: a Mailgun send's sending
// domain shares the senders' allocation, and neither list can then write
// into the other.
func TestSendingDomainTakesNoAllocationOfItsOwn(t *testing.T) {
	d, _ := Lookup("mailgun")
	body, ctype := multipartForm(t, [2]string{"from", "shop@shop.example.com"}, [2]string{"to", "a@example.com"})
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := d.Inspect("/v3/mg.example.com/messages", ctype, body); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 { // the sender and the list
		t.Errorf("%v allocations, want 2", allocs)
	}
	m, err := d.Inspect("/v3/mg.example.com/messages", ctype, body)
	if err != nil {
		t.Fatal(err)
	}
	senders := append(m.Senders, "other@example.org")
	domains := append(m.SendingDomains, "other.example.org")
	if !slices.Equal(m.SendingDomains, []string{"mg.example.com"}) || !slices.Equal(senders, []string{"shop@shop.example.com", "other@example.org"}) ||
		!slices.Equal(domains, []string{"mg.example.com", "other.example.org"}) {
		t.Errorf("senders %q and domains %q after appending to each", senders, m.SendingDomains)
	}
}

func TestInspectJSONCharsets(t *testing.T) {
	d, _ := Lookup("resend")
	for _, ct := range []string{"", "application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8",
		`application/json; charset="utf-8"`, "application/json; charset=utf8", "application/json; charset=us-ascii", "application/json; x=1"} {
		if _, err := d.Inspect("/emails", ct, []byte(`{"from":"a@b.org","to":"x@y.org"}`)); err != nil {
			t.Errorf("%q: %v", ct, err)
		}
	}
}

func TestInspectRejects(t *testing.T) {
	tests := []struct {
		name    string
		dialect string
		path    string
		body    string
		ctype   string
		wantErr string
	}{
		{name: "a body cut short is not valid JSON", wantErr: "body is not valid JSON: unexpected end",
			dialect: "sendgrid", path: "/v3/mail/send", body: `{"personalizations":[`},
		{name: "a value after the top-level one is not valid JSON", wantErr: "body is not valid JSON: data after the top-level value at byte 3",
			dialect: "sendgrid", path: "/v3/mail/send", body: `{} {}`},
		{name: "a broken number inside a skipped field is not valid JSON", wantErr: "invalid number",
			dialect: "sendgrid", path: "/v3/mail/send", body: `{"from":{"email":"a@b.org"},"x":-}`},
		{name: "deep nesting is refused", wantErr: "nested too deeply",
			dialect: "sendgrid", path: "/v3/mail/send", body: `{"x":` + strings.Repeat("[", 2000)},
		{name: "a body of the wrong type names the body", wantErr: "body: want an object, got an array",
			dialect: "sendgrid", path: "/v3/mail/send", body: `[1,2]`},
		{name: "a null body is not a message", wantErr: "body: want an object, got null",
			dialect: "ses", path: "/v2/email/outbound-emails", body: `null`},
		{name: "a null batch is not an empty one", wantErr: "body: want an array, got null",
			dialect: "postmark", path: "/email/batch", body: `null`},
		{name: "a null send request is not one without messages", wantErr: "body: want an object, got null",
			dialect: "mailjet", path: "/v3.1/send", body: `null`},
		{name: "a missing required From names the field", wantErr: "from.email is missing",
			dialect: "sendgrid", path: "/v3/mail/send", body: `{"personalizations":[{"to":[{"email":"a@b.org"}]}]}`},
		{name: "an empty From is a missing one", wantErr: "From is missing",
			dialect: "postmark", path: "/email", body: `{"From":" ","To":"a@b.org"}`},
		{name: "a field of the wrong type names the field and both types", wantErr: "from: want an object, got a string",
			dialect: "sendgrid", path: "/v3/mail/send", body: `{"from":"a@b.org","personalizations":[]}`},
		{name: "a nested field of the wrong type names its full path", wantErr: "personalizations[0].to[1]: want an object, got a string",
			dialect: "sendgrid", path: "/v3/mail/send", body: `{"from":{"email":"a@b.org"},"personalizations":[{"to":[{"email":"x@y.org"},"z@y.org"]}]}`},
		{name: "an invalid address names the field and does not quote it", wantErr: "personalizations[0].cc[0].email: not a valid email address",
			dialect: "sendgrid", path: "/v3/mail/send", body: `{"from":{"email":"a@b.org"},"personalizations":[{"cc":[{"email":"secret-bad-address"}]}]}`},
		{name: "an invalid address list names the field", wantErr: "To: not a valid address list",
			dialect: "postmark", path: "/email", body: `{"From":"a@b.org","To":"x@y.org, not an address"}`},
		{name: "a batch element without From names its index", wantErr: "[1].from is missing",
			dialect: "resend", path: "/emails/batch", body: `[{"from":"a@b.org","to":"x@y.org"},{"to":"x@y.org"}]`},
		{name: "a batch element without From after two with the same one names its index", wantErr: "[2].From is missing",
			dialect: "postmark", path: "/email/batch", body: `[{"From":"a@b.org","To":"x@y.org"},{"From":"a@b.org","To":"x@y.org"},{"To":"x@y.org"}]`},
		{name: "a batch element that is not an object names its index", wantErr: "[0]: want an object, got a number",
			dialect: "postmark", path: "/email/batch", body: `[5]`},
		{name: "a recipient field of the wrong type lists what it may be", wantErr: "to: want a string or an array, got a number",
			dialect: "resend", path: "/emails", body: `{"from":"a@b.org","to":5}`},
		{name: "raw data that is not a string is a wrong type", wantErr: "Content.Raw.Data: want a string, got an object",
			dialect: "ses", path: "/v2/email/outbound-emails", body: `{"Content":{"Raw":{"Data":{}}}}`},
		{name: "a mailjet message without From and without Globals names the message", wantErr: "Messages[0].From.Email is missing",
			dialect: "mailjet", path: "/v3.1/send", body: `{"Messages":[{"To":[{"Email":"a@b.org"}]}]}`},
		{name: "a postmark bulk send without From", wantErr: "From is missing",
			dialect: "postmark", path: "/email/bulk", body: `{"Messages":[{"To":"a@b.org"}]}`},
		{name: "a mailjet v3 send without FromEmail", wantErr: "FromEmail is missing",
			dialect: "mailjet", path: "/v3/send", body: `{"Recipients":[{"Email":"a@b.org"}]}`},
		{name: "a mailjet v3 batch with no messages needs a FromEmail of its own", wantErr: "FromEmail is missing",
			dialect: "mailjet", path: "/v3/send", body: `{"Messages":[],"To":"a@b.org"}`},
		{name: "a mailjet v3 batch message without FromEmail names its index", wantErr: "Messages[1].FromEmail is missing",
			dialect: "mailjet", path: "/v3/send", body: `{"Messages":[{"FromEmail":"a@b.org","To":"x@y.org"},{"To":"x@y.org"}]}`},
		{name: "a mailjet v3 batch is not a list of batches", wantErr: "Messages[0].FromEmail is missing",
			dialect: "mailjet", path: "/v3/send", body: `{"Messages":[{"Messages":[{"FromEmail":"a@b.org"}]}]}`},
		{name: "a form to SES's / without Action is no v1 request", wantErr: "Action is missing",
			dialect: "ses", path: "/", ctype: formType, body: "Source=a%40b.org"},
		{name: "JSON to SES's / is no v1 request", wantErr: "Content-Type: want multipart/form-data or application/x-www-form-urlencoded",
			dialect: "ses", path: "/", ctype: jsonType, body: `{}`},
		{name: "mailgun without from", wantErr: "from is missing",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", ctype: formType, body: "to=a%40b.org"},
		{name: "mailgun with a bad escape names the field", wantErr: "to: invalid escape",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", ctype: formType, body: "from=a%40b.org&to=%zz"},
		{name: "mailgun with a JSON body names the Content-Type", wantErr: "Content-Type: want multipart/form-data or application/x-www-form-urlencoded",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", ctype: jsonType, body: `{}`},
		{name: "mailgun multipart without a boundary", wantErr: "without a boundary",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", ctype: "multipart/form-data", body: "x"},
		{name: "mailgun multipart whose last part's headers are cut off", wantErr: "multipart body is cut short",
			dialect: "mailgun", path: "/v3/mg.example.com/messages", ctype: "multipart/form-data; boundary=b",
			body: "--b\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\na@b.org\r\n--b\r\nContent-Disposition: form-da"},
		{name: "mailgun messages.mime without a message part", wantErr: "message (a MIME message with a From header) is missing",
			dialect: "mailgun", path: "/v3/mg.example.com/messages.mime", ctype: formType, body: "to=a%40b.org"},
		{name: "a Sender among custom headers is no From", wantErr: "from is missing",
			dialect: "resend", path: "/emails", body: `{"to":"x@y.org","headers":{"Sender":"a@b.org"}}`},
		{name: "a header pair's From that is no address names the pair", wantErr: "Headers[0]: not a valid address list",
			dialect: "postmark", path: "/email", body: `{"From":"a@b.org","To":"x@y.org","Headers":[{"Name":"From","Value":"nobody"}]}`},
		// Bytes that are not UTF-8 are U+FFFD to encoding/json, but an
		// overlong form is the character it spells to Jackson: "\xc1\xaf"
		// is "o", "\xc0\x8a" a line feed.
		{name: "a member name that is not UTF-8 (Fr\\xc1\\xafm, a From to Jackson)", wantErr: "a member name that is not UTF-8 at byte 33",
			dialect: "postmark", path: "/email", body: "{\"From\":\"a@b.org\",\"To\":\"x@y.org\",\"Fr\xc1\xafm\":\"ceo@evil.example\"}"},
		{name: "a member name that is not UTF-8 beside escapes", wantErr: "a member name that is not UTF-8",
			dialect: "ses", path: "/v2/email/outbound-emails",
			body: "{\"FromEmailAddress\":\"a@b.org\",\"Destination\":{\"ToAddresses\":[\"x@y.org\"],\"\\u0042ccAddr\xc1\xa5sses\":[\"1@y.org\",\"2@y.org\"]}}"},
		{name: "a member name that is not UTF-8 in a skipped object", wantErr: "a member name that is not UTF-8",
			dialect: "sendgrid", path: "/v3/mail/send", body: "{\"from\":{\"email\":\"a@b.org\"},\"x\":{\"b\xc1\xa3c\":1}}"},
		{name: "an address that is not UTF-8 (a line feed in a comment, to Jackson)", wantErr: "From: not UTF-8",
			dialect: "postmark", path: "/email", body: "{\"From\":\"a@b.org (\xc0\x8d\xc0\x8aFrom: ceo@evil.example)\",\"To\":\"x@y.org\"}"},
		{name: "an escaped address that is not UTF-8", wantErr: "personalizations[0].to[0].email: not UTF-8",
			dialect: "sendgrid", path: "/v3/mail/send", body: "{\"from\":{\"email\":\"a@b.org\"},\"personalizations\":[{\"to\":[{\"email\":\"x@y.org (\\u0041\xe0\x80\x8a)\"}]}]}"},
		{name: "a custom header's value that is not UTF-8", wantErr: "headers.…: not UTF-8",
			dialect: "resend", path: "/emails", body: "{\"from\":\"a@b.org\",\"to\":\"x@y.org\",\"headers\":{\"X-A\":\"b\xc0\x8d\xc0\x8aFrom: ceo@evil.example\"}}"},
		{name: "a header pair's value that is not UTF-8", wantErr: "Headers[0].Value: not UTF-8",
			dialect: "postmark", path: "/email", body: "{\"From\":\"a@b.org\",\"To\":\"x@y.org\",\"Headers\":[{\"Name\":\"X-A\",\"Value\":\"b\xc0\x8aBcc: 1@y.org\"}]}"},
		// Express's body-parser decodes a JSON body in any "utf-*" charset:
		// in UTF-7, "+AGY-rom" is "from".
		{name: "a JSON send in UTF-7", wantErr: `Content-Type charset "utf-7" is refused; send UTF-8`,
			dialect: "resend", path: "/emails", ctype: "application/json; charset=UTF-7",
			body: `{"from":"a@b.org","+AGY-rom":"ceo@evil.example","to":"x@y.org"}`},
		{name: "a JSON send in UTF-7 in RFC 2231's form", wantErr: `Content-Type charset "utf-7" is refused`,
			dialect: "postmark", path: "/email", ctype: "application/json; charset*=utf-8''utf-7", body: `{"From":"a@b.org","To":"x@y.org"}`},
		{name: "a JSON send naming two charsets", wantErr: "Content-Type: a charset keygate cannot read",
			dialect: "sendgrid", path: "/v3/mail/send", ctype: "application/json; charset=utf-8; charset=utf-7", body: `{"from":{"email":"a@b.org"}}`},
		{name: "a path that is not a send endpoint", wantErr: "the path is not a send endpoint",
			dialect: "sendgrid", path: "/v3/templates", body: `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := Lookup(tt.dialect)
			ct := tt.ctype
			if ct == "" {
				ct = jsonType
			}
			_, err := d.Inspect(tt.path, ct, []byte(tt.body))
			if err == nil {
				t.Fatalf("no error, want %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "secret-bad-address") {
				t.Errorf("error %q quotes the body", err)
			}
		})
	}
}

// Parts another multipart parser could read differently are refused, not
// skipped: a field keygate skipped could be the provider's From.
func TestInspectRefusesAmbiguousMultipartParts(t *testing.T) {
	d, _ := Lookup("mailgun")
	body := func(headers string) []byte {
		return []byte("--b\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nshop@mg.example.com\r\n" +
			"--b\r\n" + headers + "\r\n\r\nceo@evil.example\r\n--b--\r\n")
	}
	for _, tc := range []struct {
		name, headers, want string
	}{
		{"a plain part", `Content-Disposition: form-data; name="to"`, ""},
		{"a file part", `Content-Disposition: form-data; name="attachment"; filename="a.txt"`, ""},
		{"no Content-Disposition", `Content-Type: text/plain`, "exactly one Content-Disposition"},
		{"two Content-Dispositions", "Content-Disposition: form-data; name=\"x\"\r\nContent-Disposition: form-data; name=\"h:From\"", "exactly one Content-Disposition"},
		{"a duplicated name", `Content-Disposition: form-data; name="x"; name="h:From"`, "must be form-data with a name"},
		{"an unterminated quote", `Content-Disposition: form-data; name="h:From`, "must be form-data with a name"},
		{"an attachment disposition", `Content-Disposition: attachment; name="h:From"`, "must be form-data with a name"},
		{"quoted-printable", "Content-Disposition: form-data; name=\"h:From\"\r\nContent-Transfer-Encoding: quoted-printable", "Content-Transfer-Encoding"},
		{"a file with an RFC 2231 filename", `Content-Disposition: form-data; name="attachment"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf`, ""},
		// mime reads the RFC 2231 name in place of the plain one, in
		// either order; a parser without RFC 2231 reads h:From.
		{"an RFC 2231 name after a plain one", `Content-Disposition: form-data; name="h:From"; name*=UTF-8''x`, "RFC 2231"},
		{"an RFC 2231 name before a plain one", `Content-Disposition: form-data; name*=UTF-8''x; name="h:From"`, "RFC 2231"},
		{"a continued name", `Content-Disposition: form-data; name="h:From"; NAME*0="x"`, "RFC 2231"},
		{"an encoded continued name", `Content-Disposition: form-data; name="h:From";name*0*=UTF-8''x`, "RFC 2231"},
		// mime skips Unicode white space before a parameter; PHP's parser
		// reads "\u00a0name*" as a name of its own and takes the plain one.
		{"an RFC 2231 name after a no-break space", "Content-Disposition: form-data;\u00a0name*=UTF-8''x; name=\"h:From\"", "RFC 2231"},
		{"an RFC 2231 name after a next-line character", "Content-Disposition: form-data; name=\"h:From\";\u0085NAME*=UTF-8''x", "RFC 2231"},
		// mime reads the quoted pair as a quote: one name, x"; name="h:From.
		{"a quoted pair", `Content-Disposition: form-data; name="x\"; name=\"h:From"`, "backslash"},
		// A Windows path as a file name, as form-data, urllib3 and Symfony
		// write it, and as Go's mime/multipart escapes it: the same field
		// to every parser.
		{"a Windows path", `Content-Disposition: form-data; name="attachment"; filename="C:\Users\bob\a.pdf"`, ""},
		{"an escaped Windows path", `Content-Disposition: form-data; name="attachment"; filename="C:\\Users\\bob\\a.pdf"`, ""},
		{"a path before the name", `Content-Disposition: form-data; filename="C:\\a.pdf"; name="attachment"`, ""},
		{"a backslash ending a file name", `Content-Disposition: form-data; name="attachment"; filename="dir\\"`, ""},
		// A quoted quote ends the file name to a parser that reads the
		// backslash as itself, which then reads name=h:From.
		{"a quoted quote in a file name", `Content-Disposition: form-data; name="attachment"; filename="x\"; name=h:From; y=\""`, "backslash"},
		{"an escaped quote in a file name", `Content-Disposition: form-data; name="attachment"; filename="The \"final\" invoice.pdf"`, "backslash"},
		{"an odd run before a quote", `Content-Disposition: form-data; name="attachment"; filename="a\\\"b"`, "backslash"},
		// The name itself read two ways.
		{"an escaped backslash in the name", `Content-Disposition: form-data; name="h:From\\"`, "backslash"},
		{"an escaped tspecial in the name", `Content-Disposition: form-data; name="h\:From"`, "backslash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.Inspect("/v3/mg.example.com/messages", "multipart/form-data; boundary=b", body(tc.headers))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// A boundary mime/multipart reads as a value's content, after a bare line
// feed or carriage return in a body of CRLF lines, ends a part to PHP's
// parser, Python's cgi and Werkzeug: the text below would hold a From and
// three more recipients for them.
func TestInspectRefusesBoundariesOnlyOtherParsersSee(t *testing.T) {
	d, _ := Lookup("mailgun")
	hidden := func(nl string) string {
		return "hello" + nl + "--b" + nl + `Content-Disposition: form-data; name="h:From"` + nl + nl + "ceo@evil.example" + nl +
			"--b" + nl + `Content-Disposition: form-data; name="bcc"` + nl + nl + "1@a.org, 2@a.org, 3@a.org"
	}
	body := func(nl, text string) []byte {
		return []byte("--b" + nl + `Content-Disposition: form-data; name="from"` + nl + nl + "shop@mg.example.com" + nl +
			"--b" + nl + `Content-Disposition: form-data; name="text"` + nl + nl + text + nl + "--b--" + nl)
	}
	for _, tc := range []struct {
		name string
		body []byte
		ok   bool
	}{
		{"CRLF lines", body("\r\n", "hello"), true},
		{"LF lines, read alike by every parser", body("\n", hidden("\n")), true},
		{"a text with a line feed before a boundary", body("\r\n", hidden("\n")), false},
		{"a text with a carriage return before a boundary", body("\r\n", hidden("\r")), false},
		{"LF lines with a carriage return before a boundary", body("\n", hidden("\r")), false},
		{"the close delimiter after a bare line feed", []byte(strings.TrimSuffix(string(body("\r\n", "hello")), "\r\n--b--\r\n") + "\n--b--\r\n"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := d.Inspect("/v3/mg.example.com/messages", "multipart/form-data; boundary=b", tc.body)
			switch {
			case tc.ok && err != nil:
				t.Errorf("refused: %v", err)
			case !tc.ok && err == nil:
				t.Errorf("accepted, senders %v and %d recipients", m.Senders, m.Recipients)
			case !tc.ok && !strings.Contains(err.Error(), "boundary after a bare"):
				t.Errorf("err = %v, want one about a boundary after a bare line end", err)
			case tc.ok && bytes.Contains(tc.body, []byte("ceo@evil")) && !slices.Contains(m.Senders, "ceo@evil.example"):
				t.Errorf("senders %v: the hidden part's From is not read", m.Senders)
			}
		})
	}
}

// PHP ends a form field's name at a NUL, so h:From%00x is its h:From: a
// field name holding one is refused, not passed over as another field.
func TestInspectRefusesNULInFormFieldNames(t *testing.T) {
	mg, _ := Lookup("mailgun")
	if _, err := mg.Inspect("/v3/mg.example.com/messages", formType,
		[]byte("from=shop%40mg.example.com&to=a%40x.org&h%3AFrom%00x=ceo%40evil.example")); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("mailgun: err = %v, want a NUL in a field name refused", err)
	}
	ses, _ := Lookup("ses")
	if _, err := ses.InspectQuery("Action=SendEmail&Source=a%40shop.example.com&Destination.ToAddresses.member.1=x%40y.org&Source%00=ceo%40evil.example",
		false, "", nil); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("ses v1: err = %v, want a NUL in a parameter name refused", err)
	}
}

// Python 2's parse_qs (and Python 3's before 3.9.2, Rack 2's for query
// strings) splits a form at ';' as at '&': "text=x;to=…" holds a to for it
// that keygate reads as the text's. A ';' before a field keygate reads is
// refused; one before anything else is text.
func TestInspectRefusesFormFieldsAfterASemicolon(t *testing.T) {
	mg, _ := Lookup("mailgun")
	for _, body := range []string{
		"from=shop%40mg.example.com&to=a%40x.org&text=hi;bcc=b%40x.org;cc=c%40x.org",
		"from=shop%40mg.example.com&to=a%40x.org&text;h%3AFrom=ceo%40evil.example",
		"from=shop%40mg.example.com&to=a%40x.org;%20To=b%40x.org",
		"from=shop%40mg.example.com;to[]=b%40x.org&to=a%40x.org",
	} {
		if _, err := mg.Inspect("/v3/mg.example.com/messages", formType, []byte(body)); err == nil || !strings.Contains(err.Error(), "';'") {
			t.Errorf("%s: err = %v, want a field after ';' refused", body, err)
		}
	}
	for _, body := range []string{
		"from=shop%40mg.example.com&to=a%40x.org&text=Hi; there",
		"from=shop%40mg.example.com&to=a%40x.org&html=<p style=\"color:red;\">x</p>",
		"from=shop%40mg.example.com&to=a%40x.org&text=a%3Bto%3Db",
		"from=shop%40mg.example.com&to=a%40x.org&text=50%;%zz off",
	} {
		m, err := mg.Inspect("/v3/mg.example.com/messages", formType, []byte(body))
		if err != nil || m.Recipients != 1 {
			t.Errorf("%s: %+v, %v, want one recipient", body, m, err)
		}
	}
}

func TestInspectRefusesFormCharsetsOtherThanUTF8(t *testing.T) {
	d, _ := Lookup("mailgun")
	body := []byte("from=shop%40mg.example.com&to=a%40x.org")
	for ct, ok := range map[string]bool{
		formType:                                     true,
		formType + "; charset=UTF-8":                 true,
		formType + "; charset=us-ascii":              true,
		formType + "; charset=utf-16le":              false,
		"multipart/form-data; boundary=b; charset=x": false,
	} {
		_, err := d.Inspect("/v3/mg.example.com/messages", ct, body)
		if ok && err != nil || !ok && (err == nil || !strings.Contains(err.Error(), "charset")) {
			t.Errorf("%s: err = %v", ct, err)
		}
	}
}

func TestInspectChecksMailjetSender(t *testing.T) {
	d, _ := Lookup("mailjet")
	m, err := d.Inspect("/v3.1/send", "application/json", []byte(`{"Messages":[{"From":{"Email":"a@shop.example.com"},"Sender":{"Email":"ceo@evil.example"},"To":[{"Email":"x@y.org"}]}]}`))
	if err != nil || !slices.Contains(m.Senders, "ceo@evil.example") {
		t.Errorf("senders %v, err %v; want the Sender checked too", m.Senders, err)
	}
}

// TestInspectMailgunBatchAtItsLimit: Mailgun takes 1,000 recipients a
// message, and mailgun.js and mailgun-go send each as a multipart part of
// its own, beside the other fields: such a batch send is read whole (it
// was refused as having too many parts until session 35), while a form of
// more parts than maxParts still is, read plainly or through
// mime/multipart.
func TestInspectMailgunBatchAtItsLimit(t *testing.T) {
	d, _ := Lookup("mailgun")
	fields := [][2]string{{"from", "orders@shop.example"}, {"subject", "Hello %recipient.n%"}, {"text", "hi"}}
	for i := range 1000 {
		fields = append(fields, [2]string{"to", fmt.Sprintf("r%04d@example.com", i)})
	}
	fields = append(fields, [2]string{"recipient-variables", "{}"}, [2]string{"o:tag", "newsletter"})
	tooMany := slices.Clone(fields)
	for range maxParts {
		tooMany = append(tooMany, [2]string{"v:x", "1"})
	}
	for _, slow := range []bool{false, true} {
		slowMultipartOnly = slow
		body, ct := multipartForm(t, fields...)
		if m, err := d.Inspect("/v3/mg.shop.example/messages", ct, body); err != nil || m.Recipients != 1000 {
			t.Errorf("slow=%v: a batch of 1,000: %d recipients, %v; want 1000", slow, m.Recipients, err)
		}
		body, ct = multipartForm(t, tooMany...)
		if _, err := d.Inspect("/v3/mg.shop.example/messages", ct, body); err == nil {
			t.Errorf("slow=%v: a form of more than %d parts was read", slow, maxParts)
		}
	}
	slowMultipartOnly = false
}
