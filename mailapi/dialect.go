// Package mailapi reads the sender addresses and counts the recipients of an
// email provider's send request, so that a gateway can enforce per-key sender
// domains, recipient limits and quotas without understanding the rest of the
// payload.
//
// Each provider's wire format is a Dialect. A dialect only reads the body it
// is given and never changes it: the upstream receives the request byte for
// byte. A dialect also records how the provider's official SDKs send their
// API key (a header, HTTP Basic, AWS Signature V4) and read an error (its
// members, an error-type header, the status of a used-up sending limit), so
// a gateway can take the key where the SDK puts it and refuse in a shape
// the SDK shows. The package imports nothing from Caddy and knows nothing
// about keys themselves.
//
// Where keygate and the provider might read a body differently, keygate errs
// towards seeing more: JSON member names match case-insensitively, repeated
// members all count, every From address is reported and every address in a
// recipient field is counted.
package mailapi

import (
	"errors"
	"mime"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Message is what a send request asks the provider to do, as far as the
// gateway's policy is concerned.
type Message struct {
	// Senders holds every From address of every message in the request,
	// including per-personalization and per-message overrides, as lower-cased
	// addr-specs. An address may appear more than once.
	Senders []string
	// SendingDomains holds the domains the request sends through without
	// naming them in an address, lower-cased: Mailgun's {domain} in
	// /v3/{domain}/messages. The provider sends through that domain whatever
	// the From says, so a key's sender domains must allow it as they allow
	// a sender (see DomainAllowed).
	SendingDomains []string
	// Recipients is To + Cc + Bcc summed over every message, personalization
	// and batch element.
	Recipients int
	// Opaque reports that the body hides its sender or recipients from
	// keygate (raw MIME it could not parse, a sender chosen by id or by a
	// stored template). Callers refuse such bodies for restricted keys.
	Opaque bool
	// NotSend reports a request to a send endpoint that sends no mail: an
	// action of SES's v1 API other than its sends (ListIdentities), or a
	// Resend broadcast created as a draft. No sender or recipient rule
	// applies to it.
	NotSend bool
	// Unread names the send API of the request when keygate does not read
	// that API at all (it is then Opaque), e.g. SES v1's SendBounce.
	Unread string
	// ScopePath is the path scope lines match the request as, when it is
	// not the request's own: every action of SES's v1 API is POSTed to
	// "/", so its sends match as the SES v2 endpoint that sends the same
	// way (SendEmail as /v2/email/outbound-emails), and one scope line
	// covers both APIs; every other action as "/" and its name
	// (/GetSendQuota), with ScopeElse. "" for every other request.
	ScopePath string
	// ScopeElse reports that when no scope line matches ScopePath, the
	// lines are matched against the request itself: a line for "/" covers
	// the v1 actions no line names.
	ScopeElse bool
	// Unrated reports that the provider's answer to this send, when it
	// takes it, carries none of its rate headers (SendGrid's mail/send,
	// which is not limited as its other endpoints are); its refusals do.
	Unrated bool
	// PartlySent reports that the provider may send some of the request's
	// messages and answer the whole request with a 400 for the others
	// (Mailjet's v3.1 send of more than one message, which "will not stop
	// the processing of other successful messages"): a 400 to it does not
	// show that nothing went.
	PartlySent bool
}

// Dialect is one email provider's send API: where its send endpoints are and
// where their bodies keep senders and recipients.
type Dialect struct {
	// Name is the dialect's name in configuration, e.g. "sendgrid".
	Name      string
	endpoints []endpoint
	// keyHeaders are the headers other than Authorization in which the
	// provider's official SDKs send their API key (Postmark's token
	// header, Brevo's api-key), canonical.
	keyHeaders []string
	// basic marks providers whose SDKs send their key with HTTP Basic
	// auth (Mailgun as the password of api:KEY, Mailjet as public:private).
	basic bool
	// sigV4 marks providers whose SDKs sign requests with AWS Signature
	// V4, where the only place for a key is the access key id (SES).
	sigV4 bool
	// errors is the shape of the provider's error responses; nil for
	// providers with no SDK (Mailpit).
	errors *errorShape
	// rateHeaders is how the provider reports its rate limit, if in
	// headers its SDKs read.
	rateHeaders RateHeaders
	// rateOnlyLimited marks a provider whose SDKs read rateHeaders only
	// from a 429 (Mailgun: mailgun-go v5's RateLimitedError takes
	// X-RateLimit-Reset as its ResetAt): keygate sets them only on the
	// rate limit's refusal, and leaves every other answer as the provider
	// sends it.
	rateOnlyLimited bool
}

// RateHeaders names a provider's way of reporting its rate limit in
// response headers.
type RateHeaders uint8

const (
	// NoRateHeaders: none that an SDK reads.
	NoRateHeaders RateHeaders = iota
	// XRateLimit: X-RateLimit-Limit, -Remaining and -Reset, a Unix time
	// (SendGrid; Mailgun on a 429).
	XRateLimit
	// RateLimitFields: RateLimit-Limit, -Remaining and -Reset, in seconds
	// from now, as in the IETF draft's first versions (Resend; resend-go
	// reads them into its RateLimitError).
	RateLimitFields
)

// KeyHeaders returns the headers other than Authorization in which the
// dialect's SDKs send their API key. Callers must not modify the slice.
func (d *Dialect) KeyHeaders() []string { return d.keyHeaders }

// KeyInBasic reports whether the dialect's SDKs send their key with HTTP
// Basic auth, as the username or the password.
func (d *Dialect) KeyInBasic() bool { return d.basic }

// KeyInSigV4 reports whether the dialect's SDKs sign their requests with
// AWS Signature V4, so that a key can only arrive as the access key id.
func (d *Dialect) KeyInSigV4() bool { return d.sigV4 }

// RateHeaders reports in which headers the provider reports its rate limit
// to its SDKs.
func (d *Dialect) RateHeaders() RateHeaders { return d.rateHeaders }

// RatedAnswer reports whether the provider's answer to an allowed request,
// m as Inspect read it (zero for a request it did not read), carries its
// rate headers: not on a send whose endpoint the provider answers without
// them (Message.Unrated: SendGrid's mail/send), nor anywhere on a provider
// whose SDKs read them only from a 429 (Mailgun). A refusal by the rate
// limit carries them on every dialect that has them.
func (d *Dialect) RatedAnswer(m Message) bool { return !d.rateOnlyLimited && !m.Unrated }

// AllKeyHeaders returns every header other than Authorization in which any
// dialect's SDKs send their API key, canonical and without repeats: a
// gateway strips them all, whatever dialect a route speaks.
func AllKeyHeaders() []string {
	var all []string
	for _, d := range dialects {
		for _, h := range d.keyHeaders {
			if !slices.Contains(all, h) {
				all = append(all, h)
			}
		}
	}
	return all
}

// endpoint is one send endpoint of a dialect.
type endpoint struct {
	// path is the endpoint's clean path; a "*" segment matches any one
	// segment, which Inspect reports as a sending domain (Mailgun's).
	path string
	// method is the method that sends there, when it is not POST.
	method string
	// segs is path's segments from the last to the first, as matchPath
	// walks a request's path (filled in at init).
	segs []string
	// form marks bodies sent as HTML forms rather than JSON.
	form  bool
	shape *shape
	// opaque names a send keygate does not read at all (a campaign or
	// broadcast sent to recipients and from a sender stored at the
	// provider): its body is not parsed, the request is Opaque, and a "*"
	// in its path is an id, not a sending domain.
	opaque string
	// sendFlag names a top-level member of an opaque endpoint's JSON body
	// that makes the request a send: without it (or when it is false or
	// null) the request sends nothing (Resend's POST /broadcasts creates a
	// draft unless "send" is true; a Brevo campaign without scheduledAt is
	// a draft).
	sendFlag string
	// query marks SES's v1 Query API, whose clients read errors as XML,
	// and whose requests name their action in a parameter: actions are
	// its sends (query.go).
	query   bool
	actions []queryAction
	// unrated: the provider's answer to a send here that it takes carries
	// no rate headers (SendGrid's mail/send, which is not limited as its
	// other endpoints are, its other sends included); its 429s do.
	unrated bool
	// partial: the provider processes each message of a batch sent here
	// on its own, and answers 400 when it refused any (Message.PartlySent).
	partial bool
}

// dialects is the one table of every provider keygate understands, in the
// order Names reports them. The shapes are declared in shapes.go.
var dialects = []*Dialect{
	{Name: "sendgrid", errors: sendgridErrors, rateHeaders: XRateLimit, endpoints: []endpoint{
		{path: "/v3/mail/send", shape: sendgridSend, unrated: true},
		{path: "/v3/marketing/test/send_email", opaque: "SendGrid's marketing test send"},
		{path: "/v3/marketing/singlesends/*/schedule", method: "PUT", opaque: "SendGrid's Single Send schedule"},
		{path: "/v3/campaigns/*/schedules", opaque: "SendGrid's legacy campaign schedule"},
		{path: "/v3/campaigns/*/schedules/now", opaque: "SendGrid's legacy campaign send"},
		{path: "/v3/campaigns/*/schedules/test", opaque: "SendGrid's legacy campaign test send"},
		// The Web API v2's mail send (deprecated in February 2025), a form
		// whose x-smtpapi JSON may add recipients: /api/mail.send.json or
		// .xml, read without the extension.
		{path: "/api/mail.send", opaque: "SendGrid's v2 mail send"},
		// A verified sender created, or its verification asked for again:
		// SendGrid mails its from_email a verification link.
		{path: "/v3/verified_senders", opaque: "SendGrid's sender verification"},
		{path: "/v3/verified_senders/resend/*", opaque: "SendGrid's sender verification"},
	}},
	{Name: "postmark", keyHeaders: []string{"X-Postmark-Server-Token", "X-Postmark-Account-Token"}, errors: postmarkErrors, endpoints: []endpoint{
		{path: "/email", shape: postmarkMessage},
		{path: "/email/withTemplate", shape: postmarkMessage},
		{path: "/email/batch", shape: arrayOf(postmarkMessage)},
		// Documented as {"Messages": [...]}; a bare array is accepted too.
		{path: "/email/batchWithTemplates", shape: orArrayOf(object(field("Messages", arrayOf(postmarkMessage))), postmarkMessage)},
		// The Bulk API (postmark.js's sendBulkEmail).
		{path: "/email/bulk", shape: postmarkBulk},
		// A sender signature created, or its confirmation asked for again:
		// Postmark mails its FromEmail a confirmation link (the account
		// API's createSenderSignature, resendSenderSignatureConfirmation).
		{path: "/senders", opaque: "Postmark's sender signature confirmation"},
		{path: "/senders/*/resend", opaque: "Postmark's sender signature confirmation"},
	}},
	{Name: "mailgun", basic: true, errors: mailgunErrors, rateHeaders: XRateLimit, rateOnlyLimited: true, endpoints: []endpoint{
		{path: "/v3/*/messages", form: true, shape: mailgunMessage},
		{path: "/v3/*/messages.mime", form: true, shape: mailgunMIME},
		// The same at API version 2, which older clients (mailgun-php 2)
		// still send to.
		{path: "/v2/*/messages", form: true, shape: mailgunMessage},
		{path: "/v2/*/messages.mime", form: true, shape: mailgunMIME},
		// A stored message (any the account sent in its retention
		// period, from whatever sender) sent again to the form's "to"
		// (mailgun.js's messages.resendEmail).
		{path: "/v3/domains/*/messages/*", opaque: "Mailgun's stored message resend"},
		// An inbox placement test: a message the body describes, sent
		// from its "from" to a seed list (mailgun.js's inboxPlacements.
		// runTest).
		{path: "/v4/inbox/tests", opaque: "Mailgun's inbox placement test"},
		// A sandbox domain's authorized recipient added: Mailgun mails the
		// address (in the query string) an invitation (mailgun.js's
		// accountManagement.addSandboxAuthorizedRecipient).
		{path: "/v5/sandbox/auth_recipients", opaque: "Mailgun's sandbox recipient invitation"},
	}},
	{Name: "resend", errors: resendErrors, rateHeaders: RateLimitFields, endpoints: []endpoint{
		{path: "/emails", shape: resendMessage},
		{path: "/emails/batch", shape: arrayOf(resendMessage)},
		{path: "/broadcasts/*/send", opaque: "Resend's broadcast send"},
		{path: "/broadcasts", opaque: "Resend's broadcast created with send", sendFlag: "send"},
		// Resend's inboxes: a stored draft sent, a received email replied
		// to (its sender and, with reply_all, every other recipient, and
		// the body's cc and bcc) or forwarded, all from the inbox
		// (resend's inboxes.drafts.send, inboxes.threads.emails.reply
		// and forward).
		{path: "/inboxes/*/drafts/*/send", opaque: "Resend's inbox draft send"},
		{path: "/inboxes/*/threads/*/emails/*/reply", opaque: "Resend's inbox reply"},
		{path: "/inboxes/*/threads/*/emails/*/forward", opaque: "Resend's inbox forward"},
		// An event sent for a contact (any email address) starts the
		// automations it triggers, whose send_email steps mail that
		// contact from a stored template (resend's events.send).
		{path: "/events/send", opaque: "Resend's automation event"},
	}},
	{Name: "ses", sigV4: true, errors: sesErrors, endpoints: []endpoint{
		{path: "/v2/email/outbound-emails", shape: sesMessage},
		// Not in the brief, but it sends mail too: leaving it uninspected
		// would let a restricted key around its sender domains.
		{path: "/v2/email/outbound-bulk-emails", shape: sesBulk},
		// A verification email from a stored template's sender: opaque.
		{path: "/v2/email/outbound-custom-verification-emails", shape: sesVerification},
		// A predictive inbox placement test: the body's message, sent from
		// its FromEmailAddress to SES's seed addresses.
		{path: "/v2/email/deliverability-dashboard/test", opaque: "SES's predictive inbox placement test"},
		// An identity created: for an email address, SES mails it a
		// verification link (v1's VerifyEmailIdentity).
		{path: "/v2/email/identities", opaque: "SES's identity creation (which mails an email address a verification link)"},
		// The Amazon Pinpoint Email API, which SES's v2 API succeeded:
		// same host, same signing name, its send the v2 one's shape.
		{path: "/v1/email/outbound-emails", shape: sesMessage},
		{path: "/v1/email/deliverability-dashboard/test", opaque: "Pinpoint Email's predictive inbox placement test"},
		{path: "/v1/email/identities", opaque: "Pinpoint Email's identity creation (which mails an email address a verification link)"},
		// SES's v1 API: every action is a form POSTed to "/" (query.go).
		{path: "/", form: true, shape: sesV1Send, query: true, actions: sesV1Sends},
	}},
	{Name: "mailjet", basic: true, errors: mailjetErrors, endpoints: []endpoint{
		{path: "/v3.1/send", shape: mailjetSend, partial: true},
		// Mailjet's older v3 Send API, also at its first path, which
		// mailjet-apiv3-go's SendMail posts to.
		{path: "/v3/send", shape: mailjetV3},
		{path: "/v3/send/message", shape: mailjetV3},
		{path: "/v3/REST/campaigndraft/*/send", opaque: "Mailjet's campaign send"},
		{path: "/v3/REST/campaigndraft/*/test", opaque: "Mailjet's campaign test send"},
		{path: "/v3/REST/campaigndraft/*/schedule", opaque: "Mailjet's campaign schedule"},
		// The same in Mailjet's legacy Newsletter API, still in its Ruby
		// SDK (Mailjet::Newsletter_send, _test, _schedule).
		{path: "/v3/REST/newsletter/*/send", opaque: "Mailjet's newsletter send"},
		{path: "/v3/REST/newsletter/*/test", opaque: "Mailjet's newsletter test send"},
		{path: "/v3/REST/newsletter/*/schedule", opaque: "Mailjet's newsletter schedule"},
		// A sender created: Mailjet mails the address a confirmation link.
		{path: "/v3/REST/sender", opaque: "Mailjet's sender confirmation"},
	}},
	{Name: "brevo", keyHeaders: []string{"Api-Key"}, errors: brevoErrors, endpoints: []endpoint{
		{path: "/v3/smtp/email", shape: brevoMessage},
		{path: "/v3/smtp/templates/*/sendTest", opaque: "Brevo's template test send"},
		{path: "/v3/emailCampaigns/*/sendNow", opaque: "Brevo's campaign send"},
		{path: "/v3/emailCampaigns/*/sendTest", opaque: "Brevo's campaign test send"},
		// A campaign's report, mailed with a text of the client's own to
		// the addresses its body lists.
		{path: "/v3/emailCampaigns/*/sendReport", opaque: "Brevo's campaign report send"},
		// The same report of an SMS campaign: mail too, to the addresses
		// its body lists (@getbrevo/brevo's smsCampaigns.sendSmsReport).
		{path: "/v3/smsCampaigns/*/sendReport", opaque: "Brevo's SMS campaign report send"},
		// A campaign created or updated with a scheduledAt is sent then.
		{path: "/v3/emailCampaigns", opaque: "Brevo's campaign created with scheduledAt", sendFlag: "scheduledAt"},
		{path: "/v3/emailCampaigns/*", method: "PUT", opaque: "Brevo's campaign updated with scheduledAt", sendFlag: "scheduledAt"},
		// A contact created through a double opt-in flow: a stored DOI
		// template's mail, with the client's redirectionUrl and attributes,
		// sent to the body's email (the SDKs' contacts.createDoiContact).
		{path: "/v3/contacts/doubleOptinConfirmation", opaque: "Brevo's double opt-in confirmation send"},
		// A sender created: Brevo mails its address a verification code
		// (senders.createSender).
		{path: "/v3/senders", opaque: "Brevo's sender verification"},
	}},
	{Name: "mailpit", endpoints: []endpoint{
		{path: "/api/v1/send", shape: mailpitMessage},
	}},
}

// Lookup returns the dialect with the given name ("sendgrid", "postmark",
// "mailgun", "resend", "ses", "mailjet", "brevo" or "mailpit").
func Lookup(name string) (*Dialect, bool) {
	for _, d := range dialects {
		if d.Name == name {
			return d, true
		}
	}
	return nil, false
}

// Names returns the names of every dialect, for configuration errors and help.
func Names() []string {
	names := make([]string, len(dialects))
	for i, d := range dialects {
		names[i] = d.Name
	}
	return names
}

// IsSend reports whether a request with this method and path (as the client
// sent it, e.g. "/v3/mail/send") is one of the dialect's send endpoints.
//
// Only POST sends, but for the few endpoints that send with another method
// (SendGrid's Single Send schedule, a PUT). The path is compared as
// path.Clean would leave it and case-insensitively, like Caddy's path
// matcher and many upstreams: a client must not dodge inspection by writing
// "/V3//mail/send/". It does not allocate.
func (d *Dialect) IsSend(method, path string) bool {
	if len(method) < 3 || method[0]|0x20 != 'p' {
		return false // neither POST nor PUT: most requests stop here
	}
	e, _ := d.endpoint(path)
	if e == nil {
		return false
	}
	want := e.method
	if want == "" {
		want = "POST"
	}
	return strings.EqualFold(method, want)
}

// FormSend reports whether the send endpoint at path takes its body as an
// HTML form (Mailgun's, SES's v1 API), rather than as JSON; false for a
// path that is no send endpoint.
func (d *Dialect) FormSend(path string) bool {
	e, _ := d.endpoint(path)
	return e != nil && e.form
}

// QueryRequest reports whether a request with this method, path, query
// string and Content-Type is one of SES's v1 Query API: to "/" on an SES
// route, POSTed or, with any other method, with its parameters in the
// query string (the Query API accepts GET). Its clients read an error only
// as XML (see AppendQueryError), and its requests are read with
// InspectQuery.
//
// At another path that is none of the dialect's send endpoints, so is a
// request POSTed as a form, or with an Action parameter in its query
// string: the API's clients send to "/", but a server that reads the
// action from the parameters whatever the path would send "POST /x" with
// Action=SendEmail, which must not pass uninspected. No request of SES's
// v2 API (JSON, its parameters in its path) is one.
func (d *Dialect) QueryRequest(method, path, rawQuery, contentType string) bool {
	// Only AWS's APIs (signed with SigV4) have a Query protocol: every
	// other dialect answers at once, since a gateway asks on every denial.
	if !d.sigV4 {
		return false
	}
	posted := strings.EqualFold(method, "POST")
	if e, _ := d.endpoint(path); e != nil && e.query {
		return posted || rawQuery != ""
	} else if e != nil && d.IsSend(method, path) {
		return false // a v2 send, inspected as one
	}
	return posted && FormContentType(contentType) || hasAction(rawQuery)
}

// QueryEndpoint reports whether path is where SES's v1 API is sent ("/"),
// as its clients send every action. A request of the API there is scoped
// as its action; one at another path (see QueryRequest) is also the
// request it is at that path, which the provider may do whatever its
// parameters say (a v2 DELETE with ?Action=SendEmail deletes).
func (d *Dialect) QueryEndpoint(path string) bool {
	if !d.sigV4 {
		return false
	}
	e, _ := d.endpoint(path)
	return e != nil && e.query
}

// hasAction reports whether a query string has a parameter named Action,
// in any case and however escaped ("%41ction"), and between '&' or ';'
// (which some servers also split at), as the Query API's parameters may be
// read.
func hasAction(rawQuery string) bool {
	for rawQuery != "" {
		param := rawQuery
		if i := strings.IndexAny(rawQuery, "&;"); i >= 0 {
			param, rawQuery = rawQuery[:i], rawQuery[i+1:]
		} else {
			rawQuery = ""
		}
		name, _, _ := strings.Cut(param, "=")
		if strings.ContainsAny(name, "%+") {
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
		}
		if strings.EqualFold(strings.TrimSpace(name), "Action") {
			return true
		}
	}
	return false
}

// endpoint returns the send endpoint path is, and the segment its pattern's
// "*" matched ("" for a pattern without one).
//
// A path that is none, with a format extension on its last segment
// ("/emails.json", "/v3/mail/send.xml"), is the endpoint without it:
// frameworks that route by extension (Rails' optional format, Spring's
// suffix pattern match) serve "/emails.json" as "/emails". An endpoint
// whose own name has a dot ("messages.mime") is matched whole first.
//
// A path that starts with two slashes (or backslashes) is also read as
// the path after its first segment when it is none as it is: to a URL
// parser (Python's urlsplit, Java's URI, WHATWG URL resolved against the
// server's base) "//h/v3/mail/send" is the path /v3/mail/send at host h,
// so such a server sends it.
func (d *Dialect) endpoint(path string) (*endpoint, string) {
	var p splitPath
	e, wild, _ := d.lookup(path, &p)
	return e, wild
}

// lookup splits path into p, as the reading that is an endpoint (see
// endpoint), and returns find's answer for it.
func (d *Dialect) lookup(path string, p *splitPath) (*endpoint, string, bool) {
	p.split(path)
	e, wild, ext := d.find(p)
	if e == nil {
		if rest, ok := afterAuthority(path); ok {
			*p = splitPath{}
			p.split(rest)
			p.same = false
			e, wild, ext = d.find(p)
		}
	}
	return e, wild, ext
}

// afterAuthority returns what follows the first segment of a path that
// starts with two separators (a network-path reference, "//host/path"),
// and whether it does.
func afterAuthority(path string) (string, bool) {
	if len(path) < 2 || !isSeparator(path[0]) || !isSeparator(path[1]) {
		return "", false
	}
	i := 2
	for i < len(path) && isSeparator(path[i]) {
		i++ // WHATWG URL skips any number of them before the host
	}
	for i < len(path) && !isSeparator(path[i]) {
		i++
	}
	return path[i:], true
}

func isSeparator(c byte) bool { return c == '/' || c == '\\' }

// find returns the endpoint the split path is, the segment its pattern's
// "*" matched, and whether the path's last segment was read without its
// format extension to match it.
func (d *Dialect) find(p *splitPath) (*endpoint, string, bool) {
	for _, ext := range [2]bool{false, true} {
		if ext && (p.n == 0 || p.last == p.segs[0]) {
			break // no format extension: the same segments again
		}
		for i := range d.endpoints {
			if wild, ok := p.match(d.endpoints[i].segs, ext); ok {
				return &d.endpoints[i], wild, ext
			}
		}
	}
	return nil, "", false
}

// EndpointPath returns path as IsSend reads it when it is one of the
// dialect's send endpoints (with any method), so that a gateway can match
// its routes against the endpoint the request is inspected as: each
// segment without its ";parameters" and trailing spaces and dots, a
// backslash as a slash, the last without a format extension where that
// made it the endpoint, no trailing slash, and a segment that is the
// endpoint's only as Unicode folds case ("ſend", a long s) spelled as the
// endpoint spells it. "/v3/mail/send;x" and
// "/v3/mail/send/" are "/v3/mail/send": a server that drops the parameters
// or the slash sends them, so a route must not take them for other paths.
// Empty and dot segments and ASCII case are left as they are, for a path matcher
// to clean. It returns path itself when it is no endpoint or needs none of
// this; then it does not allocate.
func (d *Dialect) EndpointPath(path string) string {
	var p splitPath
	e, _, ext := d.lookup(path, &p)
	if e == nil {
		return path
	}
	folded := p.folded(e.segs, ext)
	if p.same && !ext && !folded && (p.n == 0 || !strings.HasSuffix(path, "/")) {
		return path
	}
	if p.n == 0 {
		return "/"
	}
	var b strings.Builder
	for i := p.n - 1; i >= 0; i-- {
		b.WriteByte('/')
		seg := p.segs[i]
		if i == 0 && ext {
			seg = p.last
		}
		if w := e.segs[i]; folded && w != "*" && !asciiEqualFold(w, seg) {
			seg = w
		}
		b.WriteString(seg)
	}
	return b.String()
}

// folded reports whether a segment of the split path matched a segment of
// want (see match) only as Unicode folds case: "ſend" (a long s) is
// "send" to strings.EqualFold and to Java's equalsIgnoreCase, but not to
// a path matcher, which lower-cases it and finds no "send" line. Such a
// path is read as the endpoint with the endpoint's own spelling of those
// segments, so that it is scoped as the send it is inspected as.
func (p *splitPath) folded(want []string, ext bool) bool {
	for i, w := range want {
		g := p.segs[i]
		if i == 0 && ext {
			g = p.last
		}
		if w != "*" && !asciiEqualFold(w, g) {
			return true
		}
	}
	return false
}

// asciiEqualFold reports whether a and b are the same but for the case of
// ASCII letters.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// ReadPaths returns what a server that reads paths leniently may read path
// as, where that differs from path as a path matcher cleans it: read is
// the path up to where pathEnd ends it, each segment as plainSegment
// leaves it, a backslash as a slash, and without a trailing slash
// ("/v3/templates;x", "/v3/templates/", "/v3/templates%3Fx" are
// "/v3/templates"); afterHost is that of what follows the first segment of
// a path that starts with two slashes ("//h/v3/templates"), which a URL
// parser reads as a host and a path. Each is "" when there is none, and
// both are for the usual path, which ReadPaths reads without allocating.
// A path that is one of a dialect's send endpoints has none but the
// endpoint (Dialect.ReadPaths).
func ReadPaths(path string) (read, afterHost string) {
	if plainlyRead(path) {
		return "", ""
	}
	read = readPath(path)
	if rest, ok := afterAuthority(path); ok {
		afterHost = readPath(rest)
	}
	return read, afterHost
}

// ReadPaths is ReadPaths for a path that is none of d's send endpoints;
// one that is has none (it is read as EndpointPath says).
func (d *Dialect) ReadPaths(path string) (read, afterHost string) {
	if plainlyRead(path) {
		return "", ""
	}
	if e, _ := d.endpoint(path); e != nil {
		return "", ""
	}
	return ReadPaths(path)
}

// plainlyRead reports whether readPath would leave path as it is but for
// what a path matcher cleans anyway (repeated slashes inside it, "." and
// ".." segments): nothing pathEnd cuts, no ';' or backslash, no segment
// ending in a space, tab or dot, no trailing slash, no leading "//".
func plainlyRead(path string) bool {
	if len(path) >= 2 && isSeparator(path[0]) && isSeparator(path[1]) {
		return false
	}
	for i := 0; i < len(path); i++ {
		switch path[i] {
		case '?', '#', 0, ';', '\\':
			return false
		case '/':
			if i == len(path)-1 && i > 0 {
				return false
			}
		case '.', ' ', '\t':
			if i == len(path)-1 || path[i+1] == '/' {
				// "/x." and "/x /", but not a "." or ".." segment
				if path[i] != '.' || !(i >= 1 && path[i-1] == '/' || i >= 2 && path[i-1] == '.' && path[i-2] == '/') {
					return false
				}
			}
		case '\n':
			if i == len(path)-1 {
				return false
			}
		}
	}
	return true
}

// readPath is path as ReadPaths reads it, cleaned. Its segments come last
// first, so they are measured, then written from the end of one buffer:
// two allocations however many segments the path has.
func readPath(path string) string {
	path = pathEnd(path)
	n := 0
	it := segments{s: path, end: len(path)}
	for seg, ok := it.next(); ok; seg, ok = it.next() {
		n += 1 + len(seg)
	}
	if n == 0 {
		return "/"
	}
	b := make([]byte, n)
	it = segments{s: path, end: len(path)}
	for seg, ok := it.next(); ok; seg, ok = it.next() {
		n -= 1 + len(seg)
		b[n] = '/'
		copy(b[n+1:], seg)
	}
	return string(b)
}

// Inspect reads a send request's body. path selects the endpoint (a Postmark
// batch is read differently from a single message) and may name a sending
// domain (Mailgun's); contentType is the request's Content-Type header,
// which matters only for Mailgun's forms.
//
// An error means the body is not a valid send request in this dialect; its
// message names the field and the problem and never quotes the body.
func (d *Dialect) Inspect(path, contentType string, body []byte) (Message, error) {
	e, domain := d.endpoint(path)
	if e == nil {
		return Message{}, errors.New("the path is not a send endpoint")
	}
	if e.opaque != "" {
		if e.sendFlag != "" {
			if err := jsonCharset(contentType); err != nil {
				return Message{}, err // "+AHM-end" is "send" in UTF-7
			}
			sends, err := flagSet(body, e.sendFlag)
			if err != nil {
				return Message{}, err
			}
			// Said to be a form, the body may be one to a provider that
			// binds it by its Content-Type: {"x":"&send=true&y="} sends.
			if !sends && !FormContentType(contentType) {
				return Message{NotSend: true}, nil
			}
		}
		return Message{Opaque: true, Unread: e.opaque + ", which keygate does not read"}, nil
	}
	if e.query {
		return d.InspectQuery("", true, contentType, body)
	}
	var in inspection
	var err error
	if e.form {
		err = in.form(e.shape, contentType, body)
	} else if err = jsonCharset(contentType); err == nil {
		err = in.json(e.shape, body)
	}
	if err == nil {
		err = in.finish()
	}
	if err != nil {
		return Message{}, err
	}
	if domain != "" {
		in.m.SendingDomains = in.sendingDomain(strings.ToLower(domain))
	}
	in.m.Unrated = e.unrated
	in.m.PartlySent = e.partial && in.messages > 1
	return in.m, nil
}

// InspectQuery reads a request of SES's v1 Query API (see QueryRequest):
// its parameters are those of the query string and, when posted, those of
// the form body, read as one form. A request whose action sends no mail is
// NotSend; the sends keygate reads report their senders and recipients, and
// the others are Opaque and name themselves in Unread. Every request
// reports the ScopePath it is scoped as (ActionScopePath).
func (d *Dialect) InspectQuery(rawQuery string, posted bool, contentType string, body []byte) (Message, error) {
	e, _ := d.endpoint("/")
	if e == nil || !e.query {
		return Message{}, errors.New("the dialect has no Query API")
	}
	var in inspection
	err := in.query(e, rawQuery, posted, contentType, body)
	if err == nil {
		err = in.finish()
	}
	if err != nil {
		return Message{}, err
	}
	return in.m, nil
}

// form reads a Mailgun-style HTML form, url-encoded or multipart.
func (in *inspection) form(s *shape, contentType string, body []byte) error {
	mt, boundary, err := formMediaType(contentType)
	if err != nil {
		return err
	}
	in.begin()
	switch mt {
	case "application/x-www-form-urlencoded":
		err = in.urlencoded(s, body)
	case "multipart/form-data":
		err = in.multipart(s, boundary, body)
	}
	if err != nil {
		return err
	}
	in.end(s)
	return nil
}

// formMediaType returns a form body's media type, url-encoded or multipart,
// and its boundary, or an error saying why the Content-Type is refused.
func formMediaType(contentType string) (mt, boundary string, err error) {
	if mt, boundary, ok := plainFormMediaType(contentType); ok {
		return mt, boundary, nil
	}
	return parsedFormMediaType(contentType)
}

// plainFormMediaType reads the Content-Types the SDKs send,
// "application/x-www-form-urlencoded" and "multipart/form-data; boundary=B"
// (or ";boundary=B") with B a token, without mime.ParseMediaType's map of
// parameters (two allocations a send). Anything else (capitals, other
// spaces, a quoted boundary, other parameters) goes to parsedFormMediaType,
// so what is accepted stays mime.ParseMediaType's answer
// (FuzzPlainFormMediaTypeAgrees holds the two together).
func plainFormMediaType(ct string) (mt, boundary string, ok bool) {
	const urlencoded, multipart = "application/x-www-form-urlencoded", "multipart/form-data"
	if ct == urlencoded {
		return urlencoded, "", true
	}
	rest, ok := strings.CutPrefix(ct, multipart+";")
	if !ok {
		return "", "", false
	}
	rest = strings.TrimPrefix(rest, " ")
	b, ok := strings.CutPrefix(rest, "boundary=")
	if !ok || b == "" {
		return "", "", false
	}
	for i := 0; i < len(b); i++ {
		if !mimeToken[b[i]] {
			return "", "", false
		}
	}
	return multipart, b, true
}

// mimeToken is RFC 2045's token: printable ASCII other than space and
// tspecials, as mime.ParseMediaType reads a parameter's value unquoted.
var mimeToken = func() (t [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
	}
	return t
}()

// parsedFormMediaType is formMediaType through mime.ParseMediaType.
func parsedFormMediaType(contentType string) (mt, boundary string, err error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = ""
	}
	// A parser honouring another charset (UTF-16) would read other field
	// names than keygate does.
	switch cs := strings.ToLower(params["charset"]); cs {
	case "", "utf-8", "us-ascii":
	default:
		return "", "", errors.New("form charset " + strconv.Quote(cs) + " is refused; send UTF-8")
	}
	if mt != "application/x-www-form-urlencoded" && mt != "multipart/form-data" {
		return "", "", errors.New("Content-Type: want multipart/form-data or application/x-www-form-urlencoded")
	}
	return mt, params["boundary"], nil
}

// FormContentType reports whether a Content-Type is one of the HTML form
// encodings, in any case and with any parameters.
func FormContentType(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(mt)
	return strings.EqualFold(mt, "application/x-www-form-urlencoded") || strings.EqualFold(mt, "multipart/form-data")
}

// jsonCharset refuses a JSON send whose Content-Type names a charset other
// than UTF-8 (or its ASCII subset). keygate reads the body as UTF-8, but
// Express's body-parser decodes it in any "utf-*" charset the header names,
// UTF-7 among them: there "+AGY-rom" is "from", another From keygate did
// not see. A charset keygate cannot make out (a parameter mime cannot
// parse, a repeated one) is refused too.
func jsonCharset(contentType string) error {
	if strings.IndexByte(contentType, ';') < 0 || strings.EqualFold(contentType, "application/json; charset=utf-8") ||
		strings.EqualFold(contentType, "application/json;charset=utf-8") {
		return nil // what the SDKs send: no parameters, or UTF-8
	}
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		if strings.Contains(strings.ToLower(contentType), "charset") {
			return errors.New("Content-Type: a charset keygate cannot read; send application/json (UTF-8)")
		}
		return nil
	}
	switch cs := strings.ToLower(params["charset"]); cs {
	case "", "utf-8", "utf8", "us-ascii":
		return nil
	default:
		return errors.New("Content-Type charset " + strconv.Quote(cs) + " is refused; send UTF-8")
	}
}

// flagSet reports whether body, a JSON object, has a member named name (in
// any case, as decoders that fold names would take it) whose value is
// neither false nor null.
func flagSet(body []byte, name string) (bool, error) {
	r := reader{data: body}
	if r.peek() != '{' {
		return false, errors.New("the body: want a JSON object")
	}
	set := false
	err := r.object(func(key []byte) error {
		if !strings.EqualFold(string(key), name) {
			return r.skip()
		}
		switch r.peek() {
		case 'f':
			return r.literal("false")
		case 'n':
			return r.literal("null")
		}
		set = true
		return r.skip()
	})
	if err == nil {
		if r.ws(); r.pos < len(r.data) {
			err = r.syntaxError("data after the top-level value")
		}
	}
	return set, err
}

// json reads a JSON body, which must hold exactly one value.
func (in *inspection) json(s *shape, body []byte) error {
	r := reader{data: body}
	if err := in.walk(&r, s); err != nil {
		return err
	}
	if r.ws(); r.pos < len(r.data) {
		return r.syntaxError("data after the top-level value")
	}
	return nil
}

// matchPath reports whether path, cleaned, is the pattern whose segments
// (from the last to the first) are want, and returns the segment of the
// cleaned path that the pattern's "*" matched (see splitPath). With ext,
// the path's last segment is read without a format extension
// (formatExtension).
func matchPath(want []string, path string, ext bool) (wild string, ok bool) {
	var p splitPath
	p.split(path)
	return p.match(want, ext)
}

// splitPath is a request path's segments, read once for matching against
// every endpoint of a dialect (a send's path is looked up two or three
// times, against a dozen patterns each). The path is walked segment by
// segment from the end (segments), which resolves "..", "." and repeated
// slashes without building the cleaned path, so the wildcard segment is
// the one the cleaned path holds: "/v3/a.example/../b.example/messages"
// names b.example. The patterns' segments are read once, at init.
type splitPath struct {
	segs [maxSegments]string // from the last to the first
	n    int                 // how many segs holds
	more bool                // the path has more segments than any pattern
	last string              // segs[0] without its format extension
	// same reports that each segment is read as it is written, between
	// slashes: none lost ";parameters" or trailing spaces or dots, and no
	// backslash separated two (EndpointPath).
	same bool
}

// maxSegments bounds the segments of an endpoint's pattern (checked at
// init): a path with more matches none, and is not read further.
const maxSegments = 8

func (p *splitPath) split(path string) {
	whole := len(path)
	path = pathEnd(path)
	it := segments{s: path, end: len(path)}
	p.same = len(path) == whole && strings.IndexByte(path, '\\') < 0
	for seg, ok := it.next(); ok; seg, ok = it.next() {
		if p.n == maxSegments {
			p.more = true
			return
		}
		p.segs[p.n] = seg
		p.n++
	}
	p.same = p.same && !it.trimmed
	if p.n > 0 {
		p.last = formatExtension(p.segs[0])
	}
}

// match reports whether the path is the pattern whose segments are want
// (see matchPath).
func (p *splitPath) match(want []string, ext bool) (wild string, ok bool) {
	if p.more || len(want) != p.n {
		return "", false
	}
	for i, w := range want {
		g := p.segs[i]
		if i == 0 && ext {
			g = p.last
		}
		switch {
		case w == "*":
			wild = g
		case w != g && !strings.EqualFold(w, g):
			return "", false
		}
	}
	return wild, true
}

// pathSegments returns a path's segments from the last to the first, as
// segments yields them.
func pathSegments(p string) []string {
	var segs []string
	it := segments{s: p, end: len(p)}
	for seg, ok := it.next(); ok; seg, ok = it.next() {
		segs = append(segs, seg)
	}
	return segs
}

func init() {
	for _, d := range dialects {
		for i := range d.endpoints {
			d.endpoints[i].segs = pathSegments(d.endpoints[i].path)
			if len(d.endpoints[i].segs) > maxSegments {
				panic("mailapi: endpoint " + d.endpoints[i].path + " has more than maxSegments segments")
			}
		}
	}
}

// segments yields a path's segments from the last to the first as
// path.Clean would leave them: empty and "." segments vanish and ".."
// removes the segment before it. Each is read as plainSegment leaves it.
// A backslash separates segments as a slash does (lastSeparator).
type segments struct {
	s    string
	end  int // the unread path is s[:end]; -1 when done
	skip int // segments still to be removed by ".."
	// trimmed is set once plainSegment has changed a segment.
	trimmed bool
}

// plainSegment is a path segment without what some servers ignore in one:
// matrix parameters (";x": Java servlet containers drop them, and read
// "..;x" as "..") and trailing spaces, tabs and dots (Windows drops a
// name's trailing dots and spaces, so IIS may serve "/email." as "/email";
// "." and ".." keep theirs). "/email;x" is Postmark's send endpoint to such
// a server, and must not dodge inspection.
func plainSegment(seg string) string {
	if i := strings.IndexByte(seg, ';'); i >= 0 {
		seg = seg[:i]
	} else if n := len(seg); n == 0 || seg[n-1] != ' ' && seg[n-1] != '\t' && seg[n-1] != '.' {
		return seg // the usual segment: nothing to trim
	}
	if t := strings.TrimRight(seg, " \t."); t != "" {
		return t
	}
	return strings.TrimRight(seg, " \t")
}

// pathEnd returns path up to where some servers end it: at a '?' or '#'
// (one sent escaped, "%3F", that a server or a proxy before it decodes
// before it splits off the query), at a NUL (C strings), and before a
// final line feed (a route's regular expression anchored with '$', which
// PCRE, Python and Ruby let match before one). "/email%3Fx" and
// "/email%0A" are Postmark's send endpoint to such a server, and must not
// dodge inspection. It does not allocate.
func pathEnd(path string) string {
	if i := strings.IndexAny(path, "?#\x00"); i >= 0 {
		path = path[:i]
	}
	return strings.TrimSuffix(path, "\n")
}

// formatExtension returns seg without a format extension: a dot and
// letters and digits after a name ("send.json" is "send"). Other segments
// are returned as they are.
func formatExtension(seg string) string {
	dot := strings.LastIndexByte(seg, '.')
	if dot <= 0 || dot == len(seg)-1 {
		return seg
	}
	for i := dot + 1; i < len(seg); i++ {
		if c := seg[i] | 0x20; !(c >= 'a' && c <= 'z' || seg[i] >= '0' && seg[i] <= '9') {
			return seg
		}
	}
	return seg[:dot]
}

func (it *segments) next() (string, bool) {
	for it.end >= 0 {
		i := lastSeparator(it.s[:it.end])
		raw := it.s[i+1 : it.end]
		seg := plainSegment(raw)
		it.trimmed = it.trimmed || len(seg) != len(raw)
		it.end = i
		switch {
		case seg == "" || seg == ".":
		case seg == "..":
			it.skip++
		case it.skip > 0:
			it.skip--
		default:
			return seg, true
		}
	}
	return "", false
}

// lastSeparator returns the index of the last '/' or '\' in s, or -1.
// Windows servers (IIS) may read a backslash in a path as a slash, also
// sent as %5C (as Caddy passes a backslash on): "/email\batch" is
// Postmark's batch send to such a server, and must not dodge inspection.
func lastSeparator(s string) int {
	i := strings.LastIndexByte(s, '/')
	if j := strings.LastIndexByte(s[i+1:], '\\'); j >= 0 {
		return i + 1 + j
	}
	return i
}
