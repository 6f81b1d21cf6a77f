package mailapi

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keygate/caddy-keygate/internal/benchbody"
)

// BenchmarkInspectSendGrid20KB is a typical newsletter send: one
// personalization with a few recipients and 20 KB of HTML.
func BenchmarkInspectSendGrid20KB(b *testing.B) {
	html := strings.Repeat(`<p class=\"lead\">Hello there, this is a newsletter paragraph with some text.</p>\n`, 240)
	body := []byte(`{"personalizations":[{"to":[{"email":"a@example.org","name":"A"},{"email":"b@example.org"}],"cc":[{"email":"c@example.org"}],"subject":"News"}],` +
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

// BenchmarkInspect reads the load test's bodies (internal/benchbody): SendGrid
// and Mailgun at 2 KB, 20 KB and 200 KB, and a Postmark batch of 50.
func BenchmarkInspect(b *testing.B) {
	for _, body := range benchbody.All() {
		b.Run(body.Name, func(b *testing.B) {
			benchInspect(b, body)
		})
	}
}

// BenchmarkInspectRecipients is one SendGrid message with 1 to 1,000
// recipients: allocations per request must not grow with them
// (TestInspectAllocationsDoNotGrowWithRecipients holds that).
func BenchmarkInspectRecipients(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			benchInspect(b, benchbody.SendGrid(n))
		})
	}
}

func benchInspect(b *testing.B, body benchbody.Body) {
	name, _, _ := strings.Cut(body.Name, "-")
	d, ok := Lookup(name)
	if !ok {
		b.Fatalf("no dialect for %s", body.Name)
	}
	b.SetBytes(int64(len(body.Data)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := d.Inspect(body.Path, body.ContentType, body.Data)
		if err != nil || m.Recipients != body.Recipients {
			b.Fatal(m, err)
		}
	}
}

// BenchmarkIsSend: a send's path (looked up twice a send: IsSend, then
// Inspect) and a request to another endpoint of a send route, which is
// held against every endpoint with and without a format extension.
func BenchmarkIsSend(b *testing.B) {
	for _, c := range []struct{ name, dialect, path string }{
		{"mailgun-send", "mailgun", "/v3/mg.example.com/messages"},
		{"sendgrid-send", "sendgrid", "/v3/mail/send"},
		{"sendgrid-other", "sendgrid", "/v3/templates/d-1234"},
	} {
		d, _ := Lookup(c.dialect)
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				d.IsSend("POST", c.path)
			}
		})
	}
}

// TestInspectAllocationsDoNotGrowWithRecipients: a request naming 1,000
// recipients costs the allocations of one naming a single recipient, in every
// dialect's recipient fields (arrays of addresses or objects, address lists).
// Mailgun is covered for a list in one field; each further form field or
// multipart part costs its own allocations.
func TestInspectAllocationsDoNotGrowWithRecipients(t *testing.T) {
	list := func(n int, sep string, item func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = item(i)
		}
		return strings.Join(parts, sep)
	}
	obj := func(key string) func(int) string {
		return func(i int) string { return fmt.Sprintf(`{"%s":"r%d@example.org","name":"R %d"}`, key, i, i) }
	}
	str := func(i int) string { return fmt.Sprintf(`"r%d@example.org"`, i) }
	named := func(i int) string { return fmt.Sprintf("R %d <r%d@example.org>", i, i) }
	// Names that are not ASCII, as Node's and Go's encoders write them and
	// as PHP's json_encode and Python's json.dumps do (\uXXXX).
	utf8Named := func(i int) string { return fmt.Sprintf("Müller %d <r%d@example.org>", i, i) }
	escapedNamed := func(i int) string { return fmt.Sprintf(`M\u00fcller %d <r%d@example.org>`, i, i) }
	quotedNamed := func(i int) string { return fmt.Sprintf(`\"M\u00fcller, R %d\" <r%d@example.org>`, i, i) }
	encodedNamed := func(i int) string { return fmt.Sprintf("=?utf-8?b?TcO8bGxlcg==?= %d <r%d@example.org>", i, i) }
	// postmarkTo is a Postmark send from from (as the JSON string holds it)
	// to a list of n items.
	postmarkTo := func(from string, item func(int) string) func(int) string {
		return func(n int) string { return `{"From":"` + from + `","To":"` + list(n, ", ", item) + `"}` }
	}
	cases := []struct {
		dialect, path, ctype string
		body                 func(n int) string
	}{
		{"sendgrid", "/v3/mail/send", jsonType, func(n int) string {
			return `{"from":{"email":"a@shop.example.com"},"personalizations":[{"to":[` + list(n, ",", obj("email")) + `]}]}`
		}},
		{"postmark", "/email", jsonType, postmarkTo("Shop <a@shop.example.com>", named)},
		{"postmark", "/email/batch", jsonType, func(n int) string {
			return "[" + list(n, ",", func(i int) string {
				return fmt.Sprintf(`{"From":"Shop <a@shop.example.com>","To":"r%d@example.org"}`, i)
			}) + "]"
		}},
		{"postmark", "/email", jsonType, postmarkTo("Bäckerei <a@shop.example.com>", utf8Named)},
		{"postmark", "/email", jsonType, postmarkTo(`B\u00e4ckerei <a@shop.example.com>`, escapedNamed)},
		{"postmark", "/email/batch", jsonType, func(n int) string {
			return "[" + list(n, ",", func(i int) string {
				return fmt.Sprintf(`{"From":"B\u00e4ckerei <a@shop.example.com>","To":"M\u00fcller <r%d@example.org>"}`, i)
			}) + "]"
		}},
		{"postmark", "/email", jsonType, postmarkTo(`\"Shop, Inc\" <a@shop.example.com>`, quotedNamed)},
		{"postmark", "/email", jsonType, postmarkTo("=?utf-8?q?B=C3=A4ckerei?= <a@shop.example.com>", encodedNamed)},
		{"resend", "/emails", jsonType, func(n int) string {
			return `{"from":"Shop <a@shop.example.com>","to":[` + list(n, ",", str) + `]}`
		}},
		{"ses", "/v2/email/outbound-emails", jsonType, func(n int) string {
			return `{"FromEmailAddress":"a@shop.example.com","Destination":{"ToAddresses":[` + list(n, ",", str) + `]}}`
		}},
		{"mailjet", "/v3.1/send", jsonType, func(n int) string {
			return `{"Messages":[{"From":{"Email":"a@shop.example.com"},"To":[` + list(n, ",", obj("Email")) + `]}]}`
		}},
		{"brevo", "/v3/smtp/email", jsonType, func(n int) string {
			return `{"sender":{"email":"a@shop.example.com"},"to":[` + list(n, ",", obj("email")) + `]}`
		}},
		{"mailpit", "/api/v1/send", jsonType, func(n int) string {
			return `{"From":{"Email":"a@shop.example.com"},"To":[` + list(n, ",", obj("Email")) + `]}`
		}},
		{"mailgun", "/v3/mg.example.com/messages", formType, func(n int) string {
			return "from=a%40shop.example.com&to=" + strings.ReplaceAll(list(n, "%2C", func(i int) string { return fmt.Sprintf("r%d%%40example.org", i) }), " ", "+")
		}},
		{"mailgun", "/v3/mg.example.com/messages", "multipart/form-data; boundary=" + fuzzBoundary, func(n int) string {
			return "--" + fuzzBoundary + "\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\na@shop.example.com\r\n" +
				"--" + fuzzBoundary + "\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\n" + list(n, ", ", named) + "\r\n--" + fuzzBoundary + "--\r\n"
		}},
	}
	for _, c := range cases {
		t.Run(c.dialect+c.path+" "+c.ctype[:9], func(t *testing.T) {
			d, _ := Lookup(c.dialect)
			allocs := map[int]float64{}
			for _, n := range []int{1, 1000} {
				body := []byte(c.body(n))
				m, err := d.Inspect(c.path, c.ctype, body)
				if err != nil || m.Recipients != n {
					t.Fatalf("%d recipients: %+v, %v", n, m, err)
				}
				allocs[n] = testing.AllocsPerRun(20, func() { d.Inspect(c.path, c.ctype, body) })
			}
			// The walk decodes strings with escapes into one buffer, which
			// grows to the longest of them: once for a list of 1,000
			// escaped names, not once a name.
			longer := 0.0
			if strings.Contains(c.body(1000), `\u`) {
				longer = 1
			}
			if allocs[1000] > allocs[1]+longer {
				t.Errorf("%.0f allocations for 1 recipient, %.0f for 1,000: want no growth", allocs[1], allocs[1000])
			}
		})
	}
}

// BenchmarkInspectNamesNotASCII is a Postmark batch of 50 messages whose
// sender and recipient have names that are not ASCII: written as UTF-8 (as
// Node's and Go's encoders do), escaped as \uXXXX (as PHP's json_encode and
// Python's json.dumps do by default), quoted as a name with a comma must be
// ("Müller, Hans" <h@example.de>), and as RFC 2047 encoded words (as
// Python's email.utils.formataddr writes them).
func BenchmarkInspectNamesNotASCII(b *testing.B) {
	d, _ := Lookup("postmark")
	for _, bc := range []struct{ name, from, to string }{
		{"utf8", "Bäckerei Müller", "Zoë Ünal"},
		{"escaped", `B\u00e4ckerei M\u00fcller`, `Zo\u00eb \u00dcnal`},
		{"quoted", `\"M\u00fcller, Hans\"`, `\"\u00dcnal, Zo\u00eb`},
		{"encoded-word", "=?utf-8?b?QsOkY2tlcmVpIE3DvGxsZXI=?=", "=?utf-8?q?Zo=C3=AB_=C3=9Cnal?="},
	} {
		msgs := make([]string, 50)
		for i := range msgs {
			to := fmt.Sprintf("%s %d", bc.to, i)
			if strings.HasPrefix(bc.to, `\"`) {
				to += `\"`
			}
			msgs[i] = fmt.Sprintf(`{"From":"%s <orders@shop.example.com>","To":"%s <r%d@example.org>","Subject":"Ihre Bestellung","TextBody":"Danke!"}`, bc.from, to, i)
		}
		body := []byte("[" + strings.Join(msgs, ",") + "]")
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := d.Inspect("/email/batch", "application/json", body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
