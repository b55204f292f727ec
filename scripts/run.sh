#!/usr/bin/env bash
# Start the DA-VAE Inspector dashboard.
#
# 1. A virtual environment in .venv (created when missing) with requirements.txt.
# 2. `streamlit run app.py`. Arguments given to this script are passed on, for
#    example `--server.port 8502`, `--server.address 127.0.0.1` or
#    `--server.maxUploadSize 4096`.
#
# The dashboard keeps its data in DAVAE_HOME (default ~/.davae); see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[run.sh] %s\n' "$*" >&2; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
log "installing Python packages from requirements.txt"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt

log "starting the dashboard; data in ${DAVAE_HOME:-~/.davae}"
exec .venv/bin/python -m streamlit run app.py "$@"
