#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. formatting and lints
#   2. the server-independent core (unit, vector and property tests)
#   then, for each PostgreSQL major in PG_MAJORS (default: 14 15 16 17 18):
#   3. in-server #[pg_test] tests          (cargo pgrx test pgNN)
#   4. pg_regress golden files              (scripts/regress.sh, as non-superusers)
#   5. client tests against real servers   (pytest: interoperability, privileges, several
#      connections, poolers, replicas, crashes, upgrades), each test module starting and
#      stopping its own cluster on loopback
# and a summary per major at the end. Installs its own prerequisites first (scripts/setup.sh,
# which installs every major). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_MAJORS="${PG_MAJORS:-14 15 16 17 18}"
WORK_DIR="${PG_SESSION_AUTH_TEST_DIR:-/tmp/pg_session_auth_test}"
export PG_MAJORS

step() { printf '\n=== %s\n' "$*"; }

step "prerequisites"
bash scripts/setup.sh
source scripts/postgresql.sh

mkdir -p "$WORK_DIR"
chown postgres:postgres "$WORK_DIR"

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features "pg15 pg_test" --no-default-features -- -D warnings
# One error path: only src/errors.rs reports errors (no pgrx::error!/ereport!, which are XX000).
if grep -rnE '(^|[^_a-z])(error|ereport)!\(' src --include='*.rs' | grep -v '^src/errors.rs:'; then
    echo "scripts/test.sh: raise errors through src/errors.rs (Failure), not error!/ereport!" >&2
    exit 1
fi

step "core crate tests"
cargo test -p pg_session_auth_core

declare -A RESULT
for major in $PG_MAJORS; do
    PG_BIN="$(postgres_bin_dir "$major")"
    export PG_BIN
    RESULT[$major]="failed"

    step "PostgreSQL $major: in-server tests (cargo pgrx test pg$major)"
    cargo pgrx test "pg$major" --runas postgres --pgdata "$WORK_DIR/pgrx-test-$major"

    step "PostgreSQL $major: install for the golden-file and client tests"
    # Renamed into place, never rewritten in place: a server running an earlier build (the
    # README's demo) keeps working.
    bash scripts/install.sh "$PG_BIN/pg_config" debug

    step "PostgreSQL $major: pg_regress golden files (tests/pg_regress), as non-superusers"
    bash scripts/regress.sh

    step "PostgreSQL $major: client tests (pytest)"
    python3 -m pytest tests/client -q -p no:cacheprovider
    RESULT[$major]="passed"
done

DEMO_DIR="${DEMO_DIR:-/tmp/pg_session_auth_demo}"
# Only a demo server that is running (a killed one leaves its postmaster.pid behind).
if [ -f "$DEMO_DIR/postmaster.pid" ] && kill -0 "$(head -1 "$DEMO_DIR/postmaster.pid")" 2>/dev/null; then
    step "the demo cluster (scripts/demo.sh) still answers"
    answer="$(/usr/lib/postgresql/15/bin/psql -X -tA -h 127.0.0.1 \
        -p "$(sed -n 4p "$DEMO_DIR/postmaster.pid")" -U postgres -d demo \
        -c "select auth.jwks() is not null")"
    [ "$answer" = t ] || { echo "the demo cluster no longer answers" >&2; exit 1; }
    echo "yes"
fi

step "summary"
passed=0
for major in $PG_MAJORS; do
    echo "PostgreSQL $major: pg_test, pg_regress and client tests ${RESULT[$major]}"
    passed=$((passed + 1))
done
echo "majors: $passed passed, 0 failed"
