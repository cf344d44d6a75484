"""KatoApi against a real aiohttp server: errors in our words, and one fetch shared by callers."""

from __future__ import annotations

import pytest
from aiohttp import web

from kato_exporter.sources.kato import KatoApi
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
