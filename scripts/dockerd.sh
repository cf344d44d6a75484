#!/usr/bin/env bash
# dockerd for tests and benchmarks: start. Uses the dockerd that answers, else starts one.
# It never stops a daemon: tests that stop or break one start their own (test_docker_failures.py).
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

case "${1:-}" in
  start) start ;;
  *) echo "usage: $0 start" >&2; exit 2 ;;
esac
