#!/usr/bin/env bash
# run.sh — `make run`: a local control plane (kube-apiserver + etcd from bin/), the CRDs and the
# samples installed, and the operator running against it in the foreground. Ctrl-C stops all.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SECURETEXT_BIN:-$root/bin}
state=$bin/local
kubeconfig=$state/kubeconfig
kubectl=("$bin/kubectl" --kubeconfig "$kubeconfig")
mkdir -p "$state"
rm -f "$kubeconfig" "$state/vault-addr" "$state/vault-token"

cd "$root"
go build -o "$bin/localcluster" ./hack/localcluster
"$bin/localcluster" -write-kubeconfig "$kubeconfig" -vault-dir "$state" >"$state/controlplane.log" 2>&1 &
cp_pid=$!
cleanup() {
  [[ -n ${op_pid:-} ]] && kill "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null
  kill "$cp_pid" 2>/dev/null && wait "$cp_pid" 2>/dev/null
  true
}
trap cleanup EXIT INT TERM

echo "starting kube-apiserver, etcd and Vault (log: $state/controlplane.log)..."
for _ in $(seq 1 240); do
  [[ -s $kubeconfig && -s $state/vault-token ]] && break
  kill -0 "$cp_pid" 2>/dev/null || { tail -20 "$state/controlplane.log"; exit 1; }
  sleep 0.5
done
[[ -s $kubeconfig && -s $state/vault-token ]] || { echo "control plane did not start; see $state/controlplane.log" >&2; exit 1; }

"${kubectl[@]}" create namespace securetext-system --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null
"$bin/securetext-operator" --kubeconfig "$kubeconfig" \
  --leader-election-namespace securetext-system \
  --metrics-bind-address 127.0.0.1:8080 --metrics-secure=false --health-probe-bind-address 127.0.0.1:8081 \
  --workload-image securetext/workloads:dev \
  --vault-addr "$(cat "$state/vault-addr")" --vault-auth token --vault-token-file "$state/vault-token" \
  >"$state/operator.log" 2>&1 &
op_pid=$!

# Cluster-scoped samples first; the LegalHold sample lives in the clinic tenant's namespace,
# which the operator creates.
for f in config/samples/securetext_v1alpha1_{retentionpolicy,securetexttenant,securetexttenant_demo}.yaml; do
  "${kubectl[@]}" apply -f "$f"
done
sleep 1
kill -0 "$op_pid" 2>/dev/null || { echo "the operator exited; its log:" >&2; tail -30 "$state/operator.log" >&2; exit 1; }
# The local control plane has no nodes, so the workloads never become available: VaultReady
# (the tenant's Transit mount, keys, policy and role) is what can be waited for here.
"${kubectl[@]}" wait --for=condition=VaultReady stt --all --timeout=60s ||
  { echo "tenants did not become VaultReady; operator log:" >&2; tail -30 "$state/operator.log" >&2; exit 1; }
"${kubectl[@]}" apply -f config/samples/securetext_v1alpha1_legalhold.yaml

cat <<MSG

SecureText operator is running against a local control plane (operator log: $state/operator.log).
Try, in another terminal:

  export KUBECONFIG=$kubeconfig
  $bin/kubectl get stt
  $bin/kubectl get stt -o wide; $bin/kubectl describe stt clinic    # conditions and events
  $bin/kubectl get deploy,svc,netpol,pdb,ingress,secret -n securetext-clinic
  $bin/kubectl get rp,lh -A
  $bin/kubectl apply -f config/samples/invalid/tenant-unknown-sms-provider.yaml   # refused, with the reason

Metrics: http://127.0.0.1:8080/metrics   Ctrl-C stops everything.
MSG
"${kubectl[@]}" get stt
wait "$op_pid"
