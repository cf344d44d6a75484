"""Per-second rates of cumulative counters, for the outputs that show rates (Live, the legacy page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Rates:
    """Per-second rates of counters, from the previous value of each key."""

    def __init__(self) -> None:
        self._last: dict[Any, tuple[float, float]] = {}

    def __call__(self, key: Any, value: float, seconds: float) -> float | None:
        previous = self._last.get(key)
        self._last[key] = (value, seconds)
        if previous is None or seconds <= previous[1] or value < previous[0]:
            return None
        return (value - previous[0]) / (seconds - previous[1])

    def keep(self, alive: Callable[[Any], bool]) -> None:
        """Forget keys no longer seen (removed containers)."""
        self._last = {k: v for k, v in self._last.items() if alive(k)}
