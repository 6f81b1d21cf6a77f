package console

import (
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"
)

// vault holds what one page hands to the next after a redirect: a new key
// waiting to be shown once, or messages about a change. Entries live in
// this process's memory only, for a few minutes at most, and are deleted
// when read. The browser holds only a random token, so the key is never in
// a URL, a log line or a cached page.
type vault struct {
	mu      sync.Mutex
	entries map[string]*flash
	ttl     time.Duration
	now     func() time.Time
}

// flash is one vault entry.
type flash struct {
	user  string // only this person may read it
	until time.Time
	// A new key to show once, with its record's id and name.
	key, keyID, name string
	// rotated is the old key's id when key comes from a rotation.
	rotated string
	// curl and gateway show how to use the new key.
	curl, gateway string
	messages      []string
}

// maxFlashes bounds the vault: a person who creates keys faster than they
// read them cannot grow it without limit.
const maxFlashes = 10000

func newVault(ttl time.Duration, now func() time.Time) *vault {
	return &vault{entries: map[string]*flash{}, ttl: ttl, now: now}
}

// put stores f and returns its token.
func (v *vault) put(f *flash) string {
	b := make([]byte, 24)
	rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	t := v.now()
	f.until = t.Add(v.ttl)
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, e := range v.entries {
		if !t.Before(e.until) {
			delete(v.entries, k)
		}
	}
	if len(v.entries) >= maxFlashes {
		// Drop the entry closest to expiry, so the vault stays bounded.
		var oldest string
		for k, e := range v.entries {
			if oldest == "" || e.until.Before(v.entries[oldest].until) {
				oldest = k
			}
		}
		delete(v.entries, oldest)
	}
	v.entries[tok] = f
	return tok
}

// take returns and deletes the entry of tok if user may read it, it has not
// expired, and it is of the kind asked for (a new key or messages). A token
// of another person or kind is left alone.
func (v *vault) take(tok, user string, key bool) (*flash, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	f, ok := v.entries[tok]
	if !ok || f.user != user || (f.key != "") != key {
		return nil, false
	}
	delete(v.entries, tok)
	if !v.now().Before(f.until) {
		return nil, false
	}
	return f, true
}
