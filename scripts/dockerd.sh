#!/usr/bin/env bash
# dockerd for tests and benchmarks: start | stop | restart. Leaves a dockerd it did not start alone.
set -euo pipefail
LOG=${DOCKERD_LOG:-/tmp/kato-dockerd.log}

running() { docker info >/dev/null 2>&1; }

start() {
  running && return 0
  # cgroupfs-mount is what the init script would do on a machine without systemd
  command -v cgroupfs-mount >/dev/null && cgroupfs-mount >/dev/null 2>&1 || true
  pgrep -x dockerd >/dev/null || rm -f /var/run/docker.pid  # left by a killed daemon
  # --shutdown-timeout 1: test containers run `sleep` as PID 1, which ignores SIGTERM
  nohup dockerd --storage-driver vfs --shutdown-timeout 1 >>"$LOG" 2>&1 &
  for _ in $(seq 100); do
    running && return 0
    sleep 0.2
  done
  echo "dockerd did not start; last lines of $LOG:" >&2
  tail -n 20 "$LOG" >&2
  return 1
}

stop() {
  pkill -TERM -x dockerd || return 0
  for _ in $(seq 300); do
    pgrep -x dockerd >/dev/null || return 0
    sleep 0.1
  done
  pkill -KILL -x dockerd || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|restart" >&2; exit 2 ;;
esac
