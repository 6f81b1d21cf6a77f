package keygate

import (
	"net/http"
	"strconv"
	"time"
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
	numCodes
)

type codeInfo struct {
	name    string
	status  int
	message string
	// body is the JSON error body, built once.
	body []byte
}

var codes = [numCodes]codeInfo{
	Allowed:           {"allowed", http.StatusOK, "", nil},
	MissingKey:        {"missing_key", 401, "no API key was presented; send Authorization: Bearer <key>", nil},
	InvalidKey:        {"invalid_key", 401, "the API key is not valid", nil},
	RevokedKey:        {"revoked_key", 401, "the API key has been revoked", nil},
	ExpiredKey:        {"expired_key", 401, "the API key has expired", nil},
	DisabledKey:       {"disabled_key", 401, "the API key is disabled", nil},
	IPNotAllowed:      {"ip_not_allowed", 403, "the API key may not be used from this client address", nil},
	EnvNotAllowed:     {"env_not_allowed", 403, "the API key's environment is not accepted on this route", nil},
	InsufficientScope: {"insufficient_scope", 403, "the API key lacks the scope this route requires", nil},
	SenderNotAllowed:  {"sender_not_allowed", 403, "the sender address is outside the API key's sender domains", nil},
	TooManyRecipients: {"too_many_recipients", 403, "the message has more recipients than the API key allows per request", nil},
	InvalidPayload:    {"invalid_payload", 400, "the request body cannot be parsed", nil},
	PayloadTooLarge:   {"payload_too_large", 413, "the request body is larger than this route inspects", nil},
	RateLimited:       {"rate_limited", 429, "the API key's request rate is exceeded", nil},
	QuotaExceeded:     {"quota_exceeded", 429, "the API key's recipient quota for this period is used up", nil},
	AuthRateLimited:   {"auth_rate_limited", 429, "too many failed key attempts from this client address", nil},
	StoreUnavailable:  {"store_unavailable", 503, "the key store is unavailable; try again shortly", nil},
}

func init() {
	for i := range codes {
		codes[i].body = errorBody(codes[i].name, codes[i].message)
	}
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

func errorBody(code, message string) []byte {
	b := []byte(`{"error":{"code":`)
	b = strconv.AppendQuote(b, code)
	b = append(b, `,"message":`...)
	b = strconv.AppendQuote(b, message)
	return append(b, "}}\n"...)
}

// denial carries what a denial response needs beyond its code.
type denial struct {
	code Code
	// message overrides the code's default message (e.g. which field of a
	// payload is wrong). It never contains a key.
	message string
	// retryAfter is sent as Retry-After on 429 and 503.
	retryAfter time.Duration
	// scope is the scope that was required (insufficient_scope).
	scope string
	// keyPresented adds error="invalid_token" to a 401's challenge.
	keyPresented bool
}

// write sends the contract's JSON error body and headers.
func (d denial) write(w http.ResponseWriter) {
	info := codes[d.code]
	h := w.Header()
	switch {
	case info.status == http.StatusUnauthorized && d.keyPresented:
		h.Set("WWW-Authenticate", `Bearer realm="keygate", error="invalid_token"`)
	case info.status == http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="keygate"`)
	case d.code == InsufficientScope:
		h.Set("WWW-Authenticate", `Bearer realm="keygate", error="insufficient_scope", scope=`+strconv.Quote(d.scope))
	}
	if info.status == http.StatusTooManyRequests || info.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", strconv.FormatInt(retrySeconds(d.retryAfter), 10))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	body := info.body
	if d.message != "" {
		body = errorBody(info.name, d.message)
	}
	w.WriteHeader(info.status)
	_, _ = w.Write(body)
}

// retrySeconds rounds a wait up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		return 1
	}
	return s
}
