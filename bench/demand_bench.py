"""Refreshing only when somebody will read: this design against an earlier one, in the same run.

    .venv/bin/python -m bench.demand_bench --baseline 202b555

Starts 1,000 idle busybox containers (label kato.bench=1), then runs the exporter of this
checkout ("ours") and that of ``--baseline`` (a commit whose exporter refreshes containers and
host every second whoever reads them, taken with `git archive`) side by side:

  1. CPU, RSS, data age (now − the containers' last collection, at each scrape) and scrape
     latency of each, scraped every 5 s as Prometheus scrapes (one scraper each);
  2. the same with a 1 Hz reader besides: a client of the legacy bridge subscribed as the old
     page is (`metrics`, `containers`);
  3. scrape latency every 5 s, 15 s and 60 s, ours, the baseline's and node_exporter's, each
     scraped by several scrapers (each from an address of its own, at phases spread over the
     period) so that each row holds at least ``--scrapes`` scrapes: p50 / p99 / max;
  4. row 1 again at 100 containers;
  5. (`--rows late`) row 1 with every fifth scrape a second late, its next one on the beat again.

Each exporter is started afresh for each row, so that no row inherits the scrapers of another.
Needs scripts/setup.sh to have run (dockerd, the busybox image, node_exporter).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import json
import math
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bench.exporter_bench import (
    LABEL,
    OUT,
    SCRAPER_HEADERS,
    bench_containers,
    cpu_seconds,
    remove_bench_containers,
    rss_bytes,
    start_node_exporter,
)
from tests.conftest import ROOT, Exporter, wait_for

AGE = re.compile(rb'^kato_exporter_last_success_timestamp_seconds\{source="containers"\} (\S+)', re.M)
REFRESHES = re.compile(rb'^kato_exporter_collections_total\{source="containers"\} (\S+)', re.M)


class Scraper(threading.Thread):
    """Scrapes ``url`` every ``period`` from ``source`` (an address of its own) on one keep-alive
    connection with Prometheus' headers, starting after ``phase``, every ``late_every``-th scrape
    ``late`` seconds late (a busy Prometheus': the next one on its beat again): each scrape's
    latency (ms) and, where the body says, its data age (s)."""

    def __init__(
        self, url: str, period: float, phase: float, until: float, source: str, late: tuple[int, float]
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.period, self.phase, self.until, self.source = url, period, phase, until, source
        self.late_every, self.late = late
        self.scrapes: list[tuple[float, float, float | None]] = []  # (when, latency, data age)
        self.refreshes: list[tuple[float, float]] = []  # (when, containers' collections so far)
        self.failed = 0

    def run(self) -> None:
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=10, source_address=(self.source, 0)
        )
        headers = dict(h.split(": ", 1) for h in SCRAPER_HEADERS)
        due = time.monotonic() + self.phase
        while due < self.until:
            late = (
                self.late
                if self.late_every and len(self.scrapes) % self.late_every == self.late_every - 1
                else 0.0
            )
            time.sleep(max(0.0, due + late - time.monotonic()))
            due += self.period
            started = time.perf_counter()
            try:
                connection.request("GET", parts.path, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except OSError:
                self.failed += 1
                connection.close()
                continue
            latency = (time.perf_counter() - started) * 1000
            received = time.time()
            self.failed += response.status != 200
            text = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
            match, refreshes = AGE.search(text), REFRESHES.search(text)
            self.scrapes.append((time.monotonic(), latency, received - float(match[1]) if match else None))
            if refreshes:
                self.refreshes.append((time.monotonic(), float(refreshes[1])))
        connection.close()


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {}
    return {
        "count": len(values),
        "p50": values[len(values) // 2],
        "p99": values[min(len(values) - 1, math.ceil(len(values) * 0.99) - 1)],
        "max": values[-1],
    }


def scrape_all(
    urls: dict[str, str], period: float, scrapers: int, seconds: float, late: tuple[int, float] = (0, 0.0)
) -> dict[str, dict]:
    """Each url scraped by ``scrapers`` scrapers every ``period`` for ``seconds`` after a warm-up
    of two periods (the exporter learns each scraper's period); the urls' scrapers interleave."""
    warm_up = 2 * period + 1
    start = time.monotonic()
    threads: dict[str, list[Scraper]] = {}
    for u, (name, url) in enumerate(urls.items()):
        threads[name] = [
            Scraper(
                url,
                period,
                period * (i + u / len(urls)) / scrapers,
                start + warm_up + seconds,
                f"127.0.{10 + u}.{10 + i}",
                late,
            )
            for i in range(scrapers)
        ]
    for thread in (t for ts in threads.values() for t in ts):
        thread.start()
    for thread in (t for ts in threads.values() for t in ts):
        thread.join()
    result = {}
    for name, ts in threads.items():
        timed = [s for t in ts for s in t.scrapes if s[0] >= start + warm_up]
        result[name] = {
            "latency_ms": summary([latency for _, latency, _ in timed]),
            "data_age_s": summary([age for _, _, age in timed if age is not None]),
            "failed": sum(t.failed for t in ts),
        }
        counts = sorted(r for t in ts for r in t.refreshes if r[0] >= start + warm_up)
        if len(counts) > 1:  # as the scraped bytes say (rendered after the refresh before them)
            result[name]["refreshes_per_second"] = (counts[-1][1] - counts[0][1]) / (
                counts[-1][0] - counts[0][0]
            )
    return result


class OldPage(threading.Thread):
    """A client of the legacy bridge, subscribed as the old dashboard page is, and sending its
    ``ping`` every 30 s (the bridge closes a client silent for longer)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url.replace("http://", "ws://") + "/ws"
        self.messages = 0
        self._done = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
            await ws.send_json({"type": "subscribe", "subscriptions": ["metrics", "containers"]})
            pinged = time.monotonic()
            while not self._done.is_set():
                if time.monotonic() - pinged > 30:
                    await ws.send_str("ping")
                    pinged = time.monotonic()
                try:
                    message = await ws.receive(timeout=0.5)
                except TimeoutError:
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"the bridge closed the old page's socket: {message}")
                self.messages += 1

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def steady(
    exporters: dict[str, Exporter], seconds: float, one_hz: bool, late: tuple[int, float] = (0, 0.0)
) -> dict[str, dict]:
    """CPU and RSS of each exporter while scraped every 5 s (one scraper each, ``late`` as
    ``Scraper``'s), with or without an old page connected, from the end of the scrapers' warm-up;
    data age and latency of those scrapes; refreshes of the containers a second."""
    pages = [OldPage(e.url) for e in exporters.values()] if one_hz else []
    for page in pages:
        page.start()
    time.sleep(5)  # past start-up
    scraped: dict[str, dict] = {}
    urls = {n: e.url + "/metrics" for n, e in exporters.items()}
    scrapers = threading.Thread(target=lambda: scraped.update(scrape_all(urls, 5.0, 1, seconds, late)))
    scrapers.start()
    time.sleep(2 * 5.0 + 1)  # scrape_all's warm-up
    before = {n: (cpu_seconds(e.proc.pid), time.monotonic()) for n, e in exporters.items()}
    scrapers.join()
    for name, e in exporters.items():
        cpu0, t0 = before[name]
        scraped[name]["cpu_percent_of_core"] = (
            100 * (cpu_seconds(e.proc.pid) - cpu0) / (time.monotonic() - t0)
        )
        scraped[name]["rss_mb"] = rss_bytes(e.proc.pid) / 1e6
    for page in pages:
        page.stop()
        scraped.setdefault("old_page_messages", []).append(page.messages)
    return scraped


def slow_scrapes(exporter: Exporter) -> dict[str, object]:
    """What the exporter says its scrapes waited for and wrote, and its garbage collections."""
    e = exporter.scrape()
    said: dict[str, object] = {}
    for family, label in (
        ("kato_exporter_scrape_seconds", "phase"),
        ("kato_exporter_gc_pause_seconds", "generation"),
    ):
        for labels, value in e.all(family + "_bucket"):
            said.setdefault(f"{family}{{{label}={labels[label]}}}", {})[labels["le"]] = value
    return said


def baseline_tree(revision: str) -> Path:
    """The exporter package of ``revision``, unpacked in a folder of its own."""
    folder = Path(tempfile.mkdtemp(prefix=f"kato-baseline-{revision}-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "exporter"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "exporter"


def with_exporters(count: int, baseline: Path, run: Callable[[dict[str, Exporter]], dict]) -> dict:
    args = [f"--collector.containers.label-selector={LABEL}"]
    exporters = {
        "ours": Exporter(args),
        "baseline": Exporter(args, prefix=["env", f"PYTHONPATH={baseline}"]),
    }
    try:
        for e in exporters.values():
            wait_for(
                lambda e=e: len(list(e.scrape().all("kato_container_info"))) == count,
                60,
                what=f"{count} containers on /metrics",
            )
        result = run(exporters)
        if "ours" in result:
            result["ours"]["said"] = slow_scrapes(exporters["ours"])
        return result
    finally:
        for e in exporters.values():
            e.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the commit to compare with")
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--steady-seconds", type=float, default=150)
    parser.add_argument("--scrapes", type=int, default=100, help="scrapes per latency row at least")
    parser.add_argument("--periods", type=float, nargs="+", default=[5, 15, 60])
    parser.add_argument("--scrapers", type=int, nargs="+", default=[4, 8, 20], help="per period")
    parser.add_argument("--small", type=int, default=100, help="containers of the last row (0: none)")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument(
        "--rows", nargs="+", default=["steady", "1hz", "latency", "small"], help="which rows to run"
    )
    parser.add_argument(
        "--late",
        type=float,
        nargs=2,
        default=[5, 1.0],
        metavar=("EVERY", "SECONDS"),
        help="the row 'late' (not run by default): every EVERY-th scrape SECONDS late",
    )
    args = parser.parse_args()
    baseline = baseline_tree(args.baseline)
    results: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": subprocess.run(["uname", "-mr"], capture_output=True, text=True).stdout.strip()
        + f", {subprocess.check_output(['nproc'], text=True).strip()} cores",
        "baseline": args.baseline,
    }

    def report(key: str, value: object) -> None:
        results[key] = value
        print(json.dumps({key: value}, indent=1), flush=True)

    node, node_url = start_node_exporter()
    try:
        n = args.containers
        bench_containers(n)
        for one_hz in (False, True):
            if ("1hz" if one_hz else "steady") in args.rows:
                row = with_exporters(n, baseline, lambda e, h=one_hz: steady(e, args.steady_seconds, h))
                report(f"{n}_with_1hz_reader" if one_hz else f"{n}_prometheus_only", row)
        if "late" in args.rows:
            late = (int(args.late[0]), args.late[1])
            row = with_exporters(n, baseline, lambda e: steady(e, args.steady_seconds, False, late))
            report(f"{n}_prometheus_late", row)
        for period, scrapers in zip(args.periods, args.scrapers, strict=True):
            if "latency" not in args.rows:
                break
            seconds = period * math.ceil(args.scrapes / scrapers)

            def latency(
                e: dict[str, Exporter], p: float = period, k: int = scrapers, w: float = seconds
            ) -> dict:
                urls = {name: x.url + "/metrics" for name, x in e.items()} | {"node_exporter": node_url}
                return scrape_all(urls, p, k, w)

            report(f"{n}_every_{period:g}s", with_exporters(n, baseline, latency))
        if args.small and "small" in args.rows:
            bench_containers(args.small)
            row = with_exporters(args.small, baseline, lambda e: steady(e, args.steady_seconds, False))
            report(f"{args.small}_prometheus_only", row)
    finally:
        node.terminate()
        if not args.keep:
            remove_bench_containers()
    OUT.mkdir(exist_ok=True)
    path = OUT / f"demand-{results['date']}-{'-'.join(args.rows)}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
