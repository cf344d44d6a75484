"""Every long-running watcher fed something it does not expect: its source goes down with the
reason, the watcher restarts by itself, and the numbers are right afterwards. Against a real
dockerd and a real Redis; the unexpected input goes in where the real input flows."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import ClassVar

import aiodocker
import pytest
import redis

from kato_exporter.hub import Hub
from kato_exporter.model import SourceHealth
from kato_exporter.sources.accesslog import AccessLogSource
from kato_exporter.sources.containers import ContainersSource
from kato_exporter.sources.runner import run_source
from tests.conftest import wait_for
from tests.integration.test_kato import call, create, delete, events, start_kato_exporter, value

pytestmark = pytest.mark.integration


class Docker(aiodocker.Docker):
    """The real client; ``corrupt`` inspect documents come back malformed until it is 0."""

    corrupt = 0
    made: ClassVar[list[Docker]] = []

    def __init__(self, url: str) -> None:
        super().__init__(url)
        Docker.made.append(self)

    async def _query_json(self, path: str, *args, **kwargs):  # type: ignore[override]
        document = await super()._query_json(path, *args, **kwargs)
        if re.fullmatch(r"containers/[^/]+/json", path) and Docker.corrupt:
            Docker.corrupt -= 1
            return {"Id": document["Id"], "State": "weird"}  # no Name, no Config, State not an object
        return document


@contextlib.asynccontextmanager
async def watching(source, hub: Hub) -> AsyncIterator[Callable[[], SourceHealth | None]]:
    """The source collecting into ``hub``; yields a look at its latest health."""
    if hasattr(source, "start"):
        await source.start()
    task = asyncio.create_task(run_source(source, hub))
    try:
        yield lambda: hub.snapshot.health.get(source.name)
    finally:
        task.cancel()
        await source.close()


async def until(check: Callable[[], object], seconds: float, what: str) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


async def test_docker_watcher_survives_a_malformed_event_and_inspect_document(run_container):
    name = run_container("sleep 3600")
    hub = Hub()
    source = ContainersSource("unix:///var/run/docker.sock", docker_factory=Docker)
    source.timeout = 5.0

    def names() -> set[str]:
        sample = hub.snapshot.values.get("containers")
        return {c.meta.name for c in sample.containers} if sample else set()

    async with watching(source, hub) as health:
        await until(lambda: name in names(), 5, "the container seen")
        # an event of a shape Docker never sends
        await Docker.made[-1].events.channel.publish({"Type": "container", "Action": "start", "Actor": "?"})
        await until(lambda: health().errors_total >= 1, 5, "the source down")
        assert "AttributeError" in health().last_error
        await until(lambda: health().up, 5, "the source back up")
        assert name in names()
        # an inspect document of a shape Docker never sends, on the next container event
        Docker.corrupt = 1
        errors = health().errors_total
        second = run_container("sleep 3600")
        await until(lambda: health().errors_total > errors, 5, "the source down again")
        await until(lambda: health().up and {name, second} <= names(), 5, "both containers after recovery")
        sample = hub.snapshot.values["containers"]
        usage = {c.meta.name: c.usage for c in sample.containers}
        assert usage[name] is not None and usage[second] is not None


async def test_access_log_follower_restarts_after_an_unexpected_chunk(monkeypatch, run_container):
    """A follower that chokes on a chunk: down with the reason, restarted, nothing counted twice."""
    line = 'INFO:     172.17.0.1:40524 - "GET /health HTTP/1.1" 200 OK'
    name = run_container(f"for i in 1 2 3 4 5; do echo '{line}'; done; sleep 3600")
    real_log = aiodocker.docker.DockerContainer.log
    spoiled = []

    def log(self, **kwargs):
        stream = real_log(self, **kwargs)
        if spoiled:
            return stream

        async def spoil():
            spoiled.append(True)
            async for chunk in stream:
                yield chunk
                yield b"not text"  # what the follower does not expect

        return spoil()

    monkeypatch.setattr(aiodocker.docker.DockerContainer, "log", log)
    hub = Hub()
    source = AccessLogSource("unix:///var/run/docker.sock", re.compile(re.escape(name)), interval=0.2)
    async with watching(source, hub) as health:
        await until(lambda: health() is not None and health().errors_total >= 1, 10, "the follower's failure")
        assert "TypeError" in health().last_error
        await until(lambda: health().up, 10, "the follower restarted")
        await asyncio.sleep(1)  # a resumed stream that counted again would show by now
        assert hub.snapshot.values["kato_logs"].by_method_code == {("GET", "200"): 5}


def test_redis_message_of_another_shape(start_exporter, kato_double, redis_server):
    kato = kato_double()
    exporter = start_kato_exporter(start_exporter, kato, f"--kato.redis-url={redis_server.url}")
    ids = [create(kato) for _ in range(3)]
    wait_for(lambda: value(exporter, "kato_sessions_active") == 3, 5, what="3 sessions")
    # bytes that are no text, on a channel the exporter follows
    redis.Redis.from_url(redis_server.url).publish("__keyspace@0__:kato:session:session-x", b"\xff\xfe")
    wait_for(
        lambda: value(exporter, "kato_exporter_collect_errors_total", source="kato_sessions") >= 1,
        5,
        what="the sessions source down",
    )
    assert "UnicodeDecodeError" in exporter.log.read_text()
    wait_for(
        lambda: value(exporter, "kato_exporter_source_up", source="kato_sessions") == 1, 5, what="back up"
    )
    delete(kato, ids[0])
    create(kato)
    wait_for(
        lambda: events(exporter) == {"created": 4, "destroyed": 1, "expired": 0, "evicted": 0},
        5,
        what="every change after the recovery, none invented",
    )
    assert value(exporter, "kato_sessions_active") == 3


def test_ws_events_frame_of_another_shape(start_exporter, kato_double):
    kato = kato_double(workers=1)
    exporter = start_kato_exporter(start_exporter, kato, "--kato.interval=1s")
    create(kato)
    wait_for(lambda: events(exporter)["created"] == 1, 5, what="1 create from /ws/events")
    for frame in ("not json {", '{"event_type": "state.snapshot", "data": {"active_sessions": "many"}}'):
        errors = value(exporter, "kato_exporter_collect_errors_total", source="kato_sessions") or 0
        assert call("POST", kato.url + "/_double/ws_send", {"frame": frame})[1]["sent_to"] == 1
        wait_for(
            lambda e=errors: (
                value(exporter, "kato_exporter_collect_errors_total", source="kato_sessions") > e
            ),
            5,
            what=f"the sessions source down on {frame!r}",
        )
        wait_for(
            lambda: value(exporter, "kato_exporter_source_up", source="kato_sessions") == 1, 5, what="back up"
        )
    create(kato)  # seen on the new socket
    wait_for(lambda: events(exporter)["created"] == 2, 5, what="the create after recovery")
    assert "active_sessions is 'many'" in exporter.log.read_text()
