// Command upstream is the benchmark's pretend email provider: it answers
// 202 {} to every request, as fast as net/http can, after reading the body.
//
//	go run ./bench/upstream -addr 127.0.0.1:18000
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18000", "listen address (loopback)")
	flag.Parse()
	body := []byte("{}")
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{"2"}
		w.WriteHeader(http.StatusAccepted)
		w.Write(body)
	})))
}
