package mailapi

import (
	"slices"
	"strings"
	"testing"
)

// A custom header's name, or a Mailgun form field's, is matched as a
// provider that builds a header from it may read it: spaces around it
// (RFC 5322's obsolete syntax reads "From : x" as a From), spaces after
// Mailgun's "h:", and a form array's "[…]".
func TestHeaderNamesAreReadLoosely(t *testing.T) {
	for _, tt := range []struct{ name, dialect, path, ctype, body string }{
		{"postmark: a trailing space", "postmark", "/email", jsonType,
			`{"From":"a@shop.example","To":"x@example.com","Headers":[{"Name":"From ","Value":"ceo@evil.example"}]}`},
		{"postmark: a leading tab", "postmark", "/email", jsonType,
			`{"From":"a@shop.example","To":"x@example.com","Headers":[{"Name":"\tsender","Value":"ceo@evil.example"}]}`},
		{"ses: a trailing space in a Simple header", "ses", "/v2/email/outbound-emails", jsonType,
			`{"FromEmailAddress":"a@shop.example","Destination":{"ToAddresses":["x@example.com"]},"Content":{"Simple":{"Headers":[{"Name":"From ","Value":"ceo@evil.example"}]}}}`},
		{"sendgrid: a trailing space", "sendgrid", "/v3/mail/send", jsonType,
			`{"from":{"email":"a@shop.example"},"personalizations":[{"to":[{"email":"x@example.com"}]}],"headers":{"From ":"ceo@evil.example"}}`},
		{"resend: a leading tab", "resend", "/emails", jsonType,
			`{"from":"a@shop.example","to":"x@example.com","headers":{"\tFrom":"ceo@evil.example"}}`},
		{"mailgun: a space after h:", "mailgun", "/v3/shop.example/messages", formType,
			"from=a%40shop.example&to=x%40example.com&h%3A%20From=ceo%40evil.example"},
		{"mailgun: a trailing space", "mailgun", "/v3/shop.example/messages", formType,
			"from=a%40shop.example&to=x%40example.com&h%3AFrom%20=ceo%40evil.example"},
		{"mailgun: a form array", "mailgun", "/v3/shop.example/messages", formType,
			"from=a%40shop.example&to=x%40example.com&from%5B%5D=ceo%40evil.example"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := Lookup(tt.dialect)
			m, err := d.Inspect(tt.path, tt.ctype, []byte(tt.body))
			if err != nil || !slices.Contains(m.Senders, "ceo@evil.example") {
				t.Errorf("got %+v, %v; want ceo@evil.example among the senders", m, err)
			}
		})
	}
}

// A line break in any custom header's name or value would start headers
// keygate did not see where the provider writes it as it is ("X-A: b\r\nFrom:
// ceo@evil.example"): the message is opaque, refused for restricted keys.
// Values without one, and values that are not strings, are no concern.
func TestALineBreakInACustomHeaderMakesTheMessageOpaque(t *testing.T) {
	for _, tt := range []struct {
		name, dialect, path, ctype, body string
		opaque                           bool
	}{
		{"postmark: in a pair's name", "postmark", "/email", jsonType,
			`{"From":"a@shop.example","To":"x@example.com","Headers":[{"Name":"X-A: b\r\nFrom","Value":"ceo@evil.example"}]}`, true},
		{"postmark: in a pair's value", "postmark", "/email", jsonType,
			`{"From":"a@shop.example","To":"x@example.com","Headers":[{"Name":"X-A","Value":"b\r\nFrom: ceo@evil.example"}]}`, true},
		{"ses: in a bulk entry's replacement header", "ses", "/v2/email/outbound-bulk-emails", jsonType,
			`{"FromEmailAddress":"a@shop.example","DefaultContent":{"Template":{"TemplateName":"t"}},"BulkEmailEntries":[{"Destination":{"ToAddresses":["x@example.com"]},"ReplacementHeaders":[{"Name":"X-A","Value":"b\nFrom: ceo@evil.example"}]}]}`, true},
		{"brevo: in a header's name", "brevo", "/v3/smtp/email", jsonType,
			`{"sender":{"email":"a@shop.example"},"to":[{"email":"x@example.com"}],"headers":{"X-A: b\nSender":"ceo@evil.example"}}`, true},
		{"sendgrid: in a header's value", "sendgrid", "/v3/mail/send", jsonType,
			`{"from":{"email":"a@shop.example"},"personalizations":[{"to":[{"email":"x@example.com"}]}],"headers":{"X-A":"b\r\nFrom: ceo@evil.example"}}`, true},
		{"sendgrid: in a personalization's header", "sendgrid", "/v3/mail/send", jsonType,
			`{"from":{"email":"a@shop.example"},"personalizations":[{"to":[{"email":"x@example.com"}],"headers":{"X-A":"b\rFrom: ceo@evil.example"}}]}`, true},
		{"resend: in a header's value", "resend", "/emails", jsonType,
			`{"from":"a@shop.example","to":"x@example.com","headers":{"X-Entity-Ref-ID":"1\nBcc: z@other.example"}}`, true},
		{"mailjet: in a header's value", "mailjet", "/v3.1/send", jsonType,
			`{"Messages":[{"From":{"Email":"a@shop.example"},"To":[{"Email":"x@example.com"}],"Headers":{"X-A":"b\r\nFrom: ceo@evil.example"}}]}`, true},
		{"mailgun: in an h: field's value", "mailgun", "/v3/shop.example/messages", formType,
			"from=a%40shop.example&to=x%40example.com&h%3AX-A=b%0D%0AFrom%3A+ceo%40evil.example", true},
		{"mailgun: in an h: field's name", "mailgun", "/v3/shop.example/messages", formType,
			"from=a%40shop.example&to=x%40example.com&h%3AX-A%3A+b%0D%0AFrom=ceo%40evil.example", true},
		{"mailgun: in the text, which is no header", "mailgun", "/v3/shop.example/messages", formType,
			"from=a%40shop.example&to=x%40example.com&text=line+1%0D%0AFrom%3A+line+2&v%3Ax=a%0Ab", false},
		{"sendgrid: values without one, and not strings", "sendgrid", "/v3/mail/send", jsonType,
			`{"from":{"email":"a@shop.example"},"personalizations":[{"to":[{"email":"x@example.com"}]}],"headers":{"X-A":"b c","X-N":1,"X-O":{"a":"\n"},"X-L":["\r"]}}`, false},
		{"brevo: a header that is a number", "brevo", "/v3/smtp/email", jsonType,
			`{"sender":{"email":"a@shop.example"},"to":[{"email":"x@example.com"}],"headers":{"X-Mailin-custom":"a","idempotencyKey":7}}`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := Lookup(tt.dialect)
			m, err := d.Inspect(tt.path, tt.ctype, []byte(tt.body))
			if err != nil || m.Opaque != tt.opaque {
				t.Errorf("got %+v, %v; want opaque %v", m, err, tt.opaque)
			}
		})
	}
}

// Recipient fields a form spells as an array (to[0], cc[]) count, whether
// or not the provider reads them so.
func TestMailgunFormArraysCount(t *testing.T) {
	mg, _ := Lookup("mailgun")
	m, err := mg.Inspect("/v3/shop.example/messages", formType,
		[]byte("from=a%40shop.example&to%5B0%5D=x%40example.com&to%5B1%5D=y%40example.com&cc%5B%5D=z%40example.com&to=w%40example.com"))
	if err != nil || m.Recipients != 4 {
		t.Errorf("got %+v, %v; want 4 recipients", m, err)
	}
}

// An address holding a line break (in a comment, where net/mail takes
// anything) is no address: a provider writing it into a header as it is
// would send the header it injects.
func TestAddressesWithControlCharactersAreRefused(t *testing.T) {
	for _, tt := range []struct{ dialect, path, ctype, body string }{
		{"resend", "/emails", jsonType, `{"from":"a@shop.example (x\r\nFrom: ceo@evil.example)","to":"x@example.com"}`},
		{"resend", "/emails", jsonType, `{"from":"a@shop.example","to":"x@example.com (y\nBcc: z@other.example)"}`},
		{"postmark", "/email", jsonType, `{"From":"Shop <a@shop.example> (\u0000)","To":"x@example.com"}`},
		{"sendgrid", "/v3/mail/send", jsonType, `{"from":{"email":"a@shop.example (\r)"},"personalizations":[{"to":[{"email":"x@example.com"}]}]}`},
		{"mailgun", "/v3/shop.example/messages", formType, "from=a%40shop.example+%28x%0D%0AFrom%3A+ceo%40evil.example%29&to=x%40example.com"},
	} {
		d, _ := Lookup(tt.dialect)
		m, err := d.Inspect(tt.path, tt.ctype, []byte(tt.body))
		if err == nil || !strings.Contains(err.Error(), "not a valid") {
			t.Errorf("%s %q: got %+v, %v; want not a valid address", tt.dialect, tt.body, m, err)
		}
	}
	// A tab in a comment is no line break.
	d, _ := Lookup("resend")
	if _, err := d.Inspect("/emails", jsonType, []byte(`{"from":"a@shop.example (x\ty)","to":"x@example.com"}`)); err != nil {
		t.Error(err)
	}
}

func TestLooseName(t *testing.T) {
	for in, want := range map[string]string{
		"From": "From", "From ": "From", " From\t": "From", "to[0]": "to", "to[]": "to",
		"h:From": "h:From", "h: From": "h:From", "H:From ": "h:From", "h:From[]": "h:From",
		"[0]": "[0]", "h:": "h:", "": "",
	} {
		got, changed := looseName([]byte(in))
		if string(got) != want && !(strings.EqualFold(string(got), want)) || changed != (string(got) != in) {
			t.Errorf("looseName(%q) = %q, %v; want %q", in, got, changed, want)
		}
	}
}
