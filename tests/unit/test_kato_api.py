"""KatoApi against a real aiohttp server: errors in our words, and one fetch shared by callers."""

from __future__ import annotations

import pytest
from aiohttp import web

from kato_exporter.sources.kato import KatoApi, KatoSource
from kato_exporter.supervision import SourceError


@pytest.fixture
async def kato(aiohttp_server):
    hits = {"count": 0}

    async def count(request: web.Request) -> web.Response:
        hits["count"] += 1
        return web.json_response({"active_session_count": 3})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(text="<html>oops</html>")

    app = web.Application()
    app.router.add_get("/sessions/count", count)
    app.router.add_get("/health", broken)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), hits


async def test_a_recent_document_is_shared_and_an_old_one_fetched_again(kato):
    url, hits = kato
    now = [0.0]
    api = KatoApi(url, timeout=2, clock=lambda: now[0])
    assert await api.get("/sessions/count") == {"active_session_count": 3}
    now[0] = 4.0
    assert await api.get("/sessions/count", max_age=5) == {"active_session_count": 3}
    assert hits["count"] == 1  # taken from the fetch 4 s ago
    assert await api.get("/sessions/count") == {"active_session_count": 3}
    assert hits["count"] == 2  # max_age 0: always fresh
    await api.close()


async def test_errors_name_the_path(kato):
    url, _ = kato
    api = KatoApi(url, timeout=2)
    with pytest.raises(SourceError, match="GET /health: not JSON"):
        await api.get("/health")
    with pytest.raises(SourceError, match="GET /missing: HTTP 404"):
        await api.get("/missing")
    await api.close()


async def test_start_time_reads_one_for_the_workers_of_a_start_and_moves_on_a_restart(aiohttp_server):
    """Three workers answer in turn with their own uptimes (started 0, 2 and 4 s apart); then one
    of them is restarted."""
    started = [1000.0, 1002.0, 1004.0]
    now, turn = [5000.0], [0]

    async def health(request: web.Request) -> web.Response:
        worker = turn[0] % len(started)
        turn[0] += 1
        return web.json_response({"status": "healthy", "uptime_seconds": now[0] - started[worker]})

    async def metrics(request: web.Request) -> web.Response:
        return web.json_response({"processor_manager": {"total_processors": 1, "max_processors": 100}})

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"active_session_count": 0})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/sessions/count", count)
    server = await aiohttp_server(app)
    source = KatoSource(KatoApi(str(server.make_url("")).rstrip("/"), timeout=2), wall=lambda: now[0])
    assert {(await source.collect()).start_time_seconds for _ in range(6)} == {1000.0}
    started[1] = 4900.0  # that worker restarted: the time moves once, and not back
    after = [(await source.collect()).start_time_seconds for _ in range(6)]
    assert after[-4:] == [4900.0] * 4 and after == sorted(after) and set(after) <= {1000.0, 4900.0}
    await source.close()
