#!/usr/bin/env bash
# Stop the single-node SLURM started by cluster/slurm-up.sh (as root).
#
# Cancels every job still queued or running, then stops slurmd, slurmctld
# and munged through their PID files.  Packages and slurm.conf stay, so a
# later slurm-up.sh starts again in seconds.
set -euo pipefail

log() { echo "slurm-down: $*" >&2; }

stop() {  # stop NAME PIDFILE
    local pidfile=$2 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $1 ($pid)"
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pidfile"
}

if command -v squeue >/dev/null && [[ -s /run/slurmctld.pid ]]; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        scancel $jobs || true
        for _ in $(seq 30); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 1; done
    fi
fi
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop munged /run/munge/munged.pid
log "stopped"
