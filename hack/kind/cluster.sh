#!/usr/bin/env bash
# Creates and deletes the project's kind clusters, the same way for smoke.sh and for the
# end-to-end suite (hack/kind/e2e):
#
#   hack/kind/cluster.sh up NAME DIR [IMAGE…]   one control plane and two workers from the node
#                                               image of make kind-image, kube-router as the CNI,
#                                               the IMAGEs loaded; waits until nodes and CoreDNS
#                                               are ready
#   hack/kind/cluster.sh down NAME              delete it (nothing if there is none)
#
# up deletes a cluster of that name left by an earlier run first. It writes DIR/kubeconfig (the
# API server on 127.0.0.1) and DIR/kubectl, copied out of the node so that client and server
# versions match. With KIND_HTTPS_PORT set, the control-plane node's port 30443 (a NodePort) is
# published on 127.0.0.1:$KIND_HTTPS_PORT: the suite's ingress controller, reached there by a
# browser that may reach loopback only. Each step's time goes to stderr.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

KUBE_ROUTER_IMAGE=securetext/kube-router:v2.1.0
OFFICIAL_NODE_IMAGE=kindest/node:v1.37.2
# How long the cluster may take to get each thing ready, in seconds.
READY_TIMEOUT=${READY_TIMEOUT:-240}
# The NodePort that KIND_HTTPS_PORT publishes.
HTTPS_NODE_PORT=30443

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# kind and the node image's name, from the machine's kind cache (hack/lib.sh).
kind_dir=$kind_cache
kind=$kind_dir/bin/kind

fail() {
	echo "cluster.sh: FAIL: $*" >&2
	exit 1
}

start=$SECONDS
mark() {
	echo "cluster.sh: $1 ($((SECONDS - start))s)" >&2
}

cluster_config() {
	cat <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # kube-router is the CNI: kindnetd cannot enforce NetworkPolicy on these machines.
  disableDefaultCNI: true
  podSubnet: 10.244.0.0/16
  apiServerAddress: 127.0.0.1
kubeadmConfigPatches:
# Kubelet 1.37 refuses cgroup v1 hosts unless told otherwise.
- |
  kind: KubeletConfiguration
  failCgroupV1: false
nodes:
- role: control-plane
EOF
	if [[ -n ${KIND_HTTPS_PORT:-} ]]; then
		cat <<EOF
  extraPortMappings:
  - {containerPort: $HTTPS_NODE_PORT, hostPort: $KIND_HTTPS_PORT, listenAddress: 127.0.0.1, protocol: TCP}
EOF
	fi
	cat <<'EOF'
- role: worker
- role: worker
EOF
}

diagnose() {
	local kubectl=$1
	echo "cluster.sh: cluster state:" >&2
	"$kubectl" get nodes -o wide >&2 || true
	"$kubectl" get pods -A -o wide >&2 || true
	"$kubectl" -n kube-system logs ds/kube-router --tail=30 >&2 || true
}

up() {
	local name=$1 dir=$2 node_image image
	shift 2
	[[ -x $kind && -s $kind_dir/node-image ]] || fail "no kind node image yet: run make kind-image"
	node_image=$(<"$kind_dir/node-image")
	"$root/hack/docker.sh" ensure
	docker image inspect "$node_image" >/dev/null 2>&1 || fail "the engine has no $node_image: run make kind-image"
	docker image inspect "$KUBE_ROUTER_IMAGE" >/dev/null 2>&1 || fail "the engine has no $KUBE_ROUTER_IMAGE: run make kind-image"
	for image in "$@"; do
		docker image inspect "$image" >/dev/null 2>&1 || fail "the engine has no $image to load"
	done
	mkdir -p "$dir"
	local kubectl=$dir/kubectl
	export KUBECONFIG=$dir/kubeconfig

	down "$name"
	echo "cluster.sh: creating cluster $name from $node_image" >&2
	cluster_config | quietly "kind create cluster" "$kind" create cluster --name "$name" \
		--image "$node_image" --kubeconfig "$KUBECONFIG" --config - --wait 0s
	mark "cluster $name created"
	docker cp "$name-control-plane:/usr/bin/kubectl" "$kubectl"
	grep -q 'server: https://127.0.0.1:' "$KUBECONFIG" || fail "the kubeconfig does not point at 127.0.0.1"

	# The official node image has no kube-router; the one image.sh builds has it preloaded.
	local load=("$@")
	[[ $node_image != "$OFFICIAL_NODE_IMAGE" ]] || load+=("$KUBE_ROUTER_IMAGE")
	# One kind load for all: one archive, loaded into the three nodes side by side.
	if ((${#load[@]})); then
		quietly "kind load ${load[*]}" "$kind" load docker-image --name "$name" "${load[@]}"
	fi
	mark "${#load[@]} images loaded"

	if ! {
		"$kubectl" apply -f "$root/hack/kind/kube-router.yaml" >/dev/null &&
			"$kubectl" -n kube-system rollout status ds/kube-router --timeout="${READY_TIMEOUT}s" >/dev/null &&
			"$kubectl" wait --for=condition=Ready nodes --all --timeout="${READY_TIMEOUT}s" >/dev/null &&
			"$kubectl" -n kube-system rollout status deploy/coredns --timeout="${READY_TIMEOUT}s" >/dev/null
	}; then
		diagnose "$kubectl"
		fail "cluster $name did not get ready within ${READY_TIMEOUT}s per step (state above)"
	fi
	mark "kube-router, 3 nodes and CoreDNS ready"
}

down() {
	local name=$1
	[[ -x $kind ]] || return 0
	if "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
		"$kind" delete cluster --name "$name" >/dev/null 2>&1
		echo "cluster.sh: deleted cluster $name" >&2
	fi
}

case "${1:-}" in
up)
	(($# >= 3)) || fail "usage: $0 up NAME DIR [IMAGE…]"
	shift
	up "$@"
	;;
down)
	(($# == 2)) || fail "usage: $0 down NAME"
	down "$2"
	;;
*)
	echo "usage: $0 up NAME DIR [IMAGE…] | down NAME" >&2
	exit 2
	;;
esac
