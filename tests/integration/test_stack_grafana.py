"""scripts/run.sh with Grafana on the PATH: Grafana is started with the rendered provisioning,
a Viewer service account's token is made through its API, and the exporter pushes to Grafana
Live with it. Grafana cannot be installed here, so a stand-in of its API plays it (started
exactly as Grafana would be: same binary name, arguments and GF_* environment)."""

from __future__ import annotations

import json
import stat
import sys
import urllib.request

import pytest

from scripts.stack import start, stop
from tests.conftest import ROOT, RUN_LABEL, free_port, wait_for
from tests.exposition import scrape
from tests.standins import loopback_settings

pytestmark = pytest.mark.integration


def test_run_sh_starts_grafana_and_the_exporter_pushes_with_a_viewer_token(tmp_path, dockerd):
    binary = tmp_path / "bin" / "grafana"
    binary.parent.mkdir()
    binary.write_text(f'#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m tests.grafana_double "$@"\n')
    binary.chmod(0o755)
    settings = loopback_settings(
        tmp_path / "state",
        [f"--collector.containers.label-selector={RUN_LABEL}"],
        grafana_port=free_port(),
        grafana=str(binary),
    )
    programs = start(settings)
    try:
        assert [p.name for p in programs] == ["grafana", "kato-exporter", "alertmanager", "prometheus"]
        grafana, exporter = programs[0], programs[1]
        assert "server --homepath=" in (settings.state / "logs" / "grafana.log").read_text()
        token = settings.state / "secrets" / "grafana_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600

        def pushed() -> float:
            return (
                scrape(exporter.url + "/metrics").value("kato_exporter_live_pushes_total", result="success")
                or 0
            )

        wait_for(lambda: pushed() >= 2, 15, what="pushes to Grafana Live")
        with urllib.request.urlopen(grafana.url + "/_double/state", timeout=5) as response:
            state = json.load(response)
        assert state["accounts"] == [{"id": 1, "name": "kato-exporter", "role": "Viewer"}]
        assert state["pushes"]["kato"] >= 2
        assert f"http://localhost:{settings.prometheus_port}" in state["datasources"]
        assert token.read_text().strip() not in (settings.state / "logs" / "kato-exporter.log").read_text()
    finally:
        stop(programs)
