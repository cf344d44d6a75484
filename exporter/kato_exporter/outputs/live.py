"""Pushes the snapshot to Grafana Live, so that Live panels move at 1 Hz with no Prometheus in between.

``POST <grafana>/api/live/push/<stream>`` with Influx line protocol (nanosecond timestamps) once
per ``interval``, and a point for each session event and alert notice as soon as the hub
publishes it. Grafana turns measurement ``m`` into the channel ``stream/<stream>/m``:

    containers,name=kato cpu_cores=0.12,memory_working_set_bytes=104857600i,... <ns>
    host cpu_usage_ratio=0.21,cpus=2i,load1=0.3,memory_usage_ratio=0.43,... <ns>
    sessions active=42i,created=120i,destroyed=70i,expired=8i,evicted=0i <ns>
    session_index stale=15i <ns>
    kato sessions_reported=57i <ns>
    requests rate_2xx=31.5,rate_3xx=0.0,rate_4xx=0.2,rate_5xx=0.1 <ns>
    session_events,type=expired active=41i <ns>
    alerts,alertname=KatoContainerCpuHigh,name=kato,severity=critical firing=1i,summary="…" <ns>

Each measurement has one schema for the exporter's whole life (``MEASUREMENTS``).

Every collection of a source becomes one point per row, pushed with the next tick (a tick that
finds nothing new waits up to half a tick for the collections just under way); its
timestamp is the source's last successful collection, the same instant that
``kato_exporter_last_success_timestamp_seconds`` shows. Bodies stay under 64 KiB; they wait in
a bounded queue that drops the oldest, and a Grafana that is away is retried with jittered
backoff: collection never waits for Grafana.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import aiohttp

from kato_exporter.config import read_secret
from kato_exporter.hub import Hub, Snapshot
from kato_exporter.model import (
    SESSION_EVENTS,
    AlertNotice,
    ContainersSample,
    HostSample,
    KatoSample,
    LiveStats,
    RequestCounts,
    SessionEvent,
    SessionsSample,
)
from kato_exporter.outputs.rates import Rates
from kato_exporter.supervision import Backoff, Link, SourceError

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
REJECT_AFTER = 3  # tries of a body Grafana refuses before it is dropped
Fields = Mapping[str, float | int | str]


# --- line protocol -----------------------------------------------------------------------

_KEY = re.compile(r"([,= \\])")  # tag keys, tag values, field keys
_MEASUREMENT = re.compile(r"([, \\])")


def _key(text: str) -> str:
    return _KEY.sub(r"\\\1", text.replace("\n", " "))


def _value(value: float | int | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def line(measurement: str, tags: Mapping[str, str], fields: Fields, seconds: float) -> str:
    """One point; tags without a value are left out (line protocol has no empty tag)."""
    head = _MEASUREMENT.sub(r"\\\1", measurement)
    head += "".join(f",{_key(k)}={_key(v)}" for k, v in sorted(tags.items()) if v)
    body = ",".join(f"{_key(k)}={_value(v)}" for k, v in fields.items())
    return f"{head} {body} {round(seconds * 1e9)}"


def bodies(lines: Iterable[str], limit: int = MAX_BODY) -> Iterator[bytes]:
    """The lines, newline-separated, in bodies of at most ``limit`` bytes."""
    chunk: list[bytes] = []
    size = 0
    for text in lines:
        encoded = text.encode() + b"\n"
        if chunk and size + len(encoded) > limit:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded)
    if chunk:
        yield b"".join(chunk)


# --- what a snapshot becomes --------------------------------------------------------------

# Every point of a measurement carries these fields, in this order, from the exporter's first push
# to its last. Grafana builds a channel's frame schema from the fields each push carries, and the
# browser's StreamingDataFrame cannot take a new schema once it holds two label sets (two
# containers): every later message fails with "push message mismatch". So a point waits until it
# can fill every field (rates need two collections), and what a source may lack is a value said
# here, or a measurement of its own.
MEASUREMENTS: dict[str, tuple[str, ...]] = {
    "containers": (
        "cpu_cores",
        "cpu_limit_cores",  # 0.0: no CPU limit
        "memory_working_set_bytes",
        "memory_usage_bytes",
        "memory_limit_bytes",  # 0: no memory limit
        "network_receive_bytes_per_second",  # 0.0 on the host's or another container's network
        "network_transmit_bytes_per_second",
        "block_read_bytes_per_second",
        "block_write_bytes_per_second",
        "pids",  # 0: not counted (no pids controller)
    ),
    "host": (
        "cpu_usage_ratio",
        "cpus",
        "load1",
        "memory_usage_ratio",
        "memory_available_bytes",
        "memory_total_bytes",
        "swap_used_bytes",
        "network_receive_bytes_per_second",
        "network_transmit_bytes_per_second",
    ),
    "sessions": ("active", *SESSION_EVENTS),
    "session_index": ("stale",),  # redis mode, once the index has been reconciled
    "kato": ("sessions_reported",),  # KATO's own count, while its API answers
    "requests": ("rate_2xx", "rate_3xx", "rate_4xx", "rate_5xx"),
    "session_events": ("active",),
    "alerts": ("firing", "summary"),
}


def point(measurement: str, tags: Mapping[str, str], fields: Fields, seconds: float) -> list[str]:
    """One point of a declared measurement, its fields in the declared order (a missing one is
    a KeyError: a bug, not a point with another schema); none if a value is NaN or infinite,
    which line protocol cannot carry."""
    values = {key: fields[key] for key in MEASUREMENTS[measurement]}
    if any(isinstance(v, float) and not math.isfinite(v) for v in values.values()):
        log.debug("%s point with a value that is not a number left out: %s", measurement, values)
        return []
    return [line(measurement, tags, values, seconds)]


def _rates(rates: Rates, key: Any, seconds: float, counters: Mapping[str, float]) -> dict[str, float] | None:
    """Each counter's rate, named as the counter is, once every one has two values. Rates
    are differences of samples taken at a moment's jitter: six significant digits are all
    they carry, and the longest part of a line without rounding."""
    out = {}
    for field, value in counters.items():
        rate = rates((key, field), value, seconds)
        if rate is not None:
            out[field] = _six_digits(rate)
    return out if len(out) == len(counters) else None


def _six_digits(rate: float) -> float:
    return float(f"{rate:.6g}")  # 0.0123457, not 0.012345678901234567


def container_lines(sample: ContainersSample, seconds: float, rates: Rates) -> list[str]:
    lines = []
    for c in sample.containers:
        u = c.usage
        if u is None:
            continue
        own = c.meta.own_network
        rated = _rates(
            rates,
            c.meta.id,
            seconds,
            {
                "cpu_cores": u.cpu_seconds,
                "network_receive_bytes_per_second": u.network_receive_bytes if own else 0,
                "network_transmit_bytes_per_second": u.network_transmit_bytes if own else 0,
                "block_read_bytes_per_second": u.block_read_bytes,
                "block_write_bytes_per_second": u.block_write_bytes,
            },
        )
        if rated is None:
            continue
        fields = {
            **rated,
            "cpu_limit_cores": float(u.cpu_limit_cores or 0),
            "memory_working_set_bytes": u.memory_working_set_bytes,
            "memory_usage_bytes": u.memory_usage_bytes,
            "memory_limit_bytes": u.memory_limit_bytes or 0,
            "pids": u.pids or 0,
        }
        lines += point("containers", {"name": c.meta.name}, fields, seconds)
    running = {c.meta.id for c in sample.containers if c.usage is not None}
    rates.keep(lambda key: key[0] in running)
    return lines


def host_lines(h: HostSample, seconds: float, rates: Rates) -> list[str]:
    # the busy share from the counters /metrics exposes, as the recording rule takes it
    busy = rates(("host", "cpu"), h.cpu_busy_seconds / h.cpu_count, seconds)
    # traffic device by device, as Prometheus sums its rates: a device that went (a container's
    # veth) or came since the last collection is no fall or jump of a sum
    traffic = [0.0, 0.0]
    for device, counters in h.network.items():
        for i, value in enumerate(counters):
            traffic[i] += rates(("host", device, i), value, seconds) or 0.0
    rates.keep(lambda key: key[1] == "cpu" or key[1] in h.network)
    if busy is None:
        return []
    fields = {
        "cpu_usage_ratio": min(1.0, _six_digits(busy)),
        "network_receive_bytes_per_second": _six_digits(traffic[0]),
        "network_transmit_bytes_per_second": _six_digits(traffic[1]),
        "cpus": h.cpu_count,
        "load1": h.load1,
        "memory_usage_ratio": h.memory_usage_ratio,
        "memory_available_bytes": h.memory_available_bytes,
        "memory_total_bytes": h.memory_total_bytes,
        "swap_used_bytes": h.swap_used_bytes,
    }
    return point("host", {}, fields, seconds)


def session_lines(s: SessionsSample, seconds: float) -> list[str]:
    fields = {
        "active": s.active,
        **{event: s.events_total.get(event, 0) for event in SESSION_EVENTS},
    }
    lines = point("sessions", {}, fields, seconds)
    if s.index_stale is not None:
        lines += point("session_index", {}, {"stale": s.index_stale}, seconds)
    return lines


def kato_lines(k: KatoSample, seconds: float) -> list[str]:
    return point("kato", {}, {"sessions_reported": k.sessions_reported}, seconds)


def request_lines(r: RequestCounts, seconds: float, rates: Rates) -> list[str]:
    totals = dict.fromkeys(MEASUREMENTS["requests"], 0)
    for (_, cls), n in r.by_method_class.items():
        if f"rate_{cls}" in totals:
            totals[f"rate_{cls}"] += n
    rated = _rates(rates, "requests", seconds, totals)
    return [] if rated is None else point("requests", {}, rated, seconds)


def event_lines(event: Any) -> list[str]:
    """The point of one hub event (a session change or an alert notice); none for others."""
    if isinstance(event, SessionEvent):
        return point("session_events", {"type": event.type}, {"active": event.active}, event.timestamp)
    if isinstance(event, AlertNotice):
        # whether it fires is the field `firing`: a `status` tag would make each alert two
        # series, one always 1 and one always 0
        tags = {"alertname": event.name, "severity": event.severity, "name": event.labels.get("name", "")}
        summary = event.annotations.get("summary", "")
        fields: Fields = {"firing": int(event.status == "firing"), "summary": summary}
        return point("alerts", tags, fields, time.time())
    return []


class SnapshotLines:
    """The points of the sources that collected since the last call."""

    def __init__(self) -> None:
        containers, host, requests = Rates(), Rates(), Rates()
        self._points: dict[str, Callable[[Any, Snapshot, float], list[str]]] = {
            "containers": lambda value, _, at: container_lines(value, at, containers),
            "host": lambda value, _, at: host_lines(value, at, host),
            "kato_sessions": lambda value, _, at: session_lines(value, at),
            "kato": lambda value, _, at: kato_lines(value, at),
            "kato_logs": lambda value, _, at: request_lines(value, at, requests),
        }
        self._pushed: dict[str, float] = {}

    def __call__(self, snapshot: Snapshot) -> list[str]:
        lines: list[str] = []
        for source, points in self._points.items():
            value, health = snapshot.values.get(source), snapshot.health.get(source)
            if value is None or health is None or health.last_success_seconds is None:
                continue
            if self._pushed.get(source) != health.last_success_seconds:
                self._pushed[source] = health.last_success_seconds
                lines += points(value, snapshot, health.last_success_seconds)
        return lines


# --- the pusher ---------------------------------------------------------------------------


class LivePusher:
    """Runs as a source of its own (``grafana_live``): its value is its own stats. It is down
    while it has no token Grafana takes (the token file missing or empty, or Grafana answering
    401/403: the file is read again at each retry, so a new token is picked up) and if its task
    ended (it is then restarted); a Grafana that is away shows as
    ``kato_exporter_live_pushes_total{result="error"}`` rising, and in the log. A body Grafana
    refuses (4xx or 500: it cannot convert it) is tried ``REJECT_AFTER`` times, then dropped and
    counted as ``rejected``; it never holds up the bodies behind it for longer."""

    name = "grafana_live"
    interval = 5.0
    timeout = 1.0

    def __init__(
        self,
        hub: Hub,
        url: str,
        token_file: str,
        stream: str = "kato",
        every: float = 1.0,
        queue_size: int = 120,
        request_timeout: float = 5.0,
    ) -> None:
        self._hub, self._token_file, self._token = hub, token_file, ""
        self.url = f"{url}/api/live/push/{stream}"
        self._every = every
        self._queue: deque[bytes] = deque(maxlen=queue_size)
        self._ready = asyncio.Event()
        self._counts: Counter[str] = Counter({"success": 0, "error": 0, "dropped": 0, "rejected": 0})
        self._duration_sum, self._duration_count = 0.0, 0
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._backoff = Backoff(1.0, 30.0)
        self._failing = False
        self._events: asyncio.Queue[Any] | None = None
        self._pending: list[str] = []  # points of the collections since the last push
        self._landed = asyncio.Event()  # set when points are pending
        self._session: aiohttp.ClientSession | None = None
        self._link = Link(f"Grafana Live pusher for {self.url}", self._run, Backoff(1.0, 30.0))

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._events = self._hub.subscribe()
        self._link.start()

    async def close(self) -> None:
        await self._link.close()
        if self._events is not None:
            self._hub.unsubscribe(self._events)
        if self._session is not None:
            await self._session.close()

    async def collect(self) -> LiveStats:
        await self._link.report()
        return self.stats()

    def stats(self) -> LiveStats:
        return LiveStats(dict(self._counts), self._duration_sum, self._duration_count)

    def enqueue(self, lines: list[str]) -> None:
        for body in bodies(lines):
            if len(self._queue) == self._queue.maxlen:
                self._counts["dropped"] += 1
            self._queue.append(body)
        if lines:
            self._ready.set()

    async def _run(self) -> None:
        self._token = self._read_token()
        self._link.connected()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch())
                group.create_task(self._tick())
                group.create_task(self._relay())
                group.create_task(self._send())
        except* SourceError as failed:  # the token refused: down, and the file read again
            raise failed.exceptions[0] from None

    def _read_token(self) -> str:
        try:
            token = read_secret(self._token_file)
        except OSError as exc:
            raise SourceError(f"no Grafana token in {self._token_file}: {exc.strerror}") from None
        if not token:
            raise SourceError(f"no Grafana token in {self._token_file} yet: it is empty")
        return token

    async def _watch(self) -> None:
        """Turn each new collection into points as it lands, so that none is missed when a
        source's clock and the push clock drift against each other."""
        points = SnapshotLines()
        version = 0
        while True:
            snapshot = await self._hub.next_snapshot(version)
            version = snapshot.version
            lines = points(snapshot)
            if lines:
                self._pending += lines
                self._landed.set()

    async def _tick(self) -> None:
        """One push a tick, on the tick's own phase. Sources tick once a second too: when this
        second's collections land just after the tick, the tick waits for them (up to half a tick)
        rather than push nothing now and two collections a second later."""
        due = time.monotonic()
        while True:
            self._hub.demand.keep_fresh()  # containers and host collected for every push
            if not self._pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._every / 2):
                        await self._landed.wait()
            lines, self._pending = self._pending, []
            self._landed.clear()
            self.enqueue(lines)
            due += self._every
            now = time.monotonic()
            if due < now:  # late by more than a tick (a suspended host): keep the phase
                due = now + self._every
            await asyncio.sleep(due - now)

    async def _relay(self) -> None:
        assert self._events is not None
        while True:
            self.enqueue(event_lines(await self._events.get()))

    async def _send(self) -> None:
        refused = 0  # tries of the body at the head of the queue that Grafana refused
        while True:
            await self._ready.wait()
            while self._queue:
                body = self._queue[0]
                outcome = await self._post(body)
                refused = refused + 1 if outcome == "refused" else 0
                if outcome == "sent" or refused >= REJECT_AFTER:
                    if refused:
                        self._counts["rejected"] += 1
                        log.warning("Grafana Live refused a body %d times: dropped it", refused)
                        refused = 0
                    if self._queue and self._queue[0] is body:
                        self._queue.popleft()
                else:
                    await asyncio.sleep(self._backoff.delay())
            self._ready.clear()

    async def _post(self, body: bytes) -> str:
        """ "sent", "refused" (Grafana cannot take this body), or "failed" (Grafana away or
        busy: the same body later); a SourceError when Grafana refuses the token."""
        assert self._session is not None
        started = time.monotonic()
        problem, status = "", 0
        try:
            async with self._session.post(
                self.url,
                data=body,
                headers={"Authorization": f"Bearer {self._token}", "Content-Type": "text/plain"},
            ) as response:
                status = response.status
                if status in (401, 403):
                    raise SourceError(f"Grafana refuses the token in {self._token_file}: HTTP {status}")
                if status != 200:
                    text = (await response.text())[:200].strip()
                    problem = f"HTTP {status}" + (f": {text}" if text else "")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            problem = str(exc) or type(exc).__name__
        else:
            self._duration_sum += time.monotonic() - started
            self._duration_count += 1
        self._counts["error" if problem else "success"] += 1
        if problem and not self._failing:
            log.warning("Grafana Live push to %s failed: %s (retrying with backoff)", self.url, problem)
        elif not problem and self._failing:
            log.info("Grafana Live pushes to %s succeed again", self.url)
        self._failing = bool(problem)
        if not problem:
            self._backoff.reset()
            return "sent"
        return "refused" if 400 <= status < 500 or status == 500 else "failed"
