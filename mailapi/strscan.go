package mailapi

import "math/bits"

// Long strings (html bodies, base64 attachments) are crossed 64 bytes at a
// time: a run of plain blocks is only tested (plainBlocks), and from the
// first block that is not plain one pass classifies each block into three
// bit masks (quotes, backslashes, control characters; vectorised where the
// CPU allows, see classify). The escapes are resolved with bit arithmetic,
// so finding a string's end in a body with an escape every few bytes takes
// no branch per escape (escapes other than \" and \\ are then checked in a
// short loop over their bits). token finds most short strings' ends itself
// (32 bytes a step with AVX2); the scalar loop in tokenFrom handles the last
// bytes of the body and anything needing a closer look (it reports the
// errors).

// blockMasks has bit k set where byte k of a 64-byte block is '"', '\\' or
// below 0x20.
type blockMasks struct {
	quote, backslash, control uint64
}

// classifyBatch is the most blocks one classify call covers: enough to
// amortise the call, few enough that classifying past a string's end
// costs little.
const classifyBatch = 16

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
func stringEnd(d []byte, i int) (end, next int, escaped bool) {
	var buf [classifyBatch]blockMasks
	carry := false
	// Most strings that get here end within a block or two (an html part of
	// a batch message); classify more at a time as a string goes on.
	for batch := 2; ; batch = min(2*batch, classifyBatch) {
		if !carry {
			// A run of plain blocks (base64, long runs of text) is
			// crossed without building its masks.
			i += 64 * plainBlocks(d[i:])
		}
		n := classify(d[i:], buf[:batch])
		if n == 0 {
			break
		}
		for _, m := range buf[:n] {
			if m.quote|m.backslash|m.control == 0 && !carry {
				i += 64 // all plain: base64, long runs of text
				continue
			}
			esc, nextCarry := escapes(m.backslash, carry)
			quotes := m.quote &^ esc
			before := ^uint64(0) // the bytes before the closing quote
			if quotes != 0 {
				before = quotes&-quotes - 1
			}
			if m.control&before != 0 {
				return -1, back(i, carry), escaped
			}
			if m.backslash&before != 0 || carry {
				escaped = true
				// Escaped quotes and backslashes are plain; check the rest.
				for rest := esc & before &^ (m.quote | m.backslash); rest != 0; rest &= rest - 1 {
					if escapeLen(d, i+bits.TrailingZeros64(rest)-1) == 0 {
						return -1, back(i, carry), escaped
					}
				}
			}
			if quotes != 0 {
				return i + bits.TrailingZeros64(quotes), 0, escaped
			}
			carry = nextCarry
			i += 64
		}
	}
	return -1, back(i, carry), escaped
}

// back steps from a block start to the backslash escaping its first byte,
// when there is one, so the scalar loop never starts inside an escape.
func back(i int, carry bool) int {
	if carry {
		return i - 1
	}
	return i
}
