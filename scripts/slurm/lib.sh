# shellcheck shell=bash
# Shared helpers of up.sh and down.sh: the daemons of one cluster directory and their liveness.
# Sourced, not run. A daemon counts as ours only if its PID file is in $D, the process is not a
# zombie, its name matches, and its command line or environment names $D (guards against PID reuse).

# name:pidfile for every daemon, in start order.
daemons() {
  echo "munged:$D/munge/munged.pid"
  echo "mariadbd:$D/mariadb.pid"
  echo "slurmdbd:$D/slurmdbd.pid"
  echo "slurmctld:$D/slurmctld.pid"
  echo "slurmd:$D/slurmd.pid"
}

# pid_of NAME PIDFILE: prints the PID if that daemon of this cluster is running, else fails.
pid_of() {
  local name=$1 file=$2 pid state text
  [ -s "$file" ] || return 1
  pid=$({ tr -dc '0-9' <"$file"; } 2>/dev/null || true)
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ "$state" != Z ] && [ "$state" != X ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  text=$({ tr '\0' '\n' <"/proc/$pid/cmdline"; tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null || true)
  [[ "$text" == *"$D/"* ]] || return 1
  echo "$pid"
}

# port_busy PORT: something listens on PORT (IPv4 or IPv6).
port_busy() {
  local hex
  hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h="$hex" '$4 == "0A" && $2 ~ (":" h "$") {f=1} END {exit !f}'
}
