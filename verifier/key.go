// Package verifier turns a presented API key into its stored record.
//
// It owns the key format (Generate, Parse, DigestOf, Hint) and the Verifier:
// a bounded in-memory cache in front of a store.Store that follows the
// store's change log, so a revocation made anywhere reaches every gateway
// within a second. The package imports nothing from Caddy.
package verifier

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"unsafe"

	"github.com/keygate/caddy-keygate/store"
)

// DefaultPrefix is the key prefix used when none is configured.
const DefaultPrefix = "kg"

// KeyPattern matches a key with the default prefix. It is published for
// secret scanners (GitHub, gitleaks, trufflehog) so a leaked key is found.
const KeyPattern = `\bkg_(live|test)_[0-9A-Za-z]{49}\b`

const (
	// alphabet is in ASCII order, so comparing two fixed-width base62
	// strings byte by byte compares the numbers they encode.
	alphabet    = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	secretBytes = 32
	secretLen   = 43 // 62^43 > 2^256 > 62^42
	checksumLen = 6  // 62^6 > 2^32 > 62^5
	envLen      = 4  // "live" and "test"
	hintLen     = 8  // secret characters a Hint may reveal
	idLen       = 16
)

// maxSecret is the base62 text of 2^256-1. A secret written above it holds
// more than 32 bytes, so Generate never made it.
var maxSecret = func() string {
	var ones [secretBytes]byte
	for i := range ones {
		ones[i] = 0xff
	}
	var out [secretLen]byte
	encodeBase62(out[:], ones[:])
	return string(out[:])
}()

// ValidPrefix reports whether p can prefix a key: a lowercase letter
// followed by 1 to 9 lowercase letters or digits.
func ValidPrefix(p string) bool {
	if len(p) < 2 || len(p) > 10 || p[0] < 'a' || p[0] > 'z' {
		return false
	}
	for i := 1; i < len(p); i++ {
		if c := p[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func validEnv(env string) bool { return env == "live" || env == "test" }

// Generate returns a new key "<prefix>_<env>_<secret><checksum>" whose
// secret is 32 bytes from crypto/rand. The caller shows it once and keeps
// only DigestOf(key).
func Generate(prefix, env string) (string, error) {
	if !ValidPrefix(prefix) {
		return "", fmt.Errorf("keygate: key prefix %q: want a lowercase letter followed by 1 to 9 lowercase letters or digits", prefix)
	}
	if !validEnv(env) {
		return "", fmt.Errorf("keygate: key env %q: want live or test", env)
	}
	var secret [secretBytes]byte
	rand.Read(secret[:]) // never fails: it crashes the program instead

	body := len(prefix) + 1 + envLen + 1 + secretLen
	key := make([]byte, body+checksumLen)
	n := copy(key, prefix)
	key[n] = '_'
	n += 1 + copy(key[n+1:], env)
	key[n] = '_'
	encodeBase62(key[n+1:body], secret[:])
	sum := checksum(string(key[:body]))
	encodeBase62(key[body:], []byte{byte(sum >> 24), byte(sum >> 16), byte(sum >> 8), byte(sum)})
	return string(key), nil
}

// Parse checks a presented key's shape and checksum for the given prefix and
// returns its env ("live" or "test"). It allocates nothing and reads the key
// once, so a gateway can reject garbage before touching a cache or a store.
// It rejects a wrong prefix or env, a wrong length, any byte outside the
// base62 alphabet (so any non-ASCII byte), a secret above 32 bytes and a
// wrong checksum.
func Parse(key, prefix string) (env string, ok bool) {
	p := len(prefix)
	body := p + 1 + envLen + 1 + secretLen
	if len(key) != body+checksumLen || !ValidPrefix(prefix) ||
		key[:p] != prefix || key[p] != '_' || key[p+1+envLen] != '_' {
		return "", false
	}
	env = key[p+1 : p+1+envLen]
	if !validEnv(env) {
		return "", false
	}
	secret := key[p+1+envLen+1 : body]
	if !allBase62(key[p+1+envLen+1:]) {
		return "", false
	}
	// The first digit decides nearly every secret: maxSecret's is 'y'.
	if secret[0] > maxSecret[0] || secret[0] == maxSecret[0] && secret > maxSecret {
		return "", false
	}
	var sum uint64
	for i := body; i < len(key); i++ {
		sum = sum*62 + uint64(base62Value(key[i]))
	}
	if sum != uint64(checksum(key[:body])) {
		return "", false
	}
	return env, true
}

// checksum is CRC-32 (IEEE) of s. It hands the library the string's own
// bytes (read only) so the hardware-accelerated CRC runs without copying or
// allocating: []byte(s) would allocate once the slice escapes into crc32.
func checksum(s string) uint32 {
	if s == "" {
		return crc32.ChecksumIEEE(nil)
	}
	return crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// allBase62 reports whether every byte of s is in the alphabet. It tests
// eight bytes at a time: a byte below 0x80 is in [lo, hi] when adding
// 0x80-lo sets its top bit and adding 0x7f-hi does not, and neither sum
// carries into the next byte.
func allBase62(s string) bool {
	const ones, tops = 0x0101010101010101, 0x8080808080808080
	in := func(x uint64, lo, hi byte) uint64 {
		return (x + ones*uint64(0x80-lo)) &^ (x + ones*uint64(0x7f-hi))
	}
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b)
		if x&tops != 0 || (in(x, '0', '9')|in(x, 'A', 'Z')|in(x, 'a', 'z'))&tops != tops {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if base62Value(c) < 0 {
			return false
		}
	}
	return true
}

// base62Values maps a byte to its value in the alphabet, or -1; a table
// because Parse looks up 49 bytes per key.
var base62Values = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for v, c := range []byte(alphabet) {
		t[c] = int8(v)
	}
	return t
}()

// base62Value returns c's value in the alphabet, or -1.
func base62Value(c byte) int { return int(base62Values[c]) }

// encodeBase62 writes the big-endian number in src into all of dst as
// base62, left-padded with '0'. dst must be long enough for the number.
func encodeBase62(dst, src []byte) {
	// Schoolbook long division by 62, least significant digit first.
	num := append(make([]byte, 0, secretBytes), src...)
	for i := len(dst) - 1; i >= 0; i-- {
		var rem uint
		for j, b := range num {
			cur := rem<<8 | uint(b)
			num[j] = byte(cur / 62)
			rem = cur % 62
		}
		dst[i] = alphabet[rem]
	}
}

// DigestOf returns the SHA-256 digest of the key's text: the only form in
// which a key is stored or cached. It allocates nothing for keys of any
// sensible length.
func DigestOf(key string) store.Digest {
	// Copying into a stack array keeps the []byte conversion off the heap.
	var buf [128]byte
	if len(key) <= len(buf) {
		return sha256.Sum256(buf[:copy(buf[:], key)])
	}
	return sha256.Sum256([]byte(key))
}

// Hint returns the key's prefix and env and the first 8 characters of its
// secret, e.g. "kg_live_AbCd1234…", so operators can tell keys apart. For
// text that is not shaped like a key it reveals nothing: "…".
func Hint(key string) string {
	for p := 2; p <= 10 && p < len(key); p++ {
		if key[p] != '_' {
			continue
		}
		start := p + 1 + envLen + 1
		if !ValidPrefix(key[:p]) || len(key) < start+hintLen ||
			!validEnv(key[p+1:p+1+envLen]) || key[start-1] != '_' {
			break
		}
		return key[:start+hintLen] + "…"
	}
	return "…"
}

// Redact returns s with the secret of anything shaped like a key replaced
// by "…": after "_live_" or "_test_", a run of 43 or more base62 characters
// (a key's secret and checksum are 49). Log lines pass URLs through it.
func Redact(s string) string {
	var b strings.Builder
	last := 0 // s[last:] is not in b yet
	for from := 0; ; {
		start, end := nextSecret(s, from)
		if start < 0 {
			break
		}
		b.WriteString(s[last:start])
		b.WriteString("…")
		last, from = end, end
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// HasSecret reports whether s holds anything Redact would redact. A string
// shorter than "_live_" and a secret holds none: most header values, said
// without a call.
func HasSecret(s string) bool {
	if len(s) < 1+envLen+1+secretLen {
		return false
	}
	start, _ := nextSecret(s, 0)
	return start >= 0
}

// EscapedSecret returns s decoded as often as it takes, up to four times, to
// show a secret it holds percent-encoded (kg%5Flive%5F…, or kg%255Flive%255F…
// for a server or log that decodes it again), and whether one showed. Each
// decoding is lenient, as the decoders a URL meets are: a '%' that starts no
// escape (100%, 50%zz) stays as it is rather than hiding what follows.
func EscapedSecret(s string) (string, bool) {
	for range 4 {
		d := unescape(s)
		if len(d) == len(s) {
			return s, false // nothing was escaped
		}
		if HasSecret(d) {
			return d, true
		}
		s = d
	}
	return s, false
}

// unescape decodes each %XX in s and leaves any other byte as it is.
func unescape(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	b := []byte(s[:i])
	for ; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// Find returns the well-formed keys (shape and checksum, any prefix) in
// text, each once, in order: a key as pasted from wherever it was found, a
// log line, a header, an environment file, a URL whose escapes run into it
// ("api_key%3Dkg_live_…") or JSON whose "\n" does. The checksum decides
// where a key starts and ends.
func Find(text string) []string {
	var keys []string
	for from := 0; ; {
		start, end := nextSecret(text, from)
		if start < 0 {
			return keys
		}
		from = end
		if end-start < secretLen+checksumLen {
			continue
		}
		tail := text[start-envLen-2 : start+secretLen+checksumLen] // "_live_" and the rest
		// The prefix is the lowercase letters and digits before it; try
		// each length a prefix may have, shortest first.
		run := start - envLen - 2
		for run > 0 && (text[run-1] >= 'a' && text[run-1] <= 'z' || text[run-1] >= '0' && text[run-1] <= '9') {
			run--
		}
		for n := 2; n <= 10 && start-envLen-2-n >= run; n++ {
			prefix := text[start-envLen-2-n : start-envLen-2]
			if _, ok := Parse(prefix+tail, prefix); ok {
				if key := prefix + tail; !slices.Contains(keys, key) {
					keys = append(keys, key)
				}
				break
			}
		}
	}
}

// nextSecret returns where the first secret at or after s[from:] starts and
// ends, or -1. One pass from underscore to underscore, so that a hostile
// URL full of "_live_" costs no more than its length.
func nextSecret(s string, from int) (start, end int) {
	for i := from; ; i++ {
		k := strings.IndexByte(s[i:], '_')
		if k < 0 {
			return -1, -1
		}
		i += k
		if !strings.HasPrefix(s[i:], "_live_") && !strings.HasPrefix(s[i:], "_test_") {
			continue
		}
		start := i + 1 + envLen + 1
		end := start
		for end < len(s) && base62Values[s[end]] >= 0 {
			end++
		}
		if end-start >= secretLen {
			return start, end
		}
		// Not a secret; "_live_live_…" holds another "_live_" from the
		// next byte.
	}
}

// NewID returns a new public key id: "key_" and 16 base62 characters from
// crypto/rand. Ids appear in logs, the CLI and the admin API; keys never do.
func NewID() string {
	id := make([]byte, 0, len("key_")+idLen)
	id = append(id, "key_"...)
	var buf [32]byte
	for len(id) < cap(id) {
		rand.Read(buf[:])
		for _, b := range buf {
			// Rejecting 62 and 63 keeps every character equally likely.
			if v := b & 63; v < 62 && len(id) < cap(id) {
				id = append(id, alphabet[v])
			}
		}
	}
	return string(id)
}
