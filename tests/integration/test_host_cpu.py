"""Host CPU through a real Prometheus, beside node_exporter, under a load that beats with the scrape.

Both CPUs are busy 1.2 s of every 5 s, each burst ending just before Prometheus scrapes the
exporter: a busy share sampled over the second before each scrape read about 1.0 here, while
the host was a quarter busy. From counters, Prometheus computes what node_exporter's say.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import Daemon, answers_http, free_port, prometheus_api, start_prometheus, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.solo]  # the host's CPU, other tests' load aside

PERIOD, BURST = 5.0, 1.2
LOAD = textwrap.dedent(
    """
    import sys, time
    phase, period, burst, until = map(float, sys.argv[1:])
    while True:
        end = phase + period * (int((time.time() - phase) / period) + 1) - 0.1  # before a scrape
        if end > until:
            break
        time.sleep(max(0.0, end - burst - time.time()))
        while time.time() < end:
            pass
    """
)
# the busy share of all CPUs over the minute before, as the recording rule computes it
OURS = (
    'sum without (cpu, mode) (rate(kato_host_cpu_seconds_total{mode!~"idle|iowait"}[1m]))'
    ' / count without (cpu, mode) (kato_host_cpu_seconds_total{mode="idle"})'
)
NODE = OURS.replace("kato_host_cpu_seconds_total", "node_cpu_seconds_total")


@pytest.fixture
def prometheus(tmp_path: Path, start_exporter) -> Iterator[Daemon]:
    """Prometheus with the repository's rules, scraping an exporter and node_exporter every 5 s and
    evaluating the rules as often."""
    exporter = start_exporter("--no-collector.containers")
    node_port = free_port()
    node = Daemon(
        f"node-exporter-{node_port}",
        [
            "prometheus-node-exporter",
            f"--web.listen-address=127.0.0.1:{node_port}",
            "--collector.disable-defaults",
            "--collector.cpu",
        ],
        answers_http(f"http://127.0.0.1:{node_port}/metrics"),
        f"http://127.0.0.1:{node_port}",
    )
    server = start_prometheus(
        tmp_path, {"kato-exporter": [exporter.address], "node": [f"127.0.0.1:{node_port}"]}, "5s", "5s"
    )
    yield server
    server.stop()
    node.stop()


def last_scrape(prometheus: Daemon, job: str) -> float | None:
    for target in prometheus_api(prometheus, "targets")["activeTargets"]:
        if target["labels"]["job"] == job and target["health"] == "up":
            stamp = target["lastScrape"]  # RFC 3339 with nanoseconds
            main, _, rest = stamp.partition(".")
            fraction, zone = rest[:6], rest.lstrip("0123456789")
            return datetime.fromisoformat(f"{main}.{fraction}{zone.replace('Z', '+00:00')}").timestamp()
    return None


def value(prometheus: Daemon, expr: str, at: float) -> float:
    [result] = prometheus_api(prometheus, "query", query=expr, time=at)["result"]
    return float(result["value"][1])


def test_busy_share_agrees_with_node_exporter_and_the_alert_stays_quiet(prometheus):
    phase = wait_for(lambda: last_scrape(prometheus, "kato-exporter"), 30, 0.5, what="the exporter scraped")
    began = time.time()
    until = began + 105  # the last minute's rates at each evaluation of the last 30 s: in the load
    loaders = [
        subprocess.Popen([sys.executable, "-c", LOAD, str(phase), str(PERIOD), str(BURST), str(until)])
        for _ in range(2)
    ]
    try:
        for loader in loaders:
            loader.wait(until - time.time() + 10)
    finally:
        for loader in loaders:
            loader.kill()
    at = until - 1
    ours, node = value(prometheus, OURS, at), value(prometheus, NODE, at)
    print(f"busy share over a minute: ours {ours:.3f}, node_exporter {node:.3f}")
    assert 0.15 < node < 0.6, "the load ran as planned: about a quarter of both CPUs"
    assert abs(ours - node) <= 0.05
    # the recording rule at each of its evaluations whose minute lies in the load, against node's
    # figure over the same minute (at the evaluation's own time: a test beside this one may start
    # or stop a load, which a minute shifted by an evaluation interval would see differently)
    rule = prometheus_api(prometheus, "query", query="kato:host_cpu_usage:ratio_rate1m[30s]", time=at)
    [series] = rule["result"]
    assert len(series["values"]) >= 5
    for stamp, ratio in series["values"]:
        assert abs(float(ratio) - value(prometheus, NODE, stamp)) <= 0.05, stamp
    # neither KatoHostCpuHigh fired, nor was one ever pending
    assert (
        prometheus_api(prometheus, "query", query='ALERTS{alertname="KatoHostCpuHigh"}[3m]', time=at)[
            "result"
        ]
        == []
    )
