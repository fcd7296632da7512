#!/usr/bin/env bash
# The unusual-activity benchmark: what the detection rules and the shared-memory counters of
# 0.5.0 cost (see bench/activity/README.md).
#   (a) refresh_session and create_session TPS under pgbench (1 and 2 clients, HS256 and EdDSA
#       signing keys) with every rule enabled vs every rule disabled (but refresh_token_reused,
#       which cannot be), in normal use (same user agent and address every time), checking
#       that no rule fires;
#   (b) auth.verify over a batch of distinct tokens in one statement with
#       pg_session_auth.track_activity on vs off.
#   bash bench/activity/run.sh                 # PostgreSQL 15
#   PG_MAJOR=17 bash bench/activity/run.sh     # 14 to 18
# Environment: PG_MAJOR (14..18, default 15; or PG_CONFIG), ACTBENCH_PORT (first port tried,
#              55860), ACTBENCH_TIME (seconds per pgbench run, 8), ACTBENCH_ROUNDS (on/off
#              pairs per case, 4), ACTBENCH_ALGS (HS256,EdDSA), ACTBENCH_VERIFY_TOKENS (HS256
#              tokens in the batch, 10000), ACTBENCH_VERIFY_ASYM_TOKENS (EdDSA tokens, 1000),
#              ACTBENCH_VERIFY_ROUNDS (on/off pairs, 100), ACTBENCH_DIR
#              (/tmp/pg_session_auth_bench_activity/pg<major>), BENCH_TARGET_DIR.
# Builds and installs the extension in release mode, starts its own throw-away cluster on
# loopback (shared_preload_libraries, so the counters are the cluster's shared memory ones)
# and stops it on exit. Run as root (or with passwordless sudo to `postgres`).
set -euo pipefail
cd "$(dirname "$0")/../.."

source bench/lib.sh
select_postgres

PORT="${ACTBENCH_PORT:-55860}"
WORK="${ACTBENCH_DIR:-/tmp/pg_session_auth_bench_activity/pg$PG_MAJOR}"
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

python3 bench/activity/bench.py --port "$PORT" --pg-bin "$PG_BIN" --pg-major "$PG_MAJOR" \
    --library "$LIB/pg_session_auth.so" --work "$WORK" \
    --time "${ACTBENCH_TIME:-8}" --rounds "${ACTBENCH_ROUNDS:-4}" \
    --algs "${ACTBENCH_ALGS:-HS256,EdDSA}" \
    --verify-tokens "${ACTBENCH_VERIFY_TOKENS:-10000}" \
    --verify-asym-tokens "${ACTBENCH_VERIFY_ASYM_TOKENS:-1000}" \
    --verify-rounds "${ACTBENCH_VERIFY_ROUNDS:-100}"
