"""The KATO sources against the KATO double, a real Redis and a real dockerd."""

from __future__ import annotations

import asyncio
import json
import shlex
import time
import urllib.request

import pytest

from kato_exporter.hub import Hub
from kato_exporter.model import SessionEvent
from kato_exporter.sources.sessions import RedisSessions
from tests.conftest import (
    RUN_LABEL,
    Daemon,
    Exporter,
    answers_tcp,
    docker,
    free_port,
    redis_command,
    start_container,
    wait_for,
)

pytestmark = pytest.mark.integration


def start_kato_exporter(start_exporter, kato: Daemon, *flags: str, logs: bool = False) -> Exporter:
    """An exporter with only the KATO sources (and the access log only when asked)."""
    return start_exporter(
        f"--kato.url={kato.url}",
        "--no-collector.containers",
        "--no-collector.host",
        *flags,
        *([] if logs else ["--no-kato.logs"]),
    )


def call(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, json.loads(text) if exc.headers.get_content_type() == "application/json" else {}


def create(kato: Daemon, ttl: int | None = None) -> str:
    status, body = call("POST", kato.url + "/sessions", {"node_id": "n1", "ttl_seconds": ttl})
    assert status == 200, body
    return body["session_id"]


def delete(kato: Daemon, session_id: str) -> None:
    status, body = call("DELETE", f"{kato.url}/sessions/{session_id}")
    assert (status, body["status"]) == (200, "deleted")


def events(exporter: Exporter) -> dict[str, float]:
    e = exporter.scrape()
    return {labels["event"]: value for labels, value in e.all("kato_session_events_total")}


def missed(exporter: Exporter) -> dict[str, float]:
    e = exporter.scrape()
    return {labels["event"]: value for labels, value in e.all("kato_session_events_missed_total")}


def value(exporter: Exporter, name: str, **labels: str) -> float | None:
    return exporter.scrape().value(name, **labels)


@pytest.mark.parametrize("workers", [1, 4])
def test_redis_mode_counts_every_change_exactly_once(start_exporter, kato_double, redis_server, workers):
    kato = kato_double(workers=workers)
    old = create(kato)  # before the exporter: live, but no event
    exporter = start_kato_exporter(start_exporter, kato, f"--kato.redis-url={redis_server.url}")
    assert value(exporter, "kato_exporter_session_mode", mode="redis") == 1
    assert value(exporter, "kato_sessions_active") == 1
    lasting = [create(kato) for _ in range(8)]
    for _ in range(4):
        create(kato, ttl=1)
    for session_id in [*lasting[:3], old]:
        delete(kato, session_id)
    # create/delete went through every worker; each is counted once, expiries too
    wait_for(
        lambda: events(exporter) == {"created": 12, "destroyed": 4, "expired": 4, "evicted": 0},
        10,
        what="12 created, 4 destroyed, 4 expired",
    )
    assert value(exporter, "kato_sessions_active") == 5
    assert value(exporter, "kato_sessions_index_stale") == 4
    # KATO's own count keeps the expired sessions (its index is never pruned): it drifts
    wait_for(lambda: value(exporter, "kato_sessions_reported") == 9, 12, what="KATO's count of 9")
    time.sleep(1)
    assert events(exporter) == {"created": 12, "destroyed": 4, "expired": 4, "evicted": 0}
    assert missed(exporter) == {"created": 0, "ended": 0}


def test_api_mode_sees_creates_and_deletes_but_not_expiry(start_exporter, kato_double):
    kato = kato_double(workers=1)
    exporter = start_kato_exporter(start_exporter, kato, "--kato.interval=1s")
    assert value(exporter, "kato_exporter_session_mode", mode="api") == 1
    assert value(exporter, "kato_sessions_index_stale") is None
    ids = [create(kato) for _ in range(3)]
    create(kato, ttl=1)
    delete(kato, ids[0])
    wait_for(
        lambda: events(exporter) == {"created": 4, "destroyed": 1, "expired": 0, "evicted": 0},
        5,
        what="4 created and 1 destroyed from /ws/events",
    )
    time.sleep(2)  # the short session has expired; KATO says nothing and still counts it
    assert events(exporter)["expired"] == 0
    wait_for(lambda: value(exporter, "kato_sessions_active") == 3, 15, what="KATO's count, 3")
    assert "counts may drift" in exporter.log.read_text()


def test_api_mode_with_several_workers_misses_events(start_exporter, kato_double):
    kato = kato_double(workers=4)
    exporter = start_kato_exporter(start_exporter, kato)
    for _ in range(40):
        create(kato)
    time.sleep(1)
    seen = events(exporter)["created"]
    print(f"one /ws/events socket saw {seen:.0f} of 40 creates across 4 workers")
    # it sees its own worker's share: none at all has odds (3/4)^40, all of them (1/4)^40
    assert 1 <= seen < 40


def test_redis_lost_and_back_without_spurious_events(start_exporter, kato_double, redis_server):
    kato = kato_double()
    exporter = start_kato_exporter(
        start_exporter, kato, f"--kato.redis-url={redis_server.url}", "--kato.interval=1s"
    )
    for _ in range(3):
        create(kato)
    wait_for(lambda: value(exporter, "kato_sessions_active") == 3, 5)
    before = events(exporter)
    redis_server.kill()
    wait_for(
        lambda: value(exporter, "kato_exporter_source_up", source="kato_sessions") == 0,
        3,
        what="sessions source down",
    )
    assert value(exporter, "kato_sessions_active") is None  # gone, not zero
    assert value(exporter, "kato_up") == 1  # KATO itself still answers
    redis_server.start()  # empty: every session is gone, and nobody saw them end
    wait_for(
        lambda: value(exporter, "kato_exporter_source_up", source="kato_sessions") == 1,
        10,
        what="sessions source back",
    )
    assert value(exporter, "kato_sessions_active") == 0
    assert events(exporter) == before  # no invented "destroyed" for what was not seen
    # KATO's Redis client finds its old connection dead on first use: that request fails (500)
    wait_for(
        lambda: call("POST", kato.url + "/sessions", {"node_id": "n1"})[0] == 200,
        5,
        what="KATO creating sessions again",
    )
    wait_for(lambda: events(exporter)["created"] == before["created"] + 1, 3, what="a new create")
    assert exporter.proc.poll() is None


def test_kato_down_and_back(start_exporter, kato_double, redis_server):
    kato = kato_double()
    exporter = start_kato_exporter(
        start_exporter, kato, f"--kato.redis-url={redis_server.url}", "--kato.interval=1s"
    )
    e = exporter.scrape()
    assert e.value("kato_up") == 1
    assert e.value("kato_health_status", status="healthy") == 1
    assert e.value("kato_processors_max") == 100
    assert time.time() - 60 < e.value("kato_start_time_seconds") < time.time()  # the double just started
    kato.kill()
    wait_for(lambda: value(exporter, "kato_up") == 0, 5, what="kato_up 0")
    e = exporter.scrape()
    assert e.value("kato_exporter_source_up", source="kato") == 0
    assert e.value("kato_health_status", status="healthy") is None
    assert e.value("kato_exporter_source_up", source="kato_sessions") == 1  # Redis is fine
    kato.start()
    wait_for(lambda: value(exporter, "kato_up") == 1, 5, what="kato_up back to 1")


def test_garbage_and_slow_answers(start_exporter, kato_double):
    kato = kato_double()
    exporter = start_kato_exporter(start_exporter, kato, "--kato.interval=1s", "--kato.timeout=1s")
    call("POST", kato.url + "/_double/faults", {"garbage": ["/health"]})
    wait_for(lambda: value(exporter, "kato_up") == 0, 5, what="kato_up 0 on garbage")
    assert "GET /health: not JSON" in exporter.log.read_text()
    call("POST", kato.url + "/_double/faults", {"garbage": []})
    wait_for(lambda: value(exporter, "kato_up") == 1, 10, what="recovery")
    call("POST", kato.url + "/_double/faults", {"delay": {"/metrics": 3}})
    wait_for(lambda: value(exporter, "kato_up") == 0, 10, what="kato_up 0 on a slow answer")
    assert "GET /metrics: no answer within 1s" in exporter.log.read_text()
    call("POST", kato.url + "/_double/faults", {"delay": {}})
    wait_for(lambda: value(exporter, "kato_up") == 1, 10, what="recovery")


KATO_OUTPUT = [  # (line, to stderr)
    ("INFO:     Started server process [1]", False),
    *[(f'INFO:     172.17.0.1:4000{i} - "GET /sessions/count HTTP/1.1" 200 OK', False) for i in range(4)],
    *[
        (f'INFO:     172.17.0.1:5000{i} - "POST /sessions HTTP/1.1" 500 Internal Server Error', False)
        for i in range(2)
    ],
    ('INFO:     172.17.0.1:50003 - "DELETE /sessions/session-abc HTTP/1.1" 404 Not Found', True),
]
PRINT_KATO_OUTPUT = "; ".join(
    f"echo {shlex.quote(line)}" + (" >&2" if to_stderr else "") for line, to_stderr in KATO_OUTPUT
)


def requests(exporter: Exporter) -> dict[tuple[str, str], float]:
    return {
        (labels["method"], labels["code"]): v
        for labels, v in exporter.scrape().all("kato_http_requests_total")
    }


def test_access_log_counts_by_code_and_a_restart_does_not_double_count(
    start_exporter, kato_double, run_container
):
    kato = kato_double()
    name_prefix = f"kato-test-{time.time_ns()}"
    exporter = start_kato_exporter(
        start_exporter,
        kato,
        f"--kato.log-container={name_prefix}-kato(-[0-9]+)?",
        f"--collector.containers.label-selector={RUN_LABEL}",
        logs=True,
    )
    name, unwatched = f"{name_prefix}-kato", f"{name_prefix}-kato-2"
    start_container(name, PRINT_KATO_OUTPUT + "; sleep 3600")
    # another run's label in place of this run's: outside the selector
    start_container(unwatched, PRINT_KATO_OUTPUT + "; sleep 3600", "--label", "kato.test.run=another")
    try:  # the KATO outside the label selector is not counted: only one container's lines are
        first = {("GET", "200"): 4, ("POST", "500"): 2, ("DELETE", "404"): 1}
        wait_for(
            lambda: requests(exporter) == first,
            10,
            what=f"{first}",
            show=lambda: (requests(exporter), docker("logs", "-t", name), exporter.log.read_text()),
        )
        assert value(exporter, "kato_exporter_source_up", source="kato_logs") == 1
        classes = {
            (labels["method"], labels["code_class"]): v
            for labels, v in exporter.scrape().all("kato_http_responses_total")
        }
        assert len(classes) == 8 * 5  # every method (and OTHER) by every class, at 0 until seen
        assert {key: v for key, v in classes.items() if v} == {
            ("GET", "2xx"): 4,
            ("POST", "5xx"): 2,
            ("DELETE", "4xx"): 1,
        }
        assert classes["DELETE", "5xx"] == 0
        errors = value(exporter, "kato_exporter_collect_errors_total", source="kato_logs")
        docker("restart", "-t", "0", name)  # prints the same lines once more
        doubled = {key: 2 * n for key, n in first.items()}
        wait_for(
            lambda: requests(exporter) == doubled,
            10,
            what=f"{doubled}",
            show=lambda: (requests(exporter), docker("logs", "-t", name), exporter.log.read_text()),
        )
        time.sleep(3)  # a resumed stream that re-read old lines would show by now
        assert requests(exporter) == doubled
        # a restart is no failure: the follower went on with the new stream
        assert value(exporter, "kato_exporter_collect_errors_total", source="kato_logs") == errors
    finally:
        docker("rm", "-f", name, unwatched, check=False)


async def test_one_hub_event_per_session_change(kato_double, redis_server):
    kato = kato_double(workers=2)
    hub = Hub()
    queue = hub.subscribe()
    source = RedisSessions(redis_server.url, hub.publish)
    await source.start()
    try:
        await source.collect()
        loop = asyncio.get_running_loop()
        keep = await loop.run_in_executor(None, create, kato, None)
        gone = await loop.run_in_executor(None, create, kato, None)
        await loop.run_in_executor(None, create, kato, 1)
        await loop.run_in_executor(None, delete, kato, gone)
        seen: list[SessionEvent] = []
        async with asyncio.timeout(10):
            while len(seen) < 5:
                seen.append(await queue.get())
        assert [(e.type, e.active) for e in seen] == [
            ("created", 1),
            ("created", 2),
            ("created", 3),
            ("destroyed", 2),
            ("expired", 1),
        ]
        await asyncio.sleep(0.5)
        assert queue.empty()  # one event per change, no more
        assert keep in source.known
    finally:
        await source.close()


def test_redis_without_config_command(start_exporter, kato_double, tmp_path):
    """A managed Redis that forbids CONFIG: the exporter checks with a probe key of its own, says
    clearly what to set when notifications are off, and works when they are on."""

    def redis(*extra: str) -> Daemon:
        port = free_port()
        command = redis_command(port, tmp_path, "--rename-command", "CONFIG", "", *extra)
        return Daemon(f"redis-noconfig-{port}", command, answers_tcp(port), f"redis://127.0.0.1:{port}/0")

    kato = kato_double()
    locked = redis()
    try:
        exporter = start_kato_exporter(start_exporter, kato, f"--kato.redis-url={locked.url}")
        wait_for(
            lambda: "keyspace notifications are off and CONFIG is not allowed" in exporter.log.read_text(),
            10,
            what="the reason in the log",
        )
        assert "set notify-keyspace-events Kg$xe in redis.conf" in exporter.log.read_text()
        assert value(exporter, "kato_exporter_source_up", source="kato_sessions") == 0
    finally:
        locked.stop()
    prepared = redis("--notify-keyspace-events", "Kg$xe")
    try:
        exporter = start_kato_exporter(start_exporter, kato, f"--kato.redis-url={prepared.url}")
        assert value(exporter, "kato_exporter_source_up", source="kato_sessions") == 1
    finally:
        prepared.stop()
