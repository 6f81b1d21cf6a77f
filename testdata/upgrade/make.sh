#!/bin/sh
# Makes the stores TestAnUpgradeKeepsEveryKeyCountAndEvent opens: keys, usage
# counts and audit events written by an older keygate, the one of COMMIT
# (default a38961f, 2026-11-23: schema version 1, the first release's).
#
#   testdata/upgrade/make.sh [COMMIT]    # as root, from anywhere; ~1 min
#
# It builds that commit's ./cmd/caddy, issues five keys on an SQLite store and
# on a throwaway PostgreSQL, changes them as operators do (revoke, rotate,
# disable), sends through that version's gateway, stops it, and writes here:
#   sqlite.db       the SQLite store (its write-ahead log checkpointed)
#   postgres.sql    pg_dump of the PostgreSQL store
#   keys.json       each key's id and value (throwaway test keys), per engine
# Needs Go, git, PostgreSQL's server binaries and the postgres user
# (apt-get install postgresql), curl and python3; ports 19056-19059.
set -eu
commit=${1:-a38961f}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/keygate-upgrade-XXXXXX)
chmod 755 "$work"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgport=19057
pg=""
trap 'if [ -n "$pg" ]; then runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null; fi; rm -rf "$work"' EXIT

mkdir "$work/src"
git -C "$here/../.." archive "$commit" | tar -x -C "$work/src"
(cd "$work/src" && go build -o "$work/caddy" ./cmd/caddy)
export XDG_DATA_HOME="$work/data" XDG_CONFIG_HOME="$work/config"

# PostgreSQL, as in internal/testservers: trust on loopback, no fsync.
mkdir "$work/pg" && chown postgres "$work/pg"
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
	-o "-p $pgport -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
pg=1
"$pgbin/createdb" -h 127.0.0.1 -p $pgport -U postgres keygate

keys() { "$work/caddy" keys "$@" --store "$store"; }
idkey() { python3 -c 'import json,sys; k=json.load(sys.stdin); print(k["id"], k["key"])'; }
send() { # KEY PATH [RECIPIENTS]
	if [ "${3:-0}" -gt 0 ]; then
		to=$(python3 -c "import json,sys; print(json.dumps([{'email': 'r%d@example.org' % i} for i in range(int(sys.argv[1]))]))" "$3")
		curl -s -o /dev/null -w '%{http_code} ' -X POST "http://127.0.0.1:19058$2" -H "Authorization: Bearer $1" \
			-H 'Content-Type: application/json' \
			-d "{\"personalizations\":[{\"to\":$to}],\"from\":{\"email\":\"crm@example.com\"},\"subject\":\"s\",\"content\":[{\"type\":\"text/plain\",\"value\":\"v\"}]}"
	else
		curl -s -o /dev/null -w '%{http_code} ' "http://127.0.0.1:19058$2" -H "Authorization: Bearer $1"
	fi
}

for engine in sqlite postgres; do
	if [ $engine = sqlite ]; then
		store="sqlite:$work/keys.db"
	else
		store="postgres://postgres@127.0.0.1:$pgport/keygate?sslmode=disable"
	fi
	set -- $(keys issue --json --name crm-sync --owner sales --scope mail.send --rate 100/m --quota 1000/d \
		--sender-domain example.com --max-recipients 50 --expires 2099-01-01T00:00:00Z | idkey)
	crm_id=$1 crm=$2
	set -- $(keys issue --json --name ops-tools --owner ops --env test --scope '*' --allow-ip 127.0.0.1/32 \
		--expires 2099-01-01T00:00:00Z | idkey)
	ops_id=$1 ops=$2
	set -- $(keys issue --json --name contractor --owner sales --scope mail.send | idkey)
	leaked_id=$1 leaked=$2
	set -- $(keys issue --json --name shop --owner shop --scope mail.send | idkey)
	old_id=$1 old=$2
	set -- $(keys issue --json --name analytics --owner data --scope templates.read | idkey)
	paused_id=$1 paused=$2

	cat >"$work/Caddyfile" <<EOF
{
	admin 127.0.0.1:19059
}
http://127.0.0.1:19058 {
	bind 127.0.0.1
	keygate {
		store $store
		scope mail.send POST /v3/mail/send
		scope templates.read GET /v3/templates*
		mail_api sendgrid
	}
	reverse_proxy 127.0.0.1:19056
}
http://127.0.0.1:19056 {
	bind 127.0.0.1
	respond "{}" 202
}
EOF
	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy-$engine.log" 2>&1 &
	until curl -s -o /dev/null http://127.0.0.1:19058/; do sleep 0.2; done

	send "$crm" /v3/mail/send 2; send "$crm" /v3/mail/send 2; send "$crm" /v3/mail/send 2
	send "$ops" /v3/templates
	send "$leaked" /v3/mail/send 1
	keys revoke "$leaked_id" --reason "pasted in a support ticket" --yes >/dev/null
	set -- $(keys rotate "$old_id" --grace 2s --json | idkey)
	new_id=$1 new=$2
	keys update "$paused_id" --disable >/dev/null
	sleep 1.5 # every gateway enforces a change within a second
	send "$leaked" /v3/mail/send 1
	send "$new" /v3/mail/send 1; send "$new" /v3/mail/send 1
	send "$paused" /v3/templates
	echo "($engine)"
	curl -s -X POST http://127.0.0.1:19059/stop
	wait

	printf '{"crm":["%s","%s"],"ops":["%s","%s"],"leaked":["%s","%s"],"old":["%s","%s"],"new":["%s","%s"],"paused":["%s","%s"]}' \
		"$crm_id" "$crm" "$ops_id" "$ops" "$leaked_id" "$leaked" "$old_id" "$old" "$new_id" "$new" "$paused_id" "$paused" \
		>"$work/keys-$engine.json"
done

store="sqlite:$work/keys.db"
keys list >/dev/null # opens and closes the store: its write-ahead log is checkpointed
[ ! -s "$work/keys.db-wal" ] || { echo "make.sh: the write-ahead log was not checkpointed" >&2; exit 1; }
cp "$work/keys.db" "$here/sqlite.db"
"$pgbin/pg_dump" -h 127.0.0.1 -p $pgport -U postgres --no-owner --no-privileges keygate >"$here/postgres.sql"
python3 -c 'import json,sys; print(json.dumps({e: json.load(open(sys.argv[1] + "/keys-" + e + ".json")) for e in ("sqlite", "postgres")}, indent="\t"))' \
	"$work" >"$here/keys.json"
echo "made from $commit: $(ls "$here" | tr '\n' ' ')"
