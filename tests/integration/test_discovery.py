"""KATO found with no flag: the KATO double and a real Redis in containers named as KATO's compose
project names them (``<project>-kato-1``, ``<project>-kato-redis-1``) on a network of their own,
with and without published ports, found by an exporter on the host that was started before them;
a Redis with a password is left out until its file is given; ``--kato.url=off`` looks for nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import IMAGE, ROOT, RUN_ID, RUN_LABEL, Exporter, answers_http, docker, wait_for
from tests.integration.test_kato import call

pytestmark = pytest.mark.integration

PROJECT = f"kt{RUN_ID}"  # a compose project's name: its containers are <project>-<service>-<n>
LIBS = "/usr/lib/x86_64-linux-gnu"
# this machine's redis-server, run in the busybox image through this machine's loader and libraries
REDIS = [f"{LIBS}/ld-linux-x86-64.so.2", "--library-path", LIBS, "/usr/bin/redis-server"]


@pytest.fixture
def kato_project(images: None) -> Iterator[Callable[..., tuple[str, str]]]:
    """Factory: KATO's API (the double, in the exporter's image, which has its Python packages)
    and its Redis as containers of one project network; returns (API's URL from here, Redis' address)."""
    network = f"{PROJECT}_default"
    docker("network", "create", "--label", RUN_LABEL, network)
    names: list[str] = []

    def run(name: str, *args: str) -> str:
        docker("run", "-d", "--name", name, "--label", RUN_LABEL, "--network", network, *args)
        names.append(name)
        return name

    def start(publish: bool, password: str = "") -> tuple[str, str]:
        redis = run(
            f"{PROJECT}-kato-redis-1",
            "-v", "/usr:/usr:ro", IMAGE,
            *REDIS, "--protected-mode", "no", "--save", "",
            *(["--requirepass", password] if password else []),
        )  # fmt: skip
        ip = docker("inspect", "-f", f"{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}", redis).strip()
        auth = f":{password}@" if password else ""
        kato = run(
            f"{PROJECT}-kato-1",
            *(["-p", "127.0.0.1::8000"] if publish else []),
            "-v", f"{ROOT / 'tests'}:/src/tests:ro", "-w", "/src",
            "--entrypoint", "/opt/kato-exporter/bin/python",
            "kato-exporter:local", "-m", "tests.kato_double", "--host", "0.0.0.0", "--port", "8000",
            "--redis-url", f"redis://{auth}{ip}:6379/0",
        )  # fmt: skip
        if publish:
            url = "http://" + docker("port", kato, "8000/tcp").splitlines()[0]
        else:
            address = docker("inspect", "-f", f"{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}", kato)
            url = f"http://{address.strip()}:8000"
        wait_for(answers_http(url + "/health"), 30, what=f"the KATO double in {kato}")
        return url, f"{ip}:6379"

    yield start
    if names:
        docker("rm", "-f", *names, check=False)
    docker("network", "rm", network, check=False)


def exporter_with(start_exporter: Callable[..., Exporter], *flags: str) -> Exporter:
    return start_exporter(
        f"--collector.containers.label-selector={RUN_LABEL}", "--no-collector.host",
        "--kato.discovery-interval=1s",
        *flags,
    )  # fmt: skip


def test_kato_appearing_later_is_found_by_its_published_port_and_its_redis_by_its_network(
    start_exporter, kato_project
):
    exporter = exporter_with(start_exporter)
    assert "no KATO container" in exporter.log.read_text()  # and it says how to set one
    url, redis = kato_project(publish=True)
    wait_for(lambda: "found KATO's API" in exporter.log.read_text(), 20, what="KATO found")
    found = exporter.log.read_text()
    assert f"container {PROJECT}-kato-1, at {url} (port 8000 published on 127.0.0.1)" in found
    assert (
        f"container {PROJECT}-kato-redis-1, at redis://{redis} (its address on the network {PROJECT}_default)"
        in found
    )
    assert "--kato.url=off turns this off" in found
    assert call("POST", url + "/sessions", {"node_id": "discovery", "ttl_seconds": 600})[0] == 200
    wait_for(lambda: exporter.scrape().value("kato_sessions_active") == 1, 20, what="the session, from Redis")
    wait_for(lambda: exporter.scrape().value("kato_up") == 1, 20, what="KATO's API read")
    assert exporter.scrape().value("kato_exporter_session_mode", mode="redis") == 1
    wait_for(answers_http(exporter.url + "/-/ready"), 20, what="ready")


def test_no_password_is_guessed_and_an_unpublished_kato_is_reached_on_its_network(
    start_exporter, kato_project, tmp_path: Path
):
    url, _ = kato_project(publish=False, password="s3cret-redis")
    exporter = exporter_with(start_exporter)
    log = exporter.log.read_text()
    assert f"at {url} (its address on the network {PROJECT}_default)" in log
    assert "wants a password" in log and "--kato.redis-password-file" in log and "s3cret-redis" not in log
    wait_for(lambda: exporter.scrape().value("kato_up") == 1, 20, what="KATO read through its API")
    assert exporter.scrape().value("kato_exporter_session_mode", mode="api") == 1
    exporter.stop()
    password = tmp_path / "redis_password"
    password.write_text("s3cret-redis\n")
    exporter = exporter_with(start_exporter, f"--kato.redis-password-file={password}")
    wait_for(
        lambda: exporter.scrape().value("kato_exporter_session_mode", mode="redis") == 1,
        20,
        what="sessions from Redis",
    )
    off = exporter_with(start_exporter, "--kato.url=off")
    assert "found KATO" not in off.log.read_text() and "(sources: containers)" in off.log.read_text()
