// Command keys prints well-formed keygate keys that no store holds: the
// prefix and env, 43 random base62 characters and the 6-character base62
// CRC-32 (IEEE) of everything before them, as verifier/key.go defines the
// format. A gateway cannot reject them by shape or checksum, so a flood of
// them measures the cache and store path.
//
//	go run ./bench/keys -n 100000 > unknown.txt
//	go run ./bench/keys -n 1000 -garbage > garbage.txt
package main

import (
	"bufio"
	"crypto/rand"
	"flag"
	"hash/crc32"
	"log"
	"os"

	"github.com/keygate/caddy-keygate/verifier"
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func main() {
	n := flag.Int("n", 1000, "how many keys to print")
	prefix := flag.String("prefix", "kg", "key prefix")
	env := flag.String("env", "live", "key env: live or test")
	garbage := flag.Bool("garbage", false, "print key-length garbage that fails the shape or checksum check instead")
	flag.Parse()

	w := bufio.NewWriterSize(os.Stdout, 1<<16)
	defer w.Flush()
	head := *prefix + "_" + *env + "_"
	buf := make([]byte, 0, len(head)+49)
	rejected := 0 // in a row: a format this program gets wrong would loop forever
	for i := 0; i < *n; i++ {
		if rejected > 100 {
			log.Fatalf("keys: verifier.Parse rejects every key made with prefix %q env %q", *prefix, *env)
		}
		buf = append(buf[:0], head...)
		if *garbage {
			// Same length and alphabet as a key; the checksum is random, so
			// it is right about once in 2^32.
			buf = appendRandom(buf, 49)
			if _, ok := verifier.Parse(string(buf), *prefix); ok {
				i--
				continue
			}
		} else {
			buf = appendRandom(buf, 43)
			sum := crc32.ChecksumIEEE(buf)
			var cs [6]byte
			for j := len(cs) - 1; j >= 0; j-- {
				cs[j] = alphabet[sum%62]
				sum /= 62
			}
			buf = append(buf, cs[:]...)
			// 62^43 is just above 2^256 and Parse rejects a secret above
			// 2^256-1 (about 2% of random strings): draw again.
			if _, ok := verifier.Parse(string(buf), *prefix); !ok {
				i--
				rejected++
				continue
			}
			rejected = 0
		}
		w.Write(buf)
		w.WriteByte('\n')
	}
}

// appendRandom appends n base62 characters from crypto/rand, each equally
// likely (bytes 248..255 are rejected).
func appendRandom(b []byte, n int) []byte {
	var r [64]byte
	for n > 0 {
		if _, err := rand.Read(r[:]); err != nil {
			log.Fatal(err)
		}
		for _, c := range r {
			if c < 248 && n > 0 {
				b = append(b, alphabet[c%62])
				n--
			}
		}
	}
	return b
}

func init() { log.SetFlags(0) }
