"""The latest value of every source, as one immutable, versioned snapshot.

Sources write with ``update``; outputs read ``snapshot`` or wait for the next
one with ``next_snapshot``. Events that must not be merged into a snapshot (one
per session change) go through ``publish`` to every ``subscribe``-d queue.
Neither side knows about the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kato_exporter.model import SourceHealth


@dataclass(frozen=True)
class Snapshot:
    version: int = 0
    values: Mapping[str, Any] = field(default_factory=dict)  # None while a source is down
    health: Mapping[str, SourceHealth] = field(default_factory=dict)
    collected_at: Mapping[str, float] = field(default_factory=dict)  # wall clock per source

    def complete(self, sources: set[str]) -> bool:
        """True once every named source has reported at least once."""
        return sources <= self.health.keys()


class Hub:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._snapshot = Snapshot()
        self._changed = asyncio.Condition()
        self._subscribers: set[asyncio.Queue[Any]] = set()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    async def update(self, source: str, value: Any, health: SourceHealth) -> Snapshot:
        old = self._snapshot
        self._snapshot = Snapshot(
            version=old.version + 1,
            values=MappingProxyType({**old.values, source: value}),
            health=MappingProxyType({**old.health, source: health}),
            collected_at=MappingProxyType({**old.collected_at, source: self._clock()}),
        )
        async with self._changed:
            self._changed.notify_all()
        return self._snapshot

    async def next_snapshot(self, after_version: int) -> Snapshot:
        """Wait until the snapshot is newer than ``after_version``."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._snapshot.version > after_version)
        return self._snapshot

    def publish(self, event: Any) -> None:
        """Hand ``event`` to every subscriber; a subscriber that fell behind loses its oldest."""
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Any]) -> None:
        self._subscribers.discard(queue)
