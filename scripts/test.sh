#!/usr/bin/env bash
# The whole test suite: installs and starts what it needs, then lint, type-check and pytest.
# Extra arguments go to pytest (e.g. -m "not integration" for the quick unit run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV=${VENV:-.venv}
"$VENV/bin/ruff" check exporter tests bench grafana scripts
"$VENV/bin/ruff" format --check exporter tests bench grafana scripts
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest "$@"
