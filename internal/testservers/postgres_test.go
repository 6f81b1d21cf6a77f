package testservers

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPostgresRestartsOnTheSamePortWithItsData(t *testing.T) {
	pg := StartPostgres(t)
	execSQL(t, pg.URI, "CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('before the outage')")

	pg.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, pg.URI); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped server")
	}

	pg.Start()
	var v string
	query(t, pg.URI, "SELECT v FROM kept", &v)
	if v != "before the outage" {
		t.Errorf("after a restart the row reads %q, want %q", v, "before the outage")
	}
}

func TestPostgresCreatesEmptyDatabases(t *testing.T) {
	pg := StartPostgres(t)
	for _, name := range []string{"first", "second"} {
		uri := pg.CreateDatabase(name)
		var got string
		query(t, uri, "SELECT current_database()", &got)
		if got != name {
			t.Errorf("CreateDatabase(%q) connects to %q", name, got)
		}
	}
}

func execSQL(t *testing.T, uri, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func query(t *testing.T, uri, sql string, into any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql).Scan(into); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
