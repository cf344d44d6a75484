"""The failure policy: a failing source goes down and comes back on its own."""

from __future__ import annotations

import asyncio
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


def test_demand_wants_a_refresh_before_each_learnt_scrape_and_every_tick_otherwise():
    now = [1000.0]
    demand = Demand(clock=lambda: now[0])
    assert demand.wanted(1000.0, 1.0)  # nobody scraping: every tick
    demand.scrapes = lambda: [(1000.0, 15.0)]  # scraped at 1000, every 15 s: next at 1015
    wanted = [t for t in range(1000, 1040) if demand.wanted(t + 0.5, 1.0)]
    assert wanted == list(range(1014, 1030))  # from an interval (and a margin) before, to a period late
    assert demand.wanted(1013.75, 1.0) and not demand.wanted(1013.74, 1.0)
    demand.scrapes = lambda: [(1000.0, None)]  # seen once: every tick, for a while
    assert demand.wanted(1119.0, 1.0) and not demand.wanted(1121.0, 1.0)
    demand.scrapes = lambda: [(1000.0, 15.0), (1000.0, None)]
    assert demand.wanted(1005.0, 1.0)  # anyone's want is enough
    demand.scrapes = lambda: [(1000.0, 60.0)]
    assert not demand.wanted(1005.0, 1.0)
    demand.keep_fresh()  # a 1 Hz reader
    assert demand.wanted(1000.0 + Demand.HOLD, 1.0) and not demand.wanted(1000.1 + Demand.HOLD, 1.0)


async def test_ticks_nobody_reads_are_skipped_but_a_change_is_collected_at_once():
    source = Flaky()
    source.changed = asyncio.Event()
    hub = Hub()
    hub.demand.scrapes = lambda: [(time.monotonic(), 100.0)]  # the next scrape is far off
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
