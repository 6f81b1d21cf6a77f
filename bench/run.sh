#!/usr/bin/env bash
# Load benchmark: keygate against plain reverse_proxy, on loopback (issue 7).
#
#   bench/run.sh                  # under 5 minutes after the build
#   ROUNDS=1 DURATION=3 bench/run.sh
#   KEYGATE_LOG=off bench/run.sh  # drop keygate's per-request INFO log line
#   PROFILE=1 bench/run.sh        # also CPU and allocation profiles of Caddy during
#                                 # round 1's keygate run: bench/out/keygate-{cpu,allocs}.pprof
#
# Builds ./cmd/caddy, starts bench/upstream (answers 202 {}), writes
# bench/out/Caddyfile with one site per scenario, issues keys with
# `caddy keys issue`, then runs every scenario in interleaved rounds with wrk
# and prints a table (medians over rounds; ratios to the baseline of the same
# round). Floods also report keygate_store_queries_total from the admin
# endpoint's /metrics, before and after. Everything listens on 127.0.0.1 and
# every wrk run is bounded by -d. Needs: go, wrk (apt-get install -y wrk), curl.
set -euo pipefail

cd "$(dirname "$0")/.."
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

P_UP=18000 P_BASE=18001 P_KG=18002 P_SEND=18003 P_BASIC=18004 P_SHORT=18005 P_RESPOND=18009
ADMIN=127.0.0.1:18019

for tool in go wrk curl; do
	command -v $tool >/dev/null || { echo "bench: $tool not found (wrk: apt-get install -y wrk)" >&2; exit 1; }
done

mkdir -p "$OUT"
rm -rf "$OUT"/data "$OUT"/*.db* "$OUT"/*.keys "$OUT"/results.txt "$OUT"/caddy.log*

PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
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

echo "== machine: $(nproc) CPUs, $(go env GOVERSION), $(uname -r), load average: $(cut -d' ' -f1-3 /proc/loadavg)"

"$OUT/upstream" -addr 127.0.0.1:$P_UP &
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

# A ~2 KB SendGrid v3 send body.
BODY=$OUT/sendgrid.json
{
	printf '{"personalizations":[{"to":['
	for i in $(seq 1 10); do printf '{"email":"recipient%02d@example.org","name":"Recipient %02d"},' "$i" "$i"; done
	printf '{"email":"last@example.org"}],"subject":"Your order has shipped"}],'
	printf '"from":{"email":"orders@shop.example.com","name":"Shop"},"reply_to":{"email":"help@shop.example.com"},'
	printf '"subject":"Your order has shipped","content":[{"type":"text/plain","value":"'
	for i in $(seq 1 18); do printf 'Line %02d of the message body, padded to make the payload realistic. ' "$i"; done
	printf '"}],"categories":["orders","shipping"],"custom_args":{"order":"A-1001"}}'
} >"$BODY"

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

# baseline: plain reverse_proxy
http://127.0.0.1:$P_BASE {
	reverse_proxy 127.0.0.1:$P_UP
}

# keygate, valid key; floods here measure verification (no 429 shortcut)
http://127.0.0.1:$P_KG {
	keygate {
		store $STORE
		scope mail.send POST /v3/mail/send
		rate 1000000/s
		failed_auth_limit 1000000000/s
	}
	reverse_proxy 127.0.0.1:$P_UP
}

# keygate on a send route with payload inspection
http://127.0.0.1:$P_SEND {
	keygate {
		store $STORE
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
		rate 1000000/s
	}
	reverse_proxy 127.0.0.1:$P_UP
}

# Caddy's built-in alternative
http://127.0.0.1:$P_BASIC {
	basic_auth {
		bench $BASIC_HASH
	}
	reverse_proxy 127.0.0.1:$P_UP
}

# keygate with the default failed_auth_limit (20/m): floods hit the 429 shortcut.
# Its own store, so its per-IP failure bucket is not shared with the site above.
http://127.0.0.1:$P_SHORT {
	keygate {
		store sqlite:$OUT/keys-shortcut.db
		scope mail.send POST /v3/mail/send
	}
	reverse_proxy 127.0.0.1:$P_UP
}

# Caddy's respond, measured only as an alternative upstream
http://127.0.0.1:$P_RESPOND {
	respond "{}" 202
}
EOF

"$OUT/caddy" run --config "$OUT/Caddyfile" --adapter caddyfile >"$OUT/caddy.stderr" 2>&1 &
PIDS+=($!)
for i in $(seq 1 100); do
	curl -fs "http://$ADMIN/config/" >/dev/null 2>&1 && break
	[ "$i" = 100 ] && { cat "$OUT/caddy.stderr" >&2; exit 1; }
	sleep 0.1
done

queries() {
	curl -fs "http://$ADMIN/metrics" | awk '/^keygate_store_queries_total/ {printf "%d", $2; found=1} END {if (!found) printf "-1"}'
}

# status PORT [curl args...]
status() {
	local port=$1; shift
	curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/v3/mail/send" "$@"
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
expect 202 keygate-sendgrid $P_SEND -H "Authorization: Bearer $VALID" -H 'Content-Type: application/json' --data-binary @"$BODY"
expect 400 keygate-sendgrid-bad $P_SEND -H "Authorization: Bearer $VALID" -H 'Content-Type: application/json' -d '{'
expect 202 basic_auth $P_BASIC -H "Authorization: $BASIC_AUTH"
expect 401 flood-garbage $P_KG -H "Authorization: Bearer $(head -1 "$OUT/garbage.keys")"
expect 401 flood-unknown $P_KG -H "Authorization: Bearer $(head -1 "$OUT/unknown1k.keys")"
expect 401 flood-revoked $P_KG -H "Authorization: Bearer $REVOKED"
[ "$(queries)" -ge 0 ] || { echo "bench: keygate_store_queries_total not on http://$ADMIN/metrics" >&2; exit 1; }
echo "   body $(wc -c <"$BODY") bytes; log: $KEYGATE_LOG"

# run LABEL PORT [VAR=value...] [-- wrk args]: one wrk run; appends a result
# line with the store queries it caused.
RESULTS=$OUT/results.txt
ROUND=0
run() {
	local label=$1 port=$2; shift 2
	local envs=() wrkargs=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
	[ "${1:-}" = -- ] && { shift; wrkargs=("$@"); }
	local q0 q1 line ppid=""
	q0=$(queries)
	if [ "${PROFILE:-}" = 1 ] && [ "$label" = keygate ] && [ "$ROUND" = 1 ]; then
		curl -fs "http://$ADMIN/debug/pprof/profile?seconds=$((DURATION - 1))" -o "$OUT/keygate-cpu.pprof" &
		ppid=$!
	fi
	line=$(env LABEL="$label" WRK_THREADS=$THREADS "${envs[@]}" \
		wrk -t$THREADS -c$CONNS -d${DURATION}s --timeout 2s -s bench/wrk.lua "${wrkargs[@]}" \
		"http://127.0.0.1:$port/v3/mail/send" | grep '^RESULT')
	q1=$(queries)
	if [ -n "$ppid" ]; then
		wait "$ppid"
		curl -fs "http://$ADMIN/debug/pprof/allocs" -o "$OUT/keygate-allocs.pprof"
	fi
	echo "$ROUND ${line#RESULT } $((q1 - q0))" | tee -a "$RESULTS" | awk '{printf "   r%s %-22s %9.0f req/s  p50 %6.0fµs  p99 %6.0fµs  n=%d non2xx=%d err=%d queries=%d\n", $1,$2,$3,$4,$5,$6,$7,$8,$9}'
}

echo "== upstream choice (direct, no proxy, ${DURATION}s each)"
ROUND=u
run upstream-go $P_UP
run upstream-respond $P_RESPOND

for r in $(seq 1 "$ROUNDS"); do
	ROUND=$r
	echo "== round $r/$ROUNDS"
	run baseline $P_BASE
	run keygate $P_KG -- -H "Authorization: Bearer $VALID"
	# The same two paced (each connection one request per VALID_DELAY_MS):
	# below saturation, so the latency added is keygate's, not queueing.
	run baseline-paced $P_BASE DELAY_MS=$VALID_DELAY_MS
	run keygate-paced $P_KG DELAY_MS=$VALID_DELAY_MS -- -H "Authorization: Bearer $VALID"
	run basic_auth $P_BASIC -- -H "Authorization: $BASIC_AUTH"
	run baseline-2k $P_BASE BODY="$BODY"
	run keygate-sendgrid-2k $P_SEND BODY="$BODY" -- -H "Authorization: Bearer $VALID"
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

echo
echo "== summary: medians over $ROUNDS rounds; ratio and added p99 against the baseline of the same round"
echo "   (baseline-2k is the baseline for keygate-sendgrid-2k, baseline-paced for keygate-paced; store queries are summed over rounds)"
awk -v rounds="$ROUNDS" '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
$1 ~ /^[0-9]+$/ { r = $1; s = $2; rps[r, s] = $3; p50[r, s] = $4; p99[r, s] = $5; n[s] += $6; bad[s] += $7 + $8; q[s] += $9
	if (!(s in seen)) { seen[s] = 1; order[++ns] = s } }
END {
	printf "   %-22s %10s %8s %8s %7s %10s %10s %9s %10s\n", "scenario", "req/s", "p50 ms", "p99 ms", "ratio", "+p99 ms", "requests", "non-2xx", "queries"
	for (k = 1; k <= ns; k++) {
		s = order[k]; base = (s ~ /-2k$/) ? "baseline-2k" : (s ~ /-paced$/) ? "baseline-paced" : "baseline"
		m = 0
		for (r = 1; r <= rounds; r++) if ((r, s) in rps) { m++; A[m] = rps[r, s]; B[m] = p50[r, s]; C[m] = p99[r, s]
			R[m] = rps[r, s] / rps[r, base]; D[m] = (p99[r, s] - p99[r, base]) / 1000 }
		printf "   %-22s %10.0f %8.3f %8.3f %7.3f %10.3f %10d %9d %10d\n", s, median(A, m), median(B, m) / 1000, median(C, m) / 1000, median(R, m), median(D, m), n[s], bad[s], q[s]
	}
}' "$RESULTS" | tee "$OUT/summary.txt"

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
echo "== load average at the end: $(cut -d" " -f1-3 /proc/loadavg) (other processes on this machine skew every figure)"
echo "== done; raw lines in $RESULTS and $CONC, Caddy log in $OUT/caddy.log"
