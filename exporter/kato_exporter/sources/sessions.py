"""KATO sessions: how many are live, and one event per change.

Two modes:

- ``redis`` (exact): Redis keyspace notifications on ``kato:session:session-*`` keys
  tell every create (``set`` of an unknown id), delete (``del``) and expiry
  (``expired``), across all KATO workers. Known ids are reconciled against KATO's
  index (``SMEMBERS`` plus pipelined ``EXISTS``) at start, after every reconnect and
  every few minutes; never ``KEYS``, never a ``SCAN`` on a timer.
- ``api`` (approximate, without Redis access): ``/ws/events`` for creates and
  deletes, ``/sessions/count`` for the number. KATO sends no event on expiry, and
  with several workers a socket sees only the events of the worker it landed on;
  its count includes expired sessions (the index is never pruned).

Yields, every tick or change::

    SessionsSample(mode="redis", active=3, index_stale=12,
                   events_total={"created": 40, "destroyed": 20, "expired": 17})

and hands each change to ``emit`` as ``SessionEvent(type="created", timestamp=…, active=3)``.
A lost connection marks the source down; it never looks like sessions ending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from kato_exporter.model import SessionEvent, SessionsSample
from kato_exporter.sources.kato import KatoApi, field
from kato_exporter.sources.runner import SourceError, first_contact

log = logging.getLogger(__name__)

EVENTS = ("created", "destroyed", "expired")
KEY_PREFIX = "kato:session:"
SESSION_KEYS = KEY_PREFIX + "session-*"
INDEX = KEY_PREFIX + "_active_index"
NOTIFY_FLAGS = "Kg$xe"  # keyspace channel; generic (del), string (set), expired, evicted
EXISTS_BATCH = 1000


class _Sessions:
    """What both modes share: counters, the change signal, the connection state."""

    name = "kato_sessions"
    mode = ""
    first_delay, max_delay = 0.1, 5.0  # reconnect backoff, seconds

    def __init__(
        self,
        emit: Callable[[SessionEvent], None],
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.timeout = 5.0
        self.changed = asyncio.Event()
        self.active = 0
        self.index_stale: int | None = None
        self.events_total = dict.fromkeys(EVENTS, 0)
        self._emit = emit
        self._clock = clock
        self._connected = False
        self._ready = asyncio.Event()
        self._problem = "not connected yet"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def collect(self) -> SessionsSample:
        await first_contact(self._ready)
        if not self._connected:
            raise SourceError(self._problem)
        return SessionsSample(self.mode, self.active, dict(self.events_total), self.index_stale)

    def _record(self, event: str) -> None:
        self.events_total[event] += 1
        self._emit(SessionEvent(event, self._clock(), self.active))
        self.changed.set()

    def _set_state(self, connected: bool, problem: str = "") -> None:
        if connected and not self._connected:
            log.info("sessions: following %s", self._describe())
        elif not connected and self._connected:
            log.warning("sessions: lost %s: %s", self._describe(), problem)
        self._connected = connected
        self._problem = problem
        self._ready.set()
        self.changed.set()

    def _describe(self) -> str:
        raise NotImplementedError

    async def _session(self) -> str:
        """Connect and follow until the connection is lost; return why, in one line."""
        raise NotImplementedError

    async def _run(self) -> None:
        """Reconnect for ever, with exponential backoff and ±20 % jitter."""
        delay = self.first_delay
        while True:
            problem = await self._session()
            if self._connected:
                delay = self.first_delay
            self._set_state(False, problem)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.max_delay)


def redact(url: str) -> str:
    """The URL without its password, fit for logs."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


class RedisSessions(_Sessions):
    """Exact sessions from Redis keyspace notifications."""

    mode = "redis"

    def __init__(
        self,
        redis_url: str,
        emit: Callable[[SessionEvent], None],
        *,
        reconcile_interval: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(emit, clock=clock)
        self._url = redis_url
        self._reconcile_interval = reconcile_interval
        self.known: set[str] = set()
        self._touched: set[str] | None = None  # ids with events while a reconcile reads
        self._marker = f"kato-exporter:reconcile:{uuid.uuid4().hex}"

    def _describe(self) -> str:
        return f"Redis keyspace events at {redact(self._url)}"

    async def _session(self) -> str:
        client = aioredis.from_url(
            self._url, decode_responses=True, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        try:
            await self._follow(client)
            return "the subscription ended"
        except (TimeoutError, RedisError, OSError, SourceError) as exc:
            return f"Redis at {redact(self._url)}: {exc}"
        finally:
            await client.aclose()

    async def _follow(self, client: aioredis.Redis) -> None:
        db = client.connection_pool.connection_kwargs.get("db", 0)
        await self._enable_notifications(client, db)
        channel_prefix = f"__keyspace@{db}__:{KEY_PREFIX}"
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(f"__keyspace@{db}__:{SESSION_KEYS}")
            await pubsub.subscribe(self._marker)
            await self._reconcile(client, pubsub, channel_prefix)
            self._set_state(True)
            loop = asyncio.get_running_loop()
            next_reconcile = loop.time() + self._reconcile_interval
            next_ping = loop.time() + 5
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    self._on_message(message, channel_prefix)
                now = loop.time()
                if now >= next_reconcile:
                    await self._reconcile(client, pubsub, channel_prefix)
                    next_reconcile = now + self._reconcile_interval
                if now >= next_ping:  # a silent network would otherwise go unnoticed
                    await client.ping()
                    next_ping = now + 5
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _enable_notifications(self, client: aioredis.Redis, db: int) -> None:
        """Make sure Redis sends the keyspace events we follow, turning them on if allowed."""
        try:
            reply = await client.config_get("notify-keyspace-events")
            current = str(reply.get("notify-keyspace-events") or "")
        except ResponseError as exc:  # CONFIG renamed away or denied (managed Redis, ACLs)
            await self._probe_notifications(client, db, f"CONFIG is not allowed ({exc})")
            return
        missing = "".join(f for f in NOTIFY_FLAGS if f not in current and not (f != "K" and "A" in current))
        if not missing:
            return
        wanted = current + missing
        try:
            await client.config_set("notify-keyspace-events", wanted)
        except ResponseError as exc:
            raise SourceError(
                f"keyspace notifications are off (notify-keyspace-events={current!r}) and CONFIG SET "
                f"is not allowed ({exc}); set notify-keyspace-events {NOTIFY_FLAGS} in redis.conf"
            ) from None
        log.info(
            "sessions: turned on Redis keyspace notifications: notify-keyspace-events=%r (was %r)",
            wanted,
            current,
        )

    async def _probe_notifications(self, client: aioredis.Redis, db: int, why: str) -> None:
        """Without CONFIG, see for ourselves: set a short-lived key of our own and wait for its event."""
        key = f"kato-exporter:probe:{uuid.uuid4().hex}"
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(f"__keyspace@{db}__:{key}")
            try:
                await client.set(key, "1", px=2000)
            except ResponseError as exc:
                log.warning(
                    "sessions: %s and a probe key cannot be written (%s): cannot check that "
                    "notify-keyspace-events includes %s",
                    why,
                    exc,
                    NOTIFY_FLAGS,
                )
                return
            deadline = asyncio.get_running_loop().time() + 2
            while asyncio.get_running_loop().time() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None and message["data"] == "set":
                    return
            raise SourceError(
                f"keyspace notifications are off and {why}: set notify-keyspace-events "
                f"{NOTIFY_FLAGS} in redis.conf"
            )
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_message(self, message: dict[str, Any], channel_prefix: str) -> None:
        if message["type"] != "pmessage":
            return
        session_id = message["channel"][len(channel_prefix) :]
        if self._touched is not None:
            self._touched.add(session_id)
        action = message["data"]
        if action == "set" and session_id not in self.known:
            self.known.add(session_id)
            self.active = len(self.known)
            self._record("created")
        elif action == "del" and session_id in self.known:
            self.known.discard(session_id)
            self.active = len(self.known)
            self._record("destroyed")
        elif action in ("expired", "evicted") and session_id in self.known:
            self.known.discard(session_id)
            self.active = len(self.known)
            if self.index_stale is not None:
                self.index_stale += 1  # KATO never removes expired sessions from its index
            self._record("expired")

    async def _reconcile(self, client: aioredis.Redis, pubsub: Any, channel_prefix: str) -> None:
        """Make ``known`` match Redis, without inventing events for what was not seen.

        Events that arrive while the index is read are applied as usual, and their
        ids are left as the events say. A marker published after the reads comes
        back on the subscription behind every event that happened before them.
        """
        self._touched = set()
        ids = [str(member) for member in await client.smembers(INDEX)]
        live: set[str] = set()
        for start in range(0, len(ids), EXISTS_BATCH):
            batch = ids[start : start + EXISTS_BATCH]
            async with client.pipeline(transaction=False) as pipe:
                for session_id in batch:
                    pipe.exists(KEY_PREFIX + session_id)
                found = await pipe.execute()
            live.update(session_id for session_id, exists in zip(batch, found, strict=True) if exists)
        token = uuid.uuid4().hex
        await client.publish(self._marker, token)
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message" and message["data"] == token:
                break
            if message is not None:
                self._on_message(message, channel_prefix)
            if asyncio.get_running_loop().time() > deadline:
                raise SourceError("the reconcile marker did not come back on the subscription")
        touched, self._touched = self._touched, None
        appeared = live - self.known - touched
        vanished = self.known - live - touched
        if appeared or vanished:
            log.info(
                "sessions: reconciled with KATO's index: %d live (%d unseen starts, %d unseen ends)",
                len(live),
                len(appeared),
                len(vanished),
            )
        self.known |= appeared
        self.known -= vanished
        self.active = len(self.known)
        self.index_stale = len(ids) - len(live)


class ApiSessions(_Sessions):
    """KATO's own count (drifts up on expiry) and /ws/events (misses expiries and,
    with several workers, the events of the workers this socket is not on)."""

    mode = "api"
    first_delay, max_delay = 0.5, 30.0

    def __init__(
        self,
        api: KatoApi,
        emit: Callable[[SessionEvent], None],
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(emit, interval=interval, clock=clock)
        self._api = api
        self._last_event = -1e9  # monotonic time of the last WebSocket event

    def _describe(self) -> str:
        return f"{self._api.url}/ws/events (counts may drift, expiries and other workers' events are missed)"

    async def collect(self) -> SessionsSample:
        # KATO caches its count 5 s: right after an event it would undo the event's change.
        if time.monotonic() - self._last_event > self.interval + 5:
            with contextlib.suppress(SourceError):
                count = await self._api.get("/sessions/count", max_age=self.interval)  # the kato source's
                self.active = field(count, "/sessions/count", "active_session_count", int)
        return await super().collect()

    async def _session(self) -> str:
        try:
            async with self._api.session.ws_connect(self._api.url + "/ws/events", heartbeat=20) as ws:
                await self._follow(ws)
            return "KATO closed /ws/events"
        except (TimeoutError, aiohttp.ClientError, SourceError, ValueError) as exc:
            return f"{self._api.url}/ws/events: {exc or type(exc).__name__}"

    async def _follow(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT or message.data == "pong":
                continue
            frame = json.loads(message.data)
            kind = frame.get("event_type") if isinstance(frame, dict) else None
            if kind == "state.snapshot":
                self.active = field(frame.get("data"), "/ws/events", "active_sessions", int)
                self._set_state(True)
            elif kind in ("session.created", "session.destroyed"):
                self._last_event = time.monotonic()
                created = kind == "session.created"
                self.active = max(0, self.active + (1 if created else -1))
                self._record("created" if created else "destroyed")
