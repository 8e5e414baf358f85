#!/bin/bash
# The entry point of securetext/e2e-postgres:15 (hack/kind/image.sh e2e), /usr/local/bin/e2e-postgres
# in the image: Debian's PostgreSQL 15 run as the postgres user (uid 999) in the foreground, with
# a database set up on the first start, like the official postgres image's entry point:
#
#   POSTGRES_PASSWORD   required: the password of the superuser postgres and of POSTGRES_USER
#   POSTGRES_USER       a role to create (LOGIN, that password); optional
#   POSTGRES_DB         a database to create, owned by POSTGRES_USER (or postgres); optional
#   PGDATA              the data directory, /var/lib/postgresql/data by default
#
# An empty PGDATA is initialised (initdb; TCP connections from anywhere with scram-sha-256,
# local ones trusted) and the role and database are created through a server that listens only
# on a private socket. Then postgres runs in the foreground with its socket in /tmp, so that
# only /tmp and PGDATA need to be writable. Arguments are passed on to postgres (-c name=value).
#
# PostgreSQL refuses a data directory that its user does not own, and a Kubernetes emptyDir is
# owned by root: when PGDATA is such a directory, the data go into PGDATA/pgdata instead.
set -euo pipefail

export PGDATA=${PGDATA:-/var/lib/postgresql/data}

say() {
	echo "e2e-postgres: $*" >&2
}

fail() {
	say "$*"
	exit 1
}

[[ $(id -u) -ne 0 ]] || fail "run as the postgres user (uid $(id -u postgres)), not root"
if [[ -d $PGDATA && $(stat -c %u "$PGDATA") -ne $(id -u) ]]; then
	say "$PGDATA is owned by uid $(stat -c %u "$PGDATA"), not $(id -u): using $PGDATA/pgdata"
	PGDATA=$PGDATA/pgdata
fi
mkdir -p "$PGDATA"
chmod 0700 "$PGDATA"

# init creates the cluster, then the role and the database through a server on a private socket.
init() {
	[[ -n ${POSTGRES_PASSWORD:-} ]] || fail "POSTGRES_PASSWORD is empty: set it (no one could log in over TCP without it)"
	local tmp
	tmp=$(mktemp -d /tmp/e2e-postgres.XXXXXX)
	# The password reaches initdb through a file and psql through its environment, never a command line.
	printf '%s\n' "$POSTGRES_PASSWORD" >"$tmp/pwfile"
	say "initialising $PGDATA"
	initdb -D "$PGDATA" -U postgres --pwfile="$tmp/pwfile" --auth-local=trust --auth-host=scram-sha-256 \
		--encoding=UTF8 --locale=C.UTF-8 >/dev/null
	rm -f "$tmp/pwfile"
	echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
	printf '%s\n' "host all all 0.0.0.0/0 scram-sha-256" "host all all ::/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"

	local user=${POSTGRES_USER:-postgres} db=${POSTGRES_DB:-}
	if [[ $user != postgres || (-n $db && $db != postgres) ]]; then
		pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k $tmp" -l "$tmp/log" -w start >/dev/null ||
			{ cat "$tmp/log" >&2; fail "the server for the first setup did not start"; }
		# psql quotes the names (:"user") and the password (:'password') itself.
		local sql=('\getenv password POSTGRES_PASSWORD')
		[[ $user == postgres ]] || sql+=('CREATE ROLE :"user" LOGIN PASSWORD :'\''password'\'';')
		[[ -z $db || $db == postgres ]] || sql+=('CREATE DATABASE :"db" OWNER :"user";')
		printf '%s\n' "${sql[@]}" | psql -h "$tmp" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 \
			-v user="$user" -v db="$db" ||
			fail "creating role $user and database ${db:-(none)} failed"
		pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
		say "created role $user${db:+ and database $db}"
	fi
	rm -rf "$tmp"
}

[[ -s $PGDATA/PG_VERSION ]] || init
exec postgres -D "$PGDATA" -k /tmp "$@"
