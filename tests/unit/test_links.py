"""The supervisor every long-running task runs under."""

from __future__ import annotations

import asyncio

import pytest

from kato_exporter.supervision import Backoff, Link, SourceError


async def test_a_failure_is_reported_once_even_when_over_and_the_task_restarts():
    calls = 0
    changed = asyncio.Event()

    async def follow() -> None:
        nonlocal calls
        calls += 1
        link.connected()
        if calls == 1:
            raise TimeoutError()  # no message: the reason is still never empty
        await asyncio.Event().wait()

    link = Link("the thing", follow, Backoff(0.01, 0.02), changed=changed)
    link.start()
    async with asyncio.timeout(2):
        while calls < 2 or not link.up:
            await asyncio.sleep(0.005)
    assert changed.is_set()
    with pytest.raises(SourceError, match=r"^the thing: TimeoutError$"):
        link.check()  # back up already, but the failure has not been reported yet
    link.check()
    await link.close()


async def test_an_unexpected_error_or_a_plain_end_is_a_failure_too(caplog):
    outcomes = [KeyError("Id"), None]

    async def follow() -> None:
        if outcomes:
            outcome = outcomes.pop(0)
            if outcome is not None:
                raise outcome
            return  # the stream ended
        link.connected()
        await asyncio.Event().wait()

    link = Link("the thing", follow, Backoff(0.01, 0.02))
    link.start()
    async with asyncio.timeout(2):
        while not link.up:
            await asyncio.sleep(0.005)
    assert "the thing: unexpected KeyError: 'Id'" in caplog.text  # with its traceback
    assert "the thing: lost: ended" in caplog.text
    await link.close()


def test_backoff_doubles_to_its_ceiling_with_jitter_and_resets():
    backoff = Backoff(0.1, 0.4)
    delays = [backoff.delay() for _ in range(5)]
    for delay, nominal in zip(delays, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
    backoff.reset()
    assert backoff.delay() <= 0.12
