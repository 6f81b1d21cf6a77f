package keys

import (
	"context"
	"time"
)

// What the web console shares through the store between the gateways of
// one store, so that a person's next request may reach any of them. The
// console seals what it stores; these only pass it on.

// ConsoleSecret returns the store's secret of this name, storing candidate
// first if there is none.
func (s *Service) ConsoleSecret(ctx context.Context, name, candidate string) (string, error) {
	return s.st.ConsoleSecret(ctx, name, candidate)
}

// PutFlash keeps sealed data under id until expires.
func (s *Service) PutFlash(ctx context.Context, id, data string, expires, now time.Time) error {
	return s.st.PutFlash(ctx, id, data, expires, now)
}

// TakeFlash returns and deletes the data under id; store.ErrNotFound once
// it is taken or its time is up.
func (s *Service) TakeFlash(ctx context.Context, id string, now time.Time) (string, error) {
	return s.st.TakeFlash(ctx, id, now)
}
