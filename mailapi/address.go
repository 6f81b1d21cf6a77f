package mailapi

import (
	"errors"
	"io"
	"mime"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// Address parsing is most of what inspecting a send costs: net/mail
// allocates several times per address and a batch names hundreds. Nearly
// every address an SDK sends is plain: "a@example.org" or
// "Shop <a@example.org>" ("Müller <m@example.de>" too). Those are read here
// without allocating; anything else (quoted pairs, comments, groups,
// addresses that are not ASCII, bytes that are not UTF-8, odd spacing) goes
// to net/mail (addressParser), so what is accepted and what it means is
// always net/mail's answer. FuzzAddressFastPathAgreesWithNetMail holds the
// two together.

// addressParser is net/mail's parser with a decoder that takes a display
// name's encoded words in any charset (=?iso-2022-jp?b?…?=, as Japanese
// mail software writes names; =?windows-1252?q?…?=) without decoding them.
// keygate reads only the addr-spec, which no encoded word is part of and
// whose parsing does not depend on the name's decoded text; net/mail's
// default refuses every charset but UTF-8, US-ASCII and ISO-8859-1, which
// refused such a name's whole message. Raw MIME headers are read with it
// too.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// parseAddress returns the addr-spec of one address, as net/mail's Parse.
// The result may share v's memory.
func parseAddress(v string) (string, error) {
	if addr, ok := plainMailbox(v); ok {
		return addr, nil
	}
	if err := controlChars(v); err != nil {
		return "", err
	}
	a, err := addressParser.Parse(v)
	if err != nil {
		return "", err
	}
	return a.Address, nil
}

// parseAddressList calls each with the addr-spec of every address of an
// RFC 5322 list, as net/mail's ParseList, and returns how many there are.
// each may be nil; the strings it gets may share v's memory.
func parseAddressList(v string, each func(addr string)) (int, error) {
	if n, ok := plainList(v, each); ok {
		return n, nil
	}
	if err := controlChars(v); err != nil {
		return 0, err
	}
	list, err := addressParser.ParseList(v)
	if err != nil {
		return 0, err
	}
	if each != nil {
		for _, a := range list {
			each(a.Address)
		}
	}
	return len(list), nil
}

// errControl is the error of an address holding a control character.
var errControl = errors.New("mail: control character in address")

// controlChars refuses an address holding a control character other than
// a tab, which net/mail takes in a comment: "a@shop.example (x\r\nFrom:
// ceo@evil.example)" is one address to it, and a provider that writes the
// field into the From header as it is would send a second From. No plain
// mailbox holds one.
func controlChars(v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return errControl
		}
	}
	return nil
}

// plainList reads a list of plain mailboxes separated by commas. ok is false
// when any entry is not plain (or empty), and then each has not been called.
func plainList(v string, each func(string)) (n int, ok bool) {
	if strings.IndexByte(v, ',') < 0 { // one mailbox, the usual case
		addr, ok := plainMailbox(v)
		if ok && each != nil {
			each(addr)
		}
		return 1, ok
	}
	for rest := v; ; {
		entry, more, found := cutEntry(rest)
		if _, ok := plainMailbox(entry); !ok {
			return 0, false
		}
		n++
		if !found {
			break
		}
		rest = more
	}
	if each != nil {
		for rest := v; ; {
			entry, more, found := cutEntry(rest)
			addr, _ := plainMailbox(entry)
			each(addr)
			if !found {
				break
			}
			rest = more
		}
	}
	return n, true
}

// cutEntry cuts s at its first comma outside a quoted string, as
// strings.Cut does. A quoted string here holds no quoted pair (plainQuoted
// refuses them), so every '"' opens or closes one.
func cutEntry(s string) (entry, rest string, found bool) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				return s[:i], s[i+1:], true
			}
		}
	}
	return s, "", false
}

// plainMailbox reads "local@domain" or "Display Name <local@domain>",
// surrounded by spaces or tabs at most, where local and domain are ASCII
// dot-atoms and the display name is atoms (ASCII, UTF-8 or encoded words in
// a charset net/mail decodes itself) separated by spaces, or one quoted
// string. ok is
// false for anything else, which does not mean it is invalid.
func plainMailbox(s string) (addr string, ok bool) {
	s = trimBlanks(s)
	if s == "" {
		return "", false
	}
	if s[len(s)-1] != '>' {
		return s, plainAddrSpec(s)
	}
	var open int
	if s[0] == '"' {
		// "Doe, John" <j@example.org>: a quoted name, then the address.
		end := plainQuoted(s)
		if end < 0 {
			return "", false
		}
		open = end + 1
		for open < len(s) && (s[open] == ' ' || s[open] == '\t') {
			open++
		}
		if s[open] != '<' {
			return "", false
		}
	} else if open = strings.IndexByte(s, '<'); open < 0 || !plainPhrase(s[:open]) {
		return "", false
	}
	addr = s[open+1 : len(s)-1]
	return addr, plainAddrSpec(addr)
}

// plainQuoted returns the index of the quote that closes the quoted string
// s starts with, when what it quotes is plain: not empty, printable ASCII
// other than '\\' (no quoted pairs), spaces, tabs or UTF-8, as net/mail's
// qtext; else -1.
func plainQuoted(s string) int {
	utf := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			if i == 1 || utf && !utf8.ValidString(s[1:i]) {
				return -1
			}
			return i
		case c >= utf8.RuneSelf:
			utf = true
		case c == '\\' || c < ' ' && c != '\t' || c == 0x7f:
			return -1
		}
	}
	return -1
}

// trimBlanks removes spaces and tabs at both ends of s (strings.Trim with
// a cutset builds its set on every call).
func trimBlanks[T string | []byte](s T) T {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// plainAddrSpec reports whether s is local@domain with both parts ASCII
// dot-atoms: atext and single dots, neither first nor last. One pass over
// s, a table lookup a byte: most bytes are atext.
func plainAddrSpec(s string) bool {
	at := -1
	for i := 0; i < len(s); i++ {
		switch addrByte[s[i]] {
		case addrAtext:
		case addrDot:
			// Not first or last in its part: not at either end of s,
			// nor after or before '@' or another dot.
			if i == 0 || i == len(s)-1 || s[i-1] == '.' || s[i-1] == '@' || s[i+1] == '@' {
				return false
			}
		case addrAt:
			if at >= 0 || i == 0 || i == len(s)-1 {
				return false
			}
			at = i
		default:
			return false
		}
	}
	return at > 0
}

// The kinds of byte in an addr-spec plainAddrSpec tells apart.
const (
	addrOther uint8 = iota
	addrAtext
	addrDot
	addrAt
)

// addrByte is the kind of each byte in a plain addr-spec.
var addrByte = func() (t [256]uint8) {
	for c := range t {
		if atext[c] {
			t[c] = addrAtext
		}
	}
	t['.'], t['@'] = addrDot, addrAt
	return t
}()

// plainPhrase reports whether s is empty or atoms (dots allowed, as net/mail
// allows) separated by spaces. An atom may hold UTF-8 (RFC 6532), as
// net/mail's do: a name like "Müller" is plain, bytes that are not UTF-8 are
// not. An atom may be an RFC 2047 encoded word (=?utf-8?b?TcO8bGxlcg==?=, as
// Python's email.utils.formataddr writes a name that is not ASCII)
// (plainEncodedWord).
func plainPhrase(s string) bool {
	utf, encoded := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= utf8.RuneSelf:
			utf = true
		case c == '=' || c == '?':
			encoded = true
		case c != ' ' && c != '.' && !atext[c]:
			return false
		}
	}
	if encoded {
		for atom := range strings.SplitSeq(s, " ") {
			if !plainEncodedWord(atom) {
				return false
			}
		}
	}
	return !utf || utf8.ValidString(s)
}

// plainEncodedWord reports whether net/mail reads atom as a name without an
// error, the fast path's way: an atom shaped as an encoded word
// (=?charset?e?text?=) is plain when its charset is one net/mail decodes
// itself and its text is not empty (a name of one word that decodes to
// nothing is no name to net/mail, an error); any other atom net/mail takes
// as written. Words in other charsets go to addressParser, which takes them.
func plainEncodedWord(atom string) bool {
	if len(atom) < 4 || !strings.HasPrefix(atom, "=?") || !strings.HasSuffix(atom, "?=") {
		return true
	}
	charset, rest, _ := strings.Cut(atom[2:len(atom)-2], "?")
	if _, text, ok := strings.Cut(rest, "?"); ok && text == "" {
		return false
	}
	return strings.EqualFold(charset, "utf-8") || strings.EqualFold(charset, "us-ascii") || strings.EqualFold(charset, "iso-8859-1")
}

// atext marks RFC 5322's atext in ASCII: printable characters other than
// specials and space.
var atext = func() (t [256]bool) {
	for c := '!'; c <= '~'; c++ {
		t[c] = !strings.ContainsRune(`()<>[]:;@\,."`, c)
	}
	return t
}()
