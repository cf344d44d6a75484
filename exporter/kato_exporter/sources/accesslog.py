"""KATO's requests and errors, counted from uvicorn's access log lines.

KATO's own error counter is never incremented and its request counters are per
worker; the access log on the container's stdout sees every request of every
worker. Each matching container's log stream is followed through the Docker API
(``timestamps=1``); after a stop, a restart or a lost connection the stream is
resumed from the last timestamp counted, so nothing is counted twice. Counting
starts when the exporter starts (no history is replayed).

Yields::

    RequestCounts(by_method_code={("GET", "200"): 1520, ("POST", "500"): 3}, containers=1)

The path is never kept: session ids live in it.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable

import aiodocker
import aiohttp

from kato_exporter.model import RequestCounts
from kato_exporter.sources.runner import SourceError

log = logging.getLogger(__name__)

# INFO:     172.17.0.1:40524 - "GET /sessions/count HTTP/1.1" 200 OK
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) \S+ HTTP/[0-9.]+" (?P<code>[1-5][0-9]{2})(?: |$)')
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def parse_access_line(line: str) -> tuple[str, str] | None:
    """``(method, code)`` of an access line, None for any other line."""
    match = ACCESS_LINE.search(line)
    if match is None:
        return None
    method = match["method"] if match["method"] in METHODS else "OTHER"
    return method, match["code"]


class AccessLogSource:
    name = "kato_logs"

    def __init__(
        self,
        docker_url: str,
        containers: re.Pattern[str],
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.time,
        docker_factory: Callable[[str], aiodocker.Docker] = aiodocker.Docker,
    ) -> None:
        self.interval = interval
        self.timeout = 10.0
        self._url = docker_url
        self._containers = containers
        self._clock = clock
        self._factory = docker_factory
        self._docker: aiodocker.Docker | None = None
        self._counts: Counter[tuple[str, str]] = Counter()
        self._started = clock()
        self._resume_at: dict[str, tuple[int, int]] = {}  # container id -> last line counted
        self._followers: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        for task in self._followers.values():
            task.cancel()
        await asyncio.gather(*self._followers.values(), return_exceptions=True)
        if self._docker is not None:
            await self._docker.close()

    async def collect(self) -> RequestCounts:
        """Start following every matching running container that is not followed yet."""
        if self._docker is None:
            self._docker = self._factory(self._url)
        try:
            listed = await self._docker.containers.list(all=True)
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            await self._docker.close()
            self._docker = None
            raise SourceError(f"cannot reach Docker at {self._url}: {exc}") from None
        matching = [c for c in listed if self._containers.fullmatch(_name(c))]
        if not matching:
            raise SourceError(f"no container matches {self._containers.pattern!r}")
        for gone in self._followers.keys() - {c.id for c in matching}:  # removed or renamed
            self._followers.pop(gone).cancel()
            self._resume_at.pop(gone, None)
        for container in matching:
            follower = self._followers.get(container.id)
            if container["State"] == "running" and (follower is None or follower.done()):
                self._followers[container.id] = asyncio.create_task(
                    self._follow(container), name=f"logs {_name(container)}"
                )
        return RequestCounts(dict(self._counts), sum(not f.done() for f in self._followers.values()))

    async def _follow(self, container: aiodocker.docker.DockerContainer) -> None:
        if container.id not in self._resume_at:  # count from the exporter's or the container's start
            start = max(self._started, float(container["Created"]))
            self._resume_at[container.id] = (int(start), int(start % 1 * 1e9))
        seconds, nanos = self._resume_at[container.id]
        since = f"{seconds}.{nanos:09d}"
        stream = container.log(
            stdout=True,
            stderr=True,
            follow=True,
            timestamps=True,
            since=since,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )
        pending = ""
        with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError, OSError):
            async for chunk in stream:
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    self._count(container.id, line)
        log.debug("log stream of %s ended", _name(container))

    def _count(self, container_id: str, line: str) -> None:
        stamp, _, text = line.partition(" ")
        try:
            when = parse_timestamp(stamp)
        except ValueError:
            return
        if when <= self._resume_at[container_id]:
            return  # counted before the stream was resumed
        self._resume_at[container_id] = when
        parsed = parse_access_line(text)
        if parsed is not None:
            self._counts[parsed] += 1


def _name(container: aiodocker.docker.DockerContainer) -> str:
    names = container["Names"] or ["/"]
    return str(names[0]).lstrip("/")


def parse_timestamp(stamp: str) -> tuple[int, int]:
    """Docker's RFC 3339 log timestamp (UTC, trailing zeros of the fraction dropped)
    → (Unix seconds, nanoseconds), which compare correctly."""
    main, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return seconds, int((fraction or "0").ljust(9, "0")[:9])
