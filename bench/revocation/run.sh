#!/usr/bin/env bash
# The revocation benchmark: what revocation checks add to auth.authenticate / auth.verify with
# 1,000,000 revoked sessions and 100,000 revoked users, whether auth.purge_revocations() over
# 1,000,000 expired rows holds up concurrent verification, and how much memory a backend
# keeps for revocation answers (see bench/revocation/README.md).
#   bash bench/revocation/run.sh
# Environment: REVBENCH_PORT (first port tried, 55780), REVBENCH_ROUNDS (timed rounds, 15),
#              REVBENCH_SESSIONS (1000000), REVBENCH_USERS (100000), REVBENCH_TOKENS_REVOKED
#              (10000), REVBENCH_PURGE_ROWS (1000000), REVBENCH_VERIFIERS (2),
#              REVBENCH_DIR (/tmp/pg_session_auth_bench_revocation), PG_CONFIG (PostgreSQL 15's),
#              REVBENCH_PRELOAD (shared: the library in shared_preload_libraries, with the shared
#              revocation filter, as recommended; session: session_preload_libraries, no filter).
# Builds and installs the extension in release mode, starts its own throw-away cluster on
# loopback and stops it on exit. Run as root (or with passwordless sudo to `postgres`).
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
PORT="${REVBENCH_PORT:-55780}"
PRELOAD="${REVBENCH_PRELOAD:-shared}"
case "$PRELOAD" in shared|session) ;; *) echo "REVBENCH_PRELOAD must be shared or session" >&2; exit 2 ;; esac
WORK="${REVBENCH_DIR:-/tmp/pg_session_auth_bench_revocation}"
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
    cp "$CLUSTER/server.log" "$WORK/server.log" 2>/dev/null || true
    rm -rf "$DATA" "$CLUSTER"
}
trap cleanup EXIT

build_and_pin_library
echo "  built from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src core sql 2>/dev/null || echo ' + uncommitted changes in src/core/sql')"

step "starting a cluster on loopback"
# shared_buffers large enough that the 2 x 1.1M revocation rows, their indexes and the token
# tables stay cached; checkpoints pushed out of the way of the bulk loads. Autovacuum stays
# on (the driver vacuums the revocation tables itself after loading and checks that
# autovacuum did not touch them while timing).
started=""
for candidate in $(seq "$PORT" $((PORT + 19))); do
    if bash scripts/cluster.sh start "$CLUSTER" "$candidate" \
        "dynamic_library_path = '$LIB:\$libdir'" \
        "${PRELOAD}_preload_libraries = 'pg_session_auth'" \
        "max_parallel_workers_per_gather = 0" \
        "jit = off" \
        "shared_buffers = '768MB'" \
        "max_wal_size = '8GB'" \
        "checkpoint_timeout = '30min'" \
        "log_autovacuum_min_duration = 0" 2>/dev/null; then
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
echo "  listening on 127.0.0.1:$PORT (${PRELOAD}_preload_libraries = 'pg_session_auth')"

step "plain-Rust reference: a warm revocation check (keys + three HashMap lookups), alone"
if cargo build --release --quiet --manifest-path bench/raw/Cargo.toml --bin revocation_lookups \
    2>"$WORK/lookups.log"; then
    bench/raw/target/release/revocation_lookups 100 10000 | sed 's/^/  /'
else
    echo "  (build failed; see $WORK/lookups.log)"
fi

python3 bench/revocation/bench.py --dir "$DATA" --port "$PORT" \
    --library "$LIB/pg_session_auth.so" \
    --rounds "${REVBENCH_ROUNDS:-15}" \
    --sessions "${REVBENCH_SESSIONS:-1000000}" \
    --users "${REVBENCH_USERS:-100000}" \
    --revoked-tokens "${REVBENCH_TOKENS_REVOKED:-10000}" \
    --purge-rows "${REVBENCH_PURGE_ROWS:-1000000}" \
    --verifiers "${REVBENCH_VERIFIERS:-2}"
