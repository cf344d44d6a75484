"""Containers on a real dockerd, read back from a real exporter's /metrics."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import IMAGE, RUN_ID, RUN_LABEL, Exporter, docker, wait_for

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def appears(exporter: Exporter, name: str, metric: str = "kato_container_info") -> Callable:
    return lambda: exporter.scrape().value(metric, name=name) is not None


def reaches(exporter: Exporter, metric: str, name: str, minimum: float) -> Callable[[], bool]:
    return lambda: (exporter.scrape().value(metric, name=name) or 0) >= minimum


def cpu_rate(exporter: Exporter, name: str, seconds: float) -> float:
    """Cores used over ``seconds``, timed by the exporter's own collection clock."""

    def sample() -> tuple[float, float]:
        e = exporter.scrape()
        cpu = e.value("kato_container_cpu_usage_seconds_total", name=name)
        at = e.value("kato_exporter_last_success_timestamp_seconds", source="containers")
        assert cpu is not None and at is not None
        return cpu, at

    cpu0, t0 = sample()
    time.sleep(seconds)
    cpu1, t1 = sample()
    return (cpu1 - cpu0) / (t1 - t0)


def exited(exporter: Exporter, name: str) -> bool:
    return exporter.scrape().value("kato_container_state", name=name, state="exited") == 1


def test_busy_container_uses_one_core_and_idle_one_none(container_exporter, run_container, cpu_first):
    busy = run_container("yes > /dev/null", *cpu_first)
    idle = run_container("sleep 3600")
    for name in (busy, idle):
        wait_for(appears(container_exporter, name, "kato_container_cpu_usage_seconds_total"), 5)
    time.sleep(1)  # let `yes` get going
    assert 0.8 <= cpu_rate(container_exporter, busy, 4) <= 1.2
    assert cpu_rate(container_exporter, idle, 3) < 0.05


def test_memory_limit_and_working_set(container_exporter, run_container):
    # /dev/shm is tmpfs: its pages are charged to the container and are not reclaimable file cache.
    name = run_container(
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 2>/dev/null; sleep 3600",
        "--memory",
        "64m",
        "--shm-size",
        "48m",
    )
    wait_for(
        reaches(container_exporter, "kato_container_memory_working_set_bytes", name, 40 * MiB),
        10,
        what="a working set of 40 MiB",
    )
    e = container_exporter.scrape()
    assert e.value("kato_container_memory_limit_bytes", name=name) == 67108864
    assert e.value("kato_container_memory_usage_bytes", name=name) >= 40 * MiB
    assert e.value("kato_container_cpu_limit_cores", name=name) is None  # none was set


def test_cpu_limit(container_exporter, run_container):
    name = run_container("sleep 3600", "--cpus", "0.5")
    wait_for(appears(container_exporter, name, "kato_container_cpu_limit_cores"), 5)
    assert container_exporter.scrape().value("kato_container_cpu_limit_cores", name=name) == 0.5
    assert container_exporter.scrape().value("kato_container_memory_limit_bytes", name=name) is None


def backing_disk() -> str:
    """The whole disk under Docker's storage, e.g. /dev/vda (throttle rules take disks, not partitions)."""
    source = (
        subprocess.run(
            ["findmnt", "-no", "SOURCE", "-T", "/var/lib/docker"], capture_output=True, text=True, check=True
        )
        .stdout.split("[")[0]
        .strip()
    )
    parent = subprocess.run(["lsblk", "-no", "PKNAME", source], capture_output=True, text=True).stdout.strip()
    return f"/dev/{parent}" if parent else source


def test_block_write_bytes(container_exporter, run_container):
    # On cgroup v1 this kernel fills blkio.throttle.* counters only for cgroups that carry a
    # throttle rule, so the container gets a rule too high to ever slow it down.
    name = run_container(
        "dd if=/dev/zero of=/tmp/f bs=1M count=20 conv=fsync 2>/dev/null; sleep 3600",
        "--device-write-bps",
        f"{backing_disk()}:10gb",
    )
    wait_for(
        reaches(container_exporter, "kato_container_block_write_bytes_total", name, 20 * MiB),
        10,
        what="20 MiB written",
    )


def test_stopped_container_keeps_state_but_no_usage(container_exporter, run_container):
    name = run_container("sleep 3600")
    wait_for(appears(container_exporter, name, "kato_container_cpu_usage_seconds_total"), 5)
    docker("stop", "-t", "0", name)
    wait_for(
        lambda: container_exporter.scrape().value("kato_container_state", name=name, state="exited") == 1,
        3,
        what="state exited",
    )
    e = container_exporter.scrape()
    assert e.value("kato_container_state", name=name, state="running") == 0
    assert e.value("kato_container_info", name=name) == 1
    assert e.value("kato_container_restarts_total", name=name) == 0
    for usage in (
        "kato_container_cpu_usage_seconds_total",
        "kato_container_memory_usage_bytes",
        "kato_container_start_time_seconds",
    ):
        assert e.value(usage, name=name) is None, usage


def test_restart_policy_counts_restarts(container_exporter, run_container):
    name = run_container("sleep 0.3; exit 1", "--restart", "on-failure:3")
    wait_for(
        reaches(container_exporter, "kato_container_restarts_total", name, 1), 10, what="a first restart"
    )
    wait_for(
        lambda: container_exporter.scrape().value("kato_container_restarts_total", name=name) == 3,
        15,
        what="three restarts",
    )


def test_healthcheck_status(container_exporter, run_container):
    sick = run_container(
        "sleep 3600", "--health-cmd", "exit 1", "--health-interval", "1s", "--health-retries", "1"
    )
    fine = run_container("sleep 3600", "--health-cmd", "true", "--health-interval", "1s")
    plain = run_container("sleep 3600")
    wait_for(
        lambda: (
            container_exporter.scrape().value("kato_container_health_status", name=sick, status="unhealthy")
            == 1
        ),
        10,
        what="unhealthy",
    )
    wait_for(
        lambda: (
            container_exporter.scrape().value("kato_container_health_status", name=fine, status="healthy")
            == 1
        ),
        10,
        what="healthy",
    )
    e = container_exporter.scrape()
    assert e.value("kato_container_health_status", name=sick, status="healthy") == 0
    assert list(e.all("kato_container_health_status", name=plain)) == []


def test_new_container_appears_and_removed_one_disappears_within_2s(container_exporter, run_container):
    started = time.monotonic()
    name = run_container("sleep 3600")
    wait_for(appears(container_exporter, name), 2, what="the new container on /metrics")
    print(f"appeared {time.monotonic() - started:.2f}s after docker run was called")
    started = time.monotonic()
    docker("rm", "-f", name)
    wait_for(lambda: not appears(container_exporter, name)(), 2, what="the container gone")
    print(f"disappeared {time.monotonic() - started:.2f}s after docker rm was called")


def test_labels_filter_and_info_labels(start_exporter, run_container):
    kept = run_container("sleep 3600", "--label", "team=kato", "--label", "com.example.tier=api")
    other = run_container("sleep 3600")
    exporter = start_exporter(
        f"--collector.containers.include={kept[:-6]}.*",
        "--collector.containers.label-selector=team=kato",
        "--collector.containers.info-labels=com.example.tier",
        "--no-collector.host",
    )
    wait_for(appears(exporter, kept), 5)
    e = exporter.scrape()
    assert e.value("kato_container_info", name=other) is None
    [(labels, _)] = e.all("kato_container_info", name=kept)
    assert labels["label_com_example_tier"] == "api"
    assert e.value("kato_exporter_source_up", source="host") is None


def test_api_mode_reads_the_stats_api(start_exporter, run_container):
    name = run_container("yes > /dev/null", "--memory", "32m")
    exporter = start_exporter(
        "--collector.containers.stats-mode=api",
        f"--collector.containers.include={name}",
        "--no-collector.host",
    )
    wait_for(
        lambda: (exporter.scrape().value("kato_container_cpu_usage_seconds_total", name=name) or 0) > 0,
        15,
        what="api-mode cpu",
    )
    e = exporter.scrape()
    assert e.value("kato_exporter_container_stats_mode", mode="api") == 1
    assert e.value("kato_exporter_container_stats_mode", mode="cgroup") == 0
    assert e.value("kato_container_memory_limit_bytes", name=name) == 32 * MiB
    assert e.value("kato_container_memory_usage_bytes", name=name) > 0


def test_what_tells_a_crash_from_a_finished_job_and_shared_networks(container_exporter, run_container):
    """The exit code and restart policy (KatoContainerNotRunning's inputs), the network series
    only for containers with a network of their own, and pids only where it is counted."""
    job = run_container("exit 0")
    crashed = run_container("exit 3")
    service = run_container("sleep 3600", "--restart", "unless-stopped")
    own = f"kato-test-{RUN_ID}-own-net"
    docker("run", "-d", "--name", own, "--label", RUN_LABEL, IMAGE, "sleep", "3600")  # the default bridge
    names = [own]
    try:
        for mode in ("host", f"container:{own}"):
            names.append(f"kato-test-{RUN_ID}-{mode.partition(':')[0]}-net")
            docker(
                "run",
                "-d",
                "--name",
                names[-1],
                "--label",
                RUN_LABEL,
                "--network",
                mode,
                IMAGE,
                "sleep",
                "3600",
            )
        for name in names:
            wait_for(appears(container_exporter, name, "kato_container_memory_usage_bytes"), 10, what=name)
        for name in (job, crashed):
            wait_for(lambda name=name: exited(container_exporter, name), 10, what=f"{name} exited")
        e = container_exporter.scrape()
        assert e.value("kato_container_exit_code", name=job) == 0
        assert e.value("kato_container_exit_code", name=crashed) == 3
        assert e.value("kato_container_exit_code", name=service) is None  # running
        policies = {labels["name"]: labels["restart_policy"] for labels, _ in e.all("kato_container_info")}
        assert (policies[job], policies[service]) == ("no", "unless-stopped")
        networks = {labels["name"]: labels["network_mode"] for labels, _ in e.all("kato_container_info")}
        assert networks[names[1]] == "host" and networks[names[2]].startswith("container:")
        receive = "kato_container_network_receive_bytes_total"
        assert e.value(receive, name=own) is not None
        assert e.value(receive, name=names[1]) is None and e.value(receive, name=names[2]) is None
        assert e.value("kato_container_cpu_usage_seconds_total", name=names[1]) is not None
        pids_counted = any(
            os.path.exists(p) for p in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/cgroup.controllers")
        )
        assert (e.value("kato_container_pids", name=service) is not None) == pids_counted
    finally:
        docker("rm", "-f", *names, check=False)
