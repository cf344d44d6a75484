"""Every panel is proven: each query of each dashboard, run against a real Prometheus with the
repository's config and rules, returns data.

The stack runs the way scripts/run.sh starts it (faster clocks): the exporter, Prometheus and
Alertmanager, with real containers (one pinned at its CPU limit, one with a memory limit, one
exited, one unhealthy, one restarting), the KATO double on a real Redis with sessions created,
deleted and expiring and stale index entries, an access log with 2xx and 5xx, an alert firing
through Alertmanager, and Grafana Live pushes to a stand-in. What a healthy system would leave
empty (5xx, restarts, stale sessions, a firing alert) is made to happen, so that no panel is
excused.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from scripts.stack import Program, start, stop
from tests.conftest import (
    RUN_LABEL,
    Daemon,
    answers_http,
    answers_tcp,
    docker,
    free_port,
    redis_command,
    start_container,
    wait_for,
)
from tests.dashboards import dashboards, fill, label_values_query, metric_names, panels, targets, variables
from tests.grafana_live import GRAFANA_VERSIONS, displayed
from tests.standins import Inbox, alerting_settings, http_receiver, slack_standin, smtp_standin

pytestmark = pytest.mark.integration

SCRAPE_SECONDS = 1  # alerting_settings' scrape interval
RANGE_SECONDS = 120
INDEX = "kato:session:_active_index"  # KATO's index of sessions (a Redis set)
ACCESS_LOG = (  # uvicorn's access log, as KATO writes it: mostly 200, some 500
    "while true; do "
    "echo 'INFO:     172.17.0.1:40000 - \"GET /sessions/count HTTP/1.1\" 200 OK'; "
    "echo 'INFO:     172.17.0.1:40001 - \"POST /sessions HTTP/1.1\" 200 OK'; "
    "echo 'INFO:     172.17.0.1:40002 - \"POST /sessions HTTP/1.1\" 500 Internal Server Error'; "
    "sleep 0.5; done"
)


class QueryError(Exception):
    """Prometheus refused a query; the message is its error."""


@dataclass
class Stack:
    exporter: Program
    alertmanager: Program
    prometheus: Program
    containers: dict[str, str]  # role -> name
    victoria_metrics: str  # where Prometheus remote-writes everything
    store: str = ""  # the query API asked: Prometheus', unless set

    def query(self, path: str, **params: str) -> Any:
        url = f"{self.store or self.prometheus.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body["status"] != "success":
            raise QueryError(body.get("error", body))
        return body["data"]

    def instant(self, expr: str) -> list[dict[str, Any]]:
        return self.query("query", query=expr)["result"]  # type: ignore[no-any-return]

    def range(self, expr: str) -> list[dict[str, Any]]:
        end = time.time()
        return self.query(  # type: ignore[no-any-return]
            "query_range", query=expr, start=str(end - RANGE_SECONDS), end=str(end), step="2"
        )["result"]


def record(inbox: Inbox, body: bytes) -> int:
    inbox.add(body)
    return 200


def sessions_churn(kato_url: str, stop_event: threading.Event) -> None:
    """Create a session every 0.3 s; delete every third, let the others expire after 2 s."""

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            kato_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    n = 0
    while not stop_event.wait(0.3):
        created = call("POST", "/sessions", {"node_id": "dashboards", "ttl_seconds": 2 + n % 5})
        if n % 3 == 0:
            call("DELETE", f"/sessions/{created['session_id']}")
        n += 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, cpu_first: list[str]) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboards")
    prefix = f"kato-dash-{time.time_ns() % 10**8}"
    redis_port, kato_port = free_port(), free_port()
    redis = Daemon(
        "redis",
        redis_command(redis_port, tmp, "--maxmemory", "256mb"),  # the memory panels draw against it
        answers_tcp(redis_port),
        f"redis://127.0.0.1:{redis_port}/0",
    )
    vm_port = free_port()
    victoria_metrics = Daemon(
        "victoria-metrics",
        [
            "victoria-metrics",
            f"-httpListenAddr=127.0.0.1:{vm_port}",
            f"-storageDataPath={tmp / 'victoria-metrics'}",
            "-search.latencyOffset=2s",  # 30 s by default: the test looks at the last two minutes
        ],
        answers_http(f"http://127.0.0.1:{vm_port}/health"),
        f"http://127.0.0.1:{vm_port}",
    )
    try:
        kato = Daemon(
            "kato-double",
            [sys.executable, "-m", "tests.kato_double", "--port", str(kato_port), "--redis-url", redis.url],
            answers_tcp(kato_port),
            f"http://127.0.0.1:{kato_port}",
        )
    except BaseException:
        redis.stop()
        victoria_metrics.stop()
        raise
    pushes = Inbox()
    churn_stop = threading.Event()
    names = {
        "cpu": f"{prefix}-cpu",
        "memory": f"{prefix}-memory",
        "exited": f"{prefix}-exited",
        "unhealthy": f"{prefix}-unhealthy",
        "restarting": f"{prefix}-restarting",
        "kato": f"{prefix}-kato",
    }
    programs: list[Program] = []
    with (
        slack_standin() as slack,
        smtp_standin() as smtp,
        http_receiver(lambda _, body: record(pushes, body)) as grafana,
    ):
        try:
            start_container(names["cpu"], "yes > /dev/null", "--cpus", "0.25", *cpu_first)
            start_container(names["memory"], "sleep 3600", "--memory", "64m")
            start_container(names["exited"], "exit 3")
            start_container(
                names["unhealthy"], "sleep 3600", "--health-cmd", "false", "--health-interval", "1s"
            )
            start_container(names["restarting"], "sleep 1; exit 1", "--restart", "on-failure:50")
            start_container(names["kato"], ACCESS_LOG)
            token = tmp / "grafana_token"
            token.write_text("glsa_dashboards_test\n")
            settings = alerting_settings(
                tmp,
                slack[0],
                smtp[0],
                [
                    f"--collector.containers.label-selector={RUN_LABEL}",
                    f"--kato.url={kato.url}",
                    f"--kato.redis-url={redis.url}",
                    "--kato.interval=1s",
                    "--kato.reconcile-interval=3s",
                    f"--kato.log-container={names['kato']}",
                    f"--grafana.url={grafana}",
                    f"--grafana.token-file={token}",
                ],
            )
            settings.remote_write_url = f"{victoria_metrics.url}/api/v1/write"
            settings.probe_interval = "2s"  # KATO's /health only: test_probes proves the databases'
            settings.clickhouse_url = settings.qdrant_url = "off"
            programs = start(settings)
            threading.Thread(target=sessions_churn, args=(kato.url, churn_stop), daemon=True).start()
            redis_cli(redis_port, "SADD", INDEX, "session-gone-1", "session-gone-2")  # stale entries
            named = {program.name: program for program in programs}
            ready = Stack(
                named["kato-exporter"],
                named["alertmanager"],
                named["prometheus"],
                containers=names,
                victoria_metrics=victoria_metrics.url,
            )
            wait_until_everything_happened(ready)
            yield ready
        finally:
            churn_stop.set()
            stop(programs)
            docker("rm", "-f", *names.values(), check=False)
            kato.stop()
            redis.stop()
            victoria_metrics.stop()


def redis_cli(port: int, *args: str) -> None:
    subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True)


def wait_until_everything_happened(stack: Stack) -> None:
    """The conditions that a healthy system would not show, seen by Prometheus."""
    conditions = {
        "a firing alert in Prometheus": 'ALERTS{alertstate="firing"}',
        "an alert in Alertmanager": 'alertmanager_alerts{state="active"} > 0',
        "a notification sent": "alertmanager_notifications_total > 0",
        "the webhook into the exporter": "kato_exporter_alertmanager_notifications_total > 0",
        "a restart": "kato_container_restarts_total > 0",
        "an unhealthy container": 'kato_container_health_status{status="unhealthy"} == 1',
        "an exited container": 'kato_container_state{state="exited"} == 1',
        "an expired session": 'kato_session_events_total{event="expired"} > 0',
        "a stale index entry": "kato_sessions_index_stale > 0",
        "5xx responses": 'kato_http_responses_total{code_class="5xx"} > 0',
        "a 5xx ratio": "kato:http_errors:ratio_rate5m > 0",
        "Live pushes": 'kato_exporter_live_pushes_total{result="success"} > 0',
        "a CPU-limited container busy": "kato:container_cpu_usage:ratio_rate1m > 0.5",
        # they scrape every 15 s: rate(...[1m]) of their own counters needs two scrapes in a minute
        "Prometheus scraped twice": 'count_over_time(up{job="prometheus"}[1m]) >= 2',
        "Alertmanager scraped twice": 'count_over_time(up{job="alertmanager"}[1m]) >= 2',
        "redis_exporter scraped twice": 'count_over_time(redis_up{job="redis"}[1m]) >= 2',
        "KATO probed from outside": 'count_over_time(probe_success{job="blackbox"}[1m]) >= 2',
        "the error budget burning": 'ALERTS{alertname="KatoErrorBudgetBurn", alertstate="firing"}',
    }
    for what, expr in conditions.items():
        wait_for(lambda expr=expr: stack.instant(expr), 90, interval=1, what=what)
    time.sleep(10)  # a few more scrapes, so that rate() over $__rate_interval has its points


def variable_values(stack: Stack, board: dict[str, Any]) -> dict[str, list[str]]:
    """Each variable's values, from its own query, in order (a later one may use an earlier)."""
    values: dict[str, list[str]] = {}
    for variable in variables(board):
        selector, label = label_values_query(variable["query"])
        selector = fill(selector, values, RANGE_SECONDS, SCRAPE_SECONDS)
        found = stack.query(f"label/{label}/values", **{"match[]": selector})
        assert found, f"variable {variable['name']} of {board['uid']}: {selector} has no {label}"
        values[variable["name"]] = found
    return values


@pytest.fixture(params=["prometheus", "victoria-metrics"])
def store(request: pytest.FixtureRequest, stack: Stack) -> Stack:
    """The stack, asked through Prometheus' own API or through VictoriaMetrics', which holds
    what Prometheus remote-wrote."""
    return stack if request.param == "prometheus" else replace(stack, store=stack.victoria_metrics)


def test_every_panel_query_returns_data(store: Stack):
    stack = store
    values = {name: variable_values(stack, board) for name, board in dashboards().items()}
    assert stack.containers["cpu"] in values["kato-containers.json"]["container"]
    empty, ran = [], 0
    for target in targets("prometheus"):
        expr = fill(target.query["expr"], values[target.dashboard], RANGE_SECONDS, SCRAPE_SECONDS)
        ran += 1
        try:
            if not stack.range(expr):
                empty.append(f"{target.where}: no data: {expr}")
        except QueryError as exc:
            empty.append(f"{target.where}: {exc}: {expr}")
    assert ran > 80
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_every_metric_a_query_names_exists(stack: Stack):
    known = set(stack.query("label/__name__/values"))
    missing = {
        f"{name} (in {target.where})"
        for target in targets("prometheus")
        for name in metric_names(target.query["expr"])
        if name not in known
    }
    for board in dashboards().values():
        for variable in variables(board):
            selector, _ = label_values_query(variable["query"])
            missing |= {f"{n} (variable {variable['name']})" for n in metric_names(selector) - known}
    assert not missing, sorted(missing)


def test_the_containers_dashboard_shows_the_conditions(stack: Stack):
    """Beyond 'some data': the right container is in the right state on the panels that show it."""
    names = stack.containers
    board = dashboards()["kato-containers.json"]
    values = variable_values(stack, board)
    by_title = {t.panel: t for t in targets("prometheus") if t.dashboard == "kato-containers.json"}

    def latest(title: str) -> dict[str, float]:
        expr = fill(by_title[title].query["expr"], values, RANGE_SECONDS, SCRAPE_SECONDS)
        return {r["metric"].get("name", ""): float(r["value"][1]) for r in stack.instant(expr)}

    state = latest("State")  # 1 created, 2 running, … 6 exited
    assert state[names["cpu"]] == 2 and state[names["exited"]] == 6
    assert latest("Health")[names["unhealthy"]] == 3  # starting, healthy, unhealthy
    assert 0.15 < latest("CPU")[names["cpu"]] <= 0.275  # cores, pinned at 0.25
    assert latest("Restarts in the time range")[names["restarting"]] >= 1


def test_victoria_metrics_holds_what_prometheus_scraped(stack: Stack):
    """remote_write delivered: the same series and values, recording rules' results included,
    with Prometheus' external labels (site) added as remote_write adds them."""
    at = str(time.time() - 10)  # a moment VictoriaMetrics has had time to store
    for expr in ("kato_container_memory_limit_bytes", "threshold:kato_host_cpu_usage_ratio:warning"):
        scraped = stack.query("query", query=expr, time=at)["result"]
        stored = replace(stack, store=stack.victoria_metrics).query("query", query=expr, time=at)["result"]
        assert scraped and all(r["metric"].pop("site") == "kato" for r in stored), stored
        assert {(json.dumps(r["metric"], sort_keys=True), r["value"][1]) for r in scraped} == {
            (json.dumps(r["metric"], sort_keys=True), r["value"][1]) for r in stored
        }, (scraped, stored)


def legend(template: str, labels: dict[str, str]) -> str:
    """A legend format filled as Grafana's Prometheus datasource fills it (``{{label}}``)."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


def query_frames(stack: Stack, query: dict[str, Any], values: dict[str, list[str]]) -> list[dict[str, Any]]:
    """A panel query's result over the last two minutes as Grafana's Prometheus datasource makes
    it: a frame per series, its value field labelled and named by the legend."""
    frames = []
    for result in stack.range(fill(query["expr"], values, RANGE_SECONDS, SCRAPE_SECONDS)):
        labels = {k: v for k, v in result["metric"].items() if k != "__name__"}
        times = [float(t) * 1000 for t, _ in result["values"]]
        value = {"name": "Value", "type": "number", "values": [float(v) for _, v in result["values"]]}
        value |= {"labels": labels, "config": {"displayNameFromDS": legend(query["legendFormat"], labels)}}
        frames.append({"fields": [{"name": "Time", "type": "time", "values": times}, value]})
    return frames


def test_stats_and_bar_gauges_show_what_grafana_would(stack: Stack):
    """Each stat and bar gauge of every dashboard, its queries run on the proof stack over the
    last two minutes, judged with @grafana/data's field display code: the healthy parts are not
    red, the container pinned at its CPU limit and the 5xx the access log writes are, and units
    read as a person expects."""
    pinned = f'kato:container_cpu_usage:ratio_rate1m{{name="{stack.containers["cpu"]}"}} > 0.9'
    wait_for(lambda: stack.instant(pinned), 60, interval=1, what="a minute of the pinned container's CPU")
    shown: list[dict[str, Any]] = []
    for name, board in dashboards().items():
        values = variable_values(stack, board)
        for panel in panels(board):
            if panel["type"] in ("stat", "gauge", "bargauge"):
                frames = [frame for query in panel["targets"] for frame in query_frames(stack, query, values)]
                title = f"{name} / {panel['title']}"
                shown.append(
                    {"title": title, "fieldConfig": panel["fieldConfig"], "options": panel["options"]}
                )
                shown[-1]["frames"] = frames
    names = stack.containers
    for version in GRAFANA_VERSIONS:
        seen = displayed(version, shown)
        colours = {title: {v["title"]: v["color"] for v in values} for title, values in seen.items()}
        texts = {title: [v["text"] for v in values] for title, values in seen.items()}
        print(version, json.dumps(seen, indent=1))
        assert colours["kato-overview.json / KATO API"] == {"up": "green"}
        assert [v["text"] for v in seen["kato-overview.json / KATO health"]] == ["healthy"]
        assert set(colours["kato-overview.json / KATO health"].values()) == {"green"}
        cpu = colours["kato-overview.json / Top containers by CPU"]
        assert cpu.pop(names["cpu"]) == "red" and set(cpu.values()) <= {"green"}, cpu
        assert set(colours["kato-overview.json / Top containers by memory"].values()) == {"green"}
        assert set(colours["kato-overview.json / 5xx ratio"].values()) == {"red"}  # a third are 500
        assert all(t.endswith("%") for t in texts["kato-overview.json / 5xx ratio"])
        assert all(t.endswith("%") for t in texts["kato-overview.json / Top containers by CPU"])
        assert all(t.endswith("req/s") for t in texts["kato-overview.json / Requests"])
        assert set(colours["kato-host.json / Mounts not answering"].values()) == {"green"}
        assert colours["kato-sessions.json / Probes from outside"] == {"kato": "green"}
        # a third of the requests fail; every probe is fast and healthy
        for title in ("kato-slo.json / Error budget left", "kato-slo.json / Burn rate now"):
            assert colours[title] == {"requests-availability": "red", "probe-latency": "green"}, title
        assert all(t.endswith("x") for t in texts["kato-slo.json / Burn rate now"])
        assert colours["kato-slo.json / Budget alerts firing"] == {"firing": "red"}
        for uptime in ("kato-host.json / Uptime", "kato-sessions.json / KATO uptime"):
            assert all(re.search(r"(second|minute|hour|day)", t) for t in texts[uptime]), texts[uptime]
        neutral = [
            "kato-overview.json / Active sessions",
            "kato-overview.json / Requests",
            "kato-overview.json / Containers running",
            "kato-sessions.json / Events in the time range",
            "kato-sessions.json / Session source",
            "kato-sessions.json / KATO uptime",
            "kato-host.json / Uptime",
            "kato-slo.json / Objective",
        ]
        for title in neutral:
            assert colours[title] and set(colours[title].values()) == {"blue"}, (title, colours[title])
        assert set(colours) == {p["title"] for p in shown}  # every one judged
