package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// postgres fills an empty PostgreSQL store with n keys through COPY and
// times cold-miss lookups on it.
func postgres(ctx context.Context, uri string, n, lookups int) {
	st, err := store.Open(ctx, uri) // creates the schema
	check(err)
	check(st.Close())

	start := time.Now()
	digests, rows := make([]store.Digest, n), make([][]any, n)
	created := time.Now().UnixNano()
	for i := range n {
		key, err := verifier.Generate("kg", "live")
		check(err)
		digests[i] = verifier.DigestOf(key)
		rows[i] = []any{verifier.NewID(), digests[i][:], verifier.Hint(key), fmt.Sprintf("scale-%d", i), "bench", "live", `["mail.send"]`, created + int64(i)}
	}
	generated := time.Since(start)

	conn, err := pgx.Connect(ctx, uri)
	check(err)
	start = time.Now()
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{"keys"},
		[]string{"id", "digest", "hint", "name", "owner", "env", "scopes", "created_at"}, pgx.CopyFromRows(rows))
	if err != nil {
		log.Fatalf("COPY into keys: %v", err)
	}
	loaded := time.Since(start)
	start = time.Now()
	_, err = conn.Exec(ctx, "ANALYZE keys")
	check(err)
	analyzed := time.Since(start)
	var size string
	check(conn.QueryRow(ctx, "SELECT pg_size_pretty(pg_total_relation_size('keys'))").Scan(&size))
	conn.Close(ctx)
	rows = nil
	fmt.Printf("bulk load: %d keys generated in %s, COPY in %s (%.0f keys/s), ANALYZE %s; keys table with indexes %s\n",
		copied, generated.Round(time.Millisecond), loaded.Round(time.Millisecond), float64(copied)/loaded.Seconds(),
		analyzed.Round(time.Millisecond), size)

	st, err = store.Open(ctx, uri) // a fresh pool, as a gateway starting up
	check(err)
	defer st.Close()
	coldMisses(ctx, st, digests, lookups)
}
