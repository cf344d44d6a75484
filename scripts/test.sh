#!/usr/bin/env bash
# The whole test suite: installs and starts what it needs, then lint, type-check and pytest.
# Extra arguments go to pytest, run in one process (e.g. -m "not integration" for the quick unit run).
# The whole suite builds the compose images in the background meanwhile, from as soon as the Debian
# packages are in (a few minutes on a fresh machine: the Debian base comes from debootstrap); the
# tests that need them wait for that build.
set -euo pipefail
cd "$(dirname "$0")/.."
took() { echo "test: $1 took $((SECONDS - started)) s" >&2; started=$SECONDS; }
started=$SECONDS
VENV=${VENV:-.venv}
WORKERS=${KATO_TEST_WORKERS:-6}  # pytest processes: most tests wait on daemons' clocks, not on a CPU

builder=""
stop_builder() { [ -z "$builder" ] || kill -TERM -- "-$builder" 2>/dev/null || true; }
trap stop_builder EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
if [ $# -eq 0 ]; then
  scripts/setup.sh --system  # Debian packages and dockerd: the image build starts on them
  setsid scripts/build-image.sh >/tmp/kato-build-image.log 2>&1 &  # its own group: stopped whole
  builder=$!
fi
scripts/setup.sh
took installs

"$VENV/bin/ruff" check exporter tests bench grafana scripts
"$VENV/bin/ruff" format --check exporter tests bench grafana scripts
"$VENV/bin/mypy"
took "ruff and mypy"
if [ $# -eq 0 ]; then
  # in parallel, each test with its own daemons, ports and state (a file's tests in one process: some
  # share a stack started once), the files in the order tests/conftest.py gives them (longest
  # first); then, two at a time, the few that measure the machine itself (its CPU, its mounts, a
  # push a second), which the others would disturb and which leave each other a core
  "$VENV/bin/python" -m pytest -n "$WORKERS" --dist loadfile --no-loadscope-reorder -m "not solo"
  took "pytest, in $WORKERS processes"
  "$VENV/bin/python" -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m solo
  took "pytest, the solo tests"
else
  "$VENV/bin/python" -m pytest "$@"
fi
if [ -n "$builder" ]; then
  if wait "$builder"; then
    echo "test: in the background, $(tail -n 1 /tmp/kato-build-image.log)" >&2
  else
    echo "test: the background image build failed (the image tests ran it again); its log:" >&2
    tail -n 20 /tmp/kato-build-image.log >&2
  fi
  builder=""
fi
echo "test: all passed in $SECONDS s" >&2
