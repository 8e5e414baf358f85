#!/usr/bin/env bash
# A Docker engine for `make images`: Debian's docker.io, its dockerd started in the background
# when no engine answers. Nothing is pulled: the images are FROM scratch.
#
#   hack/docker.sh ensure   do nothing if `docker info` answers; else install docker.io if
#                           dockerd is missing, start dockerd as root and wait until it answers
#
# dockerd runs until the machine stops or someone kills the process in its pidfile. Only plain
# containers are needed: `docker run --privileged` fails on these machines (the capability
# bounding set lacks CAP_SYS_RESOURCE), which building and running the images never asks for.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# START_TIMEOUT is how long dockerd may take to answer after it starts, in seconds.
START_TIMEOUT=60

log=${TMPDIR:-/tmp}/securetext-dockerd.log
pidfile=/var/run/docker.pid

fail() {
	echo "docker.sh: no Docker engine and cannot start one: $*" >&2
	exit 1
}

answers() {
	docker info >/dev/null 2>&1
}

# install_docker installs Debian's docker.io (dockerd, containerd, runc and the docker client).
# Debian's maintainer scripts start no service where policy-rc.d forbids it or no init runs;
# start does that below.
install_docker() {
	apt_install docker.io || fail "apt-get install docker.io failed"
	command -v dockerd >/dev/null || fail "installed docker.io but found no dockerd on PATH"
	command -v docker >/dev/null || fail "installed docker.io but found no docker client on PATH"
}

# start runs dockerd in its own session, so that it outlives the make or CI step that started
# it, and waits until the client gets an answer.
start() {
	if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		# A dockerd that is starting (another make) or stuck: wait for it rather than start a
		# second one on the same data root.
		echo "docker.sh: waiting for dockerd (pid $(cat "$pidfile")) started earlier; its log: $log" >&2
	else
		: >"$log"
		setsid -f dockerd --pidfile="$pidfile" </dev/null >>"$log" 2>&1
	fi
	local waited=0
	until answers; do
		if ((waited >= START_TIMEOUT)); then
			tail -n 20 "$log" >&2
			fail "dockerd did not answer within ${START_TIMEOUT}s; its log: $log"
		fi
		# dockerd writes its pidfile early; once it has and the process is gone, it failed.
		if ((waited >= 5)) && ! { [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
			tail -n 20 "$log" >&2
			fail "dockerd exited; its log: $log"
		fi
		sleep 1
		waited=$((waited + 1))
	done
	echo "docker.sh: started dockerd $(docker version -f '{{.Server.Version}}' 2>/dev/null) (pid $(cat "$pidfile"), log $log)" >&2
}

ensure() {
	if answers; then
		return 0
	fi
	if [[ -n ${DOCKER_HOST:-} ]]; then
		fail "DOCKER_HOST=$DOCKER_HOST does not answer (docker info); unset it to use a local engine"
	fi
	if [[ $(id -u) -ne 0 ]]; then
		fail "docker info does not answer and starting dockerd needs root: sudo hack/docker.sh ensure"
	fi
	if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
		install_docker
	fi
	start
}

case "${1:-}" in
ensure) ensure ;;
*)
	echo "usage: $0 ensure" >&2
	exit 2
	;;
esac
