package mailapi

import "math/bits"

// Long strings (html bodies, base64 attachments) are crossed 64 bytes at a
// time: a run of plain blocks is only tested (plainBlocks), and from the
// first block that is not plain each block is split into three bit masks
// (quotes, backslashes, control characters) and decided in one pass
// (crossBlocks, vectorised where the CPU allows). The escapes are resolved
// with bit arithmetic, so finding a string's end in a body with an escape
// every few bytes takes no branch per escape; the bytes escaped by a
// backslash, other than quotes and backslashes, are checked in a short loop
// over their bits. token finds most short strings' ends itself (32 bytes a
// step with AVX2); the scalar loop in tokenFrom handles the last bytes of
// the body and anything needing a closer look (it reports the errors).

// blockMasks has bit k set where byte k of a 64-byte block is '"', '\\' or
// below 0x20.
type blockMasks struct {
	quote, backslash, control uint64
}

// classifyGeneric is classify without vector instructions.
func classifyGeneric(d []byte, out []blockMasks) int {
	n := min(len(d)/64, len(out))
	for k := range n {
		var m blockMasks
		for j, c := range d[k*64 : k*64+64] {
			bit := uint64(1) << j
			switch {
			case c == '"':
				m.quote |= bit
			case c == '\\':
				m.backslash |= bit
			case c < 0x20:
				m.control |= bit
			}
		}
		out[k] = m
	}
	return n
}

// escapes takes the backslash mask of a block and whether its first byte is
// escaped (by an odd run of backslashes ending the block before), and
// returns the mask of escaped bytes (each byte that follows an escaping
// backslash) and whether the next block's first byte is escaped. A run of
// backslashes alternates escaper, escaped; the run's parity is found by
// adding its odd-position starts into it, so the carry out of the
// subtraction does the counting.
func escapes(backslash uint64, carry bool) (escaped uint64, next bool) {
	const odd = 0xAAAAAAAAAAAAAAAA
	var in uint64
	if carry {
		in = 1
	}
	bs := backslash &^ in // an escaped backslash escapes nothing
	// Each run of backslashes: a run starting on an even bit flips the odd
	// bits after it, one starting on an odd bit the even ones.
	ends := ((bs << 1) | odd) - bs
	escapeAndEscaped := ends ^ odd
	escaped = escapeAndEscaped ^ (bs | in)
	escaper := escapeAndEscaped & bs
	return escaped, escaper>>63 != 0
}

// stringEnd crosses a string from d[i], which is not inside an escape, 64
// bytes at a time. It returns the position of the closing quote and
// whether the string holds escapes; or end -1 and where the scalar loop goes
// on: fewer than 64 bytes remain, or the block at next holds a control
// character or an escape that is not plain (the scalar loop reports it).
// next is never inside an escape.
//
// Runs of plain blocks are only tested (plainBlocks); the blocks after them
// are crossed by crossBlocks, which stops at a block holding a control
// character or a bad escape before the string's end, or a \uXXXX that runs
// past its last whole block. That block is looked at here (blockEnd), and
// crossBlocks goes on after it.
func stringEnd(d []byte, i int) (end, next int, escaped bool) {
	carry := false
	for {
		if !carry {
			// A run of plain blocks (base64, long runs of text) is
			// crossed without building its masks.
			i += 64 * plainBlocks(d[i:])
		}
		end, n, c, esc := crossBlocks(d[i:], carry)
		escaped = escaped || esc
		if end >= 0 {
			return i + end, 0, escaped
		}
		i, carry = i+64*n, c
		var m [1]blockMasks
		if classify(d[i:], m[:]) == 0 {
			break // fewer than 64 bytes left
		}
		end, c, esc, ok := blockEnd(d, i, m[0], carry)
		escaped = escaped || esc
		if !ok {
			break
		}
		if end >= 0 {
			return i + end, 0, escaped
		}
		i, carry = i+64, c
	}
	return -1, back(i, carry), escaped
}

// blockEnd decides the 64-byte block at d[i:], whose masks are m and whose
// first byte is escaped when carry is set. It returns the index in the
// block of the string's closing quote, or -1 and the carry into the next
// block; whether a backslash comes before the end; and ok false when,
// before the end, the block holds a control character or an escape that is
// not valid within d: the scalar loop takes over there and reports it.
func blockEnd(d []byte, i int, m blockMasks, carry bool) (end int, next, escaped, ok bool) {
	esc, next := escapes(m.backslash, carry)
	quotes := m.quote &^ esc
	before := ^uint64(0) // the bytes before the closing quote
	if quotes != 0 {
		before = quotes&-quotes - 1
	}
	if m.control&before != 0 {
		return -1, carry, false, false
	}
	if m.backslash&before != 0 || carry {
		escaped = true
		// Escaped quotes and backslashes are plain; check the rest.
		for rest := esc & before &^ (m.quote | m.backslash); rest != 0; rest &= rest - 1 {
			if !validEscaped(d, i+bits.TrailingZeros64(rest)) {
				return -1, carry, escaped, false
			}
		}
	}
	if quotes != 0 {
		return bits.TrailingZeros64(quotes), next, escaped, true
	}
	return -1, next, escaped, true
}

// crossBlocksGeneric is crossBlocks without vector instructions: it crosses
// the whole 64-byte blocks of d, the first entered with carry, until the
// string ends in one (its index in d) or one needs a closer look (blockEnd
// says so; an escape whose \uXXXX runs past the last whole block does); it
// returns end -1, the blocks crossed before that one and the carry into it.
// escaped says a backslash came before.
func crossBlocksGeneric(d []byte, carry bool) (end, blocks int, next, escaped bool) {
	d = d[:len(d)&^63]
	var m [1]blockMasks
	for blocks = 0; classifyGeneric(d[64*blocks:], m[:]) == 1; blocks++ {
		e, c, esc, ok := blockEnd(d, 64*blocks, m[0], carry)
		escaped = escaped || esc
		if !ok {
			return -1, blocks, carry, escaped
		}
		if e >= 0 {
			return 64*blocks + e, blocks, c, escaped
		}
		carry = c
	}
	return -1, blocks, carry, escaped
}

// back steps from a block start to the backslash escaping its first byte,
// when there is one, so the scalar loop never starts inside an escape.
func back(i int, carry bool) int {
	if carry {
		return i - 1
	}
	return i
}
