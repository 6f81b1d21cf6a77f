package mailapi

import (
	"bytes"
	"errors"
	"io"
	"iter"
	"mime"
	"mime/multipart"
	"net/textproto"
	"net/url"
	"strings"
	"unicode"
)

// maxParts bounds the parts read from a multipart form. Mailgun takes
// 1,000 recipients a message, and its SDKs (mailgun.js, mailgun-go) send
// each address as a part of its own, beside the message's other fields,
// variables and attachments: a batch send at that limit has more than
// 1,000 parts. (Until session 35 the bound was 1,000, which refused it.)
const maxParts = 10000

// slowMultipartOnly makes every form go through mime/multipart, for tests
// comparing it with the plain layout's reading.
var slowMultipartOnly = false

// urlencoded reads an application/x-www-form-urlencoded form in order.
// Values are decoded only for the fields the shape names.
func (in *inspection) urlencoded(s *shape, body []byte) error {
	if err := semicolonField(s, body); err != nil {
		return err
	}
	return eachParam([2][]byte{body}, func(name string, value []byte) error {
		return in.param(s, name, value)
	})
}

// semicolonField refuses a url-encoded form in which a ';' starts a field
// the shape reads: parsers that split a form at ';' as at '&' (Python 2's
// and older Python 3's parse_qs, Rack 2's query strings) read
// "subject=x;to=a%40b" as a to keygate reads as part of the subject. SDKs
// escape ';' as %3B; a ';' before anything else ("text=Hi; there") passes.
func semicolonField(s *shape, body []byte) error {
	if bytes.IndexByte(body, ';') < 0 {
		return nil
	}
	for pair := range bytes.SplitSeq(body, []byte("&")) {
		pieces := bytes.Split(pair, []byte(";"))
		for _, piece := range pieces[1:] {
			k, _, _ := bytes.Cut(piece, []byte("="))
			// A bad escape is kept as it is by such parsers (Python's
			// unquote), which then name no field keygate reads.
			name, err := url.QueryUnescape(string(k))
			if err == nil && s.member([]byte(name)) != nil {
				return errors.New("form body: a field after a ';' is refused (parsers that split a form at ';' read it); escape ';' as %3B")
			}
		}
	}
	return nil
}

// param applies a url-encoded field's raw value, if the shape names it.
func (in *inspection) param(s *shape, name string, value []byte) error {
	m := s.member([]byte(name))
	if m == nil {
		return nil
	}
	v, err := url.QueryUnescape(string(value))
	if err != nil {
		return errors.New(m.name + ": invalid escape")
	}
	return in.applyField(m, v)
}

// multipart reads a multipart/form-data form. A raw MIME part is read
// only as far as its headers.
func (in *inspection) multipart(s *shape, boundary string, body []byte) error {
	if boundary == "" {
		return errors.New("Content-Type: multipart/form-data without a boundary")
	}
	// The plain reading finds no loose boundary in a body it takes
	// (cutAtDelimiter), so the body is searched for one only when it is
	// not plain.
	if !slowMultipartOnly {
		if ok, err := in.plainMultipart(s, boundary, body); ok {
			return err
		}
	}
	if looseBoundary(body, boundary) {
		return errors.New("multipart body has a boundary after a bare carriage return, or after a bare line feed in a body whose lines end with CRLF, where parsers disagree on whether a part ends")
	}
	// Part errors quote the offending header line, so none is passed on.
	malformed := errors.New("multipart body is malformed")
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for n := 0; ; n++ {
		// Raw: NextPart would decode quoted-printable parts the provider may
		// read as sent.
		part, err := mr.NextRawPart()
		if err == io.EOF {
			// The reader also stops without an error when the last part's
			// headers are cut off, which a provider may read as a field.
			if !endsWithCloseDelimiter(body, boundary) {
				return errors.New("multipart body is cut short: it does not end with its closing boundary")
			}
			return nil
		}
		if err != nil {
			return malformed
		}
		if n >= maxParts {
			return errors.New("multipart body has too many parts")
		}
		name, err := formPartName(part.Header)
		if err != nil {
			return err
		}
		m := s.member([]byte(name))
		if m == nil {
			continue
		}
		if m.shape.role == roleMIME {
			in.mime(part)
			continue
		}
		v, err := io.ReadAll(part)
		if err != nil {
			return malformed
		}
		if err := in.applyField(m, string(v)); err != nil {
			return err
		}
	}
}

// endsWithCloseDelimiter reports whether a multipart body's boundary lines
// end with its one close delimiter ("--boundary--"), as in a body sent
// whole: a truncated body ends inside a part, and boundary lines after the
// close delimiter could be read as more parts by another parser. Boundary
// lines are recognised as mime/multipart does (the boundary at the start of
// a line, then optional "--", spaces or tabs, and the line's end), except
// that any line feed starts a line, which only makes the check stricter.
func endsWithCloseDelimiter(body []byte, boundary string) bool {
	closed := false
	for i, at := range boundaries(body, boundary) {
		if i > 0 && body[i-1] != '\n' {
			continue
		}
		rest := body[at:]
		closing := bytes.HasPrefix(rest, []byte("--"))
		if closing {
			rest = rest[2:]
		}
		rest = bytes.TrimLeft(rest, " \t")
		if len(rest) > 0 && rest[0] != '\n' && !bytes.HasPrefix(rest, []byte("\r\n")) {
			continue // not a boundary line: the boundary starts other text
		}
		if closed {
			return false
		}
		closed = closing
	}
	return closed
}

// boundaries yields where each "--boundary" in body starts, and where it
// ends, in order.
func boundaries(body []byte, boundary string) iter.Seq2[int, int] {
	dash := []byte("--" + boundary)
	return func(yield func(start, end int) bool) {
		for at := 0; ; {
			i := bytes.Index(body[at:], dash)
			if i < 0 {
				return
			}
			i += at
			at = i + len(dash)
			if !yield(i, at) {
				return
			}
		}
	}
}

// looseBoundary reports whether body holds a boundary that other parsers
// end a part at and mime/multipart does not. Once the first boundary line
// ends with CRLF, mime/multipart ends parts only at CRLF "--boundary", and
// reads "\n--boundary" as a value's content; PHP's parser and Python's cgi
// end a part at any line feed, Werkzeug's also at a bare carriage return.
// A text field holding "\n--b\nContent-Disposition: form-data;
// name=\"h:From\"" would be a From to them, unseen by keygate. A body
// whose first boundary line ends with a bare line feed is read by
// mime/multipart as they read it (but for the carriage return).
func looseBoundary(body []byte, boundary string) bool {
	crlf, first := false, true
	for i, at := range boundaries(body, boundary) {
		switch {
		case i == 0:
		case body[i-1] == '\r':
			return true
		case body[i-1] != '\n':
			continue // not at a line's start: content to every parser
		case crlf && (i < 2 || body[i-2] != '\r'):
			return true
		}
		if first {
			// mime/multipart's first boundary line: the boundary, spaces
			// or tabs, and the line's end, which sets the body's.
			rest := bytes.TrimLeft(body[at:], " \t")
			switch {
			case bytes.HasPrefix(rest, []byte("\r\n")):
				crlf, first = true, false
			case bytes.HasPrefix(rest, []byte("\n")):
				first = false
			}
		}
	}
	return false
}

// formPartName returns the field name of a multipart/form-data part. A part
// that other parsers could read differently (no, several or a malformed
// Content-Disposition, one other than form-data, a transfer encoding) is
// refused rather than skipped, so no parser finds a field keygate missed.
func formPartName(h textproto.MIMEHeader) (string, error) {
	cds := h["Content-Disposition"]
	if len(cds) != 1 {
		return "", errors.New("a multipart part needs exactly one Content-Disposition")
	}
	disposition, params, err := mime.ParseMediaType(cds[0])
	if err != nil || disposition != "form-data" || params["name"] == "" {
		return "", errors.New(`a multipart part's Content-Disposition must be form-data with a name`)
	}
	// mime reads an RFC 2231 name (name*=UTF-8''x, name*0="x") in place of
	// a plain one beside it, in either order, and a quoted pair (\") as
	// the character it quotes; parsers without either (PHP's, hand-written
	// ones) read name="h:From" in the same header as the field keygate did
	// not look at.
	if extendedName(cds[0]) || strings.ContainsRune(cds[0], '\\') && !backslashesAgree(cds[0], params["name"]) {
		return "", errors.New(`a multipart part's Content-Disposition must name its field with a plain name="…", ` +
			`without RFC 2231 encoding (name*=) or a backslash that quotes a quote or is in the name`)
	}
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "", "7bit", "8bit", "binary":
	default:
		return "", errors.New("multipart parts with a Content-Transfer-Encoding are refused")
	}
	return params["name"], nil
}

// backslashesAgree reports whether a Content-Disposition holding
// backslashes names the same field, name as mime read it, to a parser that
// reads a backslash as the character it is: a Windows path as a file name
// (filename="C:\Users\a.pdf", as form-data, urllib3 and Symfony send it;
// filename="C:\\Users\\a.pdf", as Go's mime/multipart escapes it) names
// the same field to both. Doubling every backslash makes mime read the
// header as such a parser does. A quoted pair before a quote (\", as Go
// escapes a quote in a file name) ends the value there for that parser,
// which then reads the rest as other parameters, and a backslash in the
// name reads as another name: both differ, or fail to parse.
func backslashesAgree(cd, name string) bool {
	_, literal, err := mime.ParseMediaType(strings.ReplaceAll(cd, `\`, `\\`))
	return err == nil && literal["name"] == name
}

// extendedName reports whether a Content-Disposition mime.ParseMediaType
// accepted has a parameter named "name*" or "name*0" (RFC 2231's encoded
// and continued forms of name): a "name*" after the start or a ';' and
// white space, which mime.ParseMediaType skips as unicode.IsSpace has it
// (a no-break space too, where other parsers see part of another
// parameter's name and read the plain name beside it). One inside a quoted
// filename is a false alarm that only refuses the part.
func extendedName(cd string) bool {
	cd = strings.ToLower(cd)
	for i := 0; ; {
		j := strings.Index(cd[i:], "name*")
		if j < 0 {
			return false
		}
		i += j
		if k := strings.TrimRightFunc(cd[:i], unicode.IsSpace); k == "" || k[len(k)-1] == ';' {
			return true
		}
		i += len("name*")
	}
}

// applyField applies the value of a form field.
func (in *inspection) applyField(m *member, v string) error {
	in.depth = 0
	in.push(step{key: m.name})
	before := in.m.Recipients
	err := in.apply(m.shape.role, v, false)
	in.depth = 0
	switch m.shape.split {
	case splitter:
		in.msg.split = in.msg.split || !blank(v)
	case splitEach:
		in.msg.splitEach += in.m.Recipients - before
	case splitCopied:
		in.msg.splitCopied += in.m.Recipients - before
	}
	return err
}
