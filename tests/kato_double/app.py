"""A faithful double of KATO 3.10.1's monitoring and session API, as docs/kato.md describes it
(its example documents in contract/), for tests: same paths, JSON shapes and types,
5 s caches per worker, WebSocket quirks, and sessions in a real Redis with KATO's
key layout and TTLs. Each worker process broadcasts only to its own sockets and
prints uvicorn-style access lines.

Test-only control, per worker: ``POST /_double/faults`` with
``{"garbage": ["/health"], "delay": {"/metrics": 10}}`` makes those paths answer
non-JSON or late, and ``{"health": "degraded"}`` (or ``"unhealthy"``) makes ``/health`` say
so, with a 200 as KATO does; ``POST /_double/ws_send`` with ``{"frame": "..."}`` sends that text
as it is to the worker's ``/ws/events`` sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

CONTRACT = Path(__file__).resolve().parent / "contract"
PREFIX = "kato:session:"
INDEX = PREFIX + "_active_index"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def example(name: str) -> Any:
    return json.loads((CONTRACT / name).read_text())


def iso(moment: datetime, z: bool = False) -> str:
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if z else text


class Kato:
    """One uvicorn worker's state."""

    def __init__(self, redis_url: str, session_ttl: int, cache_ttl: float) -> None:
        self.redis = aioredis.from_url(redis_url, decode_responses=True, socket_timeout=2)
        self.session_ttl = session_ttl
        self.cache_ttl = cache_ttl
        self.started = time.time()
        self.requests = 0
        self.locks: set[str] = set()  # sessions created or read in this worker
        self.sockets: set[web.WebSocketResponse] = set()
        self.cache: dict[str, tuple[float, Any]] = {}
        self.faults: dict[str, Any] = {"garbage": [], "delay": {}, "health": "healthy"}

    async def count(self) -> int:
        """SCARD of the index; on a Redis error, this worker's lock count (as KATO does)."""
        try:
            return int(await self.redis.scard(INDEX))
        except RedisError:
            return len(self.locks)

    async def cached(self, key: str, build: Callable[[], Awaitable[Any]]) -> Any:
        hit = self.cache.get(key)
        if hit and time.time() - hit[0] < self.cache_ttl:
            return hit[1]
        value = await build()
        self.cache[key] = (time.time(), value)
        return value

    async def broadcast(self, event_type: str, data: dict[str, Any]) -> None:
        frame = json.dumps({"event_type": event_type, "timestamp": iso(datetime.now(UTC)), "data": data})
        for ws in list(self.sockets):
            try:
                await ws.send_str(frame)
            except ConnectionError:
                self.sockets.discard(ws)


KATO = web.AppKey("kato", Kato)


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    kato = request.app[KATO]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    except Exception:
        response = web.Response(status=500, text="Internal Server Error")  # what Starlette sends
    if request.path in kato.faults["delay"]:
        await asyncio.sleep(kato.faults["delay"][request.path])
    if request.path in kato.faults["garbage"] and response.status == 200:
        response = web.Response(text="<html>upstream error</html>", content_type="application/json")
    if not isinstance(response, web.WebSocketResponse):
        kato.requests += 1
    peer = request.transport.get_extra_info("peername") if request.transport else None
    client = f"{peer[0]}:{peer[1]}" if peer else "-"
    query = f"?{request.query_string}" if request.query_string else ""
    phrase = HTTPStatus(response.status).phrase
    print(
        f'INFO:     {client} - "{request.method} {request.path}{query} HTTP/1.1" {response.status} {phrase}',
        flush=True,
    )
    return response


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """KATO's SessionMiddleware: /sessions/{id}/… needs a live session, except GET
    /sessions/{id} and GET /sessions/{id}/exists."""
    parts = request.path.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "sessions" and parts[1] != "count":
        exempt = request.method == "GET" and (len(parts) == 2 or parts[2:] == ["exists"])
        if not exempt and not await request.app[KATO].redis.exists(PREFIX + parts[1]):
            body = example("session_delete_404.json")
            body["error"]["message"] = f"Session {parts[1]} not found or expired"
            body["error"]["session_id"] = parts[1]
            return web.json_response(body, status=404)
    return await handler(request)


async def create_session(request: web.Request) -> web.Response:
    kato = request.app[KATO]
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("node_id"), str):
        detail = [{"type": "missing", "loc": ["body", "node_id"], "msg": "Field required", "input": body}]
        return web.json_response({"detail": detail}, status=422)
    now = datetime.now(UTC)
    session_id = f"session-{uuid.uuid4().hex}-{int(now.timestamp() * 1000)}"
    ttl = body.get("ttl_seconds") or kato.session_ttl
    stored = example("redis_session_value.json")
    expires = now + timedelta(seconds=ttl)
    stored.update(
        session_id=session_id,
        node_id=body["node_id"],
        created_at=iso(now),
        last_accessed=iso(now),
        expires_at=iso(expires),
        ttl_seconds=ttl,
        metadata=body.get("metadata") or {},
    )
    stored["session_config"].update(
        session_id=session_id, node_id=body["node_id"], created_at=iso(now), updated_at=iso(now)
    )
    await kato.redis.execute_command("SETEX", PREFIX + session_id, ttl, json.dumps(stored))
    await kato.redis.sadd(INDEX, session_id)
    kato.locks.add(session_id)
    await kato.broadcast(
        "session.created", {"session_id": session_id, "node_id": body["node_id"], "created_at": iso(now)}
    )
    response = example("session_create_response.json")
    response.update(
        session_id=session_id,
        node_id=body["node_id"],
        created_at=iso(now, z=True),
        expires_at=iso(expires, z=True),
        ttl_seconds=body.get("ttl_seconds") or 3600,
        metadata=body.get("metadata") or {},
    )
    return web.json_response(response)


async def stored_session(request: web.Request) -> tuple[Kato, str, str | None]:
    kato = request.app[KATO]
    session_id = request.match_info["session_id"]
    return kato, session_id, await kato.redis.get(PREFIX + session_id)


async def delete_session(request: web.Request) -> web.Response:
    kato, session_id, raw = await stored_session(request)
    if raw is None:
        return web.json_response({"detail": f"Session {session_id} not found"}, status=404)
    await kato.redis.delete(PREFIX + session_id)
    await kato.redis.srem(INDEX, session_id)
    await kato.redis.delete(f"{PREFIX}node:{json.loads(raw)['node_id']}:active")
    kato.locks.discard(session_id)
    now = iso(datetime.now(UTC))
    await kato.broadcast(
        "session.destroyed", {"session_id": session_id, "destroyed_at": now, "reason": "explicit_delete"}
    )
    return web.json_response(
        {"status": "deleted", "session_id": session_id}, headers={"X-Session-ID": session_id}
    )


async def get_session(request: web.Request) -> web.Response:
    """Reading a session slides its TTL, which is why an exporter must never poll this."""
    kato, session_id, raw = await stored_session(request)
    if raw is None:
        return web.json_response({"detail": f"Session {session_id} not found or expired"}, status=404)
    stored = json.loads(raw)
    await kato.redis.expire(PREFIX + session_id, stored["ttl_seconds"])
    kato.locks.add(session_id)
    response = example("session_create_response.json")
    response.update(
        session_id=session_id,
        node_id=stored["node_id"],
        metadata=stored["metadata"],
        created_at=stored["created_at"].replace("+00:00", "Z"),
        expires_at=stored["expires_at"].replace("+00:00", "Z"),
        ttl_seconds=int(await kato.redis.ttl(PREFIX + session_id)),
    )
    return web.json_response(response)


async def session_count(request: web.Request) -> web.Response:
    kato = request.app[KATO]

    async def build() -> dict[str, int]:
        return {"active_session_count": await kato.count()}

    return web.json_response(await kato.cached("count", build))


async def metrics(request: web.Request) -> web.Response:
    kato = request.app[KATO]

    async def build() -> dict[str, Any]:
        body = example("metrics.json")
        body["timestamp"] = time.time()
        body["sessions"]["active"] = await kato.count()
        body["performance"]["total_requests"] = float(kato.requests)
        body["rates"] = {"requests_per_second": 0, "requests_per_minute": 0, "errors_per_minute": 0}
        body["processor_manager"].update(total_processors=0, processors=[])
        return body

    return web.json_response(await kato.cached("metrics", build))


async def health(request: web.Request) -> web.Response:
    kato = request.app[KATO]
    body = example("health.json")
    if kato.faults["health"] != "healthy":  # KATO's wording for a host CPU above 80 %
        body.update(status=kato.faults["health"], issues=["High CPU usage"])
    body.update(
        uptime_seconds=time.time() - kato.started,
        last_collection=kato.started,
        active_sessions=await kato.count(),
        timestamp=iso(datetime.now(UTC)),
    )
    return web.json_response(body)


async def status(request: web.Request) -> web.Response:
    kato = request.app[KATO]
    body = example("status.json")
    body["uptime_seconds"] = time.time() - kato.started
    body["sessions"].update(total_sessions=len(kato.locks), active_sessions=len(kato.locks))
    body["processors"].update(total_processors=0, processors=[])
    return web.json_response(body)


async def concurrency(request: web.Request) -> web.Response:
    body = example("concurrency.json")  # per worker; the stock container reports 1 worker
    body["timestamp"] = iso(datetime.now(UTC))
    return web.json_response(body)


async def stats(request: web.Request) -> web.Response:
    try:
        minutes = int(request.query.get("minutes", "10"))
    except ValueError:
        detail = [
            {
                "type": "int_parsing",
                "loc": ["query", "minutes"],
                "msg": "Input should be a valid integer",
                "input": request.query["minutes"],
            }
        ]
        return web.json_response({"detail": detail}, status=422)
    body = example("stats.json")
    body.update(time_range_minutes=minutes, timestamp=time.time())
    return web.json_response(body)


async def ws_events(request: web.Request) -> web.WebSocketResponse:
    kato = request.app[KATO]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    snapshot = example("ws_events_snapshot.json")
    snapshot["timestamp"] = datetime.now().isoformat()  # naive, as KATO sends it
    snapshot["data"]["active_sessions"] = await kato.count()
    await ws.send_str(json.dumps(snapshot))
    kato.sockets.add(ws)
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT and message.data == "ping":
                await ws.send_str("pong")
            elif message.type == WSMsgType.BINARY:
                break  # receive_text() fails and KATO's handler closes the socket
    finally:
        kato.sockets.discard(ws)
    return ws


async def ws_send(request: web.Request) -> web.Response:
    """Test-only: send ``{"frame": "..."}`` as it is to this worker's /ws/events sockets."""
    kato = request.app[KATO]
    frame = (await request.json())["frame"]
    for ws in list(kato.sockets):
        await ws.send_str(frame)
    return web.json_response({"sent_to": len(kato.sockets)})


async def set_faults(request: web.Request) -> web.Response:
    request.app[KATO].faults.update(await request.json())
    return web.json_response(request.app[KATO].faults)


def make_app(redis_url: str, session_ttl: int = 3600, cache_ttl: float = 5.0) -> web.Application:
    app = web.Application(middlewares=[access_log, session_middleware])
    app[KATO] = Kato(redis_url, session_ttl, cache_ttl)
    app.router.add_post("/sessions", create_session)
    app.router.add_get("/sessions/count", session_count)
    app.router.add_get("/sessions/{session_id}", get_session)
    app.router.add_delete("/sessions/{session_id}", delete_session)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/concurrency", concurrency)
    app.router.add_get("/stats", stats)
    app.router.add_get("/ws/events", ws_events)
    app.router.add_post("/_double/faults", set_faults)
    app.router.add_post("/_double/ws_send", ws_send)
    return app


def main() -> None:
    """python -m tests.kato_double --port 18000 --workers 4 --redis-url redis://127.0.0.1:6379/0"""
    import argparse
    import signal

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--session-ttl", type=int, default=3600)
    parser.add_argument("--cache-ttl", type=float, default=5.0)
    args = parser.parse_args()

    def worker() -> None:
        app = make_app(args.redis_url, args.session_ttl, args.cache_ttl)
        web.run_app(app, host=args.host, port=args.port, reuse_port=True, print=None, access_log=None)

    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            worker()
            os._exit(0)
        children.append(pid)

    def stop(*_: Any) -> None:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        os.waitpid(pid, 0)
