#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server for the tests (Debian's postgresql-15):
#   scripts/postgres.sh start   start one (or find the one running) and print its URL
#   scripts/postgres.sh start-tls  start a second one that takes only TLS
#                               connections, and print its URL (sslmode=verify-full)
#   scripts/postgres.sh start-durable  start a third one with PostgreSQL's
#                               durable defaults (fsync, synchronous_commit,
#                               full_page_writes on) for the benchmarks, and print its URL
#   scripts/postgres.sh stop    stop all three and delete their data
# Its data lives in its own directory under the temporary directory
# (MAYFLY_PG_DIR, default $TMPDIR/mayfly-postgres-test), it listens on
# 127.0.0.1 only, on its own port (MAYFLY_PG_PORT, default 15432), with trust
# authentication (but for the role mayfly_password_test, which must give its
# password) and without fsync: for tests, never for data. Concurrent
# starts (one per test process) share one server, under a lock.
#
# The durable server (start-durable) has its own directory ($DIR-durable)
# and port (MAYFLY_PG_DURABLE_PORT, default 15434), so that a benchmark
# never measures the test server's settings.
#
# The TLS server (start-tls) has its own directory ($DIR-tls) and port
# (MAYFLY_PG_TLS_PORT, default 15433), `ssl=on`, and refuses any connection
# not over TLS. Its CA and server certificate are made at start with the
# openssl CLI: $DIR-tls/ca.crt, and a server certificate that names only
# `localhost` (so connecting to 127.0.0.1 under verify-full must fail).
set -euo pipefail

PGBIN="${MAYFLY_PGBIN:-/usr/lib/postgresql/15/bin}"
DIR="${MAYFLY_PG_DIR:-${TMPDIR:-/tmp}/mayfly-postgres-test}"
PORT="${MAYFLY_PG_PORT:-15432}"
TLS_PORT="${MAYFLY_PG_TLS_PORT:-15433}"
DURABLE_PORT="${MAYFLY_PG_DURABLE_PORT:-15434}"
# The role that must authenticate with a password (see below); tests create it.
PASSWORD_ROLE=mayfly_password_test

# initdb and the server refuse to run as root: run them as `postgres`.
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() {
    [ -f "$DIR/data/postmaster.pid" ] && as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1
}

# The CA and the server's certificate and key of the TLS server, in $DIR.
make_certificates() {
    local days=30
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
        -subj "/CN=Mayfly test PostgreSQL CA" -keyout "$DIR/ca.key" -out "$DIR/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$DIR/server.key" -out "$DIR/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$DIR/server.ext"
    openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
        -days "$days" -extfile "$DIR/server.ext" -out "$DIR/server.crt" >/dev/null 2>&1
    rm -f "$DIR/ca.key" "$DIR/server.csr" "$DIR/server.ext" "$DIR/ca.srl"
    chmod 600 "$DIR/server.key"
    chmod 644 "$DIR/ca.crt" "$DIR/server.crt"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$DIR/server.key" "$DIR/server.crt"; fi
}

start_tls_server() {
    if ! running; then
        rm -rf "$DIR"
        mkdir -p "$DIR"
        if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$DIR"; fi
        make_certificates || {
            echo "error: could not make the TLS server's certificates with openssl in $DIR" >&2
            exit 1
        }
        as_postgres "$PGBIN/initdb" -D "$DIR/data" -A trust -U postgres --no-sync -E UTF8 </dev/null >"$DIR/initdb.log" 2>&1 9>&- || {
            echo "error: initdb failed; see $DIR/initdb.log" >&2
            exit 1
        }
        # Only TLS connections over TCP (the socket stays for pg_ctl).
        as_postgres sed -i "1i hostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject" "$DIR/data/pg_hba.conf" 9>&-
        as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $TLS_PORT -k $DIR -c max_connections=100 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c ssl=on -c ssl_cert_file=$DIR/server.crt -c ssl_key_file=$DIR/server.key" \
            start </dev/null >/dev/null 2>&1 9>&- || {
            echo "error: the TLS PostgreSQL server did not start on port $TLS_PORT; see $DIR/log" >&2
            exit 1
        }
    fi
}

# Start the plain server in $DIR on port $1 with the settings $2 (or find
# it running), under a lock that concurrent starts share.
start_server() {
    local port="$1" settings="$2"
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
            -o "-c listen_addresses=127.0.0.1 -p $port -k $DIR $settings" \
            start </dev/null >/dev/null 2>&1 9>&- || {
            echo "error: PostgreSQL did not start on port $port; see $DIR/log" >&2
            exit 1
        }
    fi
    # One role must give a password (scram-sha-256), so that the tests can
    # check a wrong or missing password; every other role is trusted.
    if ! grep -q "^host all $PASSWORD_ROLE " "$DIR/data/pg_hba.conf" 2>/dev/null; then
        as_postgres sed -i "1i host all $PASSWORD_ROLE 127.0.0.1/32 scram-sha-256" "$DIR/data/pg_hba.conf" 9>&-
        as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" reload </dev/null >/dev/null 2>&1 9>&-
    fi
}

stop_server() {
    if running; then as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop </dev/null >/dev/null 2>&1; fi
    rm -rf "$DIR" "$DIR.lock"
}

need_postgres() {
    if [ ! -x "$PGBIN/initdb" ]; then
        echo "error: PostgreSQL 15 is not installed ($PGBIN/initdb is missing); run: apt-get install -y postgresql-15" >&2
        exit 1
    fi
}

case "${1:-}" in
start)
    need_postgres
    start_server "$PORT" "-c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    echo "postgres://postgres@127.0.0.1:$PORT/postgres"
    ;;
start-durable)
    need_postgres
    DIR="$DIR-durable"
    start_server "$DURABLE_PORT" "-c max_connections=300"
    echo "postgres://postgres@127.0.0.1:$DURABLE_PORT/postgres"
    ;;
start-tls)
    need_postgres
    if ! command -v openssl >/dev/null; then
        echo "error: the openssl command is not installed (it makes the TLS server's certificates); run: apt-get install -y openssl" >&2
        exit 1
    fi
    DIR="$DIR-tls"
    mkdir -p "$(dirname "$DIR")"
    exec 9>"$DIR.lock"
    flock 9
    start_tls_server
    echo "postgres://postgres@localhost:$TLS_PORT/postgres?sslmode=verify-full&sslrootcert=$DIR/ca.crt"
    ;;
stop)
    BASE="$DIR"
    stop_server
    DIR="$BASE-tls"
    stop_server
    DIR="$BASE-durable"
    stop_server
    ;;
*)
    echo "usage: $0 start|start-tls|start-durable|stop" >&2
    exit 2
    ;;
esac
