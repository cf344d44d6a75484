"""The one failure policy every source shares.

A source is polled every ``interval`` seconds, and at once whenever it sets its
optional ``changed`` event (sources that follow a stream use it to publish a
change without waiting for the next tick). A collection that raises or
overruns ``timeout`` marks the source down (its value becomes ``None`` so its
series disappear instead of freezing) and counts an error; the next good
collection brings it back. Other sources never notice.

With a ``demand`` (the hub's), a source collects when somebody will read it: at the ticks a
1 Hz reader wants, and just before each scrape otherwise; a ``changed`` event still collects
at once. A collection made sooner than its tick sets the phase of the ticks after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from kato_exporter.hub import Demand, Hub
from kato_exporter.model import SourceHealth

log = logging.getLogger(__name__)


class Source(Protocol):
    name: str
    interval: float
    timeout: float

    async def collect(self) -> Any: ...


async def run_source(
    source: Source,
    hub: Hub,
    monotonic: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    demand: Demand | None = None,
) -> None:
    errors = collections = 0
    last_success: float | None = None
    was_up: bool | None = None
    last_error: str | None = None
    changed: asyncio.Event | None = getattr(source, "changed", None)
    tick = monotonic()  # when the next collection is due: on its phase (no drift) until one comes sooner
    while True:
        started = monotonic()
        if started >= tick:
            tick = tick + source.interval if started - tick < source.interval else started + source.interval
        else:  # sooner than its tick (wanted before a scrape, or a change): the ticks take its phase
            tick = started + source.interval
        if changed is not None:
            changed.clear()
        value: Any = None
        error: str | None = None
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the collection finishes, and the exporter would never stop.
            async with asyncio.timeout(source.timeout):
                value = await source.collect()
        except TimeoutError:
            error = f"collection took longer than {source.timeout:g}s"
        except Exception as exc:  # the policy: any failure marks the source down
            error = str(exc) or type(exc).__name__
        duration = monotonic() - started
        collections += 1
        if error is None:
            last_success = wall()
            if was_up is False:
                log.info("source %s recovered", source.name)
        else:
            errors += 1
            if error != last_error:  # once per new reason, not once per attempt
                log.warning("source %s is down: %s", source.name, error)
        was_up, last_error = error is None, error
        health = SourceHealth(
            up=was_up,
            duration_seconds=duration,
            errors_total=errors,
            collections_total=collections,
            last_success_seconds=last_success,
            last_error=error,
        )
        await hub.update(source.name, value, health)
        while True:  # until the next collection is due, or a change
            now = monotonic()  # asked again after each wake: a scrape may have come meanwhile
            due = tick if demand is None else demand.next_refresh(started, tick, source.interval)
            if due <= now:
                await asyncio.sleep(0)  # others' turn before the next collection
                break
            if tick <= now:  # a tick nobody wanted: skipped
                tick += source.interval
            elif await _woken(changed, min(due, tick) - now):
                break


async def _woken(changed: asyncio.Event | None, delay: float) -> bool:
    """Sleep ``delay`` seconds; True if ``changed`` was set meanwhile."""
    if changed is None:
        await asyncio.sleep(max(0.0, delay))
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, delay)):
            await changed.wait()
    return changed.is_set()
