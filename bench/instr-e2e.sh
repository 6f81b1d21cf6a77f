#!/usr/bin/env bash
# Instructions per request through the real Caddy binary, counted by
# valgrind's callgrind: what a request costs Caddy's user-space code, keygate
# included, as a figure other processes on the machine cannot move (a round
# of bench/run.sh moves ±8 % on a shared VM, more on a bad day; these counts
# move ~1 %). The load test's ratios stay the measure of throughput; this is
# for telling a real difference from the machine's weather.
#
#   bench/instr-e2e.sh            # ~3 minutes: N=2000 requests per scenario, 3 rounds
#   N=500 ROUNDS=1 bench/instr-e2e.sh
#   SCENARIOS="baseline keygate" bench/instr-e2e.sh
#   UPSTREAM_PLAIN=1 bench/instr-e2e.sh   # the upstream answers 202 {} to every path
#   UPSTREAM_TLS=1 bench/instr-e2e.sh     # every site proxies over HTTPS (HTTP/2; h1: HTTP/1.1), as to a real provider
#   KEEP=1 bench/instr-e2e.sh     # keep each round's callgrind dump, bench/out/instr-e2e/cg-LABEL-rN.out,
#                                 # for callgrind_annotate (which function the instructions went to)
#   CACHE=1 bench/instr-e2e.sh    # also simulate the caches (slower): L1 instruction and data misses
#                                 # per request, the lines of code and data a request fetches again
#                                 # under load (BENCHMARKS.md, session 19)
#   ONLY='*keygate.(*Handler).authenticate' SCENARIOS=keygate bench/instr-e2e.sh
#       # count inside that function only (callgrind's --toggle-collect): for
#       # functions that do not block, as a goroutine switch inside one would
#       # be counted too
#
# Caddy runs under callgrind (GOMAXPROCS 1, instrumentation switched on only
# once it is up); bench/upstream answers natively, as each provider does. For each scenario:
# N requests to warm up (once; see the warm-up below), then per round the counters are zeroed,
# curl sends N requests on one kept-alive connection, and the counters are
# dumped: the total over N is the scenario's instructions per request, the
# background work of the idle process (keygate's change-log poll, Go's
# sysmon) included, which is ~300k instructions a second against ~200k per
# request (measured with IDLE=1: ~0.3 % here).
#
# GC is off (GOGC=off unless set): Caddy's heap here is ~20 MB live and a
# collection runs every ~4,000 requests, so whether one falls into a round of
# 2,000 moved a count by 5-10 %. Garbage collection costs in proportion to
# what a request allocates, which the Go benchmarks report (-benchmem):
# keygate adds ~170 bytes to Caddy's ~5 KB on the plain route. Each round
# starts after a collection (not counted): without one the heap grew
# through the run, and keygate's added count was 14.2k or 19.1k depending
# on which scenarios ran before it.
#
# Scenarios, each against the baseline (plain reverse_proxy sent what an
# SDK sends through a plain proxy: the provider's key in Authorization):
#   keygate                 a valid keygate key on a scope-checked route
#   header                  Caddy's header directive setting the two headers
#                           keygate adds (static values of the same length)
#   keygate-sendgrid-2k     the 2 KB SendGrid send, inspected ...
#   baseline-sendgrid-2k    ... and the same body through plain reverse_proxy
#   keygate-sendgrid-20k / baseline-sendgrid-20k, keygate-mailgun-2k / baseline-mailgun-2k,
#   keygate-postmark-batch50 / baseline-postmark-batch50 (the default set); any
#   other body bench/bodies writes the same way (keygate-sendgrid-200k,
#   baseline-mailgun-20k, ...). A scenario the script does not know is an error.
#
# Caveats: only user-space instructions count. The kernel's share of a
# request (reading and writing sockets, about 40 % of Caddy's CPU time under
# load here) is the same with and without keygate and is not counted, so the
# instruction ratio is further from 1 than a throughput ratio would be.
# Valgrind models its own CPU: SHA-256 runs without SHA-NI (a few thousand
# instructions more than on this CPU's), and the JSON reader's AVX2 scan runs
# as on an AVX2 CPU. Compare instruction counts with instruction counts only.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/sites.sh
for tool in valgrind callgrind_control curl go; do
	command -v $tool >/dev/null || { echo "instr-e2e: $tool not found (apt-get install -y valgrind curl)" >&2; exit 1; }
done
N=${N:-2000}
ROUNDS=${ROUNDS:-3}
OUT=$PWD/bench/out/instr-e2e
rm -rf "$OUT"
mkdir -p "$OUT"
P_UP=18200 P_BASE=18201 P_KG=18202 P_HDR=18203 P_SEND=18204 P_MG=18205 P_PM=18206 ADMIN=127.0.0.1:18219
PROVIDER_AUTH="Authorization: Bearer SG.benchBenchBenchBench00.benchBenchBenchBenchBenchBenchBenchBench000"

echo "== build"
build_bench

trap stop_started EXIT

STORE=sqlite:$OUT/keys.db
KEY=$("$OUT/caddy" keys issue --store "$STORE" --name instr-e2e --scope mail.send --json 2>/dev/null |
	sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')
[ -n "$KEY" ] || { echo "instr-e2e: could not issue a key" >&2; exit 1; }

start_upstream $P_UP ${UPSTREAM_PLAIN:+-plain}
cat >"$OUT/Caddyfile" <<EOF2
{
	admin $ADMIN
	storage file_system $OUT/data
	auto_https off
	persist_config off
	log {
		output discard
	}
}
http://127.0.0.1:$P_BASE {
	$(proxy_to "$UP")
}
$(keygate_site $P_KG "$UP" "store $STORE" "scope mail.send POST /v3/mail/send" "rate 1000000/s")
http://127.0.0.1:$P_HDR {
	header RateLimit "\"default\";r=999999;t=1"
	header RateLimit-Policy "\"default\";q=1000000;w=1"
	$(proxy_to "$UP")
}
$(keygate_site $P_SEND "$UP" "store $STORE" "mail_api sendgrid" "scope mail.send POST /v3/mail/send" "rate 1000000/s")
$(keygate_site $P_MG "$UP" "store $STORE" "mail_api mailgun" "scope mail.send POST /v3/*/messages" "rate 1000000/s")
$(keygate_site $P_PM "$UP" "store $STORE" "mail_api postmark" "scope mail.send POST /email*" "rate 1000000/s")
EOF2

echo "== caddy under callgrind"
GOGC=${GOGC:-off} GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off GOMAXPROCS=1 \
	valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.out" ${ONLY:+"--toggle-collect=$ONLY"} \
	$([ "${CACHE:-}" = 1 ] && echo --cache-sim=yes) \
	"$OUT/caddy" run --config "$OUT/Caddyfile" --adapter caddyfile >"$OUT/caddy.log" 2>&1 &
VG=$!
PIDS+=($VG)
wait_admin "$ADMIN" "$OUT/caddy.log" 240 0.5
callgrind_control -i on "$VG" >/dev/null 2>&1

# send PORT PATH COUNT [curl args...]: COUNT POSTs on one connection; fails
# unless every answer is the same 2xx.
send() {
	local port=$1 path=$2 count=$3; shift 3
	local urls=() i codes
	for ((i = 0; i < count; i++)); do urls+=(-o /dev/null "http://127.0.0.1:$port$path"); done
	codes=$(curl -s -w '%{http_code}\n' -X POST "$@" "${urls[@]}" | sort | uniq -c)
	[[ "$(echo "$codes" | awk '{print $2}')" =~ ^2[0-9][0-9]$ ]] || { echo "instr-e2e: answers on :$port$path: $codes" >&2; exit 1; }
}
# count LABEL PORT PATH [curl args...]: instructions per request of one round.
count() {
	local label=$1 port=$2 path=$3; shift 3
	# A collection first (the heap profile's gc=1), uncounted: with GC off
	# the heap would otherwise grow through the whole run, and a round's
	# count would depend on the rounds before it.
	curl -fs -o /dev/null "http://$ADMIN/debug/pprof/heap?gc=1" || { echo "instr-e2e: no heap profile at $ADMIN" >&2; exit 1; }
	callgrind_control -z "$VG" >/dev/null 2>&1
	send "$port" "$path" "$N" "$@"
	callgrind_control -d "$VG" >/dev/null 2>&1
	local f; f=$(ls -t "$OUT"/cg.out.* | head -1)
	# Instructions, and with CACHE=1 L1 misses (instruction; data read and
	# written), per request: "round label Ir [I1mr D1mr+D1mw]".
	awk -v r="$ROUND" -v l="$label" -v n="$N" '
		/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
		/^totals:/ {
			printf "%s %s %.0f", r, l, $(col["Ir"]) / n
			if ("I1mr" in col) printf " %.0f %.0f", $(col["I1mr"]) / n, ($(col["D1mr"]) + $(col["D1mw"])) / n
			printf "\n"
		}' "$f" | tee -a "$OUT/results.txt" |
		awk '{printf "   r%s %-22s %9d instructions per request", $1, $2, $3; if (NF > 3) printf ", L1 misses %d instruction, %d data", $4, $5; printf "\n"}'
	if [ "${KEEP:-}" = 1 ]; then mv "$f" "$OUT/cg-$label-r$ROUND.out"; else rm -f "$f"; fi
}

# The scenarios: baseline, keygate and header without a body; baseline-NAME
# and keygate-NAME with any body bench/bodies writes (NAME as in bodies.txt).
# withbody LABEL PORT NAME [curl args...]: the body NAME, to its path, as its Content-Type.
withbody() {
	local label=$1 port=$2 name=$3; shift 3
	local file; file=$(body_field "$name" 2)
	[ -n "$file" ] || { echo "instr-e2e: no body $name in $OUT/bodies.txt" >&2; exit 1; }
	count "$label" "$port" "$(body_field "$name" 3)" "$@" -H "Content-Type: $(body_field "$name" 4)" --data-binary @"$file"
}
scenario() {
	case $1 in
	baseline) count baseline $P_BASE /v3/mail/send -H "$PROVIDER_AUTH" ;;
	keygate) count keygate $P_KG /v3/mail/send -H "Authorization: Bearer $KEY" ;;
	header) count header $P_HDR /v3/mail/send -H "$PROVIDER_AUTH" ;;
	baseline-*) withbody "$1" $P_BASE "${1#baseline-}" -H "$PROVIDER_AUTH" ;;
	keygate-sendgrid-*) withbody "$1" $P_SEND "${1#keygate-}" -H "Authorization: Bearer $KEY" ;;
	keygate-mailgun-*) withbody "$1" $P_MG "${1#keygate-}" -H "Authorization: Bearer $KEY" ;;
	keygate-postmark-*) withbody "$1" $P_PM "${1#keygate-}" -H "X-Postmark-Server-Token: $KEY" ;;
	*) echo "instr-e2e: no scenario $1" >&2; exit 1 ;;
	esac
}
SCENARIOS=${SCENARIOS:-"baseline keygate header baseline-sendgrid-2k keygate-sendgrid-2k baseline-sendgrid-20k keygate-sendgrid-20k baseline-mailgun-2k keygate-mailgun-2k baseline-postmark-batch50 keygate-postmark-batch50"}

# The warm-up sends as many requests as a round, so that the heap has grown
# to what any round allocates before counting starts. Every round then
# allocates from memory a collection freed, which the runtime zeroes before
# reuse, instead of memory fresh from the OS, which it need not zero. With a
# warm-up of 200 requests the first round of the first scenario (the
# baseline) got fresh memory and zeroed ~95 fewer objects a request: ~3k
# fewer instructions, which showed as keygate's.
echo "== warm-up ($N requests each, not counted)"
ROUND=w
for s in $SCENARIOS; do scenario "$s" >/dev/null; done
: >"$OUT/results.txt"
for r in $(seq 1 "$ROUNDS"); do
	ROUND=$r
	echo "== round $r/$ROUNDS ($N requests per scenario)"
	for s in $SCENARIOS; do scenario "$s"; done
done
if [ "${IDLE:-}" = 1 ]; then
	callgrind_control -z "$VG" >/dev/null 2>&1
	sleep 5
	callgrind_control -d "$VG" >/dev/null 2>&1
	f=$(ls -t "$OUT"/cg.out.* | head -1)
	awk '/^totals:/ {printf "== idle: %.0f instructions a second\n", $2 / 5}' "$f"
fi

echo
echo "== instructions per request (median over $ROUNDS rounds); added and ratio against the baseline with the same body"
if [ "${CACHE:-}" = 1 ]; then echo "   (CACHE=1: L1 instruction and data misses per request, medians, and what they add)"; fi
awk -v rounds="$ROUNDS" '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
{
	n = ++c[$2]; cols = NF - 2
	for (f = 1; f <= cols; f++) v[$2, f, n] = $(f + 2)
	if (!($2 in seen)) { seen[$2] = 1; order[++ns] = $2 }
}
END {
	for (k = 1; k <= ns; k++) {
		s = order[k]
		for (f = 1; f <= cols; f++) { for (i = 1; i <= c[s]; i++) A[i] = v[s, f, i]; med[s, f] = median(A, c[s]) }
	}
	printf "   %-22s %12s %10s %8s", "scenario", "instr/req", "added", "ratio"
	if (cols == 3) printf " %9s %7s %9s %7s", "I1 miss", "added", "D1 miss", "added"
	printf "\n"
	for (k = 1; k <= ns; k++) {
		s = order[k]; base = "baseline"
		if (s ~ /^keygate-/ && ("baseline-" substr(s, 9)) in seen) base = "baseline-" substr(s, 9)
		if (s ~ /^baseline-/) base = s
		printf "   %-22s %12d %+10d %8.3f", s, med[s, 1], med[s, 1] - med[base, 1], med[base, 1] / med[s, 1]
		if (cols == 3) printf " %9d %+7d %9d %+7d", med[s, 2], med[s, 2] - med[base, 2], med[s, 3], med[s, 3] - med[base, 3]
		printf "\n"
	}
}' "$OUT/results.txt" | tee "$OUT/summary.txt"
