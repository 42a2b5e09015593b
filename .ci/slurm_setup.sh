#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/test_slurm.py (and CI, which runs it
# through `make test`). Debian/Ubuntu, as root. Idempotent: installs only missing packages,
# rewrites the config only when it changed, starts only daemons that are not running, and
# returns once `sinfo` shows the node idle.
#
#   sudo .ci/slurm_setup.sh            # then: sinfo; squeue --states=all
#
# The cluster has no accounting database (AccountingStorageType=accounting_storage/none), so
# `sacct` does not work: Snakemake's SLURM executor must poll with `squeue`
# (--slurm-status-command squeue), which sees finished jobs for MinJobAge seconds.
# The node advertises one count-only "gpu" GRES (no device file), so GPU requests
# (--gpus=1 --cpus-per-gpu=N) are scheduled here too; the jobs themselves run on the CPU.
set -euo pipefail

NODE=localhost
PARTITION=debug
CONF_DIR=/etc/slurm
FAKE_GPUS=${SLURM_SETUP_GPUS:-1}
WAIT_S=${SLURM_SETUP_TIMEOUT:-120}

log() { echo "[slurm_setup] $*" >&2; }
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }  # by pid file (no procps needed)
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (try: sudo $0)"

# -- 1. packages --------------------------------------------------------------------------------
missing=()
for pair in /usr/sbin/slurmctld:slurmctld /usr/sbin/slurmd:slurmd /usr/bin/sbatch:slurm-client \
            /usr/sbin/munged:munge; do
    [ -x "${pair%%:*}" ] || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# -- 2. munge -----------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating the munge key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! running /run/munge/munged.pid; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged </dev/null >>/var/log/munge/start.log 2>&1 \
        || { cat /var/log/munge/start.log >&2; die "munged did not start"; }
fi
for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

# -- 3. configuration ---------------------------------------------------------------------------
# This machine's CPUs and memory as slurmd sees them: a node declaring more than it has is drained.
hw=$(/usr/sbin/slurmd -C | head -1)
cpus=$(sed -n 's/.*\bCPUs=\([0-9]*\).*/\1/p' <<<"$hw")
mem=$(sed -n 's/.*\bRealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
[ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs/RealMemory from 'slurmd -C': $hw"

install -d -m 0755 "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf=$(cat <<EOF
# Written by .ci/slurm_setup.sh: a single-node cluster for tests, without accounting.
ClusterName=medtl-ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to 'squeue --states=all' (the executor's status command here) for 10 min
MinJobAge=600
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$FAKE_GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
gres="NodeName=$NODE Name=gpu Count=$FAKE_GPUS File=/dev/null"

changed=0
if [ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" != "$conf" ]; then
    printf '%s\n' "$conf" >"$CONF_DIR/slurm.conf"
    changed=1
fi
if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "$gres" ]; then
    printf '%s\n' "$gres" >"$CONF_DIR/gres.conf"
    changed=1
fi

# -- 4. daemons ---------------------------------------------------------------------------------
stop_daemon() {  # by its pid file: only the daemon this script started
    local pidfile=$1 pid
    running "$pidfile" || return 0
    pid=$(cat "$pidfile")
    log "config changed: stopping $(basename "$pidfile" .pid) ($pid)"
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    die "$(basename "$pidfile" .pid) ($pid) did not stop"
}
if [ "$changed" = 1 ]; then
    stop_daemon /run/slurmd.pid
    stop_daemon /run/slurmctld.pid
fi
if ! running /run/slurmctld.pid; then
    log "starting slurmctld"
    /usr/sbin/slurmctld </dev/null >>/var/log/slurm/start.log 2>&1 \
        || { tail -n 20 /var/log/slurm/start.log >&2; die "slurmctld did not start"; }
fi
if ! running /run/slurmd.pid; then
    log "starting slurmd"
    /usr/sbin/slurmd -N "$NODE" </dev/null >>/var/log/slurm/start.log 2>&1 \
        || { tail -n 20 /var/log/slurm/start.log >&2; die "slurmd did not start"; }
fi

# -- 5. wait for the node -----------------------------------------------------------------------
deadline=$((SECONDS + WAIT_S))
state=""
while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mixed|allocated|completing) log "node $NODE is $state (CPUs=$cpus RealMemory=$mem)"; exit 0 ;;
        inval*) break ;;  # the node does not match its config: resuming does not help
        drain*|down*|fail*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
log "node state: '${state:-unknown}'"
scontrol show node "$NODE" 2>/dev/null | grep -i reason >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
die "node $NODE not idle after ${WAIT_S}s"
