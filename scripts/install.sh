#!/usr/bin/env bash
# Builds pg_session_auth and installs it into a PostgreSQL without disturbing servers that
# are running with an earlier build:
#   scripts/install.sh PG_CONFIG [release|debug]     (default: release)
#
# `cargo pgrx install` copies the library over the installed file in place; a running server
# has that file mapped, and rewriting its pages under it kills the server's processes
# (SIGILL/SIGBUS). Here the package is built into a staging directory and each file is copied
# next to its destination and renamed over it: a running server keeps the old file (its inode
# lives on until the last process that mapped it exits); new backends load the new one.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG="${1:?usage: scripts/install.sh PG_CONFIG [release|debug]}"
PROFILE="${2:-release}"
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/pg_session_auth-package.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

case "$PROFILE" in
release) cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$STAGE" >/dev/null ;;
debug) cargo pgrx package --debug --pg-config "$PG_CONFIG" --out-dir "$STAGE" >/dev/null ;;
*) echo "scripts/install.sh: profile is release or debug, not $PROFILE" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

# Every file of the package, at its path below the staging directory.
(cd "$STAGE" && find . -type f -print0) | while IFS= read -r -d '' file; do
    target="/${file#./}"
    $SUDO mkdir -p "$(dirname "$target")"
    $SUDO cp "$STAGE/$file" "$target.new.$$"
    $SUDO chmod 644 "$target.new.$$"
    $SUDO mv -f "$target.new.$$" "$target"
done
