"""The native stack: kato-exporter, Prometheus and Alertmanager on this machine, with this
repository's configs, all state under one folder; and Grafana with the KATO dashboards when a
`grafana` (or `grafana-server`) binary is on the PATH.

    scripts/run.sh                       # installs what is missing, starts the three, Ctrl-C stops them
    scripts/run.sh --state /var/lib/kato-monitoring -- --kato.url=http://localhost:8000
    scripts/run.sh --ha --remote-write http://localhost:8428/api/v1/write  # 2 Alertmanagers, a store

Where KATO is given (KATO_URL or the exporter's --kato.url, KATO_REDIS_URL or --kato.redis-url),
blackbox_exporter probes KATO's /health, its ClickHouse and its Qdrant, and redis_exporter reads
its Redis.

The configs are rendered into <state>/config from prometheus/ and alertmanager/: ports, the
exporter's address (with this machine's hostname as its `host`), the other hosts' target files
(the repository's prometheus/targets/, read live) and the secret files' paths filled in, nothing
else changed. Secrets stay outside the repository: KATO_SLACK_API_URL_FILE and
KATO_SMTP_PASSWORD_FILE name the files that hold the Slack webhook URL and the SMTP password;
KATO_SMTP_SMARTHOST, KATO_SMTP_FROM and KATO_ALERT_EMAIL_TO set where mail goes. Grafana's
admin password is made on first start in <state>/secrets/grafana_admin_password; a Viewer service
account's token, made through Grafana's API, lets the exporter push to Grafana Live.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kato_exporter.grafana_token import make_token

ROOT = Path(__file__).resolve().parent.parent
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_TIMEOUT = 10.0  # seconds each program has to stop on SIGTERM before it is killed
PR_SET_PDEATHSIG = 1
READY_PATHS = {"redis-exporter": "/"}  # where a program answers once it is up; others: /-/ready


@dataclass
class Settings:
    state: Path = ROOT / ".state"
    host: str = "0.0.0.0"
    exporter_port: int = 9817
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    # --ha: a second Alertmanager on this web port; the two gossip on the cluster ports
    ha_port: int | None = None
    cluster_ports: tuple[int, int] = (9094, 9096)
    grafana_port: int = 3000
    host_label: str = field(default_factory=socket.gethostname)  # this host's `host` label
    targets: Path = ROOT / "prometheus" / "targets"  # the other hosts' exporters, one file each
    remote_write_url: str | None = os.environ.get("KATO_REMOTE_WRITE_URL")
    grafana: str | None = field(
        default_factory=lambda: shutil.which("grafana") or shutil.which("grafana-server")
    )
    exporter_args: list[str] = field(default_factory=list)
    # KATO's Redis (KATO_REDIS_URL, or the exporter's --kato.redis-url): watched by redis_exporter too
    redis_url: str | None = os.environ.get("KATO_REDIS_URL") or None
    redis_password_file: str | None = os.environ.get("KATO_REDIS_PASSWORD_FILE") or None
    redis_exporter_port: int = 9121
    # KATO's API (KATO_URL, or the exporter's --kato.url) probed from outside by blackbox_exporter,
    # with its ClickHouse and Qdrant: KATO_CLICKHOUSE_URL and KATO_QDRANT_URL, by default KATO's
    # host on their ports (8123, 6333); "off", not probed
    kato_url: str | None = os.environ.get("KATO_URL") or None
    clickhouse_url: str | None = os.environ.get("KATO_CLICKHOUSE_URL") or None
    qdrant_url: str | None = os.environ.get("KATO_QDRANT_URL") or None
    blackbox_exporter_port: int = 9115
    slack_api_url_file: str | None = os.environ.get("KATO_SLACK_API_URL_FILE")
    smtp_password_file: str | None = os.environ.get("KATO_SMTP_PASSWORD_FILE")
    smtp_smarthost: str | None = os.environ.get("KATO_SMTP_SMARTHOST")
    smtp_from: str | None = os.environ.get("KATO_SMTP_FROM")
    email_to: str | None = os.environ.get("KATO_ALERT_EMAIL_TO")
    # Faster clocks, for tests; None keeps the repository's values.
    scrape_interval: str | None = None
    probe_interval: str | None = None  # blackbox_exporter's probes take up to 0.5 s less than this
    evaluation_interval: str | None = None
    group_wait: str | None = None
    group_interval: str | None = None
    resend_delay: str | None = None
    peer_timeout: str | None = None  # how long the second Alertmanager of --ha waits for the first

    def __post_init__(self) -> None:
        """One KATO and one KATO Redis for the exporter and the other exporters, whichever way
        they were given."""
        for name, flag in (
            ("kato_url", "--kato.url"),
            ("redis_url", "--kato.redis-url"),
            ("redis_password_file", "--kato.redis-password-file"),
        ):
            given = [arg.split("=", 1)[1] for arg in self.exporter_args if arg.startswith(flag + "=")]
            if given:
                setattr(self, name, given[-1])
            elif getattr(self, name):
                self.exporter_args = [*self.exporter_args, f"{flag}={getattr(self, name)}"]


def render(s: Settings) -> tuple[Path, Path]:
    """Write the configs into <state>/config; return the Prometheus and Alertmanager config files."""
    config = s.state / "config"
    for target in (config / "prometheus", config / "alertmanager"):
        if target.exists():
            shutil.rmtree(target)
    files = render_into(s, config / "prometheus", config / "alertmanager", webhook_token(s), s.targets)
    render_grafana(s, config / "grafana")
    return files


def render_into(
    s: Settings, prometheus: Path, alertmanager: Path, token: Path, targets: Path | str
) -> tuple[Path, Path]:
    """The repository's prometheus/ and alertmanager/ copied into these folders (over what is
    there) with ports, addresses, the other hosts' target files, the webhook's token file and the
    secrets' paths filled in; return the two config files."""
    for source, target in ((ROOT / "prometheus", prometheus), (ROOT / "alertmanager", alertmanager)):
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("tests"), dirs_exist_ok=True)

    prom = yaml.safe_load((prometheus / "prometheus.yml").read_text())
    if s.evaluation_interval:
        prom["global"]["evaluation_interval"] = s.evaluation_interval
    alertmanagers = [{"targets": [f"localhost:{port}" for port in alertmanager_ports(s)]}]
    prom["alerting"]["alertmanagers"] = [{"static_configs": alertmanagers}]  # each, no balancer
    for job in prom["scrape_configs"]:
        if job["job_name"] == "kato-exporter":
            job["scrape_interval"] = s.scrape_interval or job["scrape_interval"]
            local = {"targets": [f"localhost:{s.exporter_port}"], "labels": {"host": s.host_label}}
            job["static_configs"] = [local]
            job["file_sd_configs"][0]["files"] = [str(Path(targets) / "*.yml")]
        if job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"localhost:{s.prometheus_port}"]}]
        if job["job_name"] == "alertmanager":
            job.pop("dns_sd_configs", None)
            job["static_configs"] = alertmanagers
        if job["job_name"] == "redis":
            job.pop("dns_sd_configs")
            job.pop("relabel_configs")
            local = {"targets": [f"localhost:{s.redis_exporter_port}"], "labels": {"host": s.host_label}}
            job["static_configs"] = [local]
        if job["job_name"] == "blackbox":
            job["scrape_interval"] = s.probe_interval or job["scrape_interval"]
            job["relabel_configs"][-1]["replacement"] = f"localhost:{s.blackbox_exporter_port}"
    dropped = {"redis"} if not s.redis_url else set()  # no KATO Redis, no redis_exporter
    for file in (prometheus / "probes").glob("*.yml"):
        file.unlink()  # the repository's are compose's names
    if probes := probe_targets(s):
        (prometheus / "probes" / "kato.yml").write_text(yaml.safe_dump(probes, sort_keys=False))
    else:
        dropped.add("blackbox")
    prom["scrape_configs"] = [job for job in prom["scrape_configs"] if job["job_name"] not in dropped]
    if s.remote_write_url:
        prom["remote_write"] = [{"url": s.remote_write_url}]
    (prometheus / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))

    am = yaml.safe_load((alertmanager / "alertmanager.yml").read_text())
    overrides = {
        "slack_api_url_file": s.slack_api_url_file,
        "smtp_auth_password_file": s.smtp_password_file,
        "smtp_smarthost": s.smtp_smarthost,
        "smtp_from": s.smtp_from,
    }
    am["global"].update({key: value for key, value in overrides.items() if value})
    for key, value in (("group_wait", s.group_wait), ("group_interval", s.group_interval)):
        if value:
            am["route"][key] = value
    for receiver in am["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://localhost:{s.exporter_port}/api/v1/alertmanager"
            hook["http_config"]["authorization"]["credentials_file"] = str(token)
        for mail in receiver.get("email_configs", []):
            mail["to"] = s.email_to or mail["to"]
    (alertmanager / "alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))
    return prometheus / "prometheus.yml", alertmanager / "alertmanager.yml"


def probe_targets(s: Settings) -> list[dict[str, object]]:
    """blackbox_exporter's targets, as file_sd entries: KATO's /health, its ClickHouse's /ping and
    its Qdrant's /readyz; none without KATO's URL."""
    if not s.kato_url or s.kato_url == "off":
        return []
    host = urllib.parse.urlsplit(s.kato_url).hostname
    wanted = [
        (s.kato_url.rstrip("/") + "/health", "kato_health", "kato"),
        (s.clickhouse_url or f"http://{host}:8123/ping", "clickhouse_ping", "clickhouse"),
        (s.qdrant_url or f"http://{host}:6333/readyz", "qdrant_ready", "qdrant"),
    ]
    return [
        {"targets": [url], "labels": {"module": module, "service": service, "host": s.host_label}}
        for url, module, service in wanted
        if url != "off"
    ]


def alertmanager_ports(s: Settings) -> list[int]:
    return [s.alertmanager_port, *([s.ha_port] if s.ha_port else [])]


def render_grafana(s: Settings, target: Path) -> None:
    """Grafana's provisioning, pointed at this stack's Prometheus and Alertmanager and at the
    repository's dashboards."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(ROOT / "grafana" / "provisioning", target)
    sources_file = target / "datasources" / "kato.yml"
    sources = yaml.safe_load(sources_file.read_text())
    ports = {"prometheus": s.prometheus_port, "alertmanager": s.alertmanager_port}
    for source in sources["datasources"]:
        source["url"] = f"http://localhost:{ports[source['type']]}"
    sources_file.write_text(yaml.safe_dump(sources, sort_keys=False))
    provider_file = target / "dashboards" / "kato.yml"
    providers = yaml.safe_load(provider_file.read_text())
    providers["providers"][0]["options"]["path"] = str(ROOT / "grafana" / "dashboards")
    provider_file.write_text(yaml.safe_dump(providers, sort_keys=False))


def secret_file(s: Settings, name: str, make: Callable[[], str], keep: bool = True) -> Path:
    """<state>/secrets/<name>, readable by its owner only: made on first start, and kept after
    (``keep=False``: written anew each start, from what it is made of)."""
    path = s.state / "secrets" / name
    if not (keep and path.exists()):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        path.write_text(make() + "\n")
    return path


def webhook_token(s: Settings) -> Path:
    """The token Alertmanager sends to the exporter's webhook."""
    return secret_file(s, "webhook_token", lambda: secrets.token_urlsafe(32))


@dataclass
class Program:
    name: str
    url: str
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    ready_path: str = "/-/ready"
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches the stack, which stops each in turn
            preexec_fn=die_with_parent,
            env={**os.environ, **self.env},
        )
        wait_ready(self)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Signal the program's process group: whatever it started goes with it."""
        if self.running():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def stop(self) -> None:
        stop([self])


def die_with_parent() -> None:
    """In the child: SIGTERM when the stack's process ends, however it ends (even SIGKILL)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_grafana(s: Settings) -> Program:
    """Grafana with the rendered provisioning, all its state under <state>/grafana."""
    assert s.grafana is not None
    home = os.environ.get("KATO_GRAFANA_HOME") or next(
        (
            str(p)
            for p in (Path("/usr/share/grafana"), Path(s.grafana).resolve().parent.parent)
            if (p / "conf").is_dir()
        ),
        "/usr/share/grafana",
    )
    command = [s.grafana, *(["server"] if Path(s.grafana).name == "grafana" else []), f"--homepath={home}"]
    password = secret_file(s, "grafana_admin_password", lambda: secrets.token_urlsafe(24))
    data = s.state / "grafana"
    env = {
        "GF_PATHS_DATA": str(data),
        "GF_PATHS_LOGS": str(data / "log"),  # its own file log; stdout goes to <state>/logs
        "GF_PATHS_PLUGINS": str(data / "plugins"),
        "GF_PATHS_PROVISIONING": str(s.state / "config" / "grafana"),
        "GF_SERVER_HTTP_ADDR": s.host,
        "GF_SERVER_HTTP_PORT": str(s.grafana_port),
        "GF_SECURITY_ADMIN_PASSWORD__FILE": str(password),
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_LIVE_MAX_CONNECTIONS": "100",
        "GF_LIVE_ALLOWED_ORIGINS": f"http://localhost:{s.grafana_port}",
    }
    program = Program(
        "grafana",
        f"http://localhost:{s.grafana_port}",
        command,
        s.state / "logs" / "grafana.log",
        ready_path="/api/health",
        env=env,
    )
    program.start()
    return program


def grafana_token(s: Settings, grafana: Program) -> Path:
    """A token of the Viewer service account ``kato-exporter``, made once through Grafana's API."""
    password = (s.state / "secrets" / "grafana_admin_password").read_text().strip()
    return secret_file(s, "grafana_token", lambda: make_token(grafana.url, password))


def start(s: Settings) -> list[Program]:
    """Start the programs and wait until each says it is ready."""
    prometheus_config, alertmanager_config = render(s)
    logs = s.state / "logs"
    for folder in (logs, s.state / "prometheus"):  # each Alertmanager's: alertmanager_commands
        folder.mkdir(parents=True, exist_ok=True)
    programs: list[Program] = []
    live: list[str] = []
    if s.grafana:
        try:
            programs.append(start_grafana(s))
            token = grafana_token(s, programs[0])
        except BaseException:
            stop(programs)
            raise
        live = [f"--grafana.url={programs[0].url}", f"--grafana.token-file={token}"]
    commands = {
        "kato-exporter": (
            s.exporter_port,
            [
                sys.executable,
                "-m",
                "kato_exporter",
                f"--web.listen-address={s.host}:{s.exporter_port}",
                f"--alertmanager.token-file={webhook_token(s)}",
                *live,
                *s.exporter_args,
            ],
        ),
        **alertmanager_commands(s, alertmanager_config),
        **redis_exporter_command(s),
        **blackbox_exporter_command(s),
        "prometheus": (
            s.prometheus_port,
            [
                "prometheus",
                f"--config.file={prometheus_config}",
                f"--storage.tsdb.path={s.state / 'prometheus'}",
                f"--web.listen-address={s.host}:{s.prometheus_port}",
                f"--web.external-url=http://localhost:{s.prometheus_port}",
                "--web.enable-lifecycle",
                *([f"--rules.alert.resend-delay={s.resend_delay}"] if s.resend_delay else []),
            ],
        ),
    }
    try:
        for name, (port, command) in commands.items():
            ready = READY_PATHS.get(name, "/-/ready")
            programs.append(
                Program(name, f"http://localhost:{port}", command, logs / f"{name}.log", ready_path=ready)
            )
            programs[-1].start()
    except BaseException:
        stop(programs)
        raise
    return programs


def redis_exporter_command(s: Settings) -> dict[str, tuple[int, list[str]]]:
    """redis_exporter on KATO's Redis, when there is one; its password from a file, never a flag
    (redis_exporter 1.45 reads a JSON map of address to password)."""
    if not s.redis_url:
        return {}
    command = [
        "prometheus-redis-exporter",
        f"-redis.addr={s.redis_url}",
        f"-web.listen-address={s.host}:{s.redis_exporter_port}",
    ]
    if s.redis_password_file:
        password = Path(s.redis_password_file).read_text().strip()
        mapping = secret_file(
            s, "redis_password_map.json", lambda: json.dumps({s.redis_url: password}), keep=False
        )
        command.append(f"-redis.password-file={mapping}")
    return {"redis-exporter": (s.redis_exporter_port, command)}


def blackbox_exporter_command(s: Settings) -> dict[str, tuple[int, list[str]]]:
    """blackbox_exporter with the repository's modules, when there is something to probe."""
    if not probe_targets(s):
        return {}
    command = [
        "prometheus-blackbox-exporter",
        f"--config.file={ROOT / 'blackbox' / 'blackbox.yml'}",
        f"--web.listen-address={s.host}:{s.blackbox_exporter_port}",
    ]
    return {"blackbox-exporter": (s.blackbox_exporter_port, command)}


def alertmanager_commands(s: Settings, config: Path) -> dict[str, tuple[int, list[str]]]:
    """One Alertmanager without gossip; with --ha two, each the other's peer. Makes their storage."""
    ports = alertmanager_ports(s)
    commands = {}
    for number, port in enumerate(ports):
        name = "alertmanager" if number == 0 else f"alertmanager-{number + 1}"
        storage = s.state / name
        storage.mkdir(parents=True, exist_ok=True)
        if len(ports) == 1:
            cluster = ["--cluster.listen-address="]
        else:
            own, peer = s.cluster_ports[number], s.cluster_ports[1 - number]
            cluster = [
                f"--cluster.listen-address=127.0.0.1:{own}",
                f"--cluster.advertise-address=127.0.0.1:{own}",
                f"--cluster.peer=127.0.0.1:{peer}",
                *([f"--cluster.peer-timeout={s.peer_timeout}"] if s.peer_timeout else []),
            ]
        commands[name] = (
            port,
            [
                "prometheus-alertmanager",
                f"--config.file={config}",
                f"--storage.path={storage}",
                f"--web.listen-address={s.host}:{port}",
                f"--web.external-url=http://localhost:{port}",
                *cluster,
            ],
        )
    return commands


def wait_ready(program: Program, timeout: float = 30.0) -> None:
    assert program.process is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if program.process.poll() is not None:
            tail = program.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{program.name} exited with {program.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(program.url + program.ready_path, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{program.name} not ready after {timeout:g}s; see {program.log}")


def stop(programs: list[Program], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to every program at once; SIGKILL, logged, to any still running after ``timeout``."""
    for program in reversed(programs):
        program.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for program in programs:
        if program.process is None:
            continue
        try:
            program.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"stack: {program.name} did not stop within {timeout:g}s: killed", file=sys.stderr)
            program.signal(signal.SIGKILL)
            program.process.wait()


class Stopped(BaseException):
    """A signal asked the stack to stop (BaseException: nothing on the way catches it)."""


def stop_on_signals() -> None:
    """SIGTERM, SIGINT and SIGHUP each stop the stack, however it was started: a background job
    of a script inherits SIGINT ignored, and a service manager sends SIGTERM."""

    def handler(signum: int, _frame: object) -> None:
        for each in STOP_SIGNALS:  # one stop: a second signal does not interrupt it
            signal.signal(each, signal.SIG_IGN)
        raise Stopped(signal.Signals(signum).name)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("KATO_STATE_DIR", ROOT / ".state")),
        help="folder for data, rendered configs and logs (default .state)",
    )
    parser.add_argument(
        "--ha",
        action="store_true",
        help="two Alertmanagers in a cluster (web 9093 and 9095, gossip 9094 and 9096)",
    )
    parser.add_argument(
        "--remote-write",
        metavar="URL",
        default=os.environ.get("KATO_REMOTE_WRITE_URL"),
        help="Prometheus remote_write to this URL (VictoriaMetrics: http://host:8428/api/v1/write)",
    )
    ports = {"exporter": 9817, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
    ports["redis-exporter"] = 9121  # started with KATO's Redis only
    ports["blackbox-exporter"] = 9115  # started with KATO's URL only
    for name, port in ports.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, help=f"{name}'s port (default {port})")
    parser.add_argument("exporter_args", nargs="*", help="flags for kato-exporter, after --")
    args = parser.parse_args(argv)
    settings = Settings(
        state=args.state.resolve(),
        exporter_args=args.exporter_args,
        remote_write_url=args.remote_write,
        exporter_port=args.exporter_port,
        prometheus_port=args.prometheus_port,
        alertmanager_port=args.alertmanager_port,
        ha_port=args.alertmanager_port + 2 if args.ha else None,
        cluster_ports=(args.alertmanager_port + 1, args.alertmanager_port + 3),
        grafana_port=args.grafana_port,
        redis_exporter_port=args.redis_exporter_port,
        blackbox_exporter_port=args.blackbox_exporter_port,
    )
    stop_on_signals()  # from here: a signal while the programs start stops those started
    try:
        programs = start(settings)
    except RuntimeError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    except Stopped as why:
        print(f"stack: {why} while starting: stopped", file=sys.stderr)
        return 0
    print("KATO monitoring stack is up:")
    for program in programs:
        assert program.process is not None
        print(f"  {program.name:<14} {program.url}   (pid {program.process.pid}, log: {program.log})")
    if settings.grafana:
        print(f"Grafana: user admin, password in {settings.state / 'secrets' / 'grafana_admin_password'}")
    else:
        print(
            "Grafana: no grafana or grafana-server on the PATH, so no dashboards. Install Grafana "
            "(Grafana's APT repository or its standalone tarball, https://grafana.com/grafana/download; "
            "set KATO_GRAFANA_HOME to the tarball's folder) and run again."
        )
    print(f"State in {settings.state}. Ctrl-C, SIGTERM or SIGHUP stops them all.", flush=True)
    status = 0
    try:
        while status == 0:
            for program in programs:
                if not program.running():
                    assert program.process is not None
                    print(
                        f"stack: {program.name} exited ({program.process.returncode}); see {program.log}",
                        file=sys.stderr,
                    )
                    status = 1
            time.sleep(0.5)
    except Stopped as why:
        print(f"stack: {why}: stopping…", flush=True)
    stop(programs)
    print("stack: stopped", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
