#!/usr/bin/env bash
# Runs the stack from this checkout: kato-exporter (:9817), Prometheus (:9090), Alertmanager (:9093) and,
# when a grafana or grafana-server binary is on the PATH, Grafana (:3000) with the KATO dashboards;
# installs Prometheus and Alertmanager from Debian if missing. Ctrl-C, SIGTERM or SIGHUP stops them all.
# Flags for kato-exporter go after --, e.g.: scripts/run.sh -- --kato.url=http://localhost:8000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --stack >&2
exec "${VENV:-.venv}/bin/python" scripts/stack.py "$@"
