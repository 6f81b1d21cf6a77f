// Package mailapi reads the sender and counts the recipients of email
// providers' send requests, so keygate can enforce per-key sender domains,
// recipients per request and recipient quotas.
//
// Eight providers' payloads are described by one table of dialects: each
// dialect lists its send endpoints and, for each, where the sender and the
// recipient fields are. One walker reads every dialect. The package only
// reads the body it is given; the caller forwards it unchanged.
//
// The package imports nothing from Caddy and knows nothing about keys.
package mailapi

import (
	"sort"
	"strings"
)

// Dialect is one provider's send API.
type Dialect struct {
	// Name is how the Caddyfile names it (mail_api <name>).
	Name      string
	endpoints []endpoint
}

// Message is what keygate needs to know about a send request.
type Message struct {
	// Senders are every From address (lower-cased addr-spec), including
	// per-personalization and per-message overrides. For Mailgun the
	// sending domain of the path is included as "@domain".
	Senders []string
	// Recipients is To + Cc + Bcc summed over every message,
	// personalization and batch element.
	Recipients int
	// Opaque reports a body that hides its sender or recipients (raw MIME
	// that could not be read); callers refuse it for restricted keys.
	Opaque bool
}

// shape is how an endpoint's body holds its messages.
type shape uint8

const (
	oneObject      shape = iota // {message}
	objectArray                 // [{message}, …]
	messagesOrList              // {"Messages": [{message}, …]} or [{message}, …]
	form                        // Mailgun: multipart/form-data or urlencoded fields
	mimeForm                    // Mailgun: a form whose "message" part is raw MIME
)

// endpoint is one send path. A "*" segment in path matches one segment
// (Mailgun's /v3/{domain}/messages).
type endpoint struct {
	path  string
	shape shape
	msg   *msgSpec
}

// kind says how a field holds addresses.
type kind uint8

const (
	addrString      kind = iota // "Name <a@b>" (one address)
	addrList                    // "a@b, Name <c@d>" (an RFC 5322 address list)
	addrListOrArray             // an address list string, or an array of address strings
	stringArray                 // ["a@b", "c@d"]
	objectOne                   // {"email": "a@b"} with the address under key
	objectList                  // [{"email": "a@b"}, …]
)

// field locates addresses: a dotted path from the message object, how they
// are held, and for objects the key of the address.
type field struct {
	path string
	kind kind
	key  string
}

// msgSpec describes one message object of a dialect.
type msgSpec struct {
	from []field
	// fromRequired: a message without any sender is invalid.
	fromRequired bool
	recipients   []field
	// groups are arrays of sub-messages (SendGrid personalizations, Brevo
	// messageVersions, Mailjet Messages), each with their own fields.
	groups []group
	// raw is a field holding base64 MIME (SES Content.Raw.Data).
	raw string
}

type group struct {
	path     string
	spec     *msgSpec
	required bool
}

func emails(prefix, key string, names ...string) []field {
	out := make([]field, len(names))
	for i, n := range names {
		out[i] = field{path: prefix + n, kind: objectList, key: key}
	}
	return out
}

func lists(k kind, names ...string) []field {
	out := make([]field, len(names))
	for i, n := range names {
		out[i] = field{path: n, kind: k}
	}
	return out
}

var (
	sendgrid = &msgSpec{
		from:         []field{{path: "from", kind: objectOne, key: "email"}},
		fromRequired: true,
		groups: []group{{path: "personalizations", required: true, spec: &msgSpec{
			from:       []field{{path: "from", kind: objectOne, key: "email"}},
			recipients: emails("", "email", "to", "cc", "bcc"),
		}}},
	}
	postmark = &msgSpec{
		from:         []field{{path: "From", kind: addrString}},
		fromRequired: true,
		recipients:   lists(addrList, "To", "Cc", "Bcc"),
	}
	resend = &msgSpec{
		from:         []field{{path: "from", kind: addrString}},
		fromRequired: true,
		recipients:   lists(addrListOrArray, "to", "cc", "bcc"),
	}
	ses = &msgSpec{
		from:       []field{{path: "FromEmailAddress", kind: addrString}},
		recipients: lists(stringArray, "Destination.ToAddresses", "Destination.CcAddresses", "Destination.BccAddresses"),
		raw:        "Content.Raw.Data",
	}
	mailjet = &msgSpec{
		groups: []group{{path: "Messages", required: true, spec: &msgSpec{
			from:         []field{{path: "From", kind: objectOne, key: "Email"}},
			fromRequired: true,
			recipients:   emails("", "Email", "To", "Cc", "Bcc"),
		}}},
	}
	brevo = &msgSpec{
		from:       []field{{path: "sender", kind: objectOne, key: "email"}},
		recipients: emails("", "email", "to", "cc", "bcc"),
		groups: []group{{path: "messageVersions", spec: &msgSpec{
			recipients: emails("", "email", "to", "cc", "bcc"),
		}}},
	}
	mailpit = &msgSpec{
		from:         []field{{path: "From", kind: objectOne, key: "Email"}},
		fromRequired: true,
		recipients:   append(emails("", "Email", "To", "Cc"), field{path: "Bcc", kind: stringArray}),
	}
	mailgun = &msgSpec{
		from:         []field{{path: "from", kind: addrString}},
		fromRequired: true,
		recipients:   lists(addrList, "to", "cc", "bcc"),
	}
)

// dialects is the table: every provider, its send endpoints and payloads.
var dialects = map[string]*Dialect{
	"sendgrid": {Name: "sendgrid", endpoints: []endpoint{{"/v3/mail/send", oneObject, sendgrid}}},
	"postmark": {Name: "postmark", endpoints: []endpoint{
		{"/email", oneObject, postmark},
		{"/email/withTemplate", oneObject, postmark},
		{"/email/batch", objectArray, postmark},
		{"/email/batchWithTemplates", messagesOrList, postmark},
	}},
	"mailgun": {Name: "mailgun", endpoints: []endpoint{
		{"/v3/*/messages", form, mailgun},
		{"/v3/*/messages.mime", mimeForm, mailgun},
	}},
	"resend": {Name: "resend", endpoints: []endpoint{
		{"/emails", oneObject, resend},
		{"/emails/batch", objectArray, resend},
	}},
	"ses":     {Name: "ses", endpoints: []endpoint{{"/v2/email/outbound-emails", oneObject, ses}}},
	"mailjet": {Name: "mailjet", endpoints: []endpoint{{"/v3.1/send", oneObject, mailjet}}},
	"brevo":   {Name: "brevo", endpoints: []endpoint{{"/v3/smtp/email", oneObject, brevo}}},
	"mailpit": {Name: "mailpit", endpoints: []endpoint{{"/api/v1/send", oneObject, mailpit}}},
}

// Lookup returns the dialect with this name.
func Lookup(name string) (*Dialect, bool) {
	d, ok := dialects[name]
	return d, ok
}

// Names lists the dialects, sorted.
func Names() []string {
	names := make([]string, 0, len(dialects))
	for n := range dialects {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// IsSend reports whether a request is one of the dialect's send requests:
// POST to a send path (a trailing slash is tolerated). It does not allocate.
func (d *Dialect) IsSend(method, path string) bool {
	if method != "POST" {
		return false
	}
	return d.endpoint(path) != nil
}

func (d *Dialect) endpoint(path string) *endpoint {
	if len(path) > 1 {
		path = strings.TrimSuffix(path, "/")
	}
	for i := range d.endpoints {
		if matchPath(d.endpoints[i].path, path) {
			return &d.endpoints[i]
		}
	}
	return nil
}

// matchPath matches path against pattern segment by segment; a "*"
// segment matches any one non-empty segment.
func matchPath(pattern, path string) bool {
	for {
		ps, prest, pmore := strings.Cut(pattern, "/")
		s, rest, more := strings.Cut(path, "/")
		if ps == "*" {
			if s == "" {
				return false
			}
		} else if ps != s {
			return false
		}
		if pmore != more {
			return false
		}
		if !pmore {
			return true
		}
		pattern, path = prest, rest
	}
}

// pathDomain returns the segment a "*" in the pattern matched.
func pathDomain(pattern, path string) string {
	pp, sp := strings.Split(pattern, "/"), strings.Split(strings.TrimSuffix(path, "/"), "/")
	for i := range pp {
		if pp[i] == "*" && i < len(sp) {
			return strings.ToLower(sp[i])
		}
	}
	return ""
}

// SenderAllowed reports whether addr's domain (after the last '@') is in
// domains: "example.com" matches exactly that domain, "*.example.com"
// matches its subdomains only. An empty list allows every sender.
func SenderAllowed(addr string, domains []string) bool {
	if len(domains) == 0 {
		return true
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	domain := strings.ToLower(strings.TrimSuffix(addr[at+1:], "."))
	for _, d := range domains {
		d = strings.ToLower(d)
		if sub, ok := strings.CutPrefix(d, "*."); ok {
			if len(domain) > len(sub)+1 && strings.HasSuffix(domain, "."+sub) {
				return true
			}
			continue
		}
		if domain == d {
			return true
		}
	}
	return false
}
