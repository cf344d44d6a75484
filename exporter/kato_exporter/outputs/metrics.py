"""Snapshot → Prometheus exposition, rendered once per snapshot and cached.

Sample of what comes out::

    kato_container_state{name="kato",state="running"} 1.0
    kato_container_cpu_usage_seconds_total{name="kato"} 12.5
    kato_container_memory_limit_bytes{name="kato"} 6.7108864e+07
    kato_host_cpu_usage_ratio 0.12
    kato_exporter_source_up{source="containers"} 1.0
"""

from __future__ import annotations

import asyncio
import gzip
import math
import platform
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from kato_exporter import __version__
from kato_exporter.hub import Hub, Snapshot
from kato_exporter.model import (
    KATO_HEALTH_STATES,
    ContainersSample,
    ContainerUsage,
    HostSample,
    KatoSample,
    RequestCounts,
    SessionsSample,
)

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

CONTAINER_STATES = ("created", "running", "paused", "restarting", "exited", "dead")
HEALTH_STATES = ("starting", "healthy", "unhealthy")

Rows = Iterable[tuple[Sequence[str], float]]
Family = type[GaugeMetricFamily] | type[CounterMetricFamily]


def _family(kind: Family, name: str, doc: str, labels: Sequence[str], rows: Rows) -> Metric:
    family = kind(name, doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def gauge(name: str, doc: str, labels: Sequence[str], rows: Rows) -> Metric:
    return _family(GaugeMetricFamily, name, doc, labels, rows)


def counter(name: str, doc: str, labels: Sequence[str], rows: Rows) -> Metric:
    return _family(CounterMetricFamily, name, doc, labels, rows)


def scalar(name: str, doc: str, value: float) -> Metric:
    return gauge(name, doc, [], [([], value)])


def one_of(options: Sequence[str], current: str | None, *labels: str) -> Rows:
    """StateSet rows: 1 for ``current``, 0 for every other option, behind ``labels``."""
    return (([*labels, option], float(option == current)) for option in options)


def label_name(docker_label: str) -> str:
    """``com.example.team`` → ``label_com_example_team``."""
    return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", docker_label)


def exporter_families(snapshot: Snapshot) -> Iterator[Metric]:
    """kato_exporter_source_up{source="host"} 1.0 and friends."""
    build = InfoMetricFamily("kato_exporter_build", "Version of kato-exporter.")
    build.add_metric([], {"version": __version__, "python_version": platform.python_version()})
    yield build
    health = sorted(snapshot.health.items())
    source = ["source"]
    yield gauge(
        "kato_exporter_source_up",
        "1 when the source's last collection succeeded.",
        source,
        (([n], float(h.up)) for n, h in health),
    )
    yield gauge(
        "kato_exporter_collect_duration_seconds",
        "Duration of the source's last collection.",
        source,
        (([n], h.duration_seconds) for n, h in health),
    )
    yield counter(
        "kato_exporter_collect_errors_total",
        "Failed collections of the source.",
        source,
        (([n], h.errors_total) for n, h in health),
    )
    yield gauge(
        "kato_exporter_last_success_timestamp_seconds",
        "Unix time of the source's last successful collection.",
        source,
        (([n], h.last_success_seconds) for n, h in health if h.last_success_seconds),
    )


def container_families(sample: ContainersSample, info_labels: Sequence[str]) -> Iterator[Metric]:
    """kato_container_state{name="kato",state="running"} 1.0 and friends."""
    yield gauge(
        "kato_exporter_container_stats_mode",
        "1 for where container numbers come from: cgroup files or the Docker stats API.",
        ["mode"],
        one_of(("cgroup", "api"), sample.mode),
    )
    metas = [c.meta for c in sample.containers]
    info = InfoMetricFamily("kato_container", "Container metadata.", labels=["name"])
    for m in metas:
        values = {
            "id": m.id,
            "image": m.image,
            "compose_project": m.labels.get("com.docker.compose.project", ""),
            "compose_service": m.labels.get("com.docker.compose.service", ""),
        }
        values.update({label_name(k): m.labels.get(k, "") for k in info_labels})
        info.add_metric([m.name], values)
    yield info
    yield gauge(
        "kato_container_state",
        "1 for the container's current state.",
        ["name", "state"],
        (row for m in metas for row in one_of(CONTAINER_STATES, m.state, m.name)),
    )
    yield gauge(
        "kato_container_health_status",
        "1 for the healthcheck's current status.",
        ["name", "status"],
        (row for m in metas if m.health for row in one_of(HEALTH_STATES, m.health, m.name)),
    )
    name = ["name"]
    yield counter(
        "kato_container_restarts_total",
        "Restarts by Docker's restart policy.",
        name,
        (([m.name], m.restarts) for m in metas),
    )
    running = [(c.meta, c.usage) for c in sample.containers if c.usage is not None]
    yield gauge(
        "kato_container_start_time_seconds",
        "Unix time the container last started.",
        name,
        (([m.name], m.started_at) for m, _ in running if m.started_at),
    )
    yield from _usage_families(running)


_USAGE: tuple[tuple[Family, str, str, Callable[[ContainerUsage], Any]], ...] = (
    (
        CounterMetricFamily,
        "kato_container_cpu_usage_seconds_total",
        "CPU time used.",
        lambda u: u.cpu_seconds,
    ),
    (
        GaugeMetricFamily,
        "kato_container_cpu_limit_cores",
        "CPU limit in cores, where one is set.",
        lambda u: u.cpu_limit_cores,
    ),
    (
        GaugeMetricFamily,
        "kato_container_memory_usage_bytes",
        "Memory charged, page cache included.",
        lambda u: u.memory_usage_bytes,
    ),
    (
        GaugeMetricFamily,
        "kato_container_memory_working_set_bytes",
        "Memory usage minus inactive file pages (what docker stats shows).",
        lambda u: u.memory_working_set_bytes,
    ),
    (
        GaugeMetricFamily,
        "kato_container_memory_limit_bytes",
        "Memory limit, where one is set.",
        lambda u: u.memory_limit_bytes,
    ),
    (
        CounterMetricFamily,
        "kato_container_network_receive_bytes_total",
        "Bytes received on all interfaces but lo.",
        lambda u: u.network_receive_bytes,
    ),
    (
        CounterMetricFamily,
        "kato_container_network_transmit_bytes_total",
        "Bytes sent on all interfaces but lo.",
        lambda u: u.network_transmit_bytes,
    ),
    (
        CounterMetricFamily,
        "kato_container_block_read_bytes_total",
        "Bytes read from block devices.",
        lambda u: u.block_read_bytes,
    ),
    (
        CounterMetricFamily,
        "kato_container_block_write_bytes_total",
        "Bytes written to block devices.",
        lambda u: u.block_write_bytes,
    ),
    (GaugeMetricFamily, "kato_container_pids", "Processes and threads in the container.", lambda u: u.pids),
)


def _usage_families(running: list[tuple[Any, ContainerUsage]]) -> Iterator[Metric]:
    for kind, metric, doc, read in _USAGE:
        yield _family(
            kind, metric, doc, ["name"], (([m.name], v) for m, u in running if (v := read(u)) is not None)
        )


def host_families(h: HostSample) -> Iterator[Metric]:
    """kato_host_cpu_usage_ratio 0.12 and friends."""
    scalars = (
        ("kato_host_cpu_usage_ratio", "Busy share of all CPUs over the last interval.", h.cpu_usage_ratio),
        ("kato_host_cpu_count", "Logical CPUs.", h.cpu_count),
        ("kato_host_load1", "Load average over 1 minute.", h.load1),
        ("kato_host_load5", "Load average over 5 minutes.", h.load5),
        ("kato_host_load15", "Load average over 15 minutes.", h.load15),
        ("kato_host_memory_total_bytes", "Physical memory.", h.memory_total_bytes),
        ("kato_host_memory_available_bytes", "Memory available without swapping.", h.memory_available_bytes),
        ("kato_host_memory_usage_ratio", "1 - available / total.", h.memory_usage_ratio),
        ("kato_host_swap_total_bytes", "Swap space.", h.swap_total_bytes),
        ("kato_host_swap_used_bytes", "Swap in use.", h.swap_used_bytes),
        ("kato_host_boot_time_seconds", "Unix time the host booted.", h.boot_time_seconds),
    )
    for metric, doc, value in scalars:
        yield scalar(metric, doc, value)
    fs_labels = ["mountpoint", "fstype"]
    yield gauge(
        "kato_host_filesystem_size_bytes",
        "Filesystem size.",
        fs_labels,
        (([f.mountpoint, f.fstype], f.size_bytes) for f in h.filesystems),
    )
    yield gauge(
        "kato_host_filesystem_used_bytes",
        "Filesystem space in use.",
        fs_labels,
        (([f.mountpoint, f.fstype], f.used_bytes) for f in h.filesystems),
    )
    devices = sorted(h.network.items())
    yield counter(
        "kato_host_network_receive_bytes_total",
        "Bytes received.",
        ["device"],
        (([d], rx) for d, (rx, _) in devices),
    )
    yield counter(
        "kato_host_network_transmit_bytes_total",
        "Bytes sent.",
        ["device"],
        (([d], tx) for d, (_, tx) in devices),
    )


def kato_families(k: KatoSample | None) -> Iterator[Metric]:
    """kato_up 1.0, kato_health_status{status="healthy"} 1.0 and friends."""
    yield scalar("kato_up", "1 when the last poll of the KATO API succeeded.", float(k is not None))
    if k is None:
        return
    yield gauge(
        "kato_health_status",
        "1 for the status KATO's /health reports.",
        ["status"],
        one_of(KATO_HEALTH_STATES, k.status),
    )
    yield scalar("kato_uptime_seconds", "Uptime of the KATO worker that answered /health.", k.uptime_seconds)
    yield scalar(
        "kato_sessions_reported",
        "KATO's own session count (its index: expired sessions stay in).",
        k.sessions_reported,
    )
    yield scalar("kato_processors", "Cached processors in the KATO worker that answered.", k.processors)
    yield scalar("kato_processors_max", "Processor cache size of a KATO worker.", k.processors_max)


def session_families(s: SessionsSample | None) -> Iterator[Metric]:
    """kato_sessions_active 3.0, kato_session_events_total{event="expired"} 17.0 and friends."""
    if s is None:
        return
    yield gauge(
        "kato_exporter_session_mode",
        "1 for where sessions come from: redis (exact) or api.",
        ["mode"],
        one_of(("redis", "api"), s.mode),
    )
    yield scalar(
        "kato_sessions_active",
        "Live KATO sessions (exact in redis mode, KATO's count in api mode).",
        s.active,
    )
    if s.index_stale is not None:
        yield scalar(
            "kato_sessions_index_stale",
            "Members of KATO's session index whose session has expired.",
            s.index_stale,
        )
    yield counter(
        "kato_session_events_total",
        "Session changes seen, by kind.",
        ["event"],
        (([e], n) for e, n in sorted(s.events_total.items())),
    )


def request_families(r: RequestCounts | None) -> Iterator[Metric]:
    """kato_http_requests_total{method="GET",code="200"} 1520.0"""
    if r is None:
        return
    yield counter(
        "kato_http_requests_total",
        "Requests in the KATO containers' access logs.",
        ["method", "code"],
        ((list(key), n) for key, n in sorted(r.by_method_code.items())),
    )


def alert_families(counts: dict[str, int] | None) -> Iterator[Metric]:
    """kato_exporter_alertmanager_notifications_total{status="firing"} 3.0"""
    if counts is None:
        return
    yield counter(
        "kato_exporter_alertmanager_notifications_total",
        "Alertmanager webhook notifications received, by status.",
        ["status"],
        (([s], counts.get(s, 0)) for s in ("firing", "resolved")),
    )


class _Families:
    """What prometheus_client's encoders call ``collect()`` on."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self.collect = families


Format = tuple[str, bool]  # (content type, gzipped)
Builder = Callable[[Any], Iterable[Metric]]  # a source's value (None while it is down) → families


class Exposition:
    """Keeps the exposition bytes of the latest snapshot, in every format scrapers ask for.

    Bytes are rendered at most once per snapshot, in a worker thread, never once
    per scrape. Each source's families are encoded once per new value of that
    source (a host refresh does not re-encode a thousand containers), and the
    blocks are joined behind the exporter's own metrics.

    While a format is scraped at least every ``ahead_seconds`` (its last two
    requests that close together, the last one recent), each new snapshot is
    rendered ahead of time and scrapes only return bytes. A slower scraper
    (Prometheus every 5–15 s) gets the snapshot rendered on its first request,
    so a 1 s refresh does not cost a render every second that nobody reads.
    """

    def __init__(
        self,
        hub: Hub,
        builders: Mapping[str, Builder],
        ahead_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hub = hub
        self._builders = builders
        self._ahead_seconds = ahead_seconds
        self._clock = clock
        self._process = ProcessCollector(registry=None)
        self._blocks: dict[tuple[str, str], tuple[Any, bytes]] = {}
        self._asked: dict[Format, tuple[float, float]] = {}  # the last two requests
        self._version = -1
        self._cache: dict[Format, bytes] = {}

    def render(self, snapshot: Snapshot, formats: Iterable[Format]) -> dict[Format, bytes]:
        formats = list(formats)
        plain = {}
        for content_type in {content_type for content_type, _ in formats}:
            parts = [_encode(content_type, lambda: [*exporter_families(snapshot), *self._process.collect()])]
            for source, value in sorted(snapshot.values.items()):
                if source in self._builders:
                    parts.append(self._block(source, value, content_type))
            if content_type == OPENMETRICS:
                parts.append(b"# EOF\n")
            plain[content_type] = b"".join(parts)
        return {
            (content_type, zipped): gzip.compress(plain[content_type], 6, mtime=0)
            if zipped
            else plain[content_type]
            for content_type, zipped in formats
        }

    def _block(self, source: str, value: Any, content_type: str) -> bytes:
        cached = self._blocks.get((source, content_type))
        if cached is not None and cached[0] is value:
            return cached[1]
        body = _encode(content_type, lambda: self._builders[source](value))
        self._blocks[(source, content_type)] = (value, body)
        return body

    async def run(self) -> None:
        """Render each new snapshot ahead of scrapes, in the formats scraped often."""
        version = self._hub.snapshot.version
        while True:
            snapshot = await self._hub.next_snapshot(version)
            version = snapshot.version
            now, ahead = self._clock(), self._ahead_seconds
            wanted = {
                fmt
                for fmt, (before, last) in self._asked.items()
                if last - before <= ahead and now - last <= ahead
            }
            if wanted:
                await self._store(snapshot, wanted)

    async def get(self, fmt: Format) -> bytes:
        self._asked[fmt] = (self._asked.get(fmt, (-math.inf, -math.inf))[1], self._clock())
        snapshot = self._hub.snapshot
        if snapshot.version == self._version and fmt in self._cache:
            return self._cache[fmt]
        return (await self._store(snapshot, {fmt}))[fmt]

    async def _store(self, snapshot: Snapshot, formats: set[Format]) -> dict[Format, bytes]:
        rendered = await asyncio.to_thread(self.render, snapshot, formats)
        if snapshot.version > self._version:
            self._cache, self._version = dict(rendered), snapshot.version
        elif snapshot.version == self._version:
            self._cache.update(rendered)
        return rendered


def _encode(content_type: str, families: Callable[[], Iterable[Metric]]) -> bytes:
    """One block of exposition, without OpenMetrics' closing ``# EOF`` (added once, at the end)."""
    collector = _Families(families)
    if content_type == OPENMETRICS:
        body: bytes = generate_openmetrics(collector)  # type: ignore[no-untyped-call]
        return body.removesuffix(b"# EOF\n")
    return generate_latest(collector)


def default_builders(info_labels: Sequence[str] = ()) -> dict[str, Builder]:
    """Which families each source's value becomes."""
    return {
        "containers": lambda sample: container_families(sample, info_labels) if sample else (),
        "host": lambda sample: host_families(sample) if sample else (),
        "kato": kato_families,
        "kato_sessions": session_families,
        "kato_logs": request_families,
        "alertmanager": alert_families,
    }
