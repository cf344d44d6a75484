"""The failure policy: a failing source goes down and comes back on its own."""

from __future__ import annotations

import asyncio
import math
import time

from kato_exporter.hub import Demand, Hub
from kato_exporter.sources.runner import run_source


class Flaky:
    """Fails on the calls listed in ``failing``, hangs on those in ``hanging``."""

    name = "flaky"
    interval = 0.01
    timeout = 0.05

    def __init__(self, failing=(), hanging=()):
        self.calls = 0
        self.failing, self.hanging = set(failing), set(hanging)

    async def collect(self):
        self.calls += 1
        if self.calls in self.hanging:
            await asyncio.sleep(10)
        if self.calls in self.failing:
            raise ConnectionError("refused")
        return self.calls


async def states(source, count):
    hub = Hub()
    task = asyncio.create_task(run_source(source, hub))
    seen = []
    version = 0
    while len(seen) < count:
        snapshot = await hub.next_snapshot(version)
        version = snapshot.version
        seen.append((snapshot.values["flaky"], snapshot.health["flaky"]))
    task.cancel()
    return seen


async def test_failure_drops_value_counts_error_and_recovers():
    seen = await states(Flaky(failing={2, 3}), 4)
    assert [value for value, _ in seen] == [1, None, None, 4]
    assert [h.up for _, h in seen] == [True, False, False, True]
    assert [h.errors_total for _, h in seen] == [0, 1, 2, 2]
    assert seen[1][1].last_error == "refused"
    assert seen[2][1].last_success_seconds == seen[0][1].last_success_seconds


async def test_a_hung_collection_times_out():
    seen = await states(Flaky(hanging={1}), 2)
    assert seen[0][1].up is False
    assert "longer than 0.05s" in seen[0][1].last_error
    assert seen[1][0] == 2


def test_demand_refreshes_before_each_learnt_scrape_and_every_tick_otherwise():
    now = [1000.2]
    demand = Demand(clock=lambda: now[0])

    def after(last_refresh: float, tick: float, at: float | None = None) -> float:
        now[0] = last_refresh if at is None else at
        return demand.next_refresh(last_refresh, tick, 1.0)

    assert after(1000.2, 1000.7) == 1000.7  # nobody scraping: every tick
    demand.scrapes = lambda: [(1015.0, 15.0, 0.0)]  # scraped every 15 s, next at 1015
    assert after(1000.2, 1000.7) == 1014.5  # half a second before
    assert after(1000.2, 1000.7, at=1014.5) == 1014.5  # woken then: due now
    assert after(1014.5, 1014.7) == 1015.5  # made, and the scrape late: every second until it comes
    assert after(1029.5, 1029.7) == 1030.5
    assert after(1030.1, 1030.7) == 1030.7  # a period late: gone, so every tick
    demand.scrapes = lambda: [(1015.0, 15.0, 0.7)]  # a scraper whose period varies by 0.7 s
    assert after(1000.2, 1000.7) == 1013.8
    demand.scrapes = lambda: [(math.inf, None, 0.0)]  # seen once, and nobody else: every tick
    assert after(1001.0, 1001.5) == 1001.5
    demand.scrapes = lambda: [(math.inf, None, 0.0), (1160.0, 60.0, 0.0)]  # seen once: no count
    assert after(1101.0, 1101.5) == 1159.5
    demand.scrapes = lambda: [(1015.0, 15.0, 0.0), (1060.0, 60.0, 0.0)]
    assert after(1000.2, 1000.7) == 1014.5  # the soonest of all
    demand.keep_fresh()  # a 1 Hz reader
    assert after(1000.2, 1000.7) == 1000.7
    assert after(1003.0, 1003.7) == 1014.5  # 3 s after its last read
    now[0] = 1004.0
    demand.keep_fresh()  # read again: fresh until 1007
    demand.scrapes = lambda: [(1006.0, 5.0, 0.0)]  # a scrape due 0.3 s after the tick at 1005.7
    assert after(1004.2, 1004.7, at=1004.3) == 1004.7  # the tick a second before it stays
    assert after(1005.2, 1005.7, at=1005.3) == 1005.5  # that one comes LEAD before the scrape
    assert after(1005.5, 1006.5) == 1006.5  # made: the next tick a second after it


async def test_ticks_nobody_reads_are_skipped_but_a_change_is_collected_at_once():
    source = Flaky()
    source.changed = asyncio.Event()
    hub = Hub()
    hub.demand.scrapes = lambda: [(time.monotonic() + 100.0, 100.0, 0.0)]  # the next scrape is far off
    task = asyncio.create_task(run_source(source, hub, demand=hub.demand))
    try:
        await asyncio.sleep(0.3)  # 30 ticks
        assert source.calls == 1  # the first collection, then none
        source.changed.set()
        await asyncio.sleep(0.05)
        assert source.calls == 2
        hub.demand.keep_fresh()  # a 1 Hz reader from now on: every tick
        await asyncio.sleep(0.3)
        assert source.calls >= 20
    finally:
        task.cancel()
