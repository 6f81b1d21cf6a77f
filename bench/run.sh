#!/usr/bin/env bash
# Load benchmark: keygate against plain reverse_proxy, on loopback (issues 7, 14).
#
#   bench/run.sh                  # about 10 minutes after the build (2 CPUs)
#   ROUNDS=1 DURATION=2 CONC_ROUNDS=1 PG_KEYS=100000 bench/run.sh   # smoke run, ~3 minutes
#   KEYGATE_LOG=off bench/run.sh  # drop keygate's per-request INFO log line
#   PROFILE=1 bench/run.sh        # also CPU and allocation profiles of Caddy during round 1's
#                                 # keygate and keygate-sendgrid-2k runs and their baselines: bench/out/<scenario>-cpu.pprof,
#                                 # <scenario>-allocs{,-before}.pprof (allocations: pprof -diff_base before)
#   BODIES=0 CLUSTER=0 PG_SCALE=0 bench/run.sh   # leave out the send bodies, the two-node cluster,
#                                                # the 1M keys on PostgreSQL (~5 minutes)
#   UPSTREAM_PLAIN=1 bench/run.sh # the upstream answers 202 {} to every path (before session 9) instead of
#                                 # each provider's own answer (bench/upstream)
#   PIN=1 bench/run.sh            # the gateway on a core of its own: Caddy on CPU 0 (so GOMAXPROCS 1),
#                                 # wrk (one thread, 16 connections) and the upstream on the others, for the
#                                 # single-node scenarios (the cluster section runs as without PIN)
#
# Scenarios, each in every round, ratios to the baseline of the same round.
# The baseline is sent what a provider's SDK sends through a plain proxy (the
# provider's key in Authorization); keygate sites are sent a keygate key:
#   - plain route: valid key, paced, basic_auth, floods (as since issue 7);
#     baseline-nokey: the baseline without the provider key (that header's
#     own cost to Caddy); inject: reverse_proxy's header_up setting the
#     provider's key, which a deployment adds (Caddy's cost, not keygate's);
#     header: Caddy's header directive setting the two RateLimit headers
#     keygate adds, what a response with them costs without keygate's work;
#   - send inspection (BODIES): SendGrid JSON and Mailgun multipart forms of
#     2 KB, 20 KB (HTML newsletter) and 200 KB (an attachment), a Postmark
#     batch of 50 (internal/benchbody), each against plain reverse_proxy
#     with the same body;
#   - cluster (CLUSTER): two caddy nodes on one PostgreSQL and one Redis,
#     each with a plain reverse_proxy site and keygate sites (ratelimit redis
#     with leases, and with exact), two wrk (one per node) at once; also the
#     2 KB SendGrid send on a key without a quota and on one with a recipient
#     quota (leased blocks, and exact) against plain reverse_proxy with that
#     body; reports Redis
#     commands per request from INFO commandstats;
#   - 1M keys on PostgreSQL (PG_SCALE): bench/scale -store postgres://…
#     loads PG_KEYS keys with COPY and times cold-miss lookups.
# PostgreSQL and Redis are throwaway servers on loopback ports in /tmp (as
# internal/testservers starts them; as root, PostgreSQL runs as the postgres
# user), with fsync off, stopped at the end.
#
# Builds ./cmd/caddy, starts bench/upstream (answers as the provider of the path does), writes
# bench/out/Caddyfile with one site per scenario, issues keys with
# `caddy keys issue`, then runs every scenario in interleaved rounds with wrk
# and prints a table (medians over rounds; ratios to the baseline of the same
# round; Caddy's own CPU time per request from /proc/<pid>/stat, and its
# ratio to the baseline's). Floods also report keygate_store_queries_total from the admin
# endpoint's /metrics, before and after. Everything listens on 127.0.0.1 and
# every wrk run is bounded by -d. Needs: go, wrk (apt-get install -y wrk), curl;
# for CLUSTER and PG_SCALE: redis-server, redis-cli, PostgreSQL's initdb/pg_ctl.
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/sites.sh
ROOT=$PWD
OUT=$ROOT/bench/out
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}        # seconds per wrk run
CONC_ROUNDS=${CONC_ROUNDS:-2}  # rounds of the concurrent (flood + valid) runs
THREADS=2
CONNS=32
FLOOD_KEYS=${FLOOD_KEYS:-120000} # fresh unknown keys per flood run
THROTTLE_MS=${THROTTLE_MS:-10}   # delay per request per connection in throttled floods
VALID_DELAY_MS=${VALID_DELAY_MS:-10} # delay per request per connection of the fixed-rate valid load
KEYGATE_LOG=${KEYGATE_LOG:-on}
BODIES=${BODIES:-1}
CLUSTER=${CLUSTER:-1}
PG_SCALE=${PG_SCALE:-1}
PG_KEYS=${PG_KEYS:-1000000}
PIN=${PIN:-0}

# A provider key's shape (SendGrid's SG.<22>.<43>), never valid anywhere:
# what the baseline's clients send, and what the inject site injects.
PROVIDER_KEY=SG.benchBenchBenchBench00.benchBenchBenchBenchBenchBenchBenchBench000
PROVIDER_AUTH="Authorization: Bearer $PROVIDER_KEY"
export BENCH_PROVIDER_KEY=$PROVIDER_KEY

P_UP=18000 P_BASE=18001 P_KG=18002 P_SEND=18003 P_BASIC=18004 P_SHORT=18005 P_MG=18006 P_PM=18007 P_RESPOND=18009 P_HDR=18010 P_INJECT=18011
ADMIN=127.0.0.1:18019
# Cluster: node A and B each serve plain, keygate (leases) and keygate exact.
# Sends: keygate on SendGrid's send route with a key that has a recipient
# quota (leased blocks, and exact).
P_A_PLAIN=18021 P_A_KG=18022 P_A_EXACT=18023 P_A_SEND=18024 P_A_SEXACT=18025 ADMIN_A=127.0.0.1:18029
P_B_PLAIN=18031 P_B_KG=18032 P_B_EXACT=18033 P_B_SEND=18034 P_B_SEXACT=18035 ADMIN_B=127.0.0.1:18039
P_REDIS=18040 P_PG=18041

for tool in go wrk curl; do
	command -v $tool >/dev/null || { echo "bench: $tool not found (wrk: apt-get install -y wrk)" >&2; exit 1; }
done
if [ "$CLUSTER" = 1 ]; then
	for tool in redis-server redis-cli; do
		command -v $tool >/dev/null || { echo "bench: $tool not found (apt-get install -y redis-server), or CLUSTER=0" >&2; exit 1; }
	done
fi
if [ "$CLUSTER" = 1 ] || [ "$PG_SCALE" = 1 ]; then
	[ -x "$PGBIN/initdb" ] || { echo "bench: PostgreSQL's initdb not found (apt-get install -y postgresql), or CLUSTER=0 PG_SCALE=0" >&2; exit 1; }
fi
SECONDS=0

mkdir -p "$OUT"
rm -rf "$OUT"/data "$OUT"/data-* "$OUT"/*.db* "$OUT"/*.keys "$OUT"/results.txt "$OUT"/caddy.log* "$OUT"/caddy-*.log* "$OUT"/*.pprof

cleanup() {
	stop_started
	rm -f "$OUT"/*.keys
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build"
for i in 1 2 3 4 5 6; do
	if go build -o "$OUT/caddy" ./cmd/caddy 2>"$OUT/build.err"; then break; fi
	if [ "$i" = 6 ]; then cat "$OUT/build.err" >&2; exit 1; fi
	echo "bench: build failed ($(head -1 "$OUT/build.err")); retrying in 60s" >&2
	sleep 60
done
go build -o "$OUT/upstream" ./bench/upstream
go build -o "$OUT/keys" ./bench/keys
go build -o "$OUT/bodies" ./bench/bodies
go build -o "$OUT/scale" ./bench/scale

echo "== machine: $(nproc) CPUs, $(go env GOVERSION), $(uname -r), load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# PIN=1: what a gateway on a machine of its own pays. Unpinned, Caddy, wrk
# and the upstream share both CPUs and each run measures how the three got
# along as much as what a request costs Caddy. This script and what it
# starts (wrk, the upstream, curl) keep off CPU 0; Caddy runs on CPU 0 alone.
GW=()
ALL_CPUS=0-$(($(nproc) - 1))
if [ "$PIN" = 1 ]; then
	command -v taskset >/dev/null || { echo "bench: PIN=1 needs taskset (util-linux)" >&2; exit 1; }
	[ "$(nproc)" -ge 2 ] || { echo "bench: PIN=1 needs at least 2 CPUs" >&2; exit 1; }
	taskset -pc "1-$(($(nproc) - 1))" $$ >/dev/null
	GW=(taskset -c 0)
	THREADS=1 CONNS=16
	echo "== pinned: Caddy on CPU 0 (GOMAXPROCS 1); wrk -t$THREADS -c$CONNS and the upstream on CPUs 1-$(($(nproc) - 1))"
fi

"$OUT/upstream" -addr 127.0.0.1:$P_UP ${UPSTREAM_PLAIN:+-plain} &
PIDS+=($!)

# Keys, made before Caddy starts (the CLI writes the same SQLite file).
STORE="sqlite:$OUT/keys.db"
export KEYGATE_STORE=$STORE
json_field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -1; }
VALID=$("$OUT/caddy" keys issue --name bench-valid --scope mail.send --json | json_field key)
REVOKED_JSON=$("$OUT/caddy" keys issue --name bench-revoked --scope mail.send --json)
REVOKED=$(echo "$REVOKED_JSON" | json_field key)
REVOKED_ID=$(echo "$REVOKED_JSON" | json_field id)
"$OUT/caddy" keys revoke "$REVOKED_ID" --yes --reason bench >/dev/null
[ -n "$VALID" ] && [ -n "$REVOKED" ] || { echo "bench: could not issue keys" >&2; exit 1; }
BASIC_HASH=$("$OUT/caddy" hash-password --plaintext bench-password)
BASIC_AUTH="Basic $(printf 'bench:bench-password' | base64)"

"$OUT/keys" -n 1000 -garbage >"$OUT/garbage.keys"
"$OUT/keys" -n 1000 >"$OUT/unknown1k.keys"
fresh() { "$OUT/keys" -n "$FLOOD_KEYS" >"$OUT/$1.keys"; echo "$OUT/$1.keys"; }

# Send bodies (internal/benchbody): one line per body, "name file path
# content-type recipients bytes". BODY (the old 2 KB SendGrid body's name)
# stays the 2 KB SendGrid body for the sanity checks.
"$OUT/bodies" -dir "$OUT/body-files" >"$OUT/bodies.txt"
BODY=$OUT/body-files/sendgrid-2k.body
BODY_NAMES=$(awk '{print $1}' "$OUT/bodies.txt")
[ "$BODIES" = 1 ] || BODY_NAMES=sendgrid-2k

LOGOPT=""
[ "$KEYGATE_LOG" = off ] && LOGOPT="exclude http.handlers.keygate"
cat >"$OUT/Caddyfile" <<EOF
{
	admin $ADMIN
	storage file_system $OUT/data
	auto_https off
	persist_config off
	log {
		output file $OUT/caddy.log {
			roll_size 20MiB
			roll_keep 1
		}
		$LOGOPT
	}
}

# baseline: plain reverse_proxy, sent what an SDK sends a provider
# through a plain proxy: its key in Authorization (PROVIDER_KEY), a header
# of about the size of the keygate key the keygate sites are sent.
http://127.0.0.1:$P_BASE {
	reverse_proxy 127.0.0.1:$P_UP
}

# keygate, valid key; floods here measure verification (no 429 shortcut)
$(keygate_site $P_KG $P_UP "store $STORE" "scope mail.send POST /v3/mail/send" "rate 1000000/s" "failed_auth_limit 1000000000/s")

# keygate on a send route with payload inspection
$(keygate_site $P_SEND $P_UP "store $STORE" "mail_api sendgrid" "scope mail.send POST /v3/mail/send" "rate 1000000/s")

# keygate on Mailgun's and Postmark's send routes
$(keygate_site $P_MG $P_UP "store $STORE" "mail_api mailgun" "scope mail.send POST /v3/*/messages" "rate 1000000/s")
$(keygate_site $P_PM $P_UP "store $STORE" "mail_api postmark" "scope mail.send POST /email*" "rate 1000000/s")

# Caddy's built-in alternative
http://127.0.0.1:$P_BASIC {
	basic_auth {
		bench $BASIC_HASH
	}
	reverse_proxy 127.0.0.1:$P_UP
}

# keygate with the default failed_auth_limit (20/m): floods hit the 429 shortcut.
# Its own store, so its per-IP failure bucket is not shared with the site above.
$(keygate_site $P_SHORT $P_UP "store sqlite:$OUT/keys-shortcut.db" "scope mail.send POST /v3/mail/send")

# Caddy's header directive adding the two headers keygate adds to every
# authenticated response (static values of the same length), sent what the
# baseline is: the part of keygate's cost that is only a larger response
http://127.0.0.1:$P_HDR {
	header RateLimit "\"default\";r=999999;t=1"
	header RateLimit-Policy "\"default\";q=1000000;w=1"
	reverse_proxy 127.0.0.1:$P_UP
}

# A deployment also injects the provider's credential upstream (header_up,
# docs/providers.md): what that costs Caddy, with or without keygate, is
# measured here on its own, sent what the baseline is.
http://127.0.0.1:$P_INJECT {
	reverse_proxy 127.0.0.1:$P_UP {
		header_up Authorization "Bearer {env.BENCH_PROVIDER_KEY}"
	}
}

# Caddy's respond, measured only as an alternative upstream
http://127.0.0.1:$P_RESPOND {
	respond "{}" 202
}
EOF

"${GW[@]}" "$OUT/caddy" run --config "$OUT/Caddyfile" --adapter caddyfile >"$OUT/caddy.stderr" 2>&1 &
CADDY_PID=$!
PIDS+=($CADDY_PID)
wait_admin "$ADMIN" "$OUT/caddy.stderr" 100 0.1

# cpu_ticks: the CPU time Caddy has used so far (user + system, clock
# ticks). Per request, it is what a run cost Caddy itself, whatever else the
# machine was doing: other processes take CPU away from a run (its req/s
# drops) but do not add to Caddy's own time.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$CADDY_PID/stat"; }

queries() {
	curl -fs "http://$ADMIN/metrics" | awk '/^keygate_store_queries_total/ {printf "%d", $2; found=1} END {if (!found) printf "-1"}'
}

# status PORT [curl args...]: the status of a POST to $SPATH (default the SendGrid send path)
SPATH=/v3/mail/send
status() {
	local port=$1; shift
	curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port$SPATH" "$@"
}
expect() {
	local want=$1 name=$2; shift 2
	local got; got=$(status "$@")
	printf '   %-22s %s\n' "$name" "$got"
	[ "$got" = "$want" ] || { echo "bench: $name answered $got, want $want" >&2; exit 1; }
}
echo "== sanity (HTTP status per scenario)"
expect 202 baseline $P_BASE
expect 202 keygate $P_KG -H "Authorization: Bearer $VALID"
expect 400 keygate-sendgrid-bad $P_SEND -H "Authorization: Bearer $VALID" -H 'Content-Type: application/json' -d '{'
# body_port NAME: the keygate site inspecting that body's dialect
body_port() { case $1 in sendgrid-*) echo $P_SEND ;; mailgun-*) echo $P_MG ;; postmark-*) echo $P_PM ;; esac; }
# body_status NAME: what bench/upstream answers that body's provider
body_status() { case ${UPSTREAM_PLAIN:-}$1 in mailgun-* | postmark-*) echo 200 ;; *) echo 202 ;; esac; }
for b in $BODY_NAMES; do
	SPATH=$(body_field "$b" 3)
	expect "$(body_status "$b")" "keygate-$b" "$(body_port "$b")" -H "Authorization: Bearer $VALID" -H "Content-Type: $(body_field "$b" 4)" --data-binary @"$(body_field "$b" 2)"
	expect "$(body_status "$b")" "baseline-$b" $P_BASE -H "Content-Type: $(body_field "$b" 4)" --data-binary @"$(body_field "$b" 2)"
done
SPATH=/v3/mail/send
expect 202 basic_auth $P_BASIC -H "Authorization: $BASIC_AUTH"
expect 202 header $P_HDR
expect 202 inject $P_INJECT
expect 401 flood-garbage $P_KG -H "Authorization: Bearer $(head -1 "$OUT/garbage.keys")"
expect 401 flood-unknown $P_KG -H "Authorization: Bearer $(head -1 "$OUT/unknown1k.keys")"
expect 401 flood-revoked $P_KG -H "Authorization: Bearer $REVOKED"
[ "$(queries)" -ge 0 ] || { echo "bench: keygate_store_queries_total not on http://$ADMIN/metrics" >&2; exit 1; }
echo "   body $(wc -c <"$BODY") bytes; log: $KEYGATE_LOG"

# run LABEL PORT [VAR=value...] [-- wrk args]: one wrk run; appends a result
# line with the store queries it caused.
RESULTS=$OUT/results.txt
ROUND=0
RPATH=/v3/mail/send # the path run posts to
run() {
	local label=$1 port=$2; shift 2
	local envs=() wrkargs=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
	[ "${1:-}" = -- ] && { shift; wrkargs=("$@"); }
	local q0 q1 c0 c1 line ppid=""
	q0=$(queries)
	c0=$(cpu_ticks)
	if [ "${PROFILE:-}" = 1 ] && case $label in keygate | baseline | keygate-sendgrid-2k | baseline-sendgrid-2k) true ;; *) false ;; esac && [ "$ROUND" = 1 ] && [ ! -e "$OUT/$label-cpu.pprof" ]; then
		curl -fs "http://$ADMIN/debug/pprof/allocs" -o "$OUT/$label-allocs-before.pprof"
		curl -fs "http://$ADMIN/debug/pprof/profile?seconds=$((DURATION - 1))" -o "$OUT/$label-cpu.pprof" &
		ppid=$!
	fi
	line=$(env LABEL="$label" WRK_THREADS=$THREADS "${envs[@]}" \
		wrk -t$THREADS -c$CONNS -d${DURATION}s --timeout 2s -s bench/wrk.lua "${wrkargs[@]}" \
		"http://127.0.0.1:$port$RPATH" | grep '^RESULT')
	c1=$(cpu_ticks)
	q1=$(queries)
	if [ -n "$ppid" ]; then
		wait "$ppid"
		curl -fs "http://$ADMIN/debug/pprof/allocs" -o "$OUT/$label-allocs.pprof"
	fi
	echo "$ROUND ${line#RESULT } $((q1 - q0)) $((c1 - c0))" | tee -a "$RESULTS" |
		awk -v tck="$CLK_TCK" '{printf "   r%s %-22s %9.0f req/s  p50 %6.0fµs  p99 %6.0fµs  n=%d non2xx=%d err=%d queries=%d  caddy %.1f µs CPU/req\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10*1e6/tck/($6>0?$6:1)}'
}

echo "== upstream choice (direct, no proxy, ${DURATION}s each)"
ROUND=u
run upstream-go $P_UP
run upstream-respond $P_RESPOND

# Each keygate scenario and its baseline run in slices of half a run, in the
# order A B B A (the baseline first in odd rounds, second in even ones): drift
# on a shared machine (±8 % between two 3 s runs here) then falls on both
# alike within a round, not only across rounds. A round's figures for a
# scenario are over its two slices (summary: requests and CPU summed, req/s
# and latencies their mean).
odd() { [ $((ROUND % 2)) = 1 ]; }
# pair [RUNNER]: runs the scenario in array A (RUNNER's arguments; RUNNER
# is run unless given, crun for the cluster) against the one in array B
# that way.
pair() {
	local d=$DURATION r=${1:-run}
	DURATION=$(((d + 1) / 2))
	if odd; then
		$r "${B[@]}"; $r "${A[@]}"; $r "${A[@]}"; $r "${B[@]}"
	else
		$r "${A[@]}"; $r "${B[@]}"; $r "${B[@]}"; $r "${A[@]}"
	fi
	DURATION=$d
}
for r in $(seq 1 "$ROUNDS"); do
	ROUND=$r
	echo "== round $r/$ROUNDS"
	B=(baseline $P_BASE -- -H "$PROVIDER_AUTH")
	A=(keygate $P_KG -- -H "Authorization: Bearer $VALID")
	pair
	# The baseline without the provider key: what parsing, logging and
	# forwarding that one header costs Caddy (ratio to baseline).
	run baseline-nokey $P_BASE
	# The same two paced (each connection one request per VALID_DELAY_MS):
	# below saturation, so the latency added is keygate's, not queueing.
	B=(baseline-paced $P_BASE DELAY_MS=$VALID_DELAY_MS -- -H "$PROVIDER_AUTH")
	A=(keygate-paced $P_KG DELAY_MS=$VALID_DELAY_MS -- -H "Authorization: Bearer $VALID")
	pair
	run basic_auth $P_BASIC -- -H "Authorization: $BASIC_AUTH"
	run header $P_HDR -- -H "$PROVIDER_AUTH"
	run inject $P_INJECT -- -H "$PROVIDER_AUTH"
	for b in $BODY_NAMES; do
		RPATH=$(body_field "$b" 3)
		B=("baseline-$b" $P_BASE BODY="$(body_field "$b" 2)" CTYPE="$(body_field "$b" 4)" -- -H "$PROVIDER_AUTH")
		A=("keygate-$b" "$(body_port "$b")" BODY="$(body_field "$b" 2)" CTYPE="$(body_field "$b" 4)" -- -H "Authorization: Bearer $VALID")
		pair
		RPATH=/v3/mail/send
	done
	run flood-garbage $P_KG KEYS="$OUT/garbage.keys"
	run flood-unknown-1k $P_KG KEYS="$OUT/unknown1k.keys"
	run flood-unknown-fresh $P_KG KEYS="$(fresh fresh-r$r)"
	run flood-revoked $P_KG -- -H "Authorization: Bearer $REVOKED"
	rm -f "$OUT/fresh-r$r.keys"
done

echo "== floods against the default failed_auth_limit (20/m per client IP): the 429 shortcut"
ROUND=s
run short-garbage $P_SHORT KEYS="$OUT/garbage.keys"
run short-unknown-fresh $P_SHORT KEYS="$(fresh short)"

# conc LABEL [flood VAR=value... -- wrk args]: the valid-key load (1 thread,
# 16 connections; each connection paced by VDELAY ms when set) alone or
# alongside a flood (1 thread, 16 connections).
VDELAY=""
CONC=$OUT/concurrent.txt
: >"$CONC"
conc() {
	local label=$1; shift
	local fpid="" q0 q1 line
	q0=$(queries)
	if [ $# -gt 0 ]; then
		local envs=() wrkargs=()
		while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
		[ "${1:-}" = -- ] && { shift; wrkargs=("$@"); }
		env LABEL="$label-flood" WRK_THREADS=1 "${envs[@]}" \
			wrk -t1 -c16 -d$((DURATION + 1))s --timeout 2s -s bench/wrk.lua "${wrkargs[@]}" \
			"http://127.0.0.1:$P_KG/v3/mail/send" >"$OUT/flood.out" &
		fpid=$!
		PIDS+=($fpid)
		sleep 0.3
	fi
	line=$(LABEL="$label" WRK_THREADS=1 DELAY_MS="$VDELAY" wrk -t1 -c16 -d${DURATION}s --timeout 2s -s bench/wrk.lua \
		-H "Authorization: Bearer $VALID" "http://127.0.0.1:$P_KG/v3/mail/send" | grep '^RESULT')
	local frps=0
	if [ -n "$fpid" ]; then
		wait "$fpid" || true
		frps=$(awk '/^RESULT/ {print $3}' "$OUT/flood.out")
	fi
	q1=$(queries)
	echo "$ROUND ${line#RESULT } $((q1 - q0)) $frps" | tee -a "$CONC" | awk '{printf "   r%s %-26s valid %8.0f req/s  p50 %6.0fµs  p99 %6.0fµs  non2xx=%d  flood %7.0f req/s  queries=%d\n", $1,$2,$3,$4,$5,$7,$10,$9}'
}

echo "== valid key (1 thread, 16 conns) alone and alongside a flood (1 thread, 16 conns) on the same site"
for r in $(seq 1 "$CONC_ROUNDS"); do
	ROUND=$r
	conc solo
	conc +garbage KEYS="$OUT/garbage.keys"
	conc +unknown-fresh KEYS="$(fresh conc-u$r)"
	conc +valid-control -- -H "Authorization: Bearer $VALID"
	conc +garbage-throttled KEYS="$OUT/garbage.keys" DELAY_MS=$THROTTLE_MS
	conc +unknown-throttled KEYS="$(fresh conc-t$r)" DELAY_MS=$THROTTLE_MS
	rm -f "$OUT"/conc-*.keys
done

# The same at a fixed, moderate rate: the valid load paced (16 connections,
# one request per VALID_DELAY_MS each) and the floods paced too, so the CPUs
# are not saturated and what is compared is the valid requests' latency.
echo "== valid key paced (${VALID_DELAY_MS} ms per connection) alone and alongside paced floods (${THROTTLE_MS} ms)"
VDELAY=$VALID_DELAY_MS
for r in $(seq 1 "$CONC_ROUNDS"); do
	ROUND=$r
	conc paced:solo
	conc paced:+garbage KEYS="$OUT/garbage.keys" DELAY_MS=$THROTTLE_MS
	conc paced:+unknown-fresh KEYS="$(fresh conc-p$r)" DELAY_MS=$THROTTLE_MS
	conc paced:+revoked DELAY_MS=$THROTTLE_MS -- -H "Authorization: Bearer $REVOKED"
	conc paced:+valid-control DELAY_MS=$THROTTLE_MS -- -H "Authorization: Bearer $VALID"
	rm -f "$OUT"/conc-*.keys
done
VDELAY=""

# ---- Cluster: two caddy nodes on one PostgreSQL and one Redis ----

# The cluster and PostgreSQL sections use every CPU, pinned or not.
[ "$PIN" = 1 ] && taskset -pc "$ALL_CPUS" $$ >/dev/null
if [ "$CLUSTER" = 1 ] || [ "$PG_SCALE" = 1 ]; then
	echo "== PostgreSQL $("$PGBIN/postgres" --version | awk '{print $NF}') on 127.0.0.1:$P_PG (fsync off)"
	start_postgres $P_PG keygate scale
	PG_URI="postgres://postgres@127.0.0.1:$P_PG/keygate?sslmode=disable"
	PG_SCALE_URI="postgres://postgres@127.0.0.1:$P_PG/scale?sslmode=disable"
fi

# redis_calls: the scripts clients have sent so far (EVAL, EVALSHA: one per
# round trip here) and every command Redis has executed, those the scripts
# ran included, but INFO (ours) and PING.
redis_calls() {
	redis-cli -p $P_REDIS INFO commandstats | tr -d '\r' |
		awk -F'[:=,]' '/^cmdstat_eval/ {e += $3} /^cmdstat_/ && $1 != "cmdstat_info" && $1 != "cmdstat_ping" {s += $3} END {print e + 0, s + 0}'
}

CLUSTER_RESULTS=$OUT/cluster.txt
: >"$CLUSTER_RESULTS"
# crun LABEL PORT_A PORT_B [VAR=value...] [-- wrk args]: one wrk (1 thread,
# 16 connections) against each node at once; one line with the sum of
# req/s, the mean of the two nodes' p50 and p99, and the Redis commands
# executed meanwhile.
crun() {
	local label=$1 pa=$2 pb=$3; shift 3
	local e0 c0 e1 c1 wa wb envs=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
	[ "${1:-}" = -- ] && shift
	read -r e0 c0 < <(redis_calls)
	env LABEL="$label" WRK_THREADS=1 "${envs[@]}" wrk -t1 -c16 -d${DURATION}s --timeout 2s -s bench/wrk.lua "$@" "http://127.0.0.1:$pa/v3/mail/send" >"$OUT/crun-a.out" &
	wa=$!
	env LABEL="$label" WRK_THREADS=1 "${envs[@]}" wrk -t1 -c16 -d${DURATION}s --timeout 2s -s bench/wrk.lua "$@" "http://127.0.0.1:$pb/v3/mail/send" >"$OUT/crun-b.out" &
	wb=$!
	wait $wa $wb
	read -r e1 c1 < <(redis_calls)
	cat "$OUT/crun-a.out" "$OUT/crun-b.out" | awk -v r="$ROUND" -v l="$label" -v evals=$((e1 - e0)) -v cmds=$((c1 - c0)) '
		/^RESULT/ {rps += $3; p50 += $4; p99 += $5; n += $6; bad += $7; err += $8; k++}
		END {printf "%s %s %.1f %.0f %.0f %d %d %d %d %d\n", r, l, rps, p50 / k, p99 / k, n, bad, err, evals, cmds}' |
		tee -a "$CLUSTER_RESULTS" | awk '{n = $6 > 0 ? $6 : 1; printf "   r%s %-22s %9.0f req/s  p50 %6.0fµs  p99 %6.0fµs  n=%d non2xx=%d err=%d redis: %.4f scripts, %.3f commands per request\n", $1,$2,$3,$4,$5,$6,$7,$8,$9/n,$10/n}'
}

if [ "$CLUSTER" = 1 ]; then
	echo "== cluster: two caddy nodes, PostgreSQL + Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-) on 127.0.0.1:$P_REDIS"
	redis-server --port $P_REDIS --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" >"$OUT/redis.log" 2>&1 &
	PIDS+=($!)
	for i in $(seq 1 50); do redis-cli -p $P_REDIS ping >/dev/null 2>&1 && break; sleep 0.1; done
	CVALID=$("$OUT/caddy" keys issue --store "$PG_URI" --name bench-cluster --scope mail.send --json | json_field key)
	# A quota no run reaches: every send is counted against it.
	CQUOTA=$("$OUT/caddy" keys issue --store "$PG_URI" --name bench-cluster-quota --scope mail.send --quota 1000000000/d --json | json_field key)
	[ -n "$CVALID" ] && [ -n "$CQUOTA" ] || { echo "bench: could not issue the cluster keys" >&2; exit 1; }
	# cluster_site PORT [exact] [DIALECT]: a keygate site on the shared
	# store and Redis (leased limits, or exact), inspecting DIALECT's sends.
	cluster_site() {
		local limits="ratelimit redis redis://127.0.0.1:$P_REDIS/0" api=""
		[ "$2" = exact ] && limits="$limits {
			exact
		}"
		[ -n "$3" ] && api="mail_api $3"
		keygate_site "$1" $P_UP "store $PG_URI" "$limits" "$api" "scope mail.send POST /v3/mail/send" "rate 1000000/s"
	}
	node() { # node NAME ADMIN PLAIN KG EXACT SEND SEND_EXACT
		cat >"$OUT/Caddyfile.$1" <<EOF2
{
	admin $2
	storage file_system $OUT/data-$1
	auto_https off
	persist_config off
	log {
		output file $OUT/caddy-$1.log {
			roll_size 20MiB
			roll_keep 1
		}
		$LOGOPT
	}
}
http://127.0.0.1:$3 {
	reverse_proxy 127.0.0.1:$P_UP
}
EOF2
		cluster_site "$4" "" "" >>"$OUT/Caddyfile.$1"
		cluster_site "$5" exact "" >>"$OUT/Caddyfile.$1"
		cluster_site "$6" "" sendgrid >>"$OUT/Caddyfile.$1"
		cluster_site "$7" exact sendgrid >>"$OUT/Caddyfile.$1"
		"$OUT/caddy" run --config "$OUT/Caddyfile.$1" --adapter caddyfile >"$OUT/caddy-$1.stderr" 2>&1 &
		PIDS+=($!)
		wait_admin "$2" "$OUT/caddy-$1.stderr" 100 0.1
	}
	node a $ADMIN_A $P_A_PLAIN $P_A_KG $P_A_EXACT $P_A_SEND $P_A_SEXACT
	node b $ADMIN_B $P_B_PLAIN $P_B_KG $P_B_EXACT $P_B_SEND $P_B_SEXACT
	for p in $P_A_KG $P_B_KG $P_A_EXACT $P_B_EXACT; do
		expect 202 "cluster-$p" $p -H "Authorization: Bearer $CVALID"
	done
	SBODY=$(body_field sendgrid-2k 2) SCTYPE=$(body_field sendgrid-2k 4)
	for p in $P_A_SEND $P_B_SEND $P_A_SEXACT $P_B_SEXACT; do
		expect 202 "cluster-send-$p" $p -H "Authorization: Bearer $CQUOTA" -H "Content-Type: $SCTYPE" --data-binary @"$SBODY"
	done
	# Warm-up, not recorded: fresh nodes fill their connection pools,
	# caches and leases in their first second.
	for p in $P_A_PLAIN $P_B_PLAIN $P_A_KG $P_B_KG $P_A_EXACT $P_B_EXACT; do
		LABEL=warm-up WRK_THREADS=1 wrk -t1 -c16 -d1s -s bench/wrk.lua -H "Authorization: Bearer $CVALID" "http://127.0.0.1:$p/v3/mail/send" >/dev/null
	done
	for p in $P_A_SEND $P_B_SEND $P_A_SEXACT $P_B_SEXACT; do
		LABEL=warm-up WRK_THREADS=1 BODY="$SBODY" CTYPE="$SCTYPE" wrk -t1 -c16 -d1s -s bench/wrk.lua -H "Authorization: Bearer $CQUOTA" "http://127.0.0.1:$p/v3/mail/send" >/dev/null
	done
	for r in $(seq 1 "$ROUNDS"); do
		ROUND=$r
		echo "== cluster round $r/$ROUNDS (two wrk -t1 -c16, one per node)"
		# Each keygate scenario in A B B A slices with its plain proxies.
		B=(cluster-plain $P_A_PLAIN $P_B_PLAIN -- -H "$PROVIDER_AUTH")
		A=(cluster-keygate $P_A_KG $P_B_KG -- -H "Authorization: Bearer $CVALID")
		pair crun
		crun cluster-exact $P_A_EXACT $P_B_EXACT -- -H "Authorization: Bearer $CVALID"
		# The 2 KB SendGrid send (11 recipients), on a key without and with a quota.
		B=(cluster-plain-send $P_A_PLAIN $P_B_PLAIN BODY="$SBODY" CTYPE="$SCTYPE" -- -H "$PROVIDER_AUTH")
		A=(cluster-send $P_A_SEND $P_B_SEND BODY="$SBODY" CTYPE="$SCTYPE" -- -H "Authorization: Bearer $CVALID")
		pair crun
		A=(cluster-send-quota $P_A_SEND $P_B_SEND BODY="$SBODY" CTYPE="$SCTYPE" -- -H "Authorization: Bearer $CQUOTA")
		pair crun
		crun cluster-send-exact $P_A_SEXACT $P_B_SEXACT BODY="$SBODY" CTYPE="$SCTYPE" -- -H "Authorization: Bearer $CQUOTA"
	done
fi

if [ "$PG_SCALE" = 1 ]; then
	echo "== $PG_KEYS keys on PostgreSQL: COPY, then cold-miss lookups (bench/scale -store)"
	t0=$SECONDS
	"$OUT/scale" -store "$PG_SCALE_URI" -n "$PG_KEYS" | tee "$OUT/pg-scale.txt" | sed 's/^/   /'
	echo "   (took $((SECONDS - t0)) s)"
fi

echo
echo "== summary: medians over $ROUNDS rounds; ratio and added p99 against the baseline of the same round"
echo "   (keygate-X against baseline-X where it exists, e.g. the same body or pacing, else against baseline; store queries are summed over rounds;"
echo "    µs CPU: Caddy's own CPU time per request; CPU ratio: the baseline's over the scenario's, per round: what throughput"
echo "    would be if Caddy were all the machine ran, unmoved by other processes)"
awk -v rounds="$ROUNDS" '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
$1 ~ /^[0-9]+$/ { r = $1; s = $2; k = ++slices[r, s]
	rps[r, s] += ($3 - rps[r, s]) / k; p50[r, s] += ($4 - p50[r, s]) / k; p99[r, s] += ($5 - p99[r, s]) / k
	n[s] += $6; bad[s] += $7 + $8; q[s] += $9; rn[r, s] += $6; ticks[r, s] += $10
	cpu[r, s] = ticks[r, s] * 1e6 / tck / (rn[r, s] > 0 ? rn[r, s] : 1)
	if (!(s in seen)) { seen[s] = 1; order[++ns] = s } }
END {
	printf "   %-22s %10s %8s %8s %7s %10s %10s %9s %10s %9s %9s\n", "scenario", "req/s", "p50 ms", "p99 ms", "ratio", "+p99 ms", "requests", "non-2xx", "queries", "µs CPU", "CPU ratio"
	for (k = 1; k <= ns; k++) {
		s = order[k]; base = "baseline"
		if (s ~ /^keygate-/ && ("baseline-" substr(s, 9)) in seen) base = "baseline-" substr(s, 9)
		m = 0
		for (r = 1; r <= rounds; r++) if ((r, s) in rps) { m++; A[m] = rps[r, s]; B[m] = p50[r, s]; C[m] = p99[r, s]
			R[m] = rps[r, s] / rps[r, base]; D[m] = (p99[r, s] - p99[r, base]) / 1000
			U[m] = cpu[r, s]; K[m] = cpu[r, s] > 0 ? cpu[r, base] / cpu[r, s] : 0 }
		printf "   %-22s %10.0f %8.3f %8.3f %7.3f %10.3f %10d %9d %10d %9.1f %9.3f\n", s, median(A, m), median(B, m) / 1000, median(C, m) / 1000, median(R, m), median(D, m), n[s], bad[s], q[s], median(U, m), median(K, m)
		line = ""
		for (r = 1; r <= rounds; r++) if ((r, s) in rps && (r, base) in rps && cpu[r, s] > 0)
			line = line sprintf("  r%d %.3f (CPU %.3f)", r, rps[r, s] / rps[r, base], cpu[r, base] / cpu[r, s])
		if (s != base && s !~ /^(baseline-|flood-)/) per[++np] = sprintf("   %-22s%s", s, line)
	}
	print "   per round, ratio (CPU ratio):"
	for (k = 1; k <= np; k++) print per[k]
}' tck="$CLK_TCK" "$RESULTS" | tee "$OUT/summary.txt"

echo
echo "== concurrent: valid-key req/s and latency (median over $CONC_ROUNDS rounds) vs solo (paced: vs paced:solo)"
awk '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
{ s = $2; v[s, ++c[s]] = $3; m[s, c[s]] = $4; p[s, c[s]] = $5; f[s, c[s]] = $10; q[s] += $9; bad[s] += $7; if (!(s in seen)) { seen[s] = 1; order[++ns] = s } }
END {
	printf "   %-24s %11s %7s %8s %7s %8s %7s %11s %8s %7s\n", "alongside", "valid req/s", "vs solo", "p50 ms", "vs solo", "p99 ms", "vs solo", "flood req/s", "queries", "non-2xx"
	for (k = 1; k <= ns; k++) { s = order[k]
		for (i = 1; i <= c[s]; i++) { A[i] = v[s, i]; M[i] = m[s, i]; B[i] = p[s, i]; F[i] = f[s, i] }
		rate = median(A, c[s]); p50 = median(M, c[s]); p99 = median(B, c[s])
		solo = (s ~ /:/) ? substr(s, 1, index(s, ":")) "solo" : "solo"
		if (s == solo) { srate = rate; sp50 = p50; sp99 = p99 }
		printf "   %-24s %11.0f %7.3f %8.3f %7.3f %8.3f %7.3f %11.0f %8d %7d\n", s, rate, rate / srate, p50 / 1000, p50 / sp50, p99 / 1000, p99 / sp99, median(F, c[s]), q[s], bad[s] }
}' "$CONC" | tee -a "$OUT/summary.txt"
grep -E '^(u|s) ' "$RESULTS" | awk '{printf "   %-22s %10.0f req/s  p50 %.3f ms  p99 %.3f ms  non-2xx %d  queries %d\n", $2, $3, $4/1000, $5/1000, $7, $9}' | tee -a "$OUT/summary.txt"
if [ "$CLUSTER" = 1 ]; then
	echo
	echo "== cluster: medians over $ROUNDS rounds; req/s summed over both nodes, p50/p99 the mean of the nodes'; ratio against cluster-plain (sends: cluster-plain-send) of the same round"
	awk '
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
	}
	{ r = $1; s = $2; k = ++slices[r, s]
	  rps[r, s] += ($3 - rps[r, s]) / k; p50[r, s] += ($4 - p50[r, s]) / k; p99[r, s] += ($5 - p99[r, s]) / k
	  n[s] += $6; bad[s] += $7 + $8; evals[s] += $9; cmds[s] += $10
	  if (!(s in seen)) { seen[s] = 1; order[++ns] = s }; if (r > rounds) rounds = r }
	END {
		printf "   %-22s %10s %8s %8s %7s %10s %9s %14s %14s\n", "scenario", "req/s", "p50 ms", "p99 ms", "ratio", "requests", "non-2xx", "scripts/req", "commands/req"
		for (k = 1; k <= ns; k++) {
			s = order[k]; m = 0; base = s ~ /send/ ? "cluster-plain-send" : "cluster-plain"
			for (r = 1; r <= rounds; r++) if ((r, s) in rps) { m++; A[m] = rps[r, s]; B[m] = p50[r, s]; C[m] = p99[r, s]; R[m] = rps[r, s] / rps[r, base] }
			d = n[s] > 0 ? n[s] : 1
			printf "   %-22s %10.0f %8.3f %8.3f %7.3f %10d %9d %14.4f %14.4f\n", s, median(A, m), median(B, m) / 1000, median(C, m) / 1000, median(R, m), n[s], bad[s], evals[s] / d, cmds[s] / d
			line = ""
			for (r = 1; r <= rounds; r++) if ((r, s) in rps && (r, base) in rps) line = line sprintf("  r%d %.3f", r, rps[r, s] / rps[r, base])
			if (s != base) per[++np] = sprintf("   %-22s%s", s, line)
		}
		print "   per round, ratio:"
		for (k = 1; k <= np; k++) print per[k]
	}' "$CLUSTER_RESULTS" | tee -a "$OUT/summary.txt"
	echo "   (scripts: EVAL/EVALSHA sent by the nodes, one per round trip; commands: all Redis executed, the scripts' own GET/SET/TIME included)"
fi
[ "$PG_SCALE" = 1 ] && { echo; echo "== $PG_KEYS keys on PostgreSQL"; sed 's/^/   /' "$OUT/pg-scale.txt" | tee -a "$OUT/summary.txt"; }
echo "== took $SECONDS s; load average at the end: $(cut -d" " -f1-3 /proc/loadavg) (other processes on this machine skew every figure)"
echo "== done; raw lines in $RESULTS and $CONC, Caddy log in $OUT/caddy.log"
