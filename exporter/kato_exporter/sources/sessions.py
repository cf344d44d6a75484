"""KATO sessions: how many are live, and one event per change.

Two modes:

- ``redis`` (exact): Redis keyspace notifications on ``kato:session:session-*`` keys
  tell every create (``set`` of an unknown id), delete (``del``), expiry (``expired``)
  and eviction (``evicted``: Redis out of ``maxmemory``), across all KATO workers. Known
  ids are reconciled against KATO's index (``SSCAN`` batches plus pipelined ``EXISTS``) at
  start, after every reconnect and every few minutes; never ``KEYS``, never a ``SCAN`` on
  a timer. What a reconcile finds that no event announced (the subscription was lost, or
  Redis dropped it for falling behind) is counted as missed, never as events.
- ``api`` (approximate, without Redis access): ``/ws/events`` for creates and
  deletes, ``/sessions/count`` for the number. KATO sends no event on expiry, and
  with several workers a socket sees only the events of the worker it landed on;
  its count includes expired sessions (the index is never pruned).

Yields, every tick or change::

    SessionsSample(mode="redis", active=3, index_stale=12,
                   events_total={"created": 40, "destroyed": 20, "expired": 17, "evicted": 0})

and hands each change to ``emit`` as ``SessionEvent(type="created", timestamp=…, active=3)``.
A lost connection marks the source down; it never looks like sessions ending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from kato_exporter.config import redact
from kato_exporter.model import SESSION_EVENTS, SessionEvent, SessionsSample
from kato_exporter.sources.kato import KatoApi, field
from kato_exporter.supervision import Backoff, Link, SourceError, reason

log = logging.getLogger(__name__)

KEY_PREFIX = "kato:session:"
SESSION_KEYS = KEY_PREFIX + "session-*"
INDEX = KEY_PREFIX + "_active_index"
NOTIFY_FLAGS = "Kg$xe"  # keyspace channel; generic (del), string (set), expired, evicted
SCAN_BATCH = 1000  # index members per SSCAN, each checked with one pipeline of EXISTS
HEARTBEAT = 5.0  # seconds between round trips through the subscription
YIELD_EVERY = 100  # messages read before the other tasks get their turn (about 2 ms)


class _Sessions:
    """What both modes share: counters, the change signal, the connection state."""

    name = "kato_sessions"
    mode = ""
    first_delay, max_delay = 0.1, 5.0  # reconnect backoff, seconds

    def __init__(
        self,
        emit: Callable[[SessionEvent], None],
        what: str,
        expected: tuple[type[Exception], ...],
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.timeout = 5.0
        self.changed = asyncio.Event()
        self.active = 0
        self.index_stale: int | None = None
        self.events_total = dict.fromkeys(SESSION_EVENTS, 0)
        self.missed_total: dict[str, int] | None = None
        self._emit = emit
        self._clock = clock
        backoff = Backoff(self.first_delay, self.max_delay)
        self._link = Link(what, self._session, backoff, changed=self.changed, expected=expected)

    async def start(self) -> None:
        self._link.start()

    async def close(self) -> None:
        await self._link.close()

    async def collect(self) -> SessionsSample:
        await self._link.report()
        missed = dict(self.missed_total) if self.missed_total is not None else None
        return SessionsSample(self.mode, self.active, dict(self.events_total), self.index_stale, missed)

    def _record(self, event: str) -> None:
        self.events_total[event] += 1
        self._emit(SessionEvent(event, self._clock(), self.active))
        self.changed.set()

    def _connected(self) -> None:
        if not self._link.ready.is_set():
            log.info("sessions: following %s", self._link.what)
        self._link.connected()

    async def _session(self) -> None:
        """Connect and follow until the connection ends; raise why it did."""
        raise NotImplementedError


class RedisSessions(_Sessions):
    """Exact sessions from Redis keyspace notifications."""

    mode = "redis"

    def __init__(
        self,
        redis_url: str,
        emit: Callable[[SessionEvent], None],
        *,
        reconcile_interval: float = 300.0,
        password: str | None = None,
        configure: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(emit, f"Redis keyspace events at {redact(redis_url)}", (RedisError,), clock=clock)
        self._url = redis_url
        self._password = password
        self._configure = configure
        self._reconcile_interval = reconcile_interval
        self.known: set[str] = set()
        self._missed = {"created": 0, "ended": 0}
        self.missed_total = self._missed
        self._reconciled = False  # the first reconcile finds what was there before us: not missed
        self._touched: set[str] | None = None  # ids with events while a reconcile reads
        self._marker = f"kato-exporter:reconcile:{uuid.uuid4().hex}"

    async def _session(self) -> None:
        client = aioredis.from_url(
            self._url,
            decode_responses=True,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            socket_keepalive=True,  # liveness is our own round trip (no per-message health check)
            **({"password": self._password} if self._password else {}),
        )
        try:
            await self._follow(client)
        finally:
            await client.aclose()

    async def _follow(self, client: aioredis.Redis) -> None:
        db = client.connection_pool.connection_kwargs.get("db", 0)
        await self._enable_notifications(client, db)
        run_id = await self._run_id(client)
        try:
            await self._subscribed(client, db)
        except RedisConnectionError as exc:
            raise SourceError(await self._why_lost(client, run_id, exc)) from None

    async def _why_lost(self, client: aioredis.Redis, run_id: str | None, exc: Exception) -> str:
        """Why the subscription ended. A Redis that is still the same one (same run_id) has
        dropped us: a subscriber further behind than its ``client-output-buffer-limit pubsub``
        is disconnected (or somebody ran CLIENT KILL)."""
        try:
            now = await self._run_id(client)
            if run_id is None or now != run_id:
                return reason(exc) if run_id is None else f"Redis restarted ({reason(exc)})"
            limits = await client.config_get("client-output-buffer-limit")
        except RedisError:
            return reason(exc)
        limit = str(limits.get("client-output-buffer-limit", ""))
        pubsub = limit.split("pubsub ")[1] if "pubsub " in limit else "?"
        return (
            "Redis dropped the subscription, most likely because this exporter fell further behind "
            f"than its client-output-buffer-limit pubsub ({pubsub}: hard bytes, soft bytes, soft "
            "seconds) allows; what was missed is counted in kato_session_events_missed_total"
        )

    @staticmethod
    async def _run_id(client: aioredis.Redis) -> str | None:
        """This Redis' run_id (a new one at each start), or None where INFO is denied."""
        try:
            return str((await client.info("server")).get("run_id"))
        except ResponseError:
            return None

    async def _subscribed(self, client: aioredis.Redis, db: int) -> None:
        channel_prefix = f"__keyspace@{db}__:{KEY_PREFIX}"
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(f"__keyspace@{db}__:{SESSION_KEYS}")
            await pubsub.subscribe(self._marker)
            await self._reconcile(client, pubsub, channel_prefix, after_gap=True)
            self._connected()
            loop = asyncio.get_running_loop()
            next_reconcile = loop.time() + self._reconcile_interval
            while True:
                await self._receive(pubsub, HEARTBEAT, channel_prefix)
                if loop.time() >= next_reconcile:
                    await self._reconcile(client, pubsub, channel_prefix)
                    next_reconcile = loop.time() + self._reconcile_interval
                else:  # a half-open subscription would otherwise go unnoticed
                    await self._round_trip(client, pubsub, channel_prefix)
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
        if not self._configure:
            raise SourceError(
                f"keyspace notifications are off (notify-keyspace-events={current!r}) and "
                f"--no-kato.redis-configure leaves CONFIG alone: set notify-keyspace-events {wanted} "
                "in redis.conf (or CONFIG SET it)"
            )
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

    async def _receive(
        self, pubsub: Any, seconds: float, channel_prefix: str, token: str | None = None
    ) -> tuple[float | None, bool]:
        """Apply the subscription's messages for ``seconds``, or until our own ``token`` comes
        back on it: the event loop's time of the last message (None: none came), and whether the
        token did. One timer for the whole wait, not one a message (redis-py's own cost the most);
        every YIELD_EVERY messages the other tasks (/metrics) get their turn, for a backlog is
        read without ever waiting."""
        count, last = 0, None
        clock = asyncio.get_running_loop().time
        try:
            async with asyncio.timeout(seconds):
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    count, last = count + 1, clock()
                    if message is None:  # a subscription's confirmation
                        continue
                    if token is not None and message["type"] == "message" and message["data"] == token:
                        return last, True
                    self._on_message(message, channel_prefix)
                    if count % YIELD_EVERY == 0:  # only once the message is applied: the timer may
                        await asyncio.sleep(0)  # fire here, and get_message is where it may cut
        except TimeoutError:
            return last, False

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
                self.index_stale += 1  # KATO removes only deleted sessions from its index
            self._record(action)

    async def _reconcile(
        self, client: aioredis.Redis, pubsub: Any, channel_prefix: str, after_gap: bool = False
    ) -> None:
        """Make ``known`` match Redis, without inventing events for what was not seen, and count
        what no event announced.

        KATO never prunes its index, so it is read in ``SSCAN`` batches, each checked with
        pipelined ``EXISTS``: no command blocks Redis for long, whatever the index's size.
        Events that arrive meanwhile are applied as usual, and their ids are left as the
        events say; the round trip at the end sees every event that came before it.

        ``after_gap``: the first reconcile of a new connection. Sessions that started and
        expired while no connection was there left nothing but their id in the index: the
        index's expired ids that neither an event nor a session we knew accounts for.
        """
        self._touched = set()
        live: set[str] = set()
        cursor = 0
        while True:
            cursor, members = await client.sscan(INDEX, cursor, count=SCAN_BATCH)
            batch = [str(member) for member in members]
            if batch:
                async with client.pipeline(transaction=False) as pipe:
                    for session_id in batch:
                        pipe.exists(KEY_PREFIX + session_id)
                    found = await pipe.execute()
                live.update(session_id for session_id, exists in zip(batch, found, strict=True) if exists)
            while (
                message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
            ) is not None:
                self._on_message(message, channel_prefix)  # keep Redis' buffer for us short
            await asyncio.sleep(0)  # and /metrics answered
            if cursor == 0:
                break
        indexed = await self._round_trip(client, pubsub, channel_prefix)
        touched, self._touched = self._touched, None
        appeared = live - self.known - touched
        vanished = self.known - live - touched
        self.known |= appeared
        self.known -= vanished
        self.active = len(self.known)
        stale, self.index_stale = self.index_stale, max(0, indexed - self.active)
        unseen = 0  # sessions that came and went unseen
        if after_gap and self._reconciled and stale is not None:
            unseen = max(0, self.index_stale - stale - await self._indexed(client, vanished))
        if self._reconciled and (appeared or vanished or unseen):
            log.warning(
                "sessions: reconciled with KATO's index: %d live; no event announced %d starts, "
                "%d ends and %d sessions that started and expired meanwhile (counted in "
                "kato_session_events_missed_total)",
                len(live),
                len(appeared),
                len(vanished),
                unseen,
            )
            self._missed["created"] += len(appeared) + unseen
            self._missed["ended"] += len(vanished) + unseen
        self._reconciled = True

    @staticmethod
    async def _indexed(client: aioredis.Redis, ids: set[str]) -> int:
        """How many of ``ids`` are in KATO's index (a session that expired stays there; a
        deleted one does not)."""
        found = 0
        members = list(ids)
        for start in range(0, len(members), SCAN_BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for session_id in members[start : start + SCAN_BATCH]:
                    pipe.sismember(INDEX, session_id)
                found += sum(bool(n) for n in await pipe.execute())
        return found

    async def _apply(self, pubsub: Any, channel_prefix: str, silence: float, token: str) -> bool:
        """Apply the subscription's messages until our own ``token`` comes back on it: then
        True; False once it has been silent for ``silence`` seconds. A subscription that is
        delivering is alive, however far behind it is."""
        clock = asyncio.get_running_loop().time
        quiet_since: float | None = clock()
        while quiet_since is not None:
            quiet_since, seen = await self._receive(
                pubsub, quiet_since + silence - clock(), channel_prefix, token
            )
            if seen:
                return True
        return False

    async def _round_trip(self, client: aioredis.Redis, pubsub: Any, channel_prefix: str) -> int:
        """Publish a token on our own channel and apply every message until it comes back:
        the subscription is alive, and every event before the token has been seen. Returns
        the index's size at the token (one MULTI: nothing happens between the two)."""
        token = uuid.uuid4().hex
        async with client.pipeline(transaction=True) as pipe:
            pipe.scard(INDEX)
            pipe.publish(self._marker, token)
            indexed, _ = await pipe.execute()
        if not await self._apply(pubsub, channel_prefix, self.timeout, token):
            raise SourceError(
                f"the subscription is silent: nothing came on it for {self.timeout:g}s, not even our "
                "own message"
            )
        return int(indexed)


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
        super().__init__(
            emit,
            f"{api.url}/ws/events (counts may drift, expiries and other workers' events are missed)",
            (aiohttp.ClientError, ValueError),
            interval=interval,
            clock=clock,
        )
        self._api = api
        self._last_event = -1e9  # monotonic time of the last WebSocket event

    async def collect(self) -> SessionsSample:
        # KATO caches its count 5 s: right after an event it would undo the event's change.
        if time.monotonic() - self._last_event > self.interval + 5:
            with contextlib.suppress(SourceError):
                count = await self._api.get("/sessions/count", max_age=self.interval)  # the kato source's
                self.active = field(count, "/sessions/count", "active_session_count", int)
        return await super().collect()

    async def _session(self) -> None:
        async with self._api.session.ws_connect(self._api.url + "/ws/events", heartbeat=20) as ws:
            await self._follow(ws)

    async def _follow(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT or message.data == "pong":
                continue
            frame = json.loads(message.data)
            kind = frame.get("event_type") if isinstance(frame, dict) else None
            if kind == "state.snapshot":
                self.active = field(frame.get("data"), "/ws/events", "active_sessions", int)
                self._connected()
            elif kind in ("session.created", "session.destroyed"):
                self._last_event = time.monotonic()
                created = kind == "session.created"
                self.active = max(0, self.active + (1 if created else -1))
                self._record("created" if created else "destroyed")
