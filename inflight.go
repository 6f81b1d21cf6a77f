package keygate

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"go.uber.org/zap"
)

// Requests passed on to the next handler and not answered yet, per store,
// so that the gateway's last flush counts those it will never see end.
//
// A request is counted when the next handler returns (forward). Caddy's
// grace_period bounds how long a stop waits for requests in flight; past
// it the apps stop, keygate writes its last counts and the process exits
// with those requests still waiting on the provider, which may have had
// their sends whole. Nothing counted them: not the key's usage, not its
// recipient quota (read from the store at the next start), not the log or
// the metrics. The same befell a request still in flight on a store a
// reload left behind once its 5 minutes were over (countLate). Now the
// last flush first counts each of them as a request that ended without an
// answer (what its client sees), its recipients kept where the provider
// may have had the whole send, and says how many it counted so.

// inflightShards spreads the registry's lock: every forwarded request
// takes one twice.
const inflightShards = 32

// inflight is one request passed on, as abandon needs it to count it.
type inflight struct {
	h          *Handler
	r          *http.Request
	ip         string
	t          time.Time
	recipients int64
	body       *sendBody
	wrote      *atomic.Bool
}

type inflightShard struct {
	mu sync.Mutex
	m  map[*request]inflight
	_  [64 - unsafe.Sizeof(sync.Mutex{}) - unsafe.Sizeof(map[*request]inflight(nil))]byte // one shard a cache line
}

// inflightSet holds a store's requests in flight.
type inflightSet struct {
	shards [inflightShards]inflightShard
}

func (s *inflightSet) shard(q *request) *inflightShard {
	// Requests are allocated in one size class, a few hundred bytes
	// apart: their addresses spread over the shards.
	return &s.shards[(uintptr(unsafe.Pointer(q))>>8)%inflightShards]
}

// add registers q until done.
func (s *inflightSet) add(q *request, f inflight) {
	sh := s.shard(q)
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[*request]inflight)
	}
	sh.m[q] = f
	sh.mu.Unlock()
}

// claim unregisters q, and reports whether its end is still its own to
// count: false if take counted it already. If it is, claim returns with
// q's shard locked, for the caller to count q and unlock it: take, which
// locks every shard in turn, then returns only once every count claimed
// before it is made, so the flush after it holds them.
func (s *inflightSet) claim(q *request) (*inflightShard, bool) {
	sh := s.shard(q)
	sh.mu.Lock()
	if _, ok := sh.m[q]; !ok {
		sh.mu.Unlock()
		return nil, false
	}
	delete(sh.m, q)
	return sh, true
}

// abandoned is a request abandon counted, with what it counted.
type abandoned struct {
	inflight
	q          *request
	recipients int64
}

// take removes every request in flight and returns them, with the
// recipients each may have sent. A request whose handler returns after
// this finds itself gone (claim) and counts nothing again.
func (s *inflightSet) take() []abandoned {
	var out []abandoned
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for q, f := range sh.m {
			// Read under the lock: the request's own end unregisters it
			// (claim) before its send body is given back.
			bodyOut := f.body == nil || f.body.readOut.Load()
			var n int64
			if f.recipients > 0 && mayHaveSent(http.StatusBadGateway, errAborted, bodyOut, f.wrote != nil && f.wrote.Load(), q.partlySent) {
				n = f.recipients
			}
			out = append(out, abandoned{f, q, n})
			delete(sh.m, q)
		}
		sh.mu.Unlock()
	}
	return out
}

// abandonInFlight counts every request of this store still in flight as
// ended without an answer (502, as the usage log and the metrics write a
// request whose connection closed with none), its recipients kept where the
// provider may have had the whole send, and says so. why is what ends the
// wait for them.
func (b *backend) abandonInFlight(why string) {
	left := b.inflight.take()
	if len(left) == 0 {
		return
	}
	var recipients int64
	for _, a := range left {
		a.h.record(a.r, a.q, a.ip, http.StatusBadGateway, a.recipients, a.t)
		recipients += a.recipients
	}
	b.logger.Warn(fmt.Sprintf("keygate: %s with %s still waiting on the next handler (the provider); they are counted "+
		"as ended without an answer, and their recipients as sent where the provider may have had the whole send",
		why, countOf(len(left), "request")),
		zap.Int("requests", len(left)), zap.Int64("recipients", recipients))
}
