#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. formatting and lints
#   2. the server-independent core (unit, vector and property tests)
#   3. in-server #[pg_test] tests          (cargo pgrx test, PostgreSQL 15)
#   4. pg_regress golden files              (scripts/regress.sh, as non-superusers)
#   5. client tests against real servers   (pytest: interoperability, privileges, several
#      connections), each test module starting and stopping its own cluster on loopback
# Installs its own prerequisites first (scripts/setup.sh). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_VERSION=pg15
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
WORK_DIR="${PG_SESSION_AUTH_TEST_DIR:-/tmp/pg_session_auth_test}"

step() { printf '\n=== %s\n' "$*"; }

step "prerequisites"
bash scripts/setup.sh

mkdir -p "$WORK_DIR"
chown postgres:postgres "$WORK_DIR"

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features "$PG_VERSION pg_test" --no-default-features -- -D warnings

step "core crate tests"
cargo test -p pg_session_auth_core

step "in-server tests (cargo pgrx test $PG_VERSION)"
cargo pgrx test "$PG_VERSION" --runas postgres --pgdata "$WORK_DIR/pgrx-test"

step "install into PostgreSQL 15 for the golden-file and client tests"
# Renamed into place, never rewritten in place: a server running an earlier build (the
# README's demo) keeps working.
bash scripts/install.sh "$PG_CONFIG" debug

step "pg_regress golden files (tests/pg_regress), as non-superusers"
bash scripts/regress.sh

step "client tests (pytest)"
python3 -m pytest tests/client -q -p no:cacheprovider

DEMO_DIR="${DEMO_DIR:-/tmp/pg_session_auth_demo}"
if [ -f "$DEMO_DIR/postmaster.pid" ]; then
    step "the demo cluster (scripts/demo.sh) still answers"
    answer="$("${PG_CONFIG%/pg_config}/psql" -X -tA -h 127.0.0.1 \
        -p "$(sed -n 4p "$DEMO_DIR/postmaster.pid")" -U postgres -d demo \
        -c "select auth.jwks() is not null")"
    [ "$answer" = t ] || { echo "the demo cluster no longer answers" >&2; exit 1; }
    echo "yes"
fi
