package keygate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/keygate/caddy-keygate/store"
)

// A rotation makes a new key with the old one's settings, its quota
// included, and the old key keeps working until its grace period ends. The
// two are one integration: its recipient quota is one count, not one each.
// Each key's quota was counted by its own id, so a rotation gave the new key
// a whole quota for the rest of the period, whatever the old one had sent,
// and the old key's grace period another (`caddy keys rotate` of a key with
// a 3/d quota that had sent 3 today let the new key send 3 more).
//
// Now a quota is counted by the id of the first key of the rotation's line
// (its root): the key itself unless it was rotated from another, so keys
// never rotated are counted as before. A counter is loaded from the sends of
// every key of the line in the period.

// maxLineage bounds the keys of one rotation line that a quota reads: a key
// rotated every day for two months.
const maxLineage = 64

// quotaRoots remembers the root of the rotated keys that have sent with a
// quota in this process (RotatedFrom never changes, so neither does a
// key's root); a key never rotated from another is its own and not kept.
// It holds at most maxQuotaRoots keys: past that it is emptied, and each
// key reads its root from the store again once.
var (
	quotaRoots     sync.Map // key id → root id
	quotaRootsHeld atomic.Int64
)

const maxQuotaRoots = 1 << 16

// quotaRoot returns the id a key's quota is counted under: the first key of
// its rotation line.
func quotaRoot(ctx context.Context, st store.Store, rec *store.Record) (string, error) {
	if rec.RotatedFrom == "" {
		return rec.ID, nil
	}
	if root, ok := quotaRoots.Load(rec.ID); ok {
		return root.(string), nil
	}
	root := rec.ID
	for from, steps := rec.RotatedFrom, 0; from != "" && steps < maxLineage; steps++ {
		prev, err := st.Key(ctx, from)
		if errors.Is(err, store.ErrNotFound) {
			break // a line a restore cut: counted from the key before the cut
		}
		if err != nil {
			return "", fmt.Errorf("keygate: quota of %s: reading the key it was rotated from: %w", rec.ID, err)
		}
		root, from = prev.ID, prev.RotatedFrom
	}
	if quotaRootsHeld.Add(1) > maxQuotaRoots {
		quotaRoots.Clear()
		quotaRootsHeld.Store(1)
	}
	quotaRoots.Store(rec.ID, root)
	return root, nil
}

// lineage returns the ids of the keys of root's rotation line, root first.
func lineage(ctx context.Context, st store.Store, root string) ([]string, error) {
	ids := []string{root}
	cur, err := st.Key(ctx, root)
	for err == nil && cur.RotatedTo != "" && len(ids) < maxLineage {
		ids = append(ids, cur.RotatedTo)
		cur, err = st.Key(ctx, cur.RotatedTo)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("keygate: quota of %s: reading the keys it was rotated to: %w", root, err)
	}
	return ids, nil
}
