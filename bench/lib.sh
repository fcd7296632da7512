# Shared by the benchmark commands (sourced, not run). Expects PG_CONFIG, WORK and LIB.

step() { printf '\n== %s\n' "$*"; }

# Builds the extension in release mode, installs it into the PostgreSQL of $PG_CONFIG, and
# keeps a private copy in $LIB (clusters load it through dynamic_library_path). Others may be
# building or installing at the same time: a failed build is retried, and the pinned copy
# means a later `cargo pgrx install` (say a debug build) cannot swap the library under a
# running benchmark.
build_and_pin_library() {
    step "building and installing the extension (release)"
    local pkglibdir attempt
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
}
