package keygate

import (
	"time"

	"go.uber.org/zap"

	"github.com/keygate/caddy-keygate/store"
)

// A store that does not answer when a config loads (PostgreSQL down or
// failing over while a node starts) does not keep Caddy from loading the
// config: the handlers that use it answer 503 store_unavailable, as they
// do for a key they cannot look up, while the store is tried again every
// second; once it answers they are attached to it and serve as usual.
// Other errors (a malformed URI, a wrong password, a schema from a newer
// keygate) still refuse the config at once.

// storeRetryEvery is how often a store that did not answer is tried again.
var storeRetryEvery = time.Second

// storeWait opens a store in the background and attaches a handler to it.
type storeWait struct {
	stop chan struct{}
	done chan struct{}
}

// acquireOrWait returns the backend for uri, as acquireBackend does; or,
// when the store does not answer, nil and a storeWait that calls attach
// with the backend once it does. An error is a store that cannot be used
// at all.
func acquireOrWait(uri string, logger *zap.Logger, attach func(*backend) error) (*backend, *storeWait, error) {
	b, err := acquireBackend(uri, logger)
	switch {
	case err == nil:
		return b, nil, nil
	case !store.Unavailable(err):
		return nil, nil, err
	}
	logger.Warn("keygate: the store does not answer: requests that need it get 503 store_unavailable until it does; "+
		"it is tried again every second", zap.String("store", store.RedactURI(uri)), zap.Error(err))
	w := &storeWait{stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(uri, logger, attach)
	return nil, w, nil
}

func (w *storeWait) run(uri string, logger *zap.Logger, attach func(*backend) error) {
	defer close(w.done)
	tick := time.NewTicker(storeRetryEvery)
	defer tick.Stop()
	began, said := time.Now(), time.Now()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		b, err := acquireBackend(uri, logger)
		if err != nil {
			// Once a minute, so a mistyped host is not mistaken for an
			// outage for long.
			if time.Since(said) >= time.Minute {
				said = time.Now()
				logger.Error("keygate: the store still does not answer; requests that need it get 503 store_unavailable",
					zap.String("store", store.RedactURI(uri)), zap.Duration("for", time.Since(began).Round(time.Second)), zap.Error(err))
			}
			continue
		}
		select {
		case <-w.stop: // a reload or stop came first
			releaseBackend(uri, logger)
			return
		default:
		}
		if err := attach(b); err != nil {
			releaseBackend(uri, logger)
			logger.Error("keygate: attaching to the store once it answered failed; tried again", zap.Error(err))
			continue
		}
		logger.Info("keygate: the store answers: requests are served again", zap.String("store", store.RedactURI(uri)))
		return
	}
}

// close stops waiting; after it returns, attach is not called again.
func (w *storeWait) close() {
	if w == nil {
		return
	}
	close(w.stop)
	<-w.done
}
