// Package benchbody builds the send bodies the benchmarks use, so that the
// load script (bench/run.sh, through bench/bodies) and the Go benchmarks
// measure the same payloads: SendGrid JSON and Mailgun multipart forms of
// about 2 KB (a transactional message), 20 KB (an HTML newsletter) and 200 KB
// (a message with an attachment), and a Postmark batch of 50 messages.
//
// The bodies are deterministic: the same name always gives the same bytes.
package benchbody

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/textproto"
	"strings"
)

// Body is one request body and what a gateway should find in it.
type Body struct {
	// Name says what it is, e.g. "sendgrid-20k".
	Name string
	// Path is the provider's send endpoint the body is posted to.
	Path        string
	ContentType string
	Data        []byte
	// Recipients is the number of recipients the body names.
	Recipients int
}

// Names are the bodies All returns, in order.
var Names = []string{
	"sendgrid-2k", "sendgrid-20k", "sendgrid-200k",
	"mailgun-2k", "mailgun-20k", "mailgun-200k",
	"postmark-batch50",
}

// All returns every body of Names.
func All() []Body {
	out := make([]Body, len(Names))
	for i, n := range Names {
		out[i] = Get(n)
	}
	return out
}

// Get returns the named body; it panics on a name not in Names.
func Get(name string) Body {
	switch name {
	case "sendgrid-2k":
		return sendgrid(name, 11, plainText(18), "", 0)
	case "sendgrid-20k":
		return sendgrid(name, 3, plainText(4), newsletter(20_000), 0)
	case "sendgrid-200k":
		return sendgrid(name, 3, plainText(4), newsletter(4_000), 190_000)
	case "mailgun-2k":
		return mailgun(name, 11, plainText(9), "", 0)
	case "mailgun-20k":
		return mailgun(name, 3, plainText(4), newsletter(20_000), 0)
	case "mailgun-200k":
		return mailgun(name, 3, plainText(4), newsletter(4_000), 190_000)
	case "postmark-batch50":
		return postmarkBatch(name, 50)
	}
	panic("benchbody: no body named " + name)
}

// SendGrid returns a SendGrid v3 body with n recipients in one
// personalization and a short text, for benchmarks that vary the recipients.
func SendGrid(n int) Body {
	return sendgrid(fmt.Sprintf("sendgrid-%drcpt", n), n, plainText(2), "", 0)
}

func recipient(i int) string { return fmt.Sprintf("recipient%04d@example.org", i) }

// plainText is n lines of ordinary message text.
func plainText(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "Line %02d of the message body, padded to make the payload realistic. ", i)
	}
	return b.String()
}

// newsletter is HTML of about size bytes, with the attributes, quotes and
// line breaks that JSON must escape.
func newsletter(size int) string {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>News</title></head><body>\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "<p class=\"lead\" style=\"margin:0 0 12px\">Item %d: this week's news, with a <a href=\"https://shop.example.com/n/%d?utm_source=mail\">link</a> & more.</p>\n", i, i)
	}
	b.WriteString("</body></html>\n")
	return b.String()
}

// attachment is n bytes of incompressible-looking binary content.
func attachment(n int) []byte {
	out := make([]byte, n)
	x := uint32(2463534242)
	for i := range out {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		out[i] = byte(x)
	}
	return out
}

func sendgrid(name string, rcpts int, text, html string, attach int) Body {
	type addr struct {
		Email string `json:"email"`
		Name  string `json:"name,omitempty"`
	}
	type content struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	type file struct {
		Content     string `json:"content"`
		Filename    string `json:"filename"`
		Type        string `json:"type"`
		Disposition string `json:"disposition"`
	}
	to := make([]addr, rcpts)
	for i := range to {
		to[i] = addr{Email: recipient(i), Name: fmt.Sprintf("Recipient %d", i)}
	}
	msg := map[string]any{
		"personalizations": []any{map[string]any{"to": to, "subject": "Your order has shipped"}},
		"from":             addr{Email: "orders@shop.example.com", Name: "Shop"},
		"reply_to":         addr{Email: "help@shop.example.com"},
		"subject":          "Your order has shipped",
		"categories":       []string{"orders", "shipping"},
		"custom_args":      map[string]string{"order": "A-1001"},
	}
	c := []content{{Type: "text/plain", Value: text}}
	if html != "" {
		c = append(c, content{Type: "text/html", Value: html})
	}
	msg["content"] = c
	if attach > 0 {
		// base64 grows 4/3: attach bytes of body hold 3/4 as many raw bytes.
		msg["attachments"] = []file{{
			Content:  base64.StdEncoding.EncodeToString(attachment(attach * 3 / 4)),
			Filename: "invoice.pdf", Type: "application/pdf", Disposition: "attachment",
		}}
	}
	return Body{Name: name, Path: "/v3/mail/send", ContentType: "application/json", Data: marshal(msg), Recipients: rcpts}
}

// marshal encodes v as the providers' SDKs do (JSON.stringify): without
// encoding/json's escaping of <, > and & in HTML.
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

const boundary = "kgbench0123456789abcdef"

func mailgun(name string, rcpts int, text, html string, attach int) Body {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.SetBoundary(boundary); err != nil {
		panic(err)
	}
	field := func(k, v string) {
		if err := w.WriteField(k, v); err != nil {
			panic(err)
		}
	}
	field("from", "Shop <orders@shop.example.com>")
	for i := range rcpts {
		field("to", fmt.Sprintf("Recipient %d <%s>", i, recipient(i)))
	}
	field("subject", "Your order has shipped")
	field("text", text)
	if html != "" {
		field("html", html)
	}
	field("o:tag", "orders")
	if attach > 0 {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="attachment"; filename="invoice.pdf"`)
		h.Set("Content-Type", "application/pdf")
		part, err := w.CreatePart(h)
		if err != nil {
			panic(err)
		}
		part.Write(attachment(attach))
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	// No space after the semicolon, so that bench/run.sh can pass it as one word.
	return Body{Name: name, Path: "/v3/mg.example.com/messages", ContentType: "multipart/form-data;boundary=" + boundary,
		Data: buf.Bytes(), Recipients: rcpts}
}

func postmarkBatch(name string, n int) Body {
	type message struct {
		From          string
		To            string
		Subject       string
		HtmlBody      string
		TextBody      string
		MessageStream string
		Tag           string
	}
	batch := make([]message, n)
	for i := range batch {
		batch[i] = message{
			From: "Shop <orders@shop.example.com>", To: recipient(i),
			Subject:       fmt.Sprintf("Your order A-%d has shipped", 1000+i),
			HtmlBody:      fmt.Sprintf("<html><body><p>Hello, your order <b>A-%d</b> is on its way.</p><p>Track it <a href=\"https://shop.example.com/t/%d\">here</a>.</p></body></html>", 1000+i, i),
			TextBody:      fmt.Sprintf("Hello, your order A-%d is on its way. Track it at https://shop.example.com/t/%d", 1000+i, i),
			MessageStream: "outbound", Tag: "shipping",
		}
	}
	return Body{Name: name, Path: "/email/batch", ContentType: "application/json", Data: marshal(batch), Recipients: n}
}
