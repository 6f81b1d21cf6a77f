package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
)

// An engine is one kind of store and the URIs that name it. engines is the
// one table of them: Open, ParseURI and the help texts of the Caddyfile and
// the CLI all read it.
type engine struct {
	// prefixes are the URI beginnings that select the engine.
	prefixes []string
	open     func(ctx context.Context, uri string) (Store, error)
}

var engines = []engine{
	// The file at the path, followed (see sqliteFile).
	{prefixes: []string{"sqlite:"}, open: func(ctx context.Context, uri string) (Store, error) {
		s, err := openSQLiteFile(ctx, strings.TrimPrefix(uri, "sqlite:"))
		if err != nil {
			return nil, err // not s: a nil *sqliteFile in a Store is a non-nil interface
		}
		return s, nil
	}},
	{prefixes: []string{"postgres://", "postgresql://"}, open: func(ctx context.Context, uri string) (Store, error) {
		p, err := OpenPostgres(ctx, uri)
		if err != nil {
			return nil, err
		}
		return p, nil
	}},
}

// URIForms says which store URIs are accepted, for errors and help texts.
const URIForms = "sqlite:PATH, a file path (SQLite), or postgres://…"

// ParseURI checks a store URI and returns its canonical form. A bare file
// path names an SQLite file, as sqlite:PATH does; relative SQLite paths are
// made absolute, so one file has one name whatever the working directory.
// Errors never repeat a password the URI holds.
func ParseURI(uri string) (string, error) {
	if uri == "" {
		return "", errors.New("keygate store: empty URI; want " + URIForms)
	}
	for _, e := range engines {
		for _, p := range e.prefixes {
			if strings.HasPrefix(uri, p) {
				if p == "sqlite:" {
					return sqliteURI(strings.TrimPrefix(uri, p))
				}
				if UnencodedUserinfo(uri) {
					return "", fmt.Errorf("keygate store: %s: %w", RedactURI(uri), ErrUnencodedUserinfo)
				}
				return uri, nil
			}
		}
	}
	// postgres:kg:PASSWORD@db/keygate, its "//" left out, would be a
	// relative SQLite path: a file made under the working directory, and
	// the password in its name and in every line that names the store.
	for _, e := range engines {
		for _, p := range e.prefixes {
			if scheme, ok := strings.CutSuffix(p, "//"); ok && len(uri) > len(scheme) && strings.EqualFold(uri[:len(scheme)], scheme) {
				return "", fmt.Errorf("keygate store: %s: want %s…", RedactURI(uri), p)
			}
		}
	}
	if scheme, ok := uriScheme(uri); ok {
		return "", fmt.Errorf("keygate store: %s: unknown scheme %q; want %s", RedactURI(uri), scheme, URIForms)
	}
	// A key=value connection string ("host=db password=…") is not a path.
	if strings.ContainsAny(uri, "= \t") {
		return "", fmt.Errorf("keygate store: %s: not a URI; want %s", RedactURI(uri), URIForms)
	}
	return sqliteURI(uri)
}

func sqliteURI(path string) (string, error) {
	if path == "" {
		return "", errors.New("keygate store: \"sqlite:\": want sqlite:PATH")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("keygate store: sqlite path %q: %w", path, err)
	}
	return "sqlite:" + abs, nil
}

// Open opens the store a URI names (see ParseURI and URIForms). An SQLite
// store follows its path: if the file there is replaced while it is open, it
// switches to the new file (see Replaceable), and if the file is deleted it
// refuses writes (ErrFileGone).
func Open(ctx context.Context, uri string) (Store, error) {
	uri, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	for _, e := range engines {
		for _, p := range e.prefixes {
			if strings.HasPrefix(uri, p) {
				return e.open(ctx, uri)
			}
		}
	}
	panic("keygate store: ParseURI accepted a URI no engine opens: " + RedactURI(uri))
}

// SQLitePath returns the file of an SQLite store URI (as ParseURI returns
// it), and false for any other engine.
func SQLitePath(uri string) (string, bool) {
	return strings.CutPrefix(uri, "sqlite:")
}

// DefaultSQLitePath is where the SQLite store lives when no store is
// configured: under Caddy's data directory, so the gateway and the
// `caddy keys` CLI find the same file.
func DefaultSQLitePath(dataDir string) string {
	return filepath.Join(dataDir, "keygate", "keys.db")
}

// passwordParam matches password-like parameters in URI queries and in
// key=value connection strings ("host=db password=…"), whatever their
// name starts with (sslpassword), and a value in single quotes whole
// (password='a b', as libpq and pgx read it).
var passwordParam = regexp.MustCompile(`(?i)(^|[?&\s])([a-z_]*(?:password|passwd|pwd|pass|secret|token))=('(?:[^'\\]|\\.)*'?|[^&\s]*)`)

// opaqueScheme returns the scheme of a URI that has one but no "//" after
// it (redis:PASSWORD@host), and false for any other string: a URI with
// "//", an SQLite URI (sqlite:PATH), a key=value connection string, a path
// (a one-letter scheme is a Windows drive).
func opaqueScheme(s string) (string, bool) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || len(scheme) < 2 || strings.HasPrefix(rest, "//") || strings.EqualFold(scheme, "sqlite") {
		return "", false
	}
	if _, ok := uriScheme(scheme + "://"); !ok {
		return "", false
	}
	return scheme, true
}

// uriScheme returns the scheme of a URI ("postgres" of postgres://…), and
// false for a string that has none, though it holds "://": a key=value
// connection string whose password does ("password=ab://cd"), all of whose
// text before "://" was quoted as the scheme.
func uriScheme(s string) (string, bool) {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return "", false
	}
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return "", false
		}
	}
	return scheme, true
}

// ErrUnencodedUserinfo says what is wrong with a URL whose user name or
// password could not be read (see UnencodedUserinfo), without quoting it.
var ErrUnencodedUserinfo = errors.New("not a URL: characters such as % # ? / @ in the user name or password must be percent-encoded (%25 %23 %3F %2F %40)")

// UnencodedUserinfo reports whether a URI's user name or password holds a
// character that ends it unencoded ('/', '?' or '#', common in generated
// passwords), so that net/url reads the password's rest, and the '@' after
// it, as the path, the query or the fragment: "postgres://kg:5432/Secret@db/kg"
// parses as the host kg on port 5432 and the database "Secret@db/kg", which
// logs and errors then showed. So an '@' after the authority where no
// component holds one (in the path, in the fragment, in a query
// parameter's name) is taken for the end of a user name or password.
func UnencodedUserinfo(uri string) bool {
	_, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return false
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		return false
	}
	rest, fragment, _ := strings.Cut(rest[end:], "#")
	path, query, _ := strings.Cut(rest, "?")
	if strings.Contains(path, "@") || strings.Contains(fragment, "@") {
		return true
	}
	for _, param := range strings.Split(query, "&") {
		if name, _, _ := strings.Cut(param, "="); strings.Contains(name, "@") {
			return true
		}
	}
	return false
}

// RedactURI returns uri with any password replaced by "xxxxx", for logs and
// error messages. A URI it cannot parse is cut down to its scheme, since its
// remainder may hold a password in a shape we do not recognise, and so is
// one whose "//" was left out (redis:PASSWORD@host, postgres:kg:PASSWORD@db),
// whose remainder net/url does not read as a user and password, and one
// whose user name or password ends early (UnencodedUserinfo), whose
// remainder net/url reads as the host and the path.
func RedactURI(uri string) string {
	if scheme, ok := opaqueScheme(uri); ok {
		return scheme + ":xxxxx"
	}
	if scheme, ok := uriScheme(uri); ok {
		u, err := url.Parse(uri)
		if err != nil || UnencodedUserinfo(uri) {
			return scheme + "://xxxxx"
		}
		uri = u.Redacted()
		// A parameter's name as the server reads it: percent-escapes in
		// it (pass%77ord=) decoded.
		if base, query, ok := strings.Cut(uri, "?"); ok {
			params := strings.Split(query, "&")
			for i, p := range params {
				name, _, _ := strings.Cut(p, "=")
				if decoded, err := url.QueryUnescape(name); err == nil && decoded != name &&
					passwordParam.MatchString(decoded+"=") {
					params[i] = name + "=xxxxx"
				}
			}
			uri = base + "?" + strings.Join(params, "&")
		}
	}
	return passwordParam.ReplaceAllString(uri, "${1}${2}=xxxxx")
}
