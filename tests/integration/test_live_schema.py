"""Live as Grafana takes it: one schema per measurement for the exporter's whole life, and
Grafana's own StreamingDataFrame (@grafana/data 11.6 and 12.4) taking every message of it."""

from __future__ import annotations

import time
import urllib.request

import pytest

from kato_exporter.outputs.live import MEASUREMENTS
from tests.conftest import docker, wait_for
from tests.grafana_live import GRAFANA_VERSIONS, channel_messages, parse_line, streaming_frames
from tests.integration.test_live import GrafanaStandin, create_session, post_alert, start_kato_live_exporter
from tests.integration.test_live import influx as influx  # the fixture, for this module's tests

pytestmark = pytest.mark.integration


def test_each_measurement_keeps_one_schema_and_grafanas_stream_takes_every_push(
    start_exporter, influx, kato_double, redis_server, run_container, tmp_path
):
    grafana = GrafanaStandin(influx)
    kato = kato_double()
    plain = run_container("sleep 3600")
    limited = run_container("sleep 3600", "--memory", "64m", "--cpus", "0.5")
    with grafana.serving():
        exporter = start_kato_live_exporter(start_exporter, grafana, tmp_path, kato, redis_server)
        create_session(kato.url, 1)  # expires
        session = create_session(kato.url, 600)
        time.sleep(3)
        # containers come, get a limit, stop, start again and go; a session is deleted
        late = run_container("sleep 3600", "--cpus", "0.25")
        docker("update", "--memory", "32m", "--memory-swap", "64m", plain)
        time.sleep(2)
        docker("stop", "-t", "0", limited)
        post_alert(
            exporter,
            "firing",
            {"alertname": "KatoContainerCpuHigh", "severity": "warning", "name": late},
            "x",
        )
        time.sleep(2)
        docker("start", limited)
        request = urllib.request.Request(f"{kato.url}/sessions/{session}", method="DELETE")
        urllib.request.urlopen(request, timeout=5).close()
        post_alert(
            exporter,
            "resolved",
            {"alertname": "KatoContainerCpuHigh", "severity": "warning", "name": late},
            "x",
        )
        time.sleep(2)
        docker("rm", "-f", late)
        wait_for(
            lambda: (
                {"kato", "session_index", "alerts", "session_events"}
                <= {parse_line(t)[0] for _, b in grafana.bodies.items for t in b.decode().splitlines()}
            ),
            10,
            what="every measurement pushed",
        )
        time.sleep(2)
    assert not grafana.refused
    bodies = [body for _, body in grafana.bodies.items]
    keys: dict[str, set[tuple[str, ...]]] = {}
    for body in bodies:
        for text in body.decode().splitlines():
            measurement, _, fields, _ = parse_line(text)
            keys.setdefault(measurement, set()).add(tuple(fields))
    for measurement, seen in keys.items():
        assert seen == {MEASUREMENTS[measurement]}, measurement  # the declared fields, in order
    assert set(keys) == set(MEASUREMENTS) - {"requests"}  # no access log here
    containers = {
        parse_line(t)[1]["name"]
        for b in bodies
        for t in b.decode().splitlines()
        if t.startswith("containers,")
    }
    assert {plain, limited, late} <= containers
    messages = channel_messages(bodies)
    print({path: len(m) for path, m in messages.items()}, "messages")
    for version in GRAFANA_VERSIONS:
        result = streaming_frames(version, messages)
        for path, frame in result.items():
            assert frame["error"] is None, (version, path, frame)
            assert frame["after"] == len(messages[path])
        # one series per container: each declared field once per label set
        series = [f["labels"].get("name") for f in result["containers"]["fields"] if f["name"] == "cpu_cores"]
        assert sorted(series) == sorted(containers), version
        # an alert is one series, stepping from 1 to 0
        alerts = [f for f in result["alerts"]["fields"] if f["name"] == "firing"]
        assert len(alerts) == 1 and alerts[0]["labels"]["name"] == late, (version, alerts)


def test_schema_changes_are_what_breaks_grafanas_stream():
    """The failure this guards against, shown with Grafana's own code: two containers, then a
    push whose schema gained a field."""
    first = b"containers,name=a cpu_cores=0.1 1000000000\ncontainers,name=b cpu_cores=0.2 1000000000\n"
    second = (
        b"containers,name=a cpu_cores=0.1,pids=3i 2000000000\n"
        b"containers,name=b cpu_cores=0.2,pids=4i 2000000000\n"
    )
    messages = channel_messages([first, second, second])
    assert "schema" in messages["containers"][1]  # Grafana sends the changed schema
    for version in GRAFANA_VERSIONS:
        assert "push message mismatch" in streaming_frames(version, messages)["containers"]["error"]
