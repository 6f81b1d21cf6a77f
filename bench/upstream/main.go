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
// With -plain every path gets 202 {}, the answer before session 9. With
// -tls-addr it also serves HTTPS there, as every real provider does (HTTP/2
// offered, TLS 1.3), under a certificate of its own made at start (ECDSA
// P-256) and written to -tls-cert for the proxy in front to trust.
//
//	go run ./bench/upstream -addr 127.0.0.1:18000
//	go run ./bench/upstream -addr 127.0.0.1:18000 -tls-addr 127.0.0.1:18001 -tls-cert /tmp/upstream.pem
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/keygate/caddy-keygate/internal/benchbody"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18000", "listen address (loopback)")
	plain := flag.Bool("plain", false, "answer 202 {} to every path")
	tlsAddr := flag.String("tls-addr", "", "also serve HTTPS on this address")
	tlsCert := flag.String("tls-cert", "", "with -tls-addr: where to write the certificate (PEM) to trust")
	flag.Parse()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		a := benchbody.PlainAnswer
		if !*plain {
			a = benchbody.AnswerFor(r.URL.Path)
		}
		a.Serve(w)
	})
	if *tlsAddr != "" {
		if *tlsCert == "" {
			log.Fatal("-tls-addr needs -tls-cert")
		}
		cert, err := selfSigned(*tlsCert)
		if err != nil {
			log.Fatal(err)
		}
		// ServeTLS offers HTTP/2 as well, which Caddy's reverse_proxy takes
		// when an HTTPS upstream offers it, as the providers' APIs do.
		srv := &http.Server{Addr: *tlsAddr, Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}}
		go func() { log.Fatal(srv.ListenAndServeTLS("", "")) }()
	}
	log.Fatal(http.ListenAndServe(*addr, h))
}

// selfSigned makes a certificate for 127.0.0.1 and localhost, valid for a
// day, and writes it to path.
func selfSigned(path string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "keygate bench upstream"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
