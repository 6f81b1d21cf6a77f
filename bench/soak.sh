#!/usr/bin/env bash
# Soak: the real gateway for a long while under what production does at once
# (bench/soak/main.go says what), one row of process figures a minute, then
# `caddy stop`, a start, and a check that keys and counts persisted.
# Not part of the test suite; it loads the machine moderately (RPS sends a second).
#
#   bench/soak.sh                          # 25 minutes on the embedded SQLite store
#   STORE=postgres DUR=10m bench/soak.sh   # a node on PostgreSQL + Redis (throwaway servers)
#   PORTS=31300 DUR=2m KEYS=300 bench/soak.sh   # a smoke run
#
# PORTS is the first of 20 loopback ports it uses (admin, site, console,
# upstream, PostgreSQL, Redis). Output: bench/out/soak-$STORE/ (soak.csv,
# caddy.log, soak.log). The rows column is usage/usage_ips/events rows and
# the most client IPs one key's hour holds.
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/sites.sh
ROOT=$PWD
STORE=${STORE:-sqlite}
DUR=${DUR:-25m}
KEYS=${KEYS:-3000}
RPS=${RPS:-100}
P=${PORTS:-31300}
OUT=$ROOT/bench/out/soak-$STORE
ADMIN=127.0.0.1:$P
rm -rf "$OUT" && mkdir -p "$OUT"
# Caddy's autosave.json and data directory under $OUT, not the user's.
export XDG_CONFIG_HOME=$OUT/config XDG_DATA_HOME=$OUT/data

go build -o "$OUT/caddy" ./cmd/caddy
go build -o "$OUT/upstream" ./bench/upstream
go build -o "$OUT/soak" ./bench/soak
go run ./bench/keys -n 5000 >"$OUT/unknown.txt"

PIDS=()
cleanup() {
	"$OUT/caddy" stop --address "$ADMIN" >/dev/null 2>&1 || true
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	stop_postgres
	[ -n "${REDIS_PID:-}" ] && kill "$REDIS_PID" 2>/dev/null || true
}
trap cleanup EXIT

"$OUT/upstream" -addr "127.0.0.1:$((P + 10))" &
PIDS+=($!)

if [ "$STORE" = postgres ]; then
	start_postgres $((P + 11)) keygate
	URI="postgres://postgres@127.0.0.1:$((P + 11))/keygate?sslmode=disable"
	redis-server --port $((P + 12)) --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$OUT/redis.log" 2>&1 &
	REDIS_PID=$!
	RATELIMIT="ratelimit redis redis://127.0.0.1:$((P + 12))/0"
	ROWS="psql -qtA -h 127.0.0.1 -p $((P + 11)) -U postgres keygate -c 'select (select count(*) from usage), (select count(*) from usage_ips), (select count(*) from events), (select max(c) from (select count(*) as c from usage_ips group by key_id, hour) as h)' | tr '|' ' '"
	DB=""
else
	URI="sqlite:$OUT/keys.db"
	RATELIMIT=""
	ROWS="sqlite3 -readonly $OUT/keys.db 'select (select count(*) from usage), (select count(*) from usage_ips), (select count(*) from events), (select max(c) from (select count(*) as c from usage_ips group by key_id, hour) as h)' | tr '|' ' '"
	DB=$OUT/keys.db
fi

HASH=$("$OUT/caddy" hash-password --plaintext soak --algorithm bcrypt --bcrypt-cost 10)
cat >"$OUT/Caddyfile" <<EOF
{
	admin $ADMIN
	servers {
		trusted_proxies static 127.0.0.0/8
	}
	log {
		output file $OUT/caddy.log {
			roll_disabled
		}
	}
}
http://127.0.0.1:$((P + 1)) {
	keygate {
		store $URI
		mail_api sendgrid
		scope mail.send POST /v3/mail/send
		rate 600/m
		quota 1000000/d
		failed_auth_limit 20/m
		cache_ttl 30s
		metrics per_key
		$RATELIMIT
	}
	reverse_proxy 127.0.0.1:$((P + 10))
}
http://127.0.0.1:$((P + 2)) {
	redir /console /console/
	handle_path /console/* {
		basic_auth {
			ann $HASH
		}
		keygate_console {
			store $URI
			admin ann
		}
	}
}
EOF

start_caddy() {
	"$OUT/caddy" start --config "$OUT/Caddyfile" --pidfile "$OUT/caddy.pid" >>"$OUT/start.log" 2>&1
	wait_admin "$ADMIN" "$OUT/caddy.log" 50 0.2
}
start_caddy
PID=$(cat "$OUT/caddy.pid")

"$OUT/soak" -gw "http://127.0.0.1:$((P + 1))" -admin "$ADMIN" -console "http://127.0.0.1:$((P + 2))/console/" \
	-caddy "$OUT/caddy" -caddyfile "$OUT/Caddyfile" -store "$URI" -pid "$PID" -log "$OUT/caddy.log" \
	-rows "$ROWS" -db "$DB" -unknown "$OUT/unknown.txt" -dur "$DUR" -keys "$KEYS" -rps "$RPS" \
	-out "$OUT/soak.csv" -state "$OUT/state.json" 2>&1 | tee "$OUT/soak.log"

echo "== caddy stop, start, verify"
"$OUT/caddy" stop --address "$ADMIN"
while kill -0 "$PID" 2>/dev/null; do sleep 0.2; done
start_caddy
"$OUT/soak" -verify "$OUT/state.json" -gw "http://127.0.0.1:$((P + 1))" -admin "$ADMIN" 2>&1 | tee -a "$OUT/soak.log"
