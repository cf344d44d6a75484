"""The host, through psutil, honouring ``--path.procfs`` and ``--path.rootfs``
so the exporter can run in a container with the host mounted.

Yields::

    HostSample(cpu_seconds={("0", "user"): 1520.3, ("0", "idle"): 86010.2, ...},
               load1=0.3, load5=0.2, load15=0.1,
               memory_total_bytes=25165824000, memory_available_bytes=24000000000,
               swap_total_bytes=0, swap_used_bytes=0, boot_time_seconds=1795700000.0,
               filesystems=(Filesystem("/", "ext4", 270582939648, 23622320128, 233138925568),),
               network={"eth0": (123456, 654321)})
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace

import psutil

from kato_exporter.config import DEFAULT_DEVICE_EXCLUDE, DEFAULT_FS_TYPES_EXCLUDE, DEFAULT_MOUNT_EXCLUDE
from kato_exporter.model import CPU_MODES, Filesystem, HostSample

log = logging.getLogger(__name__)


class HostSource:
    name = "host"

    def __init__(
        self,
        *,
        interval: float = 1.0,
        procfs: str = "/proc",
        rootfs: str = "/",
        mount_exclude: re.Pattern[str] = re.compile(DEFAULT_MOUNT_EXCLUDE),
        fs_types_exclude: re.Pattern[str] = re.compile(DEFAULT_FS_TYPES_EXCLUDE),
        device_exclude: re.Pattern[str] = re.compile(DEFAULT_DEVICE_EXCLUDE),
        mount_timeout: float = 5.0,
    ) -> None:
        self.interval = interval
        self.timeout = max(5.0, interval * 5) + mount_timeout
        self._procfs = procfs
        self._rootfs = rootfs
        self._mount_exclude = mount_exclude
        self._fs_types_exclude = fs_types_exclude
        self._device_exclude = device_exclude
        self._sizes = MountSizes(mount_timeout)
        psutil.PROCFS_PATH = procfs  # psutil reads this module-wide setting

    async def collect(self) -> HostSample:
        sample = await asyncio.to_thread(self._sample)
        return replace(sample, filesystems=await self._sizes.measure(sample.filesystems, self._rootfs))

    async def close(self) -> None:
        self._sizes.close()

    def _sample(self) -> HostSample:
        """Everything but the filesystems' sizes, which ``MountSizes`` measures."""
        cpu = {
            (str(n), mode): getattr(times, mode)
            for n, times in enumerate(psutil.cpu_times(percpu=True))
            for mode in CPU_MODES
            if hasattr(times, mode)
        }
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        load = psutil.getloadavg()
        network = {
            name: counts
            for name, counts in read_network(self._procfs).items()
            if not self._device_exclude.fullmatch(name)
        }
        return HostSample(
            cpu_seconds=cpu,
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
        """The host's mounts as PID 1 sees them (as node_exporter reads them, so that in a
        container it is the host's, not the container's), sizes not measured yet."""
        seen: set[str] = set()
        result = []
        for mountpoint, fstype in read_mounts(self._procfs):
            if (
                mountpoint in seen
                or self._mount_exclude.fullmatch(mountpoint)
                or self._fs_types_exclude.fullmatch(fstype)
            ):
                continue
            seen.add(mountpoint)
            result.append(Filesystem(mountpoint, fstype, 0, 0))
        return result


def read_mounts(procfs: str) -> list[tuple[str, str]]:
    """(mount point, type) of each mount in ``<procfs>/1/mounts``, else ``self/mounts``."""
    return [
        (_unescape(fields[1]), fields[2])
        for fields in (line.split() for line in _read_of_pid_1(procfs, "mounts"))
        if len(fields) >= 3
    ]


def read_network(procfs: str) -> dict[str, tuple[int, int]]:
    """(bytes received, bytes sent) of each interface in ``<procfs>/1/net/dev``, else
    ``self/net/dev``: the host's network namespace, also from inside a container."""
    counts = {}
    for line in _read_of_pid_1(procfs, "net/dev")[2:]:  # two header lines
        name, _, fields = line.partition(":")
        numbers = fields.split()
        if len(numbers) >= 9:
            counts[name.strip()] = (int(numbers[0]), int(numbers[8]))
    return counts


def _read_of_pid_1(procfs: str, name: str) -> list[str]:
    """The lines of ``<procfs>/1/<name>``, else of ``<procfs>/self/<name>`` (PID 1's may be
    closed to us), else none."""
    for pid in ("1", "self"):
        try:
            with open(os.path.join(procfs, pid, name)) as f:
                return f.read().splitlines()
        except OSError:
            continue
    return []


def _unescape(field: str) -> str:
    """The kernel writes a space in a mount point as \\040 (octal escapes)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


class MountSizes:
    """statvfs of each mount in a small thread pool of its own, each call with a timeout.

    A mount whose statvfs does not answer in time (a hung NFS or FUSE server) is reported
    (``Filesystem.unresponsive``) and not asked again until that call returns, as
    node_exporter does: it never holds up the other mounts, cgroup reads or rendering.
    """

    def __init__(self, timeout: float, workers: int = 4) -> None:
        self._timeout = timeout
        self._pool = DaemonPool(workers, "statfs")
        self._stuck: dict[str, Future[object]] = {}

    async def measure(self, mounts: tuple[Filesystem, ...], rootfs: str) -> tuple[Filesystem, ...]:
        calls: dict[str, Future[object]] = {}
        for fs in mounts:
            stuck = self._stuck.get(fs.mountpoint)
            if stuck is None or stuck.done():
                self._stuck.pop(fs.mountpoint, None)
                path = os.path.join(rootfs, fs.mountpoint.lstrip("/"))
                calls[fs.mountpoint] = self._pool.submit(os.statvfs, path)
        if calls:
            await asyncio.wait([asyncio.wrap_future(call) for call in calls.values()], timeout=self._timeout)
        result = []
        for fs in mounts:
            call = calls.get(fs.mountpoint)
            if call is None or not call.done():
                if call is not None:
                    log.warning(
                        "statfs of %s did not answer within %gs: skipped until it does",
                        fs.mountpoint,
                        self._timeout,
                    )
                    self._stuck[fs.mountpoint] = call
                result.append(replace(fs, unresponsive=True))
            elif call.exception() is None:  # else unmounted meanwhile, or not visible from here
                st: os.statvfs_result = call.result()  # type: ignore[assignment]
                size, free, avail = (n * st.f_frsize for n in (st.f_blocks, st.f_bfree, st.f_bavail))
                result.append(replace(fs, size_bytes=size, used_bytes=size - free, avail_bytes=avail))
        return tuple(result)

    def close(self) -> None:
        self._pool.close()


Call = tuple[Future[object], Callable[[], object]]


class DaemonPool:
    """A few daemon threads taking calls from a queue. Unlike ThreadPoolExecutor's threads,
    which the interpreter joins at exit, a call that never returns does not hold up the exit."""

    def __init__(self, workers: int, name: str) -> None:
        self._calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, function: Callable[..., object], *args: object) -> Future[object]:
        future: Future[object] = Future()
        self._calls.put((future, lambda: function(*args)))
        return future

    def close(self) -> None:
        for _ in self._workers:
            self._calls.put(None)

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, function = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function())
                except BaseException as exc:
                    future.set_exception(exc)
