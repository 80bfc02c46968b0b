#!/usr/bin/env bash
# Optional CI helper: check that the MPI/Slurm test prerequisites are installed and
# start munged (idempotent).  The pytest fixture in tests/helpers/slurm_cluster.py
# does the munged part itself and starts slurmctld/slurmd per test session, so
# this script only makes a missing package or a broken munge fail early and loudly.
#
#   apt-get install -y openmpi-bin libopenmpi-dev slurm-wlm   # beforehand
#   bash .ci/start_services.sh
set -euo pipefail

missing=()
for b in mpirun slurmctld slurmd sbatch srun scontrol sinfo munged munge unmunge runuser; do
    command -v "$b" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if ((${#missing[@]})); then
    echo "start_services: missing: ${missing[*]} (apt-get install -y openmpi-bin libopenmpi-dev slurm-wlm)" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "start_services: must run as root (munged as user munge, SlurmUser=root)" >&2
    exit 1
fi

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "start_services: munged already running"
else
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null 2>&1 || [[ -x /usr/sbin/mungekey ]]; then
            /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key
        else
            create-munge-key -f
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 100); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null
    echo "start_services: munged started (pid $(cat /run/munge/munged.pid))"
fi

echo "start_services: $(slurmctld -V), $(mpirun --version 2>/dev/null | head -n1)"
