package mailapi

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// jsonCases are edge cases of the JSON grammar.
var jsonCases = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e+10`, `-12.0E-3`, `true`, `false`, `null`, " \t\r\n{ } \n",
	`{"a":[1,{"b":null}],"c":"\u00e9\ud83d\ude00\n\"\\\/"}`,
	`01`, `1.`, `.5`, `-`, `1e`, `+1`, `0x10`, `NaN`, `tru`, `nul`, `True`,
	`{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[,1]`, `{,}`, `{1:2}`, `{'a':1}`, `[1 2]`, `{"a":1 "b":2}`,
	`"unterminated`, "\"tab\tinside\"", `"\x"`, `"\u12"`, `"\u12g4"`, `"\`, `[`, `{`, `{"a":[}`,
	`{} {}`, `[] x`, "\x00", "",
	// Bytes that are not UTF-8: in a value as encoding/json reads them, in
	// a member name refused (an overlong "o": "From" to Jackson).
	"{\"a\":\"\xc1\xaf\xff\"}", "{\"Fr\xc1\xafm\":1}", "{\"\\u0046r\xc1\xafm\":1}",
}

// readValue reads in as one JSON value with nothing after it.
func readValue(in string) error {
	r := reader{data: []byte(in)}
	err := r.skip()
	if r.ws(); err == nil && r.pos < len(r.data) {
		err = r.syntaxError("trailing data")
	}
	return err
}

func TestReaderAcceptsWhatEncodingJSONAccepts(t *testing.T) {
	for _, in := range jsonCases {
		t.Run(in, func(t *testing.T) {
			err := readValue(in)
			if want := json.Valid([]byte(in)); (err == nil) != want && !refusedName(in, err) {
				t.Errorf("reader error %v; encoding/json valid %v", err, want)
			}
		})
	}
}

// refusedName reports whether err is the reader refusing a member name that
// is not UTF-8, which encoding/json reads as U+FFFD and a decoder that takes
// overlong forms ("\xc1\xaf" for "o") as another name: the one body
// encoding/json accepts that the reader does not.
func refusedName(in string, err error) bool {
	return err != nil && !utf8.ValidString(in) && strings.Contains(err.Error(), "a member name that is not UTF-8")
}

func TestReaderRefusesMemberNamesThatAreNotUTF8(t *testing.T) {
	for _, in := range []string{"{\"Fr\xc1\xafm\":1}", "{\"a\":{\"\\u0042cc\xff\":1}}", "[{\"\xe0\x80\x8a\":1}]"} {
		if err := readValue(in); !refusedName(in, err) {
			t.Errorf("%q: %v", in, err)
		}
	}
	// Other bytes that are not UTF-8, in a value, are read as
	// encoding/json reads them; so is a name that is UTF-8.
	for _, in := range []string{"{\"a\":\"\xc1\xaf\"}", "{\"caf\xc3\xa9\":\"\xff\"}"} {
		if err := readValue(in); err != nil {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestReaderDecodesStringsLikeEncodingJSON(t *testing.T) {
	for _, in := range []string{`"plain"`, `"a\u0040b"`, `"\ud83d\ude00"`, `"\ud800"`, `"\"\\\/\b\f\n\r\t"`, "\"caf\xc3\xa9\""} {
		r := reader{data: []byte(in)}
		var buf []byte
		got, _, err := r.str(&buf)
		var want string
		if json.Unmarshal([]byte(in), &want) != nil || err != nil || got != want {
			t.Errorf("str(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestReaderLimitsNesting(t *testing.T) {
	r := reader{data: []byte(strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth))}
	if err := r.skip(); err != nil {
		t.Errorf("%d levels: %v", maxDepth, err)
	}
	r = reader{data: []byte(strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1))}
	if err := r.skip(); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Errorf("%d levels: %v", maxDepth+1, err)
	}
}

// FuzzReaderAgreesWithEncodingJSON reads any bytes as a JSON value, seeded
// with long strings, whose bytes past the first 64 take stringEnd (longRun
// without AVX2): the reader accepts exactly what encoding/json accepts, and
// a string it accepts decodes to what encoding/json decodes (when it is valid UTF-8: the
// reader keeps other bytes as they are where encoding/json writes U+FFFD).
func FuzzReaderAgreesWithEncodingJSON(f *testing.F) {
	long := strings.Repeat("abcdefghij", 10)
	for _, in := range jsonCases {
		f.Add(in)
	}
	for _, in := range []string{
		`"` + long + `"`, `"` + long + `\"` + long + `"`, `"` + long + "\t" + long + `"`, `"` + long + `\n` + long + `\` + `"`,
		`"` + long + `\u00e9` + long + `"`, `"` + long, `"` + long + `\`, `["` + long + `","` + long + "\x1f" + `"]`,
		`{"a":"` + long + `\\` + long + `","b":"` + long + `"}`, `"` + long + "\xc3\xa9\xff" + long + `"`,
		`"` + strings.Repeat(`\u003cp class=\"x\"\u003e`, 20) + `"`, `"` + long[:63] + strings.Repeat(`\\`, 40) + `\"` + long + `"`,
	} {
		f.Add(in)
	}
	f.Fuzz(agreesWithEncodingJSON)
}

// agreesWithEncodingJSON reads in as a JSON value and fails t unless the
// reader accepts it exactly when encoding/json does (but for a member name
// that is not UTF-8, which it refuses) and, for a string of valid UTF-8,
// decodes the same text.
func agreesWithEncodingJSON(t *testing.T, in string) {
	t.Helper()
	err := readValue(in)
	if want := json.Valid([]byte(in)); (err == nil) != want && !refusedName(in, err) {
		t.Fatalf("%q: reader error %v; encoding/json valid %v", in, err, want)
	}
	if err != nil || len(in) == 0 || in[0] != '"' || !utf8.ValidString(in) {
		return
	}
	r := reader{data: []byte(in)}
	var buf []byte
	got, _, err := r.str(&buf)
	var want string
	if json.Unmarshal([]byte(in), &want) != nil || err != nil || got != want {
		t.Fatalf("str(%q) = %q, %v; want %q", in, got, err, want)
	}
}

// TestUnquoteAgreesWithEncodingJSON decodes strings with escapes as
// encoding/json does, also where the reader's own tests do not compare
// them: surrogate escapes alone, in pairs, reversed or cut off, and bytes
// that are not UTF-8 beside escapes (both become U+FFFD).
func TestUnquoteAgreesWithEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	pieces := []string{`a`, `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u0041`, `\u00e9`, `\u20ac`, `\uFFFD`,
		`\ud83d`, `\ude00`, `\uD83D\uDE00`, `\udbff\udfff`, `\ud800\u0041`, "é", "日", "\xff", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80"}
	for range 50_000 {
		var b strings.Builder
		b.WriteString(`"\n`) // one escape at least, so the reader decodes
		for n := rng.IntN(12); n >= 0; n-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		b.WriteByte('"')
		tok := []byte(b.String())
		var want string
		if err := json.Unmarshal(tok, &want); err != nil {
			t.Fatalf("%q: encoding/json: %v", tok, err)
		}
		if got := string(appendUnquoted(nil, tok)); got != want {
			t.Fatalf("appendUnquoted(%q) = %q, encoding/json %q", tok, got, want)
		}
		r := reader{data: tok}
		var buf []byte
		if got, transient, err := r.str(&buf); err != nil || got != want || !transient {
			t.Fatalf("str(%q) = %q, %v, %v; want %q, transient", tok, got, transient, err, want)
		}
	}
}
