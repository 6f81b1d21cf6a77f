// Package tlsfault tells a TLS failure no retry mends from one that may
// pass, for the store and the limiters alike.
package tlsfault

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// Untrusted reports whether err is a server's certificate that this side
// does not trust or that is not for the host named: a configuration to
// mend (an authority, a name), not a server to wait for.
func Untrusted(err error) bool {
	var (
		cv *tls.CertificateVerificationError
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
	)
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}
