"""The one failure policy every source shares.

A source is polled every ``interval`` seconds. A collection that raises or
overruns ``timeout`` marks the source down (its value becomes ``None`` so its
series disappear instead of freezing) and counts an error; the next good
collection brings it back. Other sources never notice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from kato_exporter.hub import Hub
from kato_exporter.model import SourceHealth

log = logging.getLogger(__name__)


class SourceError(Exception):
    """A source could not collect; the message says why in one line."""


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
) -> None:
    errors = 0
    last_success: float | None = None
    was_up: bool | None = None
    while True:
        started = monotonic()
        value: Any = None
        error: str | None = None
        try:
            value = await asyncio.wait_for(source.collect(), source.timeout)
        except TimeoutError:
            error = f"collection took longer than {source.timeout:g}s"
        except Exception as exc:  # the policy: any failure marks the source down
            error = str(exc) or type(exc).__name__
        duration = monotonic() - started
        if error is None:
            last_success = wall()
            if was_up is False:
                log.info("source %s recovered", source.name)
        else:
            errors += 1
            if was_up is not False:
                log.warning("source %s is down: %s", source.name, error)
        was_up = error is None
        health = SourceHealth(
            up=was_up,
            duration_seconds=duration,
            errors_total=errors,
            last_success_seconds=last_success,
            last_error=error,
        )
        await hub.update(source.name, value, health)
        await asyncio.sleep(max(0.0, source.interval - (monotonic() - started)))
