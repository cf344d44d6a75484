"""The HTTP face: ``/``, ``/metrics``, ``/-/healthy``, ``/-/ready``.

Handlers only read the hub's snapshot and the cached exposition; they never
reach a source.
"""

from __future__ import annotations

import html
import time
from typing import Any, Protocol

from aiohttp import web

from kato_exporter import __version__
from kato_exporter.hub import Hub
from kato_exporter.outputs.exposition import Exposition

HUB = web.AppKey("hub", Hub)
EXPOSITION = web.AppKey("exposition", Exposition)
SOURCES: web.AppKey[frozenset[str]] = web.AppKey("sources")
METRICS_PATH = web.AppKey("metrics_path", str)


async def metrics(request: web.Request) -> web.Response:
    exposition = request.app[EXPOSITION]
    fmt = exposition.negotiate(request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", ""))
    body = await exposition.get(fmt)
    headers = {"Content-Type": fmt[0], "Vary": "Accept, Accept-Encoding"}
    if fmt[1]:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


class Inbox(Protocol):
    def receive(self, body: Any) -> int: ...


INBOX = web.AppKey("inbox", Inbox)


async def alertmanager_webhook(request: web.Request) -> web.Response:
    """Alertmanager's webhook receiver: 204 when taken, 400 saying why when not."""
    try:
        body = await request.json()
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
    sources: frozenset[str],
    telemetry_path: str = "/metrics",
    inbox: Inbox | None = None,
) -> web.Application:
    app = web.Application()
    app[HUB] = hub
    app[EXPOSITION] = exposition
    app[SOURCES] = sources
    app[METRICS_PATH] = telemetry_path
    app.router.add_get("/", landing)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    if inbox is not None:
        app[INBOX] = inbox
        app.router.add_post("/api/v1/alertmanager", alertmanager_webhook)
    return app
