#!/usr/bin/env bash
# Brings up a single-node SLURM cluster without systemd, all state under DIR; idempotent.
#
# Usage (root): scripts/slurm/up.sh DIR [--accounting]
#   then clients need only: export SLURM_CONF=DIR/slurm.conf
#
# Daemons (each with its PID file in DIR, started only if not already running):
#   munged (private socket and key in DIR/munge), slurmctld, slurmd, and with --accounting
#   mariadbd (datadir DIR/mysql) + slurmdbd, so that sacct works and submitit notices cancelled jobs.
# Ports: SPD_SLURM_PORT_BASE if set, else chosen once from a hash of DIR among free ports and kept in
#   DIR/ports.env; base..base+3 = slurmctld, slurmd, slurmdbd, mariadb. Several clusters can coexist.
# The node's CPUs and memory come from `slurmd -C`. Stop with scripts/slurm/down.sh DIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(realpath -m "${1:?usage: up.sh DIR [--accounting]}")
ACCT=0
case "${2:-}" in
  --accounting) ACCT=1 ;;
  "") ;;
  *) echo "up.sh: unknown option '$2' (valid: --accounting)" >&2; exit 2 ;;
esac
# shellcheck source=scripts/slurm/lib.sh
. "$HERE/lib.sh"

for bin in munged mungekey slurmctld slurmd sinfo scontrol; do
  command -v "$bin" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
  command -v "$bin" >/dev/null || { echo "up.sh: '$bin' not found; run scripts/slurm/install.sh" >&2; exit 1; }
done
if [ $ACCT = 1 ]; then
  for bin in slurmdbd sacctmgr mariadbd mariadb-install-db mariadb; do
    command -v "$bin" >/dev/null || { echo "up.sh: '$bin' not found; run scripts/slurm/install.sh" >&2; exit 1; }
  done
fi
[ "$(id -u)" -eq 0 ] || { echo "up.sh: must run as root (SlurmUser=root, private munged)" >&2; exit 1; }
[ ${#D} -le 80 ] || { echo "up.sh: DIR path is ${#D} chars; keep it <= 80 (unix socket paths live under it)" >&2; exit 2; }

mkdir -p "$D"/{state,spool,log,munge}
chmod 755 "$D" "$D/munge"   # munged wants its socket directory traversable by everyone
export SLURM_CONF="$D/slurm.conf"

# --- ports -------------------------------------------------------------------------------------
any_running() {
  while IFS=: read -r name file; do pid_of "$name" "$file" >/dev/null && return 0; done < <(daemons)
  return 1
}
ports_busy() { port_busy "$1" || port_busy $(($1 + 1)) || port_busy $(($1 + 2)) || port_busy $(($1 + 3)); }
if [ -n "${SPD_SLURM_PORT_BASE:-}" ]; then
  BASE=$SPD_SLURM_PORT_BASE
elif [ -s "$D/ports.env" ] && { any_running || ! ports_busy "$(sed -n 's/^BASE=//p' "$D/ports.env")"; }; then
  BASE=$(sed -n 's/^BASE=//p' "$D/ports.env")
else
  # Below the kernel's ephemeral range (32768+), 4 consecutive free ports, start derived from DIR.
  BASE=$(( 10000 + ($(printf '%s' "$D" | cksum | cut -d' ' -f1) % 5500) * 4 ))
  for _ in $(seq 1 200); do
    ports_busy "$BASE" || break
    BASE=$(( BASE + 4 > 31996 ? 10000 : BASE + 4 ))
  done
fi
echo "BASE=$BASE" >"$D/ports.env"
CTLD_PORT=$BASE SLURMD_PORT=$((BASE + 1)) DBD_PORT=$((BASE + 2)) DB_PORT=$((BASE + 3))

# --- configuration -----------------------------------------------------------------------------
read -r CPUS MEM < <(slurmd -C | head -n1 | tr ' ' '\n' \
  | awk -F= '$1=="CPUs"{c=$2} $1=="RealMemory"{m=$2} END{print c, m}')
MEM=$(( MEM > 2048 ? MEM - 1024 : MEM / 2 ))   # MiB; leave room for the OS
AUTHINFO="AuthInfo=socket=$D/munge/munge.socket"
if [ $ACCT = 1 ]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$D/munge/munge.socket
JobAcctGatherType=jobacct_gather/linux"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat >"$D/slurm.conf.new" <<CONF
# Written by scripts/slurm/up.sh; single node, no cgroups (linuxproc / task none).
ClusterName=local
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
$AUTHINFO
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
MailProg=/bin/true
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
JobCompType=jobcomp/none
$ACCT_LINES
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

if [ -f "$D/slurm.conf" ] && ! cmp -s "$D/slurm.conf" "$D/slurm.conf.new"; then
  if any_running; then
    rm -f "$D/slurm.conf.new"
    echo "up.sh: $D/slurm.conf would change (accounting mode, ports or machine) while daemons run;" \
         "run scripts/slurm/down.sh $D first" >&2
    exit 1
  fi
fi
mv "$D/slurm.conf.new" "$D/slurm.conf"

# wait_for SECONDS CMD...: retries CMD every 0.1 s.
wait_for() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}
T0=$(date +%s.%N)
step() {  # SPD_SLURM_TIMING=1 prints the elapsed time at each step to stderr
  [ -z "${SPD_SLURM_TIMING:-}" ] || awk -v s="$T0" -v e="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "%6.2f s  %s\n", e-s, m}' >&2
}
fail() { echo "up.sh: $*" >&2; for f in "$D"/log/*.log "$D"/munge/munged.log; do
  [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done; exit 1; }

step "config written"
# --- munged ------------------------------------------------------------------------------------
if ! pid_of munged "$D/munge/munged.pid" >/dev/null; then
  [ -s "$D/munge/munge.key" ] || mungekey -c -k "$D/munge/munge.key"
  chmod 600 "$D/munge/munge.key"
  rm -f "$D/munge/munge.socket" "$D/munge/munge.socket.lock"
  munged --socket="$D/munge/munge.socket" --key-file="$D/munge/munge.key" \
    --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
    --seed-file="$D/munge/munged.seed" || fail "munged did not start"
fi
wait_for 10 sh -c "munge -S '$D/munge/munge.socket' -n | unmunge -S '$D/munge/munge.socket'" \
  || fail "munge does not answer on $D/munge/munge.socket"

step "munged answers"
# --- accounting: mariadb + slurmdbd ------------------------------------------------------------
if [ $ACCT = 1 ]; then
  SQL=(mariadb --no-defaults --socket="$D/mysql.sock" -uroot)
  # A throw-away test database: small files, no durability (no doublewrite, no fsync per commit).
  INNODB=(--innodb-buffer-pool-size=64M --innodb-log-file-size=16M --innodb-doublewrite=0
          --innodb-flush-log-at-trx-commit=0 --innodb-lock-wait-timeout=900)
  if ! pid_of mariadbd "$D/mariadb.pid" >/dev/null; then
    port_busy "$DB_PORT" && fail "port $DB_PORT (mariadb) is taken by another process; set SPD_SLURM_PORT_BASE"
    if [ ! -d "$D/mysql/mysql" ]; then
      mariadb-install-db --no-defaults --user=root --datadir="$D/mysql" --auth-root-authentication-method=normal \
        --skip-test-db --skip-name-resolve "${INNODB[@]}" >"$D/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
    fi
    mkdir -p "$D/mysql-tmp"
    # setsid + nohup: the server must outlive this shell and not hold the caller's terminal or pipes.
    setsid nohup mariadbd --no-defaults --user=root --datadir="$D/mysql" --tmpdir="$D/mysql-tmp" \
      --socket="$D/mysql.sock" --pid-file="$D/mariadb.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
      --log-error="$D/log/mariadb.log" --skip-log-bin --skip-name-resolve \
      "${INNODB[@]}" </dev/null >/dev/null 2>&1 &
    step "mariadb datadir ready"
    wait_for 30 "${SQL[@]}" -e 'select 1' || fail "mariadb did not answer on $D/mysql.sock"
    "${SQL[@]}" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || fail "could not create the slurm db user"
  fi
  cat >"$D/slurmdbd.conf" <<CONF
# Written by scripts/slurm/up.sh; found next to \$SLURM_CONF.
AuthType=auth/munge
$AUTHINFO
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$D/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$D/slurmdbd.conf"
  if ! pid_of slurmdbd "$D/slurmdbd.pid" >/dev/null; then
    port_busy "$DBD_PORT" && fail "port $DBD_PORT (slurmdbd) is taken by another process; set SPD_SLURM_PORT_BASE"
    step "mariadb answers"
    slurmdbd || fail "slurmdbd did not start"
  fi
  wait_for 30 sacctmgr -n list cluster || fail "slurmdbd does not answer (sacctmgr list cluster)"
  clusters=$(sacctmgr -n -P list cluster format=cluster)
  [[ $'\n'"$clusters"$'\n' == *$'\n'local$'\n'* ]] \
    || sacctmgr -i add cluster local >/dev/null || fail "sacctmgr add cluster failed"
fi

step "accounting ready"
# --- slurmctld + slurmd -------------------------------------------------------------------------
if ! pid_of slurmctld "$D/slurmctld.pid" >/dev/null; then
  port_busy "$CTLD_PORT" && fail "port $CTLD_PORT (slurmctld) is taken by another process; set SPD_SLURM_PORT_BASE"
  slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
fi
if ! pid_of slurmd "$D/slurmd.pid" >/dev/null; then
  port_busy "$SLURMD_PORT" && fail "port $SLURMD_PORT (slurmd) is taken by another process; set SPD_SLURM_PORT_BASE"
  slurmd -f "$SLURM_CONF" -N localhost || fail "slurmd did not start"
fi

step "slurmctld and slurmd started"
deadline=$(( $(date +%s) + 30 ))
resumed=0
while :; do
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    drain*|down*)
      [ $resumed = 1 ] || { scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true; resumed=1; } ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || fail "node did not become idle (state: '${state:-no answer}')"
  sleep 0.2
done
step "node idle"
echo "slurm up: SLURM_CONF=$SLURM_CONF ($(sinfo -h -N -o '%N %T, %c CPUs, %m MB'), accounting=$([ $ACCT = 1 ] && echo on || echo off))"
