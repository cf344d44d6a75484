"""The failure policy: a failing source goes down and comes back on its own."""

from __future__ import annotations

import asyncio

from kato_exporter.hub import Hub
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
