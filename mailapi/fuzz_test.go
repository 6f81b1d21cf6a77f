package mailapi

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// target is one send endpoint with a concrete path and Content-Type.
type target struct {
	d           *Dialect
	path, ctype string
	domains     []string // the sending domains the path names
}

// fuzzTargets lists every send endpoint of every dialect; Mailgun's once
// per form encoding.
func fuzzTargets() []target {
	var ts []target
	for _, d := range dialects {
		for _, e := range d.endpoints {
			if e.opaque != "" {
				continue // its body is not read
			}
			p := strings.ReplaceAll(e.path, "*", "mg.example.com")
			var domains []string
			if p != e.path {
				domains = []string{"mg.example.com"}
			}
			if !e.form {
				ts = append(ts, target{d, p, jsonType, domains})
				continue
			}
			ts = append(ts, target{d, p, formType, domains}, target{d, p, "multipart/form-data; boundary=" + fuzzBoundary, domains})
		}
	}
	return ts
}

const fuzzBoundary = "b0undary"

// FuzzInspect feeds arbitrary bodies to every send endpoint, chosen by the
// first input. Inspect must never panic, never report a negative count,
// never accept a JSON body encoding/json rejects, never change the body, and
// always report the sending domain the path names, whatever the body says;
// and never accept a JSON body that is not an object or an array, nor a
// multipart body without its close delimiter.
func FuzzInspect(f *testing.F) {
	targets := fuzzTargets()
	files, _ := filepath.Glob(filepath.Join("testdata", "*.*"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for i, tg := range targets {
			if strings.HasSuffix(name, ".form") == (tg.ctype == formType) {
				f.Add(uint8(i), b)
			}
		}
	}
	f.Add(uint8(len(targets)-1), []byte("--"+fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\na@b.org\r\n--"+
		fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"message\"; filename=\"m\"\r\n\r\nFrom: x@y.org\r\n\r\nhi\r\n--"+fuzzBoundary+"--\r\n"))

	// Fields after a ';', which parsers splitting a form at ';' read, on
	// each url-encoded endpoint.
	for i, tg := range targets {
		if tg.ctype == formType {
			f.Add(uint8(i), []byte("from=a%40b.org&to=x%40y.org&text=hi;bcc=c%40d.org&html=<p style=\"a:b;\">"))
			f.Add(uint8(i), []byte("Action=SendEmail&Source=a%40b.org;h%3AFrom=c%40d.org&to=x%40y.org;%zz"))
		}
	}

	// Custom headers, as a map and as name/value pairs, on each JSON
	// endpoint.
	for i, tg := range targets {
		if tg.ctype == jsonType {
			f.Add(uint8(i), []byte(`{"from":"a@b.org","headers":{"Sender":"c@d.org","From":"e@f.org"},"to":"x@y.org"}`))
			f.Add(uint8(i), []byte(`{"From":"a@b.org","To":"x@y.org","Headers":[{"Name":"Sender","Value":"c@d.org"},{"Value":"e\u0040f.org","Name":"from"}]}`))
			// Overlong forms, the characters they spell to Jackson: a
			// From in a name, a line feed in a value.
			f.Add(uint8(i), []byte("{\"from\":\"a@b.org\",\"to\":\"x@y.org\",\"Fr\xc1\xafm\":\"c@d.org\",\"headers\":{\"X\":\"v\xc0\x8aFrom: e@f.org\"}}"))
		}
	}

	// A multipart body whose last part's headers are cut off, on each form
	// endpoint.
	for i, tg := range targets {
		if strings.HasPrefix(tg.ctype, "multipart/") {
			f.Add(uint8(i), []byte("--"+fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\na@b.org\r\n--"+
				fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"bc"))
			// A name mime reads from RFC 2231's form (x), others from the
			// plain one (h:From); and one with a quoted pair.
			f.Add(uint8(i), []byte("--"+fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\na@b.org\r\n--"+
				fuzzBoundary+"\r\nContent-Disposition: form-data; name*=UTF-8''x; name=\"h:From\"\r\n\r\nc@d.org\r\n--"+fuzzBoundary+"--\r\n"))
			f.Add(uint8(i), []byte("--"+fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\na@b.org\r\n--"+
				fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"x\\\"; name=\\\"h:From\"\r\n\r\nc@d.org\r\n--"+fuzzBoundary+"--\r\n"))
			// A boundary after a bare line feed in a CRLF body: content to
			// mime/multipart, a part's end to PHP, Python's cgi, Werkzeug.
			f.Add(uint8(i), []byte("--"+fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\na@b.org\r\n--"+
				fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nhi\n--"+fuzzBoundary+
				"\nContent-Disposition: form-data; name=\"h:From\"\n\nc@d.org\r\n--"+fuzzBoundary+"--\r\n"))
		}
	}

	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		tg := targets[int(which)%len(targets)]
		orig := string(body)
		m, err := tg.d.Inspect(tg.path, tg.ctype, body)
		if string(body) != orig {
			t.Fatal("Inspect modified the body")
		}
		if err != nil {
			return
		}
		if m.Recipients < 0 {
			t.Fatalf("%d recipients", m.Recipients)
		}
		if tg.ctype == jsonType {
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatal("accepted a body that is not valid JSON")
			}
			switch v.(type) {
			case map[string]any, []any:
			default:
				t.Fatalf("accepted a body that is neither an object nor an array: %T", v)
			}
		}
		if strings.HasPrefix(tg.ctype, "multipart/") && !bytes.HasPrefix(body, []byte("--"+fuzzBoundary+"--")) &&
			!bytes.Contains(body, []byte("\n--"+fuzzBoundary+"--")) {
			t.Fatal("accepted a multipart body without its close delimiter")
		}
		for _, s := range m.Senders {
			if s != strings.ToLower(s) || !strings.Contains(s, "@") {
				t.Fatalf("sender %q is not a lower-case address", s)
			}
		}
		if !slices.Equal(m.SendingDomains, tg.domains) {
			t.Fatalf("sending domains %q, want %q", m.SendingDomains, tg.domains)
		}
	})
}

// extraRecipient is the address FuzzAnotherRecipientIsCounted adds.
const extraRecipient = "fuzz-extra@recipients.example"

// FuzzAnotherRecipientIsCounted proves that a send is never counted with
// fewer recipients than it names: a Bcc field added to a form body that
// Inspect accepts (url-encoded at its end, multipart as a part before its
// close delimiter) is refused or counts one recipient more. Quotas and
// max recipients rest on that count.
func FuzzAnotherRecipientIsCounted(f *testing.F) {
	var targets []target
	for _, tg := range fuzzTargets() {
		if tg.d.Name == "mailgun" {
			targets = append(targets, tg)
		}
	}
	if len(targets) == 0 {
		f.Fatal("no Mailgun form endpoints")
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*.form"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for i := range targets {
			f.Add(uint8(i), b)
		}
	}
	for i, tg := range targets {
		if tg.ctype == formType {
			f.Add(uint8(i), []byte("from=a%40b.org&to=x%40y.org%2C+z%40y.org&cc=c%40d.org&text=hi"))
			f.Add(uint8(i), []byte("from=a%40b.org&to=x%40y.org&bcc="))
			continue
		}
		f.Add(uint8(i), []byte("--"+fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\na@b.org\r\n--"+
			fuzzBoundary+"\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\nx@y.org, \"Z\" <z@y.org>\r\n--"+fuzzBoundary+"--\r\n"))
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		tg := targets[int(which)%len(targets)]
		if bytes.Contains(body, []byte("fuzz-extra")) {
			return
		}
		var more []byte
		if tg.ctype == formType {
			more = append(append([]byte(nil), body...), "&bcc="+url.QueryEscape(extraRecipient)...)
		} else {
			end := bytes.Index(body, []byte("\r\n--"+fuzzBoundary+"--"))
			if end < 0 {
				return
			}
			part := "\r\n--" + fuzzBoundary + "\r\nContent-Disposition: form-data; name=\"bcc\"\r\n\r\n" + extraRecipient
			more = append(append(append([]byte(nil), body[:end]...), part...), body[end:]...)
		}
		m, err := tg.d.Inspect(tg.path, tg.ctype, body)
		if err != nil {
			return
		}
		m2, err := tg.d.Inspect(tg.path, tg.ctype, more)
		if err != nil {
			return
		}
		if m2.Recipients < m.Recipients+1 {
			t.Fatalf("%s %s: %d recipients, %d with a Bcc more:\n%q", tg.path, tg.ctype, m.Recipients, m2.Recipients, more)
		}
	})
}
