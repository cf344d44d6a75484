"""The read-only Docker API proxy (docker-api-proxy/haproxy.cfg), run by Debian's haproxy in front
of the real dockerd: the exporter's calls pass, every write and the archive/export reads do not,
and the exporter works through it."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT, RUN_LABEL, Daemon, Exporter, answers_tcp, docker, free_port, wait_for

pytestmark = pytest.mark.integration
API = "/v1.41"


@pytest.fixture(scope="module")
def proxy(dockerd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """haproxy with the repository's config; only its listening address moved to loopback."""
    config = (ROOT / "docker-api-proxy" / "haproxy.cfg").read_text()
    port = free_port()
    assert "  bind :2375\n" in config
    path = tmp_path_factory.mktemp("proxy") / "haproxy.cfg"
    path.write_text(config.replace("  bind :2375\n", f"  bind 127.0.0.1:{port}\n"))
    daemon = Daemon(
        f"haproxy-{port}",
        ["haproxy", "-W", "-db", "-f", str(path)],
        answers_tcp(port),
        f"tcp://127.0.0.1:{port}",
    )
    yield daemon
    daemon.stop()


def call(proxy: Daemon, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    host, port = proxy.url.removeprefix("tcp://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    payload = json.dumps(body).encode() if body is not None else None
    connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read() if method != "HEAD" else b""
    connection.close()
    return response.status, data


@pytest.fixture
def container(run_container: Callable[..., str]) -> str:
    return run_container("echo hello; sleep 3600")


@pytest.mark.parametrize("prefix", ["", API])
def test_the_exporters_calls_pass(proxy: Daemon, container: str, prefix: str) -> None:
    for method, path in [
        ("GET", "/_ping"),
        ("HEAD", "/_ping"),
        ("GET", "/version"),
        ("GET", "/containers/json?all=1"),
        ("GET", f"/containers/{container}/json"),
        ("GET", f"/containers/{container}/stats?stream=false"),
        ("GET", f"/containers/{container}/logs?stdout=1&stderr=1&tail=10"),
        ("GET", "/events?since=0&until=1&filters=%7B%22type%22%3A%5B%22container%22%5D%7D"),
    ]:
        status, body = call(proxy, method, prefix + path)
        assert status == 200, (method, path, status, body[:200])
    assert b"hello" in call(proxy, "GET", f"{prefix}/containers/{container}/logs?stdout=1")[1]


def test_writes_and_reads_of_files_are_refused_and_change_nothing(proxy: Daemon, container: str) -> None:
    before = docker("inspect", "--format", "{{.State.Status}} {{.Id}}", container)
    refused = [
        ("POST", "/containers/create?name=escape", {"Image": "kato-test/busybox:latest"}),
        ("POST", f"/containers/{container}/exec", {"Cmd": ["sh", "-c", "echo pwned"]}),
        ("POST", f"/containers/{container}/kill", None),
        ("POST", f"/containers/{container}/stop", None),
        ("DELETE", f"/containers/{container}?force=1", None),
        ("PUT", f"/containers/{container}/archive?path=/tmp", None),
        ("GET", f"/containers/{container}/archive?path=/etc", None),
        ("HEAD", f"/containers/{container}/archive?path=/etc", None),
        ("GET", f"/containers/{container}/export", None),
        ("GET", f"/containers/{container}/top", None),
        ("GET", f"/containers/{container}/changes", None),
        ("GET", "/images/json", None),
        ("GET", "/info", None),
        ("GET", "/secrets", None),
        ("POST", "/build", None),
        # encoded and dotted paths that a loose match would let through
        ("GET", f"/containers/{container}%2Farchive/json", None),
        ("GET", f"/containers/../{container}/export", None),
        ("GET", f"/containers/{container}/json/../export", None),
        ("GET", f"/containers/{container}/export?x=/json", None),
    ]
    for prefix in ("", API):
        for method, path, body in refused:
            assert call(proxy, method, prefix + path, body)[0] == 403, (method, prefix + path)
    assert docker("inspect", "--format", "{{.State.Status}} {{.Id}}", container) == before
    assert docker("ps", "-a", "--filter", "name=^escape$", "--format", "{{.Names}}") == ""


def test_an_exporter_behind_it_reads_containers(proxy: Daemon, container: str) -> None:
    logged_before = len(proxy.log.read_text())
    exporter = Exporter([f"--docker.host={proxy.url}", f"--collector.containers.label-selector={RUN_LABEL}"])
    try:
        assert exporter.scrape().value("kato_container_state", name=container, state="running") == 1
        wait_for(lambda: exporter.scrape().value("kato_container_pids", name=container) is not None, 10)
        # Docker is on this host: numbers from cgroup files, not from the stats API
        assert "stats from cgroup" in exporter.log.read_text()
    finally:
        exporter.stop()
    # haproxy logged the exporter's calls, and refused none of them
    lines = [line for line in proxy.log.read_text()[logged_before:].splitlines() if '"GET ' in line]
    assert lines and not [line for line in lines if " 403 " in line], lines[-5:]
