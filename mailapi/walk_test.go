package mailapi

import (
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
