"""TLS and basic auth (--web.config.file) with a real Prometheus scraping over them."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import yaml

from tests.conftest import Daemon, answers_http, answers_tcp, free_port, wait_for

pytestmark = pytest.mark.integration


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kato-exporter",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def secured_exporter(tmp_path):
    """A real exporter behind TLS and basic auth (user prometheus, password scrape-pass)."""
    cert, key = self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(10)).decode().replace("$2b$", "$2y$")
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
                "basic_auth_users": {"prometheus": hashed},
            }
        )
    )
    port = free_port()
    daemon = Daemon(
        f"exporter-tls-{port}",
        [
            sys.executable,
            "-m",
            "kato_exporter",
            f"--web.listen-address=127.0.0.1:{port}",
            "--no-collector.containers",
            f"--web.config.file={web_config}",
        ],
        answers_tcp(port),
        f"https://127.0.0.1:{port}",
    )
    yield daemon, cert
    daemon.stop()


def get(url: str, cert: Path, password: str | None) -> int:
    context = ssl.create_default_context(cafile=str(cert))
    request = urllib.request.Request(url)
    if password is not None:
        request.add_unredirected_header(
            "Authorization",
            "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode(),
        )
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_endpoints_need_tls_and_a_password(secured_exporter):
    exporter, cert = secured_exporter
    assert get(exporter.url + "/metrics", cert, "scrape-pass") == 200
    assert get(exporter.url + "/metrics", cert, "wrong") == 401
    assert get(exporter.url + "/-/healthy", cert, None) == 401
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP on the TLS port
        urllib.request.urlopen(exporter.url.replace("https", "http") + "/metrics", timeout=5)


def test_prometheus_scrapes_over_tls_with_basic_auth(secured_exporter, tmp_path):
    exporter, cert = secured_exporter
    (tmp_path / "right").write_text("scrape-pass\n")
    (tmp_path / "wrong").write_text("guess\n")
    target = exporter.url.removeprefix("https://")
    jobs = [
        {
            "job_name": name,
            "scheme": "https",
            "tls_config": {"ca_file": str(cert)},
            "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / name)},
            "static_configs": [{"targets": [target]}],
        }
        for name in ("right", "wrong")
    ]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
    port = free_port()
    prometheus = Daemon(
        f"prometheus-tls-{port}",
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        answers_http(f"http://127.0.0.1:{port}/-/ready"),
        f"http://127.0.0.1:{port}",
    )
    try:

        def targets() -> dict[str, dict]:
            with urllib.request.urlopen(prometheus.url + "/api/v1/targets", timeout=5) as response:
                active = json.load(response)["data"]["activeTargets"]
            return {t["labels"]["job"]: t for t in active}

        wait_for(
            lambda: {j: t["health"] for j, t in targets().items()} == {"right": "up", "wrong": "down"},
            20,
            what="the right password up, the wrong one down",
            show=targets,
        )
        assert "401" in targets()["wrong"]["lastError"]
        query = prometheus.url + "/api/v1/query?query=kato_exporter_source_up%7Bjob%3D%22right%22%7D"
        with urllib.request.urlopen(query, timeout=5) as response:
            assert json.load(response)["data"]["result"], "samples scraped over TLS are stored"
    finally:
        prometheus.stop()
