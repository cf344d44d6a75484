"""The command line as a user meets it: a real process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--web.telemetry-path=metrics"], "--web.telemetry-path: expected a path such as /metrics"),
        (["--web.telemetry-path=/"], "--web.telemetry-path: expected a path"),
        (
            ["--alertmanager.token-file=/nonexistent/token"],
            "--alertmanager.token-file: /nonexistent/token does not exist",
        ),
        (
            ["--kato.redis-password-file=/nonexistent"],
            "--kato.redis-password-file: /nonexistent does not exist",
        ),
        (["--grafana.url=http://grafana:3000"], "--grafana.token-file: needed with --grafana.url"),
        (["--grafana.live.stream=kato/x"], "--grafana.live.stream: expected letters, digits, _ or -"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(args, message):
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tls_server_config: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}",
            "tls_server_config.cert_file/key_file: cannot load",
        ),
        ("tls_server_config: {cert_file: a}", "tls_server_config: cert_file and key_file are both required"),
        ("basic_auth_users: {prometheus: hunter2}", "basic_auth_users.prometheus: expected a bcrypt hash"),
        ("http_server_config: {http2: true}", "http_server_config: not supported"),
        ("tls_server_config: {cert_file: a, key_file: b, min_version: SSL3}", "min_version"),
    ],
)
def test_bad_web_config_exits_2_naming_the_key(tmp_path, text, message):
    path = tmp_path / "web.yml"
    path.write_text(text)
    done = run(f"--web.config.file={path}", "--check-config")
    assert done.returncode == 2
    assert f"{path}: " in done.stderr and message in done.stderr


def test_check_config_redacts_passwords():
    done = run(
        "--kato.url=http://kato:8000",
        "--kato.redis-url=redis://user:hunter2@redis:6379/0?password=hunter3",
        "--check-config",
    )
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout and "hunter3" not in done.stdout
    assert "redis://user:***@redis:6379/0?password=***" in done.stdout


def test_logs_redact_passwords():
    """Nothing listens where Redis should be: the log names the URL, never its password."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kato_exporter",
            f"--web.listen-address=127.0.0.1:{free_port()}",
            "--no-collector.containers",
            "--no-collector.host",
            "--kato.url=http://127.0.0.1:9",
            "--no-kato.logs",
            "--kato.redis-url=redis://:hunter2@127.0.0.1:9/0?password=hunter3",
            "--log.level=debug",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, log = proc.communicate(timeout=10)
    assert "redis://:***@127.0.0.1:9/0?password=***" in log
    assert "hunter" not in log
