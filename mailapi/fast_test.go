package mailapi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/caddy-keygate/internal/benchbody"
)

// FuzzAddressFastPathAgreesWithNetMail holds the allocation-free reading of
// plain addresses to net/mail (as addressParser configures it, taking
// encoded words in any charset): whatever the fast path accepts, net/mail
// accepts too, with the same addr-specs in the same order.
func FuzzAddressFastPathAgreesWithNetMail(f *testing.F) {
	for _, s := range []string{
		"a@example.org", " a@example.org\t", "Shop <orders@shop.example.com>", "<a@b>", "Shop<a@b>",
		"a@b, c@d", "a@b,,c@d", ",", "a@b,", "Recipient 1 <r1@example.org>, r2@example.org",
		"a..b@c", ".a@b", "a.@b", "a@b.", "a@.b", "a@b..c", "a@", "@b", "a", "a b@c", "a@ b", "a @b",
		`"quoted"@example.org`, `"Shop, Inc" <a@b>`, "=?utf-8?q?Shop?= <a@b>", "Shop? <a@b>", "x= <a@b>",
		"a@b (comment)", "a@b (x\r\nFrom: c@d)", "a@b (\x00)", "a@b (\x7f)", "a@b (\t)", "group: a@b, c@d;", "undisclosed-recipients:;", "a@[127.0.0.1]", "ü@example.org",
		"Müller <m@example.org>", "a@b <c@d>", ". <a@b>", "a.b <c@d>", "a@b>", "<a@b", "<<a@b>>", "Shop <a@b> x",
		"a+tag@example.org", "o'brien@example.org", "{a}|~@example.org", "Shop\t<a@b>", "\"\" <a@b>",
		"Bäckerei Müller <a@b>", "日本語 <a@b>", "M\xfcller <a@b>", "\xed\xa0\x80 <a@b>", "\ufffd <a@b>",
		"\u00a0 <a@b>", "Müller <ü@b>", "Zoë, Inc <a@b>", "Ünal <a@b>, Çelik <c@d>", "é= <a@b>", "é? <a@b>",
		`"Doe, John" <j@example.org>`, `"Doe, John" <j@example.org>, "Roe, Jane"<r@example.org>`, `"a\"b" <c@d>`,
		`"a\\" <c@d>`, `"" <c@d>`, `" " <c@d>`, `"Müller, Hans" <h@d>`, "\"a\x01\" <c@d>", "\"a\tb\" <c@d>",
		`"a" x <c@d>`, `"a" "b" <c@d>`, `"a@b" <c@d>`, `"a"@b.org`, `"a" <c@d`, `"a <c@d>`, `"a", <c@d>`,
		`"a\" <c@d>`, `"a\", <c@d>`, `"=?utf-8?q?x?=" <c@d>`, "=?utf-8?b?TcO8bGxlcg==?= <m@d>", "=?UTF-8?Q?M=C3=BCller?= <m@d>",
		"=?iso-8859-1?q?M=FCller?= <m@d>", "=?us-ascii?q?a?= <m@d>", "=?iso-2022-jp?b?GyRC?= <m@d>", "=?x?q?a?= <m@d>",
		"A =?x?q?a?= <m@d>", "A =?x?q?a?= B <m@d>", "=?utf-8?q?a?= =?x?q?b?= <m@d>", "=??q?a?= <m@d>", "=?utf-8?q?=ZZ?= <m@d>",
		"=?x?q?=ZZ?= <m@d>", "=?utf-8?q?a?b?= <m@d>", "=?= <m@d>", "a=?x?q?b?= <m@d>", "=?utf-8?z?a?= <m@d>", "? <m@d>", "= <m@d>",
		"=?utf-8?b?TcO8bGxlcg==?= <m@d>, =?utf-8?b?WmHDqw==?= <z@d>", "=?utf-8?b??= <m@d>", "=?x?b??= <m@d>", "a =?utf-8?q??= <m@d>", "\"\xff\" <c@d>", `"a,b" <c@d>,e@f`, `"<x@y>" <c@d>`, `"a" ,<c@d>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if addr, ok := plainMailbox(s); ok {
			a, err := addressParser.Parse(s)
			if err != nil {
				t.Fatalf("plainMailbox(%q) = %q, but net/mail: %v", s, addr, err)
			}
			if a.Address != addr {
				t.Fatalf("plainMailbox(%q) = %q, net/mail %q", s, addr, a.Address)
			}
		}
		var fast []string
		if n, ok := plainList(s, func(a string) { fast = append(fast, a) }); ok {
			list, err := addressParser.ParseList(s)
			if err != nil {
				t.Fatalf("plainList(%q) read %d addresses, but net/mail: %v", s, n, err)
			}
			var want []string
			for _, a := range list {
				want = append(want, a.Address)
			}
			if n != len(fast) || !slices.Equal(fast, want) {
				t.Fatalf("plainList(%q) = %d %q, net/mail %q", s, n, fast, want)
			}
		}
		// The wrappers always give net/mail's answer, but that they refuse
		// control characters (in a comment, where net/mail takes them).
		addr, err := parseAddress(s)
		if err == errControl {
			if controlChars(s) == nil {
				t.Fatalf("parseAddress(%q): %v", s, err)
			}
			return
		}
		if a, merr := addressParser.Parse(s); (err == nil) != (merr == nil) || err == nil && a.Address != addr {
			t.Fatalf("parseAddress(%q) = %q, %v; net/mail %v, %v", s, addr, err, a, merr)
		}
		n, err := parseAddressList(s, nil)
		if list, merr := addressParser.ParseList(s); (err == nil) != (merr == nil) || err == nil && n != len(list) {
			t.Fatalf("parseAddressList(%q) = %d, %v; net/mail %d, %v", s, n, err, len(list), merr)
		}
	})
}

func TestPlainAddressesDoNotAllocate(t *testing.T) {
	for _, s := range []string{"a@example.org", "Shop <orders@shop.example.com>", "a@b.org, Recipient 2 <c@d.org>",
		"Bäckerei Müller <a@b.org>, 山田 <c@d.org>", `"Doe, John" <j@b.org>, "Müller, Hans" <h@d.org>`,
		"=?utf-8?b?TcO8bGxlcg==?= <m@d.org>"} {
		if n := testing.AllocsPerRun(100, func() {
			if _, err := parseAddressList(s, nil); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("parseAddressList(%q): %.0f allocations, want 0", s, n)
		}
	}
}

// FuzzPlainMultipartAgrees holds the in-place reading of plain multipart
// forms to mime/multipart's: for any body, Inspect answers the same with and
// without it.
func FuzzPlainMultipartAgrees(f *testing.F) {
	for _, name := range []string{"mailgun-2k", "mailgun-20k"} {
		b := benchbody.Get(name)
		f.Add(b.Data)
	}
	part := func(headers, value string) string {
		return "--" + fuzzBoundary + "\r\n" + headers + "\r\n\r\n" + value + "\r\n"
	}
	end := "--" + fuzzBoundary + "--\r\n"
	cd := func(name string) string { return `Content-Disposition: form-data; name="` + name + `"` }
	for _, body := range []string{
		part(cd("from"), "a@shop.example.com") + part(cd("to"), "b@example.org, C <c@example.org>") + end,
		part(cd("from"), "a@shop.example.com") + part(cd("to"), "b@example.org") + "--" + fuzzBoundary + "--",
		part(cd("from"), "a@shop.example.com") + part(cd("to"), "b@example.org") + "--" + fuzzBoundary + "--\r\nepilogue",
		part(cd("from")+"\r\nContent-Type: text/plain", "a@shop.example.com") + end,
		part(cd("from"), "a@shop.example.com") + part(cd("attachment")+`; filename="x.pdf"`+"\r\nContent-Type: application/pdf", "\x00\x01--"+fuzzBoundary+"x") + end,
		part(cd("from"), "a@shop.example.com\r\n--"+fuzzBoundary+"X") + end,
		part(cd("from")+"\r\n"+cd("from"), "a@shop.example.com") + end,
		part("content-disposition: form-data; name=\"from\"", "a@shop.example.com") + end,
		part(cd("from")+"\r\nContent-Transfer-Encoding: base64", "YUBiLmM=") + end,
		part(cd("message"), "From: a@shop.example.com\r\nTo: b@example.org\r\n\r\nhi") + end,
		part(cd("from"), "a@shop.example.com") + part(cd("to"), "b@example.org"),
		"preamble\r\n" + part(cd("from"), "a@shop.example.com") + end,
		part(cd("from"), "not an address") + end,
		// Many parts, and a field's error after many.
		part(cd("from"), "a@shop.example.com") + strings.Repeat(part(cd("to"), "b@example.org"), 74) + end,
		part(cd("from"), "a@shop.example.com") + strings.Repeat(part(cd("to"), "b@example.org"), 74) + part(cd("to"), "not an address") + end,
		// Fields applied, then a part that is not plain: the inspection
		// goes back to how it was before mime/multipart reads the body.
		part(cd("from"), "a@shop.example.com") + part(cd("to"), "b@example.org") + part(cd("to")+"\r\nX-Other: 1", "c@example.org") + end,
		part(cd("from"), "a@shop.example.com") + part(cd("to"), "b@example.org") + part(cd("message"), "To: c@example.org\r\n\r\nhi") + "--" + fuzzBoundary + "--\r\n\r\n",
		// A field's error, then a part that is not plain.
		part(cd("from"), "not an address") + part("content-disposition: form-data; name=\"to\"", "b@example.org") + end,
		part(cd("to"), "not an address") + part(cd("from"), "a@shop.example.com") + "--" + fuzzBoundary + "--x",
	} {
		f.Add([]byte(body))
	}
	targets := []struct{ path, ctype string }{
		{"/v3/mg.example.com/messages", "multipart/form-data; boundary=" + fuzzBoundary},
		{"/v3/mg.example.com/messages.mime", "multipart/form-data; boundary=" + fuzzBoundary},
	}
	d, _ := Lookup("mailgun")
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, tg := range targets {
			ctype := tg.ctype
			if bytes.HasPrefix(body, []byte("--kgbench")) {
				ctype = benchbody.Get("mailgun-2k").ContentType
			}
			fast, ferr := d.Inspect(tg.path, ctype, body)
			slowMultipartOnly = true
			slow, serr := d.Inspect(tg.path, ctype, body)
			slowMultipartOnly = false
			if fmt.Sprint(ferr) != fmt.Sprint(serr) || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%s: plain reading %+v, %v; mime/multipart %+v, %v", tg.path, fast, ferr, slow, serr)
			}
		}
	})
}

func TestPlainMultipartReadsWhatSDKsSend(t *testing.T) {
	for _, name := range []string{"mailgun-2k", "mailgun-20k", "mailgun-200k"} {
		b := benchbody.Get(name)
		mt, boundary, ok := plainFormMediaType(b.ContentType)
		if !ok || mt != "multipart/form-data" {
			t.Errorf("%s: Content-Type %q not read as a plain one", name, b.ContentType)
		}
		if !plainParts(boundary, b.Data, nil) {
			t.Errorf("%s: not read as a plain form", name)
		}
	}
}

// TestNameOnlyHeaderReadsTheUsualHeader: the header most parts carry is
// read by nameOnlyHeader itself, not by plainPartHeaders after it.
func TestNameOnlyHeaderReadsTheUsualHeader(t *testing.T) {
	for _, c := range []struct {
		in         string
		name, rest string
		ok         bool
	}{
		{"Content-Disposition: form-data; name=\"to\"\r\n\r\nb@example.org", "to", "b@example.org", true},
		{"Content-Disposition: form-data; name=\"o:tag\"\r\n\r\n", "o:tag", "", true},
		{"Content-Disposition: form-data; name=\"to\"; filename=\"x\"\r\n\r\n", "", "", false},
		{"Content-Disposition: form-data; name=\"to\"\r\nContent-Type: text/plain\r\n\r\n", "", "", false},
		{"Content-Disposition: form-data; name=\"\"\r\n\r\n", "", "", false},
		{"Content-Disposition: form-data; name=\"to\"\r\n\r", "", "", false},
		{"Content-Disposition: form-data; name=", "", "", false},
		{"content-disposition: form-data; name=\"to\"\r\n\r\n", "", "", false},
	} {
		name, rest, ok := nameOnlyHeader([]byte(c.in))
		if string(name) != c.name || string(rest) != c.rest || ok != c.ok {
			t.Errorf("%q: %q, %q, %v; want %q, %q, %v", c.in, name, rest, ok, c.name, c.rest, c.ok)
		}
	}
}

func TestPlain8AgreesWithThePlainTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	special := []byte{'"', '\\', 0, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xff, 'a'}
	for range 200_000 {
		var b [8]byte
		for i := range b {
			if rng.IntN(4) == 0 {
				b[i] = special[rng.IntN(len(special))]
			} else {
				b[i] = byte(rng.Uint32())
			}
		}
		want := true
		for _, c := range b {
			want = want && plain[c]
		}
		if got := plain8(binary.LittleEndian.Uint64(b[:])); got != want {
			t.Fatalf("plain8(%q) = %v, want %v", b, got, want)
		}
	}
}

func TestSpecial8FlagsTheFirstSpecialByteLowest(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	special := []byte{'"', '\\', 0, 0x1f}
	for range 200_000 {
		var b [8]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
			if rng.IntN(5) == 0 {
				b[i] = special[rng.IntN(len(special))]
			}
		}
		first := 8
		for i, c := range b {
			if !plain[c] {
				first = i
				break
			}
		}
		m := special8(binary.LittleEndian.Uint64(b[:]))
		if got := bits.TrailingZeros64(m) >> 3; (m == 0) != (first == 8) || m != 0 && got != first {
			t.Fatalf("special8(%q): lowest flagged byte %d, first special byte %d", b, got, first)
		}
	}
}

// TestPlainAddrSpecAgreesWithTwoPasses holds the one-pass addr-spec check to
// the rule it implements, read the plain way: split at the first '@', both
// parts dot-atoms.
func TestPlainAddrSpecAgreesWithTwoPasses(t *testing.T) {
	dotAtom := func(s string) bool {
		if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
			return false
		}
		for i := 0; i < len(s); i++ {
			if s[i] != '.' && !atext[s[i]] {
				return false
			}
		}
		return true
	}
	twoPasses := func(s string) bool {
		at := strings.IndexByte(s, '@')
		return at >= 0 && dotAtom(s[:at]) && dotAtom(s[at+1:])
	}
	rng := rand.New(rand.NewPCG(19, 20))
	const alphabet = "ab.@Z9-_+ <>\"\\,\x80"
	for range 300_000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if s := string(b); plainAddrSpec(s) != twoPasses(s) {
			t.Fatalf("plainAddrSpec(%q) = %v, want %v", s, plainAddrSpec(s), twoPasses(s))
		}
	}
}

// FuzzFormMediaTypeAgreesWithNetHTTP proves a form Content-Type keygate
// accepts is read the same way by Go's net/http (as an upstream on Go
// reads it): a url-encoded body is parsed as a form, a multipart one with
// the same boundary.
func FuzzFormMediaTypeAgreesWithNetHTTP(f *testing.F) {
	for _, ct := range []string{"application/x-www-form-urlencoded", "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
		"multipart/form-data; boundary=abc", `multipart/form-data; boundary="a b"`, "multipart/form-data; boundary=a; boundary=b",
		"multipart/form-data; charset=utf-16; boundary=x", "multipart/form-data; boundary*=UTF-8''x%20y", "multipart/form-data",
		"application/x-www-form-urlencoded;", "application/json", "multipart/mixed; boundary=x", "text/plain; charset=us-ascii"} {
		f.Add(ct)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		mt, boundary, err := formMediaType(ct)
		if err != nil || mt == "multipart/form-data" && boundary == "" { // refused (multipart)
			return
		}
		r, _ := http.NewRequest("POST", "/", strings.NewReader("a=b"))
		r.Header.Set("Content-Type", ct)
		switch mt {
		case "application/x-www-form-urlencoded":
			if err := r.ParseForm(); err != nil || r.PostForm.Get("a") != "b" {
				t.Fatalf("%q: keygate reads a url-encoded form, net/http %v %v", ct, r.PostForm, err)
			}
		case "multipart/form-data":
			if _, err := r.MultipartReader(); err != nil {
				t.Fatalf("%q: keygate reads multipart with boundary %q, net/http: %v", ct, boundary, err)
			}
			_, p, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if p["boundary"] != boundary {
				t.Fatalf("%q: boundary %q, net/http's %q", ct, boundary, p["boundary"])
			}
		default:
			t.Fatalf("%q: accepted as %q", ct, mt)
		}
	})
}

// FuzzPlainFormMediaTypeAgrees holds the plain reading of a form's
// Content-Type to mime.ParseMediaType's: formMediaType answers as
// parsedFormMediaType does for any Content-Type.
func FuzzPlainFormMediaTypeAgrees(f *testing.F) {
	for _, ct := range []string{"application/x-www-form-urlencoded", "multipart/form-data; boundary=abc",
		"multipart/form-data;boundary=--------------------------123456789012345678901234", "multipart/form-data; boundary=",
		"multipart/form-data;  boundary=abc", "multipart/form-data; boundary=abc ", "multipart/form-data; boundary=abc;",
		`multipart/form-data; boundary="abc"`, "multipart/form-data; boundary=a b", "multipart/form-data; boundary=a\\b",
		"multipart/form-data; boundary=a/b", "multipart/form-data; boundary=a\x7f", "multipart/form-data; boundary=a\xc3\xa9",
		"Multipart/Form-Data; boundary=abc", "multipart/form-data; Boundary=abc", "multipart/form-data; boundary=abc; charset=utf-16",
		"multipart/form-data; boundary*=UTF-8''abc", "application/x-www-form-urlencoded; charset=utf-16",
		"application/x-www-form-urlencoded ", "multipart/form-data"} {
		f.Add(ct)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		mt, boundary, err := formMediaType(ct)
		wmt, wboundary, werr := parsedFormMediaType(ct)
		if mt != wmt || boundary != wboundary || fmt.Sprint(err) != fmt.Sprint(werr) {
			t.Fatalf("%q: read as %q, %q, %v; mime.ParseMediaType's reading %q, %q, %v", ct, mt, boundary, err, wmt, wboundary, werr)
		}
	})
}
