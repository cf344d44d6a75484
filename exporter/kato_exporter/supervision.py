"""The supervisor of every long-running task (an event stream, a subscription, a log
follower, the Grafana Live pusher), with what it needs: the one error a source reports, a
first-contact wait, and backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class SourceError(Exception):
    """A source could not collect; the message says why in one line."""


def reason(exc: BaseException) -> str:
    """One line on why ``exc`` happened; never empty, even for ``TimeoutError()``."""
    if isinstance(exc, BaseExceptionGroup):  # a task of a TaskGroup: say which error it was
        return reason(exc.exceptions[0])
    text = str(exc)
    if isinstance(exc, SourceError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def first_contact(ready: asyncio.Event, seconds: float = 2.0) -> None:
    """Let a source's first connection finish (at most ``seconds``) before it reports, so
    that an exporter just started does not call every source down for a moment."""
    if not ready.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await ready.wait()


class Backoff:
    """Exponential backoff with ±20 % jitter: ``first``, twice that, … at most ``most``."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, most
        self._next = first

    def delay(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.most)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self.first


class Link:
    """A long-running task a source depends on, supervised.

    ``follow`` connects, calls ``connected()`` once it is following, and runs until the
    connection ends. Whatever ends it (a lost connection, a malformed message, a bug), the
    link goes down with the reason, which the source reports (``check()`` raises it as a
    ``SourceError``, so ``kato_exporter_source_up`` drops and ``/`` shows why; ``changed`` is
    set so that the runner collects at once), and ``follow`` is started again after a backoff
    that resets once it connects. Data is never served as up while its link is down, and a
    failure is reported even when the link is back before the next collection.
    """

    def __init__(
        self,
        what: str,
        follow: Callable[[], Awaitable[object]],
        backoff: Backoff,
        changed: asyncio.Event | None = None,
        expected: tuple[type[Exception], ...] = (),
    ) -> None:
        self.what = what
        self.up = False
        self.problem = "not connected yet"
        self._unreported: str | None = None  # a failure no check() has reported yet
        self.ready = asyncio.Event()  # set once the first attempt connected or failed
        self._follow = follow
        self._backoff = backoff
        self._changed = changed
        # logged without a traceback
        self._expected: tuple[type[Exception], ...] = (SourceError, OSError, TimeoutError, *expected)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=self.what)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def connected(self) -> None:
        if not self.up and self.ready.is_set():
            log.info("%s: following again", self.what)
        self.up, self.problem = True, ""
        self._backoff.reset()
        self._signal()

    async def report(self) -> None:
        """``check()``, once the first connection has had its chance (``first_contact``)."""
        await first_contact(self.ready)
        self.check()

    def check(self) -> None:
        """Raise unless up, and once for a failure since the last check, even if it is over."""
        problem, self._unreported = self._unreported, None
        if not self.up or problem:
            raise SourceError(f"{self.what}: {problem or self.problem}")

    async def _supervise(self) -> None:
        while True:
            try:
                await self._follow()
                problem = "ended"
            except asyncio.CancelledError:
                raise
            except self._expected as exc:
                problem = reason(exc)
            except Exception as exc:  # a malformed message or a bug: restart, never die silently
                problem = reason(exc)
                log.warning("%s: unexpected %s", self.what, problem, exc_info=True)
            if self.up or problem != self.problem:
                log.warning("%s: lost: %s", self.what, problem)
            self.up, self.problem, self._unreported = False, problem, problem
            self._signal()
            await asyncio.sleep(self._backoff.delay())

    def _signal(self) -> None:
        self.ready.set()
        if self._changed is not None:
            self._changed.set()
