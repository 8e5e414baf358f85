#!/usr/bin/env bash
# The operator and workloads images, built offline: the host's Go toolchain builds static
# binaries, and the Dockerfile copies them, a CA bundle and a non-root user into FROM scratch
# images. Nothing is pulled, so this works on a machine with no registry.
#
#   hack/images.sh build     stage bin/image-context/ and build securetext/operator and
#                            securetext/workloads with the local engine (hack/docker.sh ensure
#                            starts one), each tagged with the version and the chart's appVersion
#   hack/images.sh version   print that version: $VERSION, else `git describe --tags --always
#                            --dirty`, else the chart's appVersion (a tree with no git history)
#
# make stamps the same version into bin/ (make build) and runs `build` (make images).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The Dockerfile copies from this path of the build context (the repository root); the
# .dockerignore keeps everything else out of the context.
context=$root/bin/image-context
chart=$root/charts/securetext-operator/Chart.yaml
ca_bundle=/etc/ssl/certs/ca-certificates.crt
# uid and gid of the securetext user, the Dockerfile's USER; the operator's pods run as it too
# (runAsUser in controllers/render_workloads.go).
uid=65532

app_version() {
	local v
	v=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$chart")
	if [[ -z $v ]]; then
		echo "images.sh: no appVersion in $chart" >&2
		return 1
	fi
	echo "$v"
}

version() {
	if [[ -n ${VERSION:-} ]]; then
		echo "$VERSION"
		return
	fi
	git -C "$root" describe --tags --always --dirty 2>/dev/null || app_version
}

# ensure_ca_bundle installs Debian's ca-certificates when the host has no bundle to copy.
ensure_ca_bundle() {
	if [[ -s $ca_bundle ]]; then
		return 0
	fi
	apt_install ca-certificates
	[[ -s $ca_bundle ]] || { echo "images.sh: installed ca-certificates but $ca_bundle is empty" >&2; return 1; }
}

# stage fills bin/image-context/: the two binaries, and rootfs/, the files both images share.
stage() {
	local version=$1
	rm -rf "$context"
	mkdir -p "$context/rootfs/etc/ssl/certs" "$context/rootfs/tmp"
	chmod 1777 "$context/rootfs/tmp"
	cp "$ca_bundle" "$context/rootfs/etc/ssl/certs/ca-certificates.crt"
	cat >"$context/rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
securetext:x:$uid:$uid:securetext:/nonexistent:/sbin/nologin
EOF
	cat >"$context/rootfs/etc/group" <<EOF
root:x:0:
securetext:x:$uid:
EOF
	chmod 0644 "$context/rootfs/etc/passwd" "$context/rootfs/etc/group" "$context/rootfs/etc/ssl/certs/ca-certificates.crt"

	local ldflags="-s -w -X main.version=$version"
	(cd "$root" &&
		CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$context/securetext-operator" . &&
		CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$context/securetext" ./workloads/cmd/securetext)
}

# image builds one Dockerfile target. The legacy builder: it runs inside dockerd 20.10 without
# the buildx plugin, which newer docker clients need for BuildKit.
image() {
	local target=$1 repo=$2 version=$3 app=$4
	(cd "$root" && quietly "docker build --target $target" \
		env DOCKER_BUILDKIT=0 docker build --target "$target" --build-arg "VERSION=$version" \
		-t "$repo:$version" -t "$repo:$app" .)
}

# size prints an image's size in MB, as `docker images` counts them (10^6 bytes).
size() {
	docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }'
}

build() {
	local version app
	version=$(version)
	app=$(app_version)
	ensure_ca_bundle
	echo "images.sh: building static binaries ($version) into $context" >&2
	stage "$version"
	echo "images.sh: building securetext/operator and securetext/workloads" >&2
	image operator securetext/operator "$version" "$app"
	image workloads securetext/workloads "$version" "$app"

	local repo tag
	printf '%-22s %-24s %s\n' IMAGE TAG SIZE
	for repo in securetext/operator securetext/workloads; do
		for tag in $(printf '%s\n' "$version" "$app" | awk '!seen[$0]++'); do
			printf '%-22s %-24s %s\n' "$repo" "$tag" "$(size "$repo:$tag")"
		done
	done
}

case "${1:-}" in
build) build ;;
version) version ;;
*)
	echo "usage: $0 build|version" >&2
	exit 2
	;;
esac
