package mailapi

import (
	"bufio"
	"bytes"
	"maps"
	"net/mail"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// Raw MIME whose header section another reader could split into other
// fields than net/mail does is opaque: the provider (SES, Mailgun) sends
// its headers as written, and what a reader finds there is what the
// recipient sees. Each message would otherwise pass with the request's
// own sender (SES's Source or FromEmailAddress) while naming another.
func TestRawMIMEReadDifferentlyIsOpaque(t *testing.T) {
	for _, tt := range []struct{ name, mime string }{
		{"a carriage return alone ends a line for Python's email package and JavaMail",
			"Subject: hi\rFrom: ceo@evil.example\r\nTo: x@example.com\r\n\r\nbody"},
		{"two of them: an empty line to them, inside a Subject to net/mail",
			"Subject: hi\r\rFrom: ceo@evil.example\r\nTo: x@example.com\r\n\r\nbody"},
		{"RFC 5322's obsolete syntax allows spaces before the colon: a From header",
			"From : ceo@evil.example\r\nTo: x@example.com\r\n\r\nbody"},
		{"and tabs",
			"from\t: ceo@evil.example\r\nTo: x@example.com\r\n\r\nbody"},
		{"a field name that is not ASCII",
			"Fr\xc3\xb6m: ceo@evil.example\r\nTo: x@example.com\r\n\r\nbody"},
		{"a byte order mark before the first field",
			"\ufeffFrom: ceo@evil.example\r\nTo: x@example.com\r\n\r\nbody"},
		{"an empty field name",
			": ceo@evil.example\r\nTo: x@example.com\r\n\r\nbody"},
		{"a NUL ends the text for readers in C",
			"To: x@example.com\x00\r\nFrom: ceo@evil.example\r\n\r\nbody"},
		{"no field at all: an empty line first, which some readers skip",
			"\r\nFrom: ceo@evil.example\r\nTo: x@example.com\r\n\r\nbody"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ses, _ := Lookup("ses")
			body := `{"FromEmailAddress":"a@shop.example","Destination":{"ToAddresses":["x@example.com"]},"Content":{"Raw":{"Data":"` + b64(tt.mime) + `"}}}`
			m, err := ses.Inspect("/v2/email/outbound-emails", jsonType, []byte(body))
			if err != nil || !m.Opaque {
				t.Errorf("SES v2: got %+v, %v; want opaque", m, err)
			}
			v1 := "Action=SendRawEmail&Source=a%40shop.example&RawMessage.Data=" + url.QueryEscape(b64(tt.mime))
			m, err = ses.Inspect("/", formType, []byte(v1))
			if err != nil || !m.Opaque {
				t.Errorf("SES v1: got %+v, %v; want opaque", m, err)
			}
			mg, _ := Lookup("mailgun")
			form, ctype := multipartForm(t, [2]string{"to", "x@example.com"}, [2]string{"message", "From: a@shop.example\r\n" + tt.mime})
			if tt.mime[0] == '\r' || tt.mime[0] == 0xef {
				form, ctype = multipartForm(t, [2]string{"to", "x@example.com"}, [2]string{"message", tt.mime})
			}
			m, err = mg.Inspect("/v3/shop.example/messages.mime", ctype, form)
			if err != nil || !m.Opaque {
				t.Errorf("Mailgun: got %+v, %v; want opaque", m, err)
			}
		})
	}
}

// Resent- headers name senders (mail clients show who sent a message on)
// and, where the provider takes recipients from the headers, recipients
// (sendmail -t honours them).
func TestRawMIMEResentHeaders(t *testing.T) {
	ses, _ := Lookup("ses")
	mime := "From: a@shop.example\r\nResent-From: ceo@evil.example\r\nResent-Sender: boss@evil.example\r\n" +
		"To: x@example.com\r\nResent-To: y@example.com, z@example.com\r\nResent-Cc: w@example.com\r\nResent-Bcc: v@example.com\r\n\r\nbody"
	m, err := ses.Inspect("/v2/email/outbound-emails", jsonType, []byte(`{"Content":{"Raw":{"Data":"`+b64(mime)+`"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a@shop.example", "ceo@evil.example", "boss@evil.example"}; !slices.Equal(m.Senders, want) || m.Recipients != 5 || m.Opaque {
		t.Errorf("got %+v; want senders %q and 5 recipients", m, want)
	}
	// A Resent-From never stands in for the From.
	mime = "Resent-From: a@shop.example\r\nTo: x@example.com\r\n\r\nbody"
	if _, err := ses.Inspect("/v2/email/outbound-emails", jsonType, []byte(`{"Content":{"Raw":{"Data":"`+b64(mime)+`"}}}`)); err == nil {
		t.Error("a raw message with only a Resent-From passed as naming its sender")
	}
}

// What every reader splits alike stays readable: LF line ends, folded
// fields, long lines, 8-bit values, a message without a body.
func TestRawMIMEReadAlikeIsRead(t *testing.T) {
	ses, _ := Lookup("ses")
	long := make([]byte, 10000)
	for i := range long {
		long[i] = 'x'
	}
	for _, mime := range []string{
		"From: a@shop.example\nTo: x@example.com\n\nbody\rwith\x00anything",
		"From: Shop\r\n <a@shop.example>\r\nSubject: " + string(long) + "\r\nTo: x@example.com\r\n\r\n",
		"From: =?utf-8?q?Caf=C3=A9?= <a@shop.example>\r\nSubject: Café\r\nTo: x@example.com",
		"From: a@shop.example\r\nX-Weird-Name!#$%&'*+-.^_`{|}~: 1\r\nTo: x@example.com\r\n\r\n",
	} {
		m, err := ses.Inspect("/v2/email/outbound-emails", jsonType, []byte(`{"Content":{"Raw":{"Data":"`+b64(mime)+`"}}}`))
		if err != nil || m.Opaque || !slices.Equal(m.Senders, []string{"a@shop.example"}) || m.Recipients != 1 {
			t.Errorf("%.60q: got %+v, %v", mime, m, err)
		}
	}
}

// FuzzHeaderSection proves that a header section headerSection accepts is
// one net/mail reads, into the fields headerSection found: the names before
// the colons of its unfolded lines.
func FuzzHeaderSection(f *testing.F) {
	for _, s := range []string{
		"From: a@example.com\r\nTo: b@example.com\r\n\r\nbody",
		"From: a@example.com\nSubject: x\n y\n\nbody",
		"Subject: hi\rFrom: ceo@evil.example\r\n\r\n",
		"From : a@example.com\r\n\r\n",
		"\r\nFrom: a@example.com\r\n",
		" folded: first\r\nFrom: a@example.com\r\n\r\n",
		"From: a@example.com",
		"X-\x00: y\r\n\r\n",
		"Fr(om: a@example.com\r\n\r\n",
		"From: a\r\nFrom: b\r\n\r\n",
		"\ufeffFrom: a@example.com\r\n\r\n",
		"From:\r\n\r\n",
		"From: a\r\n\t\r\n\r\n",
		"0:\n\r", // a carriage return alone at the end: a line of its own to net/mail
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		head, ok := headerSection(bufio.NewReaderSize(strings.NewReader(s), 16))
		if !ok {
			return
		}
		if !strings.HasPrefix(s, string(head)) {
			t.Fatalf("%q: section %q is not where the message begins", s, head)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(head))
		if err != nil {
			t.Fatalf("%q: accepted, but net/mail: %v", head, err)
		}
		want := map[string]int{}
		for line := range strings.Lines(string(head)) {
			if line[0] == ' ' || line[0] == '\t' || strings.TrimRight(line, "\r\n") == "" {
				continue
			}
			name, _, _ := strings.Cut(line, ":")
			want[textproto.CanonicalMIMEHeaderKey(name)]++
		}
		got := map[string]int{}
		for name, vs := range msg.Header {
			got[name] = len(vs)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("%q: net/mail read the fields %v, headerSection %v", head, got, want)
		}
	})
}
