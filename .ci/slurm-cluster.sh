#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, for the Slurm executor's tests (recipe: shared/docs/SLURM.md).
#
#   .ci/slurm-cluster.sh start [DIR]   installs nothing; needs slurm-wlm and munge (apt-get install -y slurm-wlm munge)
#                                      and root. Writes DIR/env (export SLURM_CONF=…) and waits for an idle node.
#   .ci/slurm-cluster.sh stop [DIR]    stops the daemons it started, by PID.
#
# DIR defaults to /tmp/polyflow-slurm. Ports 6817/6818 on loopback.
set -euo pipefail
cmd=${1:?usage: slurm-cluster.sh start|stop [DIR]}
dir=${2:-/tmp/polyflow-slurm}

stop() {
  for p in slurmd slurmctld; do
    if [[ -f "$dir/$p.shell.pid" ]]; then
      pid=$(cat "$dir/$p.shell.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$p.shell.pid"
    fi
  done
  if [[ -f "$dir/munged.started" && -f /run/munge/munged.pid ]]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$dir/munged.started"
  fi
}

if [[ $cmd == stop ]]; then stop; exit 0; fi
[[ $cmd == start ]] || { echo "usage: slurm-cluster.sh start|stop [DIR]" >&2; exit 2; }

command -v slurmctld >/dev/null || { echo "slurmctld not found: apt-get install -y slurm-wlm munge" >&2; exit 1; }
stop
mkdir -p "$dir/state" "$dir/spool"
# munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  [[ -f /etc/munge/munge.key ]] || { mungekey -c 2>/dev/null || /usr/sbin/create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged
  touch "$dir/munged.started"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
cat > "$dir/slurm.conf" <<CONF
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
ReturnToService=2
MinJobAge=600
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env"
slurmctld -D -i >"$dir/slurmctld.out" 2>&1 &
echo $! > "$dir/slurmctld.shell.pid"
slurmd -D -N localhost >"$dir/slurmd.out" 2>&1 &
echo $! > "$dir/slurmd.shell.pid"
for _ in $(seq 300); do
  if sinfo -h -o %t 2>/dev/null | grep -q '^idle'; then
    echo "slurm: node idle (SLURM_CONF=$SLURM_CONF)"
    exit 0
  fi
  sleep 0.1
done
echo "slurm: the node did not become idle in 30 s; logs in $dir" >&2
tail -20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
stop
exit 1
