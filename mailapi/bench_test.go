package mailapi

import (
	"strings"
	"testing"
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

func BenchmarkIsSend(b *testing.B) {
	d, _ := Lookup("mailgun")
	for b.Loop() {
		d.IsSend("POST", "/v3/mg.example.com/messages")
	}
}
