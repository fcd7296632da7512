#!/usr/bin/env bash
# The sessions benchmark: create_session and refresh_session transactions per second under
# pgbench (1 and 2 clients) with ES256, EdDSA and HS256 signing keys, each beside a floor
# transaction that writes a comparable row without signing, and the share of time spent
# signing (see bench/sessions/README.md).
#   bash bench/sessions/run.sh                 # PostgreSQL 15
#   PG_MAJOR=17 bash bench/sessions/run.sh     # 14 to 18
# Environment: PG_MAJOR (14..18, default 15; or PG_CONFIG), SESSBENCH_PORT (first port tried,
#              55820), SESSBENCH_TIME (seconds per pgbench run, 8), SESSBENCH_ROUNDS (2),
#              SESSBENCH_ALGS (ES256,EdDSA,HS256), SESSBENCH_DIR
#              (/tmp/pg_session_auth_bench_sessions/pg<major>), BENCH_TARGET_DIR.
# Builds and installs the extension in release mode, starts its own throw-away cluster on
# loopback and stops it on exit. Run as root (or with passwordless sudo to `postgres`).
set -euo pipefail
cd "$(dirname "$0")/../.."

source bench/lib.sh
select_postgres

PORT="${SESSBENCH_PORT:-55820}"
WORK="${SESSBENCH_DIR:-/tmp/pg_session_auth_bench_sessions/pg$PG_MAJOR}"
CLUSTER="$WORK/cluster"
LIB="$WORK/lib"

mkdir -p "$WORK" "$LIB"
chmod 755 "$WORK" "$LIB"

cleanup() {
    bash scripts/cluster.sh stop "$CLUSTER" || true
    cp "$CLUSTER/server.log" "$WORK/server.log" 2>/dev/null || true
    rm -rf "$CLUSTER"
}
trap cleanup EXIT

install_and_start_cluster "$CLUSTER" "$PORT" \
    "shared_preload_libraries = 'pg_session_auth'" \
    "max_parallel_workers_per_gather = 0" \
    "jit = off" \
    "synchronous_commit = off"
echo "  built from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src core sql 2>/dev/null || echo ' + uncommitted changes in src/core/sql')"

python3 bench/sessions/bench.py --port "$PORT" --pg-bin "$PG_BIN" --pg-major "$PG_MAJOR" \
    --library "$LIB/pg_session_auth.so" --work "$WORK" \
    --time "${SESSBENCH_TIME:-8}" --rounds "${SESSBENCH_ROUNDS:-2}" \
    --algs "${SESSBENCH_ALGS:-ES256,EdDSA,HS256}"
