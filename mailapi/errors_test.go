package mailapi

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestWhereEachDialectsSDKsPutTheKey(t *testing.T) {
	for _, tc := range []struct {
		dialect      string
		headers      []string
		basic, sigV4 bool
	}{
		{"sendgrid", nil, false, false},
		{"postmark", []string{"X-Postmark-Server-Token", "X-Postmark-Account-Token"}, false, false},
		{"mailgun", nil, true, false},
		{"resend", nil, false, false},
		{"ses", nil, false, true},
		{"mailjet", nil, true, false},
		{"brevo", []string{"Api-Key"}, false, false},
		{"mailpit", nil, false, false},
	} {
		d, _ := Lookup(tc.dialect)
		if !slices.Equal(d.KeyHeaders(), tc.headers) || d.KeyInBasic() != tc.basic || d.KeyInSigV4() != tc.sigV4 {
			t.Errorf("%s: headers %q basic %v sigV4 %v, want %q %v %v", tc.dialect, d.KeyHeaders(), d.KeyInBasic(), d.KeyInSigV4(), tc.headers, tc.basic, tc.sigV4)
		}
	}
	if got, want := AllKeyHeaders(), []string{"X-Postmark-Server-Token", "X-Postmark-Account-Token", "Api-Key"}; !slices.Equal(got, want) {
		t.Errorf("AllKeyHeaders() = %q, want %q", got, want)
	}
}

// Every dialect's members keep the error object valid JSON for every
// refusal, and a message that needs escaping stays one string.
func TestAppendErrorIsValidJSON(t *testing.T) {
	const message = "keygate x: \"quoted\" \\ <tag> \u2028"
	for _, name := range Names() {
		d, _ := Lookup(name)
		for r := Refusal(0); r < numRefusals; r++ {
			b := d.AppendError([]byte(`{"error":{}`), r, d.Status(r, 403), message)
			b = append(b, '}')
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatalf("%s refusal %d: %v: %s", name, r, err, b)
			}
			if _, v := d.ErrorHeader(r); d.errors != nil && d.errors.typeHeader != "" && v == "" {
				t.Errorf("%s refusal %d: no error type", name, r)
			}
		}
	}
}

func TestQuotaStatusIsOneTheSDKsDoNotRetry(t *testing.T) {
	for name, want := range map[string]int{"sendgrid": 401, "postmark": 422, "mailgun": 429, "resend": 429, "ses": 400, "mailjet": 429, "brevo": 402, "mailpit": 429} {
		d, _ := Lookup(name)
		for _, r := range []Refusal{RefusedQuota, RefusedMonthlyQuota} {
			if got := d.Status(r, 429); got != want {
				t.Errorf("%s: a used-up quota is %d, want %d", name, got, want)
			}
		}
		if got := d.Status(RefusedRate, 429); got != 429 {
			t.Errorf("%s: a rate limit is %d, want 429", name, got)
		}
	}
}

// A message may quote a request path, with any bytes in it: every
// dialect's error members stay JSON, and read back as the message (a byte
// that is no UTF-8 as U+FFFD).
func TestErrorMembersAreJSONWhateverTheMessageHolds(t *testing.T) {
	for _, msg := range []string{"/x\x00", "/x\x01\x0b\x1f\x7f", "/x\xff\xfe", "a \"quoted\" \\ path\n\r\t", "\u2028\u2029 café 🙂"} {
		want := []rune(msg) // invalid bytes become U+FFFD
		var s string
		if err := json.Unmarshal(AppendJSONString(nil, msg), &s); err != nil || s != string(want) {
			t.Errorf("AppendJSONString(%q) reads back as %q (%v), want %q", msg, s, err, string(want))
		}
		for _, name := range Names() {
			d, _ := Lookup(name)
			b := append(d.AppendError([]byte(`{"error":{}`), 0, 403, msg), '}')
			if !json.Valid(b) {
				t.Errorf("%s: the error for %q is no JSON: %s", name, msg, b)
			}
		}
	}
}
