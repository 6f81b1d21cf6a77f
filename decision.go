package keygate

import (
	"net/http"
	"strconv"
	"time"

	"github.com/keygate/caddy-keygate/mailapi"
)

// Code is the outcome of keygate's checks for one request: "allowed" or one
// of the denial codes of the contract. Every denial goes through one table
// so the status, message and headers of a code are defined once.
type Code uint8

// Decision codes, in the order of CONTRACT.md §4.
const (
	Allowed Code = iota
	MissingKey
	InvalidKey
	RevokedKey
	ExpiredKey
	DisabledKey
	IPNotAllowed
	EnvNotAllowed
	InsufficientScope
	SenderNotAllowed
	TooManyRecipients
	InvalidPayload
	PayloadTooLarge
	RateLimited
	QuotaExceeded
	AuthRateLimited
	StoreUnavailable
	GatewayBusy
	// ClientClosed is not in the contract's table: a send whose client went
	// away (its request's context ended) before keygate had read its body.
	// No one reads the answer; the code keeps such requests out of
	// gateway_busy and invalid_payload, which an operator acts on. 499 is
	// what Caddy's reverse_proxy records for a client gone mid-request.
	ClientClosed
	numCodes
)

type codeInfo struct {
	name    string
	status  int
	message string
	// refusal is the kind of refusal the code is, so a mail_api route can
	// answer it in its provider's own error shape.
	refusal mailapi.Refusal
}

var codes = [numCodes]codeInfo{
	Allowed:           {"allowed", http.StatusOK, "", 0},
	MissingKey:        {"missing_key", 401, "no API key was presented; send Authorization: Bearer <key>", mailapi.RefusedNoKey},
	InvalidKey:        {"invalid_key", 401, "the API key is not valid", mailapi.RefusedKey},
	RevokedKey:        {"revoked_key", 401, "the API key has been revoked", mailapi.RefusedKey},
	ExpiredKey:        {"expired_key", 401, "the API key has expired", mailapi.RefusedKey},
	DisabledKey:       {"disabled_key", 401, "the API key is disabled", mailapi.RefusedKey},
	IPNotAllowed:      {"ip_not_allowed", 403, "the API key may not be used from this client address", mailapi.RefusedAccess},
	EnvNotAllowed:     {"env_not_allowed", 403, "the API key's environment is not accepted on this route", mailapi.RefusedAccess},
	InsufficientScope: {"insufficient_scope", 403, "the API key lacks the scope this route requires", mailapi.RefusedAccess},
	SenderNotAllowed:  {"sender_not_allowed", 403, "the sender address is outside the API key's sender domains", mailapi.RefusedSender},
	TooManyRecipients: {"too_many_recipients", 403, "the message has more recipients than the API key allows per request", mailapi.RefusedRecipients},
	InvalidPayload:    {"invalid_payload", 400, "the request body cannot be parsed", mailapi.RefusedPayload},
	PayloadTooLarge:   {"payload_too_large", 413, "the request body is larger than this route inspects", mailapi.RefusedSize},
	RateLimited:       {"rate_limited", 429, "the API key's request rate is exceeded", mailapi.RefusedRate},
	// On a mail_api route the status is what the provider answers for a
	// used-up sending limit (mailapi.Dialect.Status).
	QuotaExceeded:    {"quota_exceeded", 429, "the API key's recipient quota for this period is used up", mailapi.RefusedQuota},
	AuthRateLimited:  {"auth_rate_limited", 429, "too many failed key attempts from this client address", mailapi.RefusedRate},
	StoreUnavailable: {"store_unavailable", 503, "the key store is unavailable; try again shortly", mailapi.RefusedUnavailable},
	GatewayBusy:      {"gateway_busy", 503, "the gateway holds as many send bodies as it may at once; try again shortly", mailapi.RefusedUnavailable},
	ClientClosed:     {"client_closed", 499, "the client closed the request before its body was read", mailapi.RefusedPayload},
}

// String returns the contract's name for the code, e.g. "rate_limited".
func (c Code) String() string {
	if c >= numCodes {
		return "unknown"
	}
	return codes[c].name
}

// Status returns the HTTP status of the code.
func (c Code) Status() int { return codes[c].status }

// parseCode maps a contract name back to its code.
func parseCode(name string) (Code, bool) {
	for i := range codes {
		if codes[i].name == name {
			return Code(i), true
		}
	}
	return 0, false
}

// denial carries what a denial response needs beyond its code.
type denial struct {
	code Code
	// message overrides the code's default message (e.g. which field of a
	// payload is wrong). It never contains a key.
	message string
	// fault refines missing_key and invalid_key: how the request presented
	// (or failed to present) its key.
	fault fault
	// monthly marks a quota_exceeded for a monthly quota, which some
	// providers name differently from a daily one.
	monthly bool
	// retryAfter is sent as Retry-After on 429 and 503.
	retryAfter time.Duration
	// scope is the scope that was required (insufficient_scope).
	scope string
	// keyPresented adds error="invalid_token" to a 401's challenge.
	keyPresented bool
	// query marks a request of SES's v1 Query API, whose clients read an
	// error only as that API's XML.
	query bool
	// bodyAsked marks a refusal of a body keygate began to read: a client
	// that waited for 100 Continue got it, and is sending the body.
	bodyAsked bool
}

// denialForms are one route's denial responses, built when the route is
// provisioned: each code's status and body, and each credential fault's
// body, in the contract's shape plus, on a mail_api route, the shape of
// the provider's own errors. A denial with a default message allocates
// nothing for its body.
type denialForms struct {
	dialect *mailapi.Dialect // nil: the contract's shape only
	codes   [numCodes]form
	faults  [numFaults]form
	monthly form // quota_exceeded for a monthly quota
}

type form struct {
	status int
	body   []byte
	text   string // the message body holds, for the XML of SES's v1 API
	// errorType is the value of the dialect's error-type header, if any
	// (SES's x-amzn-ErrorType).
	errorType string
}

// newDenialForms builds a route's denial responses. how names the ways the
// route accepts a key, for the messages that tell a client how to send it.
func newDenialForms(d *mailapi.Dialect, how string) *denialForms {
	f := &denialForms{dialect: d}
	for c := range f.codes {
		info := codes[c]
		f.codes[c] = f.form(Code(c), info.refusal, info.message)
	}
	f.codes[MissingKey] = f.form(MissingKey, mailapi.RefusedNoKey, "no API key was presented; send "+how)
	for i := range f.faults {
		if i == int(noFault) {
			continue
		}
		c := faults[i].code
		f.faults[i] = f.form(c, codes[c].refusal, fault(i).message(how))
	}
	f.monthly = f.form(QuotaExceeded, mailapi.RefusedMonthlyQuota, codes[QuotaExceeded].message)
	return f
}

func (f *denialForms) form(c Code, r mailapi.Refusal, message string) form {
	status := codes[c].status
	if f.dialect == nil {
		return form{status: status, body: errorBody(codes[c].name, message), text: message}
	}
	status = f.dialect.Status(r, status)
	out := form{status: status, body: f.body(c, r, status, message), text: message}
	_, out.errorType = f.dialect.ErrorHeader(r)
	return out
}

// body is the JSON error body: {"error":{"code","message"}} and, on a
// mail_api route, the members the provider's SDKs read, whose message
// names keygate and the code ("keygate quota_exceeded: …") so a
// developer reading the SDK's error knows who refused and why.
func (f *denialForms) body(c Code, r mailapi.Refusal, status int, message string) []byte {
	name := codes[c].name
	n := 40 + len(name) + len(message)
	if f.dialect != nil {
		n = 2*n + 120
	}
	b := make([]byte, 0, n)
	b = append(b, `{"error":{"code":`...)
	b = mailapi.AppendJSONString(b, name)
	b = append(b, `,"message":`...)
	b = mailapi.AppendJSONString(b, message)
	b = append(b, '}')
	if f.dialect != nil {
		b = f.dialect.AppendError(b, r, status, "keygate "+name+": "+message)
	}
	return append(b, "}\n"...)
}

// errorBody is the contract's JSON error body alone.
func errorBody(code, message string) []byte {
	b := []byte(`{"error":{"code":`)
	b = mailapi.AppendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = mailapi.AppendJSONString(b, message)
	return append(b, "}}\n"...)
}

// plainForms are the contract's denial responses for handlers without a
// dialect or not provisioned (tests).
var plainForms = newDenialForms(nil, "Authorization: Bearer <key>")

// write sends the denial's status, headers and JSON body and returns the
// status. For a request of SES's v1 Query API (d.query) the body is that
// API's XML error instead, which is all its clients read.
func (d denial) write(w http.ResponseWriter, forms *denialForms) int {
	if forms == nil {
		forms = plainForms
	}
	fm := &forms.codes[d.code]
	switch {
	case d.fault != noFault && faults[d.fault].code == d.code:
		fm = &forms.faults[d.fault]
	case d.code == QuotaExceeded && d.monthly:
		fm = &forms.monthly
	}
	h := w.Header()
	switch {
	case fm.status == http.StatusUnauthorized && d.keyPresented:
		h.Set("WWW-Authenticate", `Bearer realm="keygate", error="invalid_token"`)
	case fm.status == http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="keygate"`)
	case d.code == InsufficientScope && d.scope != "":
		h.Set("WWW-Authenticate", `Bearer realm="keygate", error="insufficient_scope", scope=`+strconv.Quote(d.scope))
	case d.code == InsufficientScope:
		// No scope line matches the route: no scope would do (RFC 6750
		// §3: scope names the scopes that would).
		h.Set("WWW-Authenticate", `Bearer realm="keygate", error="insufficient_scope"`)
	}
	// A used-up quota says when it resets whatever status the dialect
	// gives it.
	if fm.status == http.StatusTooManyRequests || fm.status == http.StatusServiceUnavailable || d.code == QuotaExceeded {
		secs := retrySeconds(d.retryAfter)
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
		if name := forms.dialect.RetryAfterHeader(); name != "" {
			h[name] = []string{strconv.FormatInt(secs*1000, 10)}
		}
	}
	if fm.errorType != "" {
		// A slice of its own: a handler around keygate may edit header
		// values in place (Caddy's header directive replaces within them).
		name, _ := forms.dialect.ErrorHeader(codes[d.code].refusal)
		h[name] = []string{fm.errorType}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	body := fm.body
	r := codes[d.code].refusal
	if d.monthly {
		r = mailapi.RefusedMonthlyQuota
	}
	switch {
	case d.query && forms.dialect != nil:
		message := d.message
		if message == "" {
			message = fm.text
		}
		h.Set("Content-Type", "text/xml")
		body = forms.dialect.AppendQueryError(nil, r, fm.status, "keygate "+codes[d.code].name+": "+message)
	case d.message != "":
		body = forms.body(d.code, r, fm.status, d.message)
	}
	w.WriteHeader(fm.status)
	_, _ = w.Write(body)
	return fm.status
}

// retrySeconds rounds a wait up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		return 1
	}
	return s
}
