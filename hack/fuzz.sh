#!/usr/bin/env bash
# Runs each fuzz target for FUZZTIME (default 8s). Go fuzzes one target per `go test`, so the
# targets are listed here by package. A failing input is written by go test to
# <package>/testdata/fuzz/<target>/<hash>: commit it, and it runs as a regression case in
# `make test` from then on. The corpus the fuzzer grows stays in the Go build cache
# ($(go env GOCACHE)/fuzz), so each run continues where the last one stopped.
#
# Usage: hack/fuzz.sh [target...]   (no argument: every target)
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-8s}

# package:target, one per line.
targets="
workloads/phone:FuzzNormalize
workloads/gateway:FuzzParseMail
workloads/gateway:FuzzAPIRequest
workloads/gateway:FuzzLoadSenders
workloads/gateway:FuzzSMTPRcpt
workloads/gateway:FuzzSMTPAuth
workloads/audit:FuzzExportVerify
workloads/audit:FuzzVerify
workloads/sms:FuzzWebhookCallback
workloads/sms:FuzzVerifyWebhook
workloads/sms:FuzzTwilioCallback
"

# A fuzz target missing from the list above would never run in CI.
missing=0
while IFS=: read -r file name; do
  pkg=$(dirname "$file")
  if ! grep -qx "$pkg:$name" <<<"$targets"; then
    echo "fuzz.sh: $file defines $name, which is not in hack/fuzz.sh's list" >&2
    missing=1
  fi
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' workloads controllers api 2>/dev/null | sed 's/:func /:/')
if [[ $missing -ne 0 ]]; then
  exit 1
fi

# inputs lists the failing inputs saved for a target.
inputs() {
  ls "$1/testdata/fuzz/$2" 2>/dev/null || true
}

# fuzz runs one target once; it fails when go test does.
fuzz() {
  go test "./$1" -run '^$' -fuzz "^${2}\$" -fuzztime "$FUZZTIME" 2>&1 | grep -v '^fuzz: elapsed'
}

status=0
for entry in $targets; do
  pkg=${entry%%:*} name=${entry##*:}
  if [[ $# -gt 0 ]] && ! printf '%s\n' "$@" | grep -qx "$name"; then
    continue
  fi
  echo "== $name ($pkg, $FUZZTIME)"
  start=$(date +%s)
  before=$(inputs "$pkg" "$name")
  if ! fuzz "$pkg" "$name"; then
    # Go 1.26's fuzz coordinator can fail a target with "context deadline exceeded" as
    # -fuzztime ends, having found nothing (go.dev/issue/75804, fixed in Go 1.27). A failure
    # that saved no input is run once more; a failure that saved one, or fails twice, counts.
    if [[ $(inputs "$pkg" "$name") == "$before" ]]; then
      echo "== $name failed without saving an input (go.dev/issue/75804?): running it once more"
      if fuzz "$pkg" "$name"; then
        echo "   $name took $(($(date +%s) - start))s"
        continue
      fi
    fi
    status=1
    echo "== $name failed: commit the input saved under $pkg/testdata/fuzz/$name/ with the fix" >&2
  fi
  echo "   $name took $(($(date +%s) - start))s"
done
exit "$status"
