#!/usr/bin/env bash
# Starts or stops a throw-away PostgreSQL cluster on loopback, run as the `postgres` OS user
# (PostgreSQL refuses to run as root).
#   scripts/cluster.sh start DIR PORT [extra postgresql.conf lines...]
#   scripts/cluster.sh stop DIR
set -euo pipefail

# PG_BIN selects the PostgreSQL installation (default: Debian's PostgreSQL 15).
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

# A relocatable PostgreSQL (scripts/postgresql.sh) finds its own libpq (for replication
# connections) only through LD_LIBRARY_PATH: its modules' RUNPATH names its build directory.
SERVER_ENV=()
case "$PG_BIN" in
/usr/lib/postgresql/*) ;;
*) SERVER_ENV=("LD_LIBRARY_PATH=$(dirname "$PG_BIN")/lib") ;;
esac

as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        env "${SERVER_ENV[@]}" "$@"
    else
        sudo -u postgres -- env "${SERVER_ENV[@]}" "$@"
    fi
}

action="${1:?start|stop}"
dir="${2:?cluster directory}"

case "$action" in
start)
    port="${3:?port}"
    shift 3
    if [ -f "$dir/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    chown postgres:postgres "$dir" 2>/dev/null || true
    as_postgres "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "fsync = off"
        for line in "$@"; do echo "$line"; done
    } | as_postgres tee -a "$dir/postgresql.conf" >/dev/null
    as_postgres "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null
    ;;
stop)
    if [ -f "$dir/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
    fi
    ;;
*)
    echo "usage: $0 start DIR PORT [conf lines...] | stop DIR" >&2
    exit 2
    ;;
esac
