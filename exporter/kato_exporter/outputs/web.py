"""The HTTP face: ``/``, ``/metrics``, ``/-/healthy``, ``/-/ready``.

Handlers only read the hub's snapshot and the cached exposition; they never
reach a source.
"""

from __future__ import annotations

import hmac
import html
import time
from collections.abc import Mapping, Set
from typing import Any, Protocol

from aiohttp import web

from kato_exporter import __version__
from kato_exporter.hub import Hub
from kato_exporter.outputs.exposition import Exposition
from kato_exporter.outputs.webconfig import BasicAuth

HUB = web.AppKey("hub", Hub)
EXPOSITION = web.AppKey("exposition", Exposition)
SOURCES: web.AppKey[Set[str]] = web.AppKey("sources")
METRICS_PATH = web.AppKey("metrics_path", str)


async def metrics(request: web.Request) -> web.StreamResponse:
    exposition = request.app[EXPOSITION]
    fmt = exposition.negotiate(request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", ""))
    started = time.perf_counter()
    body = await exposition.get(fmt, request.remote or "")
    ready = time.perf_counter()
    headers = {"Content-Type": fmt[0], "Vary": "Accept, Accept-Encoding"}
    if fmt[1]:
        headers["Content-Encoding"] = "gzip"
    response = web.StreamResponse(headers=headers)
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body)
    await response.write_eof()
    exposition.scrape_times.observe("wait", ready - started)
    exposition.scrape_times.observe("write", time.perf_counter() - ready)
    return response


class Inbox(Protocol):
    def receive(self, body: Any) -> int: ...


INBOX = web.AppKey("inbox", Inbox)
TOKEN = web.AppKey("token", str)
WEBHOOK_PATH = "/api/v1/alertmanager"
WEBHOOK_MAX_BYTES = 4 * 2**20  # a notification of a few thousand alerts; larger bodies get 413


async def alertmanager_webhook(request: web.Request) -> web.Response:
    """Alertmanager's webhook receiver: 204 when taken; 401 without the bearer token, 413
    for a body over WEBHOOK_MAX_BYTES, 400 saying why for anything else it cannot take."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), request.app[TOKEN].encode()):
        return web.json_response(
            {"error": "a bearer token is required"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        body = await request.json()  # over the app's client_max_size: 413
    except ValueError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    try:
        request.app[INBOX].receive(body)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.Response(status=204)


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def ready(request: web.Request) -> web.Response:
    snapshot = request.app[HUB].snapshot
    pending = sorted(request.app[SOURCES] - snapshot.health.keys())
    if pending:
        return web.Response(status=503, text=f"waiting for the first collection of: {', '.join(pending)}\n")
    return web.Response(text="OK\n")


async def landing(request: web.Request) -> web.Response:
    snapshot = request.app[HUB].snapshot
    rows = []
    sources = request.app[SOURCES]
    for name in sorted(sources):
        health = snapshot.health.get(name)
        if health is None:
            state, detail = "starting", ""
        elif health.up:
            age = time.time() - snapshot.collected_at[name]
            state, detail = "up", f"{health.duration_seconds * 1000:.1f} ms, {age:.1f} s ago"
        else:
            state, detail = "down", health.last_error or ""
        rows.append(f"<tr><td>{name}</td><td>{state}</td><td>{html.escape(detail)}</td></tr>")
    metrics_link = html.escape(request.app[METRICS_PATH].lstrip("/"))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>KATO exporter</title></head>
<body><h1>KATO exporter {__version__}</h1>
<p><a href="{metrics_link}">Metrics</a> · <a href="-/healthy">Health</a> ·
<a href="-/ready">Readiness</a></p>
<table><tr><th>source</th><th>state</th><th>last collection</th></tr>
{"".join(rows)}
</table></body></html>
"""
    return web.Response(text=page, content_type="text/html")


def make_app(
    hub: Hub,
    exposition: Exposition,
    sources: Set[str],
    telemetry_path: str = "/metrics",
    inbox: Inbox | None = None,
    token: str = "",
    users: Mapping[str, bytes] | None = None,
) -> web.Application:
    """The app; the webhook only with an ``inbox`` and a ``token``; basic auth with ``users``."""
    middlewares = [BasicAuth(users, exempt=frozenset({WEBHOOK_PATH})).middleware] if users else []
    app = web.Application(client_max_size=WEBHOOK_MAX_BYTES, middlewares=middlewares)
    app[HUB] = hub
    app[EXPOSITION] = exposition
    app[SOURCES] = sources
    app[METRICS_PATH] = telemetry_path
    app.router.add_get("/", landing)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    if inbox is not None and token:
        app[INBOX] = inbox
        app[TOKEN] = token
        app.router.add_post(WEBHOOK_PATH, alertmanager_webhook)
    return app
