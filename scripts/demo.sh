#!/usr/bin/env bash
# Installs what pg_session_auth needs, builds it, installs it into PostgreSQL $PG_MAJOR
# (default 15; 14 to 18), starts a local cluster (127.0.0.1:55433, data in
# /tmp/pg_session_auth_demo) and runs the worked example in scripts/demo.sql, printing each
# step. The cluster is left running to explore.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_MAJOR="${PG_MAJOR:-15}"
DEMO_DIR="${DEMO_DIR:-/tmp/pg_session_auth_demo}"
DEMO_PORT="${DEMO_PORT:-55433}"

PG_MAJORS="$PG_MAJOR" bash scripts/setup.sh
source scripts/postgresql.sh
PG_BIN="$(postgres_bin_dir "$PG_MAJOR")"

echo "== building and installing pg_session_auth (release build, a few minutes the first time)"
bash scripts/install.sh "$PG_BIN/pg_config" release

# The demo server loads its own copy of the library, so that later installs (the test
# command's debug builds) never touch a file it has mapped.
LIB_DIR="${DEMO_DIR}-lib"
mkdir -p "$LIB_DIR"
cp "$("$PG_BIN/pg_config" --pkglibdir)/pg_session_auth.so" "$LIB_DIR/pg_session_auth.so.new"
mv -f "$LIB_DIR/pg_session_auth.so.new" "$LIB_DIR/pg_session_auth.so"
chmod 755 "$LIB_DIR" && chmod 644 "$LIB_DIR/pg_session_auth.so"

echo "== starting PostgreSQL $PG_MAJOR on 127.0.0.1:$DEMO_PORT ($DEMO_DIR)"
PG_BIN="$PG_BIN" bash scripts/cluster.sh start "$DEMO_DIR" "$DEMO_PORT" \
    "dynamic_library_path = '$LIB_DIR:\$libdir'" \
    "shared_preload_libraries = 'pg_session_auth'"
"$PG_BIN/createdb" -h 127.0.0.1 -p "$DEMO_PORT" -U postgres demo

"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$DEMO_PORT" -U postgres -d demo -f scripts/demo.sql

cat <<MSG

The demo cluster is still running. Explore it with:
    $PG_BIN/psql -h 127.0.0.1 -p $DEMO_PORT -U postgres demo
Stop it with:
    PG_BIN=$PG_BIN bash scripts/cluster.sh stop $DEMO_DIR
MSG
