"""The host source against a mount whose statfs really hangs (a FUSE server that never answers)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import IMAGE, ROOT, RUN_LABEL, docker, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def hung_mount(tmp_path):
    """A mount point whose statfs never returns, until the fixture ends."""
    mountpoint = tmp_path / "hung"
    mountpoint.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.hangfs", str(mountpoint)], stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert server.stdout.readline() == b"mounted\n"
        yield str(mountpoint)
    finally:
        server.kill()  # aborts the connection: the hung calls fail and return
        server.wait()
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def test_a_hung_mount_is_skipped_and_reported(start_exporter, run_container, hung_mount):
    # hung_mount last: its teardown (which ends the hang) runs before the exporter is stopped;
    # a process with a thread stuck in statfs cannot exit, whatever it does
    name = run_container("sleep 3600")
    exporter = start_exporter(
        f"--collector.containers.label-selector={RUN_LABEL}", "--collector.host.mount-timeout=1s"
    )
    wait_for(
        lambda: exporter.scrape().value("kato_host_filesystem_device_error", mountpoint=hung_mount) == 1,
        10,
        what="the hung mount reported",
    )
    e = exporter.scrape()
    assert e.value("kato_exporter_source_up", source="host") == 1
    assert e.value("kato_host_filesystem_size_bytes", mountpoint=hung_mount) is None
    assert e.value("kato_host_filesystem_size_bytes", mountpoint="/") > 0
    assert e.value("kato_host_filesystem_device_error", mountpoint="/") == 0
    # the containers carry on, and later host collections do not wait on the mount again
    assert e.value("kato_exporter_source_up", source="containers") == 1
    assert e.value("kato_container_cpu_usage_seconds_total", name=name) is not None
    wait_for(
        lambda: exporter.scrape().value("kato_exporter_collect_duration_seconds", source="host") < 0.5,
        5,
        what="host collections back to their usual duration",
    )
    assert exporter.scrape().value("kato_host_filesystem_device_error", mountpoint=hung_mount) == 1
    assert "did not answer within 1s" in exporter.log.read_text()


def test_container_veth_devices_are_not_host_series(start_exporter):
    name = f"kato-test-veth-{RUN_LABEL.rpartition('=')[2]}"
    docker("run", "-d", "--name", name, "--label", RUN_LABEL, IMAGE, "sleep", "3600")  # default bridge
    try:
        veths = [d for d in os.listdir("/sys/class/net") if d.startswith("veth")]
        assert veths, "a container on the bridge has a veth end on the host"
        e = start_exporter("--no-collector.containers").scrape()
        devices = {labels["device"] for labels, _ in e.all("kato_host_network_receive_bytes_total")}
        assert devices, "the host's own devices are there"
        assert not devices & set(veths)
        assert "lo" not in devices
    finally:
        docker("rm", "-f", name, check=False)
