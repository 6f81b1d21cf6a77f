#!/usr/bin/env bash
# Paired load benchmark: keygate and plain reverse_proxy measured at the same
# time, on the same core, with equal shares of it (issue 14).
#
#   bench/pair.sh                           # as root; about 4 minutes after the build (2 CPUs)
#   PAIRS=2 DUR=2 SCENARIOS="aa keygate" bench/pair.sh
#   BIN_B=/tmp/caddy-old bench/pair.sh      # two builds against each other: B runs that binary
#       # (e.g. git worktree add /tmp/old <ref> && go -C /tmp/old build -o /tmp/caddy-old ./cmd/caddy)
#
# bench/run.sh measures keygate and the baseline one after the other, so a
# ratio also measures how the machine changed between the two runs: on a
# shared VM the same baseline moves by 20 % and more between runs seconds
# apart, and Caddy's own `header` row ranges 0.78–1.29. Here two identical
# Caddy processes, A and B, run at once on CPU 0, each in a cgroup of its own
# with equal CPU weight, so each gets half the core whatever the machine
# does. One wrk loads a site of A while another loads a site of B, both
# closed loops of 16 connections: each process's request rate is then its
# half of the core divided by what a request costs it, and the ratio of the
# two rates is the ratio of their costs, both measured in the same seconds.
# Each pair runs twice, the sites swapped between A and B, and each scenario
# in PAIRS rounds. The `aa` scenario loads the baseline on both: its spread
# is the measurement's own.
#
# Scenarios (each against the baseline site, the same body where there is one):
#   aa                   the baseline against itself (the control)
#   header               Caddy's header directive adding the two RateLimit
#                        headers keygate adds (no keygate: a larger response)
#   keygate              a valid key on a scope-checked route
#   keygate-<body>       a send of that body (internal/benchbody: sendgrid-2k,
#                        sendgrid-20k, sendgrid-200k, mailgun-2k, mailgun-20k,
#                        mailgun-200k, postmark-batch50) through its mail_api
# With CLUSTER=1, A and B are also two nodes of one cluster: a throwaway
# PostgreSQL and Redis on loopback (on the other CPUs), and
#   cluster              a valid key on `store postgres://…` with
#                        `ratelimit redis` (leased tokens, the default)
#   cluster-quota-<body> a send on such a site by a key with a recipient
#                        quota (leased blocks)
#
# With UPSTREAM_TLS=1 every site, baseline and keygate alike, proxies to
# the upstream over HTTPS (TLS 1.3, a certificate the upstream makes and
# Caddy trusts with tls_trust_pool; HTTP/2, which Caddy takes when offered,
# or HTTP/1.1 with UPSTREAM_TLS=h1), as it would to a real provider: what
# keygate costs a real send, where the proxy also encrypts every body.
#
# With BIN_B, process B runs that binary and A this tree's build, and each
# scenario loads the same site (the scenario's keygate side) of both: the
# ratio is B's rate over A's, so above 1 means BIN_B is faster. `aa` then
# compares the two builds' plain reverse_proxy (Caddy's own code: expect 1).
#
# Printed per scenario: the median, lowest and highest ratio of request
# rates (keygate's over the baseline's), and each side's CPU time per
# request from /proc/<pid>/task/*/schedstat (medians), whose difference is
# what keygate adds to a request under load, in µs.
#
# Needs: go, wrk, curl, taskset, at least 2 CPUs, and a writable cgroup
# with the cpu controller (cgroup v1's /sys/fs/cgroup/cpu, or v2's
# /sys/fs/cgroup with cpu available; CGROUP_ROOT=<dir> if they are mounted
# elsewhere): as root on most machines. CLUSTER=1 also
# needs redis-server, redis-cli and PostgreSQL's server binaries.
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/sites.sh
OUT=$(pwd)/bench/out/pair
PAIRS=${PAIRS:-4}
DUR=${DUR:-3}
CLUSTER=${CLUSTER:-0}
DEFAULT_SCENARIOS="aa header keygate keygate-sendgrid-2k keygate-sendgrid-20k keygate-sendgrid-200k keygate-mailgun-2k keygate-postmark-batch50"
if [ "$CLUSTER" = 1 ]; then
	DEFAULT_SCENARIOS+=" cluster cluster-quota-sendgrid-2k"
fi
SCENARIOS=${SCENARIOS:-$DEFAULT_SCENARIOS}
BIN_B=${BIN_B:-}
PROVIDER_KEY=SG.benchBenchBenchBench00.benchBenchBenchBenchBenchBenchBenchBench000

for tool in go wrk curl taskset; do
	command -v $tool >/dev/null || { echo "pair: $tool not found" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "pair: needs at least 2 CPUs" >&2; exit 1; }
[ -z "$BIN_B" ] || [ -x "$BIN_B" ] || { echo "pair: BIN_B=$BIN_B is not an executable" >&2; exit 1; }
if [ "$CLUSTER" = 1 ]; then
	for tool in redis-server redis-cli "$PGBIN/initdb"; do
		command -v "$tool" >/dev/null || { echo "pair: CLUSTER=1 needs $tool (apt-get install -y redis-server postgresql)" >&2; exit 1; }
	done
fi

CG=
cleanup() {
	stop_started
	[ -z "$CG" ] || rmdir "$CG/a" "$CG/b" "$CG" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two cgroups of equal CPU weight (cpu.shares 1024 in v1, cpu.weight 100 in
# v2: the defaults). CGROUP_ROOT is where the cgroup file systems are
# mounted.
CGROUP_ROOT=${CGROUP_ROOT:-/sys/fs/cgroup}
if [ -w "$CGROUP_ROOT/cpu/cgroup.procs" ] && [ -e "$CGROUP_ROOT/cpu/cpu.shares" ]; then
	CG=$CGROUP_ROOT/cpu/keygate-pair # v1
	mkdir -p "$CG/a" "$CG/b"
elif grep -qw cpu "$CGROUP_ROOT/cgroup.controllers" 2>/dev/null && [ -w "$CGROUP_ROOT/cgroup.subtree_control" ]; then
	CG=$CGROUP_ROOT/keygate-pair # v2: the controller is enabled for each level's children
	echo +cpu >"$CGROUP_ROOT/cgroup.subtree_control"
	mkdir -p "$CG/a" "$CG/b"
	echo +cpu >"$CG/cgroup.subtree_control"
	[ -e "$CG/a/cpu.weight" ] || { echo "pair: the cpu controller did not reach $CG/a" >&2; exit 1; }
else
	echo "pair: no writable cgroup with the cpu controller under $CGROUP_ROOT (run as root)" >&2
	exit 1
fi

rm -rf "$OUT"
mkdir -p "$OUT"
echo "== build"
build_bench
echo "== machine: $(nproc) CPUs, $(go env GOVERSION), $(uname -r), load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# This script, wrk and the upstream keep off CPU 0.
taskset -pc "1-$(($(nproc) - 1))" $$ >/dev/null
start_upstream 18300

export KEYGATE_STORE="sqlite:$OUT/keys.db"
KEY=$("$OUT/caddy" keys issue --name bench-pair --scope mail.send --json | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p' | head -1)
[ -n "$KEY" ] || { echo "pair: could not issue a key" >&2; exit 1; }

if [ "$CLUSTER" = 1 ]; then
	echo "== cluster: PostgreSQL on 127.0.0.1:18341, Redis on 127.0.0.1:18340"
	start_postgres 18341 keygate
	redis-server --port 18340 --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" >"$OUT/redis.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 50); do redis-cli -p 18340 ping >/dev/null 2>&1 && break; sleep 0.1; done
	PG_URI="postgres://postgres@127.0.0.1:18341/keygate?sslmode=disable"
	issue() { "$OUT/caddy" keys issue --store "$PG_URI" --scope mail.send --json "$@" | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p' | head -1; }
	CKEY=$(issue --name bench-pair-cluster)
	CQKEY=$(issue --name bench-pair-quota --quota 1000000000/d) # a quota no run reaches: every send counts
	[ -n "$CKEY" ] && [ -n "$CQKEY" ] || { echo "pair: could not issue the cluster keys" >&2; exit 1; }
fi

# Site offsets from a process's base port: the same sites in A and B.
O_BASE=1 O_HDR=2 O_KG=3 O_SG=4 O_MG=5 O_PM=6 O_CL=7 O_CLS=8
caddyfile() { # NAME BASE_PORT ADMIN_PORT
	local p=$2
	cat <<EOF
{
	admin 127.0.0.1:$3
	storage file_system $OUT/data-$1
	auto_https off
	persist_config off
	log {
		output file $OUT/caddy-$1.log
	}
}
http://127.0.0.1:$((p + O_BASE)) {
	$(proxy_to "$UP")
}
http://127.0.0.1:$((p + O_HDR)) {
	header RateLimit "\"default\";r=999999;t=1"
	header RateLimit-Policy "\"default\";q=1000000;w=1"
	$(proxy_to "$UP")
}
$(keygate_site $((p + O_KG)) "$UP" "store $KEYGATE_STORE" "scope mail.send POST /v3/mail/send" "rate 1000000/s")
$(keygate_site $((p + O_SG)) "$UP" "store $KEYGATE_STORE" "mail_api sendgrid" "scope mail.send POST /v3/mail/send" "rate 1000000/s")
$(keygate_site $((p + O_MG)) "$UP" "store $KEYGATE_STORE" "mail_api mailgun" "scope mail.send POST /v3/*/messages" "rate 1000000/s")
$(keygate_site $((p + O_PM)) "$UP" "store $KEYGATE_STORE" "mail_api postmark" "scope mail.send POST /email*" "rate 1000000/s")
EOF
	[ "$CLUSTER" = 1 ] || return 0
	local redis="ratelimit redis redis://127.0.0.1:18340/0"
	keygate_site $((p + O_CL)) "$UP" "store $PG_URI" "$redis" "scope mail.send POST /v3/mail/send" "rate 1000000/s"
	keygate_site $((p + O_CLS)) "$UP" "store $PG_URI" "$redis" "mail_api sendgrid" "scope mail.send POST /v3/mail/send" "rate 1000000/s"
}
declare -A BASE=([a]=18310 [b]=18320) PID=() BIN=([a]="$OUT/caddy" [b]="${BIN_B:-$OUT/caddy}")
for n in a b; do
	caddyfile $n ${BASE[$n]} $((BASE[$n] + 9)) >"$OUT/Caddyfile.$n"
	# Into the cgroup first, so that every thread Caddy starts is in it.
	sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$CG/$n" \
		taskset -c 0 "${BIN[$n]}" run --config "$OUT/Caddyfile.$n" --adapter caddyfile >"$OUT/caddy-$n.stderr" 2>&1 &
	PID[$n]=$!
	PIDS+=($!)
done
for n in a b; do wait_admin 127.0.0.1:$((BASE[$n] + 9)) "$OUT/caddy-$n.stderr" 100 0.1; done

# A scenario's two sides: "offset auth body" for the baseline and the other.
side() { # SCENARIO base|other
	local s=$1 b=""
	case $s in keygate-*) b=${s#keygate-} ;; cluster-quota-*) b=${s#cluster-quota-} ;; esac
	if [ "$2" = base ] || [ "$s" = aa ]; then
		echo "$O_BASE $PROVIDER_KEY $b"
		return
	fi
	case $s in
	header) echo "$O_HDR $PROVIDER_KEY" ;;
	keygate) echo "$O_KG $KEY" ;;
	keygate-sendgrid-*) echo "$O_SG $KEY $b" ;;
	keygate-mailgun-*) echo "$O_MG $KEY $b" ;;
	keygate-postmark-*) echo "$O_PM $KEY $b" ;;
	cluster | cluster-quota-sendgrid-*)
		[ "$CLUSTER" = 1 ] || { echo "pair: $s needs CLUSTER=1" >&2; return 1; }
		[ "$s" = cluster ] && echo "$O_CL $CKEY" || echo "$O_CLS $CQKEY $b"
		;;
	*) echo "pair: unknown scenario $s" >&2; return 1 ;;
	esac
}
for s in $SCENARIOS; do side "$s" other >/dev/null; done

cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'; }

# load PROCESS OFFSET AUTH BODY: one wrk run; prints "requests cpu_ns", or
# "0 0" when any answer was not 2xx or a connection failed (a refusal is
# fast: counted, it would pass for speed).
load() {
	local n=$1 path=/v3/mail/send ctype="" file="" c0 c1 result
	if [ -n "${4:-}" ]; then
		path=$(body_field "$4" 3) ctype=$(body_field "$4" 4) file=$(body_field "$4" 2)
		[ -n "$file" ] || { echo "pair: unknown body $4" >&2; return 1; }
	fi
	c0=$(cpu_ns "${PID[$n]}")
	result=$(BODY=$file CTYPE=$ctype wrk -t1 -c16 -d"${DUR}s" -H "Authorization: Bearer $3" -s bench/wrk.lua \
		"http://127.0.0.1:$((BASE[$n] + $2))$path" | awk '/^RESULT/ {print $6, $7 + $8}')
	c1=$(cpu_ns "${PID[$n]}")
	read -r reqs bad <<<"${result:-0 1}"
	if [ "$bad" != 0 ] || [ "$reqs" = 0 ]; then
		echo "pair: Caddy ${n^^} port $((BASE[$n] + $2)): $reqs requests, $bad not 2xx or failed" >&2
		echo "0 0"
		return
	fi
	echo "$reqs $((c1 - c0))"
}

# Sanity: every side answers 2xx.
for s in $SCENARIOS; do
	for which in base other; do
		read -r off auth body <<<"$(side "$s" $which)"
		args=(-H "Authorization: Bearer $auth")
		path=/v3/mail/send
		[ -n "${body:-}" ] && path=$(body_field "$body" 3) &&
			args+=(-H "Content-Type: $(body_field "$body" 4)" --data-binary @"$(body_field "$body" 2)")
		for n in a b; do
			code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "${args[@]}" "http://127.0.0.1:$((BASE[$n] + off))$path")
			case $code in 2??) ;; *) echo "pair: $s ($which) answered $code in Caddy ${n^^}" >&2; exit 1 ;; esac
		done
	done
done

echo "== $PAIRS rounds of 2 pairs x ${DUR}s per scenario; Caddy A and B on CPU 0, equal cgroup weights"
[ -z "$BIN_B" ] || echo "== B runs $BIN_B: each ratio is B's rate over A's on the same site (base: A, other: B)"
printf '%-26s %8s %13s %12s %12s %10s\n' scenario ratio "lowest–highest" "base µs/req" "other µs/req" "added µs"
for s in $SCENARIOS; do
	read -r bo ba bb <<<"$(side "$s" base)"
	read -r oo oa ob <<<"$(side "$s" other)"
	orders="ab ba"
	if [ -n "$BIN_B" ]; then
		bo=$oo ba=$oa bb=${ob:-} orders="ab ab"
	fi
	: >"$OUT/$s.txt"
	for ((r = 1; r <= PAIRS; r++)); do
		for order in $orders; do
			nb=${order:0:1} no=${order:1:1}
			load "$nb" "$bo" "$ba" "${bb:-}" >"$OUT/base.out" &
			w1=$!
			load "$no" "$oo" "$oa" "${ob:-}" >"$OUT/other.out" &
			wait $w1 $!
			read -r breq bns <"$OUT/base.out"
			read -r oreq ons <"$OUT/other.out"
			[ "$breq" != 0 ] && [ "$oreq" != 0 ] || exit 1
			echo "$breq $bns $oreq $ons" >>"$OUT/$s.txt"
		done
	done
	awk -v s="$s" '
		function median(a, n,   i, j, t) {
			for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
			return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
		}
		{ n++; r[n] = $3 / $1; b[n] = $2 / $1 / 1000; o[n] = $4 / $3 / 1000; if (n == 1 || r[n] < lo) lo = r[n]; if (n == 1 || r[n] > hi) hi = r[n] }
		END {
			mb = median(b, n); mo = median(o, n)
			printf "%-26s %8.3f   %.3f–%.3f %12.1f %12.1f %+10.1f\n", s, median(r, n), lo, hi, mb, mo, mo - mb
		}' "$OUT/$s.txt" | tee -a "$OUT/results.txt"
done
echo "== done in ${SECONDS}s; per-pair figures in $OUT/<scenario>.txt (requests and CPU ns, baseline then other)"
