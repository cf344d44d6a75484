"""KATO's requests and errors, counted from uvicorn's access log lines.

KATO's own error counter is never incremented and its request counters are per
worker; the access log on the container's stdout sees every request of every
worker. Each matching container's log stream is followed through the Docker API
(``timestamps=1``); after a stop, a restart or a lost connection the stream is
resumed where it was read up to, so nothing is counted twice (see ``Cursor``). Counting
starts when the exporter starts (no history is replayed).

Yields::

    RequestCounts(by_method_code={("GET", "200"): 1520, ("POST", "500"): 3}, containers=1)

The path is never kept: session ids live in it.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping

import aiodocker
import aiohttp

from kato_exporter.model import HTTP_METHODS, RequestCounts
from kato_exporter.sources.discovery import container_name
from kato_exporter.supervision import Backoff, Link, SourceError

log = logging.getLogger(__name__)

# INFO:     172.17.0.1:40524 - "GET /sessions/count HTTP/1.1" 200 OK
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) \S+ HTTP/[0-9.]+" (?P<code>[1-5][0-9]{2})(?: |$)')


def parse_access_line(line: str) -> tuple[str, str] | None:
    """``(method, code)`` of an access line, None for any other line."""
    match = ACCESS_LINE.search(line)
    if match is None:
        return None
    method = match["method"] if match["method"] in HTTP_METHODS else "OTHER"
    return method, match["code"]


class AccessLogSource:
    name = "kato_logs"

    def __init__(
        self,
        docker_url: str,
        containers: re.Pattern[str],
        *,
        watched: Callable[[str, Mapping[str, str]], bool] = lambda name, labels: True,
        interval: float = 2.0,
        clock: Callable[[], float] = time.time,
        docker_factory: Callable[[str], aiodocker.Docker] = aiodocker.Docker,
    ) -> None:
        self.interval = interval
        self.timeout = 10.0
        self._url = docker_url
        self._containers = containers
        self._watched = watched  # the containers the exporter watches: KATO's is among them
        self._clock = clock
        self._factory = docker_factory
        self._docker: aiodocker.Docker | None = None
        self._counts: Counter[tuple[str, str]] = Counter()
        self._started = clock()
        self._cursors: dict[str, Cursor] = {}  # by container id
        self._followers: dict[str, Link] = {}  # by container id, while it runs
        self.changed = asyncio.Event()  # a follower went down or up: report it now

    async def close(self) -> None:
        await asyncio.gather(*(link.close() for link in self._followers.values()))
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
        matching = [
            c
            for c in listed
            if self._containers.fullmatch(name := container_name(c))
            and self._watched(name, c["Labels"] or {})
        ]
        if not matching:
            raise SourceError(f"no watched container matches {self._containers.pattern!r}")
        running = {c.id: c for c in matching if c["State"] == "running"}
        for gone in self._followers.keys() - running.keys():  # stopped, removed or renamed
            await self._followers.pop(gone).close()
        for gone in self._cursors.keys() - {c.id for c in matching}:
            del self._cursors[gone]
        for container_id, container in running.items():
            if container_id not in self._followers:
                self._followers[container_id] = link = self._follower(container)
                link.start()
        for link in self._followers.values():
            await link.report()  # a follower that failed is restarting: its counts are behind
        return RequestCounts(dict(self._counts), len(self._followers))

    def _follower(self, container: aiodocker.docker.DockerContainer) -> Link:
        link = Link(
            f"access log of {container_name(container)}",
            lambda: self._follow(container, link),
            Backoff(0.5, 10.0),
            changed=self.changed,
            expected=(aiodocker.DockerError, aiohttp.ClientError),
        )
        return link

    async def _follow(self, container: aiodocker.docker.DockerContainer, link: Link) -> None:
        """Count the container's access lines. A log stream ends when the container stops
        (collect() then retires this follower) or restarts (this goes on with the new stream);
        any other end is the supervisor's to report and restart."""
        if container.id not in self._cursors:  # count from the exporter's or the container's start
            self._cursors[container.id] = Cursor(int(max(self._started, float(container["Created"])) * 1e9))
        cursor = self._cursors[container.id]
        started = (await container.show())["State"]["StartedAt"]
        link.connected()
        while True:
            await self._count(
                container.log(
                    stdout=True,
                    stderr=True,
                    follow=True,
                    timestamps=True,
                    since=cursor.since(),
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
                ),
                cursor,
            )
            while not (state := (await container.show())["State"])["Running"]:
                await asyncio.sleep(1)  # stopped: collect() retires this follower, unless it starts again
            if state["StartedAt"] == started:
                return  # the daemon ended the stream of a running container
            started = state["StartedAt"]

    async def _count(self, stream: AsyncIterator[str], cursor: Cursor) -> None:
        pending = ""
        async for chunk in stream:
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                if cursor.first_sight(line) and (parsed := parse_access_line(line)) is not None:
                    self._counts[parsed] += 1


class Cursor:
    """How far a container's log has been read, so a resumed stream counts nothing twice.

    stdout and stderr are timestamped apart, so their lines do not arrive in timestamp
    order: a stream is resumed a little before the newest line read, and the lines read
    in that stretch are remembered to skip them when they come again.
    """

    OVERLAP = 2 * 10**9  # nanoseconds

    def __init__(self, start: int) -> None:
        self.latest = start  # ns since the epoch
        self._recent: dict[str, int] = {}  # line -> its timestamp, for lines within OVERLAP of latest

    def since(self) -> str:
        start = max(0, self.latest - self.OVERLAP)
        return f"{start // 10**9}.{start % 10**9:09d}"

    def first_sight(self, line: str) -> bool:
        try:
            when = parse_timestamp(line.partition(" ")[0])
        except ValueError:
            return False
        if line in self._recent or when < self.latest - self.OVERLAP:
            return False
        self._recent[line] = when
        if when > self.latest:
            self.latest = when
            horizon = when - self.OVERLAP
            self._recent = {text: at for text, at in self._recent.items() if at >= horizon}
        return True


def parse_timestamp(stamp: str) -> int:
    """Docker's RFC 3339 log timestamp (UTC, trailing zeros of the fraction dropped)
    → nanoseconds since the epoch."""
    main, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 10**9 + int((fraction or "0").ljust(9, "0")[:9])
