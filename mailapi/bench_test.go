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

func BenchmarkIsSend(b *testing.B) {
	d, _ := Lookup("mailgun")
	for b.Loop() {
		d.IsSend("POST", "/v3/mg.example.com/messages")
	}
}
