//go:build race

package keygate

// raceDetector is whether the race detector is on: it makes sync.Pool drop
// items at random, so tests of pooled reuse skip.
const raceDetector = true
