#!/usr/bin/env bash
# The kind node image for Kubernetes v1.37.2, built offline, and the kube-router image that gives
# kind clusters NetworkPolicy on these machines. `kind build node-image` cannot run here (it pulls
# pause, etcd, coredns, kindnetd and local-path images), so this replays it without downloads:
#
#   - every binary from its Go module (the module proxy is the only source reached): kind,
#     Kubernetes and etcd (hack/tools/kube, built as make kube-binaries builds them, so that the
#     two share the Go build cache), CoreDNS with kubeadm's plugins (hack/kind/tools/coredns),
#     crictl, kube-router; pause from its C source with gcc -static
#   - kind's base image from Debian packages (debootstrap) and the files of kind's
#     images/base/files, taken from the kind module
#   - one small image per control-plane component, each tagged as kubeadm expects, imported
#     into the node's containerd the way kind does it
#
# and, for the end-to-end tests on kind, the images they deploy and the Helm CLI they deploy with:
#
#   - securetext/e2e-vault:dev, the project's Vault dev server (hack/tools/vault), and
#     securetext/e2e-traefik:v3.7.13, Traefik from its module's source (patched: see
#     build_traefik): static binaries FROM scratch, run as uid 65532, with the host's CA bundle
#   - securetext/e2e-postgres:15, Debian's PostgreSQL 15 run as postgres (uid 999) by
#     hack/kind/postgres-entrypoint.sh, which initialises an empty PGDATA
#   - securetext/kind-probe:busybox, smoke.sh's client and server (Debian's busybox-static)
#   - the Helm CLI, helm.sh/helm/v4/cmd/helm, a tool of the project's go.mod
#
#   hack/kind/image.sh [build]   build what is missing or stale; print each step and its time
#   hack/kind/image.sh e2e       the same for the end-to-end images and helm (no node image needed)
#   hack/kind/image.sh probe     only securetext/kind-probe:busybox, for smoke.sh
#
# Everything built lives in the machine's kind cache, $SECURETEXT_KIND_CACHE or
# ~/.cache/securetext/kind (hack/lib.sh): binaries in bin/, the Debian packages in cache/, work
# files in work/ and one stamp per step in stamps/. It belongs to the machine, as the images in
# the engine do, so every clone on the machine uses one build; a lock lets one image.sh at a time
# build. Each stamp is a hash of the step's own code, the versions and input files it uses and
# the stamps of the steps it builds on. A step runs again only when that hash changes or its
# output (a file, or an image in the engine) is gone, so a second run takes seconds. When the
# engine already holds the official kindest/node image, that image is used and only kind and
# kube-router are built. node-image in the cache names the node image to use.
#
# Cost on a 2-CPU machine in a cold `.ci/run` (fresh Go build cache and kind cache), where make vet
# and make test have compiled Kubernetes, Vault and Helm's SDK before: kube-router about 4 min (it
# has Kubernetes dependencies of its own version), crictl and linking the Kubernetes binaries
# about 1 min each, CoreDNS 30 s; the two debootstraps (2-3 min each, network-bound) alongside.
# Niced beside make test and the fuzzing, as .ci/run runs it, the same work spreads over about
# 20 min. A second run takes about 1 s. Disk: 2.0 GB of images in the engine, 1.7 GB in the kind
# cache.
#
# e2e, in the same run: Traefik about 6 min, Helm and vault_dev about 10 s each (their packages
# are compiled already), the images 2-6 s each; postgres_rootfs about 3 min, network-bound,
# alongside; about 1 s for a second run. Images: e2e-vault 109 MB, e2e-postgres 367 MB,
# e2e-traefik 144 MB, kind-probe 2 MB; binaries in the cache about 320 MB.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

KUBE_VERSION=v1.37.2
KIND_VERSION=v0.33.0
CRICTL_VERSION=v1.37.0
# etcd: go.etcd.io/etcd/server/v3 v3.7.0 matches kubeadm's etcd image tag 3.7.0-0 (hack/tools/kube).
COREDNS_VERSION=v1.14.6
KUBE_ROUTER_VERSION=v2.1.0
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

OFFICIAL_NODE_IMAGE=kindest/node:$KUBE_VERSION
NODE_IMAGE=securetext/kind-node:$KUBE_VERSION
BASE_IMAGE=securetext/kind-base:$DEBIAN_SUITE
NETBASE_IMAGE=securetext/kind-netbase:$DEBIAN_SUITE
KUBE_ROUTER_IMAGE=securetext/kube-router:$KUBE_ROUTER_VERSION

# The images of the end-to-end tests on kind (e2e). Helm's version is the one the project's
# go.mod requires.
TRAEFIK_VERSION=v3.7.13
# Stand-ins for what Traefik's go.mod names and the module proxy does not serve (build_traefik).
TRAEFIK_HTTP_AUTH=v0.4.1-0.20200324110947-a37a7636d23e
TRAEFIK_DNS_PROVIDERS='exec|httpreq|manual'
POSTGRES_VERSION=15
VAULT_IMAGE=securetext/e2e-vault:dev
TRAEFIK_IMAGE=securetext/e2e-traefik:$TRAEFIK_VERSION
POSTGRES_IMAGE=securetext/e2e-postgres:$POSTGRES_VERSION
POSTGRES_ROOTFS_IMAGE=$POSTGRES_IMAGE-rootfs
PROBE_IMAGE=securetext/kind-probe:busybox
# The uid of the images FROM scratch (nonroot, as in distroless images) and of postgres.
NONROOT_UID=65532
POSTGRES_UID=999
# Installed in the chroot after the postgres user exists; the debootstrap brings what they need
# that creates no user.
POSTGRES_PACKAGES="postgresql-$POSTGRES_VERSION"
POSTGRES_BASE_PACKAGES=adduser,locales,tzdata,ssl-cert
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# The packages of kind's base image that Debian has (kind builds containerd, runc, crictl and
# the CNI plugins itself), plus systemd-sysv and dbus for systemd as init.
NODE_PACKAGES=systemd,systemd-sysv,dbus,iptables,nftables,conntrack,socat,ethtool,util-linux,mount,kmod,ca-certificates,libseccomp2,containerd,runc,containernetworking-plugins,iproute2,procps,jq,pigz,e2fsprogs
# kube-proxy and kube-router program the node's iptables and ipsets from their own images.
NETBASE_PACKAGES=iptables,nftables,conntrack,ipset,iproute2,kmod

KUBE_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37
	-X k8s.io/component-base/version.gitTreeState=clean
	-X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
KUBE_COMMANDS=(kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$root/hack/kind
kind_dir=$kind_cache
bin=$kind_dir/bin
stamps=$kind_dir/stamps
work=$kind_dir/work
debs=$kind_dir/cache/debootstrap
report=$work/report.tsv

helm_version=""

wrapper=/usr/local/libexec/securetext/runc
wrapper_name=securetext-runc
daemon_json=/etc/docker/daemon.json

fail() {
	echo "image.sh: $*" >&2
	exit 1
}

# ---- steps: each build_NAME makes one thing; step() decides whether it has to run ----

# step NAME OUTPUT… -- INPUT…: runs build_NAME unless stamps/NAME holds the hash of
# build_NAME's text and the INPUTs and every OUTPUT (a path, or image:NAME) is there.
step() {
	local name=$1 outputs=() key start
	shift
	while [[ $1 != -- ]]; do
		outputs+=("$1")
		shift
	done
	shift
	key=$({ declare -f "build_$name"; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1)
	if [[ -f $stamps/$name && $(<"$stamps/$name") == "$key" ]] && present "${outputs[@]}"; then
		record "$name" cached 0
		return 0
	fi
	echo "image.sh: $name: building..." >&2
	rm -f "$stamps/$name"
	start=$SECONDS
	"build_$name"
	echo "$key" >"$stamps/$name"
	record "$name" built $((SECONDS - start))
	echo "image.sh: $name: built in $((SECONDS - start))s" >&2
}

present() {
	local out
	for out in "$@"; do
		case $out in
		image:*) docker image inspect "${out#image:}" >/dev/null 2>&1 || return 1 ;;
		*) [[ -e $out ]] || return 1 ;;
		esac
	done
}

record() {
	printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$report"
}

# stamp NAME… prints the stamps of steps that a step builds on, as one of its inputs.
stamp() {
	local name
	for name in "$@"; do
		cat "$stamps/$name"
	done
}

# files_hash PATH… hashes files and the files under directories, by name and content. Names in
# the repository are taken relative to it: every clone of a commit, wherever it is, gets the same
# hash and finds the machine's kind cache up to date.
files_hash() {
	local path rel=()
	for path in "$@"; do
		rel+=("${path#"$root"/}")
	done
	(cd "$root" && find "${rel[@]}" -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

# module_dir PATH@VERSION downloads a Go module (once) and prints its directory.
module_dir() {
	local dir
	dir=$(go mod download -json "$1" | jq -r '.Dir // empty')
	[[ -n $dir ]] || fail "the Go module proxy did not serve $1"
	echo "$dir"
}

image_id() {
	docker image inspect -f '{{.Id}}' "$1"
}

# ---- Go and C binaries ----

build_kind() {
	CGO_ENABLED=0 GOBIN=$bin go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
}

# One go build for all eight: they share most packages, so each is compiled once.
build_kube() {
	local pkgs=() c
	for c in "${KUBE_COMMANDS[@]}"; do
		pkgs+=("./$c")
	done
	(cd "$root/hack/tools/kube" && CGO_ENABLED=0 go build -trimpath -ldflags "$KUBE_LDFLAGS" -o "$bin/" "${pkgs[@]}")
}

build_pause() {
	local src
	src=$(module_dir "k8s.io/kubernetes@$KUBE_VERSION")/build/pause/linux/pause.c
	gcc -Os -Wall -Werror -static -DVERSION="$KUBE_VERSION" -o "$bin/pause" "$src"
}

build_crictl() {
	CGO_ENABLED=0 GOBIN=$bin go install -trimpath \
		-ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" \
		"sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}

build_coredns() {
	(cd "$here/tools/coredns" && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" -o "$bin/coredns" .)
}

build_kube_router() {
	CGO_ENABLED=0 GOBIN=$bin go install -trimpath \
		-ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
		"github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
}

# ---- Debian root filesystems ----

# debootstrap_to DIR PACKAGES: a minbase Debian in DIR, its packages cached in the kind cache
# for every later run and every other debootstrap.
debootstrap_to() {
	local dir=$1 packages=$2
	rm -rf "$dir"
	mkdir -p "$debs"
	quietly "debootstrap $DEBIAN_SUITE into $dir" debootstrap --variant=minbase --cache-dir="$debs" \
		--include="$packages" "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR"
	rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
}

# import_rootfs DIR IMAGE [--change …]: the whole of DIR as one image layer.
import_rootfs() {
	local dir=$1 image=$2
	shift 2
	tar -C "$dir" --numeric-owner -c . | docker import "$@" - "$image" >/dev/null
}

# The base image, as kind's images/base/Dockerfile builds it, from Debian's packages:
# containerd 1.6 and runc 1.1 from Debian stand in for kind's own builds.
build_base() {
	local dir=$work/rootfs-node files
	files=$(module_dir "sigs.k8s.io/kind@$KIND_VERSION")/images/base/files
	debootstrap_to "$dir" "$NODE_PACKAGES"

	# kind's files, with the modes its Dockerfile gives them (the module cache is read-only).
	cp -r --no-preserve=mode,ownership "$files/." "$dir/"
	chmod 0755 "$dir/kind" "$dir/kind/bin" "$dir"/kind/bin/* "$dir"/usr/local/bin/*
	# Without CAP_SYS_RESOURCE (see runc-wrapper.sh) runc cannot set the negative OOM scores
	# kubelet asks for ("can't get final child's PID from pipe: EOF"); containerd then clamps them.
	sed -i 's/^\( *restrict_oom_score_adj *=\).*/\1 true/' "$dir/etc/containerd/config.toml"
	grep -q '^ *restrict_oom_score_adj = true' "$dir/etc/containerd/config.toml" ||
		fail "kind $KIND_VERSION's containerd config has no restrict_oom_score_adj to set"

	# Debian's containerd and CNI plugins where kind's units and containerd config look for them.
	local b
	for b in containerd ctr containerd-shim-runc-v2; do
		ln -sf "/usr/bin/$b" "$dir/usr/local/bin/$b"
	done
	mkdir -p "$dir/opt/cni/bin"
	for b in "$dir"/usr/lib/cni/*; do
		ln -sf "/usr/lib/cni/${b##*/}" "$dir/opt/cni/bin/${b##*/}"
	done
	chroot "$dir" ctr oci spec |
		jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
		jq 'del(.process.rlimits)' >"$dir/etc/containerd/cri-base.json"

	# The RUN steps of kind's Dockerfile.
	find "$dir/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
	rm -f "$dir"/lib/systemd/system/multi-user.target.wants/* "$dir"/etc/systemd/system/*.wants/* \
		"$dir"/lib/systemd/system/local-fs.target.wants/* "$dir"/lib/systemd/system/sockets.target.wants/*udev* \
		"$dir"/lib/systemd/system/sockets.target.wants/*initctl* "$dir"/lib/systemd/system/basic.target.wants/*
	echo "ReadKMsg=no" >>"$dir/etc/systemd/journald.conf"
	ln -sf /usr/lib/systemd/systemd "$dir/sbin/init"
	quietly "systemctl enable in $dir" chroot "$dir" systemctl enable kubelet.service containerd.service undo-mount-hacks.service
	quietly "systemctl mask in $dir" chroot "$dir" systemctl mask systemd-binfmt.service
	mkdir -p "$dir/etc/kubernetes/manifests"

	import_rootfs "$dir" "$BASE_IMAGE-rootfs" --change 'ENV container=docker' \
		--change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]'
	# docker 20.10's import --change refuses STOPSIGNAL; systemd stops on SIGRTMIN+3.
	printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$BASE_IMAGE-rootfs" |
		quietly "docker build $BASE_IMAGE" env DOCKER_BUILDKIT=0 docker build -t "$BASE_IMAGE" -
	rm -rf "$dir"
}

# The image that kube-proxy and kube-router run from: iptables, ipset and iproute2, with the
# iptables-wrapper of kubernetes-sigs (as kube-router's module ships it) so that they write rules
# with the backend, legacy or nft, that the node already uses.
build_netbase() {
	local dir=$work/rootfs-net installer
	installer=$(module_dir "github.com/cloudnativelabs/kube-router/v2@$KUBE_ROUTER_VERSION")/build/image-assets/iptables-wrapper-installer.sh
	debootstrap_to "$dir" "$NETBASE_PACKAGES"
	install -m 0755 "$installer" "$dir/iptables-wrapper-installer.sh"
	quietly "iptables-wrapper-installer.sh" chroot "$dir" /iptables-wrapper-installer.sh --no-sanity-check
	rm -f "$dir/iptables-wrapper-installer.sh"
	import_rootfs "$dir" "$NETBASE_IMAGE" --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
	rm -rf "$dir"
}

# ---- images ----

# binary_image IMAGE BINARY PATH [--change …]: an image of one static binary at PATH.
binary_image() {
	local image=$1 binary=$2 path=$3 dir
	shift 3
	dir=$(mktemp -d "$work/rootfs-binary.XXXXXX")
	install -D -m 0755 "$binary" "$dir$path"
	install -d -m 1777 "$dir/tmp"
	import_rootfs "$dir" "$image" --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "$@"
	rm -rf "$dir"
}

# netbase_image IMAGE BINARY [ENTRYPOINT]: the netbase image with BINARY in /usr/local/bin.
netbase_image() {
	local image=$1 binary=$2 entrypoint=${3:-} dir
	dir=$(mktemp -d "$work/context.XXXXXX")
	cp "$binary" "$dir/"
	{
		echo "FROM $NETBASE_IMAGE"
		echo "COPY ${binary##*/} /usr/local/bin/${binary##*/}"
		[[ -z $entrypoint ]] || echo "ENTRYPOINT [\"$entrypoint\"]"
	} >"$dir/Dockerfile"
	quietly "docker build $image" env DOCKER_BUILDKIT=0 docker build -t "$image" "$dir"
	rm -rf "$dir"
}

# kubeadm_images prints the images kubeadm pulls for KUBE_VERSION, then kind's sandbox image.
kubeadm_images() {
	"$bin/kubeadm" config images list --kubernetes-version "$KUBE_VERSION"
	sed -n 's/^ *sandbox_image *= *"\(.*\)"/\1/p' \
		"$(module_dir "sigs.k8s.io/kind@$KIND_VERSION")/images/base/files/etc/containerd/config.toml"
}

# The images preloaded into the node: each tagged as kubeadm (or kind's containerd config)
# names it, saved for `ctr import` under work/images in the kind cache.
build_component_images() {
	local image name out=$work/images
	rm -rf "$out"
	mkdir -p "$out"
	for image in $(kubeadm_images); do
		name=${image##*/}
		name=${name%%:*}
		case $name in
		kube-apiserver | kube-controller-manager | kube-scheduler | etcd)
			binary_image "$image" "$bin/$name" "/usr/local/bin/$name" ;;
		kube-proxy) netbase_image "$image" "$bin/kube-proxy" ;;
		coredns) binary_image "$image" "$bin/coredns" /coredns --change 'ENTRYPOINT ["/coredns"]' ;;
		pause) binary_image "$image" "$bin/pause" /pause --change 'ENTRYPOINT ["/pause"]' ;;
		*) fail "kubeadm $KUBE_VERSION asks for $image, which this script does not build" ;;
		esac
		docker save -o "$out/$name-${image##*:}.tar" "$image"
	done
	docker save -o "$out/kube-router.tar" "$KUBE_ROUTER_IMAGE"
}

build_kube_router_image() {
	netbase_image "$KUBE_ROUTER_IMAGE" "$bin/kube-router" /usr/local/bin/kube-router
}

# The node image, as `kind build node-image` assembles it: the base image with kubelet,
# kubeadm, kubectl and crictl, /kind/version, and the images imported into containerd pinned, so
# that kubelet never garbage-collects them. The build container needs no network (--network none).
build_node() {
	local c=securetext-kind-node-build tar waited=0
	docker rm -f "$c" >/dev/null 2>&1 || true
	build_container=$c
	docker run -d --name "$c" --network none --entrypoint=sleep --security-opt seccomp=unconfined "$BASE_IMAGE" infinity >/dev/null
	local b
	for b in kubelet kubeadm kubectl; do
		docker cp "$bin/$b" "$c:/usr/bin/$b"
	done
	docker cp "$bin/crictl" "$c:/usr/local/bin/crictl"
	echo "$KUBE_VERSION" | docker exec -i "$c" sh -c 'cat >/kind/version'
	docker exec "$c" bash -c 'nohup containerd >/dev/null 2>&1 &'
	# Debian's ctr 1.6 has no `ctr info`; `ctr version` answers once the socket does.
	until docker exec "$c" ctr version >/dev/null 2>&1; do
		((waited++ < 30)) || fail "containerd in the build container did not answer within 30s"
		sleep 1
	done
	for tar in "$work"/images/*.tar; do
		docker exec -i "$c" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
			--all-platforms --no-unpack --digests - <"$tar" >/dev/null
	done
	# --digests adds an import-DATE@sha256 name per image, as in kind's own node images.
	docker exec "$c" ctr --namespace=k8s.io images list -q | grep -v -e '^sha256:' -e '^import-' |
		sed 's/^/image.sh:   preloaded /' >&2
	docker exec "$c" pkill containerd
	# sleep, the container's PID 1, reaps no children: a stopped containerd stays a zombie.
	waited=0
	while docker exec "$c" ps -C containerd -o stat= | grep -qv '^Z'; do
		((waited++ < 30)) || fail "containerd in the build container did not stop within 30s"
		sleep 1
	done
	docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' "$c" "$NODE_IMAGE" >/dev/null
	docker rm -f "$c" >/dev/null
	build_container=""
}

# ---- the end-to-end images (e2e) ----

# nonroot_files DIR: /etc/passwd and /etc/group naming root and nonroot (uid and gid 65532),
# nonroot's home and an empty /tmp, for an image without a distribution.
nonroot_files() {
	local dir=$1
	install -d -m 0755 "$dir/etc"
	printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
		"nonroot:x:$NONROOT_UID:$NONROOT_UID:nonroot:/home/nonroot:/sbin/nologin" >"$dir/etc/passwd"
	printf '%s\n' 'root:x:0:' "nonroot:x:$NONROOT_UID:" >"$dir/etc/group"
	install -d -m 0700 -o "$NONROOT_UID" -g "$NONROOT_UID" "$dir/home/nonroot"
	install -d -m 1777 "$dir/tmp"
}

# scratch_image IMAGE BINARY: an image of one static binary, /NAME and its entry point, run as
# nonroot, with the host's CA bundle.
scratch_image() {
	local image=$1 binary=$2 dir
	dir=$(mktemp -d "$work/rootfs-e2e.XXXXXX")
	install -D -m 0755 "$binary" "$dir/${binary##*/}"
	install -D -m 0644 "$CA_BUNDLE" "$dir/etc/ssl/certs/ca-certificates.crt"
	nonroot_files "$dir"
	import_rootfs "$dir" "$image" --change "USER $NONROOT_UID:$NONROOT_UID" \
		--change "ENTRYPOINT [\"/${binary##*/}\"]"
	rm -rf "$dir"
}

# The project's Vault dev server (hack/tools/vault), as the tests use it, for a pod.
build_vault_dev() {
	(cd "$root/hack/tools/vault" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/vault-dev" ./vault-dev)
}

build_vault_image() {
	local usage
	scratch_image "$VAULT_IMAGE" "$bin/vault-dev"
	usage=$(docker run --rm --network none "$VAULT_IMAGE" -h 2>&1) || true
	grep -q -- -root-token <<<"$usage" || fail "$VAULT_IMAGE does not run: docker run --rm $VAULT_IMAGE -h: $usage"
}

# Traefik from its module's source, copied to work/traefik-src in the kind cache and patched there:
#
#   - `go install` refuses the module, as its go.mod has replace directives, and one of them
#     (github.com/traefik/traefik/dynamic/ext => ./pkg/config/dynamic/ext) points at a nested
#     module, which a module zip never holds: it is written as upstream has it at this version,
#     two empty extension points of the dynamic configuration (later versions add a RouterIng
#     that this one does not use).
#   - The module proxy here does not serve go.mod's fork of go-http-auth
#     (containous/go-http-auth v0.4.1-0.20260804094822-b975dcaa8c48, 403 "not available"): the
#     fork's commit of 2020 that Traefik v2 and early v3 used stands in (basic and digest auth).
#   - Nor does it serve the SDKs of some of lego's 219 ACME DNS providers (Akamai EdgeDNS, Huawei
#     Cloud, Oracle Cloud and more), and the suite's ingress gets its certificates from a Secret,
#     never from ACME: the ACME provider imports a copy of lego's generated provider list with
#     only the providers that need no vendor SDK (exec, httpreq, manual). That leaves out the
#     cloud SDKs, about half of what a cold build of Traefik compiles; a dnsChallenge.provider
#     naming another fails with "unrecognized DNS provider".
build_traefik() {
	local src=$work/traefik-src lego_dns
	rm -rf "$src"
	cp -r "$(module_dir "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")" "$src"
	chmod -R u+w "$src"
	lego_dns=$(module_dir "$(cd "$src" && go list -m -f '{{.Path}}@{{.Version}}' github.com/go-acme/lego/v5)")/providers/dns
	mkdir -p "$src/pkg/config/dynamic/ext"
	printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.26.0\n' >"$src/pkg/config/dynamic/ext/go.mod"
	cat >"$src/pkg/config/dynamic/ext/ext.go" <<'EOF'
package ext

// HTTP is a dynamic.HTTP extension.
type HTTP struct{}

// Router is a dynamic.Router extension.
type Router struct{}
EOF
	(cd "$src" && go mod edit -replace "github.com/abbot/go-http-auth=github.com/containous/go-http-auth@$TRAEFIK_HTTP_AUTH")
	mkdir -p "$src/pkg/provider/acme/legodns"
	awk -v keep="$TRAEFIK_DNS_PROVIDERS" '
		/^\t"github.com\/go-acme\/lego\/v5\/providers\/dns\// && $0 !~ "/(" keep ")\"$" { next }
		/^\tcase / { held = $0; next }
		held != "" { if ($0 ~ "^\t\treturn (" keep ")\\.NewDNSProvider\\(\\)$") { print held; print }; held = ""; next }
		{ print }' "$lego_dns/zz_gen_dns_providers.go" >"$src/pkg/provider/acme/legodns/providers.go"
	[[ $(grep -c $'^\tcase ' "$src/pkg/provider/acme/legodns/providers.go") -eq $(tr '|' '\n' <<<"$TRAEFIK_DNS_PROVIDERS" | wc -l) ]] ||
		fail "lego's generated DNS provider list changed its form: $lego_dns/zz_gen_dns_providers.go"
	sed -i 's|^\t"github.com/go-acme/lego/v5/providers/dns"$|\tdns "github.com/traefik/traefik/v3/pkg/provider/acme/legodns"|' \
		"$src/pkg/provider/acme/provider.go"
	grep -q legodns "$src/pkg/provider/acme/provider.go" || fail "Traefik's ACME provider no longer imports lego's providers/dns"
	# -mod=mod: go.sum gains the stand-in go-http-auth.
	(cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath \
		-ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
		-o "$bin/traefik" ./cmd/traefik)
	rm -rf "$src"
}

build_traefik_image() {
	local version
	scratch_image "$TRAEFIK_IMAGE" "$bin/traefik"
	version=$(docker run --rm --network none "$TRAEFIK_IMAGE" version)
	grep -q "^Version: *$TRAEFIK_VERSION\$" <<<"$version" ||
		fail "$TRAEFIK_IMAGE does not say it is $TRAEFIK_VERSION: $version"
}

# The Helm CLI, a tool of the project's go.mod (go install refuses Helm's module, which has
# replace directives), with the version `helm version` prints. It compiles with the project's
# own dependencies, the Helm SDK that the chart's tests render with among them.
build_helm() {
	(cd "$root" && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version" -o "$bin/helm" helm.sh/helm/v4/cmd/helm)
	[[ $("$bin/helm" version --template '{{.Version}}') == "$helm_version" ]] ||
		fail "$bin/helm does not say it is $helm_version"
}

# The client and server image of smoke.sh: Debian's busybox-static (wget, nc, httpd) and one page
# to serve; it runs as root unless the pod asks for nonroot.
build_probe_image() {
	local dir
	dir=$(mktemp -d "$work/rootfs-probe.XXXXXX")
	mkdir -p "$dir/bin" "$dir/www"
	cp /bin/busybox "$dir/bin/busybox"
	chroot "$dir" /bin/busybox --install -s /bin
	echo securetext-smoke >"$dir/www/index.html"
	nonroot_files "$dir"
	import_rootfs "$dir" "$PROBE_IMAGE" --change 'ENV PATH=/bin'
	rm -rf "$dir"
}

probe_step() {
	dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || apt_install busybox-static
	step probe_image "image:$PROBE_IMAGE" -- "$(dpkg-query -W -f='${Version}' busybox-static)" \
		"$(declare -f nonroot_files import_rootfs)"
}

# Debian's PostgreSQL without a cluster. Its package creates the user postgres with the next free
# system uid, and the pods run as 999: the user is made with that uid before the package is
# installed, in the chroot, by apt (the packages it fetches are kept in cache/apt-postgres in the kind cache).
build_postgres_rootfs() {
	local dir=$work/rootfs-postgres cache=$kind_dir/cache/apt-postgres
	debootstrap_to "$dir" "$POSTGRES_BASE_PACKAGES"
	chroot "$dir" groupadd -r -g "$POSTGRES_UID" postgres
	chroot "$dir" useradd -r -u "$POSTGRES_UID" -g "$POSTGRES_UID" -d /var/lib/postgresql -s /bin/bash \
		-c 'PostgreSQL administrator' postgres
	# No cluster made by the package (the entry point makes one in PGDATA), no service started.
	mkdir -p "$dir/etc/postgresql-common/createcluster.d"
	echo 'create_main_cluster = false' >"$dir/etc/postgresql-common/createcluster.d/e2e.conf"
	printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
	chmod 0755 "$dir/usr/sbin/policy-rc.d"
	mkdir -p "$cache"
	find "$cache" -name '*.deb' -exec cp -t "$dir/var/cache/apt/archives/" {} +
	quietly "apt-get update in $dir" chroot "$dir" apt-get update
	# shellcheck disable=SC2086 # a list of packages
	quietly "apt-get install $POSTGRES_PACKAGES in $dir" chroot "$dir" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends $POSTGRES_PACKAGES
	find "$dir/var/cache/apt/archives" -name '*.deb' -exec mv -t "$cache/" {} +
	rm -f "$dir/usr/sbin/policy-rc.d"
	[[ $(chroot "$dir" id -u postgres) == "$POSTGRES_UID" ]] || fail "postgres is not uid $POSTGRES_UID in $dir"
	install -d -m 0755 -o "$POSTGRES_UID" -g "$POSTGRES_UID" "$dir/var/lib/postgresql"
	install -d -m 0700 -o "$POSTGRES_UID" -g "$POSTGRES_UID" "$dir/var/lib/postgresql/data"
	# apt's lists and caches, documentation and translations (the server logs in English).
	rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/usr/share/doc/* "$dir"/usr/share/man/* \
		"$dir"/usr/share/info/* "$dir"/usr/share/locale/*
	import_rootfs "$dir" "$POSTGRES_ROOTFS_IMAGE"
	rm -rf "$dir"
}

# The PostgreSQL image: the root filesystem with hack/kind/postgres-entrypoint.sh, run as
# postgres; docker build for STOPSIGNAL, which docker 20.10's import refuses.
build_postgres_image() {
	local dir
	dir=$(mktemp -d "$work/context.XXXXXX")
	install -m 0755 "$here/postgres-entrypoint.sh" "$dir/e2e-postgres"
	cat >"$dir/Dockerfile" <<EOF
FROM $POSTGRES_ROOTFS_IMAGE
COPY e2e-postgres /usr/local/bin/e2e-postgres
ENV PATH=/usr/lib/postgresql/$POSTGRES_VERSION/bin:/usr/sbin:/usr/bin:/sbin:/bin PGDATA=/var/lib/postgresql/data
USER $POSTGRES_UID:$POSTGRES_UID
EXPOSE 5432
# Fast shutdown, as in the official postgres image: SIGTERM (smart) waits for every client to go.
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/e2e-postgres"]
EOF
	quietly "docker build $POSTGRES_IMAGE" env DOCKER_BUILDKIT=0 docker build -t "$POSTGRES_IMAGE" "$dir"
	rm -rf "$dir"
	check_postgres_image
}

# check_postgres_image starts the image as a pod would (uid 999, no capabilities, PGDATA an empty
# directory of root's with mode 0777, as kubelet makes an emptyDir) and logs in over TCP with a
# password, on the container's loopback. The directory is bound from the cache's work/: docker's
# tmpfs takes the image's mode. The checks of the images run with --network none: they need no
# network, and a container's veth would be a network change under a browser test running beside.
check_postgres_image() {
	local c=securetext-e2e-postgres-check data waited=0
	docker rm -f "$c" >/dev/null 2>&1 || true
	data=$(mktemp -d "$work/pgdata.XXXXXX")
	chmod 0777 "$data"
	build_container=$c
	docker run -d --name "$c" --network none --user "$POSTGRES_UID:$POSTGRES_UID" --cap-drop=ALL \
		-v "$data:/var/lib/postgresql/data" \
		-e POSTGRES_PASSWORD=check -e POSTGRES_USER=app -e POSTGRES_DB=app "$POSTGRES_IMAGE" >/dev/null
	until [[ $(docker exec -e PGPASSWORD=check "$c" psql -h 127.0.0.1 -U app -d app -XtAc 'select 1' 2>/dev/null) == 1 ]]; do
		if ((waited++ >= 30)); then
			docker logs "$c" >&2 || true
			fail "$POSTGRES_IMAGE: app@127.0.0.1/app did not answer within 30s (its log above)"
		fi
		sleep 1
	done
	docker rm -f "$c" >/dev/null
	build_container=""
	rm -rf "$data"
}

# ---- the engine ----

# lacks_sys_resource: the capability bounding set has no CAP_SYS_RESOURCE (bit 24).
lacks_sys_resource() {
	local bnd
	bnd=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
	(((16#$bnd >> 24 & 1) == 0))
}

# install_runc_wrapper makes runc-wrapper.sh dockerd's default runtime: in daemon.json before
# dockerd starts, or by a SIGHUP (dockerd reloads runtimes and default-runtime) when it runs.
install_runc_wrapper() {
	[[ -z ${DOCKER_HOST:-} ]] ||
		fail "privileged containers need CAP_SYS_RESOURCE, which this machine lacks, and DOCKER_HOST=$DOCKER_HOST is an engine this script cannot configure"
	[[ $(id -u) -eq 0 ]] ||
		fail "privileged containers need the runc wrapper on this machine (no CAP_SYS_RESOURCE); installing it needs root: sudo $0"
	command -v jq >/dev/null || apt_install jq
	install -D -m 0755 "$here/runc-wrapper.sh" "$wrapper"
	local current='{}' wanted
	[[ ! -s $daemon_json ]] || current=$(<"$daemon_json")
	wanted=$(jq --arg name "$wrapper_name" --arg path "$wrapper" \
		'.runtimes[$name] = {path: $path} | .["default-runtime"] = $name' <<<"$current")
	if [[ $wanted != "$current" ]]; then
		mkdir -p "${daemon_json%/*}"
		echo "$wanted" >"$daemon_json"
		echo "image.sh: made $wrapper dockerd's default runtime in $daemon_json (no CAP_SYS_RESOURCE here)" >&2
	fi
}

ensure_engine() {
	if lacks_sys_resource; then
		install_runc_wrapper
	fi
	"$root/hack/docker.sh" ensure
	if lacks_sys_resource && [[ $(docker info -f '{{.DefaultRuntime}}') != "$wrapper_name" ]]; then
		local pid waited=0
		pid=$(cat /var/run/docker.pid 2>/dev/null) || fail "dockerd runs without $wrapper_name and has no /var/run/docker.pid to reload it by"
		kill -HUP "$pid"
		until [[ $(docker info -f '{{.DefaultRuntime}}' 2>/dev/null) == "$wrapper_name" ]]; do
			((waited++ < 10)) || fail "dockerd (pid $pid) did not take $wrapper_name as its default runtime after SIGHUP; restart it"
			sleep 1
		done
		echo "image.sh: dockerd (pid $pid) reloaded with $wrapper_name as its default runtime" >&2
	fi
}

# preflight fails at once, naming everything missing, before anything slow starts.
preflight() {
	local missing=() packages=()
	[[ $(id -u) -eq 0 ]] || missing+=("root (debootstrap and chroot need it): sudo $0")
	command -v go >/dev/null || missing+=("the Go toolchain (go on PATH)")
	[[ ${#missing[@]} -eq 0 ]] || fail "missing: $(printf '%s; ' "${missing[@]}")"
	command -v debootstrap >/dev/null || packages+=(debootstrap)
	command -v jq >/dev/null || packages+=(jq)
	command -v gcc >/dev/null || packages+=(gcc)
	[[ -e /usr/lib/x86_64-linux-gnu/libc.a || -e /usr/lib/libc.a ]] || packages+=(libc6-dev)
	if ((${#packages[@]})); then
		echo "image.sh: installing ${packages[*]}" >&2
		apt_install "${packages[@]}"
	fi
}

# ---- main ----

build_container=""
cleanup() {
	[[ -z $build_container ]] || docker rm -f "$build_container" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# summary TOTAL IMAGE|/FILE…: each step's result and time, then the size of each image or file.
summary() {
	local total=$1 out size
	shift
	echo
	printf '%-22s %-8s %s\n' STEP RESULT SECONDS
	awk -F'\t' '{ printf "%-22s %-8s %s\n", $1, $2, $3 }' "$report"
	echo "total: $total s"
	echo
	printf '%-52s %s\n' IMAGE SIZE
	for out in "$@"; do
		if [[ $out == /* ]]; then
			size=$(stat -c %s "$out")
			out=${out#"$root"/}
		else
			size=$(docker image inspect -f '{{.Size}}' "$out")
		fi
		printf '%-52s %s\n' "$out" "$(awk '{ printf "%.0f MB", $1 / 1e6 }' <<<"$size")"
	done
}

# lock: one image.sh at a time builds in the machine's kind cache (another clone's make, or a CI
# job); the next one waits, then finds the steps stamped. The lock goes with the process.
lock() {
	mkdir -p "$kind_dir"
	exec 9>"$kind_dir/lock"
	if ! flock -n 9; then
		echo "image.sh: another image.sh is building in $kind_dir; waiting for it to finish" >&2
		flock 9
	fi
}

# begin REPORT: the lock, the directories, an empty report, the preflight checks and a running
# engine.
begin() {
	lock
	mkdir -p "$bin" "$stamps" "$work"
	report=$1
	: >"$report"
	preflight
	local engine_start=$SECONDS
	ensure_engine
	record engine ready $((SECONDS - engine_start))
}

build() {
	local start=$SECONDS go_version kube_inputs
	begin "$report"
	go_version=$(go version)

	step kind "$bin/kind" -- "$KIND_VERSION" "$go_version"

	local official=""
	if docker image inspect "$OFFICIAL_NODE_IMAGE" >/dev/null 2>&1; then
		official=$OFFICIAL_NODE_IMAGE
		echo "image.sh: the engine has $OFFICIAL_NODE_IMAGE: using it, building only kube-router" >&2
	fi

	# The Debian steps wait on the network and the Go steps on the CPU: run them side by side.
	local debian_log=$work/debian.log debian_pid
	(
		step netbase "image:$NETBASE_IMAGE" -- "$DEBIAN_SUITE" "$NETBASE_PACKAGES" "$KUBE_ROUTER_VERSION" "$(declare -f debootstrap_to import_rootfs)"
		[[ -n $official ]] || step base "image:$BASE_IMAGE" -- "$DEBIAN_SUITE" "$NODE_PACKAGES" "$KIND_VERSION" "$(declare -f debootstrap_to import_rootfs)"
	) >"$debian_log" 2>&1 &
	debian_pid=$!

	step kube_router "$bin/kube-router" -- "$KUBE_ROUTER_VERSION" "$go_version"
	if [[ -z $official ]]; then
		kube_inputs=$(files_hash "$root/hack/tools/kube")
		step kube "${KUBE_COMMANDS[@]/#/$bin/}" -- "$KUBE_VERSION" "$KUBE_LDFLAGS" "$go_version" "$kube_inputs"
		step pause "$bin/pause" -- "$KUBE_VERSION" "$(gcc --version | head -1)"
		step crictl "$bin/crictl" -- "$CRICTL_VERSION" "$go_version"
		step coredns "$bin/coredns" -- "$COREDNS_VERSION" "$go_version" "$(files_hash "$here/tools/coredns")"
	fi

	if ! wait "$debian_pid"; then
		cat "$debian_log" >&2
		fail "building the Debian images failed (log above, also in $debian_log)"
	fi
	grep -v '^image.sh: .*: building' "$debian_log" >&2 || true

	step kube_router_image "image:$KUBE_ROUTER_IMAGE" -- "$(stamp kube_router netbase)" "$(declare -f netbase_image)"
	local node_image=$official
	if [[ -z $official ]]; then
		step component_images "$work/images" -- "$(stamp kube pause coredns netbase kube_router_image)" \
			"$(declare -f binary_image netbase_image import_rootfs kubeadm_images)"
		step node "image:$NODE_IMAGE" -- "$(stamp base kube crictl component_images)" "$(image_id "$BASE_IMAGE")"
		node_image=$NODE_IMAGE
	fi
	echo "$node_image" >"$kind_dir/node-image"
	summary $((SECONDS - start)) "$node_image" "$KUBE_ROUTER_IMAGE"
	echo "node image: $node_image ($kind_dir/node-image)"
}

e2e() {
	local start=$SECONDS go_version
	begin "$work/report-e2e.tsv"
	go_version=$(go version)
	helm_version=$(cd "$root" && go list -m -f '{{.Version}}' helm.sh/helm/v4)

	# The debootstrap waits on the network and the Go builds on the CPU: side by side.
	local postgres_log=$work/postgres.log postgres_pid
	(
		step postgres_rootfs "image:$POSTGRES_ROOTFS_IMAGE" -- "$DEBIAN_SUITE" "$POSTGRES_BASE_PACKAGES" \
			"$POSTGRES_PACKAGES" "$(declare -f debootstrap_to import_rootfs)"
	) >"$postgres_log" 2>&1 &
	postgres_pid=$!

	step vault_dev "$bin/vault-dev" -- "$go_version" "$(files_hash "$root/hack/tools/vault")"
	local scratch
	scratch=$(declare -f scratch_image nonroot_files import_rootfs; files_hash "$CA_BUNDLE")
	step vault_image "image:$VAULT_IMAGE" -- "$(stamp vault_dev)" "$scratch"
	step traefik "$bin/traefik" -- "$TRAEFIK_VERSION" "$TRAEFIK_HTTP_AUTH" "$TRAEFIK_DNS_PROVIDERS" "$go_version"
	step traefik_image "image:$TRAEFIK_IMAGE" -- "$(stamp traefik)" "$scratch"
	step helm "$bin/helm" -- "$go_version" "$(files_hash "$root/go.mod" "$root/go.sum")"
	probe_step

	if ! wait "$postgres_pid"; then
		cat "$postgres_log" >&2
		fail "building the PostgreSQL root filesystem failed (log above, also in $postgres_log)"
	fi
	grep -v '^image.sh: .*: building' "$postgres_log" >&2 || true
	step postgres_image "image:$POSTGRES_IMAGE" -- "$(stamp postgres_rootfs)" "$(image_id "$POSTGRES_ROOTFS_IMAGE")" \
		"$(files_hash "$here/postgres-entrypoint.sh")" "$(declare -f check_postgres_image)"

	summary $((SECONDS - start)) "$VAULT_IMAGE" "$POSTGRES_IMAGE" "$TRAEFIK_IMAGE" "$PROBE_IMAGE" "$bin/helm"
}

# probe: only smoke.sh's image, for smoke.sh; no summary.
probe() {
	lock
	mkdir -p "$stamps" "$work"
	report=$work/report-probe.tsv
	: >"$report"
	"$root/hack/docker.sh" ensure
	probe_step
}

case "${1:-build}" in
build) build ;;
e2e) e2e ;;
probe) probe ;;
*)
	echo "usage: $0 [build|e2e|probe]" >&2
	exit 2
	;;
esac
