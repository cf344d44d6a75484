"""Many hosts, one Prometheus: three exporters on loopback addresses, each watching containers of
its own, the first started by the native stack and the others listed in target files (file_sd),
one of them added while Prometheus runs."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.stack import Program, start, stop
from tests.conftest import RUN_ID, Exporter, wait_for
from tests.dashboards import dashboards, fill, label_values_query, targets, variables
from tests.standins import loopback_settings

pytestmark = pytest.mark.integration
REFRESH_SECONDS = 30  # file_sd's refresh_interval in prometheus/prometheus.yml


@dataclass
class Hosts:
    prometheus: Program
    exporters: dict[str, str]  # host label -> instance
    targets: Path
    label: Callable[[str], str]  # host -> the Docker label its containers carry

    def query(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)["data"]


def host_file(folder: Path, host: str, instance: str) -> None:
    """The file that lists one more host, as an operator writes it."""
    (folder / f"{host}.yml").write_text(yaml.safe_dump([{"targets": [instance], "labels": {"host": host}}]))


def all_three(hosts: Hosts) -> None:
    """host-c listed too (the first test adds it; alone, a test adds it itself), all scraped."""
    host_file(hosts.targets, "host-c", hosts.exporters["host-c"])
    wait_for(lambda: up_hosts(hosts) == hosts.exporters, REFRESH_SECONDS + 5, what="three hosts scraped")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory, dockerd: None) -> Iterator[Hosts]:
    tmp = tmp_path_factory.mktemp("hosts")
    folder = tmp / "targets"
    folder.mkdir()

    def label(host: str) -> str:
        return f"kato.test.host={RUN_ID}-{host}"

    others = {
        host: Exporter([f"--collector.containers.label-selector={label(host)}"], address=address)
        for host, address in (("host-b", "127.0.0.2"), ("host-c", "127.0.0.3"))
    }
    host_file(folder, "host-b", others["host-b"].address)
    settings = loopback_settings(
        tmp / "state",
        [f"--collector.containers.label-selector={label('host-a')}"],
        scrape_interval="1s",
        evaluation_interval="1s",
        host_label="host-a",
        targets=folder,
    )
    programs: list[Program] = []
    try:
        programs = start(settings)
        instances = {"host-a": f"localhost:{settings.exporter_port}"}
        instances |= {host: e.address for host, e in others.items()}
        yield Hosts(programs[-1], instances, folder, label)
    finally:
        stop(programs)
        for exporter in others.values():
            exporter.stop()


def up_hosts(hosts: Hosts) -> dict[str, str]:
    """host -> instance of the kato-exporter targets Prometheus scrapes with success."""
    active = hosts.query("targets")["activeTargets"]
    return {
        t["labels"]["host"]: t["labels"]["instance"]
        for t in active
        if t["labels"]["job"] == "kato-exporter" and t["health"] == "up"
    }


def test_a_host_file_added_at_runtime_is_scraped_within_the_refresh_interval(hosts: Hosts) -> None:
    wait_for(lambda: up_hosts(hosts).keys() == {"host-a", "host-b"}, 20, what="host-a and host-b scraped")
    added = time.monotonic()
    host_file(hosts.targets, "host-c", hosts.exporters["host-c"])
    wait_for(lambda: "host-c" in up_hosts(hosts), REFRESH_SECONDS + 5, interval=0.2, what="host-c scraped")
    print(f"host-c scraped {time.monotonic() - added:.1f} s after its file was written")
    assert up_hosts(hosts) == hosts.exporters


def test_dashboards_show_one_series_per_host(hosts: Hosts) -> None:
    all_three(hosts)
    board = dashboards()["kato-host.json"]
    values: dict[str, list[str]] = {}
    for variable in variables(board):
        selector, label = label_values_query(variable["query"])
        values[variable["name"]] = hosts.query(
            f"label/{label}/values", **{"match[]": fill(selector, values, 120, 1)}
        )
    assert set(values["instance"]) == set(hosts.exporters.values())  # the variable lists every host
    time.sleep(3)  # a few scrapes of each, for rate()
    checked = 0
    for target in targets("prometheus"):
        if target.dashboard != "kato-host.json" or "$instance" not in target.query["expr"]:
            continue
        expr = fill(target.query["expr"], values, 120, 1)
        result = hosts.query("query", query=expr)["result"]
        seen = {r["metric"].get("instance") for r in result}
        assert set(hosts.exporters.values()) <= seen, (target.where, expr, seen)
        assert {r["metric"].get("host") for r in result} >= set(hosts.exporters), (target.where, expr)
        checked += 1
    assert checked >= 3


def test_an_alert_on_one_host_names_that_host(hosts: Hosts, run_container: Callable[..., str]) -> None:
    all_three(hosts)
    name = run_container("sleep 0.3; exit 1", "--restart", "always", "--label", hosts.label("host-b"))

    def restarting() -> list[dict[str, Any]]:
        alerts = hosts.query("alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "KatoContainerRestarting"]

    wait_for(
        lambda: [a for a in restarting() if a["state"] == "firing"], 60, what="KatoContainerRestarting firing"
    )
    (alert,) = restarting()
    assert alert["labels"]["name"] == name
    assert alert["labels"]["host"] == "host-b" and alert["labels"]["instance"] == hosts.exporters["host-b"]
