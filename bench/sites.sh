# Sourced by bench/run.sh, bench/instr-e2e.sh and bench/pair.sh: the Caddyfile sites
# and the build they share.

# keygate_site PORT UPSTREAM OPTION...: a loopback site with keygate (one
# Caddyfile line per OPTION; empty ones are left out) in front of
# reverse_proxy to UPSTREAM (proxy_to).
keygate_site() {
	local port=$1 up=$2 opt
	shift 2
	printf 'http://127.0.0.1:%s {\n\tkeygate {\n' "$port"
	for opt in "$@"; do
		[ -n "$opt" ] && printf '\t\t%s\n' "$opt"
	done
	printf '\t}\n\t%s\n}\n' "$(proxy_to "$up")"
}

# proxy_to UPSTREAM: the reverse_proxy line to UPSTREAM, a loopback port or,
# when it is not a number, an upstream and its block as written.
proxy_to() {
	case $1 in
	*[!0-9]*) printf 'reverse_proxy %s' "$1" ;;
	*) printf 'reverse_proxy 127.0.0.1:%s' "$1" ;;
	esac
}

# start_upstream PORT [ARGS...]: bench/upstream on 127.0.0.1:PORT, in
# PIDS; with UPSTREAM_TLS=1 (or h1) also HTTPS on PORT+50 (HTTP/2 offered, a
# certificate of its own in $OUT/upstream.pem). Sets UP, the upstream the
# sites proxy to (keygate_site, proxy_to): PORT, or with UPSTREAM_TLS that
# HTTPS address with a block trusting the certificate; UPSTREAM_TLS=h1 has
# Caddy keep to HTTP/1.1 there (versions 1.1), as with a provider that
# offers no HTTP/2.
start_upstream() {
	local port=$1 versions=""
	shift
	UP=$port
	case ${UPSTREAM_TLS:-0} in
	0) ;;
	1 | h1)
		[ "$UPSTREAM_TLS" = 1 ] || versions='\n\t\t\tversions 1.1'
		set -- "$@" -tls-addr "127.0.0.1:$((port + 50))" -tls-cert "$OUT/upstream.pem"
		UP=$(printf "https://127.0.0.1:%s {\\n\\t\\ttransport http {\\n\\t\\t\\ttls_trust_pool file %s$versions\\n\\t\\t}\\n\\t}" $((port + 50)) "$OUT/upstream.pem")
		;;
	*) echo "bench: UPSTREAM_TLS is 1 (HTTPS, HTTP/2 offered) or h1 (HTTPS, HTTP/1.1), not $UPSTREAM_TLS" >&2; exit 1 ;;
	esac
	rm -f "$OUT/upstream.pem"
	"$OUT/upstream" -addr "127.0.0.1:$port" "$@" >"$OUT/upstream.log" 2>&1 &
	PIDS+=($!)
	local i
	for ((i = 0; i < 50; i++)); do
		[ "${UPSTREAM_TLS:-0}" = 0 ] || [ -s "$OUT/upstream.pem" ] || { sleep 0.1; continue; }
		curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
		sleep 0.1
	done
	echo "bench: the upstream did not start on 127.0.0.1:$port" >&2
	cat "$OUT/upstream.log" >&2
	exit 1
}

# wait_admin ADDRESS LOG TRIES INTERVAL: waits until Caddy's admin endpoint
# answers; after TRIES failed tries INTERVAL seconds apart, prints LOG and
# exits.
wait_admin() {
	local i
	for ((i = 1; i <= $3; i++)); do
		curl -fs "http://$1/config/" >/dev/null 2>&1 && return 0
		sleep "$4"
	done
	cat "$2" >&2
	exit 1
}

# build_bench: builds Caddy with keygate, bench/upstream and bench/bodies into
# $OUT, and writes the send bodies (internal/benchbody) there, one line each
# in $OUT/bodies.txt: "name file path content-type recipients bytes".
build_bench() {
	go build -o "$OUT/caddy" ./cmd/caddy
	go build -o "$OUT/upstream" ./bench/upstream
	go build -o "$OUT/bodies" ./bench/bodies
	"$OUT/bodies" -dir "$OUT/body-files" >"$OUT/bodies.txt"
}

# body_field NAME FIELD: that field of body NAME's line in $OUT/bodies.txt.
body_field() { awk -v n="$1" -v f="$2" '$1 == n {print $f}' "$OUT/bodies.txt"; }

# PostgreSQL's server binaries: PGBIN (Debian's newest, else initdb's
# directory on PATH); PGDIR is the running throwaway server's directory.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || PGBIN=$(dirname "$(command -v initdb 2>/dev/null || echo /none/initdb)")
PGDIR=""
AS_PG=()

# start_postgres PORT DB...: a throwaway PostgreSQL on 127.0.0.1:PORT (fsync
# off) in a fresh directory under /tmp, with each DB created; as root it runs
# as the postgres user, which PostgreSQL requires. stop_postgres removes it.
start_postgres() {
	local port=$1 db
	shift
	PGDIR=$(mktemp -d /tmp/keygate-bench-pg-XXXXXX)
	if [ "$(id -u)" = 0 ]; then
		chown postgres: "$PGDIR" && chmod 755 "$PGDIR"
		AS_PG=(runuser -u postgres --)
	fi
	"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 --no-sync >"$OUT/postgres-init.log" 2>&1
	"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w -t 30 \
		-o "-p $port -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
		start >/dev/null
	for db in "$@"; do
		"${AS_PG[@]}" "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
	done
}

stop_postgres() {
	[ -n "$PGDIR" ] || return 0
	"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
	rm -rf "$PGDIR"
	PGDIR=""
}

# PIDS holds what a script started in the background; stop_started stops
# them, waits for them, and stops the throwaway PostgreSQL if one runs.
PIDS=()
stop_started() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	stop_postgres
}
