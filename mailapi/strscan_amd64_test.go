//go:build !purego

package mailapi

import (
	"bytes"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
)

// withoutBlockScan runs the rest of t with the word loop alone, as on a CPU
// without AVX2.
func withoutBlockScan(t *testing.T) {
	old := blockScan
	blockScan = false
	t.Cleanup(func() { blockScan = old })
}

// TestClassifyIsVEXOnly keeps classifyAVX2 free of legacy SSE instructions.
// Its first version loaded the three bytes it compares with through
// `MOVQ AX, X0`, an SSE instruction among AVX2 ones: on the AMD EPYC this
// project ran on in session 15 every call then paid ~270 ns (about 700
// cycles), which made a 200 KB attachment's walk 65 µs instead of 18 and
// a batch of 50 messages 63 µs instead of 22. Valgrind does not model the
// penalty, so bench/instr.sh never showed it; BenchmarkClassify does.
func TestClassifyIsVEXOnly(t *testing.T) {
	src, err := os.ReadFile("strscan_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	vector := regexp.MustCompile(`\b[XYZ]\d+\b`)
	// A macro's use is not an instruction; its body's lines are checked.
	macros := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#define (\w+)`).FindAllStringSubmatch(string(src), -1) {
		macros[m[1]] = true
	}
	for n, line := range strings.Split(string(src), "\n") {
		code, _, _ := strings.Cut(line, "//")
		fields := strings.Fields(code)
		if len(fields) == 0 || strings.HasSuffix(fields[0], ":") || fields[0] == "TEXT" || fields[0] == "#include" ||
			fields[0] == "#define" || macros[strings.SplitN(fields[0], "(", 2)[0]] {
			continue
		}
		if vector.MatchString(code) && !strings.HasPrefix(fields[0], "V") {
			t.Errorf("strscan_amd64.s:%d: %q is a legacy SSE instruction; use its VEX form (V%s)", n+1, strings.TrimSpace(code), fields[0])
		}
	}
}

// BenchmarkClassify classifies 200 KB of plain text in calls of
// classifyBatch blocks: the cost of a call as well as of a block.
func BenchmarkClassify(b *testing.B) {
	d := bytes.Repeat([]byte("abcdefghABCDEFGH"), 200*1024/16)
	var out [classifyBatch]blockMasks
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		for j := 0; j+64*classifyBatch <= len(d); j += 64 * classifyBatch {
			classify(d[j:], out[:])
		}
	}
}

// BenchmarkPlainBlocks crosses 200 KB of plain text (a base64 attachment)
// in one call, as stringEnd does before classifying.
func BenchmarkPlainBlocks(b *testing.B) {
	d := bytes.Repeat([]byte("abcdefghABCDEFGH"), 200*1024/16)
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		if plainBlocks(d) != len(d)/64 {
			b.Fatal("not all plain")
		}
	}
}

// TestPairIndexFindsTheFirstCandidate checks pairIndexAVX2 against a byte
// loop. indexDelimiter verifies each candidate, so a candidate found too
// early would only cost time, and one too late would miss a delimiter:
// this test sees both.
func TestPairIndexFindsTheFirstCandidate(t *testing.T) {
	if !blockScan {
		t.Skip("this CPU has no AVX2")
	}
	rng := rand.New(rand.NewPCG(15, 16))
	for round := range 50_000 {
		gap := 1 + rng.IntN(80)
		d := make([]byte, gap+rng.IntN(700))
		// A candidate every 256 positions or so, or every 4,096: past the
		// first 128-position steps.
		alphabet := "abcccccccccccccc"
		if rng.IntN(2) == 0 {
			alphabet += strings.Repeat("c", 48)
		}
		for i := range d {
			d[i] = alphabet[rng.IntN(len(alphabet))]
		}
		n := len(d) - gap
		if n <= 0 {
			continue
		}
		want := -1
		for i := 0; i < n&^31; i++ {
			if d[i] == 'a' && d[i+gap] == 'b' {
				want = i
				break
			}
		}
		if got := pairIndexAVX2(&d[0], n, 'a', 'b', gap); got != want {
			t.Fatalf("round %d: gap %d, %d positions: %d, want %d", round, gap, n, got, want)
		}
	}
}

// TestSpecialIndexFindsTheFirstSpecialByte checks specialIndexAVX2 against
// a byte loop on strings of up to ~1,000 bytes whose first quote,
// backslash or control character (if any) falls anywhere: in its first 32
// bytes, in a 128-byte step or in the 32-byte steps after the last one.
func TestSpecialIndexFindsTheFirstSpecialByte(t *testing.T) {
	if !blockScan {
		t.Skip("this CPU has no AVX2")
	}
	rng := rand.New(rand.NewPCG(21, 22))
	specials := []byte{'"', '\\', 0, 0x1f, '\n'}
	for round := range 100_000 {
		d := make([]byte, 1+rng.IntN(1000))
		for i := range d {
			d[i] = byte(0x20 + rng.IntN(0xe0)) // plain: printable ASCII and high bytes
			if d[i] == '"' || d[i] == '\\' {
				d[i] = 'x'
			}
		}
		for range rng.IntN(3) {
			d[rng.IntN(len(d))] = specials[rng.IntN(len(specials))]
		}
		n := len(d)
		want := n &^ 31
		for i := range n &^ 31 {
			if d[i] == '"' || d[i] == '\\' || d[i] < 0x20 {
				want = i
				break
			}
		}
		if got := specialIndexAVX2(&d[0], n); got != want {
			t.Fatalf("round %d, %d bytes: %d, want %d", round, n, got, want)
		}
	}
}

// TestCrossBlocksMatchesGeneric checks crossBlocksAVX2 against
// crossBlocksGeneric, entered with and without a carry, on blocks dense
// with quotes, runs of backslashes, escape letters and control characters,
// wherever in a block they fall.
func TestCrossBlocksMatchesGeneric(t *testing.T) {
	if !blockScan {
		t.Skip("this CPU has no AVX2")
	}
	rng := rand.New(rand.NewPCG(19, 20))
	const alphabet = "\"\\\\\\\\nnttuuu/bfrx0F9\x01\x1f\x7f\xff "
	for round := range 200_000 {
		// Hex digits after the blocks: an escape's \uXXXX that runs past
		// the last block must stop the scan, not be read from them.
		buf := []byte(strings.Repeat("a", 64*(1+rng.IntN(6))+8))
		d := buf[:len(buf)-8]
		dense := 1 + rng.IntN(80)
		for i := range d {
			if rng.IntN(dense) == 0 {
				d[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
		if rng.IntN(4) == 0 { // a \u near the last block's end
			k := len(d) - 1 - rng.IntN(8)
			d[k-1], d[k] = '\\', 'u'
		}
		carry := rng.IntN(2) == 0
		e, n, c, esc := crossBlocksAVX2(&d[0], len(d)/64, carry)
		we, wn, wc, wesc := crossBlocksGeneric(d, carry)
		if e != we || n != wn || c != wc || esc != wesc {
			t.Fatalf("round %d, carry %v: %q:\nAVX2    end %d, blocks %d, next %v, escaped %v\ngeneric end %d, blocks %d, next %v, escaped %v",
				round, carry, d, e, n, c, esc, we, wn, wc, wesc)
		}
	}
}
