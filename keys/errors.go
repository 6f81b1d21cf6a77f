package keys

import (
	"errors"
	"fmt"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// InvalidError is input the caller must change. Its message names the field
// and the value as given, and what would be accepted; it never quotes a key.
type InvalidError struct {
	// Field is the input at fault ("name", "scope", "expires", …), or ""
	// when the request as a whole is wrong.
	Field string
	msg   string
	err   error // what errors.Is finds, if anything
}

func (e *InvalidError) Error() string { return e.msg }

func (e *InvalidError) Unwrap() error { return e.err }

// What a leaked key's report (Revocation.Key) held instead of one key;
// its InvalidError matches them with errors.Is, so an adapter can say it
// in its own words.
var (
	ErrNoKeyFound  = errors.New("no keygate key found")
	ErrSeveralKeys = errors.New("more than one key given")
)

// What a new key lacks; its InvalidError matches them with errors.Is, so an
// adapter can name the input as its callers give it (a flag, a JSON field).
var (
	ErrNameRequired  = errors.New("name is required")
	ErrScopeRequired = errors.New("at least one scope is required")
)

// invalid builds an InvalidError: `field "value": reason`, with the
// secret of a key pasted as the value cut ("kg_live_…"): the error goes to
// terminals, CI logs, admin API clients and console pages.
func invalid(field, value, format string, args ...any) error {
	value = verifier.Redact(value)
	if r := []rune(value); len(r) > maxQuoted {
		value = string(r[:maxQuoted]) + "…" // enough to find it by; a page of it helps nobody
	}
	return &InvalidError{Field: field, msg: fmt.Sprintf("%s %q: ", field, value) + fmt.Sprintf(format, args...)}
}

// maxQuoted is how much of a refused value an error repeats.
const maxQuoted = 60

// invalidf builds an InvalidError whose message does not quote a value
// itself; one it passes on from a parser (store.ParseRate's) has a key's
// secret cut, as invalid's.
func invalidf(field, format string, args ...any) error {
	return &InvalidError{Field: field, msg: verifier.Redact(fmt.Sprintf(format, args...))}
}

// NotFoundError is returned when no key the caller may see matches. It
// matches store.ErrNotFound with errors.Is.
type NotFoundError struct {
	// What names what was looked for, e.g. `key key_abc`.
	What string
}

func (e *NotFoundError) Error() string { return e.What + " not found" }

// Is makes errors.Is(err, store.ErrNotFound) hold.
func (e *NotFoundError) Is(target error) bool { return target == store.ErrNotFound }

// ConflictError is a well-formed request the key's state forbids, such as
// rotating a revoked key.
type ConflictError struct {
	msg string
	err error // what errors.Is finds, if anything
}

func (e *ConflictError) Error() string { return e.msg }

func (e *ConflictError) Unwrap() error { return e.err }

func conflict(format string, args ...any) error {
	return &ConflictError{msg: fmt.Sprintf(format, args...)}
}
