#!/usr/bin/env bash
# build-tool.sh NAME MODULE_DIR PACKAGE VERSION [LDFLAGS]
#
# Builds bin/NAME from PACKAGE in the tools module MODULE_DIR, unless bin/NAME was already built
# from the same sources: a stamp (hash of the Go version, the module's go.mod/go.sum, its Go
# files, the flags, CGO_ENABLED and GOFLAGS) next to the binary decides. Prints one line per
# binary either way, so a long cold build says what it is doing.
set -euo pipefail

name=$1 moddir=$2 pkg=$3 version=$4 ldflags=${5:-}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SECURETEXT_BIN:-$root/bin}
out=$bin/$name
stampdir=$bin/.stamps
mkdir -p "$stampdir"

stamp=$(
  {
    go version
    go env CGO_ENABLED GOFLAGS
    echo "$pkg $version $ldflags"
    cat "$root/$moddir/go.mod" "$root/$moddir/go.sum"
    find "$root/$moddir" -name '*.go' -print0 | sort -z | xargs -0 cat
  } | sha256sum | cut -d' ' -f1
)

if [[ -x $out && -f $stampdir/$name && $(cat "$stampdir/$name") == "$stamp" ]]; then
  echo "bin/$name $version: up to date"
  exit 0
fi

echo "bin/$name $version: building from $moddir (minutes when the Go build cache is cold)..."
start=$(date +%s)
(cd "$root/$moddir" && go build -ldflags "$ldflags" -o "$out.tmp" "$pkg")
mv "$out.tmp" "$out"
echo "$stamp" >"$stampdir/$name"
echo "bin/$name $version: built in $(($(date +%s) - start))s"
