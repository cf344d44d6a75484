"""Snapshot → exposition bytes, in every format scrapers ask for, ready before they ask.

Prometheus scrapes every 5–15 s on its own schedule while sources refresh every second,
so a scrape must not pay for rendering, and nobody should pay for renders nobody reads.
The exposition learns each scraper's period (by address and format) and renders the new
snapshots that arrive in the last ``lead`` seconds before its next scrape is due, in one
worker thread; the scrape then only returns bytes. A scraper whose period is not known
yet (or that is late) has every new snapshot rendered, until it has not been seen for
``ahead_window`` seconds. A scrape that arrives while its snapshot is being rendered waits
for that render, and concurrent scrapes of one snapshot share one render.

Rendering a snapshot is cheap because nothing is encoded twice: each source's block is
encoded once per new value of the source, and a source made of rows (containers) keeps
each row's lines until that row changes. The encoders are prometheus_client's; a block is
their output cut into per-family pieces and joined back in the same order, so the bytes
are those prometheus_client would produce for the whole (the tests compare them).
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import itertools
import math
import re
import statistics
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import parse_version

from kato_exporter.hub import Hub, Scrape, Snapshot
from kato_exporter.outputs.families import Builder, Durations, RowFamilies, exporter_families

Format = tuple[str, bool]  # (content type, gzipped)
# What Prometheus 2 asks for: rendered ahead from the start, so that even its first scrape of a
# newly started exporter finds its bytes ready.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
Encoder = Callable[[Any], bytes]  # prometheus_client's: anything with collect() → bytes
MAX_SCRAPERS = 64  # (address, format) pairs whose periods are learnt
BEAT_FROM = 8  # requests a scraper's period and beat are learnt from
_OPENMETRICS = re.compile(r"application/openmetrics-text; version=([^;]*)")


def canonical_type(accept: str) -> str:
    """The content type prometheus_client answers ``accept`` with, its version cut to what
    changes the bytes: OpenMetrics echoes any version asked for, yet writes the same text for
    every 1.x (and for every 2.x); a version that is not a number reads as none."""
    try:
        content_type = choose_encoder(accept)[1]
    except (TypeError, ValueError):  # prometheus_client compares such a version and fails
        content_type = choose_encoder("")[1]
    match = _OPENMETRICS.match(content_type)
    if match is None:
        return content_type
    version = "2.0.0" if parse_version(match[1]) >= (2, 0, 0) else "1.0.0"
    return f"application/openmetrics-text; version={version}" + content_type[match.end() :]


class _Families:
    """What prometheus_client's encoders call ``collect()`` on."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Codec:
    """One content type's encoder, and the trailer it ends every output with (OpenMetrics'
    ``# EOF``), which a block leaves off and the whole gets once."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self.trailer = encoder(_Families(()))

    def encode(self, families: Iterable[Metric]) -> bytes:
        return self._encoder(_Families(families)).removesuffix(self.trailer)


class _RowBlock:
    """The bytes of one ``RowFamilies`` source in one content type, each row encoded once
    per new value of that row."""

    def __init__(self, families: RowFamilies, codec: _Codec) -> None:
        self._families = families
        self._codec = codec
        self._headers = [codec.encode([f]) for f in families.families(())]
        self._rows: dict[Hashable, tuple[Any, list[bytes]]] = {}

    def encode(self, value: Any) -> bytes:
        kept: dict[Hashable, tuple[Any, list[bytes]]] = {}
        for key, row in self._families.rows(value):
            cached = self._rows.get(key)
            kept[key] = cached if cached is not None and cached[0] == row else (row, self._lines(row))
        self._rows = kept
        parts = [self._codec.encode(self._families.head(value))]
        for i, header in enumerate(self._headers):
            parts.append(header)
            parts.extend(lines[i] for _, lines in kept.values())
        return b"".join(parts)

    def _lines(self, row: Any) -> list[bytes]:
        """The row's sample lines of each family (the family's encoding minus its header)."""
        families = list(self._families.families((row,)))
        return [
            self._codec.encode([family]).removeprefix(header)
            for family, header in zip(families, self._headers, strict=True)
        ]


class _Scraper:
    """One scraper's requests, and when it will ask next.

    Prometheus asks on a beat (its interval, at a phase of its own) and comes late at times. So
    the next request is expected on the beat, not a period after the last request, which may
    have been late: the period is the median of the last few intervals, and the beat the median
    phase of the last few requests (one late request moves neither)."""

    def __init__(self, now: float) -> None:
        self.last = now  # when it last asked
        self.period: float | None = None  # None: not learnt yet
        self.due = math.inf  # when it will ask next
        self.jitter = 0.0  # how much sooner than due it came lately (each new one counts half)
        self._asked: deque[float] = deque([now], maxlen=BEAT_FROM)
        self._early = False

    def asked(self, now: float) -> None:
        if self.period is not None:
            early = self.due - now
            if early > self.period / 4 and self._early:  # twice far sooner than its beat: a new beat
                self._asked = deque([self.last], maxlen=BEAT_FROM)
            self._early = early > self.period / 4  # once: a request so late it looks early
            self.jitter = max(early, self.jitter / 2, 0.0)
        self.last = now
        self._asked.append(now)
        period = statistics.median(b - a for a, b in itertools.pairwise(self._asked))
        if period <= 0:  # asked twice at once: nothing to learn from
            self.period, self.due = None, math.inf
            return
        # the beat nearest this request: the median of each request's phase against this one's
        beat = now + statistics.median((a - now + period / 2) % period - period / 2 for a in self._asked)
        self.period = period
        self.due = beat if beat - now > period / 4 else beat + period  # before its beat: a late one


class Exposition:
    """Keeps the exposition bytes of the latest snapshot in every format scrapers ask for."""

    def __init__(
        self,
        hub: Hub,
        builders: Mapping[str, Builder],
        ahead_window: float = 600.0,
        lead: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hub = hub
        self._builders = builders
        self._ahead_window = ahead_window
        self._lead = lead  # more than a source's refresh: the last snapshot before a scrape is rendered
        self._clock = clock
        self._process = ProcessCollector(registry=None)
        self._codecs: dict[str, _Codec] = {}
        self._blocks: dict[tuple[str, str], tuple[Any, bytes]] = {}  # (source, type) → (value, bytes)
        self._row_blocks: dict[tuple[str, str], _RowBlock] = {}
        self._scrapers: dict[tuple[str, Format], _Scraper] = {}  # by (address, format)
        self._version = -1
        self._cache: dict[Format, bytes] = {}
        self._rendering: dict[tuple[int, Format], asyncio.Future[dict[Format, bytes]]] = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="render")
        self.renders = 0
        # what a slow scrape was slow at: waiting for its render, or writing; or the process
        # stopped for a full garbage collection
        self.scrape_times = Durations(
            "kato_exporter_scrape_seconds",
            "Scrapes of /metrics by phase: waiting for the bytes (a render not yet finished), writing them.",
            "phase",
            ("wait", "write"),
        )
        self.gc_pauses = Durations(
            "kato_exporter_gc_pause_seconds",
            "Garbage collections by generation: the process stands still meanwhile.",
            "generation",
            ("0", "1", "2"),
        )
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)
        prometheus = self.negotiate(PROMETHEUS_ACCEPT, "gzip")
        self._scrapers[("", prometheus)] = _Scraper(self._clock())  # until a real one asks

    def negotiate(self, accept: str, accept_encoding: str) -> Format:
        """The format for these request headers, by prometheus_client's own rules, as one of
        the few formats it produces (so that no header makes a format of its own)."""
        content_type = canonical_type(accept)
        if content_type not in self._codecs:
            encoder, same = choose_encoder(content_type)  # a content type reads as its own Accept
            assert same == content_type, (same, content_type)
            self._codecs[content_type] = _Codec(encoder)
        return content_type, gzip_accepted(accept_encoding)

    async def get(self, fmt: Format, scraper: str = "") -> bytes:
        """The latest snapshot's bytes in ``fmt`` (a format ``negotiate`` returned), for the
        scraper at address ``scraper``."""
        self._asked(fmt, scraper)
        snapshot = self._hub.snapshot
        if snapshot.version == self._version and fmt in self._cache:
            return self._cache[fmt]
        rendering = self._rendering.get((snapshot.version, fmt)) or self._render(snapshot, {fmt})
        return (await rendering)[fmt]

    async def run(self) -> None:
        """Render each new snapshot ahead of scrapes, in the formats asked for lately.

        Renders never queue up: while one runs, newer snapshots replace each other and
        only the latest is rendered next."""
        version = self._hub.snapshot.version
        while True:
            snapshot = await self._hub.next_snapshot(version)
            version = snapshot.version
            wanted = {fmt for fmt in self._due() if (version, fmt) not in self._rendering}
            if wanted:
                await self._render(snapshot, wanted)

    def _asked(self, fmt: Format, address: str) -> None:
        now = self._clock()
        scraper = self._scrapers.get((address, fmt))
        if scraper is None:
            self._scrapers.pop(("", fmt), None)  # the stand-in for Prometheus, now here itself
            if len(self._scrapers) >= MAX_SCRAPERS:  # forget the one seen longest ago
                del self._scrapers[min(self._scrapers, key=lambda key: self._scrapers[key].last)]
            self._scrapers[(address, fmt)] = _Scraper(now)
        else:
            scraper.asked(now)

    def scrapes(self) -> list[Scrape]:
        """Each scraper seen lately: when it will ask next, its period (None: not learnt yet),
        and how much sooner than expected it came lately."""
        self._forget(self._clock())
        return [(s.due, s.period, s.jitter) for s in self._scrapers.values()]

    def _forget(self, now: float) -> None:
        for key in [key for key, s in self._scrapers.items() if now - s.last > self._ahead_window]:
            del self._scrapers[key]

    def _due(self) -> set[Format]:
        """The formats a scraper will ask for within ``lead`` seconds, or might (period unknown)."""
        now = self._clock()
        self._forget(now)
        return {
            fmt
            for (_, fmt), s in self._scrapers.items()
            if s.period is None or now >= s.due - self._lead - s.jitter
        }

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.observe(str(info["generation"]), time.perf_counter() - self._gc_started)

    def _render(self, snapshot: Snapshot, formats: set[Format]) -> asyncio.Future[dict[Format, bytes]]:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._thread, self.render, snapshot, formats)
        keys = [(snapshot.version, fmt) for fmt in formats]
        self._rendering.update(dict.fromkeys(keys, future))

        def done(future: asyncio.Future[dict[Format, bytes]]) -> None:
            for key in keys:
                self._rendering.pop(key, None)
            if future.cancelled() or future.exception() is not None:
                return
            if snapshot.version > self._version:
                self._cache, self._version = dict(future.result()), snapshot.version
            elif snapshot.version == self._version:
                self._cache.update(future.result())

        future.add_done_callback(done)
        return future

    def render(self, snapshot: Snapshot, formats: Iterable[Format]) -> dict[Format, bytes]:
        """Runs in the worker thread."""
        self.renders += 1
        formats = list(formats)
        plain = {content_type: self._plain(snapshot, content_type) for content_type, _ in formats}
        return {
            (content_type, zipped): gzip.compress(plain[content_type], 6, mtime=0)
            if zipped
            else plain[content_type]
            for content_type, zipped in formats
        }

    def _plain(self, snapshot: Snapshot, content_type: str) -> bytes:
        codec = self._codecs[content_type]
        own = [*exporter_families(snapshot), self.scrape_times.family(), self.gc_pauses.family()]
        parts = [codec.encode([*own, *self._process.collect()])]
        for source, value in sorted(snapshot.values.items()):
            if source in self._builders:
                parts.append(self._block(source, value, content_type))
        parts.append(codec.trailer)
        return b"".join(parts)

    def _block(self, source: str, value: Any, content_type: str) -> bytes:
        cached = self._blocks.get((source, content_type))
        if cached is not None and cached[0] is value:
            return cached[1]
        builder, codec = self._builders[source], self._codecs[content_type]
        if isinstance(builder, RowFamilies) and value is not None:
            block = self._row_blocks.get((source, content_type))
            if block is None:
                block = self._row_blocks[(source, content_type)] = _RowBlock(builder, codec)
            body = block.encode(value)
        else:
            body = codec.encode(builder(value))
        self._blocks[(source, content_type)] = (value, body)
        return body
