package verifier

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

var errNotImplemented = errors.New("fake store: not implemented")

// fakeStore keeps records in memory with a change log, and lets tests break
// or slow it. Only what the Verifier uses is implemented.
type fakeStore struct {
	mu      sync.Mutex
	recs    map[store.Digest]*store.Record
	changes []store.Change

	// err, when set, fails every call.
	err atomic.Pointer[error]
	// changesErr, when set, fails only Changes.
	changesErr atomic.Pointer[error]
	// afterRead runs between reading a record and returning it, so a test
	// can hold an answer back until after a revocation (nil: no delay).
	afterRead atomic.Pointer[func()]
	// block, when set, makes KeyByDigest wait for the context to end;
	// blockPoll does the same to LastChange, as a store that takes
	// connections and never answers.
	block, blockPoll atomic.Bool

	reads atomic.Int64

	// gen is the store's Generation (store.Replaceable): a test bumps it
	// to swap the database for another.
	gen atomic.Uint64
}

func (s *fakeStore) Generation() uint64 { return s.gen.Load() }

// replace swaps every record for recs, with a change log of its own, as a
// SQLite file replaced at its path is.
func (s *fakeStore) replace(recs ...*store.Record) {
	s.mu.Lock()
	s.recs = map[store.Digest]*store.Record{}
	s.changes = nil
	for _, r := range recs {
		s.recs[r.Digest] = r
		s.changes = append(s.changes, store.Change{Seq: int64(len(s.changes) + 1), Digest: r.Digest})
	}
	s.mu.Unlock()
	s.gen.Add(1)
}

func newFakeStore() *fakeStore {
	return &fakeStore{recs: map[store.Digest]*store.Record{}}
}

// put stores rec (replacing any record with its digest) and logs a change,
// as a real store does in one transaction.
func (s *fakeStore) put(rec *store.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[rec.Digest] = rec
	s.changes = append(s.changes, store.Change{Seq: int64(len(s.changes) + 1), Digest: rec.Digest})
}

// revoke replaces d's record with a revoked copy; records are never
// modified in place because the Verifier shares them.
func (s *fakeStore) revoke(d store.Digest) {
	s.mu.Lock()
	rec := s.recs[d].Clone()
	s.mu.Unlock()
	now := time.Now()
	rec.RevokedAt = &now
	s.put(rec)
}

func (s *fakeStore) failWith(err error) {
	if err == nil {
		s.err.Store(nil)
		return
	}
	s.err.Store(&err)
}

func (s *fakeStore) failure() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *fakeStore) KeyByDigest(ctx context.Context, d store.Digest) (*store.Record, error) {
	s.reads.Add(1)
	if s.block.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err := s.failure(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	rec, ok := s.recs[d]
	s.mu.Unlock()
	if f := s.afterRead.Load(); f != nil {
		(*f)()
	}
	if !ok {
		return nil, store.ErrNotFound
	}
	return rec, nil
}

func (s *fakeStore) LastChange(ctx context.Context) (int64, error) {
	if s.blockPoll.Load() {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	if err := s.failure(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.changes)), nil
}

func (s *fakeStore) Changes(_ context.Context, after int64) ([]store.Change, error) {
	if err := s.failure(); err != nil {
		return nil, err
	}
	if p := s.changesErr.Load(); p != nil {
		return nil, *p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.Change(nil), s.changes[min(after, int64(len(s.changes))):]...), nil
}

func (s *fakeStore) CreateKey(context.Context, *store.Record, store.Event) error {
	return errNotImplemented
}

func (s *fakeStore) Key(context.Context, string) (*store.Record, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) ListKeys(context.Context, store.ListFilter) ([]*store.Record, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) CountKeys(context.Context, store.ListFilter) (int, error) {
	return 0, errNotImplemented
}

func (s *fakeStore) UpdateKey(context.Context, string, *store.Event, func(*store.Record) error) (*store.Record, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) RotateKey(context.Context, string, time.Time, *store.Event, func(*store.Record) (*store.Record, error)) (*store.Record, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) AddUsage(context.Context, []store.UsageDelta) error { return errNotImplemented }

func (s *fakeStore) PruneUsage(context.Context, time.Time) (int64, error) {
	return 0, errNotImplemented
}

func (s *fakeStore) Usage(context.Context, string, time.Time) (*store.UsageReport, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) Recipients(context.Context, string, time.Time) (int64, error) {
	return 0, errNotImplemented
}

func (s *fakeStore) Events(context.Context, store.EventFilter) ([]store.Event, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) Activity(context.Context, []string, time.Time) (map[string][]store.HourUsage, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) RecordRouteScopes(context.Context, []store.RouteScope) error {
	return errNotImplemented
}

func (s *fakeStore) RouteScopes(context.Context, time.Time) ([]store.RouteScope, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) Owners(context.Context, int) ([]string, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) RecordRoutePrefixes(context.Context, []string, time.Time) error {
	return errNotImplemented
}

func (s *fakeStore) RoutePrefixes(context.Context, time.Time) ([]string, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) ConsoleSecret(context.Context, string, string) (string, error) {
	return "", errNotImplemented
}

func (s *fakeStore) PutFlash(context.Context, string, string, time.Time, time.Time) error {
	return errNotImplemented
}

func (s *fakeStore) TakeFlash(context.Context, string, time.Time) (string, error) {
	return "", errNotImplemented
}

func (s *fakeStore) Answer(context.Context, string, time.Time) (*store.Answer, error) {
	return nil, errNotImplemented
}

func (s *fakeStore) PruneAnswers(context.Context, time.Time) (int64, error) {
	return 0, errNotImplemented
}

func (s *fakeStore) Close() error { return nil }

// notifyingStore adds store.Notifier, as the PostgreSQL store does.
type notifyingStore struct {
	*fakeStore
	ch chan struct{}
}

func (s notifyingStore) Notify() <-chan struct{} { return s.ch }

var (
	_ store.Store    = (*fakeStore)(nil)
	_ store.Notifier = notifyingStore{}
)
