//go:build !purego

package mailapi

import "testing"

// withoutBlockScan runs the rest of t with the word loop alone, as on a CPU
// without AVX2.
func withoutBlockScan(t *testing.T) {
	old := blockScan
	blockScan = false
	t.Cleanup(func() { blockScan = old })
}
