package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// usageRows is one AddUsage batch as rows: the deltas' counters merged per
// (key, hour, metric) and (key, hour, ip), one last-use per key, each list
// in one global order. Every writer takes row locks in that order, usage
// before usage_ips before keys, so batches from several nodes never wait on
// each other in a cycle (PostgreSQL would abort one as a deadlock).
type usageRows struct {
	metrics []counterRow
	ips     []counterRow
	touches []touchRow
}

// counterRow adds n to one hourly counter; name is a metric or a client IP.
type counterRow struct {
	key  string
	hour int64
	name string
	n    int64
}

// touchRow moves a key's last_used_at forward to used, and last_ip to ip
// when ip is set.
type touchRow struct {
	key  string
	used int64
	ip   string
}

func newUsageRows(deltas []UsageDelta) (*usageRows, error) {
	u := &usageRows{}
	for _, d := range deltas {
		hour, err := unixNano("usage hour", d.Hour.UTC().Truncate(time.Hour))
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", d.KeyID, err)
		}
		for metric, n := range d.Counts {
			if n != 0 {
				u.metrics = append(u.metrics, counterRow{d.KeyID, hour, metric, n})
			}
		}
		for ip, n := range d.IPs {
			if n != 0 {
				u.ips = append(u.ips, counterRow{d.KeyID, hour, ip, n})
			}
		}
		if d.LastUsedAt.IsZero() {
			continue
		}
		used, err := unixNano("last used at", d.LastUsedAt)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", d.KeyID, err)
		}
		u.touches = append(u.touches, touchRow{d.KeyID, used, d.LastIP})
	}
	u.metrics = mergeCounters(u.metrics)
	u.ips = mergeCounters(u.ips)
	u.touches = latestTouches(u.touches)
	return u, nil
}

// mergeCounters sorts rows and adds up those for the same counter.
func mergeCounters(rows []counterRow) []counterRow {
	slices.SortFunc(rows, func(a, b counterRow) int {
		return cmp.Or(strings.Compare(a.key, b.key), cmp.Compare(a.hour, b.hour), strings.Compare(a.name, b.name))
	})
	return mergeAdjacent(rows, func(a, b counterRow) bool {
		return a.key == b.key && a.hour == b.hour && a.name == b.name
	}, func(into *counterRow, r counterRow) { into.n += r.n })
}

// latestTouches keeps one row per key: its latest use, with the client IP
// of the latest use that had one.
func latestTouches(rows []touchRow) []touchRow {
	slices.SortFunc(rows, func(a, b touchRow) int {
		return cmp.Or(strings.Compare(a.key, b.key), cmp.Compare(a.used, b.used))
	})
	return mergeAdjacent(rows, func(a, b touchRow) bool { return a.key == b.key }, func(into *touchRow, r touchRow) {
		into.used = r.used
		if r.ip != "" {
			into.ip = r.ip
		}
	})
}

// mergeAdjacent folds each run of sorted rows that same reports equal into
// its first row.
func mergeAdjacent[T any](rows []T, same func(a, b T) bool, fold func(into *T, r T)) []T {
	out := rows[:0]
	for _, r := range rows {
		if n := len(out); n > 0 && same(out[n-1], r) {
			fold(&out[n-1], r)
			continue
		}
		out = append(out, r)
	}
	return out
}

// counterTable is one of the hourly counter tables a batch adds to.
type counterTable struct {
	table string
	rows  []counterRow
	// insertRow adds one row (its values $1 to $4) and insertArrays every
	// row (arrays $1 to $4, applied in their order).
	insertRow, insertArrays string
	// capped: a key's hour takes a new row only while it holds fewer than
	// MaxHourIPs (insertArrays sees to it itself; writeIPRows for
	// insertRow).
	capped bool
}

// counters lists the batch's counter tables in lock order.
func (u *usageRows) counters() []counterTable {
	return []counterTable{
		{"usage", u.metrics, addMetricRow, addMetricArrays, false},
		{"usage_ips", u.ips, addIPRow, addIPArrays, true},
	}
}

// addTo adds n to an existing counter, so concurrent writers never lose an
// update.
const addTo = `ON CONFLICT (key_id, hour, %[2]s) DO UPDATE SET n = %[1]s.n + excluded.n`

var (
	addMetricRow    = fmt.Sprintf("INSERT INTO usage (key_id, hour, metric, n) VALUES ($1, $2, $3, $4) "+addTo, "usage", "metric")
	addMetricArrays = fmt.Sprintf(`INSERT INTO usage (key_id, hour, metric, n)
		SELECT k, h, m, n FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) WITH ORDINALITY AS r(k, h, m, n, i) ORDER BY i
		`+addTo, "usage", "metric")

	// A client IP the key's hour holds already is added to (addToIP); a
	// new one is inserted only while the hour holds fewer than MaxHourIPs
	// (writeIPRows counts them).
	addIPRow   = fmt.Sprintf("INSERT INTO usage_ips (key_id, hour, ip, n) VALUES ($1, $2, $3, $4) "+addTo, "usage_ips", "ip")
	addToIP    = `UPDATE usage_ips SET n = n + $4 WHERE key_id = $1 AND hour = $2 AND ip = $3`
	hourIPRows = `SELECT COUNT(*) FROM usage_ips WHERE key_id = $1 AND hour = $2`
	// The same in one statement: a statement does not see its own rows, so
	// a key's hour counts what it held before (held) plus the new IPs
	// before this one in the batch (nth). Two nodes adding at once may
	// together pass the bound by a batch each, not without end.
	addIPArrays = fmt.Sprintf(`WITH r AS (
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) WITH ORDINALITY AS r(k, h, m, n, i)
		), held AS (
			SELECT u.key_id, u.hour, COUNT(*) AS c FROM usage_ips u
			WHERE (u.key_id, u.hour) IN (SELECT DISTINCT k, h FROM r) GROUP BY u.key_id, u.hour
		), x AS (
			SELECT r.k, r.h, r.m, r.n, r.i, e.ip IS NOT NULL AS known,
			       row_number() OVER (PARTITION BY r.k, r.h, e.ip IS NULL ORDER BY r.i) AS nth
			FROM r LEFT JOIN usage_ips e ON e.key_id = r.k AND e.hour = r.h AND e.ip = r.m
		)
		INSERT INTO usage_ips (key_id, hour, ip, n)
		SELECT x.k, x.h, x.m, x.n FROM x LEFT JOIN held ON held.key_id = x.k AND held.hour = x.h
		WHERE x.known OR x.nth + COALESCE(held.c, 0) <= %[3]d
		ORDER BY x.i
		`+addTo, "usage_ips", "ip", MaxHourIPs)
)

const touchKey = `UPDATE keys SET last_used_at = $2, last_ip = COALESCE(NULLIF($3, ''), last_ip)
	WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)`

// writeUsageRows writes a batch one statement per row: cheap in process
// (SQLite), where a statement costs microseconds, not a network round trip.
func writeUsageRows(ctx context.Context, tx *sql.Tx, rebind func(string) string, u *usageRows) error {
	for _, c := range u.counters() {
		if len(c.rows) == 0 {
			continue
		}
		if c.capped {
			if err := writeIPRows(ctx, tx, rebind, c); err != nil {
				return err
			}
			continue
		}
		stmt, err := tx.PrepareContext(ctx, rebind(c.insertRow))
		if err != nil {
			return err
		}
		for _, r := range c.rows {
			if _, err := stmt.ExecContext(ctx, r.key, r.hour, r.name, r.n); err != nil {
				stmt.Close()
				return fmt.Errorf("key %s: %q: %w", r.key, r.name, err)
			}
		}
		stmt.Close()
	}
	if len(u.touches) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, rebind(touchKey))
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, r := range u.touches {
		if _, err := stmt.ExecContext(ctx, r.key, r.used, r.ip); err != nil {
			return fmt.Errorf("key %s: last used: %w", r.key, err)
		}
	}
	return nil
}

// writeIPRows writes the client IP rows (the capped table) one statement
// per row, as writeUsageRows does: each adds to its counter, or, when the
// key's hour has none yet and holds fewer than MaxHourIPs rows, inserts it.
// The rows a key's hour holds are counted once, then as they are added
// (SQLite runs one write transaction at a time): counting them for every
// new IP, up to 1,000 rows each time, made a flush of the 1,000 new
// addresses a key used from a botnet brings every second ten times dearer.
func writeIPRows(ctx context.Context, tx *sql.Tx, rebind func(string) string, c counterTable) error {
	add, err := tx.PrepareContext(ctx, rebind(addToIP))
	if err != nil {
		return err
	}
	defer add.Close()
	insert, err := tx.PrepareContext(ctx, rebind(c.insertRow))
	if err != nil {
		return err
	}
	defer insert.Close()
	held := 0 // the rows the hour of the current row holds
	for i, r := range c.rows {
		if i == 0 || r.key != c.rows[i-1].key || r.hour != c.rows[i-1].hour { // rows are sorted
			if err := tx.QueryRowContext(ctx, rebind(hourIPRows), r.key, r.hour).Scan(&held); err != nil {
				return fmt.Errorf("key %s: %s rows: %w", r.key, c.table, err)
			}
		}
		res, err := add.ExecContext(ctx, r.key, r.hour, r.name, r.n)
		if err != nil {
			return fmt.Errorf("key %s: %q: %w", r.key, r.name, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("key %s: %q: %w", r.key, r.name, err)
		}
		if n > 0 || held >= MaxHourIPs {
			continue
		}
		if _, err := insert.ExecContext(ctx, r.key, r.hour, r.name, r.n); err != nil {
			return fmt.Errorf("key %s: %q: %w", r.key, r.name, err)
		}
		held++
	}
	return nil
}

// writeUsageArrays writes a batch in four statements whatever its size, the
// rows passed as arrays (PostgreSQL), so a flush costs four round trips
// rather than a few per active key. Rows are applied in the arrays' order
// (WITH ORDINALITY), and the keys rows are locked in id order before they
// are updated, so the lock order stays the one usageRows describes.
func writeUsageArrays(ctx context.Context, tx *sql.Tx, u *usageRows) error {
	for _, c := range u.counters() {
		if len(c.rows) == 0 {
			continue
		}
		keys, hours, names, ns := make([]string, len(c.rows)), make([]int64, len(c.rows)), make([]string, len(c.rows)), make([]int64, len(c.rows))
		for i, r := range c.rows {
			keys[i], hours[i], names[i], ns[i] = r.key, r.hour, r.name, r.n
		}
		if _, err := tx.ExecContext(ctx, c.insertArrays, keys, hours, names, ns); err != nil {
			return fmt.Errorf("%s: %w", c.table, err)
		}
	}
	if len(u.touches) == 0 {
		return nil
	}
	keys, used, ips := make([]string, len(u.touches)), make([]int64, len(u.touches)), make([]string, len(u.touches))
	for i, r := range u.touches {
		keys[i], used[i], ips[i] = r.key, r.used, r.ip
	}
	if _, err := tx.ExecContext(ctx, `SELECT 1 FROM keys WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`, keys); err != nil {
		return fmt.Errorf("last used: %w", err)
	}
	_, err := tx.ExecContext(ctx, `UPDATE keys SET last_used_at = t.used, last_ip = COALESCE(NULLIF(t.ip, ''), keys.last_ip)
		FROM unnest($1::text[], $2::bigint[], $3::text[]) AS t(id, used, ip)
		WHERE keys.id = t.id AND (keys.last_used_at IS NULL OR keys.last_used_at < t.used)`, keys, used, ips)
	if err != nil {
		return fmt.Errorf("last used: %w", err)
	}
	return nil
}
