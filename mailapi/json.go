package mailapi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// maxDepth bounds JSON nesting, so a hostile body cannot exhaust the stack.
const maxDepth = 1000

// reader is a minimal JSON reader. It validates everything it passes over,
// so it accepts exactly the bodies encoding/json accepts (but for a member
// name that is not UTF-8, which it refuses: see object), but it decodes
// only the strings the walker asks for: skipping a 20 KB html field is a
// byte loop rather than a trip through reflection.
type reader struct {
	data  []byte
	pos   int
	depth int
}

func (r *reader) syntaxError(what string) error {
	if r.pos >= len(r.data) {
		return errors.New("body is not valid JSON: unexpected end")
	}
	return fmt.Errorf("body is not valid JSON: %s at byte %d", what, r.pos)
}

// ws skips whitespace. Compact bodies have none, and every byte that
// starts a value or ends one is above ' ': one comparison decides.
func (r *reader) ws() {
	for r.pos < len(r.data) {
		switch c := r.data[r.pos]; {
		case c > ' ':
			return
		case c == ' ', c == '\t', c == '\n', c == '\r':
			r.pos++
		default:
			return
		}
	}
}

// peek returns the first byte of the next value, or 0 at the end.
func (r *reader) peek() byte {
	if r.pos < len(r.data) {
		if c := r.data[r.pos]; c > ' ' {
			return c // compact JSON: no white space to skip
		}
	}
	r.ws()
	if r.pos < len(r.data) {
		return r.data[r.pos]
	}
	return 0
}

// skip passes over one value of any type.
func (r *reader) skip() error {
	switch c := r.peek(); {
	case c == '{':
		return r.object(func([]byte) error { return r.skip() })
	case c == '[':
		return r.array(r.skip)
	case c == '"':
		_, _, err := r.token()
		return err
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return r.number()
	}
	return r.syntaxError("want a value")
}

// object reads an object, calling member with each member's (decoded) name;
// member must consume the value.
func (r *reader) object(member func(name []byte) error) error {
	if err := r.enter(); err != nil {
		return err
	}
	if r.peek() == '}' {
		r.pos++
		r.depth--
		return nil
	}
	for {
		if r.peek() != '"' {
			return r.syntaxError("want a member name")
		}
		start := r.pos
		end, escaped, err := r.token()
		if err != nil {
			return err
		}
		name := r.data[start+1 : end-1]
		if !isASCII(name) && !utf8.Valid(name) {
			// encoding/json reads such bytes as U+FFFD, but a decoder
			// that takes an overlong form for the character it spells
			// (Jackson reads "Fr\xc1\xafm" as "From") reads a member
			// keygate did not.
			r.pos = start
			return r.syntaxError("a member name that is not UTF-8")
		}
		if escaped {
			name = appendUnquoted(nil, r.data[start:end])
		}
		if r.peek() != ':' {
			return r.syntaxError("want ':'")
		}
		r.pos++
		if err := member(name); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.pos++
		case '}':
			r.pos++
			r.depth--
			return nil
		default:
			return r.syntaxError("want ',' or '}'")
		}
	}
}

// array reads an array, calling elem for each element; elem must consume it.
func (r *reader) array(elem func() error) error {
	if err := r.enter(); err != nil {
		return err
	}
	if r.peek() == ']' {
		r.pos++
		r.depth--
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.pos++
		case ']':
			r.pos++
			r.depth--
			return nil
		default:
			return r.syntaxError("want ',' or ']'")
		}
	}
}

// enter steps into an object or array.
func (r *reader) enter() error {
	if r.depth++; r.depth > maxDepth {
		return r.syntaxError("nested too deeply")
	}
	r.pos++
	return nil
}

// str reads a string value and decodes it. Without escapes the string is
// the body's own bytes, not a copy: valid only while the body is, so a
// caller that keeps it must copy it (Inspect's callers may reuse the body's
// buffer once it returns). With escapes it is decoded into *buf, grown as
// needed, and transient says so: v is then valid until the next call with
// buf. A walk that decodes many escaped strings (names that PHP or Python
// escaped as \uXXXX) so allocates for the longest, not for each.
func (r *reader) str(buf *[]byte) (v string, transient bool, err error) {
	start := r.pos
	end, escaped, err := r.token()
	if err != nil {
		return "", false, err
	}
	if escaped {
		tok := r.data[start:end]
		if cap(*buf) < len(tok) {
			*buf = make([]byte, 0, len(tok))
		}
		*buf = appendUnquoted((*buf)[:0], tok)
		if len(*buf) == 0 {
			return "", false, nil
		}
		return unsafe.String(&(*buf)[0], len(*buf)), true, nil
	}
	if end-start == 2 {
		return "", false, nil
	}
	return unsafe.String(&r.data[start+1], end-start-2), false, nil
}

// token reads a string token and returns where it ends (the byte after its
// closing quote, where r.pos is then), and whether it holds escapes.
//
// Most strings of a send (member names, addresses, subjects) hold no escape:
// their end is found here, with AVX2 32 bytes a step and past a string's
// first 128 bytes 128 a step (where 32 bytes of the body remain), else eight
// bytes a step over the first 32; everything else
// goes on in tokenFrom from the first byte that needs a closer look.
func (r *reader) token() (end int, escaped bool, err error) {
	d, start := r.data, r.pos
	i := start + 1
	if blockScan && i+32 <= len(d) {
		// 32 bytes a step to the first byte that is not plain: the
		// closing quote of most strings.
		if i += specialIndexAVX2(&d[i], len(d)-i); i < len(d) && d[i] == '"' {
			r.pos = i + 1
			return r.pos, false, nil
		}
		return r.tokenFrom(i)
	}
	for ; i+8 <= len(d) && i <= start+shortString; i += 8 {
		if m := special8(binary.LittleEndian.Uint64(d[i:])); m != 0 {
			i += bits.TrailingZeros64(m) >> 3
			if d[i] == '"' {
				r.pos = i + 1
				return r.pos, false, nil
			}
			return r.tokenFrom(i)
		}
	}
	return r.tokenFrom(i)
}

// shortString is how far token looks for a string's end word by word.
const shortString = 32

// tokenFrom reads the rest of the string token that starts at r.pos from
// d[i] on, where i is not inside an escape.
func (r *reader) tokenFrom(i int) (end int, escaped bool, err error) {
	d := r.data
	// Past its first 64 bytes a string is crossed by stringEnd where the
	// CPU can classify blocks fast; long is where that starts, 0 once it
	// has (or never will).
	long := 0
	quote := -1 // the next '"' at or after i, once longRun looked for it
	if blockScan {
		long = r.pos + 1 + 64
	}
	for i < len(d) {
		if long != 0 && i >= long {
			long = 0
			end, next, esc := stringEnd(d, i)
			escaped = escaped || esc
			if end >= 0 {
				r.pos = end + 1
				return r.pos, escaped, nil
			}
			if i = next; i >= len(d) {
				break
			}
		}
		// Plain bytes sixteen at a time, and from the first word holding a
		// byte that is not plain straight to that byte (the lowest one
		// special8 flags), then one at a time near the end. Without
		// stringEnd, past 64 plain bytes (html bodies, attachments) the rest
		// of the run is found with vectorised searches instead (longRun).
		n := 0
		for i+16 <= len(d) && (long == 0 || i < long) {
			w := d[i : i+16]
			if m := special8(binary.LittleEndian.Uint64(w[:8])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			if m := special8(binary.LittleEndian.Uint64(w[8:])); m != 0 {
				i += 8 + bits.TrailingZeros64(m)>>3
				break
			}
			i += 16
			if n++; n == 4 && long == 0 {
				i, quote = longRun(d, i, quote)
				break
			}
		}
		if long != 0 && i >= long {
			continue
		}
		for i < len(d) && plain[d[i]] {
			i++
		}
		if i >= len(d) {
			break
		}
		switch c := d[i]; {
		case c == '"':
			r.pos = i + 1
			return r.pos, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(d) {
				i++
				continue
			}
			n := escapeLen(d, i)
			if n == 0 {
				r.pos = i
				if d[i+1] == 'u' {
					return 0, false, r.syntaxError("invalid \\u escape")
				}
				return 0, false, r.syntaxError("invalid escape")
			}
			i += n
		case c < 0x20:
			r.pos = i
			return 0, false, r.syntaxError("control character in a string")
		}
	}
	r.pos = len(d)
	return 0, false, r.syntaxError("unterminated string")
}

// longRun returns the position of the first byte from i on that is not
// plain ('"', '\\' or a control character), or len(d), and the position of
// the next '"' (len(d) if none), passed back in as quote so that a string
// with escapes is searched for its quote once. bytes.IndexByte is
// vectorised: a base64 attachment or an html body without escapes is
// crossed several times faster than eight bytes a step.
func longRun(d []byte, i, quote int) (int, int) {
	if quote < i {
		quote = len(d)
		if k := bytes.IndexByte(d[i:], '"'); k >= 0 {
			quote = i + k
		}
	}
	end := quote
	if k := bytes.IndexByte(d[i:end], '\\'); k >= 0 {
		end = i + k
	}
	if k := firstControl(d[i:end]); k >= 0 {
		end = i + k
	}
	return end, quote
}

// firstControl returns the index of the first byte of b below 0x20, or -1.
func firstControl(b []byte) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	ctl := func(x uint64) uint64 { return (x - ones*0x20) &^ x & highs }
	i := 0
	// Thirty-two bytes a step with one branch; the word that flags a
	// byte is found again below.
	for ; i+32 <= len(b); i += 32 {
		w := b[i : i+32]
		if ctl(binary.LittleEndian.Uint64(w))|ctl(binary.LittleEndian.Uint64(w[8:]))|
			ctl(binary.LittleEndian.Uint64(w[16:]))|ctl(binary.LittleEndian.Uint64(w[24:])) != 0 {
			break
		}
	}
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		if m := (x - ones*0x20) &^ x & highs; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(b); i++ {
		if b[i] < 0x20 {
			return i
		}
	}
	return -1
}

// plain8 reports whether none of the eight bytes of x is '"', '\\' or a
// control character, i.e. all are plain (in the plain table). Each test sets
// a byte's high bit when that byte matches; a borrow can set it spuriously
// only in a byte above one that matches, which does not change the answer.
func plain8(x uint64) bool { return special8(x) == 0 }

// special8 has the high bit set of (at least) each byte of x that is not
// plain, and is zero when all are. The lowest byte it flags is the first
// that is not plain: a borrow only starts at a byte that matches.
func special8(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	return ((quote-ones)&^quote | (backslash-ones)&^backslash | (x-ones*0x20)&^x) & highs
}

// plain marks the bytes that stand for themselves inside a JSON string.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// escapeLen returns how many bytes the escape whose backslash is d[i] takes
// (2, or 6 for \uXXXX), or 0 if it is not a valid escape. d[i+1] must
// exist.
func escapeLen(d []byte, i int) int {
	switch {
	case !validEscaped(d, i+1):
		return 0
	case d[i+1] == 'u':
		return 6
	}
	return 2
}

// validEscaped says whether d[k], after a backslash, makes a valid escape:
// one letter, or u and four hex digits within d.
func validEscaped(d []byte, k int) bool {
	switch d[k] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return true
	case 'u':
		return k+5 <= len(d) && isHex4(d[k+1:k+5])
	}
	return false
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// appendUnquoted appends the text of the string token tok (its quotes
// included, validated by token) to b, decoded as encoding/json decodes it:
// a surrogate pair's two escapes as one character, any other surrogate
// escape and any byte that is not UTF-8 as U+FFFD.
func appendUnquoted(b, tok []byte) []byte {
	s := tok[1 : len(tok)-1]
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == '\\':
			e := s[i+1]
			i += 2
			switch e {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r := hex4(s[i:])
				i += 4
				if utf16.IsSurrogate(r) {
					next := rune(-1)
					if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
						next = hex4(s[i+2:])
					}
					if r = utf16.DecodeRune(r, next); r != unicode.ReplacementChar {
						i += 6
					}
				}
				b = utf8.AppendRune(b, r)
			default: // '"', '\\', '/'
				b = append(b, e)
			}
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, n := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = utf8.AppendRune(b, r)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n
		}
	}
	return b
}

// hex4 is the value of the four hex digits at the start of h, validated by
// token.
func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// literal reads true, false or null.
func (r *reader) literal(word string) error {
	if len(r.data)-r.pos < len(word) || string(r.data[r.pos:r.pos+len(word)]) != word {
		return r.syntaxError("want a value")
	}
	r.pos += len(word)
	return nil
}

// number reads a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (r *reader) number() error {
	d := r.data
	digits := func() int {
		n := 0
		for r.pos < len(d) && d[r.pos] >= '0' && d[r.pos] <= '9' {
			r.pos++
			n++
		}
		return n
	}
	if d[r.pos] == '-' {
		r.pos++
	}
	switch {
	case r.pos < len(d) && d[r.pos] == '0':
		r.pos++
	case digits() == 0:
		return r.syntaxError("invalid number")
	}
	if r.pos < len(d) && d[r.pos] == '.' {
		r.pos++
		if digits() == 0 {
			return r.syntaxError("invalid number")
		}
	}
	if r.pos < len(d) && (d[r.pos] == 'e' || d[r.pos] == 'E') {
		r.pos++
		if r.pos < len(d) && (d[r.pos] == '+' || d[r.pos] == '-') {
			r.pos++
		}
		if digits() == 0 {
			return r.syntaxError("invalid number")
		}
	}
	return nil
}
