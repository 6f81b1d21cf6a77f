// Command upstream is the benchmark's pretend email provider. It reads the
// body and answers a send the way the provider of its path does, headers
// and body, as fast as net/http can (internal/benchbody's AnswerFor):
//
//   - /v3/mail/send (SendGrid): 202, no body, and the headers a real Mail
//     Send answer carries (X-Message-Id, CORS, Server);
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
	"io"
	"log"
	"net/http"

	"github.com/keygate/caddy-keygate/internal/benchbody"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18000", "listen address (loopback)")
	plain := flag.Bool("plain", false, "answer 202 {} to every path")
	flag.Parse()
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		a := benchbody.PlainAnswer
		if !*plain {
			a = benchbody.AnswerFor(r.URL.Path)
		}
		a.Serve(w)
	})))
}
