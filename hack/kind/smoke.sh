#!/usr/bin/env bash
# A throwaway kind cluster from the node image that hack/kind/image.sh built, and proof that it
# enforces NetworkPolicy: one control plane and two workers, kube-router as the CNI, a server
# pod and a client on one worker, two clients on the other. Every client reaches the server
# (app=probe by pod IP and by Service name); a default-deny ingress policy cuts them all off; an
# allow rule for app=probe restores that client and only it.
#
#   hack/kind/smoke.sh        make kind-smoke; E2E_KEEP=1 keeps the cluster (delete it with
#                             hack/kind/cluster.sh down securetext-smoke)
#
# The cluster is reached only through kind's port mapping of the API server on 127.0.0.1; its
# kubeconfig and a kubectl copied out of the node stay under bin/kind/smoke/. Nothing is pulled:
# the client and server image is Debian's busybox-static, docker-imported by
# `hack/kind/image.sh probe` (a step of image.sh e2e too).
set -euo pipefail

CLUSTER=securetext-smoke
NAMESPACE=smoke
PROBE_IMAGE=securetext/kind-probe:busybox
# How long the cluster may take to get each thing ready, in seconds.
READY_TIMEOUT=240
# How long a policy change may take to reach the nodes' iptables, in seconds.
POLICY_TIMEOUT=60

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${SECURETEXT_BIN:-$root/bin}/kind/smoke
export KUBECONFIG=$dir/kubeconfig
kubectl=$dir/kubectl

fail() {
	echo "smoke.sh: FAIL: $*" >&2
	exit 1
}

start=$SECONDS
timings=()
mark() {
	timings+=("$(printf '%-34s %4ss' "$1" $((SECONDS - start)))")
	echo "smoke.sh: $1 ($((SECONDS - start))s)" >&2
}

k() {
	"$kubectl" "$@"
}

workloads() {
	cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
---
apiVersion: v1
kind: Pod
metadata:
  name: server
  namespace: $NAMESPACE
  labels: {app: server}
spec:
  nodeSelector: {kubernetes.io/hostname: $CLUSTER-worker}
  containers:
  - name: httpd
    image: $PROBE_IMAGE
    imagePullPolicy: Never
    command: [httpd, -f, -p, "8080", -h, /www]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: server
  namespace: $NAMESPACE
spec:
  selector: {app: server}
  ports: [{port: 8080}]
EOF
	# probe and other share worker2 (traffic routed between nodes); neighbour shares the server's
	# worker (traffic bridged on one node).
	local client node
	for client in probe:worker2 other:worker2 neighbour:worker; do
		node=${client#*:}
		client=${client%:*}
		cat <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: $client
  namespace: $NAMESPACE
  labels: {app: $client}
spec:
  nodeSelector: {kubernetes.io/hostname: $CLUSTER-$node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: $PROBE_IMAGE
    imagePullPolicy: Never
    command: [sleep, "3600"]
EOF
	done
}

deny_all_ingress() {
	cat <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
  namespace: $NAMESPACE
spec:
  podSelector: {}
  policyTypes: [Ingress]
EOF
}

allow_probe() {
	cat <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-probe-to-server
  namespace: $NAMESPACE
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: probe}}}]
    ports: [{port: 8080}]
EOF
}

# reaches CLIENT HOST: one HTTP GET from the client pod to HOST:8080, 3 s at most. nc, not
# wget: Debian's static busybox wget crashes (SIGSEGV) when it connects to another host.
reaches() {
	k -n "$NAMESPACE" exec "$1" -- sh -c "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $2 8080" 2>/dev/null |
		grep -q securetext-smoke
}

# expect CLIENT HOST open|blocked: waits until the connection is as expected (policies reach the
# nodes a little after the API server takes them), failing after POLICY_TIMEOUT.
expect() {
	local client=$1 host=$2 want=$3 deadline=$((SECONDS + POLICY_TIMEOUT)) got
	while :; do
		if reaches "$client" "$host"; then got=open; else got=blocked; fi
		[[ $got != "$want" ]] || break
		((SECONDS < deadline)) || fail "$client -> $host:8080 is $got, want $want (after ${POLICY_TIMEOUT}s)"
		sleep 2
	done
	echo "smoke.sh:   $client -> $host:8080: $got" >&2
}

diagnose() {
	echo "smoke.sh: cluster state:" >&2
	k get nodes -o wide >&2 || true
	k get pods -A -o wide >&2 || true
	k -n kube-system logs ds/kube-router --tail=30 >&2 || true
}

finish() {
	local status=$?
	trap - EXIT
	if ((status != 0)) && [[ -x $kubectl && -s $KUBECONFIG ]]; then
		diagnose
	fi
	if [[ ${E2E_KEEP:-} == 1 ]]; then
		echo "smoke.sh: kept cluster $CLUSTER (E2E_KEEP=1): KUBECONFIG=$KUBECONFIG $kubectl get pods -A" >&2
	else
		"$root/hack/kind/cluster.sh" down "$CLUSTER" || true
	fi
	exit "$status"
}

main() {
	"$root/hack/kind/image.sh" probe
	trap finish EXIT
	"$root/hack/kind/cluster.sh" up "$CLUSTER" "$dir" "$PROBE_IMAGE"
	mark "cluster up: 3 nodes, kube-router and CoreDNS ready"

	workloads | k apply -f - >/dev/null
	k -n "$NAMESPACE" wait --for=condition=Ready pod --all --timeout="${READY_TIMEOUT}s" >/dev/null
	mark "server and clients Ready"
	local ip by_ip by_name
	ip=$(k -n "$NAMESPACE" get pod server -o jsonpath='{.status.podIP}')
	by_ip=$ip
	by_name=server.$NAMESPACE.svc.cluster.local

	echo "smoke.sh: no policy: every client reaches the server (across nodes, by pod IP and Service name)" >&2
	expect probe "$by_ip" open
	expect probe "$by_name" open
	expect other "$by_ip" open
	expect neighbour "$by_ip" open
	mark "open without a policy"

	echo "smoke.sh: default-deny ingress: every client blocked" >&2
	deny_all_ingress | k apply -f - >/dev/null
	expect probe "$by_ip" blocked
	expect probe "$by_name" blocked
	expect other "$by_ip" blocked
	expect neighbour "$by_ip" blocked
	mark "default deny enforced"

	echo "smoke.sh: allow app=probe -> app=server:8080: probe reaches it again, the others do not" >&2
	allow_probe | k apply -f - >/dev/null
	expect probe "$by_ip" open
	expect probe "$by_name" open
	expect other "$by_ip" blocked
	expect neighbour "$by_ip" blocked
	mark "allow rule enforced"

	echo
	printf '%s\n' "${timings[@]}"
	echo "smoke.sh: PASS: NetworkPolicy enforced on a 3-node kind cluster in $((SECONDS - start))s"
}

main "$@"
