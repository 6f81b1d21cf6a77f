package keys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

// Idempotency makes an issue or a rotation safe to repeat, as Stripe's
// Idempotency-Key does: a script that did not get the answer (a timeout, a
// store that hung) sends the same request with the same key again, and gets
// the first answer, the key it made included, instead of a second key (an
// issue) or a refusal while the new key is lost (a rotation).
//
// The answer is kept for AnswerTTL, sealed (AES-GCM) under a key derived
// from Key, and found by another hash of Key: the store never holds a key
// it could read, and whoever holds Key can read that one answer, so Key is
// a secret like the key it unlocks.
type Idempotency struct {
	// Key is the caller's idempotency key: 1 to 255 visible ASCII
	// characters (see CheckIdempotencyKey).
	Key string
	// Caller names who may repeat the request, when the adapter knows
	// callers apart (the admin API's client certificate); an answer is
	// found only under the caller that asked. "" is any caller.
	Caller string
	// Request is what was asked, as sent (method, path, body): the same
	// key with another request is refused (ErrIdempotencyKeyReused).
	Request []byte
}

// AnswerTTL is how long the answer of a request with an idempotency key
// is kept, and so how long a repeat gets it again.
const AnswerTTL = 24 * time.Hour

// ErrIdempotencyKeyReused is matched (errors.Is) by the InvalidError of a
// request whose idempotency key was used within AnswerTTL for another
// request.
var ErrIdempotencyKeyReused = errors.New("idempotency key used for another request")

// CheckIdempotencyKey reports a key that is not 1 to 255 visible ASCII
// characters, naming the header it comes in.
func CheckIdempotencyKey(k string) error {
	if len(k) == 0 || len(k) > 255 {
		return invalidf("Idempotency-Key", "Idempotency-Key: want 1 to 255 visible ASCII characters, got %d characters (a random value such as a UUID)", len(k))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return invalidf("Idempotency-Key", "Idempotency-Key: want visible ASCII characters only (a random value such as a UUID); character %d is not", i+1)
		}
	}
	return nil
}

// sealFunc seals a change's answer, to be kept in the change's own
// transaction (store.Event.Answer).
type sealFunc func(*Result) (*store.Answer, error)

// derive returns what an idempotency key derives: the id its answer is
// found by (under its caller), the hash of its request, and the AEAD that
// seals the answer. A key from crypto/rand makes each of them as hard to
// guess as a key; a guessable one makes the answer as easy to read.
func derive(o *Idempotency) (id, request string, aead cipher.AEAD, err error) {
	var keys [3][]byte
	for i, info := range []string{"keygate idempotent answer id\x00" + o.Caller, "keygate idempotent answer request", "keygate idempotent answer seal"} {
		// Fails only where the process refuses a short secret (GODEBUG=fips140=only).
		if keys[i], err = hkdf.Key(sha256.New, []byte(o.Key), nil, info, 32); err != nil {
			return "", "", nil, fmt.Errorf("keygate: Idempotency-Key: %w", err)
		}
	}
	mac := hmac.New(sha256.New, keys[1])
	mac.Write(o.Request)
	block, _ := aes.NewCipher(keys[2]) // a 32-byte key never fails
	aead, _ = cipher.NewGCM(block)
	return hex.EncodeToString(keys[0]), hex.EncodeToString(mac.Sum(nil)), aead, nil
}

// inFlight holds the answer ids of this process's changes under way, so a
// repeat sent before the first is answered is told to wait rather than
// waiting itself for the store's lock. Across processes the store decides:
// of two changes under one id, one commits (store.ErrAnswered).
var inFlight sync.Map

// once makes the change do at most once per idempotency key and request:
// the first time do runs, with a sealFunc whose answer it writes with the
// key it makes; a repeat gets that answer again (Result.Replayed).
func (s *Service) once(ctx context.Context, o *Idempotency, do func(sealFunc) (*Result, error)) (*Result, error) {
	if err := CheckIdempotencyKey(o.Key); err != nil {
		return nil, err
	}
	id, request, aead, err := derive(o)
	if err != nil {
		return nil, err
	}
	if _, busy := inFlight.LoadOrStore(id, struct{}{}); busy {
		return nil, conflict("a request with this Idempotency-Key is still being answered; repeat it once that one is")
	}
	defer inFlight.Delete(id)
	if res, err := s.replay(ctx, id, request, aead); res != nil || err != nil {
		return res, err
	}
	res, err := do(func(res *Result) (*store.Answer, error) {
		plain, err := json.Marshal(res)
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, aead.NonceSize())
		rand.Read(nonce)
		data := base64.RawStdEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, []byte(id)))
		return &store.Answer{ID: id, Request: request, Data: data, ExpiresAt: s.now().Add(AnswerTTL)}, nil
	})
	if errors.Is(err, store.ErrAnswered) { // another gateway answered it first
		if res, err := s.replay(ctx, id, request, aead); res != nil || err != nil {
			return res, err
		}
	}
	return res, err
}

// replay returns the answer kept under id, or nil if there is none.
func (s *Service) replay(ctx context.Context, id, request string, aead cipher.AEAD) (*Result, error) {
	a, err := s.st.Answer(ctx, id, s.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case !hmac.Equal([]byte(a.Request), []byte(request)):
		return nil, &InvalidError{Field: "Idempotency-Key", err: ErrIdempotencyKeyReused,
			msg: "Idempotency-Key: this key was used for another request (another method, path or body) within 24h; " +
				"use a new key for a new request, and the same request for a repeat"}
	}
	raw, err := base64.RawStdEncoding.DecodeString(a.Data)
	if err != nil || len(raw) < aead.NonceSize() {
		return nil, fmt.Errorf("keygate: the answer kept for this Idempotency-Key cannot be read")
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(id))
	if err != nil {
		return nil, fmt.Errorf("keygate: the answer kept for this Idempotency-Key cannot be opened: %w", err)
	}
	res := &Result{}
	if err := json.Unmarshal(plain, res); err != nil {
		return nil, fmt.Errorf("keygate: the answer kept for this Idempotency-Key: %w", err)
	}
	res.Replayed = true
	return res, nil
}
