#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server for the tests (Debian's postgresql-15):
#   scripts/postgres.sh start   start one (or find the one running) and print its URL
#   scripts/postgres.sh stop    stop it and delete its data
# Its data lives in its own directory under the temporary directory
# (MAYFLY_PG_DIR, default $TMPDIR/mayfly-postgres-test), it listens on
# 127.0.0.1 only, on its own port (MAYFLY_PG_PORT, default 15432), with trust
# authentication (but for the role mayfly_password_test, which must give its
# password) and without fsync: for tests, never for data. Concurrent
# starts (one per test process) share one server, under a lock.
set -euo pipefail

PGBIN="${MAYFLY_PGBIN:-/usr/lib/postgresql/15/bin}"
DIR="${MAYFLY_PG_DIR:-${TMPDIR:-/tmp}/mayfly-postgres-test}"
PORT="${MAYFLY_PG_PORT:-15432}"
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
# The role that must authenticate with a password (see below); tests create it.
PASSWORD_ROLE=mayfly_password_test

# initdb and the server refuse to run as root: run them as `postgres`.
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() {
    [ -f "$DIR/data/postmaster.pid" ] && as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1
}

case "${1:-}" in
start)
    if [ ! -x "$PGBIN/initdb" ]; then
        echo "error: PostgreSQL 15 is not installed ($PGBIN/initdb is missing); run: apt-get install -y postgresql-15" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$DIR")"
    exec 9>"$DIR.lock"
    flock 9
    if ! running; then
        rm -rf "$DIR"
        mkdir -p "$DIR"
        if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$DIR"; fi
        as_postgres "$PGBIN/initdb" -D "$DIR/data" -A trust -U postgres --no-sync -E UTF8 </dev/null >"$DIR/initdb.log" 2>&1 9>&- || {
            echo "error: initdb failed; see $DIR/initdb.log" >&2
            exit 1
        }
        as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start </dev/null >/dev/null 2>&1 9>&- || {
            echo "error: PostgreSQL did not start on port $PORT; see $DIR/log" >&2
            exit 1
        }
    fi
    # One role must give a password (scram-sha-256), so that the tests can
    # check a wrong or missing password; every other role is trusted.
    if ! grep -q "^host all $PASSWORD_ROLE " "$DIR/data/pg_hba.conf" 2>/dev/null; then
        as_postgres sed -i "1i host all $PASSWORD_ROLE 127.0.0.1/32 scram-sha-256" "$DIR/data/pg_hba.conf" 9>&-
        as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" reload </dev/null >/dev/null 2>&1 9>&-
    fi
    echo "$URL"
    ;;
stop)
    if running; then as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop </dev/null >/dev/null 2>&1; fi
    rm -rf "$DIR" "$DIR.lock"
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
