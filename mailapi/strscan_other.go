//go:build !amd64 || purego

package mailapi

import "bytes"

// blockScan says whether long strings are crossed by stringEnd. Without
// vector instructions token's word-at-a-time loop is faster.
const blockScan = false

// classify fills out with the masks of the 64-byte blocks at the start of d,
// as many as fit in both, and returns how many it filled.
func classify(d []byte, out []blockMasks) int { return classifyGeneric(d, out) }

// crossBlocks crosses the whole 64-byte blocks at the start of d, the first
// entered with carry.
func crossBlocks(d []byte, carry bool) (end, blocks int, next, escaped bool) {
	return crossBlocksGeneric(d, carry)
}

// plainBlocks is never called without the block scanner.
func plainBlocks([]byte) int { return 0 }

// indexDelimiter returns the index of the first delim in b, or -1.
func indexDelimiter(b, delim []byte) int { return bytes.Index(b, delim) }

// specialIndexAVX2 is never called without the block scanner.
func specialIndexAVX2(*byte, int) int { panic("no AVX2") }
