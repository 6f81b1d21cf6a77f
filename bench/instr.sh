#!/usr/bin/env bash
# Instructions per operation of Go benchmarks, counted by valgrind's callgrind:
# a figure other processes on the machine cannot move, for A/B comparisons on
# a shared or noisy machine (wall-clock ns/op can vary 1.5x between minutes).
#
#   bench/instr.sh PKG BENCH...           # e.g. bench/instr.sh . 'HotPath$' 'HotPathServer/keygate$'
#   N=20000 bench/instr.sh ./mailapi InspectSendGrid20KB
#   BIN=/tmp/old.test bench/instr.sh . 'HotPath$'   # an already built test binary (A/B of two commits)
#   ONLY='*keygate.(*Handler).ServeHTTP' bench/instr.sh . 'HotPath$'   # count inside that function only
#
# Each BENCH is a -test.bench pattern that must select one benchmark. It runs
# under callgrind twice, with N and 2N iterations (-test.benchtime Nx); the
# difference divided by N is the cost of one iteration, without the process
# start-up, the benchmark's set-up and b.N=1's warm-up run. Allocation and GC
# work count (they are part of the cost); GC timing varies a little between
# runs, so take N large enough (default 20000) that it averages out.
#
# Benchmarks that prepare requests with the timer stopped (BenchmarkHotPath,
# BenchmarkHotPathServer) would have the preparation counted too: set ONLY to
# the function measured (callgrind's --toggle-collect pattern) to count what
# runs inside it, on its own goroutine, and nothing else. GC work done by
# background workers is then left out; the allocs/op column shows the
# allocations that cause it.
#
# GOMAXPROCS defaults to 1: with more, idle threads of the Go scheduler spin
# looking for work whenever a goroutine parks, which valgrind counts, and the
# counts of two runs of one benchmark then differ by half.
#
# KEYGATE_BENCH_QUIET=1 makes keygate's benchmarks lengthen the background
# change-log poll and usage flush, whose work would otherwise land on every
# operation under valgrind's slowdown.
#
# Caveats: valgrind reports its own CPU model, so the Go runtime and crypto
# take their generic code paths (SHA-256 without SHA-NI: more instructions than
# on the real CPU); compare instruction counts with instruction counts only.
# Valgrind 3.19 cannot run Go's async preemption signals or RDTSCP, hence the
# GODEBUG below. One run takes about 50x the benchmark's own time.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instr: valgrind not found (apt-get install -y valgrind)" >&2; exit 1; }
[ $# -ge 2 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
PKG=$1; shift
N=${N:-20000}
BIN=${BIN:-}
if [ -z "$BIN" ]; then
	BIN=$(mktemp /tmp/instr-XXXXXX.test)
	trap 'rm -f "$BIN" "$BIN".cg.*' EXIT
	go test -c -o "$BIN" "$PKG"
fi

# count ITERATIONS PATTERN: total instructions of one run.
count() {
	local out=$BIN.cg.$1
	KEYGATE_BENCH_QUIET=1 GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off GOMAXPROCS=${GOMAXPROCS:-1} \
		valgrind --tool=callgrind --callgrind-out-file="$out" ${ONLY:+"--toggle-collect=$ONLY"} \
		"$BIN" -test.run '^$' -test.bench "$2" -test.benchtime "$1x" -test.short -test.benchmem \
		>"$out.stdout" 2>"$out.stderr" || { cat "$out.stderr" "$out.stdout" >&2; exit 1; }
	grep -q '^Benchmark' "$out.stdout" || { echo "instr: $2 selected no benchmark" >&2; exit 1; }
	sed -n 's/.*Collected : //p' "$out.stderr"
}

printf '%-40s %14s   (callgrind, %d vs %d iterations)\n' benchmark "instr/op" "$N" $((2 * N))
for pattern in "$@"; do
	# Every top-level benchmark the pattern's first part selects runs, and
	# is counted: one without sub-benchmarks runs all its iterations while
	# the runner looks for them. Anchor it: '^BenchmarkInspect$/^mailgun-2k$'.
	top=$("$BIN" -test.list "${pattern%%/*}" | grep '^Benchmark' || true)
	if [ "$(printf '%s\n' "$top" | grep -c .)" -gt 1 ]; then
		echo "instr: $pattern runs more than one benchmark; anchor its first part:" >&2
		printf '  %s\n' $top >&2
		exit 1
	fi
	a=$(count "$N" "$pattern")
	b=$(count $((2 * N)) "$pattern")
	name=$(grep '^Benchmark' "$BIN.cg.$((2 * N)).stdout" | head -1 | awk '{print $1}')
	allocs=$(grep '^Benchmark' "$BIN.cg.$((2 * N)).stdout" | head -1 | grep -o '[0-9]* allocs/op' || true)
	printf '%-40s %14.0f   %s\n' "$name" "$(echo "($b - $a) / $N" | bc -l)" "$allocs"
done
