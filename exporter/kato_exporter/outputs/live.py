"""Pushes the snapshot to Grafana Live, so that Live panels move at 1 Hz with no Prometheus in between.

``POST <grafana>/api/live/push/<stream>`` with Influx line protocol (nanosecond timestamps) once
per ``interval``, and a point for each session event and alert notice as soon as the hub
publishes it. Grafana turns measurement ``m`` into the channel ``stream/<stream>/m``:

    containers,name=kato cpu_cores=0.12,memory_working_set_bytes=104857600i,... <ns>
    host cpu_usage_ratio=0.21,memory_usage_ratio=0.43,... <ns>
    sessions active=42i,reported=57i,stale=15i,created=120i,destroyed=70i,expired=8i <ns>
    requests rate_2xx=31.5,rate_3xx=0.0,rate_4xx=0.2,rate_5xx=0.1 <ns>
    session_events,type=expired active=41i <ns>
    alerts,alertname=KatoContainerCpuHigh,severity=critical,status=firing firing=1i,summary="…" <ns>

Every collection of a source becomes one point per row, pushed with the next tick; its
timestamp is the source's last successful collection, the same instant that
``kato_exporter_last_success_timestamp_seconds`` shows. Bodies stay under 64 KiB; they wait in
a bounded queue that drops the oldest, and a Grafana that is away is retried with jittered
backoff: collection never waits for Grafana.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import aiohttp

from kato_exporter.hub import Hub, Snapshot
from kato_exporter.model import (
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
from kato_exporter.supervision import Backoff, Link

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
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


def _rated(out: dict[str, Any], rates: Rates, key: Any, seconds: float, counters: dict[str, float]) -> None:
    """Add each counter's rate as the field it is named by, once there are two values. Rates
    are differences of samples taken at a moment's jitter: six significant digits are all
    they carry, and the longest part of a line without rounding."""
    for field, value in counters.items():
        rate = rates((key, field), value, seconds)
        if rate is not None:
            out[field] = float(f"{rate:.6g}")  # six digits: 0.0123457, not 0.012345678901234567


def container_lines(sample: ContainersSample, seconds: float, rates: Rates) -> list[str]:
    lines = []
    for c in sample.containers:
        u = c.usage
        if u is None:
            continue
        fields: dict[str, float | int | str] = {}
        _rated(
            fields,
            rates,
            c.meta.id,
            seconds,
            {
                "cpu_cores": u.cpu_seconds,
                **(
                    {
                        "network_receive_bytes_per_second": u.network_receive_bytes,
                        "network_transmit_bytes_per_second": u.network_transmit_bytes,
                    }
                    if c.meta.own_network
                    else {}
                ),
                "block_read_bytes_per_second": u.block_read_bytes,
                "block_write_bytes_per_second": u.block_write_bytes,
            },
        )
        fields["memory_working_set_bytes"] = u.memory_working_set_bytes
        fields["memory_usage_bytes"] = u.memory_usage_bytes
        if u.pids is not None:
            fields["pids"] = u.pids
        if u.cpu_limit_cores is not None:
            fields["cpu_limit_cores"] = float(u.cpu_limit_cores)
        if u.memory_limit_bytes is not None:
            fields["memory_limit_bytes"] = u.memory_limit_bytes
        lines.append(line("containers", {"name": c.meta.name}, fields, seconds))
    running = {c.meta.id for c in sample.containers if c.usage is not None}
    rates.keep(lambda key: key[0] in running)
    return lines


def host_lines(h: HostSample, seconds: float, rates: Rates) -> list[str]:
    fields: dict[str, float | int | str] = {}
    busy = rates(("host", "cpu_busy_seconds"), h.cpu_busy_seconds, seconds)
    if busy is not None:  # from the counters /metrics exposes, as the recording rule does
        fields["cpu_usage_ratio"] = float(f"{min(1.0, busy / h.cpu_count):.6g}")
    fields |= {
        "cpus": h.cpu_count,
        "load1": h.load1,
        "memory_usage_ratio": h.memory_usage_ratio,
        "memory_available_bytes": h.memory_available_bytes,
        "memory_total_bytes": h.memory_total_bytes,
        "swap_used_bytes": h.swap_used_bytes,
    }
    _rated(
        fields,
        rates,
        "host",
        seconds,
        {
            "network_receive_bytes_per_second": sum(rx for rx, _ in h.network.values()),
            "network_transmit_bytes_per_second": sum(tx for _, tx in h.network.values()),
        },
    )
    return [line("host", {}, fields, seconds)]


def session_lines(s: SessionsSample, kato: KatoSample | None, seconds: float) -> list[str]:
    fields: dict[str, float | int | str] = {"active": s.active}
    if kato is not None:
        fields["reported"] = kato.sessions_reported
    if s.index_stale is not None:
        fields["stale"] = s.index_stale
    for event in ("created", "destroyed", "expired"):
        fields[event] = s.events_total.get(event, 0)
    return [line("sessions", {}, fields, seconds)]


CODE_CLASSES = ("2xx", "3xx", "4xx", "5xx")


def request_lines(r: RequestCounts, seconds: float, rates: Rates) -> list[str]:
    totals = Counter({cls: 0 for cls in CODE_CLASSES})
    for (_, code), n in r.by_method_code.items():
        totals[f"{code[:1]}xx"] += n
    fields: dict[str, float | int | str] = {}
    _rated(fields, rates, "requests", seconds, {f"rate_{cls}": totals[cls] for cls in CODE_CLASSES})
    return [line("requests", {}, fields, seconds)] if fields else []


def event_lines(event: Any) -> list[str]:
    """The point of one hub event (a session change or an alert notice); none for others."""
    if isinstance(event, SessionEvent):
        return [line("session_events", {"type": event.type}, {"active": event.active}, event.timestamp)]
    if isinstance(event, AlertNotice):
        tags = {"alertname": event.name, "severity": event.severity, "status": event.status}
        if "name" in event.labels:
            tags["name"] = event.labels["name"]
        fields: dict[str, float | int | str] = {
            "firing": int(event.status == "firing"),
            "summary": event.annotations.get("summary", ""),
        }
        return [line("alerts", tags, fields, time.time())]
    return []


class SnapshotLines:
    """The points of the sources that collected since the last call."""

    def __init__(self) -> None:
        containers, host, requests = Rates(), Rates(), Rates()
        self._points: dict[str, Callable[[Any, Snapshot, float], list[str]]] = {
            "containers": lambda value, _, at: container_lines(value, at, containers),
            "host": lambda value, _, at: host_lines(value, at, host),
            "kato_sessions": lambda value, snapshot, at: session_lines(
                value, snapshot.values.get("kato"), at
            ),
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
    """Runs as a source of its own (``grafana_live``): its value is its own stats, and it is
    down only if its task ended (it is then restarted); a Grafana that is away shows as
    ``kato_exporter_live_pushes_total{result="error"}`` rising, and in the log."""

    name = "grafana_live"
    interval = 5.0
    timeout = 1.0

    def __init__(
        self,
        hub: Hub,
        url: str,
        token: str,
        stream: str = "kato",
        every: float = 1.0,
        queue_size: int = 120,
        request_timeout: float = 5.0,
    ) -> None:
        self._hub, self._token = hub, token
        self.url = f"{url}/api/live/push/{stream}"
        self._every = every
        self._queue: deque[bytes] = deque(maxlen=queue_size)
        self._ready = asyncio.Event()
        self._counts: Counter[str] = Counter({"success": 0, "error": 0, "dropped": 0})
        self._duration_sum, self._duration_count = 0.0, 0
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._backoff = Backoff(1.0, 30.0)
        self._failing = False
        self._events: asyncio.Queue[Any] | None = None
        self._pending: list[str] = []  # points of the collections since the last push
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
        self._link.connected()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch())
            group.create_task(self._tick())
            group.create_task(self._relay())
            group.create_task(self._send())

    async def _watch(self) -> None:
        """Turn each new collection into points as it lands, so that none is missed when a
        source's clock and the push clock drift against each other."""
        points = SnapshotLines()
        version = 0
        while True:
            snapshot = await self._hub.next_snapshot(version)
            version = snapshot.version
            self._pending += points(snapshot)

    async def _tick(self) -> None:
        due = time.monotonic()
        while True:
            lines, self._pending = self._pending, []
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
        while True:
            await self._ready.wait()
            while self._queue:
                body = self._queue[0]
                if await self._post(body):
                    if self._queue and self._queue[0] is body:
                        self._queue.popleft()
                else:
                    await asyncio.sleep(self._backoff.delay())
            self._ready.clear()

    async def _post(self, body: bytes) -> bool:
        assert self._session is not None
        started = time.monotonic()
        problem = ""
        try:
            async with self._session.post(
                self.url,
                data=body,
                headers={"Authorization": f"Bearer {self._token}", "Content-Type": "text/plain"},
            ) as response:
                if response.status != 200:
                    text = (await response.text())[:200].strip()
                    problem = f"HTTP {response.status}" + (f": {text}" if text else "")
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
        return not problem
