package keygate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "keys",
		Usage: "<issue|list|show|update|rotate|revoke|audit|usage|events|backup|restore|copy-store> [--store <uri>] [--json]",
		Short: "Manages keygate API keys",
		Long: `
Manages the API keys that keygate accepts. Keys live in the store given by
--store, else $KEYGATE_STORE, else the SQLite file keygate uses by default
(keygate/keys.db in Caddy's data directory). Changes are enforced by running
gateways within one second.

A key is printed once, when it is issued or rotated; keygate keeps only its
SHA-256 digest. Every subcommand takes --json for scripts.

Exit statuses: 0 done, 1 other failure, 2 invalid input, 3 not found,
4 conflict (e.g. the key is revoked), 5 store unavailable (try again).
With --json an error is {"error":{"code","message"}} on stderr's last line.
`,
		CobraFunc: func(cmd *cobra.Command) {
			// Caddy's help ends with a link to its web docs, which do not
			// cover keygate: point at keygate's own reference instead.
			cmd.SetHelpTemplate(cmd.HelpTemplate() + "\nReference: docs/cli.md in keygate's source (github.com/keygate/caddy-keygate).\n")
			cmd.PersistentFlags().String("store", "", "Key store: "+store.URIForms+"; default $KEYGATE_STORE or Caddy's data dir")
			cmd.PersistentFlags().Bool("json", false, "Print JSON for scripts")
			cmd.PersistentFlags().String("envfile", "", "Read environment variables from this file (KEY=VALUE lines, as systemd's EnvironmentFile), e.g. KEYGATE_STORE")
			cmd.SilenceUsage = true
			for _, sub := range keysCommands() {
				usageErrors(sub)
				cmd.AddCommand(sub)
				subcommands[sub.Name()] = true
			}
			// A mistyped subcommand must fail, not print help and exit 0: a
			// script running `caddy keys revok ID` would believe the key
			// revoked. Unknown flags are let through to report the
			// subcommand, not the flag.
			cmd.FParseErrWhitelist.UnknownFlags = true
			cmd.RunE = func(c *cobra.Command, args []string) error {
				// A subcommand's flag given before it takes the subcommand
				// for its value: `caddy keys --yes revoke ID` would run
				// nothing (or print help and exit 0).
				// Said as every other error of the CLI is, on one line.
				// A key pasted as the subcommand (or as a flag before it)
				// is not repeated, as failed does not repeat one.
				fail := func(msg string) error {
					if jsonWanted(c) {
						os.Exit(failed(os.Stderr, c, "", badRequest("%s", msg)))
					}
					fmt.Fprintf(os.Stderr, "caddy keys: %s (see \"caddy keys --help\")\n", verifier.Redact(msg))
					os.Exit(exitStatuses["invalid_input"])
					return nil
				}
				if msg := flagBeforeSubcommand(os.Args); msg != "" {
					return fail(msg)
				}
				if len(args) == 0 {
					return c.Help()
				}
				msg := fmt.Sprintf("unknown subcommand %q", args[0])
				if s := c.SuggestionsFor(args[0]); len(s) > 0 {
					msg += "; did you mean " + strings.Join(s, " or ") + "?"
				}
				return fail(msg)
			}
		},
	})
}

// subcommands are the names of the keys command's subcommands.
var subcommands = map[string]bool{}

// flagBeforeSubcommand says what is wrong with the flags argv gives between
// "keys" and its subcommand, or "": a flag that is not the keys command's
// own (--store, --envfile, --json, --help) belongs after its subcommand,
// and --store or --envfile without a value takes the subcommand for it.
func flagBeforeSubcommand(argv []string) string {
	i := slices.Index(argv, "keys")
	if i < 0 {
		return ""
	}
	for rest := argv[i+1:]; len(rest) > 0; rest = rest[1:] {
		a := rest[0]
		if a == "--" || a == "-" || !strings.HasPrefix(a, "-") {
			return ""
		}
		flag, _, hasValue := strings.Cut(a, "=")
		switch strings.TrimLeft(flag, "-") {
		case "store", "envfile":
			if !hasValue {
				if len(rest) < 2 || subcommands[rest[1]] || strings.HasPrefix(rest[1], "--") {
					return flag + " needs a value: caddy keys " + flag + " VALUE <subcommand> …"
				}
				rest = rest[1:] // its value
			}
		case "json", "help", "h":
		default:
			return "flag " + flag + " goes after the subcommand: caddy keys <subcommand> " + flag + " …"
		}
	}
	return ""
}

// loadEnvFile sets the variables of an environment file that the
// environment does not set already, as `caddy run --envfile` does, so the
// CLI finds the store the gateway's Caddyfile names ({env.KEYGATE_STORE})
// in the file the service reads, without its password on a command line.
// Lines are KEY=VALUE; blank lines and comments (a line starting with # or
// ;) are skipped, "export " before the key is allowed, and one pair of
// quotes around the whole value is removed. What systemd's EnvironmentFile
// and Caddy's --envfile read differently, a comment after a value or a
// quoted value spanning lines, is refused rather than read otherwise than
// the gateway reads it. A variable the environment sets to a value wins.
// An error names the line, never its text, which may hold a secret.
func loadEnvFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--envfile: %w", err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, val, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			return fmt.Errorf("--envfile %s: line %d is not KEY=VALUE", path, i+1)
		}
		val = strings.TrimSpace(val)
		switch {
		case val != "" && (val[0] == '"' || val[0] == '\''):
			if len(val) < 2 || val[len(val)-1] != val[0] {
				return fmt.Errorf("--envfile %s: line %d opens a quote it does not close at the end of the line", path, i+1)
			}
			val = val[1 : len(val)-1]
		case strings.Contains(val, " #") || strings.Contains(val, "\t#"):
			// systemd keeps a trailing comment in the value, Caddy drops it.
			return fmt.Errorf("--envfile %s: line %d has a comment after its value, which systemd and caddy read "+
				"differently; put it on a line of its own", path, i+1)
		}
		if os.Getenv(key) == "" { // unset, or set empty: KEYGATE_STORE= would mean the default store
			os.Setenv(key, val)
		}
	}
	return nil
}

// usageErrors makes a subcommand's argument and flag errors read as its
// other errors do, "caddy keys show: …" on one line with its usage, rather
// than cobra's "Error: accepts 1 arg(s), received 0".
func usageErrors(sub *cobra.Command) {
	fail := func(c *cobra.Command, err error) error {
		// A flag's parse error quotes its value: a key pasted there is cut.
		os.Exit(failed(os.Stderr, c, " (usage: caddy keys "+c.Use+")", badRequest("%v", err)))
		return err
	}
	if args := sub.Args; args != nil {
		sub.Args = func(c *cobra.Command, a []string) error {
			if err := args(c, a); err != nil {
				return fail(c, err)
			}
			return nil
		}
	}
	sub.SetFlagErrorFunc(fail)
}

// cli is what every subcommand gets: the keys service of the store, output
// and flags.
type cli struct {
	keys  *keys.Service
	out   io.Writer
	warn  io.Writer
	json  bool
	flags *pflag.FlagSet
	actor string
	uri   string // the store's
}

// run wraps a subcommand: opens the store, runs, closes the store, and
// turns an error into one line on stderr and exit status 1.
func run(f func(ctx context.Context, c *cli, args []string) error) func(*cobra.Command, []string) error {
	return runCmd(true, nil, f)
}

// runOwnStore wraps a subcommand that opens the store itself (restore,
// which replaces it): c.keys is nil and c.uri names the store.
func runOwnStore(f func(ctx context.Context, c *cli, args []string) error) func(*cobra.Command, []string) error {
	return runCmd(false, nil, f)
}

// runOnSQLite wraps a subcommand that works on the SQLite store only
// (backup): another store is answered notSQLite before it is opened, since
// opening it would migrate a PostgreSQL schema (an upgrade's backup is taken
// with the version being left) and wait for a server that may be down, only
// to do nothing.
func runOnSQLite(notSQLite error, f func(ctx context.Context, c *cli, args []string) error) func(*cobra.Command, []string) error {
	return runCmd(true, notSQLite, f)
}

func runCmd(open bool, notSQLite error, f func(ctx context.Context, c *cli, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := func() error {
			if cmd.Flags().Changed("envfile") {
				file, _ := cmd.Flags().GetString("envfile")
				if file == "" {
					// --envfile="$FILE" with FILE unset: going on would use
					// the default store, which no gateway may read.
					return badRequest("--envfile is empty: name the file the gateway's environment is in")
				}
				if err := loadEnvFile(file); err != nil {
					return badRequest("%v", err)
				}
			}
			given, _ := cmd.Flags().GetString("store")
			if strings.HasPrefix(given, "--") {
				// `--store --json`: the flag after it taken for its value.
				return badRequest("--store needs a value: it took the flag %q for one (--store URI)", given)
			}
			if given == "" {
				given = os.Getenv("KEYGATE_STORE")
			}
			uri, err := storeURI(given)
			if err != nil {
				return badRequest("%v", err)
			}
			asJSON, _ := cmd.Flags().GetBool("json")
			c := &cli{out: cmd.OutOrStdout(), warn: cmd.ErrOrStderr(), json: asJSON, flags: cmd.Flags(),
				actor: cliActor(), uri: uri}
			if !open {
				return f(ctx, c, args)
			}
			if _, ok := store.SQLitePath(uri); !ok && notSQLite != nil {
				return notSQLite
			}
			// Only issue may create the embedded store: for any other
			// subcommand a missing file is a mistyped path, which would
			// otherwise look like a store without keys.
			path, missing := missingSQLite(uri)
			// The default store is the running user's: run as root beside
			// a service of its own user, it is another file than the
			// gateway's.
			whose, hint := "", "check --store and $KEYGATE_STORE"
			if given == "" {
				name := "unknown"
				if u, err := user.Current(); err == nil {
					name = u.Username
				}
				whose = " (the default store of user " + name + ")"
				hint = "a gateway running as another user keeps its own: run caddy keys as that user " +
					"(runuser -u caddy -- caddy keys …), or give --store"
			}
			if missing && cmd.Name() != "issue" {
				return badRequest("no keygate store at %s%s: a gateway creates it when it starts, `caddy keys issue` with the first key (%s)", path, whose, hint)
			}
			if missing {
				// Said, so a mistyped path is noticed at the first key.
				fmt.Fprintf(cmd.ErrOrStderr(), "note: no keygate store at %s yet%s; creating it\n", path, whose)
			}
			st, err := openStore(ctx, uri)
			if err != nil {
				return err
			}
			defer st.Close()
			c.keys = keys.New(st, keys.Options{})
			return f(ctx, c, args)
		}()
		cancel()
		if err != nil {
			os.Exit(failed(os.Stderr, cmd, "", err))
		}
		return nil
	}
}

// openStore opens the store uri names. A store that is not one, or that no
// retry mends, is invalid input (exit 2), one that did not answer or whose
// file is damaged is unavailable (exit 5, as when the damage is found after
// it opened); either error names the store, its password redacted.
func openStore(ctx context.Context, uri string) (store.Store, error) {
	st, err := store.Open(ctx, uri)
	if err != nil && !store.Unavailable(err) && !store.Damaged(err) {
		return nil, badRequest("%v", err)
	}
	return st, err
}

// Exit statuses of `caddy keys`, one per kind of failure, so a script can
// tell a key that is not there from a store that did not answer without
// reading the message. They follow the admin API's error codes.
var exitStatuses = map[string]int{
	"internal_error":    1, // anything else: a human should look
	"invalid_input":     2, // the command line or a value in it, --store included
	"not_found":         3, // no such key (or no active key of that owner)
	"conflict":          4, // the key's state forbids it: rotating a revoked or already rotated key, changing a revoked one
	"store_unavailable": 5, // the store did not answer: trying again later may work
}

// failed reports err for subcommand cmd on w as one line and returns the
// exit status its kind calls for. With --json the line is the admin API's
// error object, {"error":{"code","message"}}, so a script reads the kind
// of failure as it does from the admin API; else it is "caddy keys
// <sub>: <message><suffix>".
func failed(w io.Writer, cmd *cobra.Command, suffix string, err error) int {
	ae := classify(err)
	// One line, even for drivers whose errors span several (pgx indents
	// its details on lines of their own). A key pasted where a value
	// belongs (--store) is not repeated.
	msg := verifier.Redact(strings.Join(strings.Fields(err.Error()), " "))
	if said := cancelledAt(err); said != "" {
		msg = said + ": " + msg
	}
	if jsonWanted(cmd) {
		var body struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		body.Error.Code, body.Error.Message = ae.code, msg
		enc := json.NewEncoder(w) // one line, with its newline
		enc.SetEscapeHTML(false)  // as the admin API writes it
		enc.Encode(body)
	} else {
		fmt.Fprintf(w, "caddy keys %s: %s%s\n", cmd.Name(), msg, suffix)
	}
	if n, ok := exitStatuses[ae.code]; ok {
		return n
	}
	return 1
}

// jsonWanted reports whether --json was given, also when the command line
// failed to parse before cobra read it.
func jsonWanted(cmd *cobra.Command) bool {
	if v, err := cmd.Flags().GetBool("json"); err == nil && v {
		return true
	}
	for _, a := range os.Args[1:] {
		if a == "--" {
			break
		}
		if a == "--json" || a == "--json=true" {
			return true
		}
	}
	return false
}

// cliActor names who ran the command in audit events: OS user and host,
// and the person behind it when that user is not the one who logged in, as
// when the command runs as the caddy user (runuser -u caddy, sudo -u
// caddy, the way the docs run it): every such change would otherwise name
// caddy. The login user is the one the kernel keeps for the session
// (Linux's audit loginuid, set at login and changed by no su, sudo or
// runuser), else the one sudo names in SUDO_USER.
func cliActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	actor := "cli " + name + "@" + host
	login, how := loginUser(), "login"
	if login == "" {
		login, how = sudoUser(), "sudo by"
	}
	if login != "" && login != name {
		actor += " (" + how + " " + login + ")"
	}
	return actor
}

// sudoUser is the user sudo ran the command for, or "" when it names none
// that reads as a user name.
func sudoUser() string {
	by := os.Getenv("SUDO_USER")
	if len(by) > 64 || strings.ContainsFunc(by, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) {
		return ""
	}
	return by
}

// loginUIDFile holds the session's login user id on Linux.
var loginUIDFile = "/proc/self/loginuid"

// loginUser names the user who logged in to the session the command runs
// in, or "" when the system does not say (no audit loginuid: another OS, a
// container, a service started by systemd).
func loginUser() string {
	b, err := os.ReadFile(loginUIDFile)
	if err != nil {
		return ""
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil || id == math.MaxUint32 { // (uid_t)-1: unset
		return ""
	}
	if u, err := user.LookupId(strconv.FormatUint(id, 10)); err == nil {
		return u.Username
	}
	return "uid " + strconv.FormatUint(id, 10)
}

// specFlags registers the flags shared by issue and update.
func specFlags(fs *pflag.FlagSet, update bool) {
	fs.String("name", "", "Name of the integration, e.g. crm-sync")
	fs.String("owner", "", "Owner (team or person) responsible for the key")
	// What a flag does on update only, or on issue only: "" on the other.
	onUpdate := func(text string) string { return "" }
	onIssue := func(text string) string { return text }
	if update {
		onUpdate, onIssue = onIssue, onUpdate
	} else {
		fs.String("env", "live", "Key environment: live or test")
	}
	replaces := func(what, flag string) string {
		return onUpdate("; replaces every " + what + " the key holds (see --add-" + flag + ")")
	}
	fs.StringArray("scope", nil, "Scope the key holds (repeatable): mail.send, templates.read, mail.*, * (full access)"+replaces("scope", "scope"))
	fs.String("rate", "", "Request rate N/s, N/m, N/h or N/d (overrides the route's default)"+
		onUpdate("; none gives back the route's rate, and drops the key's burst unless --burst is given"))
	fs.Int("burst", 0, "Bucket size for --rate (default: the rate's count)")
	fs.String("expires", "", "Expiry: a duration from now (90d, 12h), an RFC 3339 time (2027-01-31T09:00:00+01:00), a date (2027-01-31: the start of that day, UTC), or never"+
		onIssue("; left out, the key never expires")+onUpdate(" (removes the expiry)"))
	fs.StringArray("allow-ip", nil, "Client CIDR the key may be used from (repeatable; IPv4 or IPv6)"+
		onIssue("; leave it out for any client address")+replaces("address", "allow-ip"))
	fs.StringArray("sender-domain", nil, "Sender domain the key may send from (repeatable; *.example.com for subdomains)"+
		onIssue("; leave it out for any domain")+replaces("sender domain", "sender-domain"))
	fs.String("quota", "", "Recipient quota N/d or N/mo (UTC)"+onUpdate("; none gives back the route's quota"))
	fs.Int("max-recipients", 0, "Most recipients per send request (0: no limit)")
	fs.Bool("allow-on-behalf-of", false, "Let the key pass On-Behalf-Of / X-Mailgun-On-Behalf-Of upstream"+
		onUpdate("; --allow-on-behalf-of=false takes that away (leaving the flag out never does)"))
	fs.String("reason", "", "Why (kept in the audit events)")
	if update {
		fs.StringArray("add-scope", nil, "Add a scope, keeping the others (repeatable)")
		fs.StringArray("remove-scope", nil, "Remove a scope, keeping the others (repeatable)")
		fs.StringArray("add-sender-domain", nil, "Add a sender domain (repeatable)")
		fs.StringArray("remove-sender-domain", nil, "Remove a sender domain (repeatable)")
		fs.StringArray("add-allow-ip", nil, "Add an allowed CIDR (repeatable)")
		fs.StringArray("remove-allow-ip", nil, "Remove an allowed CIDR (repeatable)")
	}
}

// specFrom reads the flags the user actually set into a keys.Spec. The CLI
// forces scopes no route uses: it prints the warning instead.
//
// A list flag given only empty values is refused (keys.NoEntries), as the
// service refuses such a list: checked here first only to name the flag
// and say what to give instead. Leaving the flag out says "any" on issue;
// --remove-… lifts entries on update.
func specFrom(fs *pflag.FlagSet) (keys.Spec, error) {
	s := keys.Spec{Force: true}
	set := func(name string) bool { return fs.Lookup(name) != nil && fs.Changed(name) }
	// The values as given: GetStringArray reads them back from their CSV
	// form, in which one empty value is no value at all.
	values := func(name string) []string { return fs.Lookup(name).Value.(pflag.SliceValue).GetSlice() }
	for _, name := range []string{"scope", "allow-ip", "sender-domain", "add-scope", "remove-scope",
		"add-allow-ip", "remove-allow-ip", "add-sender-domain", "remove-sender-domain"} {
		if set(name) && keys.NoEntries(values(name)) {
			return s, badRequest("--%s: the value is empty (a script's variable not set?); %s", name, emptyListHint(name))
		}
	}
	str := func(name string) *string {
		if !set(name) {
			return nil
		}
		v, _ := fs.GetString(name)
		return &v
	}
	list := func(name string) *[]string {
		if !set(name) {
			return nil
		}
		v := values(name)
		return &v
	}
	entries := func(name string) []string {
		if l := list(name); l != nil {
			return *l
		}
		return nil
	}
	num := func(name string) *int {
		if !set(name) {
			return nil
		}
		v, _ := fs.GetInt(name)
		return &v
	}
	flag := func(name string) *bool {
		if !set(name) {
			return nil
		}
		v, _ := fs.GetBool(name)
		return &v
	}
	s.Name, s.Owner, s.Env, s.Rate, s.Expires, s.Quota = str("name"), str("owner"), str("env"), str("rate"), str("expires"), str("quota")
	s.Scopes, s.AllowedIPs, s.SenderDomains = list("scope"), list("allow-ip"), list("sender-domain")
	s.AddScopes, s.RemoveScopes = entries("add-scope"), entries("remove-scope")
	s.AddSenderDomains, s.RemoveSenderDomains = entries("add-sender-domain"), entries("remove-sender-domain")
	s.AddAllowedIPs, s.RemoveAllowedIPs = entries("add-allow-ip"), entries("remove-allow-ip")
	s.Burst, s.MaxRecipients = num("burst"), num("max-recipients")
	s.AllowOnBehalfOf = flag("allow-on-behalf-of")
	s.Prefix = str("prefix")
	if r := str("reason"); r != nil {
		s.Reason = *r
	}
	return s, nil
}

// emptyListHint says what to do instead of giving a list flag no entry.
func emptyListHint(name string) string {
	switch name {
	case "allow-ip":
		return "leave --allow-ip out for a key usable from any client address, or remove an update's addresses with --remove-allow-ip"
	case "sender-domain":
		return "leave --sender-domain out for a key that may send from any domain, or remove an update's domains with --remove-sender-domain"
	}
	return "give at least one entry, or leave the flag out"
}

func keysCommands() []*cobra.Command {
	issue := &cobra.Command{
		Use:   "issue --name NAME --scope SCOPE [flags]",
		Short: "Issue a new key and print it once",
		Args:  cobra.NoArgs,
		RunE: run(func(ctx context.Context, c *cli, _ []string) error {
			spec, err := specFrom(c.flags)
			if err != nil {
				return err
			}
			asked, err := json.Marshal(spec)
			if err != nil {
				return err
			}
			once, err := c.idempotency("issue", asked)
			if err != nil {
				return err
			}
			res, err := c.keys.IssueOnce(ctx, spec, c.actor, once)
			if err != nil {
				return issueErr(err)
			}
			return c.printIssued(res)
		}),
	}
	specFlags(issue.Flags(), false)
	issue.Flags().String("prefix", "", "Key prefix (default: the prefix the routes on this store accept, else kg)")
	idempotencyFlag(issue.Flags())

	list := &cobra.Command{
		Use:   "list [--owner O] [--all] [--env live|test] [--status S] [--limit N [--after ID]]",
		Short: "List keys (never the keys themselves)",
		Long: `Lists keys, oldest first. --limit N prints one page of at most N keys; the
next page is --after the last id printed, until a page is short or empty.`,
		Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context, c *cli, _ []string) error {
			var sel keys.Selection
			sel.Owner, _ = c.flags.GetString("owner")
			sel.All, _ = c.flags.GetBool("all")
			sel.Env, _ = c.flags.GetString("env")
			sel.Status, _ = c.flags.GetString("status")
			sel.Limit, _ = c.flags.GetInt("limit")
			sel.After, _ = c.flags.GetString("after")
			recs, err := c.keys.Select(ctx, sel)
			if err != nil {
				return err
			}
			return c.output(recs, func() error {
				if err := c.printTable(recs); err != nil {
					return err
				}
				if sel.Limit > 0 && len(recs) == sel.Limit {
					fmt.Fprintf(c.warn, "More keys may follow: add --after %s for the next page.\n", recs[len(recs)-1].ID)
				}
				return nil
			})
		}),
	}
	list.Flags().String("owner", "", "Only keys of this owner")
	list.Flags().Bool("all", false, "Include revoked and expired keys")
	list.Flags().String("env", "", "Only keys of this env: live or test")
	list.Flags().String("status", "", "Only keys in this state, revoked and expired ones too: active (expiring included), expiring, disabled, expired or revoked")
	list.Flags().Int("limit", 0, "Print at most N keys, one page (0: every key)")
	list.Flags().String("after", "", "Start after the key with this id: the last id of the page before")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one key's record",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, c *cli, args []string) error {
			rec, err := c.keys.Show(ctx, args[0])
			if err != nil {
				return err
			}
			return c.printRecord(rec)
		}),
	}

	update := &cobra.Command{
		Use:   "update ID [flags] [--disable|--enable] [--reason TEXT]",
		Short: "Change a key's settings, or disable / enable it",
		Long: `Changes a key's settings. --scope, --sender-domain and --allow-ip replace the
whole set; --add-… and --remove-… change one entry and keep the rest. A list
flag given only empty values (--allow-ip "$CIDR" with CIDR unset) is refused.
Every change is an audit event naming what changed (old → new) and --reason.`,
		Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, c *cli, args []string) error {
			for _, f := range []string{"env", "prefix"} {
				if c.flags.Changed(f) {
					return badRequest("--%s: a key's env and prefix are part of its text (kg_test_…), so update cannot change them; "+
						"issue a key with the %s you want (caddy keys issue --%s …) and revoke this one", f, f, f)
				}
			}
			spec, err := specFrom(c.flags)
			if err != nil {
				return err
			}
			dis, _ := c.flags.GetBool("disable")
			en, _ := c.flags.GetBool("enable")
			switch {
			case dis && en:
				return badRequest("--disable and --enable together")
			case dis || en:
				spec.Disabled = &dis
			}
			res, err := c.keys.Update(ctx, args[0], spec, c.actor)
			if err != nil {
				return err
			}
			c.printWarnings(res.Warnings)
			if c.json {
				return c.printJSON(res) // the record and its warnings, as the admin API answers
			}
			return c.printRecord(res.Record)
		}),
	}
	specFlags(update.Flags(), true)
	update.Flags().Bool("disable", false, "Disable the key (disabled_key) until --enable")
	update.Flags().Bool("enable", false, "Enable a disabled key")
	// Issue's flags that update cannot honour: said why, not "unknown flag".
	update.Flags().String("env", "", "")
	update.Flags().String("prefix", "", "")
	update.Flags().MarkHidden("env")
	update.Flags().MarkHidden("prefix")

	rotate := &cobra.Command{
		Use:   "rotate ID [--grace DURATION] [--reason TEXT]",
		Short: "Issue a new key with the same settings; the old one works until the grace period ends",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, c *cli, args []string) error {
			g, _ := c.flags.GetString("grace")
			reason, _ := c.flags.GetString("reason")
			grace, err := keys.ParseGrace(g)
			if err != nil {
				return err
			}
			asked := fmt.Appendf(nil, "%s\n%s\n%s", args[0], grace, reason)
			once, err := c.idempotency("rotate", asked)
			if err != nil {
				return err
			}
			res, err := c.keys.RotateOnce(ctx, args[0], grace, reason, c.actor, once)
			if err != nil {
				return issueErr(err)
			}
			return c.printIssued(res)
		}),
	}
	rotate.Flags().String("grace", "24h", "How long the old key keeps working (0 ends it now), never past its own expiry")
	rotate.Flags().String("reason", "", "Why (kept in the audit events)")
	idempotencyFlag(rotate.Flags())

	revoke := &cobra.Command{
		Use:   "revoke ID | --key -|KEY | --owner OWNER [--reason TEXT] [--yes]",
		Short: "Revoke a key by id, a leaked key by its value, or every key of an owner",
		Args:  cobra.MaximumNArgs(1),
		RunE:  run(runRevoke),
	}
	revoke.Flags().String("key", "", "Revoke a leaked key by its value; - reads it from stdin (keeps it out of shell history and ps)")
	revoke.Flags().String("owner", "", "Revoke every key of this owner")
	revoke.Flags().String("reason", "", "Why (kept in the audit events)")
	revoke.Flags().BoolP("yes", "y", false, "Do not ask for confirmation")

	audit := &cobra.Command{
		Use:   "audit [--unused DURATION] [--expiring DURATION]",
		Short: "Report unused, expiring, full-access and never-expiring keys",
		Args:  cobra.NoArgs,
		RunE: run(func(ctx context.Context, c *cli, _ []string) error {
			unused, err := windowFlag(c.flags, "unused")
			if err != nil {
				return err
			}
			expiring, err := windowFlag(c.flags, "expiring")
			if err != nil {
				return err
			}
			rep, err := c.keys.Audit(ctx, unused, expiring)
			if err != nil {
				return err
			}
			return c.output(rep, func() error { return c.printAudit(rep) })
		}),
	}
	audit.Flags().String("unused", "30d", "List keys not used for this long")
	audit.Flags().String("expiring", "14d", "List keys expiring within this long")

	usageCmd := &cobra.Command{
		Use:   "usage ID [--since DURATION]",
		Short: "Show a key's usage: totals, denials by code, top client IPs, hourly buckets",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, c *cli, args []string) error {
			since, err := windowFlag(c.flags, "since")
			if err != nil {
				return err
			}
			rep, err := c.keys.Usage(ctx, args[0], since)
			if err != nil {
				return err
			}
			return c.output(rep, func() error { return c.printUsage(rep) })
		}),
	}
	usageCmd.Flags().String("since", "7d", "How far back")

	events := &cobra.Command{
		Use:   "events [ID] [--limit N] [--after SEQ]",
		Short: "Show the audit events (every change to keys), optionally of one key",
		Args:  cobra.MaximumNArgs(1),
		RunE: run(func(ctx context.Context, c *cli, args []string) error {
			id := ""
			if len(args) == 1 {
				// `events "$ID"` with ID unset is not every key's events.
				if err := keys.CheckID(args[0]); err != nil {
					return err
				}
				id = args[0]
			}
			limit, _ := c.flags.GetInt("limit")
			if limit < 0 {
				return badRequest("--limit %d: want how many events, or 0 for all", limit)
			}
			var after *int64
			if c.flags.Changed("after") {
				n, _ := c.flags.GetInt64("after")
				if n < 0 {
					return badRequest("--after %d: want the seq of the last event read, or 0 for the first", n)
				}
				after = &n
			}
			evs, err := c.keys.Events(ctx, id, limit, after)
			if err != nil {
				return err
			}
			return c.output(evs, func() error { return c.printEvents(evs) })
		}),
	}
	events.Flags().Int("limit", 0, "Show only the newest N events, or with --after the first N after it (0: all)")
	events.Flags().Int64("after", 0, "Read forward: the events after this seq (the last one read), oldest first")
	backup := &cobra.Command{
		Use:   "backup FILE",
		Short: "Copy the whole SQLite store (keys, usage, audit events) into a new file, while gateways run",
		Args:  cobra.ExactArgs(1),
		RunE: runOnSQLite(store.ErrNoBackup, func(ctx context.Context, c *cli, args []string) error {
			b, ok := c.keys.Store().(store.Backuper)
			if !ok {
				return store.ErrNoBackup
			}
			// A large store takes longer to copy than the minute other
			// subcommands get.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Hour)
			defer cancel()
			info, err := b.Backup(ctx, args[0])
			if err != nil {
				return err
			}
			return c.output(info, func() error {
				_, err := fmt.Fprintf(c.out, "backed up %s, with usage counters and audit events, to %s (%d bytes)\n", countOf(info.Keys, "key"), info.Path, info.Bytes)
				return err
			})
		}),
	}
	restore := &cobra.Command{
		Use:   "restore FILE [--reason TEXT] [--yes]",
		Short: "Put a backup in place of the SQLite store, keeping the revocations made since; gateways stopped",
		Args:  cobra.ExactArgs(1),
		RunE:  runOwnStore(runRestore),
	}
	restore.Flags().String("reason", "", "Why (kept in the audit events of the keys it changes or leaves out)")
	restore.Flags().BoolP("yes", "y", false, "Do not ask for confirmation")
	copyStore := &cobra.Command{
		Use:   "copy-store --to URI",
		Short: "Copy the whole store (keys, audit events, usage) into another that holds no keys, e.g. SQLite into PostgreSQL",
		Args:  cobra.NoArgs,
		RunE:  runOwnStore(runCopyStore),
	}
	copyStore.Flags().String("to", "", "The store to copy into: "+store.URIForms+"; it must hold no keys; - reads it from stdin (keeps a password out of shell history and ps)")
	return []*cobra.Command{issue, list, show, update, rotate, revoke, audit, usageCmd, events, backup, restore, copyStore}
}

// confirmed asks question on a terminal and reports a yes; it asks nothing
// (and answers yes) with --yes or when stdin is not a terminal, so scripts
// never hang on it.
func confirmed(yes bool, question string) bool {
	if yes || !term.IsTerminal(int(os.Stdin.Fd())) {
		return true
	}
	fmt.Fprintf(os.Stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes"
}

// restored is what restore reports.
type restored struct {
	store.BackupInfo
	From    string        `json:"from"`
	Carried *keys.Carried `json:"carried"`
}

// runRestore puts a backup in place of the SQLite store. Whatever stopped a
// key since the backup (revocations above all) is read from the store first
// and applied again to the restored one (keys.Service.CarryOver), so that
// putting a backup back never makes a revoked key work again.
func runRestore(ctx context.Context, c *cli, args []string) error {
	path, ok := store.SQLitePath(c.uri)
	if !ok {
		return store.ErrNoRestore
	}
	from := args[0]
	reason, _ := c.flags.GetString("reason")
	if err := keys.CheckReason(reason); err != nil {
		return err // before anything is touched
	}
	// A mistyped FILE is said first: before the gateways are stopped for
	// a restore that could not have run.
	if err := store.CheckRestoreFile(ctx, path, from); err != nil {
		return err
	}
	if err := store.CheckSQLiteClosed(path); err != nil {
		return fmt.Errorf("%s: %w", path, err) // before asking
	}
	yes, _ := c.flags.GetBool("yes")
	if !confirmed(yes, fmt.Sprintf("Put %s in place of the store %s? Stop every gateway and `caddy keys` using it first.", from, path)) {
		return errors.New("not restored")
	}
	// A large backup takes longer to copy than the minute other
	// subcommands get.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Hour)
	defer cancel()
	var replaced *keys.Stops
	if _, missing := missingSQLite(c.uri); missing {
		// Said, so a mistyped --store is noticed.
		fmt.Fprintf(c.warn, "note: no keygate store at %s; the backup becomes the store there, with nothing kept from one\n", path)
	} else {
		st, err := store.Open(ctx, c.uri)
		if err != nil {
			return fmt.Errorf("the store to replace, %s: %w (move it away to restore without keeping its revocations)", path, err)
		}
		replaced, err = keys.StateOf(ctx, st)
		st.Close()
		if err != nil {
			return fmt.Errorf("reading the keys of the store to replace, %s: %w", path, err)
		}
	}
	// Named in the events of the keys the restore leaves out or brings
	// back.
	backup := keys.Backup{File: from}
	if abs, err := filepath.Abs(from); err == nil {
		backup.File = abs
	}
	if fi, err := os.Stat(from); err == nil {
		backup.Written = fi.ModTime()
	}
	// Applied to the copy before it replaces the store: a restore that
	// fails leaves the store as it was, revocations and all.
	var carried *keys.Carried
	info, err := store.RestoreSQLite(ctx, path, from, func(ctx context.Context, st store.Store) error {
		var old store.Store
		if replaced != nil {
			// The audit events of changes made since the backup stay in
			// the log, before the events of what is carried over.
			var err error
			if old, err = store.Open(ctx, c.uri); err == nil {
				defer old.Close()
				_, err = store.KeepEvents(ctx, old, st)
			}
			if err != nil {
				return fmt.Errorf("the store to replace, %s: %w (move it away to restore without keeping its revocations and audit events)", path, err)
			}
		}
		var err error
		carried, err = keys.New(st, keys.Options{}).CarryOver(ctx, replaced, old, backup, reason, c.actor)
		return err
	})
	if err != nil {
		return err
	}
	r := restored{BackupInfo: info, From: from, Carried: carried}
	return c.output(r, func() error { return c.printRestored(r) })
}

func (c *cli) printRestored(r restored) error {
	fmt.Fprintf(c.out, "restored %s, with usage counters and audit events, from %s to %s\n", countOf(r.Keys, "key"), r.From, r.Path)
	for _, l := range []struct {
		what string
		ids  []string
	}{
		{"revoked again (revoked after the backup)", r.Carried.Revoked},
		{"disabled again (disabled after the backup)", r.Carried.Disabled},
		{"given the earlier end they had (a rotation's grace, an expiry set after the backup)", r.Carried.Expiring},
		{"gone (issued after the backup: issue them again)", r.Carried.Gone},
		{"put back as the backup had them (changed after the backup)", r.Carried.Reverted},
		{"back (left out by an earlier restore; this backup holds them)", r.Carried.Back},
	} {
		if len(l.ids) > 0 {
			fmt.Fprintf(c.out, "%s: %s\n", l.what, strings.Join(l.ids, ", "))
		}
	}
	return nil
}

// copiedStore is what copy-store reports.
type copiedStore struct {
	store.CopyReport
	From string `json:"from"` // passwords redacted
	To   string `json:"to"`
}

// runCopyStore copies the store into the one --to names, which must hold no
// keys (store.Copy). An SQLite store is copied only while no gateway has it
// open: what a gateway counted after the copy would be lost with the file.
func runCopyStore(ctx context.Context, c *cli, args []string) error {
	given, _ := c.flags.GetString("to")
	if given == "" {
		return badRequest("--to is missing: name the store to copy into, %s", store.URIForms)
	}
	if given == "-" {
		// A PostgreSQL URI holds its password: on the command line, ps
		// shows it to every local user for as long as the copy runs.
		var err error
		if given, err = toValue.read(os.Stdin); err != nil {
			return err
		}
	}
	to, err := store.ParseURI(given)
	if err != nil {
		return badRequest("--to: %v", err)
	}
	if to == c.uri {
		return badRequest("--to names the store copied from, %s", store.RedactURI(to))
	}
	conflict := func(err error) error { return adminError{http.StatusConflict, "conflict", err.Error()} }
	fromPath, fromSQLite := store.SQLitePath(c.uri)
	if fromSQLite {
		if _, missing := missingSQLite(c.uri); missing {
			return badRequest("no keygate store at %s to copy (check --store and $KEYGATE_STORE)", fromPath)
		}
	}
	// A large store takes longer to copy than the minute other
	// subcommands get.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Hour)
	defer cancel()
	if toPath, ok := store.SQLitePath(to); ok && fromSQLite {
		a, aerr := os.Stat(fromPath)
		b, berr := os.Stat(toPath)
		if aerr == nil && berr == nil && os.SameFile(a, b) { // a link to it
			return badRequest("--to names the store copied from, %s", store.RedactURI(to))
		}
	}
	// The target first: one that does not answer or holds keys is said
	// while the gateways on the source still run, before anyone stops
	// them for a copy that could not have run.
	if path, missing := missingSQLite(to); missing {
		fmt.Fprintf(c.warn, "note: no keygate store at %s yet; creating it\n", path)
	}
	dst, err := openStore(ctx, to)
	if err != nil {
		return fmt.Errorf("the store to copy into: %w", err)
	}
	defer dst.Close()
	if err := store.CheckCopyTarget(ctx, dst); errors.Is(err, store.ErrNotEmpty) {
		return conflict(fmt.Errorf("%s: %w", store.RedactURI(to), err))
	} else if err != nil {
		return fmt.Errorf("the store to copy into: %w", err)
	}
	if fromSQLite {
		if err := store.CheckSQLiteClosed(fromPath); err != nil {
			return conflict(fmt.Errorf("%s: %w (the gateways must be stopped: what they count after the copy would not be in it)", fromPath, err))
		}
	}
	from, err := openStore(ctx, c.uri)
	if err != nil {
		return err
	}
	defer from.Close()
	rep, err := store.Copy(ctx, from, dst)
	if errors.Is(err, store.ErrNotEmpty) {
		return conflict(fmt.Errorf("%s: %w", store.RedactURI(to), err))
	}
	if errors.Is(err, store.ErrSameStore) { // one file under two names
		return badRequest("--to names the store copied from, %s: %v", store.RedactURI(to), err)
	}
	if err != nil {
		return err
	}
	if err := from.Close(); err != nil {
		return err
	}
	if fromSQLite {
		// It held the write lock while it copied, so nothing was lost; a
		// gateway that started meanwhile counts into the old file now.
		if err := store.CheckSQLiteClosed(fromPath); err != nil {
			fmt.Fprintf(c.warn, "warning: %s: %v: a gateway started during the copy; what it writes there is not in the copy\n", fromPath, err)
		}
	}
	r := copiedStore{CopyReport: rep, From: store.RedactURI(c.uri), To: store.RedactURI(to)}
	return c.output(r, func() error {
		_, err := fmt.Fprintf(c.out, "copied %s, %s, %s (%s by client address) to %s\n",
			countOf(r.Keys, "key"), countOf(r.Events, "event"), countOf(r.Usage, "usage row"), countOf(r.UsageIPs, "row"), r.To)
		return err
	})
}

// countOf writes a count of a thing, the count with a comma between each
// three digits: "1 key", "4,180 events", "9 addresses".
func countOf(n int, thing string) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	switch {
	case n == 1:
	case strings.HasSuffix(thing, "s"):
		thing += "es" // addresses
	default:
		thing += "s"
	}
	return s + " " + thing
}

func windowFlag(fs *pflag.FlagSet, name string) (time.Duration, error) {
	v, _ := fs.GetString(name)
	return keys.ParseWindow(name, v)
}

func runRevoke(ctx context.Context, c *cli, args []string) error {
	var rv keys.Revocation
	rv.Key, _ = c.flags.GetString("key")
	rv.Owner, _ = c.flags.GetString("owner")
	rv.Reason, _ = c.flags.GetString("reason")
	yes, _ := c.flags.GetBool("yes")
	if len(args) == 1 {
		rv.ID = args[0]
	}
	if rv.Key == "-" {
		if err := rv.Check(); err != nil {
			return err
		}
		key, err := readKey(os.Stdin)
		if err != nil {
			return err
		}
		rv.Key = key
	}
	targets, err := c.keys.RevokeTargets(ctx, rv)
	if err != nil {
		return err
	}
	already := rv.Owner == "" && targets[0].Revoked()
	if already {
		// Revoking is idempotent (exit 0), but say that this changed nothing.
		fmt.Fprintf(os.Stderr, "warning: key %s was already revoked on %s; nothing changed\n",
			targets[0].ID, localTime(*targets[0].RevokedAt, false))
	}
	// A key typed for --key - was read from this terminal up to its newline
	// and no further, so the answer is the next line; a piped key never asks.
	if !already {
		what, them := fmt.Sprintf("%s of owner %q", countOf(len(targets), "active key"), rv.Owner), "them"
		if rv.Owner == "" || len(targets) == 1 {
			them = "it"
		}
		if rv.Owner == "" {
			what = fmt.Sprintf("key %s (%s)", targets[0].ID, targets[0].Name)
		}
		if !confirmed(yes, fmt.Sprintf("Revoke %s? Clients using %s get revoked_key within a second.", what, them)) {
			return errors.New("not revoked")
		}
	}
	recs, err := c.keys.Revoke(ctx, rv, c.actor)
	if err != nil {
		return err
	}
	if rv.Owner == "" && already && c.json {
		return c.printJSON(revokedBefore(recs[0])) // as the admin API answers it
	}
	if rv.Owner == "" {
		return c.printRecord(recs[0])
	}
	return c.output(recs, func() error { return c.printTable(recs) })
}

// maxKeyLine bounds what --key - (or --to -) reads from a pipe: far more
// than a key, or a store's URI.
const maxKeyLine = 1024

// stdinValue is a flag whose value "-" is read from standard input, so the
// value stays out of shell history and ps: --key - (a leaked key), --to -
// (a store URI with its password), --idempotency-key - (what unlocks an
// issued key's answer for a day).
type stdinValue struct {
	flag   string // as the user gave it, for messages: "--key -"
	what   string // what it holds, for messages: "key"
	prompt string // asked on a terminal
}

var (
	keyValue         = stdinValue{"--key -", "key", "Key to revoke (input hidden): "}
	toValue          = stdinValue{"--to -", "store URI", "URI of the store to copy into (input hidden): "}
	idempotencyValue = stdinValue{"--idempotency-key -", "idempotency key", "Idempotency key (input hidden): "}
)

// readKey reads the value of --key - from in (stdinValue.read).
func readKey(in *os.File) (string, error) { return keyValue.read(in) }

// readKeyLine reads the value of --key - from a pipe (stdinValue.readLine).
func readKeyLine(r io.Reader) (string, error) { return keyValue.readLine(r) }

// read reads the value from in: typed without echo when in is a terminal,
// else the first line of what is piped in, trimmed. Errors never quote what
// was read.
func (v stdinValue) read(in *os.File) (string, error) {
	fd := int(in.Fd())
	if !term.IsTerminal(fd) {
		return v.readLine(in)
	}
	// ReadPassword turns echo off; restore it if Ctrl-C ends the process
	// mid-prompt, or the shell is left without echo.
	if state, err := term.GetState(fd); err == nil {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		done := make(chan struct{})
		defer func() { signal.Stop(sig); close(done) }()
		go func() {
			select {
			case <-sig:
				term.Restore(fd, state)
				fmt.Fprintln(os.Stderr)
				os.Exit(130)
			case <-done:
			}
		}()
	}
	fmt.Fprint(os.Stderr, v.prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil && err != io.EOF { // EOF: Ctrl-D, nothing typed
		return "", fmt.Errorf("%s: reading the %s from the terminal: %v", v.flag, v.what, err)
	}
	return v.readLine(bytes.NewReader(b))
}

// readLine returns the first line of r, trimmed; a pipe that holds more
// (e.g. a file's trailing newline or notes) is not read further.
func (v stdinValue) readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxKeyLine+1)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("%s: reading standard input: %v", v.flag, err)
	}
	if len(line) > maxKeyLine && !strings.HasSuffix(line, "\n") {
		return "", badRequest("%s: the first line of standard input is too long to be a %s", v.flag, v.what)
	}
	value := strings.TrimSpace(line)
	if value == "" {
		return "", badRequest("%s: no %s on standard input", v.flag, v.what)
	}
	return value, nil
}

// output prints v as JSON with --json, else the human form.
func (c *cli) output(v any, human func() error) error {
	if c.json {
		return c.printJSON(v)
	}
	return human()
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // as the admin API writes it: "Tom & Jerry", not "Tom \u0026 Jerry"
	return enc.Encode(v)
}

// idempotencyFlag is issue's and rotate's --idempotency-key.
func idempotencyFlag(fs *pflag.FlagSet) {
	fs.String("idempotency-key", "", "Run again with the same key and flags within 24h, print the first run's answer (its key) instead of making another (a random value, kept secret like a key; - reads it from stdin, out of shell history and ps)")
}

// idempotency returns the run's --idempotency-key, if given, for the
// command and what it asked: a run of another command or with other flags
// under the same key is refused. With the store it unlocks the answer, the
// key in it, for a day, so "-" reads it from stdin as --key - does.
func (c *cli) idempotency(command string, asked []byte) (*keys.Idempotency, error) {
	k, _ := c.flags.GetString("idempotency-key")
	if !c.flags.Changed("idempotency-key") {
		return nil, nil
	}
	if k == "-" {
		var err error
		if k, err = idempotencyValue.read(os.Stdin); err != nil {
			return nil, err
		}
	}
	return &keys.Idempotency{Key: k, Request: append([]byte("caddy keys "+command+"\n"), asked...)}, nil
}

// issueErr says a refusal of issue or rotate in the CLI's words: the
// service's names the admin API's Idempotency-Key header and speaks of
// requests, and names no flag for what a new key lacks.
func issueErr(err error) error {
	var inv *keys.InvalidError
	switch {
	case errors.Is(err, keys.ErrNameRequired):
		return badRequest("name is required (e.g. --name crm-sync)")
	case errors.Is(err, keys.ErrScopeRequired):
		return badRequest("at least one scope is required (e.g. --scope mail.send; * is full access)")
	case errors.Is(err, keys.ErrIdempotencyKeyReused):
		return badRequest("--idempotency-key: this value was used within 24h for another command or other flags; " +
			"give a new value for a new change, and the same command and flags to repeat one")
	case errors.As(err, &inv) && inv.Field == "Idempotency-Key":
		return badRequest("--idempotency-key%s", strings.TrimPrefix(inv.Error(), "Idempotency-Key"))
	}
	return err
}

func (c *cli) printIssued(res *keys.Result) error {
	if res.Replayed {
		fmt.Fprintln(c.warn, "note: an earlier run with this --idempotency-key made this key; nothing new was made")
	}
	c.printWarnings(res.Warnings)
	if c.json {
		return c.printJSON(res)
	}
	fmt.Fprintf(c.out, "Issued %s (%s). The key is shown only this once; store it in the integration's secret store:\n\n  %s\n\n", res.ID, res.Name, res.Key)
	if res.RotatedFrom != "" {
		now := time.Now()
		switch {
		case res.Replaced != nil && res.Replaced.Disabled:
			fmt.Fprintf(c.out, "It replaces %s, which is disabled.\n", res.RotatedFrom)
		case res.OldKeyEnds == nil:
			fmt.Fprintf(c.out, "It replaces %s.\n", res.RotatedFrom)
		case !res.OldKeyEnds.After(now):
			fmt.Fprintf(c.out, "It replaces %s, which has stopped.\n", res.RotatedFrom)
		default:
			fmt.Fprintf(c.out, "It replaces %s, which keeps working until %s (%s).\n", res.RotatedFrom,
				localTime(*res.OldKeyEnds, false), keys.Relative(now, *res.OldKeyEnds))
		}
	}
	return nil
}

// printWarnings writes what the person should know about a change to
// stderr, so JSON on stdout stays clean for scripts.
func (c *cli) printWarnings(warnings []string) {
	for _, w := range warnings {
		fmt.Fprintln(c.warn, "warning: "+w)
	}
}

func (c *cli) printRecord(rec *store.Record) error {
	if c.json {
		return c.printJSON(rec)
	}
	t := time.Now()
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("id", rec.ID)
	row("name", rec.Name)
	row("owner", rec.Owner)
	row("key", rec.Hint)
	row("env", rec.Env)
	row("status", keys.Status(rec, t))
	row("scopes", strings.Join(rec.Scopes, " "))
	if rec.Rate != nil {
		row("rate", rec.Rate.String())
	}
	if rec.Burst > 0 {
		row("burst", fmt.Sprint(rec.Burst))
	}
	for _, p := range rec.AllowedIPs {
		row("allowed ip", p.String())
	}
	row("sender domains", strings.Join(rec.SenderDomains, " "))
	if rec.Quota != nil {
		row("quota", rec.Quota.String())
	}
	if rec.MaxRecipients > 0 {
		row("max recipients", fmt.Sprint(rec.MaxRecipients))
	}
	if rec.AllowOnBehalfOf {
		row("on-behalf-of", "allowed") // as the audit events write it
	}
	row("created", when(&rec.CreatedAt, t))
	row("expires", when(rec.ExpiresAt, t))
	row("last used", when(rec.LastUsedAt, t))
	row("last ip", rec.LastIP)
	row("revoked", when(rec.RevokedAt, t))
	row("revoke reason", rec.RevokeReason)
	row("rotated from", rec.RotatedFrom)
	row("rotated to", rec.RotatedTo)
	return tw.Flush()
}

func (c *cli) printTable(recs []*store.Record) error {
	t := time.Now()
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tOWNER\tENV\tSCOPES\tSTATUS\tEXPIRES\tLAST USED")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, dash(r.Owner), r.Env,
			strings.Join(r.Scopes, ","), keys.Status(r, t), dash(when(r.ExpiresAt, t)), dash(when(r.LastUsedAt, t)))
	}
	return tw.Flush()
}

func (c *cli) printEvents(evs []store.Event) error {
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tACTION\tKEY\tACTOR\tREASON\tDETAIL")
	for _, e := range evs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, localTime(e.At, true), e.Action, e.KeyID, e.Actor, e.Reason, e.Detail)
	}
	return tw.Flush()
}

func (c *cli) printAudit(rep *keys.AuditReport) error {
	t := time.Now()
	sections := []struct {
		title   string
		entries []keys.AuditEntry
	}{
		{"Revoked or expired keys still presented (last 7 days)", rep.StillPresented},
		{"Unused keys", rep.Unused},
		{"Expiring soon", rep.Expiring},
		{"Full-access keys (*)", rep.FullAccess},
		{"Keys without expiry", rep.NoExpiry},
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	for _, s := range sections {
		fmt.Fprintf(tw, "%s: %d\n", s.title, len(s.entries))
		for _, e := range s.entries {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\tlast used %s\n", e.ID, e.Name, dash(e.Owner), e.Why, dash(when(e.LastUsedAt, t)))
		}
	}
	return tw.Flush()
}

func (c *cli) printUsage(rep *keys.UsageReport) error {
	t := time.Now()
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "key:\t%s\nsince:\t%s\nallowed:\t%d\nrecipients:\t%d\nlast used:\t%s\n", rep.KeyID,
		when(&rep.Since, t), rep.Allowed, rep.Recipients, dash(when(rep.LastUsedAt, t)))
	for code, n := range rep.Denied {
		fmt.Fprintf(tw, "denied %s:\t%d\n", code, n)
	}
	for class, n := range rep.Statuses {
		fmt.Fprintf(tw, "status %s:\t%d\n", class, n)
	}
	fmt.Fprintln(tw, "\nTOP CLIENT IPS\tREQUESTS\tFIRST SEEN")
	for _, ip := range rep.TopIPs {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", ip.IP, ip.Requests, localTime(ip.First, false))
	}
	fmt.Fprintln(tw, "\nHOUR\tALLOWED\tDENIED\tRECIPIENTS")
	for _, h := range rep.Hours {
		var denied int64
		for _, n := range h.Denied {
			denied += n
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", localTime(h.Hour, false), h.Allowed, denied, h.Recipients)
	}
	if len(rep.Signals) > 0 {
		fmt.Fprintln(tw, "\nLOOK AT")
		for _, s := range rep.Signals {
			fmt.Fprintln(tw, "  "+s)
		}
	}
	return tw.Flush()
}

// when prints a time in local time with a relative hint: "2026-12-01 10:00
// (in 3 days)".
func when(at *time.Time, t time.Time) string {
	if at == nil || at.IsZero() {
		return ""
	}
	return localTime(*at, false) + " (" + keys.Relative(t, *at) + ")"
}

// localTime is at in this machine's zone (TZ), named: the store keeps UTC,
// and a zone half an hour off UTC (India's) starts a UTC hour of usage at
// :30, which a layout ending in a literal ":00" hid.
func localTime(at time.Time, seconds bool) string {
	if seconds {
		return at.Local().Format("2006-01-02 15:04:05 MST")
	}
	return at.Local().Format("2006-01-02 15:04 MST")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
