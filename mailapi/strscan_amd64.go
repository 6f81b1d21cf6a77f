//go:build !purego

package mailapi

import "golang.org/x/sys/cpu"

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
