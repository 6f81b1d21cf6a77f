package mailapi

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strconv"
	"strings"
	"unicode/utf8"
)

// inspection is the state of one Inspect call: the Message being built and
// the bookkeeping that checks every message names a sender.
type inspection struct {
	m   Message
	msg messageState // the message being read

	shared       bool // reading a shared object (Mailjet Globals)
	sharedSender bool // a shared object named a sender
	sharedHidden bool // a shared object may give every message a sender keygate cannot see (a template)
	sharedRcpts  int  // recipients of shared objects, sent with every message
	messages     int

	missing string // the field the first message without a sender lacks

	// from is the last sender field that named one address, as written,
	// fromRole how it was read, and fromAddr that address: a batch names
	// one sender in every message, and it is parsed once.
	from, fromAddr string
	fromRole       role

	// pairSender and pairValues are the header pair being read
	// (shape.pair): whether any of its names is From or Sender, and every
	// value it gives. A pair may repeat Name or Value (or spell one in
	// another case), and its provider's decoder may keep the first or the
	// last: each value counts when any name makes it a sender's.
	pairSender bool
	pairValues []string

	// scratch holds the last string with escapes that the walk decoded
	// (reader.str).
	scratch []byte

	// at[:depth] is the field being read, for errors: a stack rather than
	// a linked path, so that descending into a field allocates nothing. The
	// deepest field a shape names is five steps
	// (personalizations[0].to[1].email), and at holds seven; deeper steps
	// are counted, not kept. A fixed array and a depth, not a slice of it:
	// a struct holding a slice of itself always escapes to the heap.
	at    [7]step
	depth int
}

// push descends into the field st.
func (in *inspection) push(st step) {
	if in.depth < len(in.at) {
		in.at[in.depth] = st
	}
	in.depth++
}

// pop leaves the field pushed last.
func (in *inspection) pop() { in.depth-- }

// path is the field being read, as far as at keeps it.
func (in *inspection) path() []step { return in.at[:min(in.depth, len(in.at))] }

// step is one level of the field being read: a member name, or an array
// index when key is empty.
type step struct {
	key   string
	index int
}

// messageState tracks one message while its fields are read.
type messageState struct {
	hasSender  bool
	hidden     bool // the sender may come from where keygate cannot see
	rcptsStart int  // m.Recipients when the message began
	messagesAt int  // the messages begun when this one began, itself included
	mimeRcpts  int  // recipients named by the message's raw MIME headers
	// versions counts the message's versions (shape.versions), and
	// versionRcpts the recipients of its fields that receive every one
	// (shape.everyVersion), counted once so far.
	versions, versionRcpts int
	// split reports a batch send (shape.split), splitEach the recipients
	// that get a message of their own in one, and splitCopied those that
	// get a copy of every one, counted once so far.
	split                  bool
	splitEach, splitCopied int
}

// walk reads one JSON value of shape s at the current field.
func (in *inspection) walk(r *reader, s *shape) error {
	c := r.peek()
	switch {
	case s.role == roleHidden:
		in.msg.hidden = true
		return r.skip()
	case s.role == roleOpaque:
		in.m.Opaque, in.msg.hidden = true, true
		return r.skip()
	case c == '{' && s.pair:
		return in.pair(r, s)
	case c == '{' && s.members != nil:
		return in.object(r, s)
	case s.everyVersion != nil:
		before := in.m.Recipients
		err := in.walk(r, s.everyVersion)
		in.msg.versionRcpts += in.m.Recipients - before
		return err
	case c == '[' && s.elem != nil:
		in.push(step{})
		top := in.depth - 1
		err := r.array(func() error {
			if s.versions {
				in.msg.versions++
			}
			err := in.walk(r, s.elem)
			if top < len(in.at) {
				in.at[top].index++
			}
			return err
		})
		in.pop()
		return err
	case s.role == roleHeaderText && c != '"':
		return r.skip() // a header's value the provider may refuse, but no text of it
	case c == '"' && s.role != roleNone:
		start := r.pos
		v, transient, err := r.str(&in.scratch)
		if err != nil {
			return err
		}
		if tok := r.data[start:r.pos]; !isASCII(tok) && !utf8.Valid(tok) {
			// Read as U+FFFD here, but as the character it spells by a
			// decoder that takes overlong forms (Jackson): "\xc0\x8a" is a
			// line feed to it, in an address's comment or a header's value.
			return fmt.Errorf("%s: not UTF-8", in.where())
		}
		return in.apply(s.role, v, transient)
	case c == 'n' && s.sender == "" && in.depth > 0:
		// null is an absent field, but never an absent message, nor a
		// body: a batch of null sends nothing a provider would accept.
		return r.literal("null")
	}
	if err := r.skip(); err != nil {
		return err // report broken JSON as such, not as a wrong type
	}
	return fmt.Errorf("%s: want %s, got %s", in.where(), s.want(), kindOf(c))
}

// object reads the members of an object; a message object is checked for
// its sender when it ends.
func (in *inspection) object(r *reader, s *shape) error {
	var outer messageState
	if s.sender != "" {
		outer = in.begin()
	}
	wasShared, wasHidden := in.shared, in.msg.hidden
	in.shared = in.shared || s.shared
	err := r.object(func(key []byte) error {
		m := s.member(key)
		if m == nil {
			return r.skip()
		}
		in.push(step{key: m.name})
		err := in.walk(r, m.shape)
		in.pop()
		return err
	})
	if s.shared {
		// A template in a shared object (Mailjet's Globals.TemplateID) is
		// every message's, before or after the messages are read.
		in.sharedHidden = in.sharedHidden || in.msg.hidden && !wasHidden
		in.msg.hidden = wasHidden
	}
	in.shared = wasShared
	if err != nil {
		return err
	}
	if s.sender != "" {
		in.end(s)
		in.msg = outer
	}
	return nil
}

// member finds the member named key under Unicode case folding, the rule
// encoding/json and case-insensitive decoders match names by, or else, in a
// shape of header names, the one headerMember finds.
func (s *shape) member(key []byte) *member {
	// Names are ASCII, and folding an ASCII key keeps its length and
	// changes only the case of its letters: only a key with other bytes
	// (the long s folds to s) may match a name the filter does not admit.
	known := s.names.mayHold(key)
	if known {
		for i := range s.members { // SDKs spell names exactly: the quick look
			if string(key) == s.members[i].name {
				return &s.members[i]
			}
		}
	}
	ascii := isASCII(key)
	if ascii && !known {
		return s.unnamed(key)
	}
	for i := range s.members {
		name := s.members[i].name
		if (!ascii || len(name) == len(key)) && bytes.EqualFold(key, []byte(name)) {
			return &s.members[i]
		}
	}
	return s.unnamed(key)
}

// unnamed is what a key no member is named reads as: nothing, but in a
// shape of header names.
func (s *shape) unnamed(key []byte) *member {
	if !s.headerNames {
		return nil
	}
	return s.headerMember(key)
}

// headerMember is what a header name no member is named reads as: the
// member looseName's spelling of it names, injectedHeader for a name
// holding a line break, or rest for another header.
func (s *shape) headerMember(key []byte) *member {
	if bytes.IndexByte(key, '\r') >= 0 || bytes.IndexByte(key, '\n') >= 0 {
		return injectedHeader
	}
	if k, ok := looseName(key); ok {
		if m := s.member(k); m != nil {
			return m
		}
	}
	if len(key) >= len(s.restPrefix) && bytes.EqualFold(key[:len(s.restPrefix)], []byte(s.restPrefix)) {
		return s.rest
	}
	return nil
}

// looseName is a header name (or a Mailgun form field) as a provider that
// builds a header from it may take it, and whether that differs from key:
// without the spaces and tabs around it (RFC 5322's obsolete syntax reads
// "From : x" as a From), or after the "h:" of Mailgun's header fields, and
// without a trailing "[…]" (a form built from an array: to[0], h:From[]).
func looseName(key []byte) ([]byte, bool) {
	k := key
	prefix := len(k) >= 2 && k[0]|0x20 == 'h' && k[1] == ':'
	if prefix {
		k = k[2:]
	}
	k = trimBlanks(k)
	if n := len(k); n > 0 && k[n-1] == ']' {
		if i := bytes.IndexByte(k, '['); i > 0 {
			k = trimBlanks(k[:i])
		}
	}
	if prefix {
		if len(k) == len(key)-2 {
			return key, false
		}
		return append([]byte("h:"), k...), true
	}
	return k, len(k) != len(key)
}

// isASCII reports whether b has no byte above 0x7f, eight bytes a step;
// the last step (or, below eight bytes, the only two of four) may overlap
// the one before.
func isASCII(b []byte) bool {
	var x uint64
	switch n := len(b); {
	case n >= 8:
		for i := 0; i < n-8; i += 8 {
			x |= binary.LittleEndian.Uint64(b[i:])
		}
		x |= binary.LittleEndian.Uint64(b[n-8:])
	case n >= 4:
		x = uint64(binary.LittleEndian.Uint32(b) | binary.LittleEndian.Uint32(b[n-4:]))
	default:
		for _, c := range b {
			x |= uint64(c)
		}
	}
	return x&0x8080808080808080 == 0
}

// pair reads a header given as {"Name": …, "Value": …}: a From or Sender
// header's value names senders beside the message's own. With a repeated
// Name or Value, every value counts if any name is From or Sender.
func (in *inspection) pair(r *reader, s *shape) error {
	in.pairSender, in.pairValues = false, in.pairValues[:0]
	if err := in.object(r, s); err != nil {
		return err
	}
	if !in.pairSender {
		return nil
	}
	for _, v := range in.pairValues {
		if err := in.apply(roleAlsoSender, v, false); err != nil {
			return err
		}
	}
	return nil
}

// begin starts a message and returns the state of the enclosing one.
func (in *inspection) begin() messageState {
	outer := in.msg
	in.messages++
	in.msg = messageState{rcptsStart: in.m.Recipients, messagesAt: in.messages}
	return outer
}

// end checks the message that began at the current field: raw MIME
// recipients count when its fields named none, the recipients of every
// version count once a version, those copied into every message of a
// batch send once a message, and it must have named a sender.
func (in *inspection) end(s *shape) {
	if in.m.Recipients == in.msg.rcptsStart {
		in.m.Recipients += in.msg.mimeRcpts
	}
	if in.msg.versions > 1 {
		in.m.Recipients += in.msg.versionRcpts * (in.msg.versions - 1)
	}
	if in.msg.split && in.msg.splitEach > 1 {
		in.m.Recipients += in.msg.splitCopied * (in.msg.splitEach - 1)
	}
	switch {
	case in.msg.hasSender:
	case s.batch && in.messages > in.msg.messagesAt:
		// A batch: each of its messages named a sender.
	case in.msg.hidden:
		in.m.Opaque = true
	case in.missing == "":
		in.missing = s.sender
		if in.depth > 0 {
			in.missing = in.where() + "." + s.sender
		}
	}
}

// finish applies shared objects to every message and reports the first
// message without a sender.
func (in *inspection) finish() error {
	in.m.Recipients += in.sharedRcpts * max(in.messages, 1)
	switch {
	case in.missing == "" || in.sharedSender:
	case in.sharedHidden:
		// The messages without a sender may send as the shared template's.
		in.m.Opaque = true
	default:
		return errors.New(in.missing + " is missing")
	}
	return nil
}

// blank reports whether v is empty or white space only. An address starts
// with a byte that is neither, so one compare answers it.
func blank(v string) bool {
	return v == "" || (v[0] <= ' ' || v[0] >= utf8.RuneSelf) && strings.TrimSpace(v) == ""
}

// apply records what the string v at the current field means. A transient
// v is copied where it is kept.
func (in *inspection) apply(role role, v string, transient bool) error {
	switch role {
	case roleSender, roleRecipient:
		if blank(v) {
			return nil // an empty field is an absent one
		}
		if role == roleSender && role == in.fromRole && v == in.from {
			in.sender(in.fromAddr)
			return nil
		}
		if role == roleSender && transient {
			v = strings.Clone(v) // kept as in.from, and its address as in.fromAddr
		}
		addr, err := parseAddress(v)
		if err != nil {
			return fmt.Errorf("%s: not a valid email address", in.where())
		}
		if role == roleSender {
			in.from, in.fromAddr, in.fromRole = v, addr, role
			in.sender(addr)
		} else {
			in.recipients(1)
		}
	case roleSenderList, roleRecipientList:
		if blank(v) {
			return nil
		}
		if role == roleSenderList && role == in.fromRole && v == in.from {
			in.sender(in.fromAddr)
			return nil
		}
		if role == roleSenderList && transient {
			v = strings.Clone(v) // kept as in.from
		}
		var each func(string)
		if role == roleSenderList {
			each = in.sender
		}
		n, err := parseAddressList(v, each)
		if err != nil {
			return fmt.Errorf("%s: not a valid address list", in.where())
		}
		if role == roleRecipientList {
			in.recipients(n)
		} else if n == 1 {
			// sender kept it, lower-cased, as the last of Senders.
			in.from, in.fromAddr, in.fromRole = v, in.m.Senders[len(in.m.Senders)-1], role
		}
	case roleAlsoSender:
		if blank(v) {
			return nil
		}
		if _, err := parseAddressList(v, in.keepSender); err != nil {
			return fmt.Errorf("%s: not a valid address list", in.where())
		}
	case roleHeaderName:
		if lineBreak(v) {
			in.m.Opaque, in.msg.hidden = true, true // see injectedHeader
		}
		name, _ := looseName([]byte(v))
		if bytes.EqualFold(name, []byte("From")) || bytes.EqualFold(name, []byte("Sender")) {
			in.pairSender = true
		}
	case roleHeaderValue:
		if lineBreak(v) {
			in.m.Opaque, in.msg.hidden = true, true // see roleHeaderText
		}
		if transient {
			v = strings.Clone(v) // read once the pair ends
		}
		in.pairValues = append(in.pairValues, v)
	case roleHeaderText:
		if lineBreak(v) {
			// Written as it is, it starts another header ("x\r\nFrom: …"),
			// which keygate did not see; a provider may also fold it.
			in.m.Opaque, in.msg.hidden = true, true
		}
	case roleMIME:
		in.mime(strings.NewReader(v))
	case roleMIMEBase64:
		in.mime(base64.NewDecoder(base64.StdEncoding, strings.NewReader(v)))
	case roleHidden:
		in.msg.hidden = true
	case roleOpaque:
		in.m.Opaque, in.msg.hidden = true, true
	}
	return nil
}

// lineBreak reports whether v holds a carriage return or a line feed.
func lineBreak(v string) bool {
	return strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0
}

// sender records a From address: the message names its sender.
func (in *inspection) sender(addr string) {
	in.keepSender(addr)
	in.markSender()
}

// keepSender adds addr to the senders checked. addr may share the body's
// memory, so it is copied when kept.
func (in *inspection) keepSender(addr string) {
	// Batches usually repeat one sender; keep the list short for them
	// (and when the sender is the previous one as written, skip lowering it).
	n := len(in.m.Senders)
	if n > 0 && in.m.Senders[n-1] == addr {
		return
	}
	lower := strings.ToLower(addr) // addr itself when already lower case
	if n == 0 || in.m.Senders[n-1] != lower {
		if lower == addr {
			lower = strings.Clone(addr)
		}
		if in.m.Senders == nil {
			// Room for a sending domain too (sendingDomain).
			in.m.Senders = make([]string, 0, 2)
		}
		in.m.Senders = append(in.m.Senders, lower)
	}
}

// sendingDomain returns the one-element list of a request's sending domain
// (Mailgun's, from the path), in the senders' spare room when they have
// some: one allocation a send fewer. Each list is capped at its length, so
// appending to either cannot write into the other.
func (in *inspection) sendingDomain(domain string) []string {
	n := len(in.m.Senders)
	if n == 0 || n == cap(in.m.Senders) {
		return []string{domain}
	}
	all := append(in.m.Senders, domain)
	in.m.Senders = all[:n:n]
	return all[n : n+1 : n+1]
}

// markSender notes that the message (or, for a batch's shared part, every
// message) has a sender.
func (in *inspection) markSender() {
	if in.shared {
		in.sharedSender = true
	} else {
		in.msg.hasSender = true
	}
}

func (in *inspection) recipients(n int) {
	if in.shared {
		in.sharedRcpts += n
	} else {
		in.m.Recipients += n
	}
}

// mime reads the headers of a raw MIME message: every From, Sender,
// Resent-From and Resent-Sender header names a sender (the provider sends
// the headers as written, and mail clients show a Sender as who sent the
// message for the From) and To, Cc and Bcc (and their Resent- forms) count
// as recipients when the request's own fields name none. Headers keygate
// cannot read, or that another reader could split differently
// (headerSection), make the request Opaque.
func (in *inspection) mime(r io.Reader) {
	head, ok := headerSection(bufio.NewReader(r))
	if !ok {
		in.m.Opaque, in.msg.hidden = true, true
		return
	}
	msg, err := mail.ReadMessage(bytes.NewReader(head))
	if err != nil {
		in.m.Opaque, in.msg.hidden = true, true
		return
	}
	for _, name := range mimeAddressHeaders {
		// All of a repeated header: the provider might read either.
		for _, v := range msg.Header[name] {
			list, err := addressParser.ParseList(v)
			if err != nil {
				in.m.Opaque, in.msg.hidden = true, true
				return
			}
			switch name {
			case "From":
				for _, a := range list {
					in.sender(a.Address)
				}
			case "Sender", "Resent-From", "Resent-Sender":
				for _, a := range list { // beside the From, never instead of it
					in.keepSender(a.Address)
				}
			default:
				in.msg.mimeRcpts += len(list)
			}
		}
	}
}

// mimeAddressHeaders are the headers of raw MIME whose addresses mime reads,
// canonical. A provider that takes the recipients from the headers may
// honour the Resent- ones (as sendmail -t does), and mail clients show a
// Resent-From as who sent the message on.
var mimeAddressHeaders = []string{"From", "Sender", "Resent-From", "Resent-Sender",
	"To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"}

// headerSection reads the header section of a raw message, up to and
// including the empty line that ends it (or all of it, without one), and
// reports whether every reader splits it into the fields net/mail does.
// Readers differ where RFC 5322 is loose or obsolete, so such a section is
// refused rather than read one way:
//   - a carriage return not followed by a line feed ends a line for Python's
//     email package and JavaMail, not for net/mail: "Subject: x\rFrom: y"
//     holds a From header for them;
//   - a field name must be RFC 5322's (printable ASCII but ':'), with no
//     space before its colon: "From : y" is a From header in RFC 5322's
//     obsolete syntax, a field "From " to net/mail;
//   - a NUL ends the text for readers in C;
//   - a section with no field at all (the message begins with an empty
//     line, or a byte order mark) is a body to net/mail, and some readers
//     skip what comes first.
func headerSection(r *bufio.Reader) ([]byte, bool) {
	var head []byte
	fields := 0
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line: the rest of it, whole.
			long := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil && err != io.EOF {
			return nil, false
		}
		head = append(head, line...)
		// A carriage return ends a line only before its line feed: one
		// that ends the message ("From: a\n\r") is a line of its own to
		// net/mail, an empty line to readers that take it for a break.
		text := line
		if t, ok := bytes.CutSuffix(text, []byte("\n")); ok {
			text = bytes.TrimSuffix(t, []byte("\r"))
		}
		if bytes.IndexByte(text, '\r') >= 0 || bytes.IndexByte(text, 0) >= 0 {
			return nil, false
		}
		switch {
		case len(text) == 0:
			return head, fields > 0 // the empty line that ends the section
		case text[0] == ' ' || text[0] == '\t':
			// Folded: the field goes on. A fold before any field
			// continues nothing; net/mail refuses it, and another reader
			// may skip it or take it for the first field.
			if fields == 0 {
				return nil, false
			}
		default:
			colon := bytes.IndexByte(text, ':')
			if colon <= 0 {
				return nil, false
			}
			for _, c := range text[:colon] {
				if c <= ' ' || c > '~' {
					return nil, false
				}
			}
			fields++
		}
		if err == io.EOF {
			return head, fields > 0
		}
	}
}

// want describes the JSON types a shape allows, for errors.
func (s *shape) want() string {
	var kinds []string
	if s.role != roleNone {
		kinds = append(kinds, "a string")
	}
	if s.members != nil {
		kinds = append(kinds, "an object")
	}
	if s.elem != nil {
		kinds = append(kinds, "an array")
	}
	return strings.Join(kinds, " or ")
}

// kindOf names the JSON type that starts with c, for errors.
func kindOf(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// where renders the current field for errors, e.g.
// personalizations[0].to[1].email, or "body" at the top.
func (in *inspection) where() string {
	if in.depth == 0 {
		return "body"
	}
	var b strings.Builder
	for i, st := range in.path() {
		if st.key == "" {
			b.WriteString("[" + strconv.Itoa(st.index) + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(st.key)
	}
	return b.String()
}
