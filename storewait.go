package keygate

import (
	"context"
	"fmt"
	"os"
	"sync"
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

// storeRetryEvery is how often a store that did not answer is tried again;
// one that answers and refuses (a wrong password) is tried every
// storeRefusedEvery.
var (
	storeRetryEvery   = time.Second
	storeRefusedEvery = 10 * time.Second
)

// storeWait opens a store in the background and attaches a handler to it.
type storeWait struct {
	stop chan struct{}
	// mu orders attach and close: after close, attach never runs, so the
	// handler's Cleanup sees the backend if and only if it was attached.
	mu      sync.Mutex
	stopped bool
}

// unanswered remembers, per store URI, when it last did not answer, so
// the handlers of one config wait for it once at load, not one after
// another.
var unanswered sync.Map // uri → time.Time

// acquireOrWait returns the backend for uri, as acquireBackend does; or,
// when the store does not answer, nil and a storeWait that calls attach
// with the backend once it does. An error is a store that cannot be used
// at all.
func acquireOrWait(uri string, logger *zap.Logger, attach func(*backend) error) (*backend, *storeWait, error) {
	if validating() {
		return nil, nil, checkStore(uri, logger)
	}
	var err error
	if at, ok := unanswered.Load(uri); !ok || time.Since(at.(time.Time)) > storeRetryEvery {
		var b *backend
		if b, err = acquireBackend(uri, logger); err == nil {
			unanswered.Delete(uri)
			return b, nil, nil
		}
		if !store.Unavailable(err) {
			return nil, nil, err
		}
		unanswered.Store(uri, time.Now())
	}
	logger.Warn("keygate: the store does not answer: requests that need it get 503 store_unavailable until it does; "+
		"it is tried again every second", zap.String("store", store.RedactURI(uri)), zap.Error(err))
	w := &storeWait{stop: make(chan struct{})}
	go w.run(uri, logger, attach)
	return nil, w, nil
}

func (w *storeWait) run(uri string, logger *zap.Logger, attach func(*backend) error) {
	began, said := time.Now(), time.Now()
	refused := false
	for {
		every := storeRetryEvery
		if refused {
			every = storeRefusedEvery // a wrong password is not hammered at
		}
		select {
		case <-w.stop:
			return
		case <-time.After(every):
		}
		b, err := acquireBackend(uri, logger)
		if err != nil {
			unanswered.Store(uri, time.Now())
			// A refusal is said at once: it needs the operator, not time.
			// Anything else once a minute, so a mistyped host is not
			// mistaken for an outage for long.
			refusal := !store.Unavailable(err)
			if refusal && !refused || time.Since(said) >= time.Minute {
				said = time.Now()
				logger.Error("keygate: the store still cannot be used; requests that need it get 503 store_unavailable",
					zap.String("store", store.RedactURI(uri)), zap.Duration("for", time.Since(began).Round(time.Second)), zap.Error(err))
			}
			refused = refusal
			continue
		}
		unanswered.Delete(uri)
		w.mu.Lock()
		if w.stopped { // a reload or stop came first
			w.mu.Unlock()
			releaseBackend(uri, logger)
			return
		}
		err = attach(b)
		w.mu.Unlock()
		if err != nil {
			releaseBackend(uri, logger)
			logger.Error("keygate: attaching to the store once it answered failed; tried again", zap.Error(err))
			continue
		}
		logger.Info("keygate: the store answers: requests are served again", zap.String("store", store.RedactURI(uri)))
		return
	}
}

// close stops waiting; after it returns, attach is not called again. It
// does not wait for an attempt in progress (a store that hangs takes its
// connect timeout to give up): that attempt's backend is released.
func (w *storeWait) close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.stopped = true
	close(w.stop)
	w.mu.Unlock()
}

// validating reports whether this process only validates a config (`caddy
// validate`, `caddy adapt --validate`): it provisions the config, then
// cleans it up without running it.
func validating() bool {
	return !configRuns() && len(os.Args) > 1 && (os.Args[1] == "validate" || os.Args[1] == "adapt")
}

// checkStore is what validating a config does with its store instead of
// opening it: the store is checked as opening it would (reachable, readable,
// keygate's, not from a newer keygate) and left as it is. Opening it would
// migrate an older store's schema, and operators validate a new binary's
// config before they deploy it: the older binary still serving the store
// could not start on it again. A store that does not answer is said, as
// for a config that runs, and validates.
func checkStore(uri string, logger *zap.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	version, err := store.Check(ctx, uri)
	switch {
	case store.Unavailable(err):
		logger.Warn("keygate: the store does not answer: a config using it still loads, and requests that need it get 503 store_unavailable until it does",
			zap.String("store", store.RedactURI(uri)), zap.Error(err))
	case err != nil:
		return fmt.Errorf("keygate: store %s: %w", store.RedactURI(uri), err)
	default:
		msg := "keygate: checked the key store (validating only: not opened for use)"
		switch {
		case version == 0:
			msg = "keygate: checked where the key store goes (validating only: it is made when a config that uses it runs)"
		case version < store.SchemaVersion():
			msg = "keygate: checked the key store (validating only: not opened for use, so its schema stays at schema_version; " +
				"it moves to schema_version_here when a config that uses it runs)"
		}
		logger.Info(msg, zap.String("store", store.RedactURI(uri)), zap.Int("schema_version", version),
			zap.Int("schema_version_here", store.SchemaVersion()))
	}
	return nil
}
