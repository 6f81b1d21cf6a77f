// Command upstream is the benchmark's pretend email provider. It reads the
// body and answers a send the way the provider of its path does, headers
// and body, as fast as net/http can:
//
//   - /v3/mail/send (SendGrid): 202, no body, and the headers a real Mail
//     Send answer carries (X-Message-Id, CORS, Server; as posted in
//     github.com/sendgrid/docs/issues/3855);
//   - /v3/<domain>/messages (Mailgun): 200 {"id":…,"message":"Queued. Thank you."};
//   - /email/batch (Postmark): 200, a JSON array of 50 results (the batch
//     the benchmark sends);
//   - any other path: 202 {}.
//
// With -plain every path gets 202 {}, the answer before session 9.
//
//	go run ./bench/upstream -addr 127.0.0.1:18000
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
)

// answer is one canned response.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a *answer) serve(w http.ResponseWriter) {
	h := w.Header()
	for name, v := range a.header {
		h[name] = v
	}
	h["Content-Length"] = []string{strconv.Itoa(len(a.body))}
	w.WriteHeader(a.status)
	w.Write(a.body)
}

func jsonAnswer(status int, body string) *answer {
	return &answer{status: status, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(body)}
}

var (
	plainAnswer    = jsonAnswer(http.StatusAccepted, "{}")
	sendgridAnswer = &answer{status: http.StatusAccepted, header: http.Header{
		"Server":                       {"nginx"},
		"X-Message-Id":                 {"Q3XmL9p2TbWkz1rVnY0aEw"},
		"Access-Control-Allow-Origin":  {"https://sendgrid.api-docs.io"},
		"Access-Control-Allow-Methods": {"POST"},
		"Access-Control-Allow-Headers": {"Authorization, Content-Type, On-behalf-of, x-sg-elas-acl"},
		"Access-Control-Max-Age":       {"600"},
		"X-No-Cors-Reason":             {"https://sendgrid.com/docs/Classroom/Basics/API/cors.html"},
	}}
	mailgunAnswer  = jsonAnswer(http.StatusOK, `{"id":"<20261129201500.1.5F3A9C0D2E7B4A61@mg.example.com>","message":"Queued. Thank you."}`)
	postmarkAnswer = jsonAnswer(http.StatusOK, postmarkBatch(50))
)

func postmarkBatch(n int) string {
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

func pick(path string) *answer {
	switch {
	case path == "/v3/mail/send":
		return sendgridAnswer
	case path == "/email/batch":
		return postmarkAnswer
	case strings.HasPrefix(path, "/v3/") && strings.HasSuffix(path, "/messages"):
		return mailgunAnswer
	}
	return plainAnswer
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18000", "listen address (loopback)")
	plain := flag.Bool("plain", false, "answer 202 {} to every path")
	flag.Parse()
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		a := plainAnswer
		if !*plain {
			a = pick(r.URL.Path)
		}
		a.serve(w)
	})))
}
