"""The host, through psutil, honouring ``--path.procfs`` and ``--path.rootfs``
so the exporter can run in a container with the host mounted.

Yields::

    HostSample(cpu_usage_ratio=0.12, cpu_count=2, load1=0.3, load5=0.2, load15=0.1,
               memory_total_bytes=25165824000, memory_available_bytes=24000000000,
               swap_total_bytes=0, swap_used_bytes=0, boot_time_seconds=1795700000.0,
               filesystems=(Filesystem("/", "ext4", 270582939648, 23622320128),),
               network={"eth0": (123456, 654321)})
"""

from __future__ import annotations

import asyncio
import os
import re

import psutil

from kato_exporter.config import DEFAULT_MOUNT_EXCLUDE
from kato_exporter.model import Filesystem, HostSample


class HostSource:
    name = "host"

    def __init__(
        self,
        *,
        interval: float = 1.0,
        procfs: str = "/proc",
        rootfs: str = "/",
        mount_exclude: re.Pattern[str] = re.compile(DEFAULT_MOUNT_EXCLUDE),
    ) -> None:
        self.interval = interval
        self.timeout = max(5.0, interval * 5)
        self._rootfs = rootfs
        self._mount_exclude = mount_exclude
        psutil.PROCFS_PATH = procfs  # psutil reads this module-wide setting
        self._last_cpu = psutil.cpu_times()

    async def collect(self) -> HostSample:
        # statvfs on a hung network mount would block: keep it off the event loop.
        return await asyncio.to_thread(self._sample)

    def _sample(self) -> HostSample:
        cpu = psutil.cpu_times()
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        load = psutil.getloadavg()
        network = {
            name: (c.bytes_recv, c.bytes_sent)
            for name, c in psutil.net_io_counters(pernic=True).items()
            if name != "lo"
        }
        ratio = _busy_ratio(self._last_cpu, cpu)
        self._last_cpu = cpu
        return HostSample(
            cpu_usage_ratio=ratio,
            cpu_count=psutil.cpu_count() or 1,
            load1=load[0],
            load5=load[1],
            load15=load[2],
            memory_total_bytes=memory.total,
            memory_available_bytes=memory.available,
            swap_total_bytes=swap.total,
            swap_used_bytes=swap.used,
            boot_time_seconds=psutil.boot_time(),
            filesystems=tuple(self._filesystems()),
            network=network,
        )

    def _filesystems(self) -> list[Filesystem]:
        seen: set[str] = set()
        result = []
        for part in psutil.disk_partitions(all=False):
            if part.mountpoint in seen or self._mount_exclude.fullmatch(part.mountpoint):
                continue
            seen.add(part.mountpoint)
            try:
                usage = psutil.disk_usage(os.path.join(self._rootfs, part.mountpoint.lstrip("/")))
            except OSError:
                continue  # unmounted meanwhile, or not visible from here
            result.append(Filesystem(part.mountpoint, part.fstype, usage.total, usage.used))
        return result


def _busy_ratio(before: psutil._common.scputimes, after: psutil._common.scputimes) -> float:
    """Share of CPU time not idle between two samples, over all cores."""
    idle_fields = ("idle", "iowait")
    deltas = {f: getattr(after, f) - getattr(before, f) for f in after._fields}
    # guest time is already inside user time on Linux
    total = sum(v for f, v in deltas.items() if f not in ("guest", "guest_nice"))
    if total <= 0:
        return 0.0
    idle = sum(deltas.get(f, 0.0) for f in idle_fields)
    return float(min(1.0, max(0.0, 1 - idle / total)))
