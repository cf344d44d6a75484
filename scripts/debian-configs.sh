#!/usr/bin/env bash
# Renders this repository's Prometheus and Alertmanager configs for Debian's own prometheus and
# prometheus-alertmanager services (into /etc, or --root DIR); installs the packages if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --stack >&2
exec "${VENV:-.venv}/bin/python" -m scripts.debian_configs "$@"
