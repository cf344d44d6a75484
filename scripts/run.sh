#!/usr/bin/env bash
# Runs the exporter from this checkout (listens on :9817 unless told otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --venv-only >&2
exec "${VENV:-.venv}/bin/kato-exporter" "$@"
