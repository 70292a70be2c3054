#!/usr/bin/env bash
# Stops the single-node SLURM cluster of DIR (started by up.sh) by the PID files in DIR; idempotent.
#
# Usage: scripts/slurm/down.sh DIR [--purge]
#   Cancels the cluster's jobs, then stops slurmd, slurmctld, slurmdbd, mariadbd and munged (SIGTERM,
#   SIGKILL after 15 s). Only processes whose PID file is in DIR and whose command line or environment
#   names DIR are signalled. --purge also deletes DIR afterwards (job history, database, key).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(realpath -m "${1:?usage: down.sh DIR [--purge]}")
PURGE=0
case "${2:-}" in
  --purge) PURGE=1 ;;
  "") ;;
  *) echo "down.sh: unknown option '$2' (valid: --purge)" >&2; exit 2 ;;
esac
# shellcheck source=scripts/slurm/lib.sh
. "$HERE/lib.sh"
[ -d "$D" ] || exit 0
export SLURM_CONF="$D/slurm.conf"

# Cancel jobs first so that no slurmstepd outlives slurmd; KillWait in slurm.conf bounds the wait.
if pid_of slurmctld "$D/slurmctld.pid" >/dev/null; then
  jobs=$(squeue -h -o '%A' 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 100); do
      [ -z "$(squeue -h -o '%A' 2>/dev/null || true)" ] && break
      sleep 0.2
    done
  fi
fi

stopped=()
# Reverse start order: slurmd, slurmctld, slurmdbd, mariadbd, munged.
while IFS=: read -r name file; do
  pid=$(pid_of "$name" "$file") || { rm -f "$file"; continue; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    pid_of "$name" "$file" >/dev/null || break
    sleep 0.1
  done
  if pid_of "$name" "$file" >/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$file"
  stopped+=("$name($pid)")
done < <(daemons | tac)

[ ${#stopped[@]} -eq 0 ] || echo "slurm down: stopped ${stopped[*]}"
if [ $PURGE = 1 ]; then rm -rf "$D"; fi
