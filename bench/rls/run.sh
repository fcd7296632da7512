#!/usr/bin/env bash
# The RLS benchmark: (a) a 1,000,000-row RLS scan with `owner = auth.uid()` against a literal-UUID
# policy and Supabase's uid(), (b) pgbench of auth.authenticate() + an indexed RLS select against
# PostgREST's set_config(...) (see bench/rls/README.md).
#   bash bench/rls/run.sh
# Environment: BENCH_PORT (first port tried, 55720), BENCH_ROWS (1000000), BENCH_RUNS (5),
#              BENCH_PGBENCH_TIME (20 s per pgbench run), BENCH_PGBENCH_ROUNDS (3),
#              BENCH_MODES (protocols of the alternating pgbench runs: prepared),
#              BENCH_MIXED_MODES (protocols of the mixed pgbench runs: prepared,simple),
#              BENCH_DIR (/tmp/pg_session_auth_bench_rls),
#              PG_CONFIG (PostgreSQL 15's). Extra arguments go to rls_bench.py.
# Builds and installs the extension in release mode, starts its own throw-away cluster on
# loopback and stops it on exit. Run as root (or with passwordless sudo to `postgres`).
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
PORT="${BENCH_PORT:-55720}"
ROWS="${BENCH_ROWS:-1000000}"
RUNS="${BENCH_RUNS:-5}"
PGBENCH_TIME="${BENCH_PGBENCH_TIME:-20}"
PGBENCH_ROUNDS="${BENCH_PGBENCH_ROUNDS:-3}"
MODES="${BENCH_MODES:-prepared}"
MIXED_MODES="${BENCH_MIXED_MODES:-prepared,simple}"
WORK="${BENCH_DIR:-/tmp/pg_session_auth_bench_rls}"
CLUSTER="$WORK/cluster"
LIB="$WORK/lib"
SCRIPTS="$WORK/scripts"
export PG_BIN="$("$PG_CONFIG" --bindir)"

source bench/lib.sh

mkdir -p "$WORK" "$LIB"
rm -rf "$SCRIPTS" && mkdir -p "$SCRIPTS"
chmod 755 "$WORK" "$LIB"

cleanup() {
    bash scripts/cluster.sh stop "$CLUSTER" || true
    rm -rf "$CLUSTER" "$SCRIPTS"
}
trap cleanup EXIT

build_and_pin_library

step "starting a cluster on loopback"
# shared_buffers holds every table (7 x ~50 MB), so no scan goes through a ring buffer or the
# OS page cache; autovacuum off, so no worker process exits during a measurement (the
# parallel workers' CPU time is read from the postmaster's reaped-children counters).
started=""
for candidate in $(seq "$PORT" $((PORT + 19))); do
    if bash scripts/cluster.sh start "$CLUSTER" "$candidate" \
        "dynamic_library_path = '$LIB:\$libdir'" \
        "session_preload_libraries = 'pg_session_auth'" \
        "shared_buffers = 1GB" \
        "autovacuum = off" \
        "jit = off" 2>/dev/null; then
        started="$candidate"
        break
    fi
    echo "  port $candidate: could not start ($(grep -m1 -o 'could not bind.*\|FATAL.*' "$CLUSTER/server.log" 2>/dev/null || echo '?'))"
done
if [ -z "$started" ]; then
    echo "bench: could not start a cluster on ports $PORT-$((PORT + 19))" >&2
    exit 1
fi
PORT="$started"
echo "  listening on 127.0.0.1:$PORT"

python3 bench/rls/rls_bench.py --dir "$SCRIPTS" --port "$PORT" \
    --library "$LIB/pg_session_auth.so" --rows "$ROWS" --runs "$RUNS" \
    --pgbench-time "$PGBENCH_TIME" --pgbench-rounds "$PGBENCH_ROUNDS" --modes "$MODES" --mixed-modes "$MIXED_MODES" \
    --pgbench "$PG_BIN/pgbench" "$@"
