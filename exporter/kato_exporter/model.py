"""Plain data the sources yield. Nothing here knows about Prometheus."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ContainerMeta:
    """What the Docker API says about one container."""

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    state: str  # created|running|paused|restarting|removing|exited|dead
    health: str | None  # starting|healthy|unhealthy, None without a healthcheck
    restarts: int
    started_at: float | None  # Unix seconds, None if never started
    pid: int  # init process on the host, 0 when not running
    cpu_limit_cores: float | None = None  # as configured (HostConfig)
    memory_limit_bytes: int | None = None
    exit_code: int = 0  # of the last run (0 while running)
    restart_policy: str = ""  # no|always|unless-stopped|on-failure ("" = no)
    network_mode: str = ""  # bridge|host|none|container:<id>|<network name>

    @property
    def own_network(self) -> bool:
        """False when the container shares the host's network namespace or another
        container's: its interfaces' counters are theirs, not its own."""
        return not (self.network_mode == "host" or self.network_mode.startswith("container:"))


@dataclass(frozen=True)
class ContainerUsage:
    """Cumulative counters and current gauges of one running container."""

    cpu_seconds: float
    memory_usage_bytes: int
    memory_working_set_bytes: int
    network_receive_bytes: int
    network_transmit_bytes: int
    block_read_bytes: int
    block_write_bytes: int
    pids: int | None  # None without the pids controller
    cpu_limit_cores: float | None = None
    memory_limit_bytes: int | None = None


@dataclass(frozen=True)
class Container:
    meta: ContainerMeta
    usage: ContainerUsage | None  # None when stopped or unreadable


@dataclass(frozen=True)
class ContainersSample:
    containers: tuple[Container, ...]
    mode: str  # "cgroup" or "api"


@dataclass(frozen=True)
class Filesystem:
    mountpoint: str
    fstype: str
    size_bytes: int
    used_bytes: int
    avail_bytes: int = 0  # free to unprivileged users (f_bavail): reserved blocks are not
    unresponsive: bool = False  # statfs did not answer in time: sizes unknown


# the modes of node_exporter's node_cpu_seconds_total; guest time is already inside user time
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
CPU_IDLE_MODES = ("idle", "iowait")  # a CPU waiting on I/O is free to run anything else


@dataclass(frozen=True)
class HostSample:
    cpu_seconds: Mapping[tuple[str, str], float]  # (cpu, mode) -> seconds since boot
    load1: float
    load5: float
    load15: float
    memory_total_bytes: int
    memory_available_bytes: int
    swap_total_bytes: int
    swap_used_bytes: int
    boot_time_seconds: float
    filesystems: tuple[Filesystem, ...]
    network: Mapping[str, tuple[int, int]]  # device -> (receive, transmit) bytes

    @property
    def cpu_count(self) -> int:
        """The CPUs the counters are of."""
        return len({cpu for cpu, _ in self.cpu_seconds}) or 1

    @property
    def cpu_busy_seconds(self) -> float:
        """CPU time in every mode but idle and iowait, over all CPUs."""
        return sum(v for (_, mode), v in self.cpu_seconds.items() if mode not in CPU_IDLE_MODES)

    @property
    def memory_usage_ratio(self) -> float:
        if not self.memory_total_bytes:
            return 0.0
        return 1 - self.memory_available_bytes / self.memory_total_bytes


@dataclass(frozen=True)
class SourceHealth:
    """How a source's last collection went."""

    up: bool
    duration_seconds: float = 0.0
    errors_total: int = 0
    collections_total: int = 0
    last_success_seconds: float | None = None
    last_error: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


KATO_HEALTH_STATES = ("healthy", "degraded", "unhealthy")


@dataclass(frozen=True)
class KatoSample:
    """KATO's own view, from GET /health, /metrics and /sessions/count."""

    status: str  # healthy|degraded|unhealthy
    start_time_seconds: float  # the newest start of a KATO worker seen (see KatoSource)
    sessions_reported: int  # SCARD of KATO's session index: never drops on expiry
    processors: int  # per worker: whichever worker answered
    processors_max: int
    # the documents as KATO sent them, for the legacy page (never changed in place)
    health: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)


SESSION_EVENTS = ("created", "destroyed", "expired", "evicted")  # evicted: Redis out of maxmemory


@dataclass(frozen=True)
class SessionsSample:
    mode: str  # "redis": exact, from keyspace events; "api": KATO's count and /ws/events
    active: int
    events_total: Mapping[str, int]  # each of SESSION_EVENTS -> count since start
    index_stale: int | None = None  # index members whose session is gone (redis mode)
    # redis mode: changes a reconcile found that no event announced (created|ended -> count)
    missed_total: Mapping[str, int] | None = None


@dataclass(frozen=True)
class SessionEvent:
    """One session change, as published on the hub (no session id: ids are unbounded)."""

    type: str  # one of SESSION_EVENTS
    timestamp: float  # Unix seconds when the exporter saw it
    active: int  # live sessions after the change


# the methods counted by name; any other is "OTHER"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(frozen=True)
class RequestCounts:
    """HTTP requests seen in the KATO containers' access logs, by method and status code."""

    by_method_code: Mapping[tuple[str, str], int]
    containers: int  # log streams being followed

    @property
    def by_method_class(self) -> dict[tuple[str, str], int]:
        """(method, "5xx") -> requests, every method and class there, at 0 until seen."""
        classes = {(m, c): 0 for m in (*sorted(HTTP_METHODS), "OTHER") for c in CODE_CLASSES}
        for (method, code), n in self.by_method_code.items():
            classes[method, f"{code[:1]}xx"] += n
        return classes


@dataclass(frozen=True)
class AlertNotice:
    """One alert of an Alertmanager webhook notification, as published on the hub."""

    status: str  # firing|resolved
    name: str
    severity: str
    legacy_type: str  # high_cpu|high_memory|high_error_rate|container_down, or ""
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str
    ends_at: str


@dataclass(frozen=True)
class LiveStats:
    """What the Grafana Live pusher did since it started."""

    pushes: Mapping[str, int]  # success|error|dropped -> bodies
    duration_sum: float  # seconds spent in pushes that got an answer
    duration_count: int
