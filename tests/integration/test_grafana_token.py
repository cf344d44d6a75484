"""``python -m kato_exporter.grafana_token`` run again and again, as compose's grafana-init is, against
the stand-in of Grafana's API: a token Grafana takes is kept, one it refuses (its database was
reset) is made again, the account is matched by its exact name, and re-runs leave one token."""

from __future__ import annotations

import json
import logging
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kato_exporter.grafana_token import main
from tests.conftest import Daemon, answers_http, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def grafana(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "provisioning" / "datasources").mkdir(parents=True)
    (tmp_path / "provisioning" / "datasources" / "kato.yml").write_text("datasources: []\n")
    (tmp_path / "admin_password").write_text("admin-secret\n")
    port = free_port()
    environment = {
        "GF_PATHS_PROVISIONING": tmp_path / "provisioning",
        "GF_SECURITY_ADMIN_PASSWORD__FILE": tmp_path / "admin_password",
        "GF_SERVER_HTTP_ADDR": "127.0.0.1",
        "GF_SERVER_HTTP_PORT": port,
    }
    daemon = Daemon(
        f"grafana-double-{port}",
        ["env", *(f"{k}={v}" for k, v in environment.items()), sys.executable, "-m", "tests.grafana_double"],
        answers_http(f"http://127.0.0.1:{port}/api/health"),
        f"http://127.0.0.1:{port}",
    )
    yield daemon
    daemon.stop()


def state(grafana: Daemon) -> Any:
    with urllib.request.urlopen(grafana.url + "/_double/state", timeout=5) as response:
        return json.load(response)


def admin(grafana: Daemon, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        grafana.url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Basic YWRtaW46YWRtaW4tc2VjcmV0", "Content-Type": "application/json"},
    )  # admin:admin-secret
    urllib.request.urlopen(request, timeout=5).close()


def test_a_token_is_kept_while_grafana_takes_it_and_made_again_when_it_does_not(grafana, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "grafana_token"
    run = [f"--url={grafana.url}", f"--admin-password-file={tmp_path / 'admin_password'}", f"--out={out}"]
    assert main([*run, "--wait=5"]) == 0
    first = out.read_text()
    assert main(run) == 0
    assert out.read_text() == first and "holds a token Grafana takes" in caplog.text
    assert [t["name"].startswith("kato-exporter-") for t in state(grafana)["tokens"]] == [True]

    grafana.stop()  # its database reset: the old token is refused
    grafana.start()
    admin(grafana, "/api/serviceaccounts", {"name": "kato-exporter-old", "role": "Admin"})
    assert main(run) == 0
    assert out.read_text() != first and "Grafana refuses the token" in caplog.text
    accounts = {a["name"]: a["id"] for a in state(grafana)["accounts"]}
    assert accounts.keys() == {"kato-exporter-old", "kato-exporter"}  # its own, not the first hit
    assert [t["account"] for t in state(grafana)["tokens"]] == [accounts["kato-exporter"]]

    out.unlink()  # the token file lost: a new token, and the one before revoked
    assert main(run) == 0
    assert len(state(grafana)["tokens"]) == 1
    assert out.stat().st_mode & 0o777 == 0o600
