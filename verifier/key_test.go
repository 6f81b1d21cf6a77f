package verifier

import (
	"crypto/sha256"
	"hash/crc32"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func mustGenerate(t testing.TB, prefix, env string) string {
	t.Helper()
	key, err := Generate(prefix, env)
	if err != nil {
		t.Fatalf("Generate(%q, %q): %v", prefix, env, err)
	}
	return key
}

// withChecksum completes body ("kg_live_<secret>") with its correct checksum,
// so tests can build keys whose only fault is elsewhere.
func withChecksum(body string) string {
	var sum [checksumLen]byte
	c := crc32.ChecksumIEEE([]byte(body))
	encodeBase62(sum[:], []byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)})
	return body + string(sum[:])
}

func TestValidPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   bool
	}{
		{"kg", true},
		{"acme2024", true},
		{"abcdefghij", true},
		{"k", false},
		{"abcdefghijk", false},
		{"", false},
		{"2kg", false},
		{"Kg", false},
		{"k_g", false},
		{"kg-", false},
		{"kgé", false},
	} {
		if got := ValidPrefix(tc.prefix); got != tc.want {
			t.Errorf("ValidPrefix(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
}

func TestGenerate(t *testing.T) {
	pattern := regexp.MustCompile(KeyPattern)
	for _, tc := range []struct {
		name, prefix, env string
		wantErr           bool
	}{
		{"default prefix live key matches the published pattern", "kg", "live", false},
		{"default prefix test key matches the published pattern", "kg", "test", false},
		{"custom prefix is accepted", "acme", "live", false},
		{"invalid prefix is refused", "K", "live", true},
		{"unknown env is refused", "kg", "prod", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 200 {
				key, err := Generate(tc.prefix, tc.env)
				if tc.wantErr {
					if err == nil {
						t.Fatalf("Generate(%q, %q) = nil error, want one", tc.prefix, tc.env)
					}
					if !strings.Contains(err.Error(), tc.prefix) && !strings.Contains(err.Error(), tc.env) {
						t.Errorf("error %q names neither the prefix nor the env", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if env, ok := Parse(key, tc.prefix); !ok || env != tc.env {
					t.Fatalf("Parse(Generate(%q, %q)) = %q, %v", tc.prefix, tc.env, env, ok)
				}
				if tc.prefix == DefaultPrefix && pattern.FindString("token="+key+".") != key {
					t.Fatalf("%q does not match KeyPattern", key)
				}
			}
		})
	}
}

func TestGenerateNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		key := mustGenerate(t, "kg", "live")
		if seen[key] {
			t.Fatalf("Generate repeated a key")
		}
		seen[key] = true
	}
}

func TestParse(t *testing.T) {
	valid := mustGenerate(t, "kg", "live")
	body := valid[:len(valid)-checksumLen]
	secretAt := len("kg_live_")
	for _, tc := range []struct {
		name, key, prefix string
		wantEnv           string
	}{
		{"valid live key", valid, "kg", "live"},
		{"valid key with all-zero secret", withChecksum("kg_test_" + strings.Repeat("0", secretLen)), "kg", "test"},
		{"valid key with the largest 32-byte secret", withChecksum("kg_live_" + maxSecret), "kg", "live"},
		{"secret above 32 bytes", withChecksum("kg_live_" + strings.Repeat("z", secretLen)), "kg", ""},
		{"wrong prefix", valid, "acme", ""},
		{"prefix that is itself invalid", "K" + valid[2:], "K", ""},
		{"empty key", "", "kg", ""},
		{"one character short", valid[:len(valid)-1], "kg", ""},
		{"one character long", valid + "0", "kg", ""},
		{"unknown env", withChecksum("kg_prod_" + body[secretAt:]), "kg", ""},
		{"missing separator", withChecksum("kg-live_" + body[secretAt:]), "kg", ""},
		{"character outside base62", withChecksum(body[:secretAt] + "-" + body[secretAt+1:]), "kg", ""},
		{"non-ASCII character", withChecksum(body[:secretAt] + "é" + body[secretAt+2:]), "kg", ""},
		{"checksum of another key", body + mustGenerate(t, "kg", "live")[len(body):], "kg", ""},
		{"bearer scheme left on", "Bearer " + valid, "kg", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, ok := Parse(tc.key, tc.prefix)
			if ok != (tc.wantEnv != "") || env != tc.wantEnv {
				t.Errorf("Parse(%q, %q) = %q, %v; want %q", tc.key, tc.prefix, env, ok, tc.wantEnv)
			}
		})
	}
}

// TestParseRejectsEveryOneCharacterChange: CRC-32 catches every burst of up
// to 32 bits, so no single substituted byte may pass.
func TestParseRejectsEveryOneCharacterChange(t *testing.T) {
	for range 20 {
		key := mustGenerate(t, "kg", "test")
		b := []byte(key)
		for i := range b {
			orig := b[i]
			for c := range 256 {
				if byte(c) == orig {
					continue
				}
				b[i] = byte(c)
				if _, ok := Parse(string(b), "kg"); ok {
					t.Fatalf("Parse accepted %q, a one-character change of %q", b, key)
				}
			}
			b[i] = orig
		}
	}
}

func TestParseAllocatesNothing(t *testing.T) {
	key := mustGenerate(t, "kg", "live")
	bad := key[:len(key)-1] + "0"
	if n := testing.AllocsPerRun(1000, func() {
		Parse(key, "kg")
		Parse(bad, "kg")
	}); n != 0 {
		t.Errorf("Parse allocates %v times per call, want 0", n)
	}
}

func TestDigestOf(t *testing.T) {
	for _, tc := range []struct{ name, key string }{
		{"key of the default shape", mustGenerate(t, "kg", "live")},
		{"empty input", ""},
		{"input longer than the stack buffer", strings.Repeat("x", 1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := DigestOf(tc.key), sha256.Sum256([]byte(tc.key)); got != want {
				t.Errorf("DigestOf = %x, want SHA-256 %x", got, want)
			}
		})
	}
	key := mustGenerate(t, "acmecorp99", "live")
	if n := testing.AllocsPerRun(1000, func() { DigestOf(key) }); n != 0 {
		t.Errorf("DigestOf allocates %v times per call, want 0", n)
	}
}

func TestHint(t *testing.T) {
	key := mustGenerate(t, "kg", "live")
	for _, tc := range []struct{ name, key, want string }{
		{"key shows prefix, env and 8 secret characters", key, key[:len("kg_live_")+8] + "…"},
		{"custom prefix", "acme_test_0123456789abcdef", "acme_test_01234567…"},
		{"no structure reveals nothing", strings.Repeat("s", 60), "…"},
		{"unknown env reveals nothing", "kg_prod_0123456789", "…"},
		{"too short reveals nothing", "kg_live_0123", "…"},
		{"empty", "", "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Hint(tc.key); got != tc.want {
				t.Errorf("Hint(%q) = %q, want %q", tc.key, got, tc.want)
			}
		})
	}
}

func TestNewID(t *testing.T) {
	pattern := regexp.MustCompile(`^key_[0-9A-Za-z]{16}$`)
	seen := map[string]bool{}
	for range 10000 {
		id := NewID()
		if !pattern.MatchString(id) {
			t.Fatalf("NewID() = %q, want key_ and 16 base62 characters", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func FuzzParse(f *testing.F) {
	for _, env := range []string{"live", "test"} {
		f.Add(mustGenerate(f, "kg", env), "kg", uint8(10), byte('A'))
	}
	f.Add(mustGenerate(f, "acme", "live"), "acme", uint8(60), byte('0'))
	f.Add("", "", uint8(0), byte(0))
	f.Add("kg_live_", "kg", uint8(3), byte(0xff))
	f.Fuzz(func(t *testing.T, key, prefix string, pos uint8, c byte) {
		if env, ok := Parse(key, prefix); ok {
			if !validEnv(env) || !strings.HasPrefix(key, prefix+"_"+env+"_") ||
				len(key) != len(prefix)+len("_live_")+secretLen+checksumLen || !utf8.ValidString(key) {
				t.Fatalf("Parse(%q, %q) accepted a malformed key as env %q", key, prefix, env)
			}
		}
		if !ValidPrefix(prefix) {
			return
		}
		key = mustGenerate(t, prefix, "test")
		if env, ok := Parse(key, prefix); !ok || env != "test" {
			t.Fatalf("Parse(Generate(%q, test)) = %q, %v", prefix, env, ok)
		}
		i := int(pos) % len(key)
		if key[i] == c {
			return
		}
		changed := key[:i] + string([]byte{c}) + key[i+1:]
		if _, ok := Parse(changed, prefix); ok {
			t.Fatalf("Parse accepted %q, a one-character change of %q", changed, key)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	key := mustGenerate(b, "kg", "live")
	b.ReportAllocs()
	for b.Loop() {
		Parse(key, "kg")
	}
}

func BenchmarkDigestOf(b *testing.B) {
	key := mustGenerate(b, "kg", "live")
	b.ReportAllocs()
	for b.Loop() {
		DigestOf(key)
	}
}

// A key anywhere in a string (a URL's path or query) loses its secret in
// Redact; the rest of the string is kept, and text that only looks partly
// like a key is left alone.
func TestRedact(t *testing.T) {
	k1, _ := Generate("kg", "live")
	k2, _ := Generate("acme", "test")
	for _, c := range []struct{ in, want string }{
		{"/v3/mail/send", "/v3/mail/send"},
		{"/v3/mail/send?api_key=" + k1, "/v3/mail/send?api_key=kg_live_…"},
		{"/a/" + k1 + "/b?x=" + k2 + "&y=1", "/a/kg_live_…/b?x=acme_test_…&y=1"},
		{"/kg_live_short?kg_test_", "/kg_live_short?kg_test_"},
		{k1 + k2, "kg_live_…_test_…"}, // the first run ends at the second key's "_"
		{"é_live_" + k1[8:], "é_live_…"},
	} {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
		}
		if got, want := HasSecret(c.in), c.in != c.want; got != want {
			t.Errorf("HasSecret(%q) = %v, want %v", c.in, got, want)
		}
	}
}

// FuzzRedact: what Redact returns holds no run of 43 base62 characters
// after "_live_" or "_test_", redacting twice changes nothing more, and
// HasSecret says whether Redact changes a string.
func FuzzRedact(f *testing.F) {
	k, _ := Generate("kg", "live")
	for _, s := range []string{"", "/v3/mail/send", "?k=" + k, k + "_test_" + k, "_live__test_" + k[8:]} {
		f.Add(s)
	}
	secret := regexp.MustCompile(`_(live|test)_[0-9A-Za-z]{43}`)
	f.Fuzz(func(t *testing.T, s string) {
		r := Redact(s)
		if secret.MatchString(r) {
			t.Fatalf("Redact(%q) = %q still holds a secret", s, r)
		}
		if Redact(r) != r {
			t.Fatalf("Redact(%q) = %q, and again %q", s, r, Redact(r))
		}
		if HasSecret(s) != (r != s) || HasSecret(r) {
			t.Fatalf("HasSecret(%q) = %v and of its redaction %v, Redact changed it: %v", s, HasSecret(s), HasSecret(r), r != s)
		}
	})
}

// Redact takes time in proportion to its input, however many "_live_" a
// hostile URL holds: a denial's log line must not cost a second. (A version
// that searched the rest of the string again after each "_live_" took 256
// times as long for 16 times the input.)
func TestRedactIsLinear(t *testing.T) {
	fastest := func(s string, n int) time.Duration {
		best := time.Duration(1 << 62)
		for range 5 {
			start := time.Now()
			for range n {
				Redact(s)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	for _, unit := range []string{"_live_", "_live_x", "_test__live_", "_"} {
		small, big := strings.Repeat(unit, 500), strings.Repeat(unit, 8000)
		ts, tb := fastest(small, 16), fastest(big, 1) // the same bytes in all
		if tb > 4*ts {
			t.Errorf("%q: %v for 16 × 500, %v for 8,000", unit, ts, tb)
		}
	}
}

// Find takes keys of any prefix out of the text they were pasted with, the
// escapes that run into them included, and nothing that fails the checksum.
func TestFindKeysInPastedText(t *testing.T) {
	a, _ := Generate("acme", "live")
	b, _ := Generate("kg", "test")
	bad := a[:len(a)-1] + string("0123456789"[(strings.IndexByte(alphabet, a[len(a)-1])+1)%10])
	text := "x=" + a + "\\n" + "Bearer%20" + b + "%0A" + bad + " " + a
	got := Find(text)
	if len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("Find = %q, want [%s… %s…]", got, a[:12], b[:12])
	}
	if got := Find("kg_live_" + strings.Repeat("A", 49)); len(got) != 0 {
		t.Errorf("a key with a wrong checksum is found: %q", got)
	}
}

// FuzzFind: every key Find returns is in the text, well formed for its own
// prefix, and found once; a well-formed key set anywhere in text is found.
func FuzzFind(f *testing.F) {
	k, _ := Generate("kg", "live")
	for _, s := range []string{"", "Bearer " + k, "x%3D" + k + "%26", `\n` + k + `\t`, k + k, "_live_" + k[8:]} {
		f.Add(s, uint8(0))
	}
	f.Fuzz(func(t *testing.T, s string, at uint8) {
		for _, key := range Find(s) {
			prefix, _, _ := strings.Cut(key, "_")
			if _, ok := Parse(key, prefix); !ok || !strings.Contains(s, key) {
				t.Fatalf("Find(%q) returned %q", s, key)
			}
		}
		// A key put in at a byte boundary, with a separator on each side, is
		// found.
		i := int(at) % (len(s) + 1)
		text := s[:i] + " " + k + " " + s[i:]
		if !slices.Contains(Find(text), k) {
			t.Fatalf("Find(%q) misses the key put in it", text)
		}
	})
}

// A secret percent-encoded once or more shows however the rest of the text
// is escaped: a '%' that starts no escape does not hide it, as a strict
// decoder's error would.
func TestEscapedSecret(t *testing.T) {
	key, _ := Generate("kg", "live")
	enc := func(n int) string {
		s := key
		for range n {
			s = strings.ReplaceAll(s, "%", "%25")
			s = strings.ReplaceAll(s, "_", "%5F")
		}
		return s
	}
	for _, c := range []struct {
		text string
		want bool
	}{
		{"/v3/mail/send?note=100%25&k=" + enc(2), true},
		{"/v3/mail/send?note=50%&k=" + enc(1), true},
		{"/a%zz/" + enc(2), true},
		{"/x?k=" + enc(4), true},
		{"/x?k=" + enc(5), false}, // deeper than any decoder goes
		{"/x?k=" + key, false},    // not escaped: HasSecret's to find
		{"/x?q=100%25%2", false},
		{"%", false},
	} {
		d, got := EscapedSecret(c.text)
		if got != c.want || got && !HasSecret(d) {
			t.Errorf("EscapedSecret(%q) = %q, %v; want %v", c.text, d, got, c.want)
		}
	}
}

func FuzzEscapedSecret(f *testing.F) {
	key, _ := Generate("kg", "live")
	f.Add("/x?note=100%25&k=" + strings.ReplaceAll(key, "_", "%255F"))
	f.Add("%%%2%zz%5")
	f.Fuzz(func(t *testing.T, s string) {
		if d, ok := EscapedSecret(s); ok && !HasSecret(d) {
			t.Errorf("EscapedSecret(%q) = %q, true, holding no secret", s, d)
		}
	})
}
