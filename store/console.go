package store

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"time"
)

// schemaConsole is migration 4 of both engines.
//
//go:embed schema_console.sql
var schemaConsole string

// ConsoleSecret returns the secret stored under name, storing candidate
// first if there is none: every caller on one store gets the same value,
// whichever stored it.
func (s *DB) ConsoleSecret(ctx context.Context, name, candidate string) (string, error) {
	var value string
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO console_secrets (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO NOTHING`), name, candidate); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, s.d.rebind("SELECT value FROM console_secrets WHERE name = $1"), name).Scan(&value)
	})
	if err != nil {
		return "", fmt.Errorf("keygate store: console secret: %w", err)
	}
	return value, nil
}

// PutFlash stores data under id until expires, and deletes the flashes
// whose time is up at now.
func (s *DB) PutFlash(ctx context.Context, id, data string, expires, now time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.d.rebind("DELETE FROM console_flashes WHERE expires_at <= $1"), clampNano(now.UTC())); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.d.rebind("INSERT INTO console_flashes (id, expires_at, data) VALUES ($1, $2, $3)"),
			id, clampNano(expires.UTC()), data)
		return err
	})
	if err != nil {
		return fmt.Errorf("keygate store: put flash: %w", err)
	}
	return nil
}

// TakeFlash deletes the flash stored under id and returns its data, or
// ErrNotFound if there is none or its time was up at now. Of two callers
// taking one flash, one gets it.
func (s *DB) TakeFlash(ctx context.Context, id string, now time.Time) (string, error) {
	var data string
	err := s.write(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, s.d.rebind("DELETE FROM console_flashes WHERE id = $1 AND expires_at > $2 RETURNING data"),
			id, clampNano(now.UTC())).Scan(&data)
	})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", ErrNotFound
	case err != nil:
		return "", fmt.Errorf("keygate store: take flash: %w", err)
	}
	return data, nil
}
