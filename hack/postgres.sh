#!/usr/bin/env bash
# PostgreSQL server binaries for the tests (hack/testenv starts throwaway servers from them).
#
#   hack/postgres.sh ensure   install Debian's postgresql package if no server is installed
#   hack/postgres.sh bindir   print the newest /usr/lib/postgresql/<version>/bin
#
# We only need initdb and postgres: the tests run their own clusters on loopback ports with
# temporary data directories, so the package's own "main" cluster is never created or started.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# bindir prints the bin directory of the newest installed server, or fails.
bindir() {
	local dir
	dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
	if [[ -z $dir || ! -x $dir/initdb || ! -x $dir/postgres ]]; then
		return 1
	fi
	echo "$dir"
}

version() {
	"$1/postgres" --version
}

ensure() {
	if [[ -n ${SECURETEXT_TEST_POSTGRES_URL:-} ]]; then
		echo "postgres.sh: tests use the server at SECURETEXT_TEST_POSTGRES_URL; nothing to install" >&2
		return 0
	fi
	local dir
	if dir=$(bindir); then
		echo "postgres.sh: using $(version "$dir") in $dir" >&2
		return 0
	fi
	if [[ $(id -u) -ne 0 ]]; then
		echo "postgres.sh: PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin." >&2
		echo "postgres.sh: install Debian's postgresql package: sudo apt-get install postgresql" >&2
		return 1
	fi

	# Tell postgresql-common not to create (and so not to start) the package's "main" cluster.
	# The file is managed by ucf; UCF_FORCE_CONFFOLD below keeps ours when the package
	# installs its default. An existing file is left alone.
	if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
		mkdir -p /etc/postgresql-common
		echo "create_main_cluster = off" >/etc/postgresql-common/createcluster.conf
	fi
	UCF_FORCE_CONFFOLD=1 apt_install postgresql

	# Belt and braces: if a cluster was created anyway (createcluster.conf existed and said
	# otherwise), stop it and keep it from starting at boot. With systemd, postgresql.service
	# only starts the clusters whose start.conf says "auto".
	local ver name
	while read -r ver name _; do
		pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
		echo manual >"/etc/postgresql/$ver/$name/start.conf"
	done < <(pg_lsclusters --no-header 2>/dev/null || true)

	if ! dir=$(bindir); then
		echo "postgres.sh: installed the postgresql package but found no initdb under /usr/lib/postgresql/*/bin" >&2
		return 1
	fi
	echo "postgres.sh: installed $(version "$dir") in $dir" >&2
}

case "${1:-}" in
ensure) ensure ;;
bindir)
	if ! bindir; then
		echo "postgres.sh: PostgreSQL server binaries not found: run \`hack/postgres.sh ensure\`" >&2
		exit 1
	fi
	;;
*)
	echo "usage: $0 ensure|bindir" >&2
	exit 2
	;;
esac
