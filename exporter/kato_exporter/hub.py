"""The latest value of every source, as one immutable, versioned snapshot.

Sources write with ``update``; outputs read ``snapshot`` or wait for the next
one with ``next_snapshot``. Events that must not be merged into a snapshot (one
per session change) go through ``publish`` to every ``subscribe``-d queue.
Neither side knows about the other, except through ``demand``: when somebody will next read
what costs most to refresh.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping
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


# When a scraper will ask next, its period (None: not learnt yet), and how much sooner than
# expected it came lately.
Scrape = tuple[float, float | None, float]


class Demand:
    """When a source that is costly to refresh (containers, host) should refresh next.

    Outputs that read every second (the Live pusher, the bridge while a client is connected)
    call ``keep_fresh`` as they read: such sources then refresh at every tick for ``HOLD``
    seconds more, except that a tick that would land less than ``LEAD`` before a scrape comes
    ``LEAD`` before it (the render of a refresh just under way would hold the scrape up), and
    the ticks after it keep that phase. Otherwise ``scrapes`` (the exposition's) says when each
    scraper seen lately will ask next and how often it asks, and a source refreshes ``LEAD``
    seconds (plus the scraper's jitter) before each scrape is due, then every interval while the
    scrape is late: a punctual scraper costs one refresh, finds data under a second old, and its
    bytes are rendered before it asks. Nobody scraping (none yet, or each more than a period late) gets
    every tick. A scraper seen once does not count until it comes back: a curl costs nothing,
    and the second scrape of a new scraper beside others may find data as old as their period.
    """

    SOURCES = ("containers", "host")  # the sources refreshed on demand
    HOLD = 3.0  # seconds a 1 Hz reader keeps its sources fresh after its last read
    LEAD = 0.5  # before a scrape: room for a collection and a render of 1,000 containers

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._fresh_until = float("-inf")
        self.scrapes: Callable[[], Iterable[Scrape]] = lambda: ()

    def keep_fresh(self) -> None:
        self._fresh_until = self._clock() + self.HOLD

    def next_refresh(self, after: float, tick: float, interval: float) -> float:
        """When the next refresh is wanted (at or before now: now), given that the last one
        began at ``after`` and that the next tick of a refresh every ``interval`` is ``tick``."""
        now = self._clock()
        learnt = [
            (due - self.LEAD - jitter, due)  # when its refresh is wanted, when it will ask
            for due, period, jitter in self.scrapes()
            # seen once (a curl, or a scraper whose second scrape is to come), or more than a
            # period late: gone
            if period is not None and now <= due + period
        ]
        if tick <= self._fresh_until:  # every tick, but one that would land just before a scrape
            # comes LEAD before it instead (and the ticks after it keep that phase)
            return min([tick] + [first for first, due in learnt if after < first < tick <= due])
        wanted = math.inf
        for first, _ in learnt:
            if after >= first:  # that refresh was made: every interval on, until the scrape comes
                first += (math.floor((after - first) / interval) + 1) * interval
            wanted = min(wanted, first)
        return tick if wanted == math.inf else wanted  # nobody scraping (or every scraper gone): every tick


class Hub:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.demand = Demand()
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
