#!/usr/bin/env bash
# The RLS benchmark: (a) a 1,000,000-row RLS scan with `owner = auth.uid()` against a literal-UUID
# policy and Supabase's uid(), (b) pgbench of auth.authenticate() with HS256, ES256 and EdDSA
# tokens + an indexed RLS select against PostgREST's set_config(...) (see bench/rls/README.md).
#   bash bench/rls/run.sh                 # PostgreSQL 15
#   PG_MAJOR=17 bash bench/rls/run.sh     # 14 to 18
# Environment: PG_MAJOR (14..18, default 15; or PG_CONFIG), BENCH_PORT (first port tried, 55720),
#              BENCH_ROWS (1000000), BENCH_RUNS (5),
#              BENCH_PGBENCH_TIME (20 s per pgbench run), BENCH_PGBENCH_ROUNDS (3),
#              BENCH_PGBENCH_CLIENTS (2), BENCH_PGBENCH_THREADS (2),
#              BENCH_PGBENCH_TOKENS (distinct tokens per algorithm, 10000),
#              BENCH_PGBENCH_ALGS (HS256,ES256,EdDSA),
#              BENCH_MODES (protocols of the alternating pgbench runs: prepared),
#              BENCH_MIXED_MODES (protocols of the mixed pgbench runs: prepared,simple),
#              BENCH_DIR (/tmp/pg_session_auth_bench_rls/pg<major>), BENCH_TARGET_DIR (cargo
#              target directory, target/bench). Extra arguments go to rls_bench.py.
# Builds and installs the extension in release mode, starts its own throw-away cluster on
# loopback and stops it on exit. Run as root (or with passwordless sudo to `postgres`).
set -euo pipefail
cd "$(dirname "$0")/../.."

source bench/lib.sh
select_postgres

PORT="${BENCH_PORT:-55720}"
ROWS="${BENCH_ROWS:-1000000}"
RUNS="${BENCH_RUNS:-5}"
PGBENCH_TIME="${BENCH_PGBENCH_TIME:-20}"
PGBENCH_ROUNDS="${BENCH_PGBENCH_ROUNDS:-3}"
MODES="${BENCH_MODES:-prepared}"
MIXED_MODES="${BENCH_MIXED_MODES:-prepared,simple}"
CLIENTS="${BENCH_PGBENCH_CLIENTS:-2}"
THREADS="${BENCH_PGBENCH_THREADS:-2}"
POOL="${BENCH_PGBENCH_TOKENS:-10000}"
PGBENCH_ALGS="${BENCH_PGBENCH_ALGS:-HS256,ES256,EdDSA}"
WORK="${BENCH_DIR:-/tmp/pg_session_auth_bench_rls/pg$PG_MAJOR}"
CLUSTER="$WORK/cluster"
LIB="$WORK/lib"
SCRIPTS="$WORK/scripts"

mkdir -p "$WORK" "$LIB"
rm -rf "$SCRIPTS" && mkdir -p "$SCRIPTS"
chmod 755 "$WORK" "$LIB"

cleanup() {
    bash scripts/cluster.sh stop "$CLUSTER" || true
    rm -rf "$CLUSTER" "$SCRIPTS"
}
trap cleanup EXIT

# shared_buffers holds every table (7 x ~50 MB, and the token pools), so no scan goes through
# a ring buffer or the OS page cache; autovacuum off, so no worker process exits during a
# measurement (the parallel workers' CPU time is read from the postmaster's reaped-children
# counters).
install_and_start_cluster "$CLUSTER" "$PORT" \
    "session_preload_libraries = 'pg_session_auth'" \
    "shared_buffers = 1GB" \
    "autovacuum = off" \
    "jit = off"

python3 bench/rls/rls_bench.py --dir "$SCRIPTS" --port "$PORT" \
    --library "$LIB/pg_session_auth.so" --rows "$ROWS" --runs "$RUNS" \
    --pgbench-time "$PGBENCH_TIME" --pgbench-rounds "$PGBENCH_ROUNDS" --modes "$MODES" --mixed-modes "$MIXED_MODES" \
    --clients "$CLIENTS" --threads "$THREADS" --pgbench-tokens "$POOL" --algs "$PGBENCH_ALGS" \
    --pgbench "$PG_BIN/pgbench" --pg-major "$PG_MAJOR" "$@"
