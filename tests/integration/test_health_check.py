"""`kato-exporter --health-check` follows the exporter's own settings: run with the same
environment as a real exporter (as Docker's HEALTHCHECK and the systemd unit run it), it says
healthy for the default address, another port, TLS, and TLS with basic auth; unhealthy, with the
reason, when the exporter is gone or the credentials are missing or wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import yaml

from tests.conftest import Daemon, answers_tcp, free_port
from tests.integration.test_web_security import self_signed

pytestmark = pytest.mark.integration


def exporter(env: dict[str, str], port: int) -> Daemon:
    return Daemon(
        f"exporter-health-{port}",
        ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "kato_exporter"],
        answers_tcp(port),
        "",
    )


def health_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kato_exporter", "--health-check"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=20,
    )


def web_config(folder: Path, users: bool) -> str:
    cert, key = self_signed(folder)
    config: dict[str, object] = {"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}}
    if users:
        hashed = bcrypt.hashpw(b"probe-pass", bcrypt.gensalt(10)).decode()
        config["basic_auth_users"] = {"probe": hashed}
    path = folder / "web.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


BASE = {"KATO_EXPORTER_COLLECTOR_CONTAINERS": "false", "KATO_EXPORTER_COLLECTOR_HOST": "false"}


def test_default_address():
    daemon = exporter(BASE, 9817)
    try:
        done = health_check(BASE)
        assert done.returncode == 0, done.stderr
        assert "healthy: http://127.0.0.1:9817/-/healthy: 200 OK" in done.stdout
    finally:
        daemon.stop()
    done = health_check(BASE)
    assert done.returncode == 1
    assert "unhealthy: http://127.0.0.1:9817/-/healthy: [Errno 111] Connection refused" in done.stderr


@pytest.mark.parametrize("security", ["another port", "TLS", "TLS with basic auth"])
def test_health_check_follows_the_settings(tmp_path, security):
    port = free_port()
    env = {**BASE, "KATO_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    if security != "another port":
        env["KATO_EXPORTER_WEB_CONFIG_FILE"] = web_config(tmp_path, users=security == "TLS with basic auth")
    daemon = exporter(env, port)
    try:
        if security == "TLS with basic auth":
            done = health_check(env)
            assert done.returncode == 1
            assert "asks for basic auth: give --web.health-check.auth-file" in done.stderr
            wrong = tmp_path / "wrong"
            wrong.write_text("probe:not-it\n")
            done = health_check({**env, "KATO_EXPORTER_WEB_HEALTH_CHECK_AUTH_FILE": str(wrong)})
            assert done.returncode == 1
            assert "401" in done.stderr
            auth = tmp_path / "auth"
            auth.write_text("probe:probe-pass\n")
            env["KATO_EXPORTER_WEB_HEALTH_CHECK_AUTH_FILE"] = str(auth)
        done = health_check(env)
        assert done.returncode == 0, done.stderr
        scheme = "http" if security == "another port" else "https"
        assert f"healthy: {scheme}://127.0.0.1:{port}/-/healthy: 200 OK" in done.stdout
    finally:
        daemon.stop()
    assert health_check(env).returncode == 1
