#!/usr/bin/env bash
# Runs the pg_regress golden files in tests/pg_regress/{sql,expected} against a fresh
# PostgreSQL cluster with the installed extension. (cargo-pgrx 0.18's `regress` command cannot
# start its server as root, so this drives pg_regress itself.)
#   scripts/regress.sh            run and compare
#   scripts/regress.sh --record   run and copy the actual output over expected/ (review the diff!)
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_REGRESS="${PG_REGRESS:-$("$PG_BIN/pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress}"
WORK_DIR="${PG_SESSION_AUTH_TEST_DIR:-/tmp/pg_session_auth_test}"
PORT="${REGRESS_PORT:-55440}"
CLUSTER="$WORK_DIR/regress-cluster"
OUT="$WORK_DIR/regress-out"
TESTS=(setup verify keys settings identity revocation)

export PG_BIN
trap 'bash scripts/cluster.sh stop "$CLUSTER"' EXIT
bash scripts/cluster.sh start "$CLUSTER" "$PORT" "shared_preload_libraries = 'pg_session_auth'"
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres pg_session_auth_regress

rm -rf "$OUT"
mkdir -p "$OUT"
status=0
"$PG_REGRESS" --use-existing --bindir="$PG_BIN" --host=127.0.0.1 --port="$PORT" --user=postgres \
    --dbname=pg_session_auth_regress --inputdir=tests/pg_regress --outputdir="$OUT" \
    "${TESTS[@]}" || status=$?

if [ "${1:-}" = "--record" ]; then
    cp "$OUT"/results/*.out tests/pg_regress/expected/
    echo "recorded: review 'git diff tests/pg_regress/expected'"
    exit 0
fi
if [ "$status" -ne 0 ] && [ -f "$OUT/regression.diffs" ]; then
    cat "$OUT/regression.diffs"
fi
exit "$status"
