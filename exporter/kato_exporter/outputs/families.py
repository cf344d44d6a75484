"""What each source's value becomes: prometheus_client metric families.

Sample of the families, encoded::

    kato_container_state{name="kato",state="running"} 1.0
    kato_container_cpu_usage_seconds_total{name="kato"} 12.5
    kato_container_memory_limit_bytes{name="kato"} 6.7108864e+07
    kato_host_cpu_seconds_total{cpu="0",mode="user"} 1520.3
    kato_exporter_source_up{source="containers"} 1.0
"""

from __future__ import annotations

import bisect
import platform
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from kato_exporter import __version__
from kato_exporter.hub import Snapshot
from kato_exporter.model import (
    KATO_HEALTH_STATES,
    Container,
    ContainerMeta,
    ContainersSample,
    ContainerUsage,
    HostSample,
    KatoSample,
    LiveStats,
    RequestCounts,
    SessionsSample,
)

CONTAINER_STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")
HEALTH_STATES = ("starting", "healthy", "unhealthy")

Samples = Iterable[tuple[Sequence[str], float]]
Family = type[GaugeMetricFamily] | type[CounterMetricFamily]


def _family(kind: Family, name: str, doc: str, labels: Sequence[str], rows: Samples) -> Metric:
    family = kind(name, doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def gauge(name: str, doc: str, labels: Sequence[str], rows: Samples) -> Metric:
    return _family(GaugeMetricFamily, name, doc, labels, rows)


def counter(name: str, doc: str, labels: Sequence[str], rows: Samples) -> Metric:
    return _family(CounterMetricFamily, name, doc, labels, rows)


def scalar(name: str, doc: str, value: float) -> Metric:
    return gauge(name, doc, [], [([], value)])


def one_of(options: Sequence[str], current: str | None, *labels: str) -> Samples:
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
        "kato_exporter_collections_total",
        "Collections of the source (containers and host: when somebody will read them).",
        source,
        (([n], h.collections_total) for n, h in health),
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
    yield from containers_head(sample)
    yield from container_rows(sample.containers, info_labels)


def containers_head(sample: ContainersSample) -> Iterator[Metric]:
    """kato_exporter_container_stats_mode{mode="cgroup"} 1.0"""
    yield gauge(
        "kato_exporter_container_stats_mode",
        "1 for where container numbers come from: cgroup files or the Docker stats API.",
        ["mode"],
        one_of(("cgroup", "api"), sample.mode),
    )


def container_rows(containers: Sequence[Container], info_labels: Sequence[str]) -> Iterator[Metric]:
    """The per-container families, always the same ones in the same order (empty without
    containers), each with the containers' samples in the order given."""
    metas = [c.meta for c in containers]
    info = InfoMetricFamily("kato_container", "Container metadata.", labels=["name"])
    for m in metas:
        values = {
            "id": m.id,
            "image": m.image,
            "compose_project": m.labels.get("com.docker.compose.project", ""),
            "compose_service": m.labels.get("com.docker.compose.service", ""),
            "restart_policy": m.restart_policy or "no",
            "network_mode": m.network_mode,
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
        "Restarts by Docker's restart policy (drops to 0 on `docker start` and on re-creation).",
        name,
        (([m.name], m.restarts) for m in metas),
    )
    yield gauge(
        "kato_container_exit_code",
        "Exit code of the container's last run, while it is not running.",
        name,
        (([m.name], m.exit_code) for m in metas if m.state in ("exited", "dead", "restarting")),
    )
    running = [(c.meta, c.usage) for c in containers if c.usage is not None]
    yield gauge(
        "kato_container_start_time_seconds",
        "Unix time the container last started.",
        name,
        (([m.name], m.started_at) for m, _ in running if m.started_at),
    )
    yield from _usage_families(running)


_USAGE: tuple[tuple[Family, str, str, Callable[[ContainerMeta, ContainerUsage], Any]], ...] = (
    (
        CounterMetricFamily,
        "kato_container_cpu_usage_seconds_total",
        "CPU time used.",
        lambda _, u: u.cpu_seconds,
    ),
    (
        GaugeMetricFamily,
        "kato_container_cpu_limit_cores",
        "CPU limit in cores, where one is set.",
        lambda _, u: u.cpu_limit_cores,
    ),
    (
        GaugeMetricFamily,
        "kato_container_memory_usage_bytes",
        "Memory charged, page cache included.",
        lambda _, u: u.memory_usage_bytes,
    ),
    (
        GaugeMetricFamily,
        "kato_container_memory_working_set_bytes",
        "Memory usage minus inactive file pages (what docker stats shows).",
        lambda _, u: u.memory_working_set_bytes,
    ),
    (
        GaugeMetricFamily,
        "kato_container_memory_limit_bytes",
        "Memory limit, where one is set.",
        lambda _, u: u.memory_limit_bytes,
    ),
    (
        CounterMetricFamily,
        "kato_container_network_receive_bytes_total",
        "Bytes received on all interfaces but lo (not for containers on another's network).",
        lambda m, u: u.network_receive_bytes if m.own_network else None,
    ),
    (
        CounterMetricFamily,
        "kato_container_network_transmit_bytes_total",
        "Bytes sent on all interfaces but lo (not for containers on another's network).",
        lambda m, u: u.network_transmit_bytes if m.own_network else None,
    ),
    (
        CounterMetricFamily,
        "kato_container_block_read_bytes_total",
        "Bytes read from block devices.",
        lambda _, u: u.block_read_bytes,
    ),
    (
        CounterMetricFamily,
        "kato_container_block_write_bytes_total",
        "Bytes written to block devices.",
        lambda _, u: u.block_write_bytes,
    ),
    (
        GaugeMetricFamily,
        "kato_container_pids",
        "Processes and threads in the container (where the pids controller is on).",
        lambda _, u: u.pids,
    ),
)


def _usage_families(running: list[tuple[ContainerMeta, ContainerUsage]]) -> Iterator[Metric]:
    for kind, metric, doc, read in _USAGE:
        yield _family(
            kind, metric, doc, ["name"], (([m.name], v) for m, u in running if (v := read(m, u)) is not None)
        )


def host_families(h: HostSample) -> Iterator[Metric]:
    """kato_host_cpu_seconds_total{cpu="0",mode="user"} 1520.3 and friends."""
    yield counter(
        "kato_host_cpu_seconds_total",
        "Seconds the CPUs spent in each mode (as node_cpu_seconds_total).",
        ["cpu", "mode"],
        ((list(key), seconds) for key, seconds in h.cpu_seconds.items()),
    )
    scalars = (
        ("kato_host_cpus", "Logical CPUs.", h.cpu_count),
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
        (([f.mountpoint, f.fstype], f.size_bytes) for f in h.filesystems if not f.unresponsive),
    )
    yield gauge(
        "kato_host_filesystem_used_bytes",
        "Filesystem space in use.",
        fs_labels,
        (([f.mountpoint, f.fstype], f.used_bytes) for f in h.filesystems if not f.unresponsive),
    )
    yield gauge(
        "kato_host_filesystem_avail_bytes",
        "Filesystem space free to unprivileged users (reserved blocks are not).",
        fs_labels,
        (([f.mountpoint, f.fstype], f.avail_bytes) for f in h.filesystems if not f.unresponsive),
    )
    yield gauge(
        "kato_host_filesystem_device_error",
        "1 when the filesystem's statfs did not answer in time (its sizes are left out).",
        fs_labels,
        (([f.mountpoint, f.fstype], float(f.unresponsive)) for f in h.filesystems),
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
    yield scalar(
        "kato_start_time_seconds",
        "Unix time the newest KATO worker started (workers of one start read as one).",
        k.start_time_seconds,
    )
    yield scalar(
        "kato_sessions_reported",
        "KATO's own session count (its index: expired sessions stay in).",
        k.sessions_reported,
    )
    yield scalar(
        "kato_processors",
        "Cached processors in the KATO worker that answered this poll (KATO says not which).",
        k.processors,
    )
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
        "Session changes seen: created, destroyed (deleted), expired, evicted (Redis out of maxmemory).",
        ["event"],
        (([e], n) for e, n in sorted(s.events_total.items())),
    )
    if s.missed_total is not None:
        yield counter(
            "kato_session_events_missed_total",
            "Session changes that no event announced, found by a reconcile with KATO's index "
            "(the subscription fell behind or was lost): created, ended (deleted or expired).",
            ["event"],
            (([e], n) for e, n in sorted(s.missed_total.items())),
        )


def request_families(r: RequestCounts | None) -> Iterator[Metric]:
    """kato_http_requests_total{method="GET",code="200"} 1520.0 and
    kato_http_responses_total{method="GET",code_class="2xx"} 1520.0.

    The classes' series are there from the start at 0, for every method, so that rate() sees
    the first 5xx of each (a series that appears at 1 has no increase to show); the exact
    codes come as they are seen."""
    if r is None:
        return
    yield counter(
        "kato_http_requests_total",
        "Requests in the KATO containers' access logs, by exact status code.",
        ["method", "code"],
        ((list(key), n) for key, n in sorted(r.by_method_code.items())),
    )
    yield counter(
        "kato_http_responses_total",
        "Requests in the KATO containers' access logs, by status class (what the rules use).",
        ["method", "code_class"],
        ((list(key), n) for key, n in r.by_method_class.items()),
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


def live_families(stats: LiveStats | None) -> Iterator[Metric]:
    """kato_exporter_live_pushes_total{result="success"} 120.0 and the push duration."""
    if stats is None:
        return
    yield counter(
        "kato_exporter_live_pushes_total",
        "Bodies pushed to Grafana Live, by result (dropped: the oldest, from a full queue).",
        ["result"],
        (([r], n) for r, n in sorted(stats.pushes.items())),
    )
    yield SummaryMetricFamily(
        "kato_exporter_live_push_duration_seconds",
        "Duration of pushes to Grafana Live that got an answer.",
        count_value=stats.duration_count,
        sum_value=stats.duration_sum,
    )


@dataclass(frozen=True)
class RowFamilies:
    """The families of a source whose value is made of rows (one per container), so that an
    encoder can keep each row's lines and encode a row again only when it changed.

    ``head(value)``: the families of the value as a whole. ``rows(value)``: its rows, each
    with a key. ``families(rows)``: the per-row families of any rows, always the same ones in
    the same order (empty without rows), each with the rows' samples in the order given.
    Called with the whole value, it returns what an encoder of the whole would see.
    """

    head: Callable[[Any], Iterable[Metric]]
    rows: Callable[[Any], Sequence[tuple[Hashable, Any]]]
    families: Callable[[Sequence[Any]], Iterable[Metric]]

    def __call__(self, value: Any) -> list[Metric]:
        if value is None:
            return []
        return [*self.head(value), *self.families([row for _, row in self.rows(value)])]


Builder = Callable[[Any], Iterable[Metric]]  # a source's value (None while it is down) → families


def default_builders(info_labels: Sequence[str] = ()) -> dict[str, Builder]:
    """Which families each source's value becomes."""
    return {
        "containers": RowFamilies(
            head=containers_head,
            rows=lambda sample: [(c.meta.id, c) for c in sample.containers],
            families=lambda containers: container_rows(containers, info_labels),
        ),
        "host": lambda sample: host_families(sample) if sample else (),
        "kato": kato_families,
        "kato_sessions": session_families,
        "kato_logs": request_families,
        "alertmanager": alert_families,
        "grafana_live": live_families,
    }


class Durations:
    """A histogram of durations by one label, without a lock (the GIL orders its updates), so
    that a garbage-collector callback may feed it."""

    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self, name: str, documentation: str, label: str, values: Iterable[str]) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self._counts = {value: [0] * (len(self.BUCKETS) + 1) for value in values}
        self._sums = dict.fromkeys(self._counts, 0.0)

    def observe(self, value: str, seconds: float) -> None:
        self._counts[value][bisect.bisect_left(self.BUCKETS, seconds)] += 1
        self._sums[value] += seconds

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, counts in self._counts.items():
            cumulative = [sum(counts[: i + 1]) for i in range(len(counts))]
            bounds = [*(repr(b) for b in self.BUCKETS), "+Inf"]
            family.add_metric([value], list(zip(bounds, cumulative, strict=True)), self._sums[value])
        return family
