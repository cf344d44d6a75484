#!/usr/bin/env bash
# Builds the compose stack's images with no registry; safe to run again (what exists is kept).
#
#   kato-local/debian:12           Debian 12 by debootstrap (Python 3.11 and haproxy from Debian's
#                                  packages), imported with `docker import`
#   kato-exporter:local            exporter/Dockerfile on that base, from wheels built here
#   kato-local/prometheus:debian   Debian's prometheus, as prom/prometheus runs it
#   kato-local/alertmanager:debian Debian's prometheus-alertmanager, as prom/alertmanager runs it
#   kato-local/haproxy:debian      Debian's haproxy, for docker-api-proxy/haproxy.cfg
#
# The exporter's image is built again when a file of exporter/ changes. Grafana has no Debian
# package, so no Grafana image is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
# One build at a time: scripts/test.sh starts one while the tests run, whose image fixture waits here.
exec 9>/tmp/kato-build-image.lock
flock 9

BASE=kato-local/debian:12
VENV=${VENV:-.venv}
have() { docker image inspect "$1" >/dev/null 2>&1; }

# The Debian mirror this machine's apt uses (deb822 .sources files, else sources.list).
mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { echo "build-image: no Debian mirror found in /etc/apt" >&2; exit 1; }
  echo "$uri"
}

build_base() {
  have "$BASE" && return 0
  command -v debootstrap >/dev/null || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  }
  local root
  root=$(mktemp -d /var/tmp/kato-rootfs.XXXXXX)
  trap 'rm -rf "$root"' RETURN
  echo "build-image: debootstrap of Debian 12 into $root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,haproxy \
    bookworm "$root" "$(mirror)" >"$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; exit 1; }
  rm -f "$root.log"
  chmod 0755 "$root"  # mktemp made it 0700: it becomes the image's /
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
  local python  # the exporter's wheels are for it: read here, where no container is needed
  python=$(chroot "$root" python3 -c 'import platform; print(platform.python_version())')
  tar -C "$root" -c . | docker import --change "LABEL kato.python=$python" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  echo "build-image: imported $BASE"
}

# A digest of what goes into the exporter's image: built again when it changes.
exporter_source() {
  find exporter -type f -not -path '*/__pycache__/*' -not -path 'exporter/wheels/*' \
    -not -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha1sum | sha1sum | cut -c1-40
}

build_exporter() {
  local source
  source=$(exporter_source)
  [ "$(docker image inspect -f '{{index .Config.Labels "kato.source"}}' kato-exporter:local 2>/dev/null)" = "$source" ] \
    && return 0
  scripts/setup.sh --venv-only  # quick when it is there; waits for an install under way
  # wheels of what exporter/ needs and builds with, for the base's Python (markers included)
  local python requirements
  python=$(docker image inspect -f '{{index .Config.Labels "kato.python"}}' "$BASE")
  [ -n "$python" ] || python=$(docker run --rm "$BASE" python3 -c 'import platform; print(platform.python_version())')
  requirements=$("$VENV/bin/python" -c 'import tomllib; print("\n".join(
    tomllib.load(open("exporter/pyproject.toml", "rb"))["project"]["dependencies"]))')
  rm -rf exporter/wheels
  # shellcheck disable=SC2086  # one requirement a line, none with spaces
  "$VENV/bin/python" scripts/wheels.py exporter/wheels "$python" "setuptools>=68" $requirements
  docker build -q --force-rm -f exporter/Dockerfile --build-arg "BASE=$BASE" --build-arg PIP_NO_INDEX=1 \
    --label "kato.source=$source" -t kato-exporter:local . >/dev/null
  echo "build-image: built kato-exporter:local"
}

# An image of one of Debian's programs on the base, in one layer: the files of a folder laid out as
# the image's / (owners kept), and its user, folder and command as `docker commit --change`s (a
# Dockerfile would copy the whole base once a step with vfs: ten times slower).
build_program() {
  local tag=$1 stage=$2 container
  shift 2
  have "$tag" && return 0
  container=$(docker create "$BASE")
  # shellcheck disable=SC2046  # the folder's top-level names: none with spaces
  if { [ -z "$stage" ] || tar -C "$stage" -c $(ls "$stage") | docker cp - "$container:/"; } \
     && docker commit "$@" "$container" "$tag" >/dev/null; then
    docker rm "$container" >/dev/null
  else
    docker rm "$container" >/dev/null
    echo "build-image: $tag failed" >&2
    exit 1
  fi
  echo "build-image: built $tag"
}

# A folder for build_program, from "destination=source" (a file), "destination=" (an empty folder
# of nobody's: the program's data) and "destination" (an empty folder of root's).
stage() {
  local folder pair to
  folder=$(mktemp -d)
  for pair in "$@"; do
    to=$folder/${pair%%=*}
    case "$pair" in
      *=) mkdir -p "$to" && chown 65534:65534 "$to" ;;
      *=*) mkdir -p "$(dirname "$to")" && cp "${pair#*=}" "$to" ;;
      *) mkdir -p "$to" ;;
    esac
  done
  echo "$folder"
}

scripts/dockerd.sh start
build_base
build_exporter
for pkg in prometheus prometheus-alertmanager; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || scripts/setup.sh --stack
done
staged=()
trap 'rm -rf "${staged[@]}"' EXIT
# /bin is usr/bin on Debian 12
staged+=("$(stage usr/bin/prometheus=/usr/bin/prometheus usr/bin/promtool=/usr/bin/promtool \
  prometheus= etc/prometheus)")
build_program kato-local/prometheus:debian "${staged[-1]}" --change "USER 65534" --change "WORKDIR /prometheus" \
  --change 'ENTRYPOINT ["/bin/prometheus"]' \
  --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
templates=/usr/share/prometheus/alertmanager
staged+=("$(stage usr/bin/alertmanager=/usr/bin/prometheus-alertmanager usr/bin/amtool=/usr/bin/amtool \
  "${templates#/}/default.tmpl=$templates/default.tmpl" "${templates#/}/email.tmpl=$templates/email.tmpl" \
  alertmanager= etc/alertmanager)")
build_program kato-local/alertmanager:debian "${staged[-1]}" --change "USER 65534" \
  --change "WORKDIR /alertmanager" --change 'ENTRYPOINT ["/bin/alertmanager"]' \
  --change 'CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]'
build_program kato-local/haproxy:debian "" --change "USER 99" \
  --change 'CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
echo "build-image: done in ${SECONDS} s"
