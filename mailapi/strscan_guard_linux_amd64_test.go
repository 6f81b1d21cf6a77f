//go:build !purego

package mailapi

import (
	"bytes"
	"syscall"
	"testing"
)

// guarded returns a buffer of n bytes whose last byte is the last readable
// one: the page after it is unmapped, so a scan that reads past its slice
// faults instead of reading a neighbour's bytes unseen.
func guarded(t *testing.T, n int) []byte {
	t.Helper()
	page := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 2*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skip("mmap:", err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	if err := syscall.Mprotect(mem[page:], syscall.PROT_NONE); err != nil {
		t.Skip("mprotect:", err)
	}
	return mem[page-n : page : page]
}

// TestVectorScansStayInTheirSlice runs every vector scan on slices that end
// at an unreadable page, at each length up to 300 bytes (the 32-, 64- and
// 128-byte steps and the tails after them) with the byte it looks for at
// each position, or nowhere, and checks each answer against a byte loop.
func TestVectorScansStayInTheirSlice(t *testing.T) {
	if !blockScan {
		t.Skip("this CPU has no AVX2")
	}
	buf := guarded(t, 300)
	for n := 1; n <= len(buf); n++ {
		d := buf[len(buf)-n:]
		for at := -1; at < n; at++ {
			for i := range d {
				d[i] = 'x'
			}
			if at >= 0 {
				d[at] = '"'
			}
			want := n &^ 31
			if at >= 0 && at < want {
				want = at
			}
			if got := specialIndexAVX2(&d[0], n); got != want {
				t.Fatalf("specialIndexAVX2, %d bytes, quote at %d: %d, want %d", n, at, got, want)
			}
			wantPlain := n / 64
			if at >= 0 && at/64 < wantPlain {
				wantPlain = at / 64
			}
			if got := plainBlocks(d); got != wantPlain {
				t.Fatalf("plainBlocks, %d bytes, quote at %d: %d, want %d", n, at, got, wantPlain)
			}
			if n >= 64 {
				var out [5]blockMasks
				classify(d, out[:])
				crossBlocks(d, false)
			}
		}
	}
	delim := []byte("\r\n--b")
	for n := 1; n <= len(buf); n++ {
		d := buf[len(buf)-n:]
		for at := -1; at+len(delim) <= n; at++ {
			for i := range d {
				d[i] = '\r' // a candidate's first byte everywhere
			}
			if at >= 0 {
				copy(d[at:], delim)
			}
			if got, want := indexDelimiter(d, delim), bytes.Index(d, delim); got != want {
				t.Fatalf("indexDelimiter, %d bytes, delimiter at %d: %d, want %d", n, at, got, want)
			}
		}
	}
}
