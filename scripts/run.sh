#!/usr/bin/env bash
# Runs the stack from this checkout: kato-exporter (:9817), Prometheus (:9090) and Alertmanager (:9093),
# installing Prometheus and Alertmanager from Debian if missing. Ctrl-C stops all three.
# Flags for kato-exporter go after --, e.g.: scripts/run.sh -- --kato.url=http://localhost:8000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --stack >&2
exec "${VENV:-.venv}/bin/python" scripts/stack.py "$@"
