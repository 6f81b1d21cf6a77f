package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// ListKeys returns the records f selects, in f.Order, paged by f.Limit and
// f.Offset, after f.After. Filtering, ordering and paging run in the
// database, so a page of a console list costs one page of rows, not every
// key.
func (s *DB) ListKeys(ctx context.Context, f ListFilter) ([]*Record, error) {
	where, args, err := s.listWhere(f)
	if err != nil {
		return nil, fmt.Errorf("keygate store: list keys: %w", err)
	}
	order, err := s.listOrder(f.Order)
	if err != nil {
		return nil, fmt.Errorf("keygate store: list keys: %w", err)
	}
	if f.After != "" {
		if f.Order != OrderCreated {
			return nil, fmt.Errorf("keygate store: list keys: after %q: only in the order of creation, not %q", f.After, f.Order)
		}
		// (created_at, id) of the key named, then every key past it in
		// that order: the index on created_at finds the first row.
		args = append(args, f.After)
		p := fmt.Sprintf("$%d", len(args))
		where += " AND (created_at, id) > (SELECT created_at, id FROM keys WHERE id = " + p + ")"
	}
	q := "SELECT " + keyColumns + " FROM keys WHERE " + where + " ORDER BY " + order
	if f.Limit > 0 {
		args = append(args, f.Limit, max(f.Offset, 0))
		q += fmt.Sprintf(" LIMIT $%d OFFSET $%d", len(args)-1, len(args))
	}
	rows, err := s.db.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("keygate store: list keys: %w", err)
	}
	defer rows.Close()
	var recs []*Record
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("keygate store: list keys: %w", err)
		}
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keygate store: list keys: %w", err)
	}
	return recs, nil
}

// CountKeys returns how many records f selects.
func (s *DB) CountKeys(ctx context.Context, f ListFilter) (int, error) {
	where, args, err := s.listWhere(f)
	if err != nil {
		return 0, fmt.Errorf("keygate store: count keys: %w", err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, s.d.rebind("SELECT COUNT(*) FROM keys WHERE "+where), args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("keygate store: count keys: %w", err)
	}
	return n, nil
}

// listOrder returns the ORDER BY clause of o. "x IS NULL" sorts unset
// times last in both engines (false before true).
func (s *DB) listOrder(o Order) (string, error) {
	switch o {
	case OrderCreated:
		return "created_at, id", nil
	case OrderNewest:
		return "created_at DESC, id", nil
	case OrderLastUsed:
		return "last_used_at IS NULL, last_used_at DESC, created_at DESC, id", nil
	case OrderName:
		return s.d.nocase("name") + ", created_at DESC, id", nil
	case OrderExpires:
		return "expires_at IS NULL, expires_at, created_at DESC, id", nil
	}
	return "", fmt.Errorf("order %q: want newest, last_used, name, expires or empty", o)
}

// listWhere builds the WHERE clause of f and its arguments ($1 …).
func (s *DB) listWhere(f ListFilter) (string, []any, error) {
	now := f.Now
	if now.IsZero() {
		now = time.Now()
	}
	var conds []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	const (
		notRevoked = "revoked_at IS NULL"
		revoked    = "revoked_at IS NOT NULL"
	)
	notExpired := func() string { return "(expires_at IS NULL OR expires_at > " + arg(clampNano(now)) + ")" }
	switch f.State {
	case "":
		if !f.All {
			conds = append(conds, notRevoked, notExpired())
		}
	case StateRevoked:
		conds = append(conds, revoked)
	case StateExpired:
		conds = append(conds, notRevoked, "expires_at <= "+arg(clampNano(now)))
	case StateDisabled:
		conds = append(conds, notRevoked, notExpired(), "disabled")
	case StateUsable:
		conds = append(conds, notRevoked, notExpired(), "NOT disabled")
	case StateExpiring:
		conds = append(conds, notRevoked, notExpired(), "NOT disabled", "expires_at <= "+arg(clampNano(f.ExpiringBefore)))
	default:
		return "", nil, fmt.Errorf("state %q: want revoked, expired, disabled, usable or expiring", f.State)
	}
	if f.Owner != "" {
		conds = append(conds, "owner = "+arg(f.Owner))
	}
	switch f.Env {
	case "":
	case "live", "test":
		conds = append(conds, "env = "+arg(f.Env))
	default:
		return "", nil, fmt.Errorf("env %q: want live or test", f.Env)
	}
	if f.Search != "" {
		// Both sides lowercased by the engine, so they fold alike: "müller"
		// finds "Müller". A search for a part of a value reads every row
		// the other conditions leave (an index cannot find "%x%"); the
		// owner's index still narrows a team's search to its keys.
		p := s.lower(arg(likePattern(f.Search)))
		var alts []string
		for _, col := range []string{"id", "name", "owner", "hint"} {
			alts = append(alts, fmt.Sprintf(`%s LIKE %s ESCAPE '\'`, s.lower(col), p))
		}
		conds = append(conds, "("+strings.Join(alts, " OR ")+")")
	}
	if len(conds) == 0 {
		return "1 = 1", args, nil
	}
	return strings.Join(conds, " AND "), args, nil
}

// likePattern matches s anywhere, its own % and _ taken literally.
func likePattern(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(s) + "%"
}
