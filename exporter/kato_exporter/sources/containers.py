"""Containers: metadata from the Docker API, numbers from cgroup files.

The Docker API is listed once and then followed through ``/events``, so the
daemon is not polled every second. Each refresh reads cgroup files only
("cgroup" mode), or, where those cannot be read (Docker Desktop, rootless, a
remote daemon), Docker's one-shot stats API with bounded concurrency ("api" mode).

Yields, every refresh::

    ContainersSample(mode="cgroup", containers=(
        Container(meta=ContainerMeta(id="00859085fc69…", name="kato", image="kato:3.10.1",
                                     labels={...}, state="running", health="healthy",
                                     restarts=0, started_at=1795716400.1, pid=4242),
                  usage=ContainerUsage(cpu_seconds=12.5, memory_usage_bytes=..., ...)),
        Container(meta=ContainerMeta(..., state="exited", pid=0), usage=None),
    ))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import aiodocker
import aiohttp

from kato_exporter.model import Container, ContainerMeta, ContainersSample, ContainerUsage
from kato_exporter.sources import cgroups
from kato_exporter.supervision import Backoff, Link

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerFilter:
    include: re.Pattern[str]  # anchored match on the container name
    labels: tuple[tuple[str, str | None], ...] = ()  # ("key", None) = key present

    def __call__(self, meta: ContainerMeta) -> bool:
        return self.matches(meta.name, meta.labels)

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if not self.include.fullmatch(name):
            return False
        return all(key in labels and (value is None or labels[key] == value) for key, value in self.labels)


class ContainersSource:
    name = "containers"

    def __init__(
        self,
        docker_url: str,
        *,
        interval: float = 1.0,
        keep: ContainerFilter | None = None,
        stats_mode: str = "auto",
        api_concurrency: int = 8,
        procfs: str = "/proc",
        sysfs: str = "/sys",
        docker_factory: Callable[[str], aiodocker.Docker] = aiodocker.Docker,
    ) -> None:
        self.interval = interval
        self.timeout = max(10.0, interval * 5)
        self._url = docker_url
        self._keep = keep or ContainerFilter(re.compile(".*"))
        self._stats_mode = stats_mode
        self._procfs, self._sysfs = procfs, sysfs
        self._factory = docker_factory
        self._api_slots = asyncio.Semaphore(api_concurrency)
        self._docker: aiodocker.Docker | None = None
        self._meta: dict[str, ContainerMeta] = {}
        self._cgroups: dict[tuple[str, int], cgroups.Cgroup] = {}  # by (container id, pid)
        self._updated: set[str] = set()
        # each running container's six files, kept open (6,000 at 1,000 containers)
        self._files = cgroups.Files(keep_open=True, most=open_files_budget())
        self._usages: dict[tuple[str, int], ContainerUsage] = {}  # the last read, by (id, pid)
        self.mode = "cgroup" if stats_mode == "auto" else stats_mode
        self._mode_settled = False  # chosen by a running container's cgroup, not guessed
        self.changed = asyncio.Event()
        # a local daemon that returns is found again within a second
        self._link = Link(
            f"Docker at {docker_url}",
            self._watch,
            Backoff(0.1, 1.0),
            changed=self.changed,
            expected=(aiodocker.DockerError, aiohttp.ClientError),
        )

    async def start(self) -> None:
        self._link.start()

    async def close(self) -> None:
        await self._link.close()
        if self._docker:
            await self._docker.close()
        self._files.close()

    async def collect(self) -> ContainersSample:
        await self._link.report()
        metas = sorted(self._meta.values(), key=lambda m: m.name)
        if self.mode == "cgroup":
            self._updated.clear()
            usages, known = await asyncio.to_thread(
                self._read_cgroups, metas, dict(self._cgroups), self._files, self._usages
            )
            self._usages = {(m.id, m.pid): u for m, u in zip(metas, usages, strict=True) if u is not None}
            self._cgroups = {key: cg for key, cg in known.items() if key[0] not in self._updated}
        else:
            usages = await asyncio.gather(*(self._read_api(m) for m in metas))
        return ContainersSample(tuple(map(Container, metas, usages)), self.mode)

    # --- following the daemon -------------------------------------------------

    async def _watch(self) -> None:
        """List, then follow ``/events`` until the stream ends or something goes wrong."""
        docker = self._factory(self._url)
        self._docker = docker
        try:
            await self._follow(docker)
        finally:
            await docker.close()

    async def _follow(self, docker: aiodocker.Docker) -> None:
        since = time.time()
        events = docker.events.subscribe(create_task=False)  # type: ignore[no-untyped-call]
        stream = asyncio.create_task(
            docker.events.run(since=f"{since:.6f}", filters=json.dumps({"type": ["container"]}))
        )
        try:
            await self._relist(docker)
            while (event := await events.get()) is not None:
                await self._on_event(docker, event)
            await stream  # re-raises the error that ended the stream, if any
        finally:
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)

    async def _relist(self, docker: aiodocker.Docker) -> None:
        listed = await docker.containers.list(all=True)
        metas = await asyncio.gather(*(self._inspect(docker, c.id) for c in listed))
        self._meta = {m.id: m for m in metas if m is not None and self._keep(m)}
        self._choose_mode()
        if not self._link.ready.is_set():
            running = sum(m.state == "running" for m in self._meta.values())
            log.info(
                "following Docker at %s: %d containers (%d running), stats from %s",
                self._url,
                len(self._meta),
                running,
                self.mode,
            )
        self._link.connected()

    async def _on_event(self, docker: aiodocker.Docker, event: dict[str, Any]) -> None:
        container_id = event.get("id") or event.get("Actor", {}).get("ID", "")
        # resolve its cgroup again (`docker update` changes limits), also if a read is under way
        if self.mode == "cgroup":
            self._updated.add(container_id)
        self._cgroups = {key: cg for key, cg in self._cgroups.items() if key[0] != container_id}
        if event.get("Action") == "destroy":
            self._meta.pop(container_id, None)
            return
        meta = await self._inspect(docker, container_id)
        if meta is not None and self._keep(meta):
            self._meta[container_id] = meta
            if meta.pid and not self._mode_settled:
                self._choose_mode()
        else:
            self._meta.pop(container_id, None)

    async def _inspect(self, docker: aiodocker.Docker, container_id: str) -> ContainerMeta | None:
        try:
            info = await docker.containers.container(container_id).show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:  # removed meanwhile
                return None
            raise
        return meta_from_inspect(info)

    def _choose_mode(self) -> None:
        if self._stats_mode != "auto":
            return
        readable = self._cgroups_readable()
        self._mode_settled = readable is not None
        if readable is None:  # a guess, until a container runs
            local = self._url.startswith("unix://")
            readable = local and os.path.isdir(os.path.join(self._sysfs, "fs", "cgroup"))
        mode = "cgroup" if readable else "api"
        if mode != self.mode:
            log.warning("container stats now from %s", mode)
        self.mode = mode

    def _cgroups_readable(self) -> bool | None:
        """Whether the containers' cgroup files are ours to read: Docker runs on this host (its
        API maybe through a proxy), and a container's process is in that container's cgroup.
        None, with no container running to tell by: chosen again when one runs."""
        running = [m for m in self._meta.values() if m.pid]
        if not running:
            return None
        try:
            if not cgroups.belongs(running[0].pid, running[0].id, self._procfs):
                log.info(
                    "process %d here is not in container %s's cgroup: Docker is on another host "
                    "or in another PID namespace; using Docker's stats API",
                    running[0].pid,
                    running[0].name,
                )
                return False
            cgroup = cgroups.resolve(running[0].pid, self._procfs, self._sysfs)
            cgroups.read_usage(cgroup, running[0].pid, self._procfs)
        except (OSError, ValueError) as exc:
            log.info("cannot read cgroup files (%s); using Docker's stats API", exc)
            return False
        return True

    # --- reading numbers ---------------------------------------------------------

    def _read_cgroups(
        self,
        metas: list[ContainerMeta],
        known: dict[tuple[str, int], cgroups.Cgroup],
        files: cgroups.Files,
        last: dict[tuple[str, int], ContainerUsage],
    ) -> tuple[list[ContainerUsage | None], dict[tuple[str, int], cgroups.Cgroup]]:
        """Runs in a worker thread: touches only its arguments. A usage equal to the last read
        is the last read's object, so that what is rendered from it is known unchanged at once."""
        usages: list[ContainerUsage | None] = []
        live = {}
        for meta in metas:
            usage = None
            if meta.state in ("running", "paused") and meta.pid:
                key = (meta.id, meta.pid)
                try:
                    cgroup = known.get(key) or cgroups.resolve(meta.pid, self._procfs, self._sysfs)
                    usage = cgroups.read_usage(cgroup, meta.pid, self._procfs, files)
                    live[key] = cgroup
                except (OSError, ValueError) as exc:  # it stopped between inspect and read
                    log.debug("no usage for %s: %s", meta.name, exc)
                if usage is not None and usage == last.get(key):
                    usage = last[key]
            usages.append(usage)
        files.sweep()
        return usages, live

    async def _read_api(self, meta: ContainerMeta) -> ContainerUsage | None:
        if meta.state not in ("running", "paused") or self._docker is None:
            return None
        async with self._api_slots:
            try:
                stats = await self._docker._query_json(
                    f"containers/{meta.id}/stats",
                    params={"stream": "false", "one-shot": "true"},
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                )
            except aiodocker.DockerError as exc:
                log.debug("no stats for %s: %s", meta.name, exc)
                return None
        return replace(
            usage_from_stats(stats),
            cpu_limit_cores=meta.cpu_limit_cores,
            memory_limit_bytes=meta.memory_limit_bytes,
        )


def open_files_budget() -> int:
    """How many counter files may stay open: half the process's limit (the rest for sockets).
    The soft limit is raised to the hard one first, as Go programs such as node_exporter do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft // 2


def meta_from_inspect(info: dict[str, Any]) -> ContainerMeta:
    state = info["State"]
    host = info.get("HostConfig") or {}
    cores = None
    if host.get("NanoCpus"):
        cores = host["NanoCpus"] / 1e9
    elif (host.get("CpuQuota") or 0) > 0:
        cores = host["CpuQuota"] / (host.get("CpuPeriod") or 100_000)
    return ContainerMeta(
        id=info["Id"],
        name=info["Name"].lstrip("/"),
        image=info["Config"].get("Image", ""),
        labels=info["Config"].get("Labels") or {},
        state=state["Status"],
        health=(state.get("Health") or {}).get("Status"),
        restarts=info.get("RestartCount", 0),
        started_at=parse_docker_time(state.get("StartedAt")),
        pid=state.get("Pid") or 0,
        cpu_limit_cores=cores,
        memory_limit_bytes=host.get("Memory") or None,
        exit_code=state.get("ExitCode") or 0,
        restart_policy=(host.get("RestartPolicy") or {}).get("Name") or "",
        network_mode=host.get("NetworkMode") or "",
    )


def usage_from_stats(stats: dict[str, Any]) -> ContainerUsage:
    """One-shot stats API document → usage (limits are filled in from inspect)."""
    memory = stats.get("memory_stats") or {}
    memory_stat = memory.get("stats") or {}
    usage = memory.get("usage", 0)
    inactive = memory_stat.get("total_inactive_file", memory_stat.get("inactive_file", 0))
    networks = (stats.get("networks") or {}).values()
    blkio = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    return ContainerUsage(
        cpu_seconds=stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9,
        memory_usage_bytes=usage,
        memory_working_set_bytes=max(0, usage - inactive),
        network_receive_bytes=sum(n.get("rx_bytes", 0) for n in networks),
        network_transmit_bytes=sum(n.get("tx_bytes", 0) for n in networks),
        block_read_bytes=sum(e["value"] for e in blkio if e.get("op", "").lower() == "read"),
        block_write_bytes=sum(e["value"] for e in blkio if e.get("op", "").lower() == "write"),
        pids=(stats.get("pids_stats") or {}).get("current"),
    )


def parse_docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 times carry nanoseconds; the zero time means "never"."""
    if not text or text.startswith("0001-"):
        return None
    main, _, fraction = text.rstrip("Z").partition(".")
    fraction = re.sub(r"[^0-9].*$", "", fraction)
    seconds = datetime.fromisoformat(main + "+00:00").timestamp()
    return seconds + (float("0." + fraction) if fraction else 0.0)
