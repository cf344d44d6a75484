"""Two Alertmanagers gossiping (scripts/run.sh --ha), Prometheus sending to both, the Slack,
email and webhook stand-ins behind them: each alert reaches each receiver once, also with one
peer killed before it fires; one killed in the middle of a group is measured (Alertmanager
promises at-least-once)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from scripts.stack import Program, start, stop
from tests.conftest import RUN_LABEL, free_port, wait_for
from tests.exposition import scrape
from tests.standins import Inbox, alerting_settings, slack_standin, smtp_standin

pytestmark = pytest.mark.integration
PEER_TIMEOUT = 3  # --cluster.peer-timeout (15 s by default): how long the second waits for the first


class Cluster:
    def __init__(self, programs: list[Program], slack: Inbox, smtp: Inbox) -> None:
        self.programs = {p.name: p for p in programs}
        self.slack, self.smtp = slack, smtp

    @property
    def alertmanagers(self) -> list[Program]:
        return [self.programs["alertmanager"], self.programs["alertmanager-2"]]

    def fire(self, alertname: str, **labels: str) -> None:
        """What Prometheus does: the same alert to every Alertmanager, each on its own."""
        alert = [{"labels": {"alertname": alertname, "severity": "critical", "instance": "ha", **labels},
                  "annotations": {"summary": alertname}}]  # fmt: skip
        for alertmanager in self.alertmanagers:
            if alertmanager.process is not None and alertmanager.process.poll() is None:
                request = urllib.request.Request(
                    f"{alertmanager.url}/api/v2/alerts",
                    data=json.dumps(alert).encode(),
                    headers={"Content-Type": "application/json"},
                )
                urllib.request.urlopen(request, timeout=5).close()

    def deliveries(self, alertname: str) -> dict[str, int]:
        """Firing notifications that name ``alertname``, per receiver."""
        slack = sum(
            alertname in a["title"] and "[FIRING" in a["title"]
            for _, payload in self.slack.items
            for a in payload["attachments"]
        )
        mail = sum(alertname in m["Subject"] and "[FIRING]" in m["Subject"] for _, m in self.smtp.items)
        return {"slack": slack, "email": mail, "webhook": self.webhook(alertname)}

    def webhook(self, alertname: str) -> int:
        """Notifications the exporter logged (at debug) that name ``alertname``."""
        lines = self.programs["kato-exporter"].log.read_text().splitlines()
        return sum("Alertmanager notification firing:" in line and alertname in line for line in lines)

    def kill(self, alertmanager: Program) -> None:
        assert alertmanager.process is not None
        alertmanager.process.kill()
        alertmanager.process.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp_path = tmp_path_factory.mktemp("ha")
    with slack_standin() as slack, smtp_standin() as smtp:
        settings = alerting_settings(
            tmp_path,
            slack[0],
            smtp[0],
            [
                f"--collector.containers.label-selector={RUN_LABEL}",
                "--no-collector.host",
                "--log.level=debug",
            ],
        )
        settings.ha_port = free_port()
        settings.cluster_ports = (free_port(), free_port())
        settings.peer_timeout = f"{PEER_TIMEOUT}s"
        programs = start(settings)
        try:
            yield Cluster(programs, slack[1], smtp[1])
        finally:
            stop(programs)


def peers(alertmanager: Program) -> int:
    with urllib.request.urlopen(f"{alertmanager.url}/api/v2/status", timeout=5) as response:
        return len(json.load(response)["cluster"]["peers"])


def settle(cluster: Cluster, alertname: str, seconds: float = 2 * PEER_TIMEOUT + 2) -> dict[str, int]:
    """The deliveries once every receiver has one and the peer timeout has passed."""
    wait_for(
        lambda: all(cluster.deliveries(alertname).values()), 60, interval=0.2, what=f"{alertname} delivered"
    )
    time.sleep(seconds)
    return cluster.deliveries(alertname)


def test_each_alert_reaches_each_receiver_once(cluster: Cluster) -> None:
    assert [peers(a) for a in cluster.alertmanagers] == [2, 2]
    prometheus = cluster.programs["prometheus"]
    wait_for(
        lambda: (
            scrape(prometheus.url + "/metrics").value("prometheus_notifications_alertmanagers_discovered")
            == 2
        ),
        30,
    )

    cluster.fire("HaBothUp")
    assert settle(cluster, "HaBothUp") == {"slack": 1, "email": 1, "webhook": 1}

    cluster.kill(cluster.alertmanagers[0])  # before the alert fires
    cluster.fire("HaOneKilledBefore")
    assert settle(cluster, "HaOneKilledBefore") == {"slack": 1, "email": 1, "webhook": 1}


def test_one_killed_in_the_middle_of_a_group_is_measured(cluster: Cluster, record_property: Any) -> None:
    """The first alert of a group is sent, then the Alertmanager that sent it dies and a second
    alert joins the group: Alertmanager promises at-least-once, so duplicates are counted and
    reported, never lost alerts."""
    for alertmanager in cluster.alertmanagers:  # the first test left one killed
        if alertmanager.process is None or alertmanager.process.poll() is not None:
            alertmanager.start()
    wait_for(lambda: [peers(a) for a in cluster.alertmanagers] == [2, 2], 30, what="the two peers again")
    cluster.fire("HaGroup", instance="group")
    wait_for(lambda: all(cluster.deliveries("HaGroup").values()), 60, interval=0.2, what="the group's first")
    first = sum(cluster.deliveries("HaGroup").values())
    cluster.kill(cluster.alertmanagers[0])
    cluster.fire("HaGroup", instance="group", name="second")
    after = settle(cluster, "HaGroup")
    assert all(count >= 1 for count in after.values()), after
    duplicates = sum(after.values()) - first - 3  # beyond the first round and one for the new alert
    record_property("deliveries_after_kill", after)
    print(f"in the middle of a group: {after}, {duplicates} more than once each")
