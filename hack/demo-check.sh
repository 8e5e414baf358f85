#!/usr/bin/env bash
# Checks the README's run command the way a newcomer uses it: `make demo` starts the stack,
# swaks (installed from Debian if missing) sends a mail to 2025550143@text.demo.localhost and
# gets 250, the console shows the text with the link, and the link opens the viewer. Used by .ci/run.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

missing=()
command -v swaks >/dev/null || missing+=(swaks)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  echo "demo-check: installing ${missing[*]} from Debian"
  apt_install "${missing[@]}"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
  echo $((20000 + RANDOM % 20000)); }
smtp_port=$(free_port); api_port=$(free_port)
data=$(mktemp -d)
out=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data" "$out"' EXIT

make --no-print-directory demo DEMO_FLAGS="-data $data -smtp-addr 127.0.0.1:$smtp_port -api-addr 127.0.0.1:$api_port -metrics-addr=" >"$out" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  grep -q "The text the patient would get appears below" "$out" && break
  kill -0 "$pid" 2>/dev/null || { cat "$out"; echo "demo-check: make demo exited"; exit 1; }
  sleep 1
done
grep -q "The text the patient would get appears below" "$out" || { cat "$out"; echo "demo-check: make demo did not start"; exit 1; }

reply=$(swaks --server 127.0.0.1 --port "$smtp_port" --from clinic@demo.localhost \
  --to 2025550143@text.demo.localhost --header "Subject: Lab results" --body "Your results are ready." 2>&1)
echo "$reply" | grep -q '<-  250 ' || { echo "$reply"; echo "demo-check: swaks did not get 250"; exit 1; }

for _ in $(seq 1 30); do
  link=$(grep -Eo 'Demo Clinic: You have a secure message\. http://127\.0\.0\.1:8090/m/[a-z2-7]{26} Reply STOP to opt out' "$out" | grep -Eo 'http://[^ ]+' | head -n 1 || true)
  if [[ -n $link ]]; then
    page=$(curl -fsS "$link") || { echo "demo-check: the link $link does not open"; exit 1; }
    grep -q 'Demo Clinic' <<<"$page" || { echo "$page"; echo "demo-check: the link's page does not show the clinic"; exit 1; }
    echo "demo-check: make demo started, swaks got 250, the console shows the text, and its link opens the viewer"
    exit 0
  fi
  sleep 1
done
cat "$out"
echo "demo-check: no text with a link on the console"
exit 1
