"""The failure policy against a real dockerd: stopped, restarted, and refused."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.conftest import ROOT, RUN_LABEL, Exporter, wait_for

pytestmark = pytest.mark.integration

SOCKET = "/var/run/docker.sock"


def dockerd(action: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "dockerd.sh"), action], check=True)


def containers_up(exporter: Exporter) -> float | None:
    return exporter.scrape().value("kato_exporter_source_up", source="containers")


def test_dockerd_stopped_and_started(start_exporter, run_container):
    name = run_container("sleep 3600", "--restart", "always")
    exporter = start_exporter(f"--collector.containers.label-selector={RUN_LABEL}")
    wait_for(
        lambda: exporter.scrape().value("kato_container_cpu_usage_seconds_total", name=name) is not None,
        5,
        what="the container's usage",
    )
    try:
        asked = time.monotonic()
        dockerd("stop")
        stopped = time.monotonic()
        wait_for(lambda: containers_up(exporter) == 0, 2, what="containers source down")
        print(
            f"dockerd took {stopped - asked:.2f}s to stop; "
            f"source_up 0 {time.monotonic() - stopped:.2f}s after it was gone"
        )
        e = exporter.scrape()
        assert e.value("kato_exporter_source_up", source="host") == 1
        assert e.value("kato_host_cpus") is not None
        assert list(e.all("kato_container_cpu_usage_seconds_total")) == []
        assert list(e.all("kato_container_info")) == []
    finally:
        dockerd("start")
    started = time.monotonic()
    wait_for(lambda: containers_up(exporter) == 1, 5, what="containers source back up")
    wait_for(
        lambda: exporter.scrape().value("kato_container_cpu_usage_seconds_total", name=name) is not None,
        5 - (time.monotonic() - started),
        what="the restarted container's usage",
    )
    print(f"recovered {time.monotonic() - started:.2f}s after dockerd answered again")
    assert exporter.proc.poll() is None


def test_permission_denied_on_the_socket(start_exporter, run_container):
    # Root bypasses file modes; without CAP_DAC_OVERRIDE it is held to them like any user.
    no_override = [
        "setpriv",
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
    ]
    name = run_container("sleep 3600")
    mode = os.stat(SOCKET).st_mode & 0o777
    os.chmod(SOCKET, 0)
    try:
        exporter = start_exporter(f"--collector.containers.label-selector={RUN_LABEL}", prefix=no_override)
        wait_for(lambda: containers_up(exporter) == 0, 2, what="containers source down")
        e = exporter.scrape()
        assert e.value("kato_exporter_source_up", source="host") == 1
        assert e.value("kato_exporter_collect_errors_total", source="containers") >= 1
        assert "Permission denied" in exporter.log.read_text()
    finally:
        os.chmod(SOCKET, mode)
    wait_for(
        lambda: exporter.scrape().value("kato_container_info", name=name) == 1,
        5,
        what="recovery once the socket is readable",
    )
