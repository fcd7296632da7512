#!/usr/bin/env bash
# The auth.verify benchmark: µs per auth.verify for HS256, ES256, RS256 and EdDSA, beside the
# call-overhead floor and the plain-Rust cost of the same checks (see bench/README.md).
#   bash bench/run.sh
# Environment: BENCH_PORT (first port tried, 55700), BENCH_TOKENS (10000 per algorithm),
#              BENCH_RUNS (timed runs per algorithm, 5), BENCH_TARGET_RUNS (HS256 runs, 25),
#              BENCH_DIR (/tmp/pg_session_auth_bench), PG_CONFIG (PostgreSQL 15's).
# Builds and installs the extension in release mode, starts its own throw-away cluster on
# loopback and stops it on exit. Run as root (or with passwordless sudo to `postgres`).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
PORT="${BENCH_PORT:-55700}"
TOKENS="${BENCH_TOKENS:-10000}"
RUNS="${BENCH_RUNS:-5}"
TARGET_RUNS="${BENCH_TARGET_RUNS:-25}"
WORK="${BENCH_DIR:-/tmp/pg_session_auth_bench}"
CLUSTER="$WORK/cluster"
LIB="$WORK/lib"
DATA="$WORK/tokens"
export PG_BIN="$("$PG_CONFIG" --bindir)"

source bench/lib.sh

mkdir -p "$WORK" "$LIB"
rm -rf "$DATA" && mkdir -p "$DATA"
chmod 755 "$WORK" "$LIB"

cleanup() {
    bash scripts/cluster.sh stop "$CLUSTER" || true
    rm -rf "$DATA" "$CLUSTER"
}
trap cleanup EXIT

build_and_pin_library

step "building the plain-Rust timer (bench/raw, release)"
for attempt in 1 2 3 4 5; do
    cargo build --release --quiet --manifest-path bench/raw/Cargo.toml && break
    if [ "$attempt" = 5 ]; then
        echo "bench: could not build bench/raw" >&2
        exit 1
    fi
    echo "  build failed (attempt $attempt; core may be mid-edit); retrying in 30 s"
    sleep 30
done
RAW="$PWD/bench/raw/target/release/raw_bench"

step "starting a cluster on loopback"
# Other clusters (test suites) come and go on this machine: take the first port from $PORT on
# that is free.
started=""
for candidate in $(seq "$PORT" $((PORT + 19))); do
    if bash scripts/cluster.sh start "$CLUSTER" "$candidate" \
        "dynamic_library_path = '$LIB:\$libdir'" \
        "session_preload_libraries = 'pg_session_auth'" \
        "max_parallel_workers_per_gather = 0" \
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

python3 bench/bench.py --dir "$DATA" --port "$PORT" --raw "$RAW" \
    --library "$LIB/pg_session_auth.so" --tokens "$TOKENS" --runs "$RUNS" \
    --target-runs "$TARGET_RUNS"
