package store

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
)

// openPostgres opens a PostgreSQL store. It is set by the PostgreSQL store's
// file so Open can stay the one entry point for every store URI.
var openPostgres func(ctx context.Context, uri string) (Store, error)

// Open opens the store a URI names:
//
//	sqlite:PATH             the embedded SQLite store (PATH relative or absolute)
//	postgres://…            the PostgreSQL store (also postgresql://)
//
// Errors never repeat a password the URI holds.
func Open(ctx context.Context, uri string) (Store, error) {
	if path, ok := strings.CutPrefix(uri, "sqlite:"); ok {
		if path == "" {
			return nil, fmt.Errorf("keygate store: %q: want sqlite:PATH", uri)
		}
		return OpenSQLite(ctx, path)
	}
	scheme, _, hasScheme := strings.Cut(uri, "://")
	switch {
	case hasScheme && (scheme == "postgres" || scheme == "postgresql"):
		if openPostgres == nil {
			return nil, fmt.Errorf("keygate store: %s: postgres store not built in", RedactURI(uri))
		}
		return openPostgres(ctx, uri)
	case hasScheme:
		return nil, fmt.Errorf("keygate store: %s: unknown scheme %q; want sqlite:PATH or postgres://…", RedactURI(uri), scheme)
	}
	return nil, fmt.Errorf("keygate store: %s: no scheme; want sqlite:PATH or postgres://…", RedactURI(uri))
}

// DefaultSQLitePath is where the SQLite store lives when no store is
// configured: under Caddy's data directory, so the gateway and the
// `caddy keys` CLI find the same file.
func DefaultSQLitePath(dataDir string) string {
	return filepath.Join(dataDir, "keygate", "keys.db")
}

// passwordParam matches password-like parameters in URI queries and in
// key=value connection strings ("host=db password=…").
var passwordParam = regexp.MustCompile(`(?i)\b(password|passwd|pwd|pass|secret|token)=([^&\s]*)`)

// RedactURI returns uri with any password replaced by "xxxxx", for logs and
// error messages. A URI it cannot parse is cut down to its scheme, since its
// remainder may hold a password in a shape we do not recognise.
func RedactURI(uri string) string {
	if scheme, _, ok := strings.Cut(uri, "://"); ok {
		u, err := url.Parse(uri)
		if err != nil {
			return scheme + "://xxxxx"
		}
		uri = u.Redacted()
	}
	return passwordParam.ReplaceAllString(uri, "${1}=xxxxx")
}
