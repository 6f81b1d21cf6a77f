package console

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// vault holds what one page hands to the next after a redirect: a new key
// waiting to be shown once, or messages about a change. Entries live in the
// key store, so the next request may reach any gateway on it, for a few
// minutes at most, and are deleted when read. Each is sealed (AES-GCM)
// under a key derived from a random token that only the person's browser
// holds (a new key's in a cookie for its page, messages' in the URL): the
// store never holds a key it could read, and the key is never in a URL, a
// log line or a cached page.
type vault struct {
	svc *keys.Service
	ttl time.Duration
	now func() time.Time
}

// flash is one vault entry.
type flash struct {
	user string // only this person may read it
	// A new key to show once, with its record's id and name.
	key, keyID, name string
	// rotated is the old key's id when key comes from a rotation; oldEnds
	// is when it stops, oldDisabled whether it was disabled.
	rotated     string
	oldEnds     time.Time
	oldDisabled bool
	// curl and gateway show how to use the new key.
	curl, gateway string
	// messages are a new key's warnings; notices what a change says on
	// the next page.
	messages []string
	notices  []notice
}

// sealed is a flash as it is sealed; the person is bound by the entry's id.
type sealed struct {
	Key     string    `json:"key,omitempty"`
	KeyID   string    `json:"key_id,omitempty"`
	Name    string    `json:"name,omitempty"`
	Rotated string    `json:"rotated,omitempty"`
	OldEnds time.Time `json:"old_ends,omitzero"`
	OldOff  bool      `json:"old_disabled,omitempty"`
	Curl    string    `json:"curl,omitempty"`
	Gateway string    `json:"gateway,omitempty"`
	// Messages are a new key's warnings, or plain notices sealed before
	// notices had kinds (read as such, during an upgrade).
	Messages []string `json:"messages,omitempty"`
	Notices  []notice `json:"notices,omitempty"`
}

const tokenBytes = 32

func newVault(svc *keys.Service, ttl time.Duration, now func() time.Time) *vault {
	return &vault{svc: svc, ttl: ttl, now: now}
}

// entry derives, from a token, the person and the kind of entry, the id it
// is stored under and the key that seals it. A token read by another
// person, or as the other kind, names an entry that does not exist.
func entry(token []byte, user string, key bool) (id string, aead cipher.AEAD) {
	kind := "messages"
	if key {
		kind = "key"
	}
	h := sha256.New()
	h.Write([]byte("keygate console flash id\x00" + kind + "\x00" + user + "\x00"))
	h.Write(token)
	id = hex.EncodeToString(h.Sum(nil))
	k := sha256.Sum256(append([]byte("keygate console flash key\x00"), token...))
	block, _ := aes.NewCipher(k[:]) // a 32-byte key never fails
	aead, _ = cipher.NewGCM(block)
	return id, aead
}

// put stores f and returns its token.
func (v *vault) put(ctx context.Context, f *flash) (string, error) {
	token := make([]byte, tokenBytes)
	rand.Read(token)
	id, aead := entry(token, f.user, f.key != "")
	plain, err := json.Marshal(sealed{Key: f.key, KeyID: f.keyID, Name: f.name, Rotated: f.rotated,
		OldEnds: f.oldEnds, OldOff: f.oldDisabled, Curl: f.curl, Gateway: f.gateway, Messages: f.messages, Notices: f.notices})
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	data := base64.RawStdEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, []byte(id)))
	t := v.now()
	if err := v.svc.PutFlash(ctx, id, data, t.Add(v.ttl), t); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(token), nil
}

// take returns and deletes the entry of tok if user may read it, it has not
// expired, and it is of the kind asked for (a new key or messages). A token
// of another person or kind is left alone. err is set only when the store
// could not be asked.
func (v *vault) take(ctx context.Context, tok, user string, key bool) (*flash, bool, error) {
	token, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(token) != tokenBytes {
		return nil, false, nil
	}
	id, aead := entry(token, user, key)
	data, err := v.svc.TakeFlash(ctx, id, v.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	raw, err := base64.RawStdEncoding.DecodeString(data)
	if err != nil || len(raw) < aead.NonceSize() {
		return nil, false, nil
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(id))
	if err != nil {
		return nil, false, nil
	}
	var s sealed
	if json.Unmarshal(plain, &s) != nil {
		return nil, false, nil
	}
	return &flash{user: user, key: s.Key, keyID: s.KeyID, name: s.Name, rotated: s.Rotated,
		oldEnds: s.OldEnds, oldDisabled: s.OldOff, curl: s.Curl, gateway: s.Gateway, messages: s.Messages, notices: s.Notices}, true, nil
}
