// Package blocks measures the building blocks of keygate's hot path on their
// own, with nothing of keygate around them, to calibrate this machine against
// the figures quoted in the performance issue (CRC-32 ≈ 13 ns, SHA-256 ≈ 74 ns,
// a cache read ≈ 40 ns, a bucket check ≈ 30 ns). Run:
//
//	go test -run '^$' -bench . -benchmem ./bench/blocks
package blocks

import (
	"crypto/sha256"
	"hash/crc32"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/time/rate"
)

var key = []byte("kg_live_0A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v2W3x4Y5")

func BenchmarkCRC32(b *testing.B) {
	for b.Loop() {
		crc32.ChecksumIEEE(key[:51])
	}
}

func BenchmarkSHA256(b *testing.B) {
	for b.Loop() {
		sha256.Sum256(key)
	}
}

func BenchmarkRistrettoGet(b *testing.B) {
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *int]{NumCounters: 1e6, MaxCost: 1e5, BufferItems: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	v := 1
	c.Set(42, &v, 1)
	c.Wait()
	for b.Loop() {
		c.Get(42)
	}
}

func BenchmarkRateAllow(b *testing.B) {
	l := rate.NewLimiter(1e9, 1e9)
	now := time.Now()
	for b.Loop() {
		l.AllowN(now, 1)
	}
}

func BenchmarkTimeNow(b *testing.B) {
	for b.Loop() {
		time.Now()
	}
}
