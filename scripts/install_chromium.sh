#!/usr/bin/env bash
# Installs Debian's chromium (headless screenshots and DOM dumps of the HTML reports in the tests),
# only when it is missing. Usage: scripts/install_chromium.sh   (root, or a user with passwordless sudo).
# Silent when it is already installed.
set -euo pipefail
installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' chromium 2>/dev/null || true)" = installed ]
}
installed && exit 0

if [ "$(id -u)" -eq 0 ]; then SUDO=()
elif sudo -n true 2>/dev/null; then SUDO=(sudo -n)
else
  echo "install_chromium.sh: need root or passwordless sudo to apt-get install chromium" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "install_chromium.sh: apt-get not found; install chromium by hand" >&2
  exit 1
fi

echo "installing chromium (apt)"
start=$(date +%s.%N)
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  chromium fonts-dejavu-core >/dev/null
installed || { echo "install_chromium.sh: chromium is still not installed" >&2; exit 1; }
took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')
echo "installed chromium in $took s"
