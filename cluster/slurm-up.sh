#!/usr/bin/env bash
# Install, configure and start a single-node SLURM on this machine (as root).
#
# For tests and demonstrations: one node (this host, reached on 127.0.0.1),
# one partition, munge authentication, no accounting database.  Written for
# machines without systemd and without cgroups (containers, CI runners):
# the daemons are started by hand, processes are tracked through /proc
# (proctrack/linuxproc) and tasks are not confined (task/none).
#
# Idempotent: packages already installed are not reinstalled, daemons already
# running are left running (restarted only if slurm.conf changed), and the
# script ends only when `sinfo` shows the node idle and a trivial job ran.
#
# Usage: sudo cluster/slurm-up.sh        (stop with cluster/slurm-down.sh)
# Environment: SLURM_PARTITION (default "debug"),
#              SLURM_MEM_HEADROOM_MB (memory kept back from SLURM, default 2048).
set -euo pipefail

PARTITION=${SLURM_PARTITION:-debug}
HEADROOM_MB=${SLURM_MEM_HEADROOM_MB:-2048}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
HOST=$(hostname -s)

log() { echo "slurm-up: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    echo "slurm-up: must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

alive() {  # alive PIDFILE: the process recorded in PIDFILE is running
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# --- packages -----------------------------------------------------------------
need=()
for pkg in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Package scripts must not try to start services: we start them below.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

# --- munge ----------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if ! alive /run/munge/munged.pid; then
    log "starting munged"
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
munge -n </dev/null | unmunge >/dev/null || { log "munge does not work"; exit 1; }

# --- slurm.conf -------------------------------------------------------------------
# The node's shape as slurmd itself detects it (a mismatch would drain the node),
# with memory reduced by a headroom for the operating system and the driver.
read -r -a shape <<<"$(slurmd -C | head -1)"
node_shape=()
for kv in "${shape[@]}"; do
    case $kv in
        CPUs=*|Boards=*|SocketsPerBoard=*|CoresPerSocket=*|ThreadsPerCore=*) node_shape+=("$kv") ;;
        RealMemory=*) mem=${kv#RealMemory=} ;;
    esac
done
mem=$((mem > HEADROOM_MB + 512 ? mem - HEADROOM_MB : mem / 2))

mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
new=$(mktemp)
cat >"$new" <<EOF
# Single-node SLURM written by cluster/slurm-up.sh; edits are overwritten.
ClusterName=localcluster
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
# No cgroups on these machines: track processes through /proc, do not confine tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Short timers: a test cancels jobs and expects the node back quickly.
SchedulerParameters=sched_interval=2
MessageTimeout=20
KillWait=5
MinJobAge=60
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 ${node_shape[*]} RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
changed=0
if ! cmp -s "$new" "$CONF"; then
    log "writing $CONF (${node_shape[*]} RealMemory=$mem)"
    install -m 0644 "$new" "$CONF"
    changed=1
fi
rm -f "$new"

# --- daemons ----------------------------------------------------------------------
if ((changed)); then
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if alive "$pidfile"; then
            kill "$(cat "$pidfile")"
            for _ in $(seq 50); do alive "$pidfile" || break; sleep 0.1; done
        fi
    done
fi
if ! alive /run/slurmctld.pid; then
    log "starting slurmctld"
    slurmctld
fi
if ! alive /run/slurmd.pid; then
    log "starting slurmd"
    slurmd
fi

# --- wait until usable --------------------------------------------------------------
state=""
for _ in $(seq 60); do
    state=$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null || true)
    [[ $state == idle ]] && break
    # A node left down/drained by an earlier run comes back now.
    [[ $state == down* || $state == drain* ]] && scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
    sleep 1
done
if [[ $state != idle ]]; then
    log "node $HOST is '$state', not idle; see /var/log/slurm/"
    exit 1
fi
# The first job waits a few seconds for the scheduler's first pass.
out=$(timeout 120 srun -N1 -n1 -t 1 -J slurm-up-check hostname)
[[ $out == "$(hostname)" ]] || { log "srun returned '$out'"; exit 1; }
timeout 120 sbatch --wait -Q -J slurm-up-check -t 1 -o /dev/null --wrap true
log "SLURM is up: partition '$PARTITION' on $HOST"
sinfo
