"""The Grafana Live pusher against a stand-in for Grafana's push endpoint that checks path,
method and token and hands every body to a real line-protocol parser: InfluxDB 1.x's /write.
What InfluxDB then holds is compared with /metrics at the same instant."""

from __future__ import annotations

import itertools
import json
import statistics
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from kato_exporter.outputs.live import MEASUREMENTS
from tests.conftest import RUN_LABEL, Daemon, Exporter, free_port, wait_for
from tests.dashboards import live_fields
from tests.standins import Inbox, http_receiver

pytestmark = pytest.mark.integration

TOKEN = "glsa_live_test_token"
ACCESS_LOG = (
    "while true; do "
    "echo 'INFO:     172.17.0.1:40000 - \"GET /health HTTP/1.1\" 200 OK'; "
    "echo 'INFO:     172.17.0.1:40002 - \"POST /sessions HTTP/1.1\" 503 Service Unavailable'; "
    "sleep 0.2; done"
)


class Influx:
    """A real InfluxDB 1.x of the test's own (data in the test's folder, loopback ports)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "influxdb.conf"
        config.write_text(
            f"""
reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{folder}/meta"
[data]
  dir = "{folder}/data"
  wal-dir = "{folder}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[monitor]
  store-enabled = false
"""
        )
        self.daemon = Daemon("influxd", ["influxd", "-config", str(config)], self._ping, self.url)

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=1) as response:
                return response.status == 204
        except OSError:
            return False

    def query(self, q: str) -> list[dict[str, Any]]:
        """Rows of the first statement, as dicts."""
        data = urllib.parse.urlencode({"db": "kato", "q": q, "epoch": "ns"}).encode()
        with urllib.request.urlopen(self.url + "/query", data=data, timeout=10) as response:
            result = json.load(response)["results"][0]
        assert "error" not in result, result
        rows = []
        for series in result.get("series", []):
            for values in series["values"]:
                rows.append({**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))})
        return rows

    def write(self, body: bytes) -> tuple[int, str]:
        request = urllib.request.Request(f"{self.url}/write?db=kato&precision=ns", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, ""
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[Influx]:
    db = Influx(tmp_path)
    db.query("CREATE DATABASE kato")
    yield db
    db.daemon.stop()


class GrafanaStandin:
    """Grafana's ``POST /api/live/push/<stream>``: checks path, method and token, then has
    InfluxDB parse the body; answers 200 as Grafana does, or 400 with InfluxDB's complaint."""

    def __init__(self, influx: Influx) -> None:
        self.influx = influx
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bodies = Inbox()
        self.refused: list[str] = []

    def answer(self, handler: BaseHTTPRequestHandler, body: bytes) -> int:
        if handler.path != "/api/live/push/kato":
            self.refused.append(f"path {handler.path}")
            return 404
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.refused.append(f"token {handler.headers.get('Authorization')}")
            return 401
        if len(body) > 64 * 1024:
            self.refused.append(f"body of {len(body)} bytes")
            return 413
        status, problem = self.influx.write(body)
        if status != 204:
            self.refused.append(f"InfluxDB {status}: {problem} in {body[:300]!r}")
            return 400
        self.bodies.add(body)
        return 200

    def serving(self) -> Any:
        return http_receiver(self.answer, self.port)


def start_live_exporter(
    start_exporter: Callable[..., Exporter], grafana: GrafanaStandin, tmp: Path, *flags: str
) -> Exporter:
    (tmp / "grafana_token").write_text(TOKEN + "\n")
    (tmp / "webhook_token").write_text("webhook-secret\n")
    return start_exporter(
        f"--collector.containers.label-selector={RUN_LABEL}",
        f"--grafana.url={grafana.url}",
        f"--grafana.token-file={tmp / 'grafana_token'}",
        f"--alertmanager.token-file={tmp / 'webhook_token'}",
        *flags,
    )


def start_kato_live_exporter(
    start_exporter: Callable[..., Exporter],
    grafana: GrafanaStandin,
    tmp: Path,
    kato: Daemon,
    redis: Daemon,
    *flags: str,
) -> Exporter:
    """``start_live_exporter`` with KATO's API and Redis, polled every second."""
    kato_flags = (f"--kato.url={kato.url}", f"--kato.redis-url={redis.url}", "--kato.interval=1s")
    return start_live_exporter(start_exporter, grafana, tmp, *kato_flags, *flags)


def post_alert(exporter: Exporter, status: str, labels: dict[str, str], summary: str) -> None:
    body = {
        "version": "4",
        "status": status,
        "receiver": "kato-webhook",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": summary},
                "startsAt": "2026-11-27T00:00:00Z",
            }
        ],
    }
    request = urllib.request.Request(
        exporter.url + "/api/v1/alertmanager",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer webhook-secret", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 204


def create_session(kato_url: str, ttl: int) -> str:
    request = urllib.request.Request(
        kato_url + "/sessions",
        data=json.dumps({"node_id": "live", "ttl_seconds": ttl}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)["session_id"]  # type: ignore[no-any-return]


def ns(seconds: float) -> int:
    return round(seconds * 1e9)


def test_points_equal_metrics_and_every_live_panel_field_is_pushed(
    start_exporter, influx, kato_double, redis_server, run_container, cpu_first, tmp_path
):
    grafana = GrafanaStandin(influx)
    kato = kato_double()
    busy = run_container("yes > /dev/null", "--cpus", "0.25", *cpu_first)
    limited = run_container("sleep 3600", "--memory", "64m")
    log_name = run_container(ACCESS_LOG)
    with grafana.serving():
        exporter = start_kato_live_exporter(
            start_exporter, grafana, tmp_path, kato, redis_server, f"--kato.log-container={log_name}"
        )
        for ttl in (1, 600, 600):
            create_session(kato.url, ttl)
        post_alert(
            exporter,
            "firing",
            {"alertname": "Kato Test, with=odd chars", "severity": "critical", "name": busy},
            'CPU "busy" \\ at 100%',
        )
        wanted = {channel.removeprefix("stream/kato/"): fields for channel, fields in live_fields().items()}
        assert set(wanted) == set(MEASUREMENTS) - {"session_index"}  # a panel for each but that

        def missing() -> dict[str, set[str]]:
            have = {
                m: {row["fieldKey"] for row in influx.query(f'SHOW FIELD KEYS FROM "{m}"')} for m in wanted
            }
            return {m: fields - have[m] for m, fields in wanted.items() if fields - have[m]}

        wait_for(lambda: not missing(), 30, interval=0.5, what="every Live panel's fields", show=missing)
        assert not grafana.refused

        # the alert, read back exactly despite spaces, commas, = and quotes
        [alert] = influx.query("SELECT * FROM alerts")
        assert alert["alertname"] == "Kato Test, with=odd chars" and alert["name"] == busy
        assert alert["summary"] == 'CPU "busy" \\ at 100%' and alert["firing"] == 1
        wait_for(
            lambda: (
                {row["type"] for row in influx.query("SELECT * FROM session_events")}
                >= {"created", "expired"}
            ),
            10,
            what="a point for each session created and for the one that expired",
        )

        # the same instant in both: a source's last success is its points' timestamp
        def same_instant(source: str, measurement: str) -> tuple[Any, list[dict[str, Any]]]:
            for _ in range(20):
                metrics = exporter.scrape()
                at = metrics.value("kato_exporter_last_success_timestamp_seconds", source=source)
                # read once InfluxDB has answered the write of that instant's body: a query while
                # it writes sees part of the body (rows, even fields, missing; seen under load)
                stamp = f" {ns(at)}\n".encode()
                wait_for(
                    lambda stamp=stamp: any(stamp in body for _, body in grafana.bodies.items),
                    5,
                    what=f"{measurement} at {at} written",
                )
                rows = influx.query(f"SELECT * FROM {measurement} WHERE time = {ns(at)}")
                # a scrape between two sources' updates could mix instants: try again
                if metrics.value("kato_exporter_last_success_timestamp_seconds", source=source) == at:
                    return metrics, rows  # type: ignore[return-value]
            raise AssertionError("no stable instant")

        metrics, rows = same_instant("containers", "containers")
        by_name = {row["name"]: row for row in rows}
        assert set(by_name) >= {busy, limited}
        for name, row in by_name.items():
            assert row["memory_working_set_bytes"] == metrics.value(
                "kato_container_memory_working_set_bytes", name=name
            )
            assert row["pids"] == metrics.value("kato_container_pids", name=name)
        assert by_name[limited]["memory_limit_bytes"] == 64 * 1024 * 1024
        assert by_name[busy]["cpu_limit_cores"] == 0.25
        assert 0.15 < by_name[busy]["cpu_cores"] <= 0.275

        metrics, [host] = same_instant("host", "host")
        assert 0 <= host["cpu_usage_ratio"] <= 1 and host["cpus"] == metrics.value("kato_host_cpus")
        assert host["memory_available_bytes"] == metrics.value("kato_host_memory_available_bytes")
        assert host["load1"] == metrics.value("kato_host_load1")

        metrics, [sessions] = same_instant("kato_sessions", "sessions")
        assert sessions["active"] == metrics.value("kato_sessions_active") == 2
        for event in ("created", "destroyed", "expired", "evicted"):
            assert sessions[event] == metrics.value("kato_session_events_total", event=event)
        metrics, [kato_point] = same_instant("kato", "kato")
        assert kato_point["sessions_reported"] == metrics.value("kato_sessions_reported")

        [requests] = influx.query(
            "SELECT last(rate_5xx) AS rate_5xx, last(rate_2xx) AS rate_2xx FROM requests"
        )
        assert requests["rate_5xx"] > 0 and requests["rate_2xx"] > 0
        assert metrics.value("kato_exporter_live_pushes_total", result="error") == 0
        assert metrics.value("kato_exporter_source_up", source="grafana_live") == 1


@pytest.mark.solo  # a push a second, to the millisecond: on a machine the other tests leave alone
def test_cadence_over_60_seconds(start_exporter, influx, run_container, tmp_path):
    grafana = GrafanaStandin(influx)
    run_container("sleep 3600")
    with grafana.serving():
        exporter = start_live_exporter(start_exporter, grafana, tmp_path)
        time.sleep(3)
        began = time.time()
        time.sleep(60)
        ended = time.time()
        metrics = exporter.scrape()
    arrivals = [at for at, _ in grafana.bodies.items if began <= at < ended]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    points = influx.query(
        f"SELECT cpu_usage_ratio FROM host WHERE time >= {ns(began)} AND time < {ns(ended)}"
    )
    point_gaps = [(b["time"] - a["time"]) / 1e9 for a, b in itertools.pairwise(points)]
    print(
        f"60 s: {len(arrivals)} bodies, gap between them: median {statistics.median(gaps):.3f} s, "
        f"max {max(gaps):.3f} s; {len(points)} host points, max gap {max(point_gaps):.3f} s"
    )
    assert 58 <= len(arrivals) <= 62 and max(gaps) < 1.5
    # every collection of the host (one a second) is there: none was skipped
    assert 58 <= len(points) <= 61 and max(point_gaps) < 1.5
    assert metrics.value("kato_exporter_live_pushes_total", result="error") == 0
    assert not grafana.refused


def test_grafana_away_and_back(start_exporter, influx, run_container, tmp_path):
    grafana = GrafanaStandin(influx)
    run_container("sleep 3600")
    with grafana.serving():
        exporter = start_live_exporter(start_exporter, grafana, tmp_path)
        wait_for(lambda: grafana.bodies.items, 10, what="a first push")
    went = time.time()
    # away: the port refuses connections; collection and /metrics carry on
    before = exporter.scrape().value("kato_exporter_last_success_timestamp_seconds", source="containers")
    wait_for(
        lambda: (exporter.scrape().value("kato_exporter_live_pushes_total", result="error") or 0) >= 2,
        10,
        what="failed pushes counted",
    )
    time.sleep(4)
    metrics = exporter.scrape()
    assert metrics.value("kato_exporter_last_success_timestamp_seconds", source="containers") > before + 3
    assert metrics.value("kato_exporter_source_up", source="containers") == 1
    assert metrics.value("kato_exporter_source_up", source="grafana_live") == 1  # the pusher itself is fine
    log = exporter.log.read_text()
    assert log.count("Grafana Live push to") == 1, log  # said once, not once per retry
    came_back = time.time()
    with grafana.serving():
        wait_for(lambda: any(at > came_back for at, _ in grafana.bodies.items), 40, what="pushes again")
        # the stand-in has the body before the exporter has read the answer and logged it
        wait_for(lambda: "Grafana Live pushes to" in exporter.log.read_text(), 5, what="recovery logged")
        # what was queued while away arrives: host points from the whole gap
        wait_for(
            lambda: (
                len(
                    influx.query(
                        "SELECT cpu_usage_ratio FROM host "
                        f"WHERE time > {ns(went + 1)} AND time < {ns(came_back)}"
                    )
                )
                >= 3
            ),
            10,
            what="points from the time Grafana was away",
        )
    assert not grafana.refused
