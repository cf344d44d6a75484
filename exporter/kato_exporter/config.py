"""Typed settings, from defaults < YAML file < environment < flags.

Every setting is declared once, below, as a dataclass field; the YAML keys,
the flags (``--collector.containers.interval``) and the environment variables
(``KATO_EXPORTER_COLLECTOR_CONTAINERS_INTERVAL``) are all derived from it.
Bad values raise ``ConfigError`` naming the field and where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

ENV_PREFIX = "KATO_EXPORTER_"

# Like node_exporter: pseudo and container-runtime mounts are not the host's disks.
# "kato", or compose's "<project>-kato-1"; not "kato-redis".
DEFAULT_KATO_CONTAINER = r"(.+[-_])?kato([-_][0-9]+)?"
DEFAULT_MOUNT_EXCLUDE = r"/(dev|proc|run|sys|var/lib/docker/.+|var/lib/containers/.+)($|/.*)"
DEFAULT_FS_TYPES_EXCLUDE = (
    r"autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660"
    r"|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs"
)
# Container veth ends come and go with containers: as host series they would churn.
DEFAULT_DEVICE_EXCLUDE = r"lo|veth.+"


class ConfigError(Exception):
    """Invalid configuration; the message names the field and its origin."""


# --- value parsers: raw value (YAML scalar or string) → typed value -------------


def parse_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    return raw


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(raw: Any) -> float:
    """``1s``, ``500ms``, ``2m`` or a number of seconds; must be positive."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        seconds = float(raw)
    else:
        match = _DURATION.fullmatch(str(raw).strip())
        if not match:
            raise ValueError(f"expected a duration such as 1s, 500ms or 2m, got {raw!r}")
        seconds = float(match[1]) * _UNITS[match[2]]
    if seconds <= 0:
        raise ValueError(f"must be positive, got {raw!r}")
    return seconds


def parse_positive_int(raw: Any) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected a whole number, got {raw!r}") from None
    if value < 1 or isinstance(raw, bool):
        raise ValueError(f"must be at least 1, got {raw!r}")
    return value


def parse_list(raw: Any) -> tuple[str, ...]:
    """A YAML list, or a comma-separated string."""
    if isinstance(raw, str):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise ValueError(f"expected a list of strings, got {raw!r}")


def parse_regex(raw: Any) -> re.Pattern[str]:
    try:
        return re.compile(parse_str(raw))
    except re.error as exc:
        raise ValueError(f"invalid regular expression {raw!r}: {exc}") from None


def parse_listen_address(raw: Any) -> str:
    text = parse_str(raw)
    _, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected [host]:port, got {raw!r}")
    return text


def split_address(address: str) -> tuple[str | None, int]:
    """``[host]:port`` (as --web.listen-address takes it) → (host or None for every address, port)."""
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or None), int(port)


def parse_path(raw: Any) -> str:
    text = parse_str(raw)
    if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", text) or text in ("/", "/-/healthy", "/-/ready"):
        raise ValueError(f"expected a path such as /metrics (not /, /-/healthy or /-/ready), got {raw!r}")
    return text


def parse_file(raw: Any) -> str:
    """A readable file, or the empty string (meaning: none)."""
    text = parse_str(raw)
    if text and not os.access(text, os.R_OK):
        reason = "does not exist" if not os.path.exists(text) else "cannot be read"
        raise ValueError(f"{text} {reason}")
    return text


def read_secret(path: str) -> str:
    """A secret from its file, without the trailing newline editors add."""
    with open(path) as f:
        return f.read().rstrip("\r\n")


def redact(text: str) -> str:
    """``text`` with the passwords of any URLs in it (``user:pass@``, ``?password=``) masked."""
    text = re.sub(r"(//[^:@/\s]*):[^@/\s]+@", r"\1:***@", text)
    return re.sub(r"([?&](?:password|pass|pwd|token)=)[^&\s]*", r"\1***", text, flags=re.IGNORECASE)


def parse_stream(raw: Any) -> str:
    """A Grafana Live stream id: letters, digits, ``_`` and ``-``."""
    text = parse_str(raw)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError(f"expected letters, digits, _ or - (a Grafana Live stream id), got {raw!r}")
    return text


def url_of(*schemes: str) -> Callable[[Any], str]:
    """A URL with one of ``schemes``, or the empty string (meaning: off)."""

    def parse(raw: Any) -> str:
        text = parse_str(raw).strip()
        if text and not text.startswith(tuple(f"{s}://" for s in schemes)):
            raise ValueError(f"expected a {' or '.join(s + '://' for s in schemes)} URL, got {raw!r}")
        return text.rstrip("/") if text.startswith("http") else text

    return parse


def url_or_off(*schemes: str) -> Callable[[Any], str]:
    """A URL with one of ``schemes``, ``off``, or the empty string (meaning: found, where it can be)."""
    url = url_of(*schemes)
    return lambda raw: "off" if parse_str(raw).strip() == "off" else url(raw)


def choice(*options: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        if raw not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return str(raw)

    return parse


def setting(default: Any, parse: Callable[[Any], Any], help: str, flag: str | None = None) -> Any:
    return field(default=default, metadata={"parse": parse, "help": help, "flag": flag})


# --- the settings ------------------------------------------------------------------


@dataclass(frozen=True)
class WebConfig:
    listen_address: str = setting(":9817", parse_listen_address, "Address to listen on, [host]:port.")
    telemetry_path: str = setting("/metrics", parse_path, "Path under which to expose metrics.")
    config_file: str = setting(
        "",
        parse_file,
        "TLS and basic auth for every endpoint: a web config file as node_exporter's "
        "(tls_server_config, basic_auth_users with bcrypt hashes).",
        flag="web.config.file",
    )
    health_check_auth_file: str = setting(
        "",
        parse_file,
        "File holding user:password for --health-check, when the web config file asks for basic auth.",
        flag="web.health-check.auth-file",
    )


@dataclass(frozen=True)
class LogConfig:
    level: str = setting("info", choice("debug", "info", "warning", "error"), "Log level.")


@dataclass(frozen=True)
class DockerConfig:
    host: str = setting(
        "", parse_str, "Docker API address; default $DOCKER_HOST, else unix:///var/run/docker.sock."
    )


@dataclass(frozen=True)
class PathConfig:
    procfs: str = setting("/proc", parse_str, "procfs mount point.")
    sysfs: str = setting("/sys", parse_str, "sysfs mount point.")
    rootfs: str = setting("/", parse_str, "Root of the host's filesystems.")


@dataclass(frozen=True)
class ContainersConfig:
    enabled: bool | None = setting(
        None,
        parse_bool,
        "Container metrics (default: on when a Docker socket is found).",
        flag="collector.containers",
    )
    interval: float = setting(
        1.0,
        parse_duration,
        "Refresh interval of container numbers while a 1 Hz reader reads (else: before each scrape).",
    )
    include: re.Pattern[str] = setting(
        re.compile(".*"), parse_regex, "Only containers whose name matches this regex (anchored)."
    )
    label_selector: tuple[str, ...] = setting(
        (), parse_list, "Only containers with these labels: comma-separated key or key=value."
    )
    info_labels: tuple[str, ...] = setting(
        (), parse_list, "Docker labels copied onto kato_container_info, comma-separated."
    )
    stats_mode: str = setting(
        "auto",
        choice("auto", "cgroup", "api"),
        "Where numbers come from: cgroup files, the Docker stats API, or auto.",
    )
    api_concurrency: int = setting(8, parse_positive_int, "Concurrent stats API calls in api mode.")


@dataclass(frozen=True)
class HostConfig:
    enabled: bool = setting(True, parse_bool, "Host metrics.", flag="collector.host")
    interval: float = setting(
        1.0,
        parse_duration,
        "Refresh interval of host numbers while a 1 Hz reader reads (else: before each scrape).",
    )
    mount_exclude: re.Pattern[str] = setting(
        re.compile(DEFAULT_MOUNT_EXCLUDE), parse_regex, "Mount points to ignore (anchored regex)."
    )
    fs_types_exclude: re.Pattern[str] = setting(
        re.compile(DEFAULT_FS_TYPES_EXCLUDE), parse_regex, "Filesystem types to ignore (anchored regex)."
    )
    mount_timeout: float = setting(
        5.0, parse_duration, "How long a filesystem's statfs may take before the mount is skipped."
    )
    device_exclude: re.Pattern[str] = setting(
        re.compile(DEFAULT_DEVICE_EXCLUDE), parse_regex, "Network devices to ignore (anchored regex)."
    )


@dataclass(frozen=True)
class KatoConfig:
    url: str = setting(
        "",
        url_or_off("http", "https"),
        "KATO API base URL (e.g. http://kato:8000); unset: KATO's containers found through Docker "
        "(its API and its Redis); off: no KATO sources.",
    )
    interval: float = setting(5.0, parse_duration, "Poll interval of /health, /metrics, /sessions/count.")
    discovery_interval: float = setting(
        30.0, parse_duration, "Without --kato.url: how often to look for KATO's containers until found."
    )
    timeout: float = setting(3.0, parse_duration, "Timeout of one KATO API call.")
    redis_url: str = setting(
        "",
        url_of("redis", "rediss", "unix"),
        "Redis holding KATO's sessions: exact counts and events. Without it: KATO's count and /ws/events.",
    )
    redis_password_file: str = setting(
        "", parse_file, "File holding the Redis password (instead of one in --kato.redis-url)."
    )
    redis_configure: bool = setting(
        True,
        parse_bool,
        "Turn Redis keyspace notifications on with CONFIG SET when they are off "
        "(--no-kato.redis-configure: leave CONFIG alone and say what to set).",
        flag="kato.redis-configure",
    )
    reconcile_interval: float = setting(
        300.0, parse_duration, "How often known sessions are checked against KATO's index."
    )
    logs: bool | None = setting(
        None,
        parse_bool,
        "Request counts from the KATO containers' access logs "
        "(default: on with --kato.url when a Docker socket is found).",
        flag="kato.logs",
    )
    log_container: re.Pattern[str] = setting(
        re.compile(DEFAULT_KATO_CONTAINER),
        parse_regex,
        "Containers whose access log is KATO's (anchored regex on the name), among the watched ones.",
    )


@dataclass(frozen=True)
class AlertmanagerConfig:
    token_file: str = setting(
        "",
        parse_file,
        "File holding the bearer token Alertmanager's webhook must send; the webhook is off without it.",
    )


@dataclass(frozen=True)
class LiveConfig:
    stream: str = setting(
        "kato", parse_stream, "Grafana Live stream: channels are stream/<stream>/<measurement>."
    )
    interval: float = setting(1.0, parse_duration, "How often the snapshot is pushed to Grafana Live.")


@dataclass(frozen=True)
class GrafanaConfig:
    url: str = setting(
        "", url_of("http", "https"), "Grafana base URL to push Live data to; the pusher is off without it."
    )
    token_file: str = setting(
        "", parse_file, "File holding a Grafana service account token (a Viewer's is enough)."
    )
    live: LiveConfig = field(default_factory=LiveConfig)


@dataclass(frozen=True)
class BridgeConfig:
    enabled: bool = setting(
        True, parse_bool, "The legacy dashboard's WebSocket at /ws and its REST calls.", flag="bridge"
    )
    tick: float = setting(1.0, parse_duration, "How often realtime_update is sent (only what changed).")
    max_clients: int = setting(
        2000, parse_positive_int, "WebSocket clients at most; more are closed with 1013."
    )
    max_message_size: int = setting(
        65536, parse_positive_int, "Largest frame a client may send, in bytes; larger: closed with 1009."
    )
    idle_timeout: float = setting(
        90.0,
        parse_duration,
        "A client that sends nothing (the page pings every 30 s) for this long is closed.",
    )
    allowed_origins: tuple[str, ...] = setting(
        (),
        parse_list,
        "Origins whose pages may connect, e.g. https://kato.example.org, or *; default: same host.",
    )
    queue_size: int = setting(64, parse_positive_int, "Messages waiting for one client at most.")
    slow_client_timeout: float = setting(
        5.0, parse_duration, "A client whose queue stays full this long is closed with 1013."
    )
    alertmanager_url: str = setting(
        "", url_of("http", "https"), "Alertmanager to ask for the alerts firing when a client subscribes."
    )
    upstream: str = setting(
        "", url_of("http", "https"), "The old dashboard backend: other /api/v1 calls are proxied there."
    )
    container_stats: bool = setting(True, parse_bool, "Send containers.", flag="bridge.container-stats")
    session_events: bool = setting(True, parse_bool, "Send session_event.", flag="bridge.session-events")
    system_alerts: bool = setting(True, parse_bool, "Send system_alert.", flag="bridge.system-alerts")
    selective_subscriptions: bool = setting(
        True,
        parse_bool,
        "Honour subscriptions (off: every client gets everything).",
        flag="bridge.selective-subscriptions",
    )


# The old dashboard backend's environment variables, honoured as aliases
LEGACY_ENV = {
    "WEBSOCKET_ENABLED": "bridge.enabled",
    "WEBSOCKET_CONTAINER_STATS": "bridge.container_stats",
    "WEBSOCKET_SESSION_EVENTS": "bridge.session_events",
    "WEBSOCKET_SYSTEM_ALERTS": "bridge.system_alerts",
    "WEBSOCKET_SELECTIVE_SUBSCRIPTIONS": "bridge.selective_subscriptions",
}


@dataclass(frozen=True)
class CollectorConfig:
    containers: ContainersConfig = field(default_factory=ContainersConfig)
    host: HostConfig = field(default_factory=HostConfig)


@dataclass(frozen=True)
class Config:
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    path: PathConfig = field(default_factory=PathConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    kato: KatoConfig = field(default_factory=KatoConfig)
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)
    grafana: GrafanaConfig = field(default_factory=GrafanaConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)


# --- deriving keys, flags and env vars --------------------------------------------


@dataclass(frozen=True)
class Leaf:
    key: str  # dotted YAML path: collector.containers.interval
    field: dataclasses.Field[Any]

    @property
    def flag(self) -> str:
        return "--" + (self.field.metadata["flag"] or self.key.replace("_", "-"))

    @property
    def env(self) -> str:
        return ENV_PREFIX + re.sub(r"[.-]", "_", self.flag[2:]).upper()

    @property
    def is_bool(self) -> bool:
        return self.field.metadata["parse"] is parse_bool

    def parse(self, raw: Any, origin: str) -> Any:
        try:
            return self.field.metadata["parse"](raw)
        except ValueError as exc:
            raise ConfigError(f"{origin}: {exc}") from None


def leaves(cls: type = Config, prefix: str = "") -> Iterator[Leaf]:
    for f in dataclasses.fields(cls):
        if "parse" in f.metadata:
            yield Leaf(prefix + f.name, f)
        else:
            yield from leaves(f.default_factory, prefix + f.name + ".")  # type: ignore[arg-type]


def load(
    flags: Mapping[str, Any],
    env: Mapping[str, str] = os.environ,
    config_file: str | None = None,
) -> Config:
    """Merge the sources of settings; ``flags`` maps keys (``web.listen_address``) to flag values."""
    values: dict[str, Any] = {}
    file_values = _read_file(config_file) if config_file else {}
    legacy = {key: name for name, key in LEGACY_ENV.items() if name in env}
    for leaf in leaves():
        if leaf.key in flags:
            values[leaf.key] = leaf.parse(flags[leaf.key], leaf.flag)
        elif leaf.env in env:
            values[leaf.key] = leaf.parse(env[leaf.env], leaf.env)
        elif leaf.key in legacy:
            values[leaf.key] = leaf.parse(env[legacy[leaf.key]], legacy[leaf.key])
        elif leaf.key in file_values:
            values[leaf.key] = leaf.parse(file_values[leaf.key], f"{config_file}: {leaf.key}")
    config: Config = _build(Config, values)
    if config.grafana.url and not config.grafana.token_file:
        raise ConfigError(
            "--grafana.token-file: needed with --grafana.url (Grafana Live takes no anonymous push)"
        )
    return config


def read_yaml(path: str) -> Any:
    """The document in a YAML file; ConfigError naming the file when it cannot be had."""
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def _read_file(path: str) -> dict[str, Any]:
    data = read_yaml(path)
    flat: dict[str, Any] = {}
    _flatten(data if data is not None else {}, Config, "", path, flat)
    return flat


def _flatten(data: Any, cls: type, prefix: str, path: str, out: dict[str, Any]) -> None:
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"{path}: {where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{path}: {prefix}{key}: unknown key (known here: {known})")
        if "parse" in f.metadata:
            out[prefix + key] = value
        else:
            _flatten(value, f.default_factory, prefix + key + ".", path, out)  # type: ignore[arg-type]


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if "parse" not in f.metadata:
            kwargs[f.name] = _build(f.default_factory, values, key + ".")  # type: ignore[arg-type]
        elif key in values:
            kwargs[f.name] = values[key]
    return cls(**kwargs)
