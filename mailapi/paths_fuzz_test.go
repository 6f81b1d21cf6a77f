package mailapi

import (
	"encoding/json"
	"net/url"
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

// readPathSeeds are paths ReadPaths reads otherwise, or not at all.
var readPathSeeds = []string{
	"/", "", "*", "/v3/templates", "/v3/templates/", "/v3;a/templates;b", "/v3/templates. ", `/v3\templates\`,
	"/x/..;y/v3/templates", "/v3/templates?x#y\x00z", "/v3/templates\n", "/v3/templates\n\n", "/;x",
	"//gateway.example/v3/templates", "//v3/templates", "/\\h/v3/templates;x/", "///h", "//", "/./x/../y",
	"/a/.../b", "/a/. /b", "/a/.. ", "/a.", "/..", "/.", "/x/./", "/a\tb/c\t", "/a\n/b", "/email/withTemplate/",
	"/v3/mail/send;x", "/v3/*/messages", "/%2F", "/é/\xff/", "/a//b//",
}

// FuzzReadPaths checks what ReadPaths says a lenient server reads a path
// as: it never panics; each reading is a clean rooted path (what a path
// matcher compares), with no ";", backslash, '?', '#' or NUL left in it; a
// path it gives no reading is one a path matcher reads as readPath does
// (so the path as written is its reading), and that costs no allocation;
// a path with readings costs a bounded number of them, however many
// segments it has; and a path that is itself a reading (a clean path with
// nothing to drop) has none but itself.
func FuzzReadPaths(f *testing.F) {
	for _, p := range readPathSeeds {
		f.Add(p)
	}
	sendgrid, _ := Lookup("sendgrid")
	f.Fuzz(func(t *testing.T, p string) {
		read, afterHost := ReadPaths(p)
		for _, r := range []string{read, afterHost} {
			if r == "" {
				continue
			}
			if r[0] != '/' || path.Clean(r) != r {
				t.Fatalf("ReadPaths(%q) reads %q, which is no clean rooted path", p, r)
			}
			if strings.ContainsAny(r, ";\\?#\x00") {
				t.Fatalf("ReadPaths(%q) reads %q, which still holds what it drops", p, r)
			}
			// A reading is read as itself: nothing is left to drop but a
			// line feed that ended it before its last.
			if again, _ := ReadPaths(r); again != "" && again != r && !strings.HasSuffix(r, "\n") {
				t.Fatalf("ReadPaths(%q) reads %q, which reads as %q", p, r, again)
			}
		}
		if afterHost != "" && !(len(p) >= 2 && isSeparator(p[0]) && isSeparator(p[1])) {
			t.Fatalf("ReadPaths(%q) reads %q after a host, though the path does not start with two separators", p, afterHost)
		}
		if read == "" && afterHost == "" {
			// plainlyRead's promise: the path matcher's cleaning (which
			// merges slashes and resolves dot segments) reads it as
			// readPath would.
			if strings.HasPrefix(p, "/") {
				if want := readPath(p); path.Clean(p) != want {
					t.Fatalf("ReadPaths(%q) gives no reading, but it reads as %q, not %q", p, want, path.Clean(p))
				}
			}
			if n := testing.AllocsPerRun(1, func() { ReadPaths(p) }); n != 0 {
				t.Fatalf("ReadPaths(%q) allocates %v times for a path it gives no reading", p, n)
			}
			if n := testing.AllocsPerRun(1, func() { sendgrid.ReadPaths(p) }); n != 0 {
				t.Fatalf("sendgrid ReadPaths(%q) allocates %v times for a path it gives no reading", p, n)
			}
			return
		}
		// Each reading is one string, built in one buffer.
		if n := testing.AllocsPerRun(1, func() { ReadPaths(p) }); n > 4 {
			t.Fatalf("ReadPaths(%q) allocates %v times, want at most 2 a reading", p, n)
		}
	})
}

// FuzzAppendJSONString checks that AppendJSONString writes any string as
// a JSON string: after what b held, valid JSON that encoding/json reads
// back as s with each byte that is no UTF-8 as U+FFFD, with no control
// character, U+2028 or U+2029 written raw (JavaScript's eval and JSONP
// read those as line ends), and without allocating into a buffer that has
// room.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "a", "/x\x00", "/x\x01\x0b\x1f\x7f", "/x\xff\xfe", "a \"quoted\" \\ path\n\r\t",
		"\u2028\u2029 café 🙂", "\xed\xa0\x80", "\xef\xbf\xbd", "\xf4\x90\x80\x80", "</script>&"} {
		f.Add([]byte("{\"m\":"), s)
	}
	f.Fuzz(func(t *testing.T, prefix []byte, s string) {
		out := AppendJSONString(append([]byte(nil), prefix...), s)
		if string(out[:len(prefix)]) != string(prefix) {
			t.Fatalf("AppendJSONString changed what the buffer held: %q", out)
		}
		q := out[len(prefix):]
		if !json.Valid(q) {
			t.Fatalf("AppendJSONString(%q) = %s, no JSON", s, q)
		}
		var got string
		if err := json.Unmarshal(q, &got); err != nil {
			t.Fatal(err)
		}
		if want := validUTF8(s); got != want {
			t.Fatalf("AppendJSONString(%q) = %s, read back as %q, want %q", s, q, got, want)
		}
		if !utf8.Valid(q) || strings.ContainsFunc(string(q), func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' }) {
			t.Fatalf("AppendJSONString(%q) = %q writes a control character or a line separator as it is", s, q)
		}
		buf := make([]byte, 0, 6*len(s)+2)
		if n := testing.AllocsPerRun(1, func() { AppendJSONString(buf[:0], s) }); n != 0 {
			t.Fatalf("AppendJSONString(%q) allocates %v times into a buffer with room", s, n)
		}
	})
}

// validUTF8 is s with each byte that is no UTF-8 as U+FFFD, as
// encoding/json writes it.
func validUTF8(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += size
	}
	return b.String()
}

// FuzzHasAction checks that a query string from which a server reading
// parameters between '&' (Go's net/url, most frameworks) or '&' and ';'
// takes a parameter named Action, in any case and spacing, is one
// hasAction finds: a request with one at a path other than "/" is read as
// SES's v1 API, not passed uninspected. Nor does it panic.
func FuzzHasAction(f *testing.F) {
	for _, q := range []string{"", "Action=SendEmail", "x=1&action=SendEmail", "x=1;%41ction=SendEmail", "Act%69on=x",
		"+Action+=x", "Action", "a=b&&;", "%zz=1&Action=1", "PageSize=1"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		got := hasAction(q)
		for _, seps := range []string{"&", "&;"} {
			for pair := range strings.FieldsFuncSeq(q, func(r rune) bool { return strings.ContainsRune(seps, r) }) {
				name, _, _ := strings.Cut(pair, "=")
				if n, err := url.QueryUnescape(name); err == nil {
					name = n
				}
				if strings.EqualFold(strings.TrimSpace(name), "Action") && !got {
					t.Fatalf("hasAction(%q) = false, but a server splitting at %q reads the parameter %q", q, seps, pair)
				}
			}
		}
		vals, _ := url.ParseQuery(q)
		for name := range vals {
			if strings.EqualFold(name, "Action") && !got {
				t.Fatalf("hasAction(%q) = false, but net/url reads %q", q, name)
			}
		}
	})
}

// FuzzEndpointPath checks EndpointPath on every dialect: it never panics;
// a path it reads otherwise is one of the dialect's send endpoints, and so
// is its reading, the same endpoint with every method, read as itself; a
// path it leaves as it is costs no allocation. (Its first crasher, a last
// segment of a line feed and a space, is in testdata/fuzz.)
func FuzzEndpointPath(f *testing.F) {
	for _, p := range readPathSeeds {
		f.Add(uint8(0), p)
	}
	for i, d := range dialects {
		for _, e := range d.endpoints {
			f.Add(uint8(i), strings.ReplaceAll(e.path, "*", "mg.example.com")+"/;x")
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, p string) {
		d := dialects[int(which)%len(dialects)]
		got := d.EndpointPath(p)
		if got == p {
			if n := testing.AllocsPerRun(1, func() { d.EndpointPath(p) }); n != 0 {
				t.Fatalf("%s EndpointPath(%q) allocates %v times for a path it leaves", d.Name, p, n)
			}
			return
		}
		e, _ := d.endpoint(p)
		if e == nil {
			t.Fatalf("%s EndpointPath(%q) = %q, though it is no send endpoint", d.Name, p, got)
		}
		if strings.HasSuffix(got, "\n") {
			// A segment of a line feed before what a server drops
			// ("/emails/\n "): read again, the line feed ends the path,
			// as a second server may read it. Nothing reads the reading
			// again (ServeHTTP inspects and scopes the path as sent).
			return
		}
		if again, _ := d.endpoint(got); again != e {
			t.Fatalf("%s EndpointPath(%q) = %q: endpoint %s, then %v", d.Name, p, got, e.path, again)
		}
		for _, m := range []string{"POST", "PUT", "GET"} {
			if d.IsSend(m, p) != d.IsSend(m, got) {
				t.Fatalf("%s EndpointPath(%q) = %q, which IsSend(%s) reads otherwise", d.Name, p, got, m)
			}
		}
		if twice := d.EndpointPath(got); twice != got {
			t.Fatalf("%s EndpointPath(%q) = %q, which reads as %q", d.Name, p, got, twice)
		}
	})
}
