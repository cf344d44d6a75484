#!/usr/bin/env bash
# Installs and starts what the tests need; safe to run again.
#   Debian packages (when missing), a virtualenv with the exporter and its test tools,
#   dockerd (vfs storage), and a busybox image imported from busybox-static.
# With --venv-only: just the virtualenv (enough to run the exporter);
# with --stack: the virtualenv, Prometheus, Alertmanager, redis_exporter and blackbox_exporter
# (what scripts/run.sh needs); with --system: the Debian packages and dockerd only (enough for
# scripts/build-image.sh to start, which scripts/test.sh does while the rest installs).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
IMAGE=kato-test/busybox:latest
STACK_PACKAGES=(prometheus prometheus-alertmanager prometheus-redis-exporter prometheus-blackbox-exporter)
TEST_PACKAGES=(docker.io busybox-static redis-server prometheus-node-exporter iproute2 openssl util-linux influxdb chromium
  haproxy docker-compose debootstrap victoria-metrics systemd clickhouse-server)
GRAFANA_JS=tests/grafana_js  # Grafana's published frontend packages, pinned by its lockfile

install_venv() {
  {  # one install at a time: scripts/build-image.sh may ask for one meanwhile
    flock 8
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    if ! "$VENV/bin/python" -c "import kato_exporter, pytest" 2>/dev/null \
       || [ exporter/pyproject.toml -nt "$VENV/.installed" ]; then
      echo "setup: installing Python packages into $VENV"
      "$VENV/bin/pip" install -q --disable-pip-version-check -e "./exporter[test]" 2>&1 \
        | grep -v "^WARNING: Location" || true
      "$VENV/bin/python" -c "import kato_exporter, pytest"  # fail loudly if the install did
      touch "$VENV/.installed"
    fi
  } 8>"$VENV.lock"
}

install_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

case "${1:-}" in
  --venv-only) install_venv; exit 0 ;;
  --stack) install_packages "${STACK_PACKAGES[@]}"; install_venv; exit 0 ;;
  --system) install_packages "${STACK_PACKAGES[@]}" "${TEST_PACKAGES[@]}"; scripts/dockerd.sh start; exit 0 ;;
esac

install_grafana_js() {
  command -v npm >/dev/null || install_packages nodejs npm  # a machine may have Node.js of its own
  if [ ! -d "$GRAFANA_JS/node_modules" ] || [ "$GRAFANA_JS/package-lock.json" -nt "$GRAFANA_JS/node_modules" ]; then
    echo "setup: installing Grafana's frontend packages into $GRAFANA_JS"
    npm ci --prefix "$GRAFANA_JS" --no-audit --no-fund --loglevel=error >/dev/null
    touch "$GRAFANA_JS/node_modules"
  fi
}

install_packages "${STACK_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
install_venv
install_grafana_js

scripts/dockerd.sh start

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,tmp,proc,sys,dev,etc,data}
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' - "$IMAGE" >/dev/null
  rm -rf "$root"
  echo "setup: imported $IMAGE"
fi
