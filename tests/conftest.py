"""Shared fixtures: real dockerd containers and real exporter processes."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.exposition import Exposition, scrape

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "kato-test/busybox:latest"
RUN_ID = uuid.uuid4().hex[:8]
RUN_LABEL = f"kato.test.run={RUN_ID}"


# The files that take longest, in that order, start first (whether or not in parallel): the
# parallel run then does not end on one of them alone. The rest keep their order. Within a file, a
# test named here runs first: a process is handed its next file once two of this one's tests are
# left, and that file would wait behind the long test.
LONGEST_FIRST = [
    "integration/test_compose.py",  # first: on a fresh machine it waits for the images
    "integration/test_host_cpu.py",  # the longest of the solo run
    "integration/test_docker_failures.py::test_firing_container_alerts_are_held_while_docker_is_away",
    "integration/test_alerting.py::test_cpu_alert_reaches_slack_email_and_webhook_and_resolves",
    "test_alerting_config.py::test_promtool_rule_unit_tests[slo.yml]",  # three days of SLO samples
    "integration/test_bridge.py",  # its slow-client test later in the file: it measures a rate
    "integration/test_dashboards.py",
    "integration/test_kato.py",
    "integration/test_redis.py",
    "integration/test_demand.py",
    "integration/test_alertmanager_ha.py",
    "integration/test_live.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    files = [entry.partition("::")[0] for entry in LONGEST_FIRST]

    def rank(item: pytest.Item) -> tuple[int, int]:
        path = item.path.relative_to(ROOT / "tests").as_posix()
        test = f"{path}::{item.name}"
        return (
            files.index(path) if path in files else len(files),
            LONGEST_FIRST.index(test) if test in LONGEST_FIRST else len(LONGEST_FIRST),
        )

    items.sort(key=rank)  # stable: within a file, and among the rest, the order is kept


# Ports for the tests' daemons: below the kernel's ephemeral range (32768 on), which a connection
# could take between our check and the daemon's bind, and a thousand of its own for each process of
# a parallel run, so that two tests never pick the same one.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_PORTS = itertools.cycle(range(20000 + 1000 * (_WORKER % 12), 21000 + 1000 * (_WORKER % 12)))


def free_port() -> int:
    while True:
        port = next(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("", port))  # all addresses: taken on any of them, taken
            except OSError:
                continue
            return port


def wait_for(
    check: Callable[[], object],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
    show: Callable[[], object] | None = None,
) -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds,
    saying what was awaited and, with ``show``, what there was instead."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            seen = f"; instead: {show()}" if show else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{seen}")
        time.sleep(interval)


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@pytest.fixture(scope="session")
def dockerd() -> None:
    if subprocess.run(["docker", "info"], capture_output=True).returncode:
        pytest.fail("dockerd is not running: scripts/setup.sh starts it")
    docker("image", "inspect", IMAGE)


def start_container(name: str, command: str, *options: str) -> str:
    """``sh -c command`` in a busybox container of this run, without a network; its name."""
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        RUN_LABEL,
        "--network",
        "none",
        *options,
        IMAGE,
        "sh",
        "-c",
        command,
    )
    return name


@pytest.fixture(scope="session")
def cpu_first(dockerd: None) -> Iterator[list[str]]:
    """``docker run`` options that put a container in a cgroup of this run weighted far above
    everything else on the machine (Docker's cgroupfs driver; ``cpu.shares`` on cgroup v1, where it
    runs here, ``cpu.weight`` on v2): a container that must get its CPU limit, or its core, gets it
    however busy the other tests keep the machine."""
    parent = f"kato-test-{RUN_ID}"
    root = Path("/sys/fs/cgroup")
    if (root / "cpu" / "cpu.shares").exists():
        folder, weight = root / "cpu" / parent, ("cpu.shares", "262144")
    else:
        folder, weight = root / parent, ("cpu.weight", "10000")
    folder.mkdir(exist_ok=True)
    (folder / weight[0]).write_text(weight[1])
    yield ["--cgroup-parent", f"/{parent}"]
    for controller in [root, *root.iterdir()]:  # Docker made it in every controller's tree
        with contextlib.suppress(OSError):
            (controller / parent).rmdir()


@pytest.fixture(scope="session")
def images(dockerd: None) -> None:
    """The compose stack's images, built with no registry (kept between runs; the exporter's
    built again when exporter/ changed)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "build-image.sh")], check=True, cwd=ROOT)


@pytest.fixture
def run_container(dockerd: None) -> Iterator[Callable[..., str]]:
    """Factory: ``run_container("sleep 3600", "--memory", "64m")`` → container name."""
    names: list[str] = []

    def run(command: str, *options: str) -> str:
        names.append(start_container(f"kato-test-{RUN_ID}-{uuid.uuid4().hex[:6]}", command, *options))
        return names[-1]

    yield run
    if names:
        docker("rm", "-f", *names, check=False)


class Exporter:
    def __init__(
        self,
        args: list[str],
        prefix: list[str] | None = None,
        port: int | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        self.port = port or free_port()
        self.address = f"{address}:{self.port}"
        self.url = f"http://{self.address}"
        self.log = Path(f"/tmp/kato-exporter-test-{self.port}.log")
        command = [
            *(prefix or []),
            sys.executable,
            "-m",
            "kato_exporter",
            f"--web.listen-address={self.address}",
            *args,
        ]
        self.proc = subprocess.Popen(
            command,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for(self.ready, 15, what=f"exporter ready ({self.log})")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exporter exited {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def scrape(self) -> Exposition:
        return scrape(self.url + "/metrics")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def start_exporter() -> Iterator[Callable[..., Exporter]]:
    """Factory: a real exporter process; stopped at teardown."""
    started: list[Exporter] = []

    def start(*args: str, prefix: list[str] | None = None, port: int | None = None) -> Exporter:
        exporter = Exporter(list(args), prefix, port)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture(scope="module")
def container_exporter(dockerd: None) -> Iterator[Exporter]:
    """One exporter for a module's tests, watching only this run's containers."""
    exporter = Exporter([f"--collector.containers.label-selector={RUN_LABEL}"])
    yield exporter
    exporter.stop()


class Daemon:
    """A real program on a fixed port, stoppable and restartable (same port, same arguments)."""

    def __init__(self, name: str, command: list[str], ready: Callable[[], bool], url: str) -> None:
        self.name = name
        self.url = url
        self.command = command
        self._ready = ready
        self.log = Path(f"/tmp/kato-test-{name}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        wait_for(self._check, 15, what=f"{self.name} to answer ({self.log})")

    def _check(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}: see {self.log}")
        return self._ready()

    def kill(self) -> None:
        """SIGKILL the whole process group: no goodbye to clients."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def answers_tcp(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    return check


def answers_http(url: str) -> Callable[[], bool]:
    """Ready when ``url`` answers 200 (Prometheus answers TCP, and 503, before its /-/ready)."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    return check


def start_prometheus(
    folder: Path, jobs: dict[str, list[str]], interval: str = "5s", evaluation: str = "15s"
) -> Daemon:
    """A real Prometheus with the repository's rules, scraping each job's targets every ``interval``."""
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": evaluation},
        "rule_files": [str(ROOT / "prometheus" / "rules" / "*.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    return Daemon(
        f"prometheus-{port}",
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        answers_http(f"http://127.0.0.1:{port}/-/ready"),
        f"http://127.0.0.1:{port}",
    )


def prometheus_api(prometheus: Any, path: str, **params: Any) -> Any:
    """``data`` of Prometheus' answer at /api/v1/<path> (``prometheus``: anything with its ``url``)."""
    url = f"{prometheus.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]


def firing(prometheus: Daemon, alertname: str) -> list[dict[str, str]]:
    """The labels of each firing ``alertname`` alert, as Prometheus' API lists them."""
    alerts = prometheus_api(prometheus, "alerts")["alerts"]
    return [a["labels"] for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def redis_command(port: int, folder: Path | str, *extra: str) -> list[str]:
    """redis-server on 127.0.0.1:``port``, no persistence: a restart loses every key."""
    return [
        "redis-server",
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", str(folder), *extra),
    ]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Daemon]:
    """A real redis-server on its own port, no persistence: a restart loses every key."""
    port = free_port()
    daemon = Daemon(
        f"redis-{port}", redis_command(port, tmp_path), answers_tcp(port), f"redis://127.0.0.1:{port}/0"
    )
    yield daemon
    daemon.stop()


CLICKHOUSE_CONFIG = """<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{folder}/data/</path>
  <tmp_path>{folder}/tmp/</tmp_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
</yandex>
"""


@pytest.fixture
def clickhouse_server(tmp_path: Path) -> Iterator[Daemon]:
    """A real clickhouse-server (Debian's) on its own ports, data in the test's folder; its ``url``
    is its HTTP port's base URL (``/ping`` answers "Ok.")."""
    http_port, folder = free_port(), tmp_path / "clickhouse"
    folder.mkdir()
    config = folder / "config.xml"
    config.write_text(CLICKHOUSE_CONFIG.format(http_port=http_port, tcp_port=free_port(), folder=folder))
    url = f"http://127.0.0.1:{http_port}"
    daemon = Daemon(
        f"clickhouse-{http_port}",
        ["clickhouse-server", f"--config-file={config}"],
        answers_http(url + "/ping"),
        url,
    )
    yield daemon
    daemon.stop()


@pytest.fixture
def kato_double(redis_server: Daemon) -> Iterator[Callable[..., Daemon]]:
    """Factory: the KATO double with N workers on the test's Redis."""
    started: list[Daemon] = []

    def start(workers: int = 1, cache_ttl: float = 5.0) -> Daemon:
        port = free_port()
        daemon = Daemon(
            f"kato-{port}",
            [
                sys.executable,
                "-m",
                "tests.kato_double",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--cache-ttl",
                str(cache_ttl),
                "--redis-url",
                redis_server.url,
            ],
            answers_tcp(port),
            f"http://127.0.0.1:{port}",
        )
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
