package tlsfault

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"testing"
)

func TestUntrusted(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), true},
		{&net.OpError{Op: "remote error", Err: x509.HostnameError{Host: "db"}}, true},
		{x509.CertificateInvalidError{Reason: x509.Expired}, true},
		{errors.New("connection refused"), false},
		{nil, false},
	} {
		if got := Untrusted(c.err); got != c.want {
			t.Errorf("Untrusted(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
