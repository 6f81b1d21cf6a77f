package keygate

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/caddy-keygate/verifier"
)

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func sigV4(id string) string {
	return "AWS4-HMAC-SHA256 Credential=" + id + "/20261129/us-east-1/ses/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123abcd"
}

// serveHeaders serves one request with the given headers (name, value,
// name, value, …) and returns the response and the headers the next
// handler saw (nil if it was not called).
func serveHeaders(t *testing.T, h *Handler, method, path string, hdr ...string) (*httptest.ResponseRecorder, http.Header) {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	var upstream http.Header
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		upstream = r.Header.Clone()
		w.WriteHeader(http.StatusAccepted)
		return nil
	})
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	return w, upstream
}

type errorJSON struct {
	Error struct{ Code, Message string } `json:"error"`
}

func decodeError(t *testing.T, w *httptest.ResponseRecorder) errorJSON {
	t.Helper()
	var e errorJSON
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("denial body is not JSON: %v: %s", err, w.Body)
	}
	return e
}

func TestKeyArrivesWhereEachSDKPutsIt(t *testing.T) {
	scopes := []ScopeRule{{Scope: "mail.send", Path: "*"}}
	uri := "sqlite:" + t.TempDir() + "/keys.db"
	route := func(dialect string, keyHeaders ...string) *Handler {
		h, _ := testHandler(t, &Handler{MailAPI: dialect, KeyHeaders: keyHeaders, Scopes: scopes, Store: uri, FailedAuthLimit: "1000/m"})
		return h
	}
	sendgrid, postmark, brevo, ses, custom := route("sendgrid"), route("postmark"), route("brevo"), route("ses"), route("", "X-Custom-Key")
	_, key := issue(t, sendgrid.backend.store, "mail.send")
	_, other := issue(t, sendgrid.backend.store, "mail.send")
	garbage := "kg_live_" + strings.Repeat("A", 49) // well-shaped, bad checksum

	tests := []struct {
		name    string
		h       *Handler
		hdr     []string
		status  int
		code    string
		message string // a substring of the denial's message
	}{
		{"Bearer", sendgrid, []string{"Authorization", "Bearer " + key}, 202, "", ""},
		{"the scheme's case does not matter", sendgrid, []string{"Authorization", "bearer " + key}, 202, "", ""},
		{"Bearer with spaces around the key", sendgrid, []string{"Authorization", "Bearer   " + key + " \t"}, 202, "", ""},
		{"Bearer with a bad key and a space after it", sendgrid, []string{"Authorization", "Bearer " + garbage + " "}, 401, "invalid_key", "not valid"},
		{"Basic with the key as the password (Mailgun's api:KEY)", sendgrid, []string{"Authorization", basic("api", key)}, 202, "", ""},
		{"Basic with the key as the username (Mailjet's public key)", sendgrid, []string{"Authorization", basic(key, "anything")}, 202, "", ""},
		{"Basic with the same key twice", sendgrid, []string{"Authorization", basic(key, key)}, 202, "", ""},
		{"Basic with a newline after the key (an environment file's)", sendgrid, []string{"Authorization", basic("api", key+"\n")}, 202, "", ""},
		{"Basic with a space before the key as the username", sendgrid, []string{"Authorization", basic(" "+key, "")}, 202, "", ""},
		{"Basic with two different keys", sendgrid, []string{"Authorization", basic(key, other)}, 401, "invalid_key", "two different API keys"},
		{"Basic with no key in it", sendgrid, []string{"Authorization", basic("api", "key-provider-secret")}, 401, "invalid_key", "neither the username nor the password"},
		{"Basic with a key of bad checksum", sendgrid, []string{"Authorization", basic("api", garbage)}, 401, "invalid_key", "neither the username nor the password"},
		{"Basic that is not base64", sendgrid, []string{"Authorization", "Basic !!!not-base64!!!"}, 401, "invalid_key", "not base64 of username:password"},
		{"Basic without a colon", sendgrid, []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(key))}, 401, "invalid_key", "not base64 of username:password"},
		{"Basic with nothing", sendgrid, []string{"Authorization", "Basic "}, 401, "invalid_key", "not base64"},
		{"Basic far too long", sendgrid, []string{"Authorization", "Basic " + strings.Repeat("QUFB", 1000)}, 401, "invalid_key", "not base64"},
		{"a key without a scheme is named, not called invalid", sendgrid, []string{"Authorization", key}, 401, "missing_key", "without a scheme; send it as Authorization: Bearer <key>"},
		{"a key in another scheme is named", sendgrid, []string{"Authorization", "Token " + key}, 401, "missing_key", "scheme this route does not read"},
		{"SigV4 outside ses routes is named", sendgrid, []string{"Authorization", sigV4(key)}, 401, "missing_key", "only on mail_api ses routes"},
		{"another scheme with no key", sendgrid, []string{"Authorization", "Token abc"}, 401, "invalid_key", "holds no API key"},
		{"a bare non-key", sendgrid, []string{"Authorization", "abc"}, 401, "invalid_key", "holds no API key"},
		{"a Bearer that is not a key", sendgrid, []string{"Authorization", "Bearer abc"}, 401, "invalid_key", "not valid"},
		{"an empty Bearer presents nothing", sendgrid, []string{"Authorization", "Bearer "}, 401, "missing_key", "no API key was presented"},
		{"a huge Bearer", sendgrid, []string{"Authorization", "Bearer " + strings.Repeat("k", 64<<10)}, 401, "invalid_key", "not valid"},
		{"a key in another provider's header is named", sendgrid, []string{"X-Postmark-Server-Token", key}, 401, "missing_key", "a header this route does not read"},
		{"the same key in a read and an unread place", sendgrid, []string{"Authorization", "Bearer " + key, "Api-Key", key}, 202, "", ""},
		{"different keys in a read and an unread place", sendgrid, []string{"Authorization", "Bearer " + key, "Api-Key", other}, 401, "invalid_key", "two different API keys"},
		{"two Authorization lines that disagree", sendgrid, []string{"Authorization", "Bearer " + key, "Authorization", "Bearer " + other}, 401, "invalid_key", "two different API keys"},
		{"nothing at all", sendgrid, nil, 401, "missing_key", "send Authorization: Bearer <key>"},
		{"a key in a header no provider reads is named", sendgrid, []string{"X-Auth-Token", key}, 401, "missing_key", "a header this route does not read"},
		{"the same key in Authorization and in a header no provider reads", sendgrid, []string{"Authorization", "Bearer " + key, "X-Auth-Token", "Token " + key}, 202, "", ""},
		{"the same key in the Referer's query", sendgrid, []string{"Authorization", "Bearer " + key, "Referer", "https://crm.example/?key=" + key}, 202, "", ""},
		{"a mistyped key in User-Agent", sendgrid, []string{"Authorization", "Bearer " + key, "User-Agent", "crm/1.0 " + garbage}, 202, "", ""},
		{"another key in User-Agent", sendgrid, []string{"Authorization", "Bearer " + key, "User-Agent", "crm/1.0 " + other}, 401, "invalid_key", "two different API keys"},

		{"postmark: the server token header, with no key_header line", postmark, []string{"X-Postmark-Server-Token", key}, 202, "", ""},
		{"postmark: the account token header", postmark, []string{"X-Postmark-Account-Token", key}, 202, "", ""},
		{"postmark: the token header is read whatever Authorization carries", postmark, []string{"Authorization", basic("u", "provider"), "X-Postmark-Server-Token", key}, 202, "", ""},
		{"postmark: Bearer and token header disagree", postmark, []string{"Authorization", "Bearer " + key, "X-Postmark-Server-Token", other}, 401, "invalid_key", "two different API keys"},
		{"postmark: a missing key is told the token header", postmark, nil, 401, "missing_key", "X-Postmark-Server-Token: <key>"},
		{"brevo: the api-key header", brevo, []string{"api-key", key}, 202, "", ""},

		{"ses: the SigV4 access key id", ses, []string{"Authorization", sigV4(key)}, 202, "", ""},
		{"ses: the SigV4 access key id with a space before it", ses, []string{"Authorization", sigV4(" " + key)}, 202, "", ""},
		{"ses: SigV4 with no Credential", ses, []string{"Authorization", "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00"}, 401, "invalid_key", "no Credential="},
		{"ses: SigV4 with no parameters", ses, []string{"Authorization", "AWS4-HMAC-SHA256 "}, 401, "invalid_key", "no Credential="},
		{"ses: SigV4 with a short Credential", ses, []string{"Authorization", "AWS4-HMAC-SHA256 Credential=" + key + "/20261129/us-east-1/ses, Signature=00"}, 401, "invalid_key", "no Credential="},
		{"ses: SigV4 with an empty access key id", ses, []string{"Authorization", sigV4("")}, 401, "invalid_key", "no Credential="},
		{"ses: SigV4 with an empty scope part", ses, []string{"Authorization", "AWS4-HMAC-SHA256 Credential=" + key + "/20261129//ses/aws4_request"}, 401, "invalid_key", "no Credential="},
		{"ses: SigV4 with a provider's access key id", ses, []string{"Authorization", sigV4("AKIAIOSFODNN7EXAMPLE")}, 401, "invalid_key", "access key id is not a well-formed API key"},
		{"ses: SigV4 and Bearer disagree", ses, []string{"Authorization", sigV4(key), "Authorization", "Bearer " + other}, 401, "invalid_key", "two different API keys"},
		{"ses: a missing key is told SigV4", ses, nil, 401, "missing_key", "access key id of an AWS Signature V4"},

		{"key_header is read whatever scheme Authorization carries", custom, []string{"Authorization", basic("u", "provider"), "X-Custom-Key", key}, 202, "", ""},
		{"key_header beside a foreign scheme", custom, []string{"Authorization", "Token abc", "X-Custom-Key", key}, 202, "", ""},
		{"key_header and Bearer disagree", custom, []string{"Authorization", "Bearer " + other, "X-Custom-Key", key}, 401, "invalid_key", "two different API keys"},
		{"junk in a key_header beside a Bearer key is not a second key", custom, []string{"Authorization", "Bearer " + key, "X-Custom-Key", "something"}, 202, "", ""},
		{"a Bearer that is no key beside a key in a key_header", custom, []string{"Authorization", "Bearer something", "X-Custom-Key", key}, 202, "", ""},
		{"junk in both places is not valid", custom, []string{"Authorization", "Bearer something", "X-Custom-Key", "else"}, 401, "invalid_key", "not valid"},
		{"a lone malformed key_header value is not valid", custom, []string{"X-Custom-Key", garbage}, 401, "invalid_key", "not valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := append(tc.hdr, "Proxy-Authorization", "Basic eHg6eXk=", "Cookie", "session=abc", "X-Api-Key", "zzz", "X-Amz-Security-Token", "tok")
			w, upstream := serveHeaders(t, tc.h, "POST", "/send", hdr...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 202 {
				for name, vs := range upstream {
					for _, v := range vs {
						if verifier.HasSecret(v) || strings.Contains(v, "provider") || name == "Authorization" {
							t.Errorf("the upstream got %s: %s", name, v)
						}
					}
				}
				for _, name := range []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "X-Amz-Security-Token", "Api-Key", "X-Postmark-Server-Token", "X-Custom-Key"} {
					if _, ok := upstream[name]; ok {
						t.Errorf("the upstream got the client's %s", name)
					}
				}
				return
			}
			e := decodeError(t, w)
			if e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.message) {
				t.Errorf("denial %s %q, want %s containing %q", e.Error.Code, e.Error.Message, tc.code, tc.message)
			}
			if strings.Contains(w.Body.String(), key) || strings.Contains(w.Body.String(), other) {
				t.Errorf("the denial quotes a key: %s", w.Body)
			}
		})
	}
}

func TestCredentialFaultsCountAsFailedAttempts(t *testing.T) {
	h, st := testHandler(t, &Handler{FailedAuthLimit: "2/m", Scopes: []ScopeRule{{Scope: "mail.send", Path: "*"}}})
	_, key := issue(t, st, "mail.send")
	for i := 0; i < 2; i++ {
		if w, _ := serveHeaders(t, h, "POST", "/send", "Authorization", basic("api", "nope")); w.Code != 401 {
			t.Fatalf("attempt %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	w, _ := serveHeaders(t, h, "POST", "/send", "Authorization", basic("api", "nope"))
	if e := decodeError(t, w); w.Code != 429 || e.Error.Code != "auth_rate_limited" {
		t.Errorf("past failed_auth_limit: %d %s", w.Code, w.Body)
	}
	// A well-formed key sent the wrong way is a client's mistake, not a
	// guess: it needs no store lookup, so it is told how to send the key.
	w, _ = serveHeaders(t, h, "POST", "/send", "Authorization", key)
	if e := decodeError(t, w); w.Code != 401 || e.Error.Code != "missing_key" {
		t.Errorf("a bare key past the limit: %d %s", w.Code, w.Body)
	}
}

func TestHowToSendNamesTheSDKsWayFirst(t *testing.T) {
	for dialect, want := range map[string]string{
		"":         "Authorization: Bearer <key>",
		"sendgrid": "Authorization: Bearer <key>",
		"mailgun":  "the username or password of HTTP Basic auth or Authorization: Bearer <key>",
		"postmark": "X-Postmark-Server-Token: <key>, X-Postmark-Account-Token: <key> or Authorization: Bearer <key>",
		"ses":      "the access key id of an AWS Signature V4 (any secret access key) or Authorization: Bearer <key>",
	} {
		h, _ := testHandler(t, &Handler{MailAPI: dialect})
		if got := howToSend(h.dialect, h.keyHeaders); got != want {
			t.Errorf("%q: %q, want %q", dialect, got, want)
		}
	}
}

func FuzzTakeKey(f *testing.F) {
	key, err := verifier.Generate("kg", "live")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("Bearer "+key, "", "")
	f.Add(basic("api", key), "", "")
	f.Add(basic(key, "x"), key, "")
	f.Add(sigV4(key), "", key)
	f.Add("AWS4-HMAC-SHA256 Credential=/a/b/c/aws4_request", "", "")
	f.Add("AWS4-HMAC-SHA256 Credential="+key+"/a//c/aws4_request,", "", "")
	f.Add("Basic ====", "", "")
	f.Add(key, "", "")
	f.Add("Token "+key, "x", "")
	f.Add("", key, "")
	f.Add("Bearer "+key+"\u00a0", "", "")
	f.Add("Bearer \u0085"+key, "", "")
	f.Add("Bearer  "+key+" ", "", "")
	h, _ := testHandler(f, &Handler{MailAPI: "ses", KeyHeaders: []string{"X-Custom-Key"}})
	f.Fuzz(func(t *testing.T, auth, custom, other string) {
		// The Bearer fast path reads what the general parse reads.
		fast, general := presented{prefix: "kg", sigV4: true}, presented{prefix: "kg", sigV4: true}
		fast.authorization(auth)
		general.parseAuthorization(auth)
		if fast != general {
			t.Fatalf("%q: the fast path read %+v, the general parse %+v", auth, fast, general)
		}
		r := httptest.NewRequest("POST", "/", nil)
		r.Header["Authorization"] = []string{auth}
		r.Header["X-Custom-Key"] = []string{custom}
		r.Header["Api-Key"] = []string{other}
		got, fault, _ := h.takeKey(r)
		if got != "" && fault != noFault {
			t.Fatalf("key %q with fault %d", got, fault)
		}
		if got != "" && !strings.Contains(auth, got) && !strings.Contains(custom, got) && !strings.Contains(decodeBasic(auth), got) {
			t.Fatalf("key %q is in none of the credentials read", got)
		}
		if fault >= numFaults {
			t.Fatalf("fault %d", fault)
		}
		for _, name := range []string{"Authorization", "X-Custom-Key", "Api-Key"} {
			if _, ok := r.Header[name]; ok {
				t.Fatalf("%s was not stripped", name)
			}
		}
		w := httptest.NewRecorder()
		if status := (denial{code: faults[fault].code, fault: fault}).write(w, h.forms); status != 401 || !json.Valid(w.Body.Bytes()) {
			t.Fatalf("fault %d: %d %s", fault, status, w.Body)
		}
	})
}

func decodeBasic(auth string) string {
	_, enc, _ := strings.Cut(auth, " ")
	b, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	return string(b)
}

// The name filter passes every header a key may come in (so none is left
// unstripped) and stops the usual SDK headers before any map lookup.
func TestKeyHeaderNamesFilter(t *testing.T) {
	h, _ := testHandler(t, &Handler{MailAPI: "postmark", KeyHeaders: []string{"X-Custom-Key"}})
	for name := range h.keyHeaderSet {
		if !h.keyHeaderNames.mayHold(name) {
			t.Errorf("%s is a key header the filter stops", name)
		}
	}
	stopped := 0
	sdk := []string{"User-Agent", "Content-Type", "Content-Length", "Accept", "Accept-Encoding", "Connection", "X-Request-Id"}
	for _, name := range sdk {
		if !h.keyHeaderNames.mayHold(name) {
			stopped++
		}
	}
	if stopped < len(sdk)-1 {
		t.Errorf("the filter stopped %d of %d usual SDK headers", stopped, len(sdk))
	}
	if h.keyHeaderNames.mayHold("") {
		t.Error("an empty name passes")
	}
}

// A key where Caddy's access log writes it as sent is named, so the request
// is left out of that log: a credential header the route does not read, and
// Cookie and Proxy-Authorization only under log_credentials. The route's own
// key headers are the access log filter's (checkAccessLog). A URL holding a
// key is refused, even beside a good key.
func TestTakeKeyNamesWhereTheAccessLogWouldWriteAKey(t *testing.T) {
	h, _ := testHandler(t, &Handler{MailAPI: "postmark"})
	key, _ := verifier.Generate("kg", "live")
	typo := key[:20] + "0" + key[21:] // bad checksum, still a secret
	for _, c := range []struct {
		what           string
		url            string
		hdr            []string
		logCredentials bool
		inLog          string
		fault          fault
	}{
		{"the route's own header", "/email", []string{"X-Postmark-Server-Token", key}, false, "", noFault},
		{"bearer", "/email", []string{"Authorization", "Bearer " + key}, false, "", noFault},
		{"a header the route does not read", "/email", []string{"X-Api-Key", key}, false, "X-Api-Key", faultOtherHeader},
		{"a mistyped key in one, beside a good one", "/email", []string{"Authorization", "Bearer " + key, "Api-Key", typo}, false, "Api-Key", noFault},
		{"no key in it", "/email", []string{"Authorization", "Bearer " + key, "X-Api-Key", "abc"}, false, "", noFault},
		{"Cookie", "/email", []string{"Authorization", "Bearer " + key, "Cookie", "k=" + key}, false, "", noFault},
		{"Cookie under log_credentials", "/email", []string{"Authorization", "Bearer " + key, "Cookie", "k=" + key}, true, "Cookie", noFault},
		{"the query", "/email?api_key=" + key, []string{"Authorization", "Bearer " + key}, false, "the URL", faultKeyInURL},
		{"a mistyped key in the path", "/email/" + typo, nil, false, "the URL", faultKeyInURL},
		{"a key in the query, percent-encoded", "/email?k=" + strings.ReplaceAll(key, "_", "%5F"), nil, false, "the URL", faultKeyInURL},
		{"a key in the path, percent-encoded", "/email/" + strings.ReplaceAll(key, "_", "%5f"), nil, false, "the URL", faultKeyInURL},
		{"a key in the query, percent-encoded twice", "/email?k=" + strings.ReplaceAll(key, "_", "%255F"), []string{"Authorization", "Bearer " + key}, false, "the URL", faultKeyInURL},
		{"a key in the path, percent-encoded twice", "/email/" + strings.ReplaceAll(key, "_", "%255f"), nil, false, "the URL", faultKeyInURL},
		{"a percent sign alone", "/email?q=100%25", []string{"Authorization", "Bearer " + key}, false, "", noFault},
		{"a key encoded twice after a %25", "/email?note=100%25&k=" + strings.ReplaceAll(key, "_", "%255F"), []string{"Authorization", "Bearer " + key}, false, "the URL", faultKeyInURL},
		{"a key encoded once after a lone %", "/email?note=50%&k=" + strings.ReplaceAll(key, "_", "%5F"), []string{"Authorization", "Bearer " + key}, false, "the URL", faultKeyInURL},
		{"a key encoded twice after %zz in the path", "/a%25zz/" + strings.ReplaceAll(key, "_", "%255F"), nil, false, "the URL", faultKeyInURL},
		{"a header no provider reads", "/email", []string{"Authorization", "Bearer " + key, "X-Auth-Token", key}, false, "X-Auth-Token", noFault},
		{"a mistyped key in the Referer", "/email", []string{"Authorization", "Bearer " + key, "Referer", "https://crm.example/?k=" + typo}, false, "Referer", noFault},
		{"a header without one", "/email", []string{"Authorization", "Bearer " + key, "User-Agent", "crm_live_sync/1.0"}, false, "", noFault},
		// What the access log writes legibly: percent-encoded, or the
		// base64 of Basic credentials, which decodes at a glance.
		{"Cookie under log_credentials, percent-encoded", "/email", []string{"Authorization", "Bearer " + key, "Cookie", "k=" + strings.ReplaceAll(key, "_", "%5F")}, true, "Cookie", noFault},
		{"a Referer, percent-encoded", "/email", []string{"Authorization", "Bearer " + key, "Referer", "https://crm.example/?k=" + strings.ReplaceAll(typo, "_", "%5F")}, false, "Referer", noFault},
		{"Proxy-Authorization: Basic", "/email", []string{"Authorization", "Bearer " + key, "Proxy-Authorization", basic(key, "")}, false, "", noFault},
		{"Proxy-Authorization: Basic under log_credentials", "/email", []string{"Authorization", "Bearer " + key, "Proxy-Authorization", basic(key, "")}, true, "Proxy-Authorization", noFault},
		{"Basic credentials in a header no provider reads", "/email", []string{"Authorization", "Bearer " + key, "X-Authorization", basic("api", typo)}, false, "X-Authorization", noFault},
		{"Basic credentials without a key", "/email", []string{"Authorization", "Bearer " + key, "X-Authorization", basic("crm-sync", strings.Repeat("s3cret", 10))}, false, "", noFault},
	} {
		h.logCredentials = c.logCredentials
		r := httptest.NewRequest("POST", c.url, nil)
		for i := 0; i+1 < len(c.hdr); i += 2 {
			r.Header.Add(c.hdr[i], c.hdr[i+1])
		}
		got, f, inLog := h.takeKey(r)
		if inLog != c.inLog || f != c.fault {
			t.Errorf("%s: where the access log would write a key %q, fault %d; want %q, %d", c.what, inLog, f, c.inLog, c.fault)
		}
		if f == noFault && got != key || f != noFault && got != "" {
			t.Errorf("%s: key %q with fault %d", c.what, got, f)
		}
		for name, vs := range r.Header {
			if slices.ContainsFunc(vs, verifier.HasSecret) {
				t.Errorf("%s: %s still holds a key for the upstream", c.what, name)
			}
		}
	}
}

// BenchmarkTakeKeySDKHeaders is takeKey on what an official SDK sends: a
// key in Authorization and five other headers.
func BenchmarkTakeKeySDKHeaders(b *testing.B) {
	h, _ := testHandler(b, &Handler{MailAPI: "sendgrid"})
	key, _ := verifier.Generate("kg", "live")
	auth := []string{"Bearer " + key}
	other := []string{"x"}
	r := httptest.NewRequest("POST", "/v3/mail/send", nil)
	r.Header = http.Header{"User-Agent": other, "Content-Type": other, "Content-Length": other, "Accept": other, "Accept-Encoding": other}
	b.ReportAllocs()
	for b.Loop() {
		r.Header["Authorization"] = auth // taken away by each call
		if got, _, _ := h.takeKey(r); got != key {
			b.Fatal(got)
		}
	}
}

// FuzzSigV4AccessKeyID proves sigV4AccessKeyID reads the access key id of
// any Credential an AWS SDK writes (round trip), and reads one only from
// the first Credential parameter, five parts none empty, the last
// aws4_request.
func FuzzSigV4AccessKeyID(f *testing.F) {
	key, _ := verifier.Generate("kg", "live")
	f.Add(key, "20261129", "us-east-1", "ses", "SignedHeaders=host;x-amz-date, Signature=0123abcd", "")
	f.Add(" "+key+" ", "20261129", "eu-west-1", "email", "", "Credential=other/a/b/c/aws4_request")
	f.Add("AKIA", "d", "r", "s", "Signature=x", "credential=")
	f.Add(" ", "d", "r", "s", "", "")
	f.Add("", "d", "r", "s", "", "")
	f.Add("0", "0", "0", "0", "", "CredentiAl") // a parameter without a value is no Credential
	f.Add("\n", "0", "0", "0", "", "0")         // an id of white space is none
	grammar := regexp.MustCompile(`^([^/]*)/[^/]+/[^/]+/[^/]+/aws4_request$`)
	f.Fuzz(func(t *testing.T, id, date, region, service, after, before string) {
		params := "Credential=" + id + "/" + date + "/" + region + "/" + service + "/aws4_request"
		if before != "" {
			params = before + ", " + params
		}
		if after != "" {
			params += ", " + after
		}
		got, ok := sigV4AccessKeyID(params)
		// What the header says, read by another way: the first parameter
		// named Credential, its value in the grammar, the id trimmed.
		want, wantOK := "", false
		for p := range strings.SplitSeq(params, ",") {
			name, value, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(name, "Credential") {
				if m := grammar.FindStringSubmatch(value); m != nil {
					want = strings.TrimSpace(m[1])
					wantOK = want != ""
				}
				break
			}
		}
		if got != want || ok != wantOK {
			t.Fatalf("%q: %q, %v; want %q, %v", params, got, ok, want, wantOK)
		}
		// What an SDK writes (no commas, slashes or spaces in the parts)
		// is always read.
		if !strings.ContainsAny(id+date+region+service, ",/") && !strings.ContainsFunc(id, unicode.IsSpace) && id != "" && date != "" && region != "" && service != "" &&
			!strings.ContainsAny(before, ",=") && (!ok || got != id) {
			t.Fatalf("%q: %q, %v; want %q", params, got, ok, id)
		}
	})
}

// FuzzBasicAgreesWithNetHTTP proves keygate reads HTTP Basic credentials as
// net/http's Request.BasicAuth does: a key it takes is the (trimmed)
// username or password BasicAuth reads, and a well-formed key there is
// taken.
func FuzzBasicAgreesWithNetHTTP(f *testing.F) {
	key, _ := verifier.Generate("kg", "live")
	f.Add(basic("api", key))
	f.Add(basic(key, "x"))
	f.Add(basic(key, key))
	f.Add(basic(" "+key+"\n", ""))
	f.Add(basic("a:"+key, "b"))
	f.Add("basic " + base64.StdEncoding.EncodeToString([]byte("api:"+key)))
	f.Add("Basic " + base64.RawStdEncoding.EncodeToString([]byte("api:"+key)))
	f.Add("Basic ====")
	f.Add("Basic " + strings.Repeat("QUFB", 300))
	f.Fuzz(func(t *testing.T, auth string) {
		p := presented{prefix: "kg", sigV4: true}
		p.parseAuthorization(auth)
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", auth)
		user, pass, ok := r.BasicAuth()
		user, pass = strings.TrimSpace(user), strings.TrimSpace(pass)
		scheme, _, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "Basic") {
			return
		}
		got, fault := p.result()
		if got != "" && !strings.Contains(decodeBasic(auth), got) {
			t.Fatalf("%q: took %q, which the credentials do not hold", auth, got)
		}
		if ok && len(strings.TrimSpace(auth[len("Basic "):])) <= maxBasic {
			switch u, w := p.wellFormed(user), p.wellFormed(pass); {
			case u && w && user != pass:
				if fault != faultTwoKeys {
					t.Fatalf("%q: took %q (fault %d); net/http reads two keys", auth, got, fault)
				}
			case u && got != user, w && !u && got != pass:
				t.Fatalf("%q: took %q (fault %d); net/http reads %q, %q", auth, got, fault, user, pass)
			case !u && !w && (got != "" || fault != faultBasicNoKey):
				t.Fatalf("%q: took %q (fault %d); net/http reads no key in %q, %q", auth, got, fault, user, pass)
			}
		}
		if got == "" && fault == noFault {
			t.Fatalf("%q: no key and no fault", auth)
		}
	})
}

// TestForwardedByPeerReadsTheHeadersInCaddysOrder: the client IP headers
// are read in the order client_ip_headers lists them, as Caddy reads them,
// and the first that holds an address decides, by its right-most one. A
// header listed later (one the client may have set itself) decides only
// when the earlier ones hold none.
func TestForwardedByPeerReadsTheHeadersInCaddysOrder(t *testing.T) {
	names := []string{"X-Forwarded-For", "X-Real-IP"}
	for _, c := range []struct {
		hdr  http.Header
		want string
	}{
		{http.Header{"X-Forwarded-For": {"10.0.0.1, 198.51.100.7"}, "X-Real-Ip": {"10.0.0.2"}}, "198.51.100.7"},
		{http.Header{"X-Forwarded-For": {"10.0.0.1", "198.51.100.7:4711"}}, "198.51.100.7"},
		{http.Header{"X-Forwarded-For": {"[2001:db8::7]:55000"}}, "2001:db8::7"},
		{http.Header{"X-Forwarded-For": {"unknown"}, "X-Real-Ip": {"203.0.113.9"}}, "203.0.113.9"},
		{http.Header{"X-Forwarded-For": {"198.51.100.7, junk"}}, "198.51.100.7"},
		// A proxy that writes an IPv6 address in brackets without a
		// port: its entry, not the one the client wrote before it.
		{http.Header{"X-Forwarded-For": {"10.0.0.1, [2001:db8::7]"}}, "2001:db8::7"},
		{http.Header{"X-Forwarded-For": {"10.0.0.1, [2001:db8::7%eth0]"}}, "2001:db8::7"},
	} {
		if got, ok := forwardedByPeer(c.hdr, names); !ok || got != c.want {
			t.Errorf("%v: %q %v, want %q", c.hdr, got, ok, c.want)
		}
	}
	if got, ok := forwardedByPeer(http.Header{}, names); ok {
		t.Errorf("no header: %q, want none", got)
	}
}

// TestStrictByPeerReadsWhatCaddySkips: under trusted_proxies_strict,
// Caddy's answer stands unless, walking right to left to it, Caddy skipped
// an entry it could not read and keygate can (an IPv6 address with a port
// after ", ", or in brackets without one): the proxy that wrote it saw that
// client, and Caddy went on to the entries the client wrote itself.
func TestStrictByPeerReadsWhatCaddySkips(t *testing.T) {
	names := []string{"X-Forwarded-For"}
	for _, c := range []struct {
		xff, caddy, want string
	}{
		{"10.0.0.1:443, [2001:db8::7]:55000", "10.0.0.1", "2001:db8::7"},
		{"10.0.0.1, [2001:db8::7]", "10.0.0.1", "2001:db8::7"},
		// Entries Caddy read before its answer were trusted proxies'.
		{"198.51.100.7, 10.0.0.2", "198.51.100.7", "198.51.100.7"},
		{"10.0.0.1, 198.51.100.7, 10.0.0.2, junk", "198.51.100.7", "198.51.100.7"},
		{"[2001:db8::7]:55000", "2001:db8::7", "2001:db8::7"},
		{"", "192.0.2.1", "192.0.2.1"},
	} {
		hdr := http.Header{}
		if c.xff != "" {
			hdr.Set("X-Forwarded-For", c.xff)
		}
		if got := strictByPeer(hdr, names, c.caddy); got != c.want {
			t.Errorf("%q, Caddy's answer %s: %s, want %s", c.xff, c.caddy, got, c.want)
		}
	}
}

// FuzzClientIPHeaders proves the client IP headers keygate reads behind a
// trusted proxy never panic it and never give a value that is no address
// (allow_ip would refuse the key, failed_auth_limit count a string the
// client chose): forwardedByPeer answers an address without a zone, or
// none only when no entry of any header is one; strictByPeer answers
// Caddy's address or one it read.
func FuzzClientIPHeaders(f *testing.F) {
	for _, c := range [][3]string{
		{"10.0.0.1, 198.51.100.7", "", "10.0.0.2"},
		{"10.0.0.1", "198.51.100.7:4711", ""},
		{"[2001:db8::7]:55000", "", ""},
		{"unknown", "", "203.0.113.9"},
		{"198.51.100.7, junk", "", ""},
		{"10.0.0.1, [2001:db8::7]", "", ""},
		{"10.0.0.1, [2001:db8::7%eth0]", "", ""},
		{"10.0.0.1:443, [2001:db8::7]:55000", "", ""},
		{"10.0.0.1, 198.51.100.7, 10.0.0.2, junk", "", ""},
		{"::ffff:10.0.0.1, fe80::1%25eth0, [::1]:", ", ,", "[]"},
	} {
		f.Add(c[0], c[1], c[2])
	}
	names := []string{"X-Forwarded-For", "X-Real-IP"}
	f.Fuzz(func(t *testing.T, xff1, xff2, realIP string) {
		hdr := http.Header{}
		for _, v := range []string{xff1, xff2} {
			if v != "" {
				hdr.Add("X-Forwarded-For", v)
			}
		}
		if realIP != "" {
			hdr.Set("X-Real-IP", realIP)
		}
		some := false
		for _, v := range []string{xff1, xff2, realIP} {
			for part := range strings.SplitSeq(v, ",") {
				if _, ok := forwardedAddr(part); ok {
					some = true
				}
			}
		}
		got, ok := forwardedByPeer(hdr, names)
		if ok != some {
			t.Fatalf("%v: %q %v, an entry is an address: %v", hdr, got, ok, some)
		}
		if ok {
			addr, err := netip.ParseAddr(got)
			if err != nil || addr.Zone() != "" || addr.String() != got {
				t.Fatalf("%v: %q is no plain address (%v)", hdr, got, err)
			}
			caddyIP := got
			if s := strictByPeer(hdr, names, caddyIP); s != caddyIP {
				if _, err := netip.ParseAddr(s); err != nil {
					t.Fatalf("%v: strict %q is no address", hdr, s)
				}
			}
		}
	})
}
