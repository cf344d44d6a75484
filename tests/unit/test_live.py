"""The Live pusher's pieces: line protocol by its rules, bodies under 64 KiB, rates, the queue.
(The real parser, InfluxDB, reads them back in tests/integration/test_live.py.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiohttp import web

from kato_exporter.hub import Hub
from kato_exporter.model import AlertNotice, SessionEvent, SourceHealth
from kato_exporter.outputs.live import (
    MEASUREMENTS,
    REJECT_AFTER,
    LivePusher,
    bodies,
    event_lines,
    host_lines,
    line,
    point,
)
from kato_exporter.outputs.rates import Rates
from kato_exporter.supervision import Backoff, SourceError
from tests.unit.test_exposition import HOST


def test_line_escapes_by_the_line_protocol_rules():
    text = line(
        "my measurement,x",
        {"tag key": "a,b=c d", "empty": ""},
        {"field=key": 1.5, "count": 3, "text": 'say "hi" \\ bye', "on": True},
        1.5,
    )
    assert text == (
        r"my\ measurement\,x,tag\ key=a\,b\=c\ d "
        r'field\=key=1.5,count=3i,text="say \"hi\" \\ bye",on=true 1500000000'
    )


def test_bodies_split_under_the_limit_and_keep_every_line():
    lines = [f"containers,name=c{i} pids={i}i {i}" for i in range(5000)]
    chunks = list(bodies(lines, limit=64 * 1024))
    assert len(chunks) > 1 and all(len(c) <= 64 * 1024 for c in chunks)
    assert b"".join(chunks).decode().splitlines() == lines


def test_rates_need_two_values_and_ignore_a_reset():
    rates = Rates()
    assert rates("k", 10.0, 1.0) is None
    assert rates("k", 30.0, 3.0) == 10.0
    assert rates("k", 5.0, 4.0) is None  # counter reset (container restarted)
    assert rates("k", 7.0, 5.0) == 2.0


def test_host_cpu_is_the_busy_share_of_the_counters_between_two_collections():
    rates = Rates()

    def host(busy: float, idle: float, iowait: float, at: float) -> list[str]:
        seconds = {(c, m): v for c in "01" for m, v in (("user", busy), ("idle", idle), ("iowait", iowait))}
        return host_lines(replace(HOST, cpu_seconds=seconds), at, rates)

    assert host(100, 100, 10, 10.0) == []  # its rates need two collections: the point waits
    # each CPU 0.75 s busy and 0.25 s waiting on I/O, which counts as idle, in 1 s
    [text] = host(100.75, 100, 10.25, 11.0)
    fields = dict(f.split("=") for f in text.split(" ")[1].split(","))
    assert fields["cpu_usage_ratio"] == "0.75"
    assert tuple(fields) == MEASUREMENTS["host"]


def test_host_traffic_is_summed_device_by_device_and_a_device_that_goes_takes_no_point_with_it():
    rates = Rates()

    def host(network: dict[str, tuple[int, int]], at: float) -> dict[str, str]:
        [text] = host_lines(replace(HOST, network=network), at, rates) or [""]
        return dict(f.split("=") for f in text.split(" ")[1].split(",")) if text else {}

    assert host({"eth0": (1000, 100), "veth1": (5000, 500)}, 10.0) == {}  # rates need two
    # a container's veth went (its bytes with it) and another came: only eth0 moved, by 200 and 20
    fields = host({"eth0": (1200, 120), "veth2": (70, 7)}, 11.0)
    assert fields["network_receive_bytes_per_second"] == "200.0"
    assert fields["network_transmit_bytes_per_second"] == "20.0"
    fields = host({"eth0": (1400, 140), "veth2": (170, 17)}, 12.0)  # the new one counts from now
    assert fields["network_receive_bytes_per_second"] == "300.0"
    assert fields["network_transmit_bytes_per_second"] == "30.0"


def test_a_point_with_a_value_that_is_no_number_is_not_sent():
    assert point("kato", {}, {"sessions_reported": 3}, 1.0) == ["kato sessions_reported=3i 1000000000"]
    assert point("host", {}, dict.fromkeys(MEASUREMENTS["host"], float("nan")), 1.0) == []
    assert point("kato", {}, {"sessions_reported": float("inf")}, 1.0) == []


def test_events_become_points_at_once():
    [created] = event_lines(SessionEvent("created", 12.0, 3))
    assert created == "session_events,type=created active=3i 12000000000"
    notice = AlertNotice(
        "resolved", "KatoApiDown", "critical", "", {"name": "kato"}, {"summary": "up"}, "", ""
    )
    [alert] = event_lines(notice)
    assert alert.startswith(
        'alerts,alertname=KatoApiDown,name=kato,severity=critical firing=0i,summary="up" '
    )
    assert event_lines("something else") == []


async def test_a_full_queue_drops_the_oldest_and_counts_it():
    pusher = LivePusher(Hub(), "http://127.0.0.1:9", "/nonexistent/token", queue_size=3)
    for i in range(5):
        pusher.enqueue([f"host load1={i}.0 {i}"])
    assert pusher.stats().pushes["dropped"] == 2
    assert [b.decode() for b in pusher._queue] == [f"host load1={i}.0 {i}\n" for i in (2, 3, 4)]


async def test_a_task_that_dies_reports_the_pusher_down_and_is_restarted(tmp_path):
    hub = Hub()
    (tmp_path / "token").write_text("token\n")
    pusher = LivePusher(hub, "http://127.0.0.1:9", str(tmp_path / "token"))
    await pusher.start()
    try:
        await pusher.collect()  # up
        hub.publish(SessionEvent(5, 1.0, 1))  # type: ignore[arg-type]  # a malformed event
        await asyncio.sleep(0.1)
        with pytest.raises(SourceError, match=r"Grafana Live pusher .*: AttributeError"):
            await pusher.collect()
        await asyncio.sleep(1.5)  # backoff, then a new start
        await pusher.collect()
        hub.publish(SessionEvent("created", 2.0, 2))
        await asyncio.sleep(0.1)
        assert any(b"session_events,type=created active=2i" in body for body in pusher._queue)
    finally:
        await pusher.close()


@pytest.fixture
async def grafana(aiohttp_server):
    """Grafana's push endpoint: the token ``good`` only; a body with ``bad`` in it is refused
    with 500, as Grafana answers one it cannot convert."""
    seen: list[bytes] = []

    async def push(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer good":
            return web.Response(status=401)
        body = await request.read()
        seen.append(body)
        return web.Response(status=500 if b"bad" in body else 200)

    app = web.Application()
    app.router.add_post("/api/live/push/kato", push)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), seen


async def test_without_a_token_that_works_the_pusher_is_down_and_takes_a_new_one(grafana, tmp_path):
    url, seen = grafana
    token = tmp_path / "grafana_token"
    pusher = LivePusher(Hub(), url, str(token))
    await pusher.start()
    try:
        with pytest.raises(SourceError, match=r"no Grafana token in .*grafana_token"):
            await pusher.collect()
        token.write_text("stale\n")  # a token of a Grafana whose database was reset
        await asyncio.sleep(1.5)  # the next try reads the file again
        pusher.enqueue(["host load1=1.0 1"])
        await asyncio.sleep(0.3)
        with pytest.raises(SourceError, match=r"Grafana refuses the token in .*: HTTP 401"):
            await pusher.collect()
        token.write_text("good\n")  # grafana-init made a new one
        for _ in range(60):
            await asyncio.sleep(0.1)
            if seen:
                break
        assert seen == [b"host load1=1.0 1\n"]  # the body waited, and went with the new token
        await pusher.collect()  # up
    finally:
        await pusher.close()


async def test_a_body_grafana_refuses_is_dropped_after_a_few_tries(grafana, tmp_path):
    url, seen = grafana
    (tmp_path / "token").write_text("good\n")
    pusher = LivePusher(Hub(), url, str(tmp_path / "token"))
    pusher._backoff = Backoff(0.01, 0.01)
    await pusher.start()
    try:
        pusher.enqueue(['alerts summary="bad" 1'])
        pusher.enqueue(["host load1=2.0 2"])
        for _ in range(100):
            await asyncio.sleep(0.05)
            if pusher.stats().pushes["success"]:
                break
        assert seen == [b'alerts summary="bad" 1\n'] * REJECT_AFTER + [b"host load1=2.0 2\n"]
        assert pusher.stats().pushes["rejected"] == 1
    finally:
        await pusher.close()


async def test_a_collection_just_after_the_tick_goes_with_that_tick(grafana, tmp_path):
    """Collections a second apart that land now just before the push tick, now just after it
    (a busy machine's jitter): each tick pushes one, and none is pushed a tick late beside the next."""
    url, seen = grafana
    (tmp_path / "token").write_text("good\n")
    hub, every = Hub(), 0.2
    pusher = LivePusher(hub, url, str(tmp_path / "token"), every=every)
    await pusher.start()  # its first tick: now
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        for k in range(1, 11):
            await asyncio.sleep(max(0.0, began + k * every + (0.03 if k % 2 else -0.03) - loop.time()))
            await hub.update("host", HOST, SourceHealth(up=True, last_success_seconds=float(k)))
        await asyncio.sleep(every)
    finally:
        await pusher.close()
    stamps = [[int(line.rsplit(b" ", 1)[1]) // 10**9 for line in body.splitlines()] for body in seen]
    assert stamps == [[k] for k in range(2, 11)]  # the first has no rates yet: no point
