package mailapi

import (
	"slices"
	"strings"
	"testing"
)

// isASCII reads words that may overlap; every length and every position of
// a high byte must still be seen.
func TestIsASCIIEveryLengthAndPosition(t *testing.T) {
	for n := 0; n <= 40; n++ {
		b := []byte(strings.Repeat("a", n))
		if !isASCII(b) {
			t.Fatalf("%d ASCII bytes: not ASCII", n)
		}
		for i := range b {
			b[i] = 0x80
			if isASCII(b) {
				t.Fatalf("length %d, high byte at %d: ASCII", n, i)
			}
			b[i] = 'a'
		}
	}
}

func TestBlankAgreesWithTrimSpace(t *testing.T) {
	for _, v := range []string{"", " ", "\t\n", "\u00a0", "\u3000 ", "a", " a", "\u00a0a", "é", "\x00", "\x7f"} {
		if got, want := blank(v), strings.TrimSpace(v) == ""; got != want {
			t.Errorf("blank(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestMemberMatchesNamesUnderCaseFolding: a key finds the member whose name
// it equals under Unicode case folding, as strings.EqualFold says, in any
// case and with the non-ASCII letters that fold to ASCII ones (the long s,
// the Kelvin sign); and nothing else.
func TestMemberMatchesNamesUnderCaseFolding(t *testing.T) {
	seen := map[*shape]bool{}
	var check func(s *shape)
	check = func(s *shape) {
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		for _, m := range s.members {
			n := m.name
			keys := []string{n, strings.ToUpper(n), strings.ToLower(n), n + "x", n[1:], "x" + n[1:],
				strings.Replace(strings.ToLower(n), "s", "\u017f", 1), strings.Replace(strings.ToLower(n), "k", "\u212a", 1)}
			for _, k := range keys {
				var want *member
				for i := range s.members {
					if strings.EqualFold(k, s.members[i].name) {
						want = &s.members[i]
						break
					}
				}
				if want == nil && s.headerNames {
					want = s.headerMember([]byte(k))
				}
				if got := s.member([]byte(k)); got != want {
					t.Errorf("key %q among %q: got %v, want %v", k, n, got, want)
				}
			}
			check(m.shape)
		}
		check(s.elem)
	}
	for _, d := range dialects {
		for _, e := range d.endpoints {
			check(e.shape)
		}
	}
}

// An inspection lives on the stack: a send allocates only what its Message
// keeps (its sender). Until session 15 the stack of field names was a slice
// of an array inside the inspection, and a struct holding a slice of itself
// always escapes: every send allocated its 416-byte inspection.
func TestInspectionStaysOnTheStack(t *testing.T) {
	d, _ := Lookup("sendgrid")
	body := []byte(`{"from":{"email":"a@shop.example"},"personalizations":[{"to":[{"email":"b@example.org"}]}]}`)
	if n := testing.AllocsPerRun(100, func() { d.Inspect("/v3/mail/send", jsonType, body) }); n > 2 {
		t.Errorf("%.0f allocations an inspection, want at most 2 (the senders)", n)
	}
}

// TestEscapedSendersAreKeptWhole: strings with escapes are decoded into one
// buffer that the next such string overwrites, so a sender kept to compare
// the next message's with must be a copy. Here every message's sender and
// recipient are escaped, and the two senders are as long as each other: a
// kept sender that shared the buffer would read as the second one's
// recipient, and the second sender would be taken for the first.
func TestEscapedSendersAreKeptWhole(t *testing.T) {
	d, _ := Lookup("postmark")
	body := `[{"From":"B\u00e4cker <a@shop.example.com>","To":"M\u00fcller <r1@example.org>"},` +
		`{"From":"B\u00e4cker <b@shop.example.com>","To":"M\u00fcller <r2@example.org>"},` +
		`{"From":"B\u00e4cker <b@shop.example.com>","To":"M\u00fcller <r3@example.org>"}]`
	m, err := d.Inspect("/email/batch", "application/json", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	// (A sender repeated by the next message is listed once.)
	if want := []string{"a@shop.example.com", "b@shop.example.com"}; !slices.Equal(m.Senders, want) || m.Recipients != 3 {
		t.Errorf("senders %q, %d recipients; want %q, 3", m.Senders, m.Recipients, want)
	}
	// As a single message: the sender list field.
	m, err = d.Inspect("/email", "application/json", []byte(`{"From":"B\u00e4cker <a@shop.example.com>","To":"M\u00fcller <r1@example.org>, Z\u00f6e <r2@example.org>"}`))
	if err != nil || !slices.Equal(m.Senders, []string{"a@shop.example.com"}) || m.Recipients != 2 {
		t.Errorf("single message: %+v, %v", m, err)
	}
}
