#!/usr/bin/env bash
# A throwaway two-node Docker Swarm for tests: the system engine is the
# manager, and a second dockerd, in a network namespace of its own with its
# own address, data root and socket, joins it as a worker. Measured on this
# machine kind (../shared/recipes/services.md): about 1.3 s to form.
#
#   scripts/swarm.sh start DIR [IMAGE...]   form the swarm in the empty
#        directory DIR and copy each IMAGE of the system engine to the worker
#        (there is no registry: every node needs the image); prints
#        `export MAYFLY_SWARM_WORKER_HOST=unix://DIR/docker.sock`
#   scripts/swarm.sh load DIR IMAGE...      copy more images to the worker
#   scripts/swarm.sh kill-worker DIR        lose the worker node: cut its link, then SIGKILL its
#        dockerd, containerd and every container it runs
#   scripts/swarm.sh stop DIR               remove every Mayfly service, leave the
#        swarm on both engines, stop the worker's dockerd, remove DIR
#
# Addresses: the manager listens on 10.250.0.1:2377 (a veth on the host), the
# worker is 10.250.0.2 in namespace `mfw2`. Only one swarm can use the system
# engine at a time: `start` takes an exclusive lock (flock on
# /run/mayfly-swarm.lock, held until `stop` or until the process that ran
# `start` exits), so parallel test processes queue instead of tearing each
# other's swarm down, and takes down a swarm a killed test left. Needs root.
set -euo pipefail

NETNS=mfw2
HOST_IF=mfw-h
NS_IF=mfw-n
MANAGER_ADDRESS=10.250.0.1
WORKER_ADDRESS=10.250.0.2
LOCK=/run/mayfly-swarm.lock
# The directory of the swarm formed last, for taking down one a killed test left.
LAST=/run/mayfly-swarm.dir

usage() { echo "usage: $0 start|load|kill-worker|stop DIR [IMAGE...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
D=$2
shift 2

worker() { docker -H "unix://$D/docker.sock" "$@"; }

load_images() {
    for image in "$@"; do
        docker save "$image" | worker load -q >/dev/null
    done
}

start() {
    mkdir -p "$D"
    D=$(cd "$D" && pwd)
    # The lock: a holder in a session of its own keeps it until stop kills
    # that session, or until the process that ran `start` (the test) is gone,
    # so a test killed before its clean-up does not block the next one.
    setsid flock -w 600 "$LOCK" sh -c 'echo held > "$1"; while kill -0 "$2" 2>/dev/null; do sleep 1; done' \
        sh "$D/lock.held" "$PPID" </dev/null >/dev/null 2>&1 &
    echo $! > "$D/lock.pid"
    until [ -f "$D/lock.held" ]; do
        if ! kill -0 "$(cat "$D/lock.pid")" 2>/dev/null; then
            echo "error: another test's swarm still holds $LOCK after 600 s" >&2
            exit 1
        fi
        sleep 0.1
    done
    # A swarm left by a test that was killed before its clean-up: take it down.
    if [ -f "$LAST" ] && [ "$(cat "$LAST")" != "$D" ] && [ -d "$(cat "$LAST")" ]; then
        (D=$(cat "$LAST"); stop) || true
    fi
    echo "$D" > "$LAST"
    if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != inactive ]; then
        echo "error: the system Docker engine is already in a swarm; leave it first (docker swarm leave --force)" >&2
        exit 1
    fi
    mkdir -p "$D"/{data,exec}
    ip netns add "$NETNS"
    echo "$NETNS" > "$D/netns"
    ip link add "$HOST_IF" type veth peer name "$NS_IF"
    ip link set "$NS_IF" netns "$NETNS"
    ip addr add "$MANAGER_ADDRESS/24" dev "$HOST_IF"
    ip link set "$HOST_IF" up
    ip netns exec "$NETNS" ip addr add "$WORKER_ADDRESS/24" dev "$NS_IF"
    ip netns exec "$NETNS" ip link set "$NS_IF" up
    ip netns exec "$NETNS" ip link set lo up
    ip netns exec "$NETNS" ip route add default via "$MANAGER_ADDRESS"
    echo '{"log-driver":"json-file"}' > "$D/daemon.json"
    nsenter --net="/run/netns/$NETNS" setsid /usr/sbin/dockerd --config-file "$D/daemon.json" \
        --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/docker.pid" -H "unix://$D/docker.sock" \
        --storage-driver vfs --bridge=none >"$D/dockerd.log" 2>&1 </dev/null &
    local waited=0
    until worker info >/dev/null 2>&1; do
        sleep 0.2; waited=$((waited + 1))
        if [ "$waited" -ge 150 ]; then
            echo "error: the worker's dockerd did not answer within 30 s; its log is $D/dockerd.log" >&2
            exit 1
        fi
    done
    docker swarm init --advertise-addr "$MANAGER_ADDRESS" --listen-addr "$MANAGER_ADDRESS:2377" >/dev/null
    echo manager > "$D/swarm"
    worker swarm join --token "$(docker swarm join-token -q worker)" --advertise-addr "$WORKER_ADDRESS" \
        "$MANAGER_ADDRESS:2377" >/dev/null
    waited=0
    until [ "$(docker node ls --format '{{.Status}}' | grep -c Ready)" = 2 ]; do
        sleep 0.2; waited=$((waited + 1))
        if [ "$waited" -ge 150 ]; then
            echo "error: the swarm has not 2 ready nodes after 30 s:" >&2
            docker node ls >&2 || true
            exit 1
        fi
    done
    load_images "$@"
    echo "export MAYFLY_SWARM_WORKER_HOST=unix://$D/docker.sock"
}

stop() {
    [ -d "$D" ] || return 0
    D=$(cd "$D" && pwd)
    if [ -f "$D/swarm" ]; then
        local services
        services=$(docker service ls -q --filter label=mayfly.managed=true 2>/dev/null || true)
        if [ -n "$services" ]; then
            # shellcheck disable=SC2086
            docker service rm $services >/dev/null 2>&1 || true
            sleep 2
        fi
        worker swarm leave --force >/dev/null 2>&1 || true
        docker swarm leave --force >/dev/null 2>&1 || true
        # Task containers the engine had not removed yet.
        docker container prune -f --filter label=com.docker.swarm.service.id >/dev/null 2>&1 || true
    fi
    if [ -f "$D/docker.pid" ]; then
        local pid
        pid=$(cat "$D/docker.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    kill_worker_processes
    if [ -f "$D/netns" ]; then
        for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$NETNS" 2>/dev/null || true
        ip link del "$HOST_IF" 2>/dev/null || true
    fi
    for mount in $(awk -v d="$D" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
        umount "$mount" 2>/dev/null || umount -l "$mount"
    done
    if [ -f "$LAST" ] && [ "$(cat "$LAST")" = "$D" ]; then rm -f "$LAST"; fi
    if [ -f "$D/lock.pid" ]; then kill -- "-$(cat "$D/lock.pid")" 2>/dev/null || true; fi
    rm -rf "$D"
}

# Kills a process and every descendant of it at once (SIGKILL).
kill_tree() {
    local pid=$1 child
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill_tree "$child"; done
    kill -9 "$pid" 2>/dev/null || true
}

# The worker node's engine and everything it runs (containerd, its shims and
# their containers' processes), killed at once.
kill_worker_processes() {
    local pid
    if [ -f "$D/docker.pid" ]; then kill_tree "$(cat "$D/docker.pid")"; fi
    for pid in $(pgrep -f "containerd-shim.*$D/exec" 2>/dev/null); do kill_tree "$pid"; done
}

# The worker node lost as a machine is: cut off the network at once, then
# its engine and every container it ran killed.
kill_worker() {
    D=$(cd "$D" && pwd)
    ip link set "$HOST_IF" down
    kill_worker_processes
}

case $action in
    start) start "$@" ;;
    load) D=$(cd "$D" && pwd); load_images "$@" ;;
    kill-worker) kill_worker ;;
    stop) stop ;;
    *) usage ;;
esac
