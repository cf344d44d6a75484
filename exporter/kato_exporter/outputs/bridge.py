"""The old KATO dashboard page's WebSocket (``/ws``) and REST calls, served from the hub.

The page's protocol (``docs/legacy-protocol.md``), with the old backend's faults fixed:

- ``subscribe`` adds to a client's set and ``unsubscribe`` removes; an unknown name is answered
  with ``{"type":"error",...}`` and changes nothing; a client that never subscribed gets
  everything; the text ``ping`` is answered with ``heartbeat``.
- A subscribe that adds something sends the current state of what it added at once; one that
  adds nothing sends nothing (the page re-sends its subscribe on every render). A new client
  gets its first update, and the alerts firing, with the next tick, so that a subscribe sent
  right after connecting decides what it gets.
- ``realtime_update`` every tick carries only the parts a client subscribed to, and of those
  only the ones that changed since that client's last message; none changed, nothing sent.
- ``session_event`` for each session event and ``system_alert`` / ``system_alert_resolved`` for
  each alert of Alertmanager's webhook, as the hub publishes them.

Fan-out: each part is encoded once per tick, each distinct message once, and the same frame is
queued for every client that needs it. Compression (permessage-deflate) is negotiated without
server context takeover, so every message is compressed alone, once, not once per client. Each
client has a bounded queue and its own writer; a client whose queue stays full is closed with
1013 and never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from aiohttp.abc import AbstractStreamWriter

from kato_exporter.config import BridgeConfig
from kato_exporter.hub import Demand, Hub, Snapshot
from kato_exporter.model import (
    AlertNotice,
    ContainersSample,
    HostSample,
    KatoSample,
    RequestCounts,
    SessionEvent,
    SessionsSample,
)
from kato_exporter.outputs.rates import Rates

log = logging.getLogger(__name__)

PARTS = ("metrics", "containers", "sessions")  # parts of realtime_update
NAMES = (*PARTS, "session_events", "system_alerts")
PART_SET = frozenset(PARTS)
ERROR_WINDOW = 300.0  # the 5xx ratio of the metrics part is over the last 5 minutes
TRY_AGAIN_LATER = 1013
FAN_OUT_BATCH = 50  # clients woken at a time on a tick: a request waits for one batch, not for all
MB = 1024 * 1024


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"))


# --- the parts, from a snapshot ---------------------------------------------------------------


class RequestWindow:
    """Requests and 5xx responses seen in the access log, with the ratio over the last 5 minutes."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int, int]] = deque()  # (when, total, 5xx)

    def add(self, counts: RequestCounts, now: float) -> None:
        total = sum(counts.by_method_code.values())
        errors = sum(n for (_, code), n in counts.by_method_code.items() if code.startswith("5"))
        self._samples.append((now, total, errors))
        while len(self._samples) > 1 and self._samples[1][0] <= now - ERROR_WINDOW:
            self._samples.popleft()

    @property
    def total(self) -> int | None:
        return self._samples[-1][1] if self._samples else None

    @property
    def error_ratio(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (_, total0, errors0), (_, total1, errors1) = self._samples[0], self._samples[-1]
        return (errors1 - errors0) / (total1 - total0) if total1 > total0 else 0.0


def metrics_part(kato: KatoSample | None, sessions: SessionsSample | None, requests: RequestWindow) -> Any:
    """KATO's /metrics document as KATO sent it, with ``sessions.active`` (exact, from Redis),
    ``performance.total_requests`` and ``performance.error_rate`` (from the access log)
    replaced by the exporter's figures."""
    if kato is None or not kato.metrics:
        return {"error": "KATO's /metrics cannot be read"}
    document = copy.deepcopy(dict(kato.metrics))
    if sessions is not None and isinstance(document.get("sessions"), dict):
        document["sessions"]["active"] = sessions.active
    if requests.total is not None and isinstance(document.get("performance"), dict):
        document["performance"]["total_requests"] = float(requests.total)
        document["performance"]["error_rate"] = requests.error_ratio
    return document


def _mb(n: int) -> float:
    return round(n / MB, 2)


def containers_part(sample: ContainersSample | None, host: HostSample | None, at: float, rates: Rates) -> Any:
    """The old shape: per container and aggregated, CPU in percent of one core."""
    if sample is None:
        return {"error": "Failed to fetch container stats"}
    stamp = iso(at)
    rows: list[dict[str, Any]] = []
    for c in sample.containers:
        u = c.usage
        cpu = rates(c.meta.id, u.cpu_seconds, at) if u is not None else None
        usage = u.memory_working_set_bytes if u is not None else 0
        limit = (u.memory_limit_bytes if u is not None else None) or (host.memory_total_bytes if host else 0)
        # as docker stats (the old backend) shows a container on another's network: no traffic of its own
        own = c.meta.own_network
        rx, tx = (u.network_receive_bytes, u.network_transmit_bytes) if u is not None and own else (0, 0)
        read, write = (u.block_read_bytes, u.block_write_bytes) if u is not None else (0, 0)
        rows.append(
            {
                "name": c.meta.name,
                "status": c.meta.state,
                "cpu": round((cpu or 0.0) * 100, 2),
                "memory": {
                    "usage_bytes": usage,
                    "limit_bytes": limit,
                    "usage_mb": _mb(usage),
                    "limit_mb": _mb(limit),
                    "usage_percent": round(usage / limit * 100, 2) if limit else 0.0,
                },
                "network": {"rx_bytes": rx, "tx_bytes": tx, "rx_mb": _mb(rx), "tx_mb": _mb(tx)},
                "block_io": {
                    "read_bytes": read,
                    "write_bytes": write,
                    "read_mb": _mb(read),
                    "write_mb": _mb(write),
                },
                "timestamp": stamp,
            }
        )
    running = {c.meta.id for c in sample.containers if c.usage is not None}
    rates.keep(lambda key: key in running)
    memory = sum(r["memory"]["usage_bytes"] for r in rows)
    limit = sum(r["memory"]["limit_bytes"] for r in rows)
    return {
        "containers": rows,
        "aggregated": {
            "total_cpu_percent": round(sum(r["cpu"] for r in rows), 2),
            "total_memory_mb": _mb(memory),
            "total_memory_limit_mb": _mb(limit),
            "total_memory_percent": round(memory / limit * 100, 2) if limit else 0.0,
            "container_count": len(rows),
            "timestamp": stamp,
        },
    }


def sessions_part(sessions: SessionsSample | None, kato: KatoSample | None) -> Any:
    """``active_count``: live sessions (exact in redis mode); ``total_count``: KATO's own count,
    the size of its index, which keeps expired sessions."""
    if sessions is None:
        return {"error": "sessions cannot be read"}
    return {
        "active_count": sessions.active,
        "total_count": kato.sessions_reported if kato else sessions.active,
    }


# --- events -------------------------------------------------------------------------------


def session_message(event: SessionEvent, since_last: float) -> str:
    delta = 1 if event.type == "created" else -1
    message: dict[str, Any] = {
        "type": "session_event",
        "event_type": "session_created" if delta > 0 else "session_destroyed",
        "timestamp": iso(event.timestamp),
        "data": {
            "current_count": event.active,
            "previous_count": event.active - delta,
            "delta": delta,
            "time_since_last_event": round(since_last, 3),
        },
    }
    if event.type in ("expired", "evicted"):
        message["reason"] = event.type
    return dumps(message)


PERCENT_TYPES = {"high_cpu", "high_memory"}  # the page shows these in percent; high_error_rate as a ratio


def _number(text: str | None, legacy_type: str) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    if value is not None and legacy_type in PERCENT_TYPES:
        value = round(value * 100, 2)
    return value


def legacy_alert(notice: AlertNotice) -> dict[str, Any]:
    """One alert as the page knows it: ``legacy_type`` → ``type``, ``critical`` → ``error``."""
    alert: dict[str, Any] = {
        "level": "error" if notice.severity == "critical" else "warning",
        "type": notice.legacy_type or notice.name,
        "message": notice.annotations.get("summary", notice.name),
        "value": _number(notice.annotations.get("value"), notice.legacy_type),
        "threshold": _number(notice.annotations.get("threshold"), notice.legacy_type),
    }
    if "name" in notice.labels:
        alert["container_name"] = notice.labels["name"]
        alert["status"] = notice.status
    return alert


def alert_message(alerts: list[dict[str, Any]], resolved: bool, now: float) -> str:
    return dumps(
        {
            "type": "system_alert_resolved" if resolved else "system_alert",
            "id": f"alert_{int(now * 1000)}",
            "timestamp": iso(now),
            "alerts": alerts,
        }
    )


def alert_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


# --- frames -------------------------------------------------------------------------------


def text_frame(message: str, wbits: int) -> bytes:
    """``message`` as one unmasked text frame, compressed alone with a ``wbits`` window when
    ``wbits`` is set (RFC 7692: the sync flush's trailing 00 00 ff ff is left off)."""
    payload = message.encode()
    first = 0x81  # FIN, text
    if wbits:
        deflate = zlib.compressobj(1, zlib.DEFLATED, -wbits)
        payload = (deflate.compress(payload) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4]
        first |= 0x40  # RSV1: compressed
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", first, size) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def without_server_takeover(request: web.Request) -> web.BaseRequest:
    """``request`` with each permessage-deflate offer asking for server_no_context_takeover,
    which RFC 7692 lets a server answer with anyway: then one compressed frame of a message is
    right for every client."""
    offer = request.headers.get(hdrs.SEC_WEBSOCKET_EXTENSIONS)
    if not offer:
        return request
    offers = [
        f"{o}; server_no_context_takeover"
        if o.strip().startswith("permessage-deflate") and "server_no_context_takeover" not in o
        else o
        for o in offer.split(",")
    ]
    headers = request.headers.copy()
    headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] = ",".join(offers)
    return request.clone(headers=headers)


# --- clients ------------------------------------------------------------------------------


@dataclass(eq=False)
class Client:
    ws: web.WebSocketResponse
    queue: asyncio.Queue[bytes]  # frames
    transport: asyncio.Transport | None = None
    wbits: int = 0  # the deflate window negotiated; 0: frames go uncompressed
    subscriptions: set[str] | None = None  # None: never subscribed, gets everything
    sent: dict[str, int] = field(default_factory=dict)  # part -> version last sent
    greeted: bool = False  # has been sent the alerts firing (when it wants alerts)
    full_since: float | None = None

    def put(self, message: str, now: float, frames: dict[tuple[str, int], bytes] | None = None) -> bool:
        """Send ``message``'s frame, made once per window size in ``frames`` when given: at once
        when nothing waits before it, else through the queue; False (and the stall clock running)
        when the queue is full."""
        if self.queue.full():
            if self.full_since is None:
                self.full_since = now
            return False
        frames = {} if frames is None else frames
        key = (message, self.wbits)
        if key not in frames:
            frames[key] = text_frame(message, self.wbits)
        frame = frames[key]
        self.full_since = None
        transport = self.open_transport()
        if self.queue.empty() and transport is not None and not transport.get_write_buffer_size():
            transport.write(frame)  # the writer is idle and the socket empty: no task to wake
        else:
            self.queue.put_nowait(frame)
        return True

    def open_transport(self) -> asyncio.Transport | None:
        """The client's transport, while frames may still be written to it."""
        transport = self.transport
        closed = transport is None or transport.is_closing() or self.ws.closed
        return None if closed else transport


class Bridge:
    def __init__(self, hub: Hub, settings: BridgeConfig, kato_url: str = "") -> None:
        self._hub, self.settings, self.kato_url = hub, settings, kato_url  # set when KATO is found
        self.clients: set[Client] = set()
        self._enabled = {
            "metrics",
            "sessions",
            *(["containers"] if settings.container_stats else []),
            *(["session_events"] if settings.session_events else []),
            *(["system_alerts"] if settings.system_alerts else []),
        }
        self._versions: dict[str, int] = {}
        self._made: dict[str, tuple[Any, Any]] = {}  # part -> (its sources' collection times, document)
        self._encoded_from: dict[str, Any] = {}  # part -> the document its JSON was made from
        self._snapshot = Snapshot()
        self._encoded: dict[str, str] = {}  # part -> its JSON
        self._requests = RequestWindow()
        self._rates = Rates()
        self._firing: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}  # from the webhook
        self._last_event = time.time()
        self._events: asyncio.Queue[Any] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()

    # --- lifetime ---

    async def start(self) -> None:
        self._events = self._hub.subscribe()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._tasks = [
            asyncio.create_task(self._supervised(self._tick, "ticks"), name="bridge ticks"),
            asyncio.create_task(self._supervised(self._relay, "events"), name="bridge events"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        going = (self._hang_up(c, WSCloseCode.GOING_AWAY, b"server shutdown") for c in list(self.clients))
        await asyncio.gather(*going, *self._closing, return_exceptions=True)
        if self._events is not None:
            self._hub.unsubscribe(self._events)
        if self._http is not None:
            await self._http.close()

    async def _supervised(self, run: Any, what: str) -> None:
        """Run ``run`` for ever: a failure is logged with its traceback and it starts again."""
        while True:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bridge %s failed; starting again in 1 s", what)
                await asyncio.sleep(1.0)

    # --- what each client needs ---

    def wanted(self, client: Client) -> set[str]:
        if client.subscriptions is None or not self.settings.selective_subscriptions:
            return set(self._enabled)
        return client.subscriptions & self._enabled

    def parts(self, snapshot: Snapshot) -> dict[str, Any]:
        """Each part as a document, made again only when a source it comes from collected again
        (so that rates are taken between collections, however often this is called)."""
        values, at = snapshot.values, snapshot.collected_at
        made = {
            "metrics": (("kato", "kato_sessions", "kato_logs"), self._metrics),
            "containers": (("containers", "host"), self._containers),
            "sessions": (
                ("kato_sessions", "kato"),
                lambda: sessions_part(values.get("kato_sessions"), values.get("kato")),
            ),
        }
        self._snapshot = snapshot
        documents = {}
        for name, (sources, make) in made.items():
            key = tuple(at.get(source) for source in sources)
            if self._made.get(name, (None,))[0] != key:
                self._made[name] = (key, make())
            documents[name] = self._made[name][1]
        return documents

    def _metrics(self) -> Any:
        values, at = self._snapshot.values, self._snapshot.collected_at
        requests = values.get("kato_logs")
        if requests is not None:
            self._requests.add(requests, at["kato_logs"])
        return metrics_part(values.get("kato"), values.get("kato_sessions"), self._requests)

    def _containers(self) -> Any:
        values = self._snapshot.values
        at = self._snapshot.collected_at.get("containers", time.time())
        return containers_part(values.get("containers"), values.get("host"), at, self._rates)

    def refresh(self) -> None:
        """Encode each part once per new document; a part whose JSON changed gets a new version."""
        for name, document in self.parts(self._hub.snapshot).items():
            if self._encoded_from.get(name) is document:
                continue  # made from the same collections: encoded already
            self._encoded_from[name] = document
            encoded = dumps(document)
            if self._encoded.get(name) != encoded:
                self._encoded[name] = encoded
                self._versions[name] = self._versions.get(name, 0) + 1

    def update_for(
        self,
        client: Client,
        parts: Iterable[str],
        now: float,
        messages: dict[tuple[str, ...], str] | None = None,
        frames: dict[tuple[str, int], bytes] | None = None,
    ) -> None:
        """Queue a realtime_update of those of ``parts`` the client has not had at this version;
        ``messages`` and ``frames`` keep what was made for the clients before it."""
        due = tuple(
            sorted(p for p in parts if p in self._encoded and client.sent.get(p) != self._versions[p])
        )
        if not due:
            return
        messages = {} if messages is None else messages
        if due not in messages:
            data = ",".join(f'"{p}":{self._encoded[p]}' for p in due)
            messages[due] = f'{{"type":"realtime_update","timestamp":"{iso(now)}","data":{{{data}}}}}'
        message = messages[due]
        if client.put(message, now, frames):
            client.sent.update((p, self._versions[p]) for p in due)

    async def _tick(self) -> None:
        due = time.monotonic()
        ticked: dict[str, float] = {}  # when containers and host collected, as of the last tick
        while True:
            if self.clients:
                self._hub.demand.keep_fresh()
                await self._collected_since(ticked)
            collected = self._hub.snapshot.collected_at
            ticked = {s: collected[s] for s in Demand.SOURCES if s in collected}
            now = time.time()
            self.refresh()
            messages: dict[tuple[str, ...], str] = {}  # each distinct message made once a tick
            frames: dict[tuple[str, int], bytes] = {}  # and compressed once
            firing: str | None = None  # asked for once a tick, when a new client wants it
            for number, client in enumerate(list(self.clients), 1):
                if number % FAN_OUT_BATCH == 0:  # let HTTP requests in between batches of writers
                    await asyncio.sleep(0)
                if not client.greeted:  # its first tick: the alerts firing, if it wants alerts
                    client.greeted = True
                    if "system_alerts" in self.wanted(client):
                        firing = await self._firing_message(now) if firing is None else firing
                        if firing:
                            client.put(firing, now, frames)
                self.update_for(client, self.wanted(client) & PART_SET, now, messages, frames)
                if (
                    client.full_since is not None
                    and now - client.full_since > self.settings.slow_client_timeout
                ):
                    log.info("closing a WebSocket client that stopped reading (queue full)")
                    self.clients.discard(client)
                    hang_up = self._hang_up(client, TRY_AGAIN_LATER, b"too slow")
                    self._closing.add(task := asyncio.create_task(hang_up))
                    task.add_done_callback(self._closing.discard)
            due += self.settings.tick
            delay = due - time.monotonic()
            if delay < 0:
                due, delay = time.monotonic() + self.settings.tick, self.settings.tick
            await asyncio.sleep(delay)

    async def _collected_since(self, ticked: Mapping[str, float]) -> None:
        """Wait, up to half a tick, until containers and host have collected since the last tick
        (at ``ticked``). They collect every second too, on a phase of their own (that of the
        scrapes): when this second's collections land just after the tick, the tick goes with them
        rather than send nothing now and skip a second."""

        def stale(snapshot: Snapshot) -> bool:
            return any(snapshot.collected_at.get(s) == at for s, at in ticked.items())

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.tick / 2):
                snapshot = self._hub.snapshot
                while stale(snapshot):
                    snapshot = await self._hub.next_snapshot(snapshot.version)

    async def _hang_up(self, client: Client, code: int, message: bytes) -> None:
        """Close the client's WebSocket with ``code``; when that has not been done within a second
        (its socket is full: the close frame cannot get through either) or left bytes unsent, the
        connection is cut: nothing waits on a client that does not read."""
        try:
            async with asyncio.timeout(1.0):
                await client.ws.close(code=code, message=message)
            done = True
        except TimeoutError:
            done = False
        transport = client.transport
        if transport is not None and (not done or transport.get_write_buffer_size()):
            transport.abort()

    async def _relay(self) -> None:
        assert self._events is not None
        while True:
            event = await self._events.get()
            now = time.time()
            if isinstance(event, SessionEvent):
                since, self._last_event = event.timestamp - self._last_event, event.timestamp
                if self.clients:  # nobody to tell: no JSON (thousands of sessions a second)
                    self.broadcast("session_events", session_message(event, since), now)
            elif isinstance(event, AlertNotice):
                alert = legacy_alert(event)
                if event.status == "firing":
                    self._firing[alert_key(event.labels)] = alert
                else:
                    self._firing.pop(alert_key(event.labels), None)
                self.broadcast("system_alerts", alert_message([alert], event.status == "resolved", now), now)

    def broadcast(self, name: str, message: str, now: float) -> None:
        frames: dict[tuple[str, int], bytes] = {}
        for client in list(self.clients):
            if name in self.wanted(client):
                client.put(message, now, frames)

    async def firing_alerts(self) -> list[dict[str, Any]]:
        """The alerts firing now: from Alertmanager's API when its URL is set, else as the
        webhook has told them since the exporter started."""
        url = self.settings.alertmanager_url
        if not url or self._http is None:
            return list(self._firing.values())
        try:
            async with self._http.get(
                f"{url}/api/v2/alerts?active=true&silenced=false&inhibited=false"
            ) as response:
                alerts = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("cannot ask Alertmanager at %s for firing alerts: %s", url, exc)
            return list(self._firing.values())
        notices = [
            AlertNotice(
                status="firing",
                name=a["labels"].get("alertname", ""),
                severity=a["labels"].get("severity", ""),
                legacy_type=a["labels"].get("legacy_type", ""),
                labels=a["labels"],
                annotations=a.get("annotations", {}),
                starts_at=a.get("startsAt", ""),
                ends_at=a.get("endsAt", ""),
            )
            for a in alerts
            if isinstance(a, dict) and isinstance(a.get("labels"), dict)
        ]
        return [legacy_alert(n) for n in notices]

    # --- the socket ---

    def origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser: nothing to protect it from
            return True
        allowed = self.settings.allowed_origins
        if allowed:
            return "*" in allowed or origin.rstrip("/") in {o.rstrip("/") for o in allowed}
        return urlsplit(origin).netloc == request.host

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.origin_allowed(request):
            return web.json_response({"error": "origin not allowed"}, status=403)
        ws = web.WebSocketResponse(
            max_msg_size=self.settings.max_message_size, compress=True, heartbeat=None, autoping=True
        )
        await ws.prepare(without_server_takeover(request))
        if len(self.clients) >= self.settings.max_clients:
            await ws.close(code=TRY_AGAIN_LATER, message=b"too many clients")
            return ws
        client = Client(ws, asyncio.Queue(self.settings.queue_size), request.transport, int(ws.compress))
        self.clients.add(client)
        writer = asyncio.create_task(self._write(client, request.writer))
        try:
            await self._read(client)
        finally:
            self.clients.discard(client)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        return ws

    async def _firing_message(self, now: float) -> str:
        """A system_alert of every alert firing now; empty when none is."""
        alerts = await self.firing_alerts()
        return alert_message(alerts, False, now) if alerts else ""

    async def _write(self, client: Client, stream: AbstractStreamWriter) -> None:
        """Write the client's frames as they are queued, waiting while its socket is full."""
        with contextlib.suppress(ConnectionError):
            while True:
                frame = await client.queue.get()
                if (transport := client.open_transport()) is None:
                    return
                transport.write(frame)
                await stream.drain()

    async def _read(self, client: Client) -> None:
        ws = client.ws
        while True:
            try:
                message = await ws.receive(timeout=self.settings.idle_timeout)
            except TimeoutError:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"idle")
                return
            if message.type == WSMsgType.TEXT:
                await self._command(client, message.data)
            elif message.type == WSMsgType.BINARY:
                self._error(client, "binary frames are not accepted: send JSON text")
            else:  # closed, or an error such as a frame over max_msg_size (closed with 1009)
                return

    def _error(self, client: Client, text: str) -> None:
        client.put(dumps({"type": "error", "message": text}), time.time())

    async def _command(self, client: Client, text: str) -> None:
        now = time.time()
        if text.strip() == "ping":
            client.put(dumps({"type": "heartbeat", "timestamp": iso(now)}), now)
            return
        try:
            command = json.loads(text)
        except ValueError:
            self._error(client, "not JSON: send ping or a JSON command")
            return
        kind = command.get("type") if isinstance(command, dict) else None
        names = command.get("subscriptions") if isinstance(command, dict) else None
        if kind not in ("subscribe", "unsubscribe") or not isinstance(names, list):
            self._error(client, 'expected {"type":"subscribe"|"unsubscribe","subscriptions":[...]}')
            return
        unknown = [n for n in names if n not in NAMES]
        if unknown:
            self._error(client, f"unknown subscription {unknown}: known are {list(NAMES)}")
            return
        before = set(client.subscriptions or ())
        if kind == "unsubscribe":
            client.subscriptions = before - set(names)
            return
        client.subscriptions = before | set(names)
        added = (client.subscriptions - before) & self._enabled
        if "system_alerts" in added:
            client.greeted = True
            if firing := await self._firing_message(now):
                client.put(firing, now)
        self.update_for(client, added & PART_SET, now)

    # --- REST ---

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self.handle)
        app.router.add_get("/api/v1/system/metrics", self._rest_metrics)
        app.router.add_get("/api/v1/system/container-stats", self._rest_containers)
        app.router.add_get("/api/v1/system/stats", self._rest_stats)
        app.router.add_get("/api/v1/health", self._rest_health)
        app.router.add_get("/api/v1/system/kato-health", self._rest_kato_health)
        app.router.add_get("/api/v1/sessions/count", self._rest_sessions_count)
        app.router.add_route("*", "/api/v1/{path:.*}", self._rest_other)

    def _current(self, name: str) -> web.Response:
        """A part as of the latest snapshot (encoded again only if a source collected since)."""
        self._hub.demand.keep_fresh()  # the old page polls these: containers and host every second
        self.refresh()
        return web.Response(text=self._encoded[name], content_type="application/json")

    async def _rest_metrics(self, request: web.Request) -> web.Response:
        return self._current("metrics")

    async def _rest_containers(self, request: web.Request) -> web.Response:
        return self._current("containers")

    async def _rest_sessions_count(self, request: web.Request) -> web.Response:
        sessions = self._hub.snapshot.values.get("kato_sessions")
        if sessions is None:
            return web.json_response({"error": "sessions cannot be read"}, status=503)
        return web.json_response({"active_session_count": sessions.active})

    async def _rest_kato_health(self, request: web.Request) -> web.Response:
        kato = self._hub.snapshot.values.get("kato")
        if kato is None:
            return web.json_response(
                {"status": "unreachable", "error": "KATO's API does not answer"}, status=503
            )
        return web.json_response(dict(kato.health))

    async def _rest_health(self, request: web.Request) -> web.Response:
        health = self._hub.snapshot.health
        sources = {name: h.up for name, h in sorted(health.items())}
        status = "healthy" if all(sources.values()) else "degraded"
        return web.json_response({"status": status, "service": "kato-exporter bridge", "sources": sources})

    async def _rest_stats(self, request: web.Request) -> web.Response:
        """KATO's /stats, passed through."""
        if not self.kato_url:
            return web.json_response({"error": "no --kato.url: KATO's /stats is not available"}, status=501)
        return await self._forward(
            request, f"{self.kato_url}/stats", {"minutes": request.query.get("minutes", "10")}
        )

    async def _rest_other(self, request: web.Request) -> web.Response:
        if not self.settings.upstream:
            return web.json_response(
                {
                    "error": f"{request.path} belongs to the old dashboard backend, which this bridge "
                    "does not serve (--bridge.upstream proxies such calls to it)"
                },
                status=501,
            )
        return await self._forward(request, self.settings.upstream + request.path, dict(request.query))

    async def _forward(self, request: web.Request, url: str, query: Mapping[str, str]) -> web.Response:
        assert self._http is not None
        body = await request.read() if request.can_read_body else None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        try:
            async with self._http.request(
                request.method, url, params=query, data=body, headers=headers
            ) as response:
                content = await response.read()
                kind = response.headers.get("Content-Type", "application/json")
                return web.Response(status=response.status, body=content, headers={"Content-Type": kind})
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.json_response({"error": f"{url}: {exc or type(exc).__name__}"}, status=502)
