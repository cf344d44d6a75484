"""The exporter's image (scripts/build-image.sh: Debian 12 by debootstrap, no registry), run as
docker-compose.yml runs it: not root, read-only, no capabilities, Docker only through the
read-only proxy, the host's /proc and /sys mounted. It must report what an exporter on the host
reports, and the host's own filesystems and network, not its container's."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT, RUN_ID, RUN_LABEL, Exporter, docker, free_port, wait_for
from tests.exposition import Exposition, scrape

pytestmark = pytest.mark.integration
IMAGE = "kato-exporter:local"


@pytest.fixture(scope="module")
def contained(images: None) -> Iterator[str]:
    """The exporter in its container behind the proxy, on a network of their own; its URL."""
    network, proxy, exporter = (f"kato-test-{RUN_ID}-{what}" for what in ("net", "proxy", "exporter"))
    socket_group = subprocess.run(
        ["stat", "-c", "%g", "/var/run/docker.sock"], capture_output=True, text=True
    )
    docker("network", "create", network)
    docker(
        "run", "-d", "--name", proxy, "--network", network, "--user", f"99:{socket_group.stdout.strip()}",
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{ROOT}/docker-api-proxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro",
        "-v", "/var/run/docker.sock:/var/run/docker.sock:ro", "kato-local/haproxy:debian",
    )  # fmt: skip
    port = free_port()
    docker(
        "run", "-d", "--name", exporter, "--network", network, "-p", f"127.0.0.1:{port}:9817",
        "--user", "10001:10001", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", "/proc:/host/proc:ro", "-v", "/sys:/host/sys:ro", "-v", "/:/host/root:ro",
        "-e", f"KATO_EXPORTER_DOCKER_HOST=tcp://{proxy}:2375", IMAGE,
        "--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/host/root",
        f"--collector.containers.label-selector={RUN_LABEL}",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: ready(url), 30, what=f"the exporter's container: {docker('logs', exporter, check=False)}"
        )
        yield exporter
    finally:
        docker("rm", "-f", exporter, proxy, check=False)
        docker("network", "rm", network, check=False)


def ready(url: str) -> bool:
    try:
        return scrape(url + "/metrics") is not None
    except OSError:
        return False


def logs(container: str) -> str:
    done = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    return done.stdout + done.stderr


def rows(exposition: Exposition, name: str) -> set[tuple[tuple[tuple[str, str], ...], float]]:
    return {(tuple(sorted(labels.items())), value) for labels, value in exposition.all(name)}


def url_of(container: str) -> str:
    return "http://" + docker("port", container, "9817/tcp").splitlines()[0]


@pytest.mark.solo  # the host's mounts must not change between two scrapes (other tests make some)
def test_it_reports_what_an_exporter_on_the_host_reports(
    contained: str, run_container: Callable[..., str], start_exporter: Callable[..., Exporter]
) -> None:
    limited = run_container("sleep 3600", "--memory", "64m", "--cpus", "0.5")
    busy = run_container("while :; do :; done", "--cpus", "0.2")
    run_container("exit 3")
    host = start_exporter(f"--collector.containers.label-selector={RUN_LABEL}")
    inside = url_of(contained)

    def both() -> tuple[Exposition, Exposition]:
        return host.scrape(), scrape(inside + "/metrics")

    wait_for(lambda: all(e.value("kato_container_pids", name=busy) for e in both()), 15)
    time.sleep(2)
    ours, theirs = both()
    for name in (
        "kato_container_state",
        "kato_container_cpu_limit_cores",
        "kato_container_memory_limit_bytes",
        "kato_container_pids",
        "kato_container_restarts_total",
    ):
        assert rows(ours, name) == rows(theirs, name), name
    assert ours.value("kato_container_memory_limit_bytes", name=limited) == 64 * 2**20
    cpu = [e.value("kato_container_cpu_usage_seconds_total", name=busy) for e in (ours, theirs)]
    assert cpu[0] and cpu[1] and abs(cpu[0] - cpu[1]) < 0.5, cpu  # 0.2 cores, read ≤ 1 s apart
    # through the proxy, still from cgroup files once a container runs to tell by
    assert "container stats now from cgroup" in logs(contained)

    # the host's filesystems and network, not the container's mount and network namespaces
    def devices(e: Exposition, name: str, label: str) -> set[str]:
        return {labels[label] for labels, _ in e.all(name)}

    for name, label in (
        ("kato_host_filesystem_size_bytes", "mountpoint"),
        ("kato_host_network_receive_bytes_total", "device"),
    ):
        assert devices(ours, name, label) == devices(theirs, name, label), name
    assert "docker0" in devices(theirs, "kato_host_network_receive_bytes_total", "device")
    assert "/etc/hosts" not in devices(theirs, "kato_host_filesystem_size_bytes", "mountpoint")


def test_its_healthcheck_turns_healthy(contained: str) -> None:
    def health() -> str:
        return docker("inspect", "--format", "{{.State.Health.Status}}", contained)

    wait_for(lambda: health() == "healthy", 45, what="HEALTHCHECK healthy")


def test_it_has_no_capabilities_and_cannot_write(contained: str) -> None:
    status = dict(
        line.split(":\t", 1)
        for line in docker(
            "exec", contained, "python", "-c", "print(open('/proc/self/status').read())"
        ).splitlines()
        if ":\t" in line
    )
    assert status["Uid"].split()[0] == "10001" and status["Gid"].split()[0] == "10001"
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, field
    assert status["NoNewPrivs"] == "1"
    for path in (
        "/opt/kato-exporter/bin/kato-exporter",
        "/tmp/x",
        "/etc/passwd",
        f"/host/root/tmp/kato-{RUN_ID}",
        "/host/proc/sys/kernel/hostname",
    ):
        done = subprocess.run(
            ["docker", "exec", contained, "python", "-c", f"open({path!r}, 'a')"],
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0 and (
            "Read-only file system" in done.stderr or "Permission denied" in done.stderr
        ), (path, done.stderr)
    mounts = json.loads(docker("inspect", "--format", "{{json .Mounts}}", contained))
    assert all(not m["RW"] for m in mounts), mounts
    assert "/var/run/docker.sock" not in {m["Source"] for m in mounts}  # Docker only through the proxy
