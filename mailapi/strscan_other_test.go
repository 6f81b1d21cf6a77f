//go:build !amd64 || purego

package mailapi

import "testing"

// withoutBlockScan: here there is no block scanner to turn off.
func withoutBlockScan(*testing.T) {}
