package keygate

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestARequestInFlightIsCountedOnceWhateverEndsFirst: requests ending while
// the last flush takes those in flight are each counted once, by their own
// end or by the take, and every count their ends claimed is made by the time
// take returns (the flush after it holds them).
func TestARequestInFlightIsCountedOnceWhateverEndsFirst(t *testing.T) {
	for range 50 {
		var s inflightSet
		const n = 200
		qs := make([]*request, n)
		for i := range qs {
			qs[i] = &request{}
			s.add(qs[i], inflight{})
		}
		var counted atomic.Int64
		var wg sync.WaitGroup
		for _, q := range qs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if sh, mine := s.claim(q); mine {
					counted.Add(1)
					sh.mu.Unlock()
				}
			}()
		}
		taken := len(s.take())
		atTake := counted.Load()
		wg.Wait()
		if got := counted.Load(); got != atTake || got+int64(taken) != n {
			t.Fatalf("%d counted by their ends (%d when take returned), %d by take; want %d in all, each end's before take returned",
				got, atTake, taken, n)
		}
	}
}
