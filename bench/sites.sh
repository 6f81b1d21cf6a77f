# Sourced by bench/run.sh and bench/instr-e2e.sh: Caddyfile sites they share.

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
