package keygate

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// The roots quotaRoot remembers are bounded: past maxQuotaRoots keys the
// memory is emptied and a key reads its root from the store again, to the
// same answer. (A gateway whose keys are rotated daily for years would
// otherwise keep every rotated key's id for the life of the process.)
func TestQuotaRootsAreBounded(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	first, _ := issue(t, st, "mail.send")
	svc := keys.New(st, keys.Options{})
	rotated := func(id string) *store.Record {
		t.Helper()
		res, err := svc.Rotate(ctx, id, time.Hour, "test", "test")
		if err != nil {
			t.Fatal(err)
		}
		return res.Record
	}
	second := rotated(first.ID)
	third := rotated(second.ID)
	t.Cleanup(func() { quotaRoots.Clear(); quotaRootsHeld.Store(0) })

	for _, rec := range []*store.Record{second, third} {
		if root, err := quotaRoot(ctx, st, rec); err != nil || root != first.ID {
			t.Fatalf("root of %s: %q, %v; want %s", rec.ID, root, err, first.ID)
		}
	}
	quotaRootsHeld.Store(maxQuotaRoots)
	if root, err := quotaRoot(ctx, st, &store.Record{ID: "key_other", RotatedFrom: third.ID}); err != nil || root != first.ID {
		t.Fatalf("root past the bound: %q, %v", root, err)
	}
	if _, ok := quotaRoots.Load(second.ID); ok || quotaRootsHeld.Load() != 1 {
		t.Errorf("past the bound the roots were kept: held %d", quotaRootsHeld.Load())
	}
	if root, err := quotaRoot(ctx, st, third); err != nil || root != first.ID {
		t.Errorf("root read again: %q, %v", root, err)
	}
}
