// Command caddy is a Caddy build with the standard modules and keygate,
// for development and tests without xcaddy:
//
//	go build -o caddy ./cmd/caddy
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/keygate/caddy-keygate"
)

func main() {
	caddycmd.Main()
}
