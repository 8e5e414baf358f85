# Shell helpers that the hack/ scripts source: `. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.
# Messages are prefixed with the sourcing script's name, e.g. "docker.sh: …".

prog=$(basename "$0")

# kind_cache is where hack/kind/image.sh keeps what it builds for kind clusters (binaries, stamps,
# Debian packages). It belongs to the machine, like the images in the engine that the stamps
# describe, so that every clone on the machine reuses one build: $SECURETEXT_KIND_CACHE, else
# $XDG_CACHE_HOME/securetext/kind, else ~/.cache/securetext/kind (Go's os.UserCacheDir).
kind_cache=${SECURETEXT_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/securetext/kind}

# quietly runs a command with its output kept in a file, shown only if the command fails: apt,
# the maintainer scripts and npm are chatty.
#
#   quietly "what it does" command args…
quietly() {
	local what=$1 log
	shift
	log=$(mktemp)
	if ! "$@" >"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		echo "$prog: $what failed" >&2
		return 1
	fi
	rm -f "$log"
}

# apt_install installs Debian packages without their recommends, running apt-get update first
# only when the package lists do not know the first package yet (fresh images ship with empty
# lists). Without root it says what to run instead and fails. Variables for the maintainer
# scripts (e.g. UCF_FORCE_CONFFOLD=1) pass through the environment.
apt_install() {
	if [[ $(id -u) -ne 0 ]]; then
		echo "$prog: missing Debian packages: $*" >&2
		echo "$prog: install them: sudo apt-get install --no-install-recommends $*" >&2
		return 1
	fi
	quietly "apt-get install $*" _apt_get "$@"
}

# _apt_get is apt_install's work, run under quietly. errexit does not apply inside quietly's
# `if !`, so each step returns its own failure. It holds a lock of the project's own: CI builds
# the kind images in the background while other steps install what they need, and apt-get fails
# at once, rather than waits, when another apt-get holds dpkg's lock.
_apt_get() {
	local lock status=0
	exec {lock}>/var/lib/dpkg/securetext-apt.lock
	flock "$lock"
	_apt_get_locked "$@" || status=$?
	exec {lock}>&-
	return "$status"
}

_apt_get_locked() {
	if ! apt-cache show "$1" >/dev/null 2>&1; then
		apt-get update || return
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}
