package mailapi

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// Refusal is the kind of a gateway's refusal, as finely as the providers'
// error vocabularies tell refusals apart. A gateway maps each of its own
// denial reasons to one; a dialect answers each in the provider's own error
// shape, so the provider's official SDKs put the gateway's reason in the
// errors they throw or return.
type Refusal uint8

// Refusal kinds.
const (
	RefusedNoKey        Refusal = iota // no API key was presented
	RefusedKey                         // the key is not valid (unknown, revoked, expired, disabled)
	RefusedAccess                      // the key may not do this (scope, client address, environment)
	RefusedSender                      // a sender the key may not send as
	RefusedRecipients                  // more recipients than the key may address at once
	RefusedPayload                     // the body is not a valid send request
	RefusedSize                        // the body is too large
	RefusedRate                        // too many requests; retrying later will pass
	RefusedQuota                       // the key's sending quota for the day is used up
	RefusedMonthlyQuota                // the key's sending quota for the month is used up
	RefusedUnavailable                 // the gateway cannot decide now; retrying soon may pass
	numRefusals
)

// errorShape is how a provider's error responses look to its official SDKs:
// where they read the message, and what they make of the status and error
// names. Each shape was checked against the SDKs' source (see
// docs/sdks.md), not against the providers' documentation alone.
type errorShape struct {
	// members appends the provider's own JSON members (each preceded by a
	// comma) to an error object that already holds the gateway's "error".
	members func(b []byte, r Refusal, status int, message string) []byte
	// names are the provider's error names or codes per refusal, for
	// members and typeHeader.
	names [numRefusals]string
	// typeHeader is a response header carrying names[r] (SES's
	// x-amzn-ErrorType, which the AWS SDKs read the error type from).
	typeHeader string
	// quotaStatus is what the provider answers when a sending limit is
	// used up, if it is not 429: the status its SDKs do not retry.
	quotaStatus int
	// retryAfterMS is a header carrying Retry-After in milliseconds, for
	// SDKs that read only that (aws-sdk-go-v2's x-amz-retry-after).
	retryAfterMS string
}

// Status returns the HTTP status a refusal gets in this dialect: status,
// unless the provider answers that refusal otherwise. Only a used-up quota
// differs: several providers answer it with a status their SDKs do not
// retry, where a 429 would make them retry a refusal that lasts for hours.
func (d *Dialect) Status(r Refusal, status int) int {
	if d.errors != nil && d.errors.quotaStatus != 0 && (r == RefusedQuota || r == RefusedMonthlyQuota) {
		return d.errors.quotaStatus
	}
	return status
}

// AppendError appends to b, a JSON error object still open after its
// first member, the members the dialect's SDKs read an error from, each
// preceded by a comma; message is shown where they show a message. status
// is the response's status (Mailjet's SDK reads it from the body too).
func (d *Dialect) AppendError(b []byte, r Refusal, status int, message string) []byte {
	if d.errors == nil || d.errors.members == nil {
		return b
	}
	return d.errors.members(b, r, status, message)
}

// AppendQueryError appends the XML error SES's v1 Query API answers with,
// which its clients (botocore's query protocol, the AWS SDKs' SES v1
// clients) read the error code and message from; message is shown as the
// message. status picks the fault's side (Sender or Receiver).
func (d *Dialect) AppendQueryError(b []byte, r Refusal, status int, message string) []byte {
	side := "Sender"
	if status >= 500 {
		side = "Receiver"
	}
	b = append(b, `<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><Error><Type>`...)
	b = append(b, side...)
	b = append(b, "</Type><Code>"...)
	if d.errors != nil {
		b = appendXMLText(b, d.errors.names[r])
	}
	b = append(b, "</Code><Message>"...)
	b = appendXMLText(b, message)
	return append(b, "</Message></Error><RequestId>keygate</RequestId></ErrorResponse>\n"...)
}

// AppendJSONString appends s as a JSON string. A message may quote what a
// client sent (a request path, which may hold a NUL, other control
// characters or bytes that are no UTF-8), which strconv.AppendQuote would
// write as "\x00", "\v" or "\xff": escapes JSON does not have, so the
// body would be no JSON a client could read. Controls are written as
// "\u00XX", a byte that is no UTF-8 as U+FFFD (as encoding/json does), and
// U+2028 and U+2029 escaped; the rest as it is.
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// appendXMLText appends s escaped as XML character data.
func appendXMLText(b []byte, s string) []byte {
	var w bytes.Buffer
	_ = xml.EscapeText(&w, []byte(s))
	return append(b, w.Bytes()...)
}

// ErrorHeader returns a response header the dialect's SDKs read the error
// type from, and its value for r; name is "" when there is none.
func (d *Dialect) ErrorHeader(r Refusal) (name, value string) {
	if d.errors == nil || d.errors.typeHeader == "" {
		return "", ""
	}
	return d.errors.typeHeader, d.errors.names[r]
}

// RetryAfterHeader is the name of a header that carries Retry-After in
// milliseconds for the dialect's SDKs, or "".
func (d *Dialect) RetryAfterHeader() string {
	if d == nil || d.errors == nil {
		return ""
	}
	return d.errors.retryAfterMS
}

func appendMember(b []byte, name string) []byte {
	b = append(b, ',')
	b = AppendJSONString(b, name)
	return append(b, ':')
}

// SendGrid: @sendgrid/client's ResponseError.toString and sendgrid-go's
// callers read body.errors[].message; field and help are printed beside it.
var sendgridErrors = &errorShape{
	members: func(b []byte, _ Refusal, _ int, message string) []byte {
		b = appendMember(b, "errors")
		b = append(b, `[{"message":`...)
		b = AppendJSONString(b, message)
		return append(b, `,"field":null,"help":null}]`...)
	},
	// SendGrid answers exhausted credits with 401 "Maximum credits
	// exceeded"; sendgrid-go's MakeRequestRetry retries every 429 up to
	// six times.
	quotaStatus: http.StatusUnauthorized,
}

// Postmark: the postmark SDK's errors take their message from Message
// and their code from ErrorCode (Postmark's API error codes: 10 bad or
// missing token, 300 invalid email request, 400 sender signature not
// found, 402 invalid JSON, 405 not allowed to send).
var postmarkErrors = &errorShape{
	members: func(b []byte, r Refusal, _ int, message string) []byte {
		b = appendMember(b, "ErrorCode")
		b = append(b, postmarkCodes[r]...)
		b = appendMember(b, "Message")
		return AppendJSONString(b, message)
	},
	// Postmark answers a server that may not send (out of credits) with
	// 422 and ErrorCode 405.
	quotaStatus: http.StatusUnprocessableEntity,
}

var postmarkCodes = [numRefusals]string{
	RefusedNoKey: "10", RefusedKey: "10", RefusedAccess: "405", RefusedSender: "400",
	RefusedRecipients: "300", RefusedPayload: "402", RefusedSize: "300", RefusedRate: "0",
	RefusedQuota: "405", RefusedMonthlyQuota: "405", RefusedUnavailable: "0",
}

// messageMember is the shape of APIs whose SDKs read a top-level
// "message": Mailgun (mailgun.js puts it in err.details; mailgun-go
// prints the whole body).
func messageMember(b []byte, _ Refusal, _ int, message string) []byte {
	b = appendMember(b, "message")
	return AppendJSONString(b, message)
}

var mailgunErrors = &errorShape{members: messageMember}

// Resend: the resend SDK returns the parsed body as its error
// ({name, message, statusCode}); resend-go prints message.
var resendErrors = &errorShape{
	members: func(b []byte, r Refusal, status int, message string) []byte {
		b = appendMember(b, "name")
		b = AppendJSONString(b, resendNames[r])
		b = appendMember(b, "message")
		b = AppendJSONString(b, message)
		b = appendMember(b, "statusCode")
		return strconv.AppendInt(b, int64(status), 10)
	},
}

// resendNames are names of the resend SDK's RESEND_ERROR_CODE_KEY.
var resendNames = [numRefusals]string{
	RefusedNoKey: "missing_api_key", RefusedKey: "invalid_api_key", RefusedAccess: "restricted_api_key",
	RefusedSender: "invalid_from_address", RefusedRecipients: "validation_error", RefusedPayload: "validation_error",
	RefusedSize: "validation_error", RefusedRate: "rate_limit_exceeded", RefusedQuota: "daily_quota_exceeded",
	RefusedMonthlyQuota: "monthly_quota_exceeded", RefusedUnavailable: "application_error",
}

// SES v2 (restJson1): the AWS SDKs take the error type from the
// x-amzn-ErrorType header and the message from "message"; a type the
// service models (SendingPausedException, …) becomes that exception class.
var sesErrors = &errorShape{
	members:    messageMember,
	typeHeader: "X-Amzn-Errortype",
	names: [numRefusals]string{
		RefusedNoKey: "MissingAuthenticationTokenException", RefusedKey: "UnrecognizedClientException",
		RefusedAccess: "AccessDeniedException", RefusedSender: "MessageRejected",
		RefusedRecipients: "BadRequestException", RefusedPayload: "BadRequestException",
		RefusedSize: "BadRequestException", RefusedRate: "TooManyRequestsException",
		// SES answers a used-up daily quota with a throttling error, which
		// the AWS SDKs retry (three attempts by default); the closest error
		// they do not retry is SendingPausedException.
		RefusedQuota: "SendingPausedException", RefusedMonthlyQuota: "SendingPausedException",
		RefusedUnavailable: "InternalServiceErrorException",
	},
	quotaStatus: http.StatusBadRequest,
	// aws-sdk-go-v2 ignores Retry-After and waits as long as this says
	// (within its backoff and 5 s); without it, it retried a 503 three
	// times in about 0.1 s.
	retryAfterMS: "X-Amz-Retry-After",
}

// Mailjet: node-mailjet's error message is built from ErrorMessage (and
// the status code); it also copies ErrorMessage onto the error.
// mailjet-apiv3-go reads a 400 or 403 as the send's validation errors, as
// Mailjet's v3.1 send answers them ({"Messages":[{"Errors":[…]}]}), and
// anything else from ErrorMessage, ErrorCode and StatusCode. Django-Anymail
// takes a 4xx for a batch's partial failure unless the body has a top-level
// ErrorCode, as Mailjet's global errors do: without one, a refused send
// was reported to the application as sent (its recipients "failed").
var mailjetErrors = &errorShape{
	members: func(b []byte, r Refusal, status int, message string) []byte {
		b = appendMember(b, "ErrorCode")
		b = AppendJSONString(b, mailjetCodes[r])
		b = appendMember(b, "ErrorMessage")
		b = AppendJSONString(b, message)
		b = appendMember(b, "StatusCode")
		b = strconv.AppendInt(b, int64(status), 10)
		if status != http.StatusBadRequest && status != http.StatusForbidden {
			return b
		}
		b = appendMember(b, "Messages")
		b = append(b, `[{"Status":"error","Errors":[{"ErrorMessage":`...)
		b = AppendJSONString(b, message)
		b = append(b, `,"StatusCode":`...)
		b = strconv.AppendInt(b, int64(status), 10)
		return append(b, "}]}]"...)
	},
}

// mailjetCodes are the ErrorCode of each refusal, in the "<area>-<name>"
// form of Mailjet's own codes, saying where the error comes from.
var mailjetCodes = [numRefusals]string{
	RefusedNoKey: "keygate-missing-key", RefusedKey: "keygate-invalid-key", RefusedAccess: "keygate-access-denied",
	RefusedSender: "keygate-sender-not-allowed", RefusedRecipients: "keygate-too-many-recipients",
	RefusedPayload: "keygate-invalid-payload", RefusedSize: "keygate-payload-too-large",
	RefusedRate: "keygate-rate-limited", RefusedQuota: "keygate-quota-exceeded",
	RefusedMonthlyQuota: "keygate-quota-exceeded", RefusedUnavailable: "keygate-unavailable",
}

// Brevo: @getbrevo/brevo's BrevoError prints the whole body; Brevo's own
// errors are {code, message} with codes from its documented list.
var brevoErrors = &errorShape{
	members: func(b []byte, r Refusal, _ int, message string) []byte {
		b = appendMember(b, "code")
		b = AppendJSONString(b, brevoCodes[r])
		b = appendMember(b, "message")
		return AppendJSONString(b, message)
	},
	// Brevo answers a lack of credits with 402 not_enough_credits; its
	// SDK retries 408, 429 and 5xx twice, waiting up to a minute each.
	quotaStatus: http.StatusPaymentRequired,
}

var brevoCodes = [numRefusals]string{
	RefusedNoKey: "unauthorized", RefusedKey: "unauthorized", RefusedAccess: "permission_denied",
	RefusedSender: "permission_denied", RefusedRecipients: "out_of_range", RefusedPayload: "bad_request",
	// Brevo documents no code for a rate limit or an outage: these two are
	// named after its SDK's TooManyRequestsError and HTTP 503.
	RefusedSize: "bad_request", RefusedRate: "too_many_requests", RefusedQuota: "not_enough_credits",
	RefusedMonthlyQuota: "not_enough_credits", RefusedUnavailable: "service_unavailable",
}
