package keygate

import (
	"encoding/base64"
	"strings"
	"unsafe"

	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/verifier"
)

// Where a key arrives. A client keeps its provider's official SDK and swaps
// only the base URL and the key, so keygate reads the key wherever that SDK
// puts it: Authorization: Bearer (always), HTTP Basic with the key as the
// username or the password (Mailgun's api:KEY, Mailjet's public:private),
// the dialect's own key headers (Postmark, Brevo), each key_header, and on
// mail_api ses routes the access key id of an AWS Signature V4.
//
// A SigV4 signature is not verified, and cannot be: it is made with the
// secret access key, which a gateway that holds only key digests never
// knows. The access key id alone authenticates, as a bearer token does, so
// the SDK may be given any secret access key, and anything that logs
// access key ids (AWS SDK debug logs, proxies) logs the key.

// fault is why a request's credentials yielded no key to verify, or more
// than one. It refines missing_key (a key was sent where this route does
// not read it) and invalid_key (a credential that holds no key, or two
// keys), so the client is told how to send the key instead of being told
// the key is wrong.
type fault uint8

const (
	noFault           fault = iota
	faultRawKey             // Authorization: <key>, without a scheme
	faultOtherScheme        // Authorization: <scheme> <key> in a scheme keygate does not read
	faultSigV4NotHere       // SigV4 on a route whose dialect is not ses
	faultOtherHeader        // a key in a credential header this route does not read
	faultKeyInURL           // something shaped like a key in the URL
	faultNoKey              // an Authorization credential that holds no key
	faultBasic              // Authorization: Basic that is not base64 of user:password
	faultBasicNoKey         // Basic whose username and password are both no keys
	faultSigV4              // SigV4 without a well-formed Credential=
	faultSigV4NoKey         // SigV4 whose access key id is not a key
	faultTwoKeys            // two different keys
	numFaults
)

// faults are each fault's code and message; a message ending in "send it
// as" is completed with the ways the route accepts a key.
var faults = [numFaults]struct {
	code Code
	text string
	how  bool
}{
	noFault:           {MissingKey, "", false},
	faultRawKey:       {MissingKey, "the key was sent in Authorization without a scheme; send it as ", true},
	faultOtherScheme:  {MissingKey, "the key was sent in an Authorization scheme this route does not read; send it as ", true},
	faultSigV4NotHere: {MissingKey, "AWS Signature V4 carries a key only on mail_api ses routes; send it as ", true},
	faultOtherHeader:  {MissingKey, "the key was sent in a header this route does not read; send it as ", true},
	faultKeyInURL:     {MissingKey, "the URL holds an API key, which would be forwarded and logged with it; send the key only as ", true},
	faultNoKey:        {InvalidKey, "the Authorization header holds no API key; send it as ", true},
	faultBasic:        {InvalidKey, "the Authorization: Basic credentials are not base64 of username:password", false},
	faultBasicNoKey:   {InvalidKey, "neither the username nor the password of the Authorization: Basic credentials is a well-formed API key", false},
	faultSigV4:        {InvalidKey, "the AWS Signature V4 Authorization header has no Credential=<access key id>/<date>/<region>/<service>/aws4_request", false},
	faultSigV4NoKey:   {InvalidKey, "the AWS Signature V4 access key id is not a well-formed API key; use the key as the access key id", false},
	faultTwoKeys:      {InvalidKey, "the request presents two different API keys; send one", false},
}

func (f fault) message(how string) string {
	if faults[f].how {
		return faults[f].text + how
	}
	return faults[f].text
}

// maxBasic bounds the base64 of Basic credentials keygate decodes: far more
// than a key and a provider's user name, far less than a header may hold.
const maxBasic = 1024

// presented collects the keys a request's credentials hold.
type presented struct {
	prefix string
	sigV4  bool // the route reads SigV4 access key ids
	// key is the value read from where the route reads keys: a
	// well-formed key if any arrived there, else the first value (which
	// authenticate then refuses as invalid_key).
	key string
	// misplaced is a well-formed key sent where the route does not read
	// one, and how.
	misplaced      string
	misplacedFault fault
	// fault is the first credential that held no key at all.
	fault fault
	two   bool
}

// take records a value read from where the route reads keys. Only
// well-formed keys count as keys, so junk in a key_header beside a good
// Bearer key is not a second key; the shape is checked only when a second
// value arrives, which keeps the common request to one check (in
// authenticate).
func (p *presented) take(k string) {
	switch {
	case p.key == "":
		p.key = k
	case p.key == k:
	default:
		switch had, has := p.wellFormed(p.key), p.wellFormed(k); {
		case had && has:
			p.two = true
		case has:
			p.key = k
		}
	}
}

// misplace records a well-formed key sent where the route does not read one.
func (p *presented) misplace(k string, f fault) {
	switch {
	case p.misplaced == "":
		p.misplaced, p.misplacedFault = k, f
	case p.misplaced != k:
		p.two = true
	}
}

func (p *presented) noKey(f fault) {
	if p.fault == noFault {
		p.fault = f
	}
}

func (p *presented) wellFormed(k string) bool {
	_, ok := verifier.Parse(k, p.prefix)
	return ok
}

// result is the one key to verify, or why there is none. A credential that
// holds no key is only a fault when no key arrived anywhere else: an SDK
// may send its own Authorization beside a key header.
func (p *presented) result() (string, fault) {
	switch {
	case p.two:
		return "", faultTwoKeys
	case p.misplaced != "" && p.key != "" && p.key != p.misplaced:
		if p.wellFormed(p.key) {
			return "", faultTwoKeys
		}
		return "", p.misplacedFault
	case p.key != "":
		return p.key, noFault
	case p.misplaced != "":
		return "", p.misplacedFault
	}
	return "", p.fault
}

// authorization reads one Authorization header value.
func (p *presented) authorization(v string) {
	// Most requests: "Bearer <key>", nothing to trim (what TrimSpace
	// trims begins and ends with a space, a control byte or a non-ASCII
	// byte).
	if n := len(v); n > len("Bearer ") && v[:len("Bearer ")] == "Bearer " &&
		plainByte(v[len("Bearer ")]) && plainByte(v[n-1]) {
		p.take(v[len("Bearer "):])
		return
	}
	p.parseAuthorization(v)
}

// parseAuthorization reads any Authorization value.
func (p *presented) parseAuthorization(v string) {
	scheme, rest, spaced := strings.Cut(v, " ")
	rest = strings.TrimSpace(rest)
	switch {
	case !spaced:
		if p.wellFormed(v) {
			p.misplace(v, faultRawKey)
		} else {
			p.noKey(faultNoKey)
		}
	case strings.EqualFold(scheme, "Bearer"):
		// An empty Bearer presents nothing.
		if rest != "" {
			p.take(rest)
		}
	case strings.EqualFold(scheme, "Basic"):
		p.basic(rest)
	case strings.EqualFold(scheme, "AWS4-HMAC-SHA256"):
		id, ok := sigV4AccessKeyID(rest)
		switch {
		case !ok:
			p.noKey(faultSigV4)
		case !p.wellFormed(id):
			p.noKey(faultSigV4NoKey)
		case !p.sigV4:
			p.misplace(id, faultSigV4NotHere)
		default:
			p.take(id) // well-formed, checked above
		}
	case p.wellFormed(rest):
		p.misplace(rest, faultOtherScheme)
	default:
		p.noKey(faultNoKey)
	}
}

// plainByte reports whether c is printable ASCII other than a space.
func plainByte(c byte) bool { return c > ' ' && c < 0x7f }

// basic reads HTTP Basic credentials: the key may be the username
// (Mailjet's public key), the password (Mailgun's api:KEY, Mailjet's
// private key) or both.
func (p *presented) basic(enc string) {
	s, ok := basicCredentials(enc)
	if !ok {
		p.noKey(faultBasic)
		return
	}
	user, pass, ok := strings.Cut(s, ":")
	if !ok {
		p.noKey(faultBasic)
		return
	}
	// A key read from an environment file with its newline, or pasted with
	// a space: trimmed, as a Bearer key is.
	user, pass = strings.TrimSpace(user), strings.TrimSpace(pass)
	u, w := p.wellFormed(user), p.wellFormed(pass)
	if u {
		p.take(user)
	}
	if w {
		p.take(pass)
	}
	if !u && !w {
		p.noKey(faultBasicNoKey)
	}
}

// basicCredentials decodes the base64 of HTTP Basic credentials, at most
// maxBasic of it; false when it is longer, not base64, or empty. The text
// is a view of memory never written again, so a key may be one of it.
func basicCredentials(enc string) (string, bool) {
	if len(enc) > maxBasic {
		return "", false
	}
	var src [maxBasic]byte
	n := copy(src[:], enc)
	dec := make([]byte, base64.StdEncoding.DecodedLen(n))
	m, err := base64.StdEncoding.Decode(dec, src[:n])
	if err != nil || m == 0 {
		return "", false
	}
	return unsafe.String(&dec[0], m), true
}

// sigV4AccessKeyID returns the access key id of the parameters of an
// AWS4-HMAC-SHA256 Authorization header,
// "Credential=<id>/<date>/<region>/<service>/aws4_request, SignedHeaders=…, Signature=…",
// and whether its Credential is well-formed.
func sigV4AccessKeyID(params string) (string, bool) {
	for params != "" {
		var param string
		param, params, _ = strings.Cut(params, ",")
		name, value, ok := strings.Cut(strings.TrimSpace(param), "=")
		if !ok || !strings.EqualFold(name, "Credential") {
			continue
		}
		// Exactly five parts, the last aws4_request, none empty.
		id, scope, _ := strings.Cut(value, "/")
		id = strings.TrimSpace(id) // a key pasted with a space, as a Bearer key is trimmed
		if id == "" || strings.Count(scope, "/") != 3 || !strings.HasSuffix(scope, "/aws4_request") || strings.Contains(scope, "//") || strings.HasPrefix(scope, "/") {
			return "", false
		}
		return id, true
	}
	return "", false
}

// howToSend names the ways a route accepts a key, its SDK's own first, for
// messages that tell a client how to send it.
func howToSend(d *mailapi.Dialect, keyHeaders []string) string {
	var ways []string
	if d != nil && d.KeyInSigV4() {
		ways = append(ways, "the access key id of an AWS Signature V4 (any secret access key)")
	}
	if d != nil && d.KeyInBasic() {
		ways = append(ways, "the username or password of HTTP Basic auth")
	}
	for _, name := range keyHeaders {
		ways = append(ways, name+": <key>")
	}
	ways = append(ways, "Authorization: Bearer <key>")
	if len(ways) == 1 {
		return ways[0]
	}
	return strings.Join(ways[:len(ways)-1], ", ") + " or " + ways[len(ways)-1]
}
