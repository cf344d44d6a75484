"""Containers and host refresh when somebody will read them: before each of Prometheus' scrapes,
and every second while a 1 Hz reader (the old page on the bridge) is connected."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import time

import aiohttp
import pytest

from kato_exporter.outputs.exposition import PROMETHEUS_ACCEPT
from tests.exposition import Exposition

# solo: with the old page connected the data is refreshed on the ticks of a second, and its age at a scrape
# holds only while they keep time, which they do not on a machine the other tests keep busy
pytestmark = [pytest.mark.integration, pytest.mark.solo]
PERIOD = 2.0


class Prometheus:
    """Scrapes as Prometheus does: one address, one connection, its headers, every PERIOD."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, source_address=("127.0.0.7", 0))
        self._due = time.monotonic()

    def scrape(self, late: float = 0.0) -> tuple[Exposition, float]:
        time.sleep(max(0.0, self._due + late - time.monotonic()))
        self._due += PERIOD
        headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
        self._connection.request("GET", "/metrics", headers=headers)
        body = self._connection.getresponse().read()
        return Exposition(gzip.decompress(body).decode(), openmetrics=True), time.time()

    def refreshes(self, periods: int) -> tuple[dict[str, float], list[float], int]:
        """Refreshes of containers and host over the next ``periods``, the data age at each scrape,
        and how many scrapes came late (a busy machine's: the exporter refreshes every second
        while one is late, by design)."""
        first, before = self.scrape()
        ages, late = [age(first, before)], 0
        for _ in range(periods):
            last, at = self.scrape()
            ages.append(age(last, at))
            late += at - before > PERIOD + 0.25
            before = at
        counts = {
            source: last.value("kato_exporter_collections_total", source=source)
            - first.value("kato_exporter_collections_total", source=source)
            for source in ("containers", "host")
        }
        return counts, ages, late


def age(scraped: Exposition, at: float) -> float:
    return at - scraped.value("kato_exporter_last_success_timestamp_seconds", source="containers")


def test_refreshed_before_each_scrape_and_every_second_for_the_old_page(start_exporter):
    exporter = start_exporter("--collector.containers.include=none-of-these", "--bridge.tick=1s")
    prometheus = Prometheus(exporter.port)
    prometheus.refreshes(2)  # its period learnt
    counts, ages, late = prometheus.refreshes(5)
    assert all(5 <= n <= 5 + late for n in counts.values()), f"one refresh a scrape: {counts}, {late} late"
    assert max(ages) < 1.0
    # a scrape 0.8 s late (Prometheus busy): the next ones are still expected on its beat
    late_one, at = prometheus.scrape(late=0.8)
    _, ages, _ = prometheus.refreshes(2)
    assert max(age(late_one, at), *ages) < 1.0, f"{age(late_one, at):.2f} s old 0.8 s late, then {ages}"

    async def with_the_old_page() -> tuple[dict[str, float], list[float], int]:
        async with aiohttp.ClientSession() as session, session.ws_connect(exporter.url + "/ws") as ws:
            await ws.send_json({"type": "subscribe", "subscriptions": ["metrics", "containers"]})
            await asyncio.sleep(1.5)
            return await asyncio.to_thread(prometheus.refreshes, 5)

    counts, ages, _ = asyncio.run(with_the_old_page())
    assert all(9 <= n <= 11 for n in counts.values()), counts  # every second of the 10
    assert max(ages) < 1.0  # and the tick before each scrape half a second before it
    counts, _, _ = prometheus.refreshes(5)  # the page gone: a refresh a scrape again, once its 3 s are up
    assert all(5 <= n <= 8 for n in counts.values()), counts
