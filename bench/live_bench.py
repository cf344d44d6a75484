"""Benchmark of the Grafana Live pusher, against the same exporter with the pusher off.

    .venv/bin/python -m bench.live_bench --containers 100 1000

For each N: N idle busybox containers (label kato.bench=1); the exporter with --grafana.url
pointing at a local receiver that answers as Grafana's push endpoint does, then the exporter
without it, each for --seconds. Reports body bytes per push and per second, the largest body,
the push CPU (% of a core, the difference between the two runs) and the cadence: how far apart
consecutive pushes arrive (p50/p99/max of |gap − 1 s| between the first bodies of consecutive
ticks) and how long a tick's bodies take to arrive (its spread).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from bench.exporter_bench import LABEL, OUT, bench_containers, cpu_seconds, remove_bench_containers, rss_bytes
from tests.conftest import Exporter, wait_for
from tests.standins import Inbox, http_receiver

TICK_GROUP = 0.5  # bodies arriving within half a tick of the first belong to that push (one tick)


def run(count: int, seconds: float, live: bool, tmp: Path) -> dict[str, float]:
    inbox = Inbox()

    def answer(handler: BaseHTTPRequestHandler, body: bytes) -> int:
        inbox.add(len(body))
        return 200

    with http_receiver(answer) as url:
        token = tmp / "token"
        token.write_text("glsa_bench\n")
        flags = [f"--collector.containers.label-selector={LABEL}"]
        if live:
            flags += [f"--grafana.url={url}", f"--grafana.token-file={token}"]
        exporter = Exporter(flags)
        try:
            wait_for(
                lambda: len(list(exporter.scrape().all("kato_container_info"))) == count,
                60,
                what=f"{count} containers on /metrics",
            )
            time.sleep(5)  # past start-up
            pid = exporter.proc.pid
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            began = time.time()
            time.sleep(seconds)
            cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            ended = time.time()
            row = {"cpu_percent_of_core": cpu * 100, "rss_mb": rss_bytes(pid) / 1e6}
        finally:
            exporter.stop()
    if not live:
        return row
    arrivals = [(at, size) for at, size in inbox.items if began <= at < ended]
    pushes: list[list[float]] = []  # [first arrival, last arrival, bytes] per tick
    for at, size in arrivals:
        if pushes and at - pushes[-1][0] < TICK_GROUP:
            pushes[-1][1:] = [at, pushes[-1][2] + size]
        else:
            pushes.append([at, at, size])
    jitter = sorted(abs((b[0] - a[0]) - 1.0) * 1000 for a, b in itertools.pairwise(pushes))
    spread = sorted((last - first) * 1000 for first, last, _ in pushes)
    return {
        **row,
        "pushes": len(pushes),
        "bodies": len(arrivals),
        "bytes_per_push_mean": statistics.mean(size for _, _, size in pushes),
        "bytes_per_second": sum(size for _, size in arrivals) / (ended - began),
        "largest_body": max(size for _, size in arrivals),
        "jitter_p50_ms": jitter[len(jitter) // 2],
        "jitter_p99_ms": jitter[min(len(jitter) - 1, int(len(jitter) * 0.99))],
        "jitter_max_ms": jitter[-1],
        "push_spread_p99_ms": spread[min(len(spread) - 1, int(len(spread) * 0.99))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--containers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    tmp = OUT / "live-bench"
    tmp.mkdir(exist_ok=True)
    results: dict[str, object] = {"date": datetime.now(UTC).strftime("%Y-%m-%d")}
    try:
        for count in sorted(args.containers):
            bench_containers(count)
            on = run(count, args.seconds, True, tmp)
            off = run(count, args.seconds, False, tmp)
            row = {
                "live_on": on,
                "live_off": off,
                "push_cpu_percent_of_core": on["cpu_percent_of_core"] - off["cpu_percent_of_core"],
                "cpu_ratio_on_vs_off": on["cpu_percent_of_core"] / off["cpu_percent_of_core"],
            }
            results[f"{count}_containers"] = row
            print(json.dumps({count: row}, indent=2), flush=True)
    finally:
        if not args.keep:
            remove_bench_containers()
    path = OUT / f"live-{results['date']}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
