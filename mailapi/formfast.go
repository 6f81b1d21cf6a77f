package mailapi

import (
	"bytes"
	"unsafe"
)

// Reading a multipart form through mime/multipart allocates a header map, a
// reader and a copy of each value for every part: most of what inspecting a
// Mailgun send costs. The SDKs all write the same plain layout, which is read
// here in place instead; any other layout (a preamble, LF line ends, header
// continuations, other headers, quoting or parameters beyond name and
// filename, padding after a boundary) goes to mime/multipart, so what is
// accepted and what it means stays mime/multipart's answer.
// FuzzPlainMultipartAgrees holds the two together.

// plainMultipart reads body when it is a plain multipart/form-data form and
// reports whether it was; when not, it has changed nothing in the inspection.
func (in *inspection) plainMultipart(s *shape, boundary string, body []byte) (ok bool, err error) {
	// Fields are applied as the layout is read, in one pass. When the
	// layout turns out not to be plain, the inspection is put back as it
	// was (a copy of a few hundred bytes) and mime/multipart reads the
	// body. After a field's error the rest is only checked: the error is
	// the answer only when the whole body is plain, as when the layout was
	// checked whole first.
	saved := *in
	if !plainParts(boundary, body, func(name, value []byte) bool {
		if err != nil {
			return true
		}
		m := s.member(name)
		if m == nil {
			return true
		}
		if m.shape.role == roleMIME {
			in.mime(bytes.NewReader(value))
			return true
		}
		var v string
		if len(value) > 0 {
			v = unsafe.String(&value[0], len(value)) // not kept: apply copies what it keeps
		}
		err = in.applyField(m, v)
		return true
	}) {
		*in = saved
		return false, nil
	}
	return true, err
}

// plainParts walks the parts of a multipart/form-data body laid out as
//
//	--B CRLF headers CRLF CRLF value CRLF --B CRLF ... value CRLF --B-- [CRLF]
//
// where headers are one Content-Disposition (form-data; name="n", then
// optionally ; filename="f") and at most one Content-Type, and calls each,
// when not nil, with every part's field name and value until it returns
// false. It reports whether the body has that layout (checked whole before
// the first call, when each is nil).
func plainParts(boundary string, body []byte, each func(name, value []byte) bool) bool {
	rest, ok := cutDelimiter(body, boundary)
	if !ok || !bytes.HasPrefix(rest, crlf) {
		return false
	}
	rest = rest[2:]
	// CRLF "--boundary", on the stack for a boundary of RFC 2046's
	// length (at most 70 bytes).
	var buf [4 + 70]byte
	delim := append(append(buf[:0], "\r\n--"...), boundary...)
	for n := 0; ; n++ {
		if n >= maxParts {
			return false // mime/multipart's reading says how many is too many
		}
		name, body, ok := nameOnlyHeader(rest)
		if !ok {
			end := bytes.Index(rest, blankLine)
			if end < 0 {
				return false
			}
			if name, ok = plainPartHeaders(rest[:end]); !ok {
				return false
			}
			body = rest[end+len(blankLine):]
		}
		value, after, ok := cutAtDelimiter(body, boundary, delim)
		if !ok {
			return false
		}
		if each != nil && !each(name, value) {
			return true
		}
		switch {
		case bytes.HasPrefix(after, crlf):
			rest = after[2:]
		case bytes.HasPrefix(after, dashes):
			after = after[2:]
			return len(after) == 0 || bytes.Equal(after, crlf)
		default:
			return false
		}
	}
}

var (
	crlf      = []byte("\r\n")
	blankLine = []byte("\r\n\r\n")
	dashes    = []byte("--")
)

// cutDelimiter removes "--boundary" from the start of b.
func cutDelimiter(b []byte, boundary string) ([]byte, bool) {
	if len(b) < 2+len(boundary) || b[0] != '-' || b[1] != '-' || string(b[2:2+len(boundary)]) != boundary {
		return nil, false
	}
	return b[2+len(boundary):], true
}

// cutAtDelimiter splits b at the first delim, CRLF "--boundary": the value
// before it and what follows it. A delimiter followed by something other
// than CRLF or "--" is not plain (mime/multipart reads it as content), nor
// is a value starting with "--boundary", nor one holding "--boundary" after
// a bare CR or LF: other parsers end the part there (looseBoundary refuses
// it once mime/multipart's reading is asked). Each "--boundary" is found in
// the one pass that finds the delimiter.
func cutAtDelimiter(b []byte, boundary string, delim []byte) (value, after []byte, ok bool) {
	if _, found := cutDelimiter(b, boundary); found {
		return nil, nil, false // mime/multipart ends an empty part there, without the CRLF
	}
	dash := delim[2:] // "--boundary"
	for from := 0; ; {
		j := indexDelimiter(b[from:], dash)
		if j < 0 {
			return nil, nil, false
		}
		j += from
		switch {
		case j >= 2 && b[j-2] == '\r' && b[j-1] == '\n':
			after = b[j+len(dash):]
			if !bytes.HasPrefix(after, crlf) && !bytes.HasPrefix(after, dashes) {
				return nil, nil, false
			}
			return b[:j-2], after, true
		case b[j-1] == '\r' || b[j-1] == '\n': // j > 0: cutDelimiter took j == 0
			return nil, nil, false
		}
		from = j + 1 // within a line: content to every parser
	}
}

// nameOnlyHeader reads the usual part header, a Content-Disposition with
// only a plain field name, and returns the name and what follows the
// header's blank line; plainPartHeaders reads the others.
func nameOnlyHeader(b []byte) (name, rest []byte, ok bool) {
	const end = "\"\r\n\r\n"
	// `Content-Disposition: form-data; name="`, compared in pieces of at
	// most 16 bytes, which the compiler compares in registers (a longer
	// one goes through memequal: a call a part).
	if len(b) < 38 || string(b[:16]) != "Content-Disposit" || string(b[16:32]) != "ion: form-data; " ||
		string(b[32:38]) != `name="` {
		return nil, nil, false
	}
	rest = b[38:]
	i := bytes.IndexByte(rest, '"')
	if i <= 0 || !plainFieldName(rest[:i]) || len(rest) < i+len(end) || string(rest[i:i+len(end)]) != end {
		return nil, nil, false
	}
	return rest[:i], rest[i+len(end):], true
}

// plainPartHeaders reads a part's header lines: exactly one
// `Content-Disposition: form-data; name="n"` (optionally followed by
// `; filename="f"`) and at most one `Content-Type: t`, in either order, and
// returns n.
func plainPartHeaders(h []byte) (name []byte, ok bool) {
	var sawType bool
	for len(h) > 0 {
		line := h
		if i := bytes.Index(h, crlf); i >= 0 {
			line, h = h[:i], h[i+2:]
		} else {
			h = nil
		}
		key, value, found := bytes.Cut(line, []byte(": "))
		if !found || !plainHeaderValue(value) {
			return nil, false
		}
		switch string(key) {
		case "Content-Disposition":
			if name != nil {
				return nil, false
			}
			if name = plainDisposition(value); name == nil {
				return nil, false
			}
		case "Content-Type":
			if sawType {
				return nil, false
			}
			sawType = true
		default:
			return nil, false
		}
	}
	return name, name != nil
}

// plainHeaderValue reports whether v is printable ASCII with no space or
// tab at either end.
func plainHeaderValue(v []byte) bool {
	if len(v) == 0 || v[0] == ' ' || v[len(v)-1] == ' ' {
		return false
	}
	for _, c := range v {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// plainDisposition returns n of `form-data; name="n"` or
// `form-data; name="n"; filename="f"`, or nil. n is letters, digits and
// ".:_-"; f is printable ASCII without '"' or '\'.
func plainDisposition(v []byte) []byte {
	rest, ok := bytes.CutPrefix(v, []byte(`form-data; name="`))
	if !ok {
		return nil
	}
	end := bytes.IndexByte(rest, '"')
	if end <= 0 {
		return nil
	}
	name := rest[:end]
	if !plainFieldName(name) {
		return nil
	}
	rest = rest[end+1:]
	if len(rest) == 0 {
		return name
	}
	file, ok := bytes.CutPrefix(rest, []byte(`; filename="`))
	if !ok || len(file) < 2 || file[len(file)-1] != '"' {
		return nil
	}
	for _, c := range file[:len(file)-1] {
		if c == '"' || c == '\\' {
			return nil
		}
	}
	return name
}

// plainFieldName reports whether a form field name is letters, digits and
// ".:_-" only.
func plainFieldName(name []byte) bool {
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == ':' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
