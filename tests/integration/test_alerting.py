"""End to end: a real container breaches a production rule, and the alert reaches a local
Slack stand-in, a local SMTP server and the exporter's webhook, through real Prometheus and
Alertmanager started the way scripts/run.sh starts them (faster clocks, same rule files)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from scripts.stack import Program, start, stop
from tests.conftest import RUN_LABEL, docker, prometheus_api, wait_for
from tests.exposition import scrape
from tests.standins import Inbox, alerting_settings, slack_standin, smtp_standin

pytestmark = pytest.mark.integration


@pytest.fixture
def slack() -> Iterator[tuple[str, Inbox]]:
    with slack_standin() as standin:
        yield standin


@pytest.fixture
def smtp() -> Iterator[tuple[str, Inbox]]:
    with smtp_standin() as standin:
        yield standin


@pytest.fixture
def stack(tmp_path: Path, slack: tuple[str, Inbox], smtp: tuple[str, Inbox]) -> Iterator[list[Program]]:
    settings = alerting_settings(
        tmp_path,
        slack[0],
        smtp[0],
        [f"--collector.containers.label-selector={RUN_LABEL}", "--no-collector.host"],
    )
    programs = start(settings)
    yield programs
    stop(programs)


def slack_messages(inbox: Inbox, alertname: str, status: str) -> list[tuple[float, dict[str, Any]]]:
    return [
        (at, attachment)
        for at, payload in inbox.items
        for attachment in payload["attachments"]
        if alertname in attachment["title"] and f"[{status.upper()}" in attachment["title"]
    ]


def mails(inbox: Inbox, alertname: str, status: str) -> list[tuple[float, Message]]:
    return [
        (at, m)
        for at, m in inbox.items
        if alertname in m["Subject"] and f"[{status.upper()}]" in m["Subject"]
    ]


def webhook_count(exporter: Program, status: str) -> float:
    value = scrape(exporter.url + "/metrics").value(
        "kato_exporter_alertmanager_notifications_total", status=status
    )
    return value or 0


def body(message: Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    return "".join(p.get_payload(decode=True).decode() for p in parts if p.get_content_type() == "text/plain")


def test_stack_scrapes_the_exporter_and_loads_the_rules(stack):
    exporter, _, prometheus = stack

    def exporter_target() -> list[dict[str, Any]]:
        targets = prometheus_api(prometheus, "targets")["activeTargets"]
        return [t for t in targets if t["labels"]["job"] == "kato-exporter" and t["health"] == "up"]

    wait_for(exporter_target, 15, what="the exporter target up")
    assert exporter_target()[0]["scrapeUrl"] == f"http://localhost:{exporter.url.rsplit(':', 1)[1]}/metrics"
    groups = {g["name"]: g for g in prometheus_api(prometheus, "rules")["groups"]}
    assert {"kato-thresholds", "kato-resources", "kato-service", "kato-monitoring"} <= groups.keys()
    alerts = {r["name"] for g in groups.values() for r in g["rules"] if r["type"] == "alerting"}
    assert len(alerts) >= 13 and "KatoContainerCpuHigh" in alerts


def test_cpu_alert_reaches_slack_email_and_webhook_and_resolves(stack, slack, smtp, run_container, cpu_first):
    exporter = stack[0]
    breached = time.time()
    name = run_container("yes > /dev/null", "--cpus", "0.25", *cpu_first)  # pegged at its limit: 100 %

    # rate() over a minute climbs past 80 % a few seconds before 90 %: the warning may go out
    # first; once the critical twin fires it is inhibited
    def critical() -> list[tuple[float, dict[str, Any]]]:
        return [
            m
            for m in slack_messages(slack[1], "KatoContainerCpuHigh", "firing")
            if "(critical)" in m[1]["text"]
        ]

    wait_for(critical, 150, interval=0.2, what="the critical CPU alert on Slack")
    at, attachment = critical()[0]
    print(f"breach → Slack: {at - breached:.1f}s (rule: rate over 1m, for 1m)")
    assert attachment["color"] == "danger"
    text = attachment["text"]
    assert f"Container {name} uses" in text and "(critical)" in text
    assert "more than 90% of its CPU limit" in text
    assert f"container {name}" in text and "Since: " in text
    assert "http://localhost:3000/d/kato-overview" in text
    assert "(warning)" not in text  # its warning twin is inhibited by the critical one

    wait_for(lambda: mails(smtp[1], "KatoContainerCpuHigh", "firing"), 30, what="the CPU alert by email")
    mail_at, mail = mails(smtp[1], "KatoContainerCpuHigh", "firing")[0]
    print(f"breach → email: {mail_at - breached:.1f}s")
    assert mail["To"] == "oncall@example.org"
    assert f"Container {name} uses" in body(mail) and "Dashboard: http://localhost:3000" in body(mail)
    wait_for(lambda: webhook_count(exporter, "firing") >= 1, 30, what="the exporter's webhook")
    print(f"breach → webhook: by {time.time() - breached:.1f}s")

    docker("stop", "-t", "0", name)  # no usage series any more: the alert resolves
    stopped = time.time()
    wait_for(  # rate() over a minute holds on to the samples it had for up to a minute
        lambda: slack_messages(slack[1], "KatoContainerCpuHigh", "resolved"),
        90,
        interval=0.2,
        what="resolved on Slack",
    )
    wait_for(lambda: mails(smtp[1], "KatoContainerCpuHigh", "resolved"), 30, what="resolved by email")
    wait_for(lambda: webhook_count(exporter, "resolved") >= 1, 30, what="resolved on the webhook")
    at, attachment = slack_messages(slack[1], "KatoContainerCpuHigh", "resolved")[0]
    print(f"container stopped → resolved on Slack: {at - stopped:.1f}s")
    assert attachment["color"] == "good" and "resolved" in attachment["text"]


def prometheus_value(prometheus: Program, query: str) -> float | None:
    result = prometheus_api(prometheus, "query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


def test_alertmanager_restarted_midway_still_delivers(stack, slack, run_container):
    _, alertmanager, prometheus = stack
    # fails every ~2 s, up to 6 times: Prometheus sees it before most of its restarts
    name = run_container("sleep 2; exit 1", "--restart", "on-failure:6")
    wait_for(
        lambda: prometheus_value(prometheus, f'kato_container_restarts_total{{name="{name}"}}') is not None,
        15,
        what="Prometheus seeing the container",
    )
    alertmanager.stop()
    wait_for(
        lambda: prometheus_value(
            prometheus, f'ALERTS{{alertname="KatoContainerRestarting",name="{name}",alertstate="firing"}}'
        ),
        40,
        interval=0.5,
        what="the restart alert firing while Alertmanager is down",
    )
    time.sleep(2)  # Prometheus tries to send, and fails
    assert prometheus.process is not None and prometheus.process.poll() is None
    alertmanager.start()
    wait_for(
        lambda: slack_messages(slack[1], "KatoContainerRestarting", "firing"),
        30,
        interval=0.2,
        what="the restart alert after Alertmanager came back",
    )
    _, attachment = slack_messages(slack[1], "KatoContainerRestarting", "firing")[0]
    assert f"Container {name} restarted" in attachment["text"]
    for program in stack:
        assert program.process is not None and program.process.poll() is None, program.name
