//go:build !purego

package mailapi

import (
	"bytes"

	"golang.org/x/sys/cpu"
)

// blockScan says whether long strings are crossed by stringEnd. Without
// vector instructions token's word-at-a-time loop is faster.
var blockScan = cpu.X86.HasAVX2

// classify fills out with the masks of the 64-byte blocks at the start of d,
// as many as fit in both, and returns how many it filled.
func classify(d []byte, out []blockMasks) int {
	n := min(len(d)/64, len(out))
	if n == 0 {
		return 0
	}
	if !blockScan {
		return classifyGeneric(d, out)
	}
	classifyAVX2(&d[0], n, &out[0])
	return n
}

// classifyAVX2 classifies n 64-byte blocks from p into out[0:n].
//
//go:noescape
func classifyAVX2(p *byte, n int, out *blockMasks)

// crossBlocks crosses the whole 64-byte blocks at the start of d, the first
// entered with carry, as crossBlocksGeneric does.
func crossBlocks(d []byte, carry bool) (end, blocks int, next, escaped bool) {
	n := len(d) / 64
	if n == 0 || !blockScan {
		return crossBlocksGeneric(d, carry)
	}
	return crossBlocksAVX2(&d[0], n, carry)
}

// crossBlocksAVX2 is crossBlocks over the n blocks from p.
//
//go:noescape
func crossBlocksAVX2(p *byte, n int, carry bool) (end, blocks int, next, escaped bool)

// plainBlocks returns how many whole 64-byte blocks at the start of d hold
// only plain bytes (no '"', '\\' or control character), up to the first
// that does not.
func plainBlocks(d []byte) int {
	n := len(d) / 64
	if n == 0 || !blockScan {
		return 0
	}
	return plainBlocksAVX2(&d[0], n)
}

// plainBlocksAVX2 counts the plain 64-byte blocks of the n from p.
//
//go:noescape
func plainBlocksAVX2(p *byte, n int) int

// indexDelimiter returns the index of the first delim in b, or -1. A
// multipart delimiter (CRLF "--" boundary) is looked for by its first and
// last bytes at once, 128 positions a step: bytes.Index restarts at every
// CR, which a binary attachment holds every 256 bytes and a MIME-wrapped
// one every 78.
func indexDelimiter(b, delim []byte) int {
	if !blockScan || len(delim) < 2 {
		return bytes.Index(b, delim)
	}
	gap := len(delim) - 1
	i := 0
	for {
		n := len(b) - gap - i // the positions left where delim may start
		if n < 32 {
			break
		}
		k := pairIndexAVX2(&b[i], n, delim[0], delim[gap], gap)
		if k < 0 {
			i += n &^ 31
			break
		}
		if i += k; bytes.Equal(b[i:i+len(delim)], delim) {
			return i
		}
		i++
	}
	if k := bytes.Index(b[i:], delim); k >= 0 {
		return i + k
	}
	return -1
}

// pairIndexAVX2 finds the first i < n&^31 with p[i] == first and
// p[i+gap] == last, or -1.
//
//go:noescape
func pairIndexAVX2(p *byte, n int, first, last byte, gap int) int

// specialIndexAVX2 returns the index of the first byte that is not plain
// among the first n&^31 from p, or n&^31.
//
//go:noescape
func specialIndexAVX2(p *byte, n int) int
