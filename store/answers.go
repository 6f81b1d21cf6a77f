package store

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"time"
)

// schemaAnswers is migration 6 of both engines.
//
//go:embed schema_answers.sql
var schemaAnswers string

// Answer is the answer to an issue or a rotation asked with an idempotency
// key, kept until ExpiresAt so that a script repeating the request after a
// timeout gets it again instead of a second key. It never holds a key in the
// clear: Data is sealed under a key only the caller holds.
type Answer struct {
	// ID is what the answer is found by: a hash of the idempotency key.
	ID string
	// Request is a keyed hash of the request answered, so that the same
	// idempotency key sent with another request is told apart.
	Request string
	// Data is the answer, sealed.
	Data      string
	ExpiresAt time.Time
}

// ErrAnswered is returned by a change whose Event.Answer has an ID another
// change already keeps an answer under: nothing was written. The caller
// reads that answer (Store.Answer) instead.
var ErrAnswered = errors.New("an answer is already kept under this idempotency key")

// Answer returns the answer kept under id that has not expired at now, or
// ErrNotFound.
func (s *DB) Answer(ctx context.Context, id string, now time.Time) (*Answer, error) {
	a := &Answer{ID: id}
	var expires int64
	err := s.db.QueryRowContext(ctx, s.d.rebind("SELECT request, expires_at, data FROM idempotent_answers WHERE id = $1 AND expires_at > $2"),
		id, clampNano(now.UTC())).Scan(&a.Request, &expires, &a.Data)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("keygate store: idempotent answer: %w", err)
	}
	a.ExpiresAt = time.Unix(0, expires).UTC()
	return a, nil
}

// PruneAnswers deletes the answers that expired at or before now and returns
// how many.
func (s *DB) PruneAnswers(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = s.deleteAnswers(ctx, tx, now)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("keygate store: prune idempotent answers: %w", err)
	}
	return n, nil
}

func (s *DB) deleteAnswers(ctx context.Context, tx *sql.Tx, now time.Time) (int64, error) {
	res, err := tx.ExecContext(ctx, s.d.rebind("DELETE FROM idempotent_answers WHERE expires_at <= $1"), clampNano(now.UTC()))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// keepAnswer writes a change's answer in the change's transaction, so that
// the key and the answer that hands it out commit together or not at all:
// an answer written after the key could be lost to a crash or a hung
// COMMIT in between, and the repeat it exists for would make a second key.
// An answer already kept under the id (the same request from another
// gateway, committed first) is ErrAnswered, and the change is undone.
func (s *DB) keepAnswer(ctx context.Context, tx *sql.Tx, a *Answer, now time.Time) error {
	if a == nil {
		return nil
	}
	// Expired answers go first, so an expired one under this id does not
	// stand in the way (the gateways' hourly prune takes the rest).
	if _, err := s.deleteAnswers(ctx, tx, now); err != nil {
		return err
	}
	expires, err := unixNano("answer expires at", a.ExpiresAt)
	if err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO idempotent_answers (id, request, expires_at, data) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO NOTHING`), a.ID, a.Request, expires, a.Data)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrAnswered
	}
	return nil
}
