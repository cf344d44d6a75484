"""Benchmarks of the exporter against peers measured in the same run.

    .venv/bin/python -m bench.exporter_bench --containers 100 1000

Starts N idle busybox containers (label kato.bench=1), then measures:
  1. /metrics latency p50/p99/max, ours and node_exporter's, scraped as Prometheus does (one
     scrape every 5 s and every 15 s, each on its own keep-alive connection, the two exporters
     half a period apart) and back to back;
  2. one refresh of 100 containers: cgroup files vs the concurrent stats API;
  3. exporter CPU (% of a core) and RSS over 90 s at 1 s refresh, scraped every 5 s;
  4. data age at scrape (now − the containers source's last success).
Needs scripts/setup.sh to have run (dockerd, the busybox image, node_exporter).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import aiodocker

from kato_exporter.outputs.exposition import PROMETHEUS_ACCEPT
from kato_exporter.sources.containers import ContainersSource
from tests.conftest import IMAGE, Exporter, free_port, wait_for
from tests.exposition import Exposition

LABEL = "kato.bench=1"
OUT = Path(__file__).resolve().parent / "out"
SCRAPER_HEADERS = [f"Accept: {PROMETHEUS_ACCEPT}", "Accept-Encoding: gzip"]  # Prometheus 2's


def sh(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def remove_bench_containers(keep: int = 0) -> None:
    """Kill all but ``keep`` of the bench containers, then prune them in one call (``docker rm -f``
    of many at once was seen to wedge dockerd 20.10 here)."""
    ids = sh("docker", "ps", "-q", "--filter", f"label={LABEL}").split()[keep:]
    for i in range(0, len(ids), 100):
        sh("docker", "kill", *ids[i : i + 100])
    sh("docker", "container", "prune", "-f", "--filter", f"label={LABEL}")


def bench_containers(count: int) -> list[str]:
    """Make exactly ``count`` idle containers carry the bench label."""
    have = sh("docker", "ps", "-q", "--filter", f"label={LABEL}").split()
    if len(have) > count:
        remove_bench_containers(keep=count)
    missing = count - len(have)
    if missing > 0:
        print(f"starting {missing} idle containers…", flush=True)
        started = time.monotonic()
        names = "\n".join(f"kato-bench-{os.urandom(4).hex()}" for _ in range(missing))
        subprocess.run(
            [
                "xargs",
                "-P",
                "8",
                "-I{}",
                "docker",
                "run",
                "-d",
                "--name",
                "{}",
                "--label",
                LABEL,
                "--network",
                "none",
                IMAGE,
                "sleep",
                "86400",
            ],
            input=names,
            text=True,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        print(f"  took {time.monotonic() - started:.0f}s", flush=True)
    return sh("docker", "ps", "-q", "--no-trunc", "--filter", f"label={LABEL}").split()


def percentiles(scrapes: tuple[list[float], int]) -> dict[str, float]:
    latencies, failed = sorted(scrapes[0]), scrapes[1]
    return {
        "failed": failed,
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": latencies[-1],
        "requests": len(latencies),
    }


def timed_scrapes(
    url: str,
    seconds: float,
    period: float = 0.0,
    phase: float = 0.0,
    source: str | None = None,
    warm_up: float = 0.0,
) -> tuple[list[float], int]:
    """Scrape ``url`` with Prometheus' headers on one keep-alive connection, every ``period``
    seconds (0: back to back) starting after ``phase``, for ``seconds``: each scrape's ms,
    and how many failed (10 s timeout, or not 200). ``source``: the address to scrape from
    (the exporter tells scrapers apart by it); scrapes in the first ``warm_up`` seconds are not
    timed (the exporter learns each scraper's period)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=10, source_address=(source, 0) if source else None
    )
    headers = dict(h.split(": ", 1) for h in SCRAPER_HEADERS)
    latencies: list[float] = []
    failed = 0
    start = time.monotonic()
    due = start + phase
    while time.monotonic() - start < seconds:
        time.sleep(max(0.0, due - time.monotonic()))
        due += period
        started = time.perf_counter()
        try:
            connection.request("GET", parts.path, headers=headers)
            response = connection.getresponse()
            response.read()
        except OSError:
            failed += 1
            connection.close()
            continue
        if time.monotonic() - start >= warm_up:
            latencies.append((time.perf_counter() - started) * 1000)
            failed += response.status != 200
    connection.close()
    return latencies, failed


def scrape_latency(ours: str, peer: str, period: float, seconds: float) -> dict[str, object]:
    """Both exporters scraped for ``seconds``, every ``period`` (half a period apart), or back
    to back one after the other (period 0)."""
    if not period:
        return {
            "ours": percentiles(timed_scrapes(ours, seconds)),
            "node_exporter": percentiles(timed_scrapes(peer, seconds)),
        }
    results: dict[str, tuple[list[float], int]] = {}

    def scraper(name: str, url: str, phase: float) -> None:
        results[name] = timed_scrapes(url, seconds, period, phase)

    threads = [
        threading.Thread(target=scraper, args=("ours", ours, 0.0)),
        threading.Thread(target=scraper, args=("node_exporter", peer, period / 2)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {name: percentiles(values) for name, values in results.items()}


def start_node_exporter() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        ["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: _ok(url), 10, what="node_exporter")
    return proc, url


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


async def refresh_times(ids: list[str]) -> dict[str, float]:
    """One refresh of these containers: our cgroup read vs Docker's stats API, concurrently."""
    source = ContainersSource("unix:///var/run/docker.sock", stats_mode="cgroup")
    await source.start()
    await source.collect()  # first listing and cgroup path resolution
    metas = [m for m in source._meta.values() if m.id in set(ids)]
    started = time.perf_counter()
    rounds = 20
    known = source._cgroups
    for _ in range(rounds):
        source._read_cgroups(metas, known)
    cgroup_s = (time.perf_counter() - started) / rounds
    await source.close()
    async with aiodocker.Docker() as docker:

        async def stats(container_id: str, one_shot: bool) -> None:
            params = {"stream": "false"} | ({"one-shot": "true"} if one_shot else {})
            await docker._query_json(f"containers/{container_id}/stats", params=params)

        times = {}
        for one_shot in (False, True):
            started = time.perf_counter()
            await asyncio.gather(*(stats(c, one_shot) for c in ids))
            times[one_shot] = time.perf_counter() - started
    return {
        "containers": len(metas),
        "cgroup_s": cgroup_s,
        "cgroup_us_per_container": cgroup_s / len(metas) * 1e6,
        "stats_api_s": times[False],
        "stats_api_one_shot_s": times[True],
        "ratio_vs_stats_api": cgroup_s / times[False],
        "ratio_vs_stats_api_one_shot": cgroup_s / times[True],
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def prometheus_like_scrape(url: str) -> tuple[float, float, Exposition]:
    """One scrape as Prometheus makes it: its latency, the wall time the bytes were in, and them."""
    request = urllib.request.Request(url, headers=dict(h.split(": ", 1) for h in SCRAPER_HEADERS))
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    received = time.time()  # before parsing, which takes longer than the scrape
    elapsed = time.perf_counter() - started
    return elapsed, received, Exposition(gzip.decompress(body).decode(), openmetrics=True)


def steady_state(exporter: Exporter, seconds: int = 90) -> dict[str, float]:
    """CPU and RSS of the exporter while scraped like Prometheus every 5 s (at random phases
    of the 1 s refresh); data age and latency of those scrapes."""
    pid = exporter.proc.pid
    time.sleep(5)  # past start-up
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    ages, latencies = [], []
    while time.monotonic() - t0 < seconds:
        time.sleep(5 + random.uniform(-0.5, 0.5))
        latency, received, e = prometheus_like_scrape(exporter.url + "/metrics")
        at = e.value("kato_exporter_last_success_timestamp_seconds", source="containers")
        ages.append(received - at)
        latencies.append(latency * 1000)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    return {
        "cpu_percent_of_core": cpu * 100,
        "rss_mb": rss_bytes(pid) / 1e6,
        "data_age_p50_s": statistics.median(ages),
        "data_age_max_s": max(ages),
        "scrape_latency_p50_ms": statistics.median(latencies),
        "scrape_latency_max_ms": max(latencies),
        "scrapes": len(ages),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--containers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument(
        "--cadence-seconds", type=float, default=300, help="how long each cadence row is scraped"
    )
    parser.add_argument("--periods", type=float, nargs="+", default=[5, 15], help="scrape periods")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    results: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
        f"kernel {platform.release()}, Python {platform.python_version()}",
    }
    node, node_url = start_node_exporter()
    try:
        for count in sorted(args.containers):
            ids = bench_containers(count)
            exporter = Exporter([f"--collector.containers.label-selector={LABEL}"])
            try:
                wait_for(
                    lambda e=exporter, n=count: len(list(e.scrape().all("kato_container_info"))) == n,
                    30,
                    what=f"{count} containers on /metrics",
                )
                row: dict[str, object] = {"exposition_bytes": len(exporter.scrape().text)}
                for period in [*args.periods, 0]:
                    seconds = args.cadence_seconds if period else 15
                    latency = scrape_latency(exporter.url + "/metrics", node_url, period, seconds)
                    ours, peer = latency["ours"], latency["node_exporter"]
                    latency["p99_ratio"] = ours["p99_ms"] / peer["p99_ms"]  # type: ignore[index]
                    latency["p50_ratio"] = ours["p50_ms"] / peer["p50_ms"]  # type: ignore[index]
                    row[f"every_{period:g}s" if period else "back_to_back"] = latency
                    print(json.dumps({count: {period: latency}}), flush=True)
                if count == 100:
                    row["steady"] = steady_state(exporter)
                    row["refresh"] = asyncio.run(refresh_times(ids))
                results[f"{count}_containers"] = row
                print(json.dumps({count: row}, indent=2), flush=True)
            finally:
                exporter.stop()
    finally:
        node.terminate()
        if not args.keep:
            remove_bench_containers()
    path = OUT / f"results-{results['date']}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
