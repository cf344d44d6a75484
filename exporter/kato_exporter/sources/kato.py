"""KATO's health and load from its HTTP API, polled gently (KATO caches 5 s per worker).

Yields, every poll::

    KatoSample(status="healthy", start_time_seconds=1795524548.0, sessions_reported=3,
               processors=2, processors_max=100)

``/health`` answers 200 even when unhealthy, so its ``status`` field is what counts.
``/sessions/count`` is KATO's index size, which never drops when sessions expire.
Each answer comes from one of KATO's workers, which say nothing of who they are: the start
time is the newest that any worker reported (now − its uptime), moved only by a start more
than ``SAME_START`` seconds later, so that the workers of one start read as one time and a
restart, of KATO or of one worker, moves it forward once.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from kato_exporter.model import KATO_HEALTH_STATES, KatoSample
from kato_exporter.supervision import SourceError


class KatoApi:
    """GET one KATO endpoint as JSON, with our errors instead of the library's.

    ``max_age`` lets a caller take a document another caller fetched moments ago
    (KATO itself caches /metrics and /sessions/count for 5 s).
    """

    def __init__(self, url: str, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._clock = clock
        self._fetched: dict[str, tuple[float, Any]] = {}  # path -> (when, document)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def get(self, path: str, max_age: float = 0.0) -> Any:
        when, document = self._fetched.get(path, (-math.inf, None))
        if self._clock() - when < max_age:
            return document
        document = await self._fetch(path)
        self._fetched[path] = (self._clock(), document)
        return document

    async def _fetch(self, path: str) -> Any:
        try:
            async with self.session.get(self.url + path) as response:
                body = await response.read()
                if response.status != 200:
                    raise SourceError(f"GET {path}: HTTP {response.status}")
        except TimeoutError:
            raise SourceError(f"GET {path}: no answer within {self._timeout.total:g}s") from None
        except aiohttp.ClientError as exc:
            raise SourceError(f"GET {path}: {exc}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise SourceError(f"GET {path}: not JSON: {body[:80]!r}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


SAME_START = 10.0  # seconds: KATO's workers start within this of each other


class KatoSource:
    name = "kato"

    def __init__(self, api: KatoApi, interval: float = 5.0, wall: Callable[[], float] = time.time) -> None:
        self.interval = interval
        self.timeout = interval * 2
        self._api = api
        self._wall = wall
        self._start = -math.inf

    async def close(self) -> None:
        await self._api.close()

    async def collect(self) -> KatoSample:
        health, metrics, count = await asyncio.gather(
            self._api.get("/health"), self._api.get("/metrics"), self._api.get("/sessions/count")
        )
        manager = field(metrics, "/metrics", "processor_manager", dict)
        status = field(health, "/health", "status", str)
        if status not in KATO_HEALTH_STATES:
            raise SourceError(f"GET /health: unknown status {status!r}")
        started = self._wall() - field(health, "/health", "uptime_seconds", (int, float))
        if started > self._start + SAME_START:
            self._start = started
        return KatoSample(
            status=status,
            start_time_seconds=round(self._start, 1),
            sessions_reported=field(count, "/sessions/count", "active_session_count", int),
            processors=field(manager, "/metrics", "total_processors", int),
            processors_max=field(manager, "/metrics", "max_processors", int),
            health=health,
            metrics=metrics,
        )


def field(document: Any, path: str, key: str, kind: type | tuple[type, ...]) -> Any:
    """``document[key]`` if it has the expected type, else a SourceError naming it."""
    if not isinstance(document, dict):
        raise SourceError(f"GET {path}: expected a JSON object, got {type(document).__name__}")
    value = document.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SourceError(f"GET {path}: {key} is {value!r}")
    return value
