# Shared by the benchmark commands (sourced, not run, from the repository root).
# select_postgres sets PG_MAJOR, PG_CONFIG and PG_BIN; build_and_pin_library expects PG_CONFIG,
# WORK and LIB.

step() { printf '\n== %s\n' "$*"; }

# The benchmarks build in a target directory of their own, so that they never wait for (or
# disturb) the shared target/ of other builds, and so that the library they pin is the one they
# built. BENCH_TARGET_DIR overrides it.
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$PWD/target/bench}"

# Picks the PostgreSQL to benchmark: PG_MAJOR (14 to 18, default 15). 15 is Debian's
# (/usr/lib/postgresql/15); the others are the relocatable builds scripts/postgresql.sh
# installs under /opt/pg_session_auth/postgresql/<major> (scripts/cluster.sh sets their
# LD_LIBRARY_PATH from PG_BIN). An explicit PG_CONFIG still works; it must be PG_MAJOR's
# major if both are given.
select_postgres() {
    local version
    # shellcheck source=../scripts/postgresql.sh
    source scripts/postgresql.sh
    if [ -n "${PG_CONFIG:-}" ] && [ -z "${PG_MAJOR:-}" ]; then
        PG_MAJOR="$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
    fi
    PG_MAJOR="${PG_MAJOR:-15}"
    case "$PG_MAJOR" in
    14 | 15 | 16 | 17 | 18) ;;
    *) echo "bench: PG_MAJOR must be one of 14 15 16 17 18, not '$PG_MAJOR'" >&2; exit 2 ;;
    esac
    PG_CONFIG="${PG_CONFIG:-$(postgres_bin_dir "$PG_MAJOR")/pg_config}"
    if ! version="$("$PG_CONFIG" --version 2>/dev/null)"; then
        echo "bench: no PostgreSQL $PG_MAJOR at $PG_CONFIG; install it with: bash scripts/postgresql.sh $PG_MAJOR" >&2
        exit 2
    fi
    case "$version" in
    "PostgreSQL $PG_MAJOR".*) ;;
    *) echo "bench: $PG_CONFIG is $version, not PostgreSQL $PG_MAJOR" >&2; exit 2 ;;
    esac
    PG_BIN="$("$PG_CONFIG" --bindir)"
    export PG_MAJOR PG_CONFIG PG_BIN
    echo "PostgreSQL $PG_MAJOR: $version ($PG_CONFIG); cargo target directory $CARGO_TARGET_DIR"
}

# Builds the extension in release mode (in $CARGO_TARGET_DIR), installs it into the PostgreSQL
# of $PG_CONFIG with scripts/install.sh (control and SQL files for that major, and the library,
# each renamed into place, so a running server is never disturbed), and keeps a private copy of
# the library in $LIB (the clusters load it through dynamic_library_path). Others may be
# building or installing at the same time: a failed build is retried, and the copy is checked
# against the library this build produced, so a later install by someone else (a debug build,
# another major) cannot swap the library under a running benchmark.
build_and_pin_library() {
    step "building and installing the extension (release, PostgreSQL $PG_MAJOR)"
    local pkglibdir sharedir built attempt
    pkglibdir="$("$PG_CONFIG" --pkglibdir)"
    sharedir="$("$PG_CONFIG" --sharedir)"
    built="$CARGO_TARGET_DIR/release/libpg_session_auth.so"
    for attempt in 1 2 3 4 5; do
        if bash scripts/install.sh "$PG_CONFIG" release >"$WORK/install.log" 2>&1 \
            && [ -f "$sharedir/extension/pg_session_auth.control" ] \
            && cp "$pkglibdir/pg_session_auth.so" "$LIB/pg_session_auth.so.new" \
            && cmp -s "$LIB/pg_session_auth.so.new" "$built"; then
            break
        fi
        rm -f "$LIB/pg_session_auth.so.new"
        if [ "$attempt" = 5 ]; then
            tail -30 "$WORK/install.log" >&2
            echo "bench: could not build and install the release extension" >&2
            exit 1
        fi
        cp "$WORK/install.log" "$WORK/install.failed-$attempt.log"
        echo "  build/install failed or was overwritten (attempt $attempt; see $WORK/install.failed-$attempt.log); retrying in 30 s"
        sleep 30
    done
    chmod 644 "$LIB/pg_session_auth.so.new"
    mv -f "$LIB/pg_session_auth.so.new" "$LIB/pg_session_auth.so"
    echo "  $(du -h "$LIB/pg_session_auth.so" | cut -f1) release library pinned at $LIB/pg_session_auth.so" \
        "(= $built; control and SQL files in $sharedir/extension)"
}

# The extension's control file and install script as build_and_pin_library installed them,
# kept beside the pinned library ($LIB/extension). Others' installs (the test command's debug
# builds, `cargo pgrx test`, whose script declares its test functions too) rewrite the shared
# files at any time; CREATE EXTENSION must read the script of the library this benchmark pinned.
snapshot_extension_files() {
    local sharedir version
    sharedir="$("$PG_CONFIG" --sharedir)/extension"
    version="$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$sharedir/pg_session_auth.control")"
    rm -rf "$LIB/extension" && mkdir -p "$LIB/extension"
    cp "$sharedir/pg_session_auth.control" "$sharedir/pg_session_auth--$version.sql" "$LIB/extension/"
}

extension_files_unchanged() {
    local sharedir file
    sharedir="$("$PG_CONFIG" --sharedir)/extension"
    for file in "$LIB"/extension/*; do
        cmp -s "$file" "$sharedir/$(basename "$file")" || return 1
    done
}

# Starts a throw-away cluster (scripts/cluster.sh) on the first free loopback port from
# $2 that loads the pinned library; sets PORT.
#   start_cluster DIR FIRST_PORT [postgresql.conf lines...]
start_cluster() {
    local dir="$1" first="$2" candidate
    shift 2
    PORT=""
    for candidate in $(seq "$first" $((first + 19))); do
        if bash scripts/cluster.sh start "$dir" "$candidate" \
            "dynamic_library_path = '$LIB:\$libdir'" "$@" 2>/dev/null; then
            PORT="$candidate"
            echo "  PostgreSQL $PG_MAJOR listening on 127.0.0.1:$PORT"
            return 0
        fi
        echo "  port $candidate: could not start ($(grep -m1 -o 'could not bind.*\|FATAL.*' "$dir/server.log" 2>/dev/null || echo '?'))"
    done
    echo "bench: could not start a cluster on ports $first-$((first + 19))" >&2
    exit 1
}

# Creates the extension in template1 (so in every database created later) and in postgres,
# right after the install, while the shared control and script files are still the ones
# installed with the pinned library; fails if they were replaced before or during it.
create_extension_in_templates() {
    extension_files_unchanged || return 1
    python3 - "$PORT" <<'PY' || return 1
import sys
import psycopg
for db in ("template1", "postgres"):
    with psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname=db,
                         autocommit=True) as conn:
        conn.execute("create extension pg_session_auth")
PY
    extension_files_unchanged
}

# The whole preparation: build, install, pin, start the cluster, create the extension. Retried
# from the install when someone else's install got in between.
#   install_and_start_cluster DIR FIRST_PORT [postgresql.conf lines...]
install_and_start_cluster() {
    local attempt
    for attempt in 1 2 3 4 5; do
        build_and_pin_library
        snapshot_extension_files
        step "starting a cluster on loopback"
        start_cluster "$@"
        if create_extension_in_templates; then
            echo "  extension $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$LIB/extension/pg_session_auth.control") created in template1 and postgres from the files installed with the pinned library"
            return 0
        fi
        bash scripts/cluster.sh stop "$1" || true
        if [ "$attempt" = 5 ]; then
            echo "bench: the installed extension files kept changing under the benchmark" >&2
            exit 1
        fi
        echo "  someone installed another build of the extension meanwhile (attempt $attempt); installing again in 30 s"
        sleep 30
    done
}

# Builds bench/raw (the plain-Rust timers) in release mode in $CARGO_TARGET_DIR, retrying while
# core/ may be mid-edit. Arguments go to cargo build (say --bin NAME). Sets RAW_BIN_DIR.
build_raw() {
    local attempt
    RAW_BIN_DIR="$CARGO_TARGET_DIR/release"
    for attempt in 1 2 3 4 5; do
        cargo build --release --quiet --manifest-path bench/raw/Cargo.toml "$@" && return 0
        if [ "$attempt" = 5 ]; then
            echo "bench: could not build bench/raw" >&2
            return 1
        fi
        echo "  build failed (attempt $attempt; core may be mid-edit); retrying in 30 s"
        sleep 30
    done
}
