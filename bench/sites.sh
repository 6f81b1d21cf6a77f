# Sourced by bench/run.sh, bench/instr-e2e.sh and bench/pair.sh: the Caddyfile sites
# and the build they share.

# keygate_site PORT UPSTREAM_PORT OPTION...: a loopback site with keygate
# (one Caddyfile line per OPTION; empty ones are left out) in front of
# reverse_proxy.
keygate_site() {
	local port=$1 up=$2 opt
	shift 2
	printf 'http://127.0.0.1:%s {\n\tkeygate {\n' "$port"
	for opt in "$@"; do
		[ -n "$opt" ] && printf '\t\t%s\n' "$opt"
	done
	printf '\t}\n\treverse_proxy 127.0.0.1:%s\n}\n' "$up"
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
