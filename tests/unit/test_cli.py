"""The command line as a user meets it: a real process."""

from __future__ import annotations

import socket
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kato_exporter", *args], capture_output=True, text=True, timeout=30
    )


def test_busy_port_is_a_clear_error_and_exit_1():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run(
            f"--web.listen-address=127.0.0.1:{port}", "--no-collector.containers", "--no-collector.host"
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_bad_flag_value_names_the_flag_and_exits_2():
    done = run("--collector.containers.interval=often")
    assert done.returncode == 2
    assert "--collector.containers.interval: expected a duration" in done.stderr


def test_env_var_is_read():
    done = subprocess.run(
        [sys.executable, "-m", "kato_exporter", "--check-config"],
        capture_output=True,
        text=True,
        env={"KATO_EXPORTER_KATO_URL": "http://kato:8000", "PATH": "/usr/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "kato.url = 'http://kato:8000'" in done.stdout
