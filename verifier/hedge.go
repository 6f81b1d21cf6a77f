package verifier

import (
	"context"
	"time"
)

// hedgeInFlight bounds how many calls a hedged read has waiting at once.
const hedgeInFlight = 3

// hedgeLife is how long a call hedged after the first may wait for its
// answer, in intervals: long enough for a store that is slow but answers,
// short enough that a call started after the store came back is soon
// waiting.
const hedgeLife = 3

// hedged runs call, and while no call has answered, another one every
// interval (at most hedgeInFlight waiting at once), and returns the first
// success, else the first error once no call is waiting.
//
// The change log's reads are hedged so that a store that answers again is
// read within about an interval, whatever became of the calls made before:
// a call on a connection a network partition left dead (a firewall or NAT
// that forgot it, a handshake whose packets were dropped) hears nothing and
// waits out ctx, the store's 2 s timeout, and a gateway that waited for it
// served a key revoked elsewhere 1.7-1.8 s after the partition ended, past
// the 1 s bound. The first call may use all of ctx, so a store that is slow
// but answers is still read; the others give up after hedgeLife intervals,
// so one of them is always recent. A store that answers at once (the usual
// case, or one that refuses) is asked once: nothing is hedged.
func hedged[T any](ctx context.Context, interval time.Duration, call func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the calls still waiting
	type answer struct {
		v   T
		err error
	}
	answers := make(chan answer)
	waiting := 0
	// Every call's answer is taken, the last ones after hedged returned.
	defer func() {
		if waiting > 0 {
			go func(n int) {
				for range n {
					<-answers
				}
			}(waiting)
		}
	}()
	start := func(life time.Duration) {
		waiting++
		go func() {
			cctx := ctx
			if life > 0 {
				var cancel context.CancelFunc
				cctx, cancel = context.WithTimeout(ctx, life)
				defer cancel()
			}
			v, err := call(cctx)
			answers <- answer{v, err}
		}()
	}
	start(0)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var first error
	for {
		select {
		case a := <-answers:
			waiting--
			if a.err == nil {
				return a.v, nil
			}
			if first == nil {
				first = a.err
			}
			if waiting == 0 {
				return a.v, first
			}
		case <-tick.C:
			if waiting < hedgeInFlight && ctx.Err() == nil {
				start(hedgeLife * interval)
			}
		}
	}
}
