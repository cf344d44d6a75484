"""KATO and its databases from outside: the real blackbox_exporter, started by the stack as
scripts/run.sh starts it (with the repository's modules and faster clocks), probes the KATO double
(healthy, degraded, slow, down), a real ClickHouse's /ping and a stand-in for Qdrant's /readyz
(Qdrant cannot run here), and the real Prometheus evaluates the probe alerts and SLO rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.stack import Program, start, stop
from tests.conftest import Daemon, prometheus_api, wait_for
from tests.integration.test_kato import call
from tests.standins import Readiness, loopback_settings, qdrant_standin

pytestmark = pytest.mark.integration


def set_faults(kato: Daemon, **faults: object) -> None:
    assert call("POST", f"{kato.url}/_double/faults", faults)[0] == 200


def by_service(prometheus: Program, query: str) -> dict[str, float]:
    """``query``'s value for each probed service."""
    result = prometheus_api(prometheus, "query", query=query)["result"]
    return {sample["metric"]["service"]: float(sample["value"][1]) for sample in result}


def alert_states(prometheus: Program, alertname: str) -> dict[str, tuple[str, str]]:
    """(state, severity) of each ``alertname`` alert, by service."""
    alerts = prometheus_api(prometheus, "alerts")["alerts"]
    return {
        a["labels"]["service"]: (a["state"], a["labels"]["severity"])
        for a in alerts
        if a["labels"]["alertname"] == alertname
    }


@pytest.fixture
def qdrant() -> Iterator[tuple[str, Readiness]]:
    with qdrant_standin() as standin:
        yield standin


@pytest.fixture
def probed(
    tmp_path: Path,
    kato_double: Callable[..., Daemon],
    clickhouse_server: Daemon,
    qdrant: tuple[str, Readiness],
) -> Iterator[tuple[Daemon, Program]]:
    """The stack watching the KATO double, ClickHouse and the Qdrant stand-in; yields (KATO,
    Prometheus) once every probe has passed."""
    kato = kato_double()
    settings = loopback_settings(
        tmp_path / "state",
        [f"--kato.url={kato.url}", "--no-collector.host", "--no-collector.containers"],
        clickhouse_url=f"{clickhouse_server.url}/ping",
        qdrant_url=qdrant[0],
        probe_interval="3s",  # time for a slow /health: a probe ends 0.5 s before the scrape's timeout
        evaluation_interval="1s",
    )
    programs = start(settings)
    try:
        [prometheus] = [p for p in programs if p.name == "prometheus"]
        everything_up = {"kato": 1.0, "clickhouse": 1.0, "qdrant": 1.0}
        wait_for(lambda: by_service(prometheus, "probe_success") == everything_up, 40, what="3 probes up")
        yield kato, prometheus
    finally:
        stop(programs)


def test_probes_judge_kato_and_its_databases_from_outside(probed, clickhouse_server, qdrant):
    kato, prometheus = probed
    phases = prometheus_api(prometheus, "query", query='probe_http_duration_seconds{service="kato"}')[
        "result"
    ]
    assert {s["metric"]["phase"] for s in phases} == {"resolve", "connect", "tls", "processing", "transfer"}
    wait_for(lambda: by_service(prometheus, "kato:probe_fast:bool") == {"kato": 1.0}, 10, what="a fast probe")

    set_faults(kato, health="degraded")  # a 200 that says "degraded" fails the probe
    wait_for(lambda: by_service(prometheus, "probe_success")["kato"] == 0, 15, what="KATO degraded fails")
    assert by_service(prometheus, 'probe_http_status_code{service="kato"}') == {"kato": 200}
    wait_for(
        lambda: alert_states(prometheus, "KatoProbeFailing") == {"kato": ("pending", "critical")},
        15,
        what="KatoProbeFailing pending for KATO",
    )
    set_faults(kato, health="healthy", delay={"/health": 1.2})  # passes, slowly
    wait_for(
        lambda: alert_states(prometheus, "KatoProbeSlow") == {"kato": ("pending", "warning")},
        20,
        what="KatoProbeSlow pending",
    )
    assert by_service(prometheus, "probe_success")["kato"] == 1
    assert by_service(prometheus, 'probe_duration_seconds{service="kato"}')["kato"] > 1.2
    assert by_service(prometheus, "kato:probe_fast:bool") == {"kato": 0.0}  # a bad event of the latency SLO
    assert alert_states(prometheus, "KatoProbeFailing") == {}
    kato.stop()  # refused
    wait_for(lambda: by_service(prometheus, "probe_success")["kato"] == 0, 15, what="KATO down fails")

    clickhouse_server.stop()
    qdrant[1].status = 503  # Qdrant while a shard loads
    wait_for(
        lambda: (
            alert_states(prometheus, "KatoProbeFailing")
            == {
                "kato": ("pending", "critical"),
                "clickhouse": ("pending", "warning"),
                "qdrant": ("pending", "warning"),
            }
        ),
        20,
        what="KatoProbeFailing pending for the three",
    )
    assert by_service(prometheus, "probe_success") == {"kato": 0, "clickhouse": 0, "qdrant": 0}
