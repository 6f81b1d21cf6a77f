// Command bodies writes the benchmark's send bodies (internal/benchbody) to a
// directory, one file per body, and prints one line per body for bench/run.sh:
//
//	<name> <file> <path> <content type> <recipients> <bytes>
//
//	go run ./bench/bodies -dir bench/out/bodies
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/keygate/caddy-keygate/internal/benchbody"
)

func main() {
	dir := flag.String("dir", "bench/out/bodies", "directory to write the bodies to")
	flag.Parse()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, b := range benchbody.All() {
		file := filepath.Join(*dir, b.Name+".body")
		if err := os.WriteFile(file, b.Data, 0o644); err != nil {
			log.Fatal(err)
		}
		// The content type has no spaces (the multipart boundary is plain).
		fmt.Printf("%s %s %s %s %d %d\n", b.Name, file, b.Path, b.ContentType, b.Recipients, len(b.Data))
	}
}
