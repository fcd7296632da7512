#!/usr/bin/env bash
# The auth.verify benchmark: µs per auth.verify for all 12 algorithms (HS256/384/512,
# RS256/384/512, PS256/384/512, ES256, ES384, EdDSA), beside the call-overhead floor and the
# plain-Rust cost of the same checks on the same AWS-LC library (see bench/README.md).
#   bash bench/run.sh                 # PostgreSQL 15
#   PG_MAJOR=17 bash bench/run.sh     # 14 to 18
# Environment: PG_MAJOR (14..18, default 15; or PG_CONFIG), BENCH_PORT (first port tried, 55700),
#              BENCH_TOKENS (tokens per HMAC algorithm, 10000), BENCH_ASYM_TOKENS (tokens per
#              asymmetric algorithm, 5000), BENCH_RUNS (timed runs per algorithm, 7),
#              BENCH_TARGET_RUNS (HS256 runs, 25), BENCH_ALGS (a comma-separated subset),
#              BENCH_DIR (/tmp/pg_session_auth_bench/pg<major>), BENCH_TARGET_DIR (cargo target directory,
#              target/bench).
# Builds and installs the extension in release mode, starts its own throw-away cluster on
# loopback and stops it on exit. Run as root (or with passwordless sudo to `postgres`).
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
select_postgres

PORT="${BENCH_PORT:-55700}"
TOKENS="${BENCH_TOKENS:-10000}"
ASYM_TOKENS="${BENCH_ASYM_TOKENS:-5000}"
ALGS="${BENCH_ALGS:-}"
RUNS="${BENCH_RUNS:-7}"
TARGET_RUNS="${BENCH_TARGET_RUNS:-25}"
WORK="${BENCH_DIR:-/tmp/pg_session_auth_bench/pg$PG_MAJOR}"
CLUSTER="$WORK/cluster"
LIB="$WORK/lib"
DATA="$WORK/tokens"

mkdir -p "$WORK" "$LIB"
rm -rf "$DATA" && mkdir -p "$DATA"
chmod 755 "$WORK" "$LIB"

cleanup() {
    bash scripts/cluster.sh stop "$CLUSTER" || true
    rm -rf "$DATA" "$CLUSTER"
}
trap cleanup EXIT

step "building the plain-Rust timer (bench/raw, release)"
build_raw --bin raw_bench || exit 1
RAW="$RAW_BIN_DIR/raw_bench"

# Other clusters (test suites) come and go on this machine: the first free port from $PORT on.
install_and_start_cluster "$CLUSTER" "$PORT" \
    "session_preload_libraries = 'pg_session_auth'" \
    "max_parallel_workers_per_gather = 0" \
    "jit = off"

python3 bench/bench.py --dir "$DATA" --port "$PORT" --raw "$RAW" \
    --library "$LIB/pg_session_auth.so" --tokens "$TOKENS" --asym-tokens "$ASYM_TOKENS" \
    --runs "$RUNS" --target-runs "$TARGET_RUNS" --pg-major "$PG_MAJOR" ${ALGS:+--algs "$ALGS"}
