"""cgroup v1 and v2 parsing against captured trees in tests/fixtures/."""

from __future__ import annotations

from pathlib import Path

import pytest

from kato_exporter.model import ContainerUsage
from kato_exporter.sources import cgroups

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def read(version: str, pid: int) -> ContainerUsage:
    root = FIXTURES / version
    cgroup = cgroups.resolve(pid, str(root / "proc"), str(root / "sys"))
    assert cgroup.version == int(version[1])
    return cgroups.read_usage(cgroup, pid, str(root / "proc"))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_limited_container(version):
    usage = read(version, 4242)
    assert usage.cpu_seconds == pytest.approx(3.182836, abs=1e-6)
    assert usage.memory_usage_bytes == 52428800
    assert usage.memory_working_set_bytes == 52428800 - 8388608  # usage − inactive file pages
    assert usage.memory_limit_bytes == 67108864
    assert usage.network_receive_bytes == 123456 + 44  # lo left out
    assert usage.network_transmit_bytes == 65432 + 10
    assert usage.block_read_bytes == 4096 + 1000  # all devices
    assert usage.block_write_bytes == 20996096 + 2000
    assert usage.pids == 3


def test_cpu_limits_per_version():
    assert read("v1", 4242).cpu_limit_cores == 1.5
    assert read("v2", 4242).cpu_limit_cores == 0.5


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_unlimited_container(version):
    usage = read(version, 4343)
    assert usage.cpu_limit_cores is None
    assert usage.memory_limit_bytes is None
    assert usage.cpu_seconds == 1.0
    assert usage.memory_working_set_bytes == 0  # inactive file exceeds usage: clamped, never negative
    assert (usage.block_read_bytes, usage.block_write_bytes) == (0, 0)


def test_v1_paths_follow_proc_cgroup():
    root = FIXTURES / "v1"
    paths = cgroups.resolve(4242, str(root / "proc"), str(root / "sys"))
    assert paths.dirs["memory"] == str(root / "sys/fs/cgroup/memory/docker/4f1c2e")
    assert paths.dirs["cpuacct"] == str(root / "sys/fs/cgroup/cpuacct/docker/4f1c2e")


def test_vanished_process_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        cgroups.resolve(99999, str(tmp_path), str(FIXTURES / "v1" / "sys"))


def test_missing_controllers_are_named(tmp_path):
    (tmp_path / "proc" / "7").mkdir(parents=True)
    (tmp_path / "proc" / "7" / "cgroup").write_text("4:memory:/nowhere\n")
    (tmp_path / "sys" / "fs" / "cgroup").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="cpuacct"):
        cgroups.resolve(7, str(tmp_path / "proc"), str(tmp_path / "sys"))
