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

step() { printf '\n== %s\n' "$*"; }

mkdir -p "$WORK" "$LIB"
rm -rf "$DATA" && mkdir -p "$DATA"
chmod 755 "$WORK" "$LIB"

cleanup() {
    bash scripts/cluster.sh stop "$CLUSTER" || true
    rm -rf "$DATA" "$CLUSTER"
}
trap cleanup EXIT

# Others may be building or installing the extension at the same time: retry a failed build,
# and keep a private copy of the library we built, loaded through dynamic_library_path, so a
# later `cargo pgrx install` (say a debug build) cannot swap it under the benchmark.
step "building and installing the extension (release)"
# cargo pgrx install: release build of the workspace, then its files into PostgreSQL 15.
pkglibdir="$("$PG_CONFIG" --pkglibdir)"
for attempt in 1 2 3 4 5; do
    if cargo pgrx install --release --pg-config "$PG_CONFIG" >"$WORK/install.log" 2>&1 \
        && cp "$pkglibdir/pg_session_auth.so" "$LIB/pg_session_auth.so" \
        && cmp -s "$LIB/pg_session_auth.so" target/release/libpg_session_auth.so; then
        break
    fi
    if [ "$attempt" = 5 ]; then
        tail -30 "$WORK/install.log" >&2
        echo "bench: could not build and install the release extension" >&2
        exit 1
    fi
    cp "$WORK/install.log" "$WORK/install.failed-$attempt.log"
    echo "  build/install failed or was overwritten (attempt $attempt; see $WORK/install.failed-$attempt.log); retrying in 30 s"
    sleep 30
done
chmod 644 "$LIB/pg_session_auth.so"
echo "  $(du -h "$LIB/pg_session_auth.so" | cut -f1) release library pinned at $LIB/pg_session_auth.so"

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
