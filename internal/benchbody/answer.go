package benchbody

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Answer is a provider's answer to a send, as the benchmarks' pretend
// provider gives it: bench/upstream over HTTP, and the in-process stand-in
// of BenchmarkHotPathServer. The headers matter as much as the body: Go's
// net/http writes each one, and how many a response holds decides how
// often its header map grows.
type Answer struct {
	Status int
	Header http.Header // without Content-Length and Date, which Serve and net/http add
	Body   []byte
}

// Serve writes the answer to w.
func (a *Answer) Serve(w http.ResponseWriter) {
	h := w.Header()
	for name, v := range a.Header {
		h[name] = v
	}
	h["Content-Length"] = []string{strconv.Itoa(len(a.Body))}
	w.WriteHeader(a.Status)
	w.Write(a.Body)
}

func jsonAnswer(status int, body string) *Answer {
	return &Answer{Status: status, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(body)}
}

var (
	// PlainAnswer is 202 {}, the upstream's answer to every path before
	// session 9 (bench/upstream -plain).
	PlainAnswer = jsonAnswer(http.StatusAccepted, "{}")

	// SendGrid's Mail Send: 202, no body, and the headers a real one carries
	// (X-Message-Id, CORS, Server; as posted in
	// github.com/sendgrid/docs/issues/3855).
	sendgridAnswer = &Answer{Status: http.StatusAccepted, Header: http.Header{
		"Server":                       {"nginx"},
		"X-Message-Id":                 {"Q3XmL9p2TbWkz1rVnY0aEw"},
		"Access-Control-Allow-Origin":  {"https://sendgrid.api-docs.io"},
		"Access-Control-Allow-Methods": {"POST"},
		"Access-Control-Allow-Headers": {"Authorization, Content-Type, On-behalf-of, x-sg-elas-acl"},
		"Access-Control-Max-Age":       {"600"},
		"X-No-Cors-Reason":             {"https://sendgrid.com/docs/Classroom/Basics/API/cors.html"},
	}}
	mailgunAnswer  = jsonAnswer(http.StatusOK, `{"id":"<20261129201500.1.5F3A9C0D2E7B4A61@mg.example.com>","message":"Queued. Thank you."}`)
	postmarkAnswer = jsonAnswer(http.StatusOK, postmarkResults(50))
)

// postmarkResults is Postmark's answer to a batch of n messages, all sent.
func postmarkResults(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"ErrorCode":0,"Message":"OK","MessageID":"b7bc2f4a-e38e-4336-af7d-e6c392c2%04x","SubmittedAt":"2026-11-29T20:15:00.1794748Z","To":"recipient%04d@example.org"}`, i, i)
	}
	b.WriteByte(']')
	return b.String()
}

// AnswerFor is what the provider of a send path answers: SendGrid's
// /v3/mail/send 202 with its headers, Mailgun's /v3/<domain>/messages 200
// with the queued message's id, Postmark's /email/batch 200 with the
// results of the 50 messages postmark-batch50 sends, and PlainAnswer to
// any other path.
func AnswerFor(path string) *Answer {
	switch {
	case path == "/v3/mail/send":
		return sendgridAnswer
	case path == "/email/batch":
		return postmarkAnswer
	case strings.HasPrefix(path, "/v3/") && strings.HasSuffix(path, "/messages"):
		return mailgunAnswer
	}
	return PlainAnswer
}
