#!/usr/bin/env bash
# Installs the Debian packages of a single-node SLURM cluster with accounting, only those missing.
# Usage: scripts/slurm/install.sh   (root, or a user with passwordless sudo). Silent when nothing is missing.
set -euo pipefail
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then SUDO=()
elif sudo -n true 2>/dev/null; then SUDO=(sudo -n)
else
  echo "install.sh: need root or passwordless sudo to apt-get install: ${missing[*]}" >&2
  exit 1
fi
command -v apt-get >/dev/null || { echo "install.sh: apt-get not found; install ${missing[*]} by hand" >&2; exit 1; }

echo "installing ${missing[*]} (apt)"
start=$(date +%s.%N)
"${SUDO[@]}" apt-get update -qq
# Debian's postinst scripts try to start services; without systemd they are refused, which is what we want.
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] \
    || { echo "install.sh: $p is still not installed" >&2; exit 1; }
done
echo "installed ${missing[*]} in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s"
