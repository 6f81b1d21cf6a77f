package keygate

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/mailapi"
)

// The fields each provider's official SDKs read an error from (checked
// against the SDKs' source, see docs/sdks.md), as paths into the denial
// body; each must hold "keygate <code>: <message>".
var sdkMessageFields = map[string][]string{
	"sendgrid": {"errors.0.message"},
	"postmark": {"Message"},
	"mailgun":  {"message"},
	"resend":   {"message"},
	"ses":      {"message"},
	"mailjet":  {"ErrorMessage"},
	"brevo":    {"message"},
	"mailpit":  nil,
}

// lookupPath follows a dotted path ("errors.0.message") into decoded JSON.
func lookupPath(v any, path string) any {
	for _, part := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[part]
		case []any:
			if part != "0" || len(x) == 0 {
				return nil
			}
			v = x[0]
		default:
			return nil
		}
	}
	return v
}

func TestDenialsCarryEachDialectsErrorShape(t *testing.T) {
	for _, name := range mailapi.Names() {
		d, _ := mailapi.Lookup(name)
		forms := newDenialForms(d, "Authorization: Bearer <key>")
		for c := MissingKey; c < numCodes; c++ {
			for _, message := range []string{"", "a message of the moment"} {
				w := httptest.NewRecorder()
				status := denial{code: c, message: message, retryAfter: 3 * time.Second}.write(w, forms)
				var body map[string]any
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
					t.Fatalf("%s %s: not JSON: %v: %s", name, c, err, w.Body)
				}
				want := message
				if want == "" {
					want = forms.codes[c].message(c)
				}
				if got := lookupPath(body, "error.code"); got != c.String() {
					t.Errorf("%s %s: error.code %v", name, c, got)
				}
				if got := lookupPath(body, "error.message"); got != want {
					t.Errorf("%s %s: error.message %v, want %q", name, c, got, want)
				}
				for _, field := range sdkMessageFields[name] {
					if got := lookupPath(body, field); got != "keygate "+c.String()+": "+want {
						t.Errorf("%s %s: %s = %v, want %q", name, c, field, got, "keygate "+c.String()+": "+want)
					}
				}
				if w.Code != status {
					t.Errorf("%s %s: wrote %d, returned %d", name, c, w.Code, status)
				}
				if c != QuotaExceeded && status != c.Status() {
					t.Errorf("%s %s: status %d, want the contract's %d", name, c, status, c.Status())
				}
			}
		}
	}
}

func TestEachDialectsOwnErrorFields(t *testing.T) {
	tests := []struct {
		dialect string
		code    Code
		monthly bool
		status  int
		fields  map[string]any // path -> value
		header  [2]string
	}{
		{"sendgrid", QuotaExceeded, false, 401, map[string]any{"errors.0.field": nil, "errors.0.help": nil}, [2]string{}},
		{"postmark", InvalidKey, false, 401, map[string]any{"ErrorCode": 10.0}, [2]string{}},
		{"postmark", SenderNotAllowed, false, 403, map[string]any{"ErrorCode": 400.0}, [2]string{}},
		{"postmark", QuotaExceeded, false, 422, map[string]any{"ErrorCode": 405.0}, [2]string{}},
		{"resend", MissingKey, false, 401, map[string]any{"name": "missing_api_key", "statusCode": 401.0}, [2]string{}},
		{"resend", RateLimited, false, 429, map[string]any{"name": "rate_limit_exceeded", "statusCode": 429.0}, [2]string{}},
		{"resend", QuotaExceeded, false, 429, map[string]any{"name": "daily_quota_exceeded"}, [2]string{}},
		{"resend", QuotaExceeded, true, 429, map[string]any{"name": "monthly_quota_exceeded"}, [2]string{}},
		{"ses", InvalidKey, false, 401, nil, [2]string{"X-Amzn-Errortype", "UnrecognizedClientException"}},
		{"ses", SenderNotAllowed, false, 403, nil, [2]string{"X-Amzn-Errortype", "MessageRejected"}},
		{"ses", RateLimited, false, 429, nil, [2]string{"X-Amzn-Errortype", "TooManyRequestsException"}},
		{"ses", QuotaExceeded, true, 400, nil, [2]string{"X-Amzn-Errortype", "SendingPausedException"}},
		{"mailjet", TooManyRecipients, false, 403, map[string]any{"StatusCode": 403.0, "ErrorCode": "keygate-too-many-recipients"}, [2]string{}},
		{"mailjet", SenderNotAllowed, false, 403, map[string]any{"ErrorCode": "keygate-sender-not-allowed"}, [2]string{}},
		{"mailjet", RevokedKey, false, 401, map[string]any{"ErrorCode": "keygate-invalid-key"}, [2]string{}},
		{"brevo", QuotaExceeded, false, 402, map[string]any{"code": "not_enough_credits"}, [2]string{}},
		{"brevo", InvalidKey, false, 401, map[string]any{"code": "unauthorized"}, [2]string{}},
		{"mailgun", QuotaExceeded, false, 429, nil, [2]string{}},
		{"mailpit", QuotaExceeded, false, 429, nil, [2]string{}},
	}
	for _, tc := range tests {
		d, _ := mailapi.Lookup(tc.dialect)
		w := httptest.NewRecorder()
		status := denial{code: tc.code, monthly: tc.monthly, retryAfter: time.Hour}.write(w, newDenialForms(d, "x"))
		if status != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.dialect, tc.code, status, tc.status)
		}
		var body map[string]any
		json.Unmarshal(w.Body.Bytes(), &body)
		for path, want := range tc.fields {
			if got := lookupPath(body, path); got != want {
				t.Errorf("%s %s: %s = %#v, want %#v", tc.dialect, tc.code, path, got, want)
			}
		}
		if tc.header[0] != "" && w.Header().Get(tc.header[0]) != tc.header[1] {
			t.Errorf("%s %s: %s %q, want %q", tc.dialect, tc.code, tc.header[0], w.Header().Get(tc.header[0]), tc.header[1])
		}
		if tc.code == QuotaExceeded && w.Header().Get("Retry-After") != "3600" {
			t.Errorf("%s quota_exceeded: Retry-After %q, want when the quota resets", tc.dialect, w.Header().Get("Retry-After"))
		}
		// aws-sdk-go-v2 waits only as x-amz-retry-after says, in ms.
		want := ""
		if tc.dialect == "ses" && w.Header().Get("Retry-After") != "" {
			want = "3600000"
		}
		if got := w.Header().Get("X-Amz-Retry-After"); got != want {
			t.Errorf("%s %s: X-Amz-Retry-After %q, want %q", tc.dialect, tc.code, got, want)
		}
	}
}

// A denial on a mail_api route allocates no more than on a plain route but
// the error-type header's own one-value slice (SES): its body and header
// value are built when the route is provisioned.
func TestDialectDenialsAllocateNoMore(t *testing.T) {
	ses, _ := mailapi.Lookup("ses")
	plain, dialect := newDenialForms(nil, "x"), newDenialForms(ses, "x")
	w := nopWriter{h: make(map[string][]string)}
	allocs := func(forms *denialForms) float64 {
		return testing.AllocsPerRun(100, func() {
			clear(w.h)
			denial{code: SenderNotAllowed}.write(w, forms)
		})
	}
	if a, b := allocs(plain), allocs(dialect); b > a+1 {
		t.Errorf("a dialect's denial allocates %v times, a plain one %v", b, a)
	}
}

// message returns the form's error.message, for the test above.
func (f form) message(c Code) string {
	var e errorJSON
	json.Unmarshal(f.body, &e)
	return e.Error.Message
}
