#!/usr/bin/env bash
# The revocation benchmark: what revocation checks add to auth.authenticate / auth.verify with
# 1,000,000 revoked sessions and 100,000 revoked users, whether auth.purge_revocations() over
# 1,000,000 expired rows holds up concurrent verification, and how much memory a backend
# keeps for revocation answers (see bench/revocation/README.md).
#   bash bench/revocation/run.sh                 # PostgreSQL 15
#   PG_MAJOR=17 bash bench/revocation/run.sh     # 14 to 18
# Environment: PG_MAJOR (14..18, default 15; or PG_CONFIG), REVBENCH_PORT (first port tried, 55780), REVBENCH_ROUNDS (timed rounds, 15),
#              REVBENCH_SESSIONS (1000000), REVBENCH_USERS (100000), REVBENCH_TOKENS_REVOKED
#              (10000), REVBENCH_PURGE_ROWS (1000000), REVBENCH_VERIFIERS (2),
#              REVBENCH_DIR (/tmp/pg_session_auth_bench_revocation/pg<major>),
#              BENCH_TARGET_DIR (cargo target directory, target/bench),
#              REVBENCH_PRELOAD (shared: the library in shared_preload_libraries, with the shared
#              revocation filter, as recommended; session: session_preload_libraries, no filter).
# Builds and installs the extension in release mode, starts its own throw-away cluster on
# loopback and stops it on exit. Run as root (or with passwordless sudo to `postgres`).
set -euo pipefail
cd "$(dirname "$0")/../.."

source bench/lib.sh
select_postgres

PORT="${REVBENCH_PORT:-55780}"
PRELOAD="${REVBENCH_PRELOAD:-shared}"
case "$PRELOAD" in shared|session) ;; *) echo "REVBENCH_PRELOAD must be shared or session" >&2; exit 2 ;; esac
WORK="${REVBENCH_DIR:-/tmp/pg_session_auth_bench_revocation/pg$PG_MAJOR}"
CLUSTER="$WORK/cluster"
LIB="$WORK/lib"
DATA="$WORK/tokens"

mkdir -p "$WORK" "$LIB"
rm -rf "$DATA" && mkdir -p "$DATA"
chmod 755 "$WORK" "$LIB"

cleanup() {
    bash scripts/cluster.sh stop "$CLUSTER" || true
    cp "$CLUSTER/server.log" "$WORK/server.log" 2>/dev/null || true
    rm -rf "$DATA" "$CLUSTER"
}
trap cleanup EXIT

# shared_buffers large enough that the 2 x 1.1M revocation rows, their indexes and the token
# tables stay cached; checkpoints pushed out of the way of the bulk loads. Autovacuum stays
# on (the driver vacuums the revocation tables itself after loading and checks that
# autovacuum did not touch them while timing). The extension is created in template1, so
# every database the driver creates has it.
install_and_start_cluster "$CLUSTER" "$PORT" \
    "${PRELOAD}_preload_libraries = 'pg_session_auth'" \
    "max_parallel_workers_per_gather = 0" \
    "jit = off" \
    "shared_buffers = '768MB'" \
    "max_wal_size = '8GB'" \
    "checkpoint_timeout = '30min'" \
    "log_autovacuum_min_duration = 0"
echo "  built from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src core sql 2>/dev/null || echo ' + uncommitted changes in src/core/sql'); ${PRELOAD}_preload_libraries = 'pg_session_auth'"

step "plain-Rust reference: a warm revocation check (keys + three HashMap lookups), alone"
if cargo build --release --quiet --manifest-path bench/raw/Cargo.toml --bin revocation_lookups \
    2>"$WORK/lookups.log"; then
    "$CARGO_TARGET_DIR/release/revocation_lookups" 100 10000 | sed 's/^/  /'
else
    echo "  (build failed; see $WORK/lookups.log)"
fi

python3 bench/revocation/bench.py --dir "$DATA" --port "$PORT" \
    --library "$LIB/pg_session_auth.so" --pg-major "$PG_MAJOR" \
    --rounds "${REVBENCH_ROUNDS:-15}" \
    --sessions "${REVBENCH_SESSIONS:-1000000}" \
    --users "${REVBENCH_USERS:-100000}" \
    --revoked-tokens "${REVBENCH_TOKENS_REVOKED:-10000}" \
    --purge-rows "${REVBENCH_PURGE_ROWS:-1000000}" \
    --verifiers "${REVBENCH_VERIFIERS:-2}"
