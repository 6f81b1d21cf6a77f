package mailapi

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestEscapesMatchesByteByByte checks the bit arithmetic of escapes against
// walking the block a byte at a time, on blocks dense with backslash runs.
func TestEscapesMatchesByteByByte(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for n := range 500_000 {
		var bs uint64
		switch n % 3 {
		case 0:
			bs = rng.Uint64()
		case 1:
			bs = rng.Uint64() & rng.Uint64() & rng.Uint64()
		default:
			bs = rng.Uint64() | rng.Uint64()
		}
		carry := rng.IntN(2) == 0
		var want uint64
		next := carry
		for j := range 64 {
			switch {
			case next:
				want |= 1 << j
				next = false
			case bs>>j&1 != 0:
				next = true
			}
		}
		got, gotNext := escapes(bs, carry)
		if got != want || gotNext != next {
			t.Fatalf("escapes(%064b, %v) = %064b, %v; want %064b, %v", bs, carry, got, gotNext, want, next)
		}
	}
}

// classifyBatch is how many blocks the tests and BenchmarkClassify
// classify a call.
const classifyBatch = 16

// TestClassifyMatchesGeneric checks the vectorised classify against the
// byte loop on every byte value in every position.
func TestClassifyMatchesGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	d := make([]byte, 64*classifyBatch+63)
	for round := range 200 {
		for i := range d {
			d[i] = byte(rng.Uint32())
			if round%2 == 0 && rng.IntN(3) == 0 {
				d[i] = `"\`[rng.IntN(2)]
			}
		}
		for _, off := range []int{0, 1, 63} {
			var got, want [classifyBatch]blockMasks
			n, wn := classify(d[off:], got[:]), classifyGeneric(d[off:], want[:])
			if n != wn || got != want {
				t.Fatalf("offset %d: classify gave %d blocks %x; want %d blocks %x", off, n, got, wn, want)
			}
		}
	}
	var out [2]blockMasks
	if n := classify(d[:127], out[:]); n != 1 {
		t.Fatalf("127 bytes: %d blocks", n)
	}
}

// TestPlainBlocksMatchesGeneric checks plainBlocks against the byte loop's
// masks: it counts the blocks up to the first with a quote, a backslash or
// a control character, wherever in its block (and in either half of a pair
// of blocks) that byte is.
func TestPlainBlocksMatchesGeneric(t *testing.T) {
	if !blockScan {
		t.Skip("this CPU or build has no block scanner")
	}
	rng := rand.New(rand.NewPCG(11, 12))
	d := make([]byte, 64*9+63)
	specials := []byte{'"', '\\', 0, 0x1f, '\n'}
	for round := range 20_000 {
		for i := range d {
			d[i] = byte(0x20 + rng.IntN(0xe0)) // plain: printable ASCII and high bytes
			if d[i] == '"' || d[i] == '\\' {
				d[i] = 'x'
			}
		}
		if round%10 != 0 {
			d[rng.IntN(len(d))] = specials[rng.IntN(len(specials))]
		}
		off := rng.IntN(64)
		want := 0
		for ; want < (len(d)-off)/64; want++ {
			var m [1]blockMasks
			classifyGeneric(d[off+64*want:], m[:])
			if m[0].quote|m[0].backslash|m[0].control != 0 {
				break
			}
		}
		if got := plainBlocks(d[off:]); got != want {
			t.Fatalf("round %d, offset %d: %d plain blocks, want %d", round, off, got, want)
		}
	}
}

// TestIndexDelimiterMatchesBytesIndex checks the multipart delimiter
// search against bytes.Index on binary bodies holding the delimiter, near
// misses of it (its first and last bytes at the right distance, a prefix)
// and neither, at every alignment and length around its 32 and 64 position
// steps.
func TestIndexDelimiterMatchesBytesIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for round := range 50_000 {
		delim := []byte("\r\n--" + strings.Repeat("b", rng.IntN(70)) + "Z")
		d := make([]byte, rng.IntN(400))
		for i := range d {
			d[i] = byte(rng.Uint32())
		}
		for range rng.IntN(4) {
			if len(d) < len(delim) {
				break
			}
			at := rng.IntN(len(d) - len(delim) + 1)
			switch rng.IntN(3) {
			case 0:
				copy(d[at:], delim)
			case 1: // first and last bytes only
				d[at], d[at+len(delim)-1] = delim[0], delim[len(delim)-1]
			default:
				copy(d[at:], delim[:len(delim)-1])
			}
		}
		off := rng.IntN(min(len(d), 40) + 1)
		if got, want := indexDelimiter(d[off:], delim), bytes.Index(d[off:], delim); got != want {
			t.Fatalf("round %d: indexDelimiter = %d, bytes.Index = %d (body %d bytes, delimiter %d)", round, got, want, len(d)-off, len(delim))
		}
	}
}

// TestStringsEndingWithTheBody: a string cut off by the end of the body, or
// closed by its last byte, at every length around the 32-byte steps.
func TestStringsEndingWithTheBody(t *testing.T) {
	for n := range 200 {
		agreesWithEncodingJSON(t, `"`+strings.Repeat("a", n))
		agreesWithEncodingJSON(t, `"`+strings.Repeat("a", n)+`"`)
		agreesWithEncodingJSON(t, `"`+strings.Repeat("a", n)+`\`)
	}
}

// TestLongStringsAgreeWithEncodingJSON reads strings of up to a few hundred
// bytes built from escapes, quotes, control characters and hex digits,
// so that every case crosses stringEnd's block boundaries: the reader
// accepts exactly what encoding/json accepts and decodes the same text,
// with the block scanner and, as on a CPU without AVX2, without it.
func TestLongStringsAgreeWithEncodingJSON(t *testing.T) {
	withEachScanner(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 10))
		pieces := []string{`a`, `bc`, `\"`, `\\`, `\n`, `\u003c`, `\u00e9`, `\/`, `\`, `"`, "\x01", `\x`, `\u12`, `0`, `u`, `<p class=\"x\">`, "é"}
		var b strings.Builder
		for range 100_000 {
			b.Reset()
			b.WriteByte('"')
			for n := rng.IntN(300); b.Len() < n; {
				p := pieces[rng.IntN(len(pieces))]
				if (p == `\` || p == `"` || p == "\x01" || p == `\x` || p == `\u12`) && rng.IntN(40) != 0 {
					continue // keep most strings valid, so their ends are compared
				}
				b.WriteString(p)
			}
			b.WriteByte('"')
			agreesWithEncodingJSON(t, b.String())
		}
	})
}

// TestLongStringErrorsNameTheByte: an error past a string's first blocks
// is reported where it is, as the byte loop reports it.
func TestLongStringErrorsNameTheByte(t *testing.T) {
	long := strings.Repeat(`<p class=\"x\">text</p>\n`, 20) // 500 bytes, escapes throughout
	at := 1 + len(long)
	for _, tc := range []struct {
		bad, want string
	}{
		{"\x01", "control character in a string"},
		{`\x`, "invalid escape"},
		{`\u12"`, "invalid \\u escape"},
	} {
		in := `"` + long + tc.bad + long + `"`
		want := fmt.Sprintf("body is not valid JSON: %s at byte %d", tc.want, at)
		for _, blocks := range []bool{true, false} {
			t.Run(fmt.Sprintf("%q blockScan=%v", tc.bad, blocks), func(t *testing.T) {
				if !blocks {
					withoutBlockScan(t)
				}
				if err := readValue(in); err == nil || err.Error() != want {
					t.Errorf("%v, want %q", err, want)
				}
			})
		}
	}
}

// TestStringEndAgreesWithAByteLoop checks stringEnd against a loop over a
// string's bytes, on strings dense with quotes, backslashes, escape letters
// (one-letter, \u, bad ones) and control characters: a closing quote it
// finds is the loop's, with the same answer to whether a backslash came
// before; where it hands over to the scalar loop, the loop from there ends
// as the loop from the start does. It runs with crossBlocks vectorised and
// with crossBlocksGeneric.
func TestStringEndAgreesWithAByteLoop(t *testing.T) {
	withEachScanner(t, stringEndAgreesWithAByteLoop)
}

// withEachScanner runs f with the block scanner (where the CPU and build
// have one) and without it, as on a CPU without AVX2.
func withEachScanner(t *testing.T, f func(t *testing.T)) {
	for _, blocks := range []bool{true, false} {
		t.Run(fmt.Sprint("blockScan=", blocks), func(t *testing.T) {
			if !blocks {
				withoutBlockScan(t)
			} else if !blockScan {
				t.Skip("this CPU or build has no block scanner")
			}
			f(t)
		})
	}
}

func stringEndAgreesWithAByteLoop(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	const alphabet = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\\\\\\nnnttu/bfrx0F9\x01\x1f "
	for round := range 100_000 {
		d := make([]byte, 64+rng.IntN(400))
		dense := 1 + rng.IntN(60) // one byte in dense is from the whole alphabet
		for i := range d {
			d[i] = 'a'
			if rng.IntN(dense) == 0 {
				d[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
		end, next, escaped := stringEnd(d, 0)
		wantEnd, wantBad := byteLoopEnd(d, 0)
		if end >= 0 {
			if end != wantEnd || wantBad {
				t.Fatalf("round %d: %q: end %d, the byte loop's %d (bad %v)", round, d, end, wantEnd, wantBad)
			}
			if want := bytes.IndexByte(d[:end], '\\') >= 0; escaped != want {
				t.Fatalf("round %d: %q: escaped %v, want %v", round, d, escaped, want)
			}
			continue
		}
		if gotEnd, gotBad := byteLoopEnd(d, next); gotEnd != wantEnd || gotBad != wantBad {
			t.Fatalf("round %d: %q: handed over at %d, from where the byte loop ends at %d (bad %v), not %d (bad %v)",
				round, d, next, gotEnd, gotBad, wantEnd, wantBad)
		}
	}
}

// byteLoopEnd finds the end of the string from d[i] a byte at a time: the
// index of its closing quote, or of the byte that makes it invalid (bad),
// or len(d) when the data ends first.
func byteLoopEnd(d []byte, i int) (end int, bad bool) {
	for i < len(d) {
		switch c := d[i]; {
		case c == '"':
			return i, false
		case c < 0x20:
			return i, true
		case c == '\\':
			if i+1 >= len(d) {
				return len(d), false
			}
			n := escapeLen(d, i)
			if n == 0 {
				return i, true
			}
			i += n
		default:
			i++
		}
	}
	return len(d), false
}

// BenchmarkStringEnd crosses the 20 KB html part of a newsletter as JSON
// encoders write it: with an escaped quote every ~20 bytes and a \n at each
// line's end; and, as PHP's json_encode and Python's json.dumps write text
// that is not ASCII by default, with a \uXXXX every few bytes.
func BenchmarkStringEnd(b *testing.B) {
	for _, bc := range []struct{ name, line string }{
		{"html", `<p class=\"lead\" style=\"margin:0 0 12px\">Item: this week's news, with a <a href=\"https://shop.example.com/n/1?utm_source=mail\">link</a> & more.</p>\n`},
		{"html-escaped-unicode", `<p>Gr\u00fc\u00dfe aus M\u00fcnchen! Unser Angebot f\u00fcr Sie: \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \u2014 jetzt 20 % g\u00fcnstiger.</p>\n`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := []byte(strings.Repeat(bc.line, 20_000/len(bc.line)) + `"` + strings.Repeat(" ", 64))
			b.SetBytes(int64(len(d)))
			for b.Loop() {
				if end, _, _ := stringEnd(d, 0); end != len(d)-65 {
					b.Fatalf("end %d, want %d", end, len(d)-65)
				}
			}
		})
	}
}
