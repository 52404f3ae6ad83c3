#!/usr/bin/env bash
# A throwaway Slurm cluster for tests: Debian's slurm-wlm 22.05, one
# slurmctld and four slurmd node names (n1..n4, `slurmd -N`), all on this
# host, authenticated by their own munged (own key and socket), with their
# own state directory and ports, so that nothing of the machine's own Slurm
# or munge is used or changed.
#
#   scripts/slurm.sh start DIR   start the cluster in the empty directory DIR;
#                                prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm.sh stop DIR    stop every daemon by its pid file, wait for
#                                each to exit, and remove DIR
#
# Nodes: with MAYFLY_SLURM_NETNS=1 each node runs in its own network
# namespace (mfs-n1..4, addresses 10.252.0.11-14 on a bridge whose host
# address is 10.252.0.1), so a job reaches the host over a real,
# non-loopback address; without it every node listens on 127.0.0.1.
# With MAYFLY_SLURM_HIDE=DIR (an existing directory) each node's slurmd, and
# so every job it runs, is in a mount namespace of its own where an empty
# tmpfs covers DIR: a directory of the submitting host that the nodes do not
# share, as on a real cluster (FIFOs and files there never reach a job).
# MAYFLY_SLURM_CPUS sets each node's CPUs (2 by default; set, slurmd reports
# it whatever the machine has: `SlurmdParameters=config_overrides`; the bench
# raises it so that 200 one-CPU workers run at once).
# Needs root (daemons run as root, munged as `munge`).
set -euo pipefail

# Ports: slurmctld on BASE+17, the nodes on BASE+21..24; several clusters
# can run at once with different MAYFLY_SLURM_PORT_BASE values.
PORT_BASE=${MAYFLY_SLURM_PORT_BASE:-16800}
SLURMCTLD_PORT=$((PORT_BASE + 17))
NODE_PORT_BASE=$((PORT_BASE + 20))
NODE_CPUS=${MAYFLY_SLURM_CPUS:-2}
# More CPUs than the machine has: slurmd reports the configured ones.
OVERRIDES=""
if [ -n "${MAYFLY_SLURM_CPUS:-}" ]; then OVERRIDES="SlurmdParameters=config_overrides"; fi
BRIDGE=mfs-br0
HOST_ADDRESS=10.252.0.1

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
D=$2

start() {
    mkdir -p "$D"
    D=$(cd "$D" && pwd)
    # A cluster that fails to start is stopped again (its munged, its
    # daemons, its namespaces): the caller has no cluster to stop.
    trap 'status=$?; trap - ERR; echo "error: the Slurm cluster in $D did not start (status $status); stopping what did" >&2; stop; exit "$status"' ERR
    local host; host=$(hostname -s)
    mkdir -p "$D"/{state,log,munge} "$D"/spool/n{1..4}
    chmod 755 "$D"
    # munged: its own key, socket, pid and log, owned by the munge user.
    dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
    chmod 755 "$D/munge"; chmod 400 "$D/munge/munge.key"
    chown -R munge:munge "$D/munge"
    runuser -u munge -- /usr/sbin/munged --socket="$D/munge/munge.sock" --key-file="$D/munge/munge.key" \
        --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed"
    local nodes=""
    local controller_address=127.0.0.1
    if [ "${MAYFLY_SLURM_NETNS:-0}" = 1 ]; then
        controller_address=$HOST_ADDRESS
        ip link add "$BRIDGE" type bridge
        ip addr add "$HOST_ADDRESS/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
        echo "$BRIDGE" > "$D/bridge"
        for n in 1 2 3 4; do
            ip netns add "mfs-n$n"
            ip link add "mfs-h$n" type veth peer name "mfs-n$n-eth"
            ip link set "mfs-n$n-eth" netns "mfs-n$n"
            ip link set "mfs-h$n" master "$BRIDGE" up
            ip netns exec "mfs-n$n" ip addr add "10.252.0.1$n/24" dev "mfs-n$n-eth"
            ip netns exec "mfs-n$n" ip link set "mfs-n$n-eth" up
            ip netns exec "mfs-n$n" ip link set lo up
            ip netns exec "mfs-n$n" ip route add default via "$HOST_ADDRESS"
            echo "mfs-n$n" >> "$D/netns"
            nodes+="NodeName=n$n NodeHostname=$host NodeAddr=10.252.0.1$n Port=$((NODE_PORT_BASE + n)) CPUs=$NODE_CPUS RealMemory=2000 State=UNKNOWN"$'\n'
        done
    else
        nodes="NodeName=n[1-4] NodeHostname=$host NodeAddr=127.0.0.1 Port=[$((NODE_PORT_BASE + 1))-$((NODE_PORT_BASE + 4))] CPUs=$NODE_CPUS RealMemory=2000 State=UNKNOWN"$'\n'
    fi
    cat > "$D/slurm.conf" <<CONF
ClusterName=mayflyci
SlurmctldHost=$host($controller_address)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$((NODE_PORT_BASE + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=300
SlurmdTimeout=30
$OVERRIDES
${nodes}PartitionName=batch Nodes=n[1-4] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    export SLURM_CONF=$D/slurm.conf
    slurmctld -i
    for n in 1 2 3 4; do
        local node=(slurmd -N "n$n")
        if [ -f "$D/netns" ]; then node=(nsenter --net="/run/netns/mfs-n$n" "${node[@]}"); fi
        if [ -n "${MAYFLY_SLURM_HIDE:-}" ]; then
            # slurmd daemonizes inside the namespace, which lives on with it.
            unshare --mount --propagation private -- sh -c 'mount -t tmpfs -o mode=0755,size=1m mayfly-not-shared "$0" && exec "$@"' \
                "$MAYFLY_SLURM_HIDE" "${node[@]}"
        else
            "${node[@]}"
        fi
    done
    local waited=0
    until [ "$(sinfo -h -t idle -o %D 2>/dev/null)" = 4 ]; do
        sleep 0.2; waited=$((waited + 1))
        if [ "$waited" -ge 300 ]; then
            echo "error: the 4 Slurm nodes are not idle after 60 s; their logs end with:" >&2
            sinfo >&2 || true
            tail -n 5 "$D"/log/*.log >&2 || true
            trap - ERR
            stop
            exit 1
        fi
    done
    echo "export SLURM_CONF=$D/slurm.conf"
}

stop_pid_file() {
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    [ -d "$D" ] || return 0
    D=$(cd "$D" && pwd)
    # Jobs first, so that no job step outlives its slurmd.
    if [ -f "$D/slurm.conf" ] && [ -f "$D/slurmctld.pid" ] && kill -0 "$(cat "$D/slurmctld.pid")" 2>/dev/null; then
        SLURM_CONF=$D/slurm.conf scancel --full --signal=KILL --quiet --user=root 2>/dev/null || true
        SLURM_CONF=$D/slurm.conf scancel --quiet --user=root 2>/dev/null || true
    fi
    for file in "$D"/slurmd-*.pid; do stop_pid_file "$file"; done
    stop_pid_file "$D/slurmctld.pid"
    stop_pid_file "$D/munge/munged.pid"
    # Whatever a job left running in a node's namespace.
    if [ -f "$D/netns" ]; then
        while read -r ns; do
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        done < "$D/netns"
        for n in 1 2 3 4; do ip link del "mfs-h$n" 2>/dev/null || true; done
    fi
    if [ -f "$D/bridge" ]; then ip link del "$(cat "$D/bridge")" 2>/dev/null || true; fi
    rm -rf "$D"
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
