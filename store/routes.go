package store

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"strings"
	"time"
)

// schemaRouteScopes is migration 3 of both engines.
//
//go:embed schema_route_scopes.sql
var schemaRouteScopes string

// schemaRoutePrefixes is migration 5 of both engines.
//
//go:embed schema_route_prefixes.sql
var schemaRoutePrefixes string

// RecordRoutePrefixes notes that a gateway's routes accept keys of these
// prefixes, seen at at (SeenAt only moves forward).
func (s *DB) RecordRoutePrefixes(ctx context.Context, prefixes []string, at time.Time) error {
	if len(prefixes) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, p := range prefixes {
			if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO route_prefixes (prefix, seen_at) VALUES ($1, $2)
				ON CONFLICT (prefix) DO UPDATE SET seen_at = excluded.seen_at
				WHERE excluded.seen_at > route_prefixes.seen_at`), p, clampNano(at.UTC())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("keygate store: record route prefixes: %w", err)
	}
	return nil
}

// RoutePrefixes returns the key prefixes seen at or after since, sorted.
func (s *DB) RoutePrefixes(ctx context.Context, since time.Time) ([]string, error) {
	prefixes, err := s.strings(ctx, `SELECT prefix FROM route_prefixes WHERE seen_at >= $1 ORDER BY prefix`, clampNano(since.UTC()))
	if err != nil {
		return nil, fmt.Errorf("keygate store: route prefixes: %w", err)
	}
	return prefixes, nil
}

// Owners returns up to limit distinct owners of the store's keys, sorted:
// one index seek per owner (a loose index scan), so it costs the number of
// owners, not of keys.
func (s *DB) Owners(ctx context.Context, limit int) ([]string, error) {
	owners, err := s.strings(ctx, `WITH RECURSIVE o(owner) AS (
			SELECT MIN(owner) FROM keys WHERE owner > ''
			UNION ALL
			SELECT (SELECT MIN(k.owner) FROM keys k WHERE k.owner > o.owner) FROM o WHERE o.owner IS NOT NULL
		)
		SELECT owner FROM o WHERE owner IS NOT NULL LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("keygate store: owners: %w", err)
	}
	return owners, nil
}

// strings runs a query of one text column and returns its rows ([] for
// none).
func (s *DB) strings(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// RecordRouteScopes notes that a gateway has these scope lines loaded: new
// lines are added, known ones have their SeenAt moved forward (never back).
func (s *DB) RecordRouteScopes(ctx context.Context, lines []RouteScope) error {
	if len(lines) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		// Not prepared: a handful of lines, and a statement prepared on
		// PostgreSQL would outlive the transaction on its server connection
		// (see stmt).
		query := s.d.rebind(`INSERT INTO route_scopes (scope, method, path, seen_at)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (scope, method, path) DO UPDATE SET seen_at = excluded.seen_at
			WHERE excluded.seen_at > route_scopes.seen_at`)
		for _, l := range lines {
			if _, err := tx.ExecContext(ctx, query, l.Scope, l.Method, l.Path, clampNano(l.SeenAt.UTC())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("keygate store: record route scopes: %w", err)
	}
	return nil
}

// RouteScopes returns the scope lines seen at or after since, ordered by
// scope, method and path.
func (s *DB) RouteScopes(ctx context.Context, since time.Time) ([]RouteScope, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(`SELECT scope, method, path, seen_at FROM route_scopes
		WHERE seen_at >= $1 ORDER BY scope, method, path`), clampNano(since.UTC()))
	if err != nil {
		return nil, fmt.Errorf("keygate store: route scopes: %w", err)
	}
	defer rows.Close()
	lines := []RouteScope{}
	for rows.Next() {
		var l RouteScope
		var at int64
		if err := rows.Scan(&l.Scope, &l.Method, &l.Path, &at); err != nil {
			return nil, fmt.Errorf("keygate store: route scopes: %w", err)
		}
		l.SeenAt = time.Unix(0, at).UTC()
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keygate store: route scopes: %w", err)
	}
	return lines, nil
}

// activityBatch bounds the ids one Activity query names.
const activityBatch = 500

// Activity returns, for each of ids that has any, the hourly allowed and
// denied counts from the hour containing since onwards, oldest hour first.
// Ids without usage are absent from the map.
func (s *DB) Activity(ctx context.Context, ids []string, since time.Time) (map[string][]HourUsage, error) {
	out := map[string][]HourUsage{}
	from := clampNano(since.UTC().Truncate(time.Hour))
	for len(ids) > 0 {
		batch := ids[:min(len(ids), activityBatch)]
		ids = ids[len(batch):]
		args := make([]any, 0, len(batch)+1)
		args = append(args, from)
		marks := make([]string, len(batch))
		for i, id := range batch {
			args = append(args, id)
			marks[i] = fmt.Sprintf("$%d", i+2)
		}
		rows, err := s.db.QueryContext(ctx, s.d.rebind(`SELECT key_id, hour, metric, n FROM usage
			WHERE key_id IN (`+strings.Join(marks, ", ")+`) AND hour >= $1
			  AND (metric = 'allowed' OR metric LIKE 'denied.%')
			ORDER BY key_id, hour`), args...)
		if err != nil {
			return nil, fmt.Errorf("keygate store: activity: %w", err)
		}
		err = func() error {
			defer rows.Close()
			for rows.Next() {
				var id, metric string
				var hour, n int64
				if err := rows.Scan(&id, &hour, &metric, &n); err != nil {
					return err
				}
				hours := out[id]
				if len(hours) == 0 || hours[len(hours)-1].Hour.UnixNano() != hour {
					hours = append(hours, HourUsage{Hour: time.Unix(0, hour).UTC()})
				}
				h := &hours[len(hours)-1]
				if metric == "allowed" {
					h.Allowed += n
				} else {
					if h.Denied == nil {
						h.Denied = map[string]int64{}
					}
					h.Denied[strings.TrimPrefix(metric, "denied.")] += n
				}
				out[id] = hours
			}
			return rows.Err()
		}()
		if err != nil {
			return nil, fmt.Errorf("keygate store: activity: %w", err)
		}
	}
	return out, nil
}
