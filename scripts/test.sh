#!/usr/bin/env bash
# Install everything the test suite needs, then run all of it.
#
# 1. Debian packages: chromium (browser test), fonts-nanum (Korean glyphs in
#    that browser) and postgresql (server tests), installed with apt-get when
#    missing (needs root or sudo).
# 2. A virtual environment in .venv with requirements-dev.txt.
# 3. ruff lint and format checks.
# 4. A throw-away PostgreSQL server on 127.0.0.1 in a temporary directory;
#    DAVAE_TEST_DATABASE_URL points the storage tests at it, so they run on
#    SQLite and on PostgreSQL. The server is stopped on exit.
# 5. pytest over tests/, with any arguments given to this script.
#
# Set DAVAE_TEST_NO_POSTGRES=1 to skip the server (storage tests then run on
# SQLite only).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_packages=()
[ -x /usr/bin/chromium ] || missing_packages+=(chromium)
if ! fc-list :lang=ko 2>/dev/null | grep -q .; then
  missing_packages+=(fonts-nanum)
fi
if [ -z "${DAVAE_TEST_NO_POSTGRES:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing_packages+=(postgresql)
fi
if [ "${#missing_packages[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing_packages[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing_packages[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
log "installing Python packages from requirements-dev.txt"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt

log "ruff check and format check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

pg_dir=""
stop_postgres() {
  if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
    log "stopping PostgreSQL"
    run_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null || true
  fi
  [ -z "$pg_dir" ] || rm -rf "$pg_dir"
}
run_pg() {
  # initdb and postgres refuse to run as root, so run them as the postgres user.
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
trap stop_postgres EXIT

if [ -z "${DAVAE_TEST_NO_POSTGRES:-}" ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pg_dir=$(mktemp -d /tmp/davae-pg.XXXXXX)
  chmod 755 "$pg_dir"
  [ "$(id -u)" -ne 0 ] || chown postgres "$pg_dir"
  pg_port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log "starting PostgreSQL ($pg_bin) on 127.0.0.1:$pg_port"
  run_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  run_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c max_connections=200" start >/dev/null
  "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres davae_test
  export DAVAE_TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$pg_port/davae_test"
fi

log "running pytest"
.venv/bin/python -m pytest "$@"
