"""Session changes at many KATOs' pace: up to which rate is every change counted exactly?

    .venv/bin/python -m bench.session_rate_bench --rates 5000 10000 15000 --seconds 30

For each rate: a fresh redis-server, the KATO double, and the exporter as its own process (the real
command line). A load generator, in a process of its own, writes sessions straight into Redis as
KATO writes them (``SET kato:session:<id> … EX ttl`` and ``SADD`` to the index), spread evenly over
each second, for ``--seconds``: half of them live an hour, half expire within seconds. Meanwhile
/metrics is scraped as 20 Prometheus servers would, each every 5 s from an address of its own at
its own phase (their periods learned before the load starts), and each scrape is timed. Then, once
Redis has expired what it should, the exporter's counts are compared with what was written:
created, expired, missed, and whether the subscription was ever lost. The exporter's CPU is read
from /proc over the load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psutil
import redis

from bench.exporter_bench import timed_scrapes
from tests.conftest import Daemon, answers_http, answers_tcp, free_port, redis_command
from tests.exposition import Exposition

OUT = Path(__file__).resolve().parent / "out"
PREFIX = "kato:session:"
INDEX = PREFIX + "_active_index"
PROFILE = os.environ.get("KATO_BENCH_PROFILE")  # a file: py-spy's samples of the exporter, collapsed
TICKS = 20  # writes per second, each a pipeline of rate / TICKS sessions
SCRAPERS, PERIOD = 20, 5.0  # as 20 Prometheus servers, each from its own address, at its own phase
WARM_UP = 12.0  # seconds of scrapes before the load, not timed: the exporter learns their periods


def session_id(tick: int, i: int) -> str:
    """The generator's ``i``-th session of ``tick``: even ones are short-lived."""
    return f"session-{tick:05d}-{i:05d}"


def generate(url: str, rate: int, seconds: int, started: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    """The load generator (its own process): ``rate`` creations a second, half short-lived."""
    client = redis.Redis.from_url(url)
    batch = rate // TICKS
    started.set()  # type: ignore[attr-defined]
    begin = time.monotonic()
    for tick in range(seconds * TICKS):
        pipe = client.pipeline(transaction=False)
        for i in range(batch):
            ttl = 3600 if i % 2 else random.randint(2, 6)
            pipe.set(PREFIX + session_id(tick, i), '{"user_id":"u"}', ex=ttl)
            pipe.sadd(INDEX, session_id(tick, i))
        pipe.execute()
        delay = begin + (tick + 1) / TICKS - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def expire_short_lived(url: str, rate: int, seconds: int) -> None:
    """Read every short-lived session's key: Redis' active expiry samples keys at random, and among
    many long-lived ones takes minutes to find the last short-lived few."""
    client = redis.Redis.from_url(url)
    batch = rate // TICKS
    for tick in range(seconds * TICKS):
        pipe = client.pipeline(transaction=False)
        for i in range(0, batch, 2):
            pipe.exists(PREFIX + session_id(tick, i))
        pipe.execute()


def metrics(url: str) -> Exposition:
    with urllib.request.urlopen(url, timeout=10) as response:
        return Exposition(response.read().decode())


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run(rate: int, seconds: int, folder: Path) -> dict[str, object]:
    redis_port, kato_port, port = free_port(), free_port(), free_port()
    folder.mkdir(parents=True, exist_ok=True)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    daemons = [
        Daemon(
            f"bench-redis-{redis_port}", redis_command(redis_port, folder), answers_tcp(redis_port), redis_url
        )
    ]
    try:
        daemons.append(
            Daemon(
                f"bench-kato-{kato_port}",
                [
                    sys.executable,
                    "-m",
                    "tests.kato_double",
                    "--port",
                    str(kato_port),
                    "--redis-url",
                    redis_url,
                ],
                answers_tcp(kato_port),
                f"http://127.0.0.1:{kato_port}",
            )
        )
        exporter = Daemon(
            f"bench-exporter-{port}",
            [
                sys.executable,
                "-m",
                "kato_exporter",
                f"--web.listen-address=127.0.0.1:{port}",
                "--no-collector.containers",
                "--no-kato.logs",
                f"--kato.url=http://127.0.0.1:{kato_port}",
                f"--kato.redis-url={redis_url}",
            ],
            answers_http(f"http://127.0.0.1:{port}/-/ready"),
            f"http://127.0.0.1:{port}",
        )
        daemons.append(exporter)
        assert exporter.proc is not None
        url = exporter.url + "/metrics"
        time.sleep(2)
        before = metrics(url)
        errors_before = before.value("kato_exporter_collect_errors_total", source="kato_sessions") or 0
        timings: list[tuple[list[float], int]] = []
        scrapers = [
            threading.Thread(
                target=lambda k=k: timings.append(
                    timed_scrapes(
                        url, WARM_UP + seconds, PERIOD, k * PERIOD / SCRAPERS, f"127.0.0.{10 + k}", WARM_UP
                    )
                )
            )
            for k in range(SCRAPERS)
        ]
        for scraper in scrapers:
            scraper.start()
        time.sleep(WARM_UP)  # each scraper's period learned, as for a Prometheus that has been running
        started = multiprocessing.Event()
        generator = multiprocessing.Process(target=generate, args=(redis_url, rate, seconds, started))
        generator.start()
        started.wait()
        cpu0, t0 = cpu_seconds(exporter.proc.pid), time.monotonic()
        if PROFILE:
            py_spy = Path(sys.executable).parent / "py-spy"
            record = [
                "record",
                "--format",
                "raw",
                "-o",
                PROFILE,
                "-d",
                str(seconds),
                "-p",
                str(exporter.proc.pid),
            ]
            subprocess.Popen([str(py_spy), *record], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        generator.join()
        load_seconds = time.monotonic() - t0  # longer than asked when the generator cannot keep up
        cpu = (cpu_seconds(exporter.proc.pid) - cpu0) / load_seconds
        at_end = metrics(url).value("kato_session_events_total", event="created") or 0
        for scraper in scrapers:
            scraper.join()
        latencies = sorted(ms for scrapes, _ in timings for ms in scrapes)
        failed = sum(failures for _, failures in timings)
        written = rate // TICKS * TICKS * seconds
        time.sleep(7)  # past the longest short TTL; then touch them, for Redis samples few of them
        expire_short_lived(redis_url, rate, seconds)  # an expired key read is expired at once
        after, last, still = before, None, time.monotonic()
        while time.monotonic() - still < 15:  # Redis expires, the exporter counts (or reconnects)
            time.sleep(0.5)
            after = metrics(url)
            state = (
                after.value("kato_exporter_source_up", source="kato_sessions"),
                *(after.value("kato_session_events_total", event=e) for e in ("created", "expired")),
                *(after.value("kato_session_events_missed_total", event=e) for e in ("created", "ended")),
            )
            if state != last:
                last, still = state, time.monotonic()

        def count(name: str, **labels: str) -> float:
            return (after.value(name, **labels) or 0) - (before.value(name, **labels) or 0)

        return {
            "rate_per_s": rate,
            "seconds": seconds,
            "load_seconds": round(load_seconds, 1),
            "written": written,
            "created": count("kato_session_events_total", event="created"),
            "created_or_missed": count("kato_session_events_total", event="created")
            + count("kato_session_events_missed_total", event="created"),
            "behind_at_end": written
            - (at_end - (before.value("kato_session_events_total", event="created") or 0)),
            "expired": count("kato_session_events_total", event="expired"),
            "expected_expired": written // 2,
            "missed": {
                event: count("kato_session_events_missed_total", event=event)
                for event in ("created", "ended")
            },
            "source_errors": (after.value("kato_exporter_collect_errors_total", source="kato_sessions") or 0)
            - errors_before,
            "exporter_cpu_percent_of_a_core": round(cpu * 100, 1),
            "metrics_p50_ms": round(statistics.median(latencies), 1),
            "metrics_p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 1),
            "metrics_max_ms": round(latencies[-1], 1),
            "scrapes": len(latencies),
            "scrapes_failed": failed,
        }
    finally:
        for daemon in reversed(daemons):
            daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[5000, 10000, 15000, 20000])
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what was started, as on Ctrl-C
    rows = []
    for rate in args.rates:
        row = run(rate, args.seconds, Path(f"/tmp/kato-bench-rate-{rate}"))
        row["exact"] = (
            row["created"] == row["written"]
            and row["expired"] == row["expected_expired"]
            and not any(row["missed"].values())  # type: ignore[attr-defined]
            and not row["source_errors"]
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
        "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"session-rate-{results['date']}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
