"""The Live pusher's pieces: line protocol by its rules, bodies under 64 KiB, rates, the queue.
(The real parser, InfluxDB, reads them back in tests/integration/test_live.py.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from kato_exporter.hub import Hub
from kato_exporter.model import AlertNotice, SessionEvent
from kato_exporter.outputs.live import LivePusher, bodies, event_lines, host_lines, line
from kato_exporter.outputs.rates import Rates
from kato_exporter.supervision import SourceError
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

    def cpu_field(busy: float, idle: float, iowait: float, at: float) -> object:
        seconds = {(c, m): v for c in "01" for m, v in (("user", busy), ("idle", idle), ("iowait", iowait))}
        [text] = host_lines(replace(HOST, cpu_seconds=seconds), at, rates)
        fields = dict(f.split("=") for f in text.split(" ")[1].split(","))
        return fields.get("cpu_usage_ratio")

    assert cpu_field(100, 100, 10, 10.0) is None  # a rate needs two collections
    # each CPU 0.75 s busy and 0.25 s waiting on I/O, which counts as idle, in 1 s
    assert cpu_field(100.75, 100, 10.25, 11.0) == "0.75"


def test_events_become_points_at_once():
    [created] = event_lines(SessionEvent("created", 12.0, 3))
    assert created == "session_events,type=created active=3i 12000000000"
    notice = AlertNotice(
        "resolved", "KatoApiDown", "critical", "", {"name": "kato"}, {"summary": "up"}, "", ""
    )
    [alert] = event_lines(notice)
    assert alert.startswith(
        'alerts,alertname=KatoApiDown,name=kato,severity=critical,status=resolved firing=0i,summary="up" '
    )
    assert event_lines("something else") == []


async def test_a_full_queue_drops_the_oldest_and_counts_it():
    pusher = LivePusher(Hub(), "http://127.0.0.1:9", "token", queue_size=3)
    for i in range(5):
        pusher.enqueue([f"host load1={i}.0 {i}"])
    assert pusher.stats().pushes["dropped"] == 2
    assert [b.decode() for b in pusher._queue] == [f"host load1={i}.0 {i}\n" for i in (2, 3, 4)]


async def test_a_task_that_dies_reports_the_pusher_down_and_is_restarted():
    hub = Hub()
    pusher = LivePusher(hub, "http://127.0.0.1:9", "token")
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
