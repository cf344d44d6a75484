#!/usr/bin/env bash
# The whole test suite: installs and starts what it needs, then lint, type-check and pytest.
# Extra arguments go to pytest, run in one process (e.g. -m "not integration" for the quick unit run).
# The whole suite builds the compose images in the background meanwhile (a few minutes on a fresh
# machine: the Debian base comes from debootstrap); the tests that need them wait for that build.
set -euo pipefail
cd "$(dirname "$0")/.."
took() { echo "test: $1 took $((SECONDS - started)) s" >&2; started=$SECONDS; }
started=$SECONDS
scripts/setup.sh
took installs
VENV=${VENV:-.venv}
WORKERS=${KATO_TEST_WORKERS:-6}  # pytest processes: most tests wait on daemons' clocks, not on a CPU

builder=""
stop_builder() { [ -z "$builder" ] || kill -TERM -- "-$builder" 2>/dev/null || true; }
trap stop_builder EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
if [ $# -eq 0 ]; then
  setsid scripts/build-image.sh >/tmp/kato-build-image.log 2>&1 &  # its own group: stopped whole
  builder=$!
fi

"$VENV/bin/ruff" check exporter tests bench grafana scripts
"$VENV/bin/ruff" format --check exporter tests bench grafana scripts
"$VENV/bin/mypy"
took "ruff and mypy"
if [ $# -eq 0 ]; then
  # in parallel, each test with its own daemons, ports and state (a file's tests in one process: some
  # share a stack started once); then, two at a time, the few that measure the machine itself (its
  # CPU, its mounts), which the others would disturb and which leave each other a core
  "$VENV/bin/python" -m pytest -n "$WORKERS" --dist loadfile -m "not solo"
  took "pytest, in $WORKERS processes"
  "$VENV/bin/python" -m pytest -n 2 --dist loadfile -m solo
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
