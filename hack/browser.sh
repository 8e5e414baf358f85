#!/usr/bin/env bash
# The browser parts of the tests: Debian's chromium, which hack/testenv drives with chromedp, and
# axe-core, the accessibility engine that hack/testenv injects into the pages under test.
#
#   hack/browser.sh ensure   install chromium (apt) and axe-core (npm, into bin/axe-core) if missing
#   hack/browser.sh path     print the chromium binary and axe.min.js that the tests will use
#
# axe-core is pinned and installed into the project's bin/ folder (never globally), so every
# machine checks pages against the same rules. Nothing here starts a browser.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# AXE_VERSION is the axe-core release the accessibility checks run. Bump it on purpose: a new
# release can add rules, and so new findings.
AXE_VERSION=4.14.1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SECURETEXT_BIN:-$root/bin}
axe_dir=$bin/axe-core
axe_js=$axe_dir/node_modules/axe-core/axe.min.js

# chromium prints the browser binary the tests use: $SECURETEXT_CHROMIUM, else Debian's.
chromium() {
	echo "${SECURETEXT_CHROMIUM:-/usr/bin/chromium}"
}

# axe_installed succeeds when bin/axe-core holds the pinned release.
axe_installed() {
	[[ -s $axe_js ]] &&
		grep -q "\"version\": *\"$AXE_VERSION\"" "$axe_dir/node_modules/axe-core/package.json" 2>/dev/null
}

ensure_chromium() {
	local path
	path=$(chromium)
	if [[ -x $path ]]; then
		return 0
	fi
	if [[ -n ${SECURETEXT_CHROMIUM:-} ]]; then
		echo "browser.sh: SECURETEXT_CHROMIUM=$path is not an executable file" >&2
		return 1
	fi
	# fonts-dejavu-core gives screenshots real glyphs; without any font Chromium draws boxes.
	apt_install chromium fonts-dejavu-core
	if [[ ! -x $path ]]; then
		echo "browser.sh: installed Debian's chromium package but found no $path" >&2
		return 1
	fi
	echo "browser.sh: installed $("$path" --version 2>/dev/null || echo chromium) at $path" >&2
}

ensure_axe() {
	if axe_installed; then
		return 0
	fi
	if ! command -v npm >/dev/null 2>&1; then
		# Debian's npm depends on Debian's nodejs; a machine that already has Node.js from
		# elsewhere ships npm with it, so npm is only missing where Node.js is too.
		apt_install nodejs npm
	fi
	mkdir -p "$axe_dir"
	quietly "npm install axe-core@$AXE_VERSION into $axe_dir" \
		npm install --prefix "$axe_dir" --no-audit --no-fund --no-update-notifier --save-exact \
		"axe-core@$AXE_VERSION"
	if ! axe_installed; then
		echo "browser.sh: npm finished but $axe_js (axe-core $AXE_VERSION) is missing" >&2
		return 1
	fi
	echo "browser.sh: installed axe-core $AXE_VERSION in $axe_dir" >&2
}

case "${1:-}" in
ensure)
	ensure_chromium
	ensure_axe
	;;
path)
	missing=0
	if [[ ! -x $(chromium) ]]; then
		echo "browser.sh: $(chromium) is missing: run \`hack/browser.sh ensure\`" >&2
		missing=1
	fi
	if ! axe_installed; then
		echo "browser.sh: $axe_js (axe-core $AXE_VERSION) is missing: run \`hack/browser.sh ensure\`" >&2
		missing=1
	fi
	if [[ $missing -ne 0 ]]; then
		exit 1
	fi
	echo "chromium $(chromium)"
	echo "axe-core $axe_js"
	;;
*)
	echo "usage: $0 ensure|path" >&2
	exit 2
	;;
esac
