"""One Prometheus scraping many exporters, as a multi-host KATO deployment runs it.

    .venv/bin/python -m bench.scale_bench --exporters 10 --containers 100 --minutes 4

N exporters, each on its own loopback address (127.0.0.2, …) and file_sd file as a host of its
own, each watching the same M idle containers (so N × M containers' series), scraped every 5 s
by one Prometheus (Debian's) with the repository's rules. After a minute to warm up, over the
rest of the run: scrape duration p50/p99/max (Prometheus' own `scrape_duration_seconds`),
samples appended a second, head series, Prometheus' RSS and CPU, and the exporters' CPU and RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import yaml

from bench.exporter_bench import LABEL, OUT, bench_containers, cpu_seconds, remove_bench_containers, rss_bytes
from tests.conftest import ROOT, Exporter, free_port, wait_for


def prometheus_config(folder: Path, port: int, exporters: list[Exporter]) -> Path:
    """The repository's prometheus.yml and rules, the exporters listed one file each."""
    shutil.copytree(ROOT / "prometheus" / "rules", folder / "rules")
    (folder / "targets").mkdir()
    for number, exporter in enumerate(exporters, 1):
        host = [{"targets": [exporter.address], "labels": {"host": f"host-{number:02d}"}}]
        (folder / "targets" / f"host-{number:02d}.yml").write_text(yaml.safe_dump(host))
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["alerting"]["alertmanagers"] = []
    for job in config["scrape_configs"]:
        if job["job_name"] == "kato-exporter":
            job.pop("static_configs")
        if job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] != "alertmanager"]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def query(url: str, expr: str) -> float:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}") as r:
        result = json.load(r)["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")


def scraping(url: str) -> float:
    """How many exporters Prometheus scrapes with success; 0 until it answers."""
    try:
        return query(url, 'count(up{job="kato-exporter"} == 1)')
    except OSError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--exporters", type=int, default=10)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=4)
    args = parser.parse_args()
    bench_containers(args.containers)
    exporters: list[Exporter] = []
    prometheus: subprocess.Popen[bytes] | None = None
    folder = Path(tempfile.mkdtemp(prefix="kato-scale-"))
    try:
        for number in range(args.exporters):
            address = f"127.0.0.{number + 2}"
            exporters.append(Exporter([f"--collector.containers.label-selector={LABEL}"], address=address))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={prometheus_config(folder, port, exporters)}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=(folder / "prometheus.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: scraping(url) == args.exporters, 60, what="every exporter scraped")
        time.sleep(60)  # warm up: the first scrapes create every series
        window = int(args.minutes * 60 - 60)
        cpu = {
            "prometheus": cpu_seconds(prometheus.pid),
            "exporters": sum(cpu_seconds(e.proc.pid) for e in exporters),
        }
        time.sleep(window)
        cpu = {
            "prometheus": (cpu_seconds(prometheus.pid) - cpu["prometheus"]) / window,
            "exporters": (sum(cpu_seconds(e.proc.pid) for e in exporters) - cpu["exporters"]) / window,
        }
        durations = f'scrape_duration_seconds{{job="kato-exporter"}}[{window}s]'
        result = {
            "date": datetime.now(UTC).date().isoformat(),
            "machine": f"{platform.machine()}, {subprocess.check_output(['nproc'], text=True).strip()} cores",
            "exporters": args.exporters,
            "containers_each": args.containers,
            "window_seconds": window,
            "scrape_duration_ms": {
                q: 1000 * query(url, f"max(quantile_over_time({v}, {durations}))")
                for q, v in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
            },
            "samples_per_scrape": query(url, 'avg(scrape_samples_scraped{job="kato-exporter"})'),
            "samples_appended_per_second": query(
                url, f"rate(prometheus_tsdb_head_samples_appended_total[{window}s])"
            ),
            "head_series": query(url, "prometheus_tsdb_head_series"),
            "prometheus_rss_mb": rss_bytes(prometheus.pid) / 1e6,
            "prometheus_cpu_cores": cpu["prometheus"],
            "exporters_cpu_cores_total": cpu["exporters"],
            "exporter_rss_mb_max": max(rss_bytes(e.proc.pid) for e in exporters) / 1e6,
            "failed_scrapes": query(url, f'sum(count_over_time(up{{job="kato-exporter"}}[{window}s]))')
            - query(url, f'sum(sum_over_time(up{{job="kato-exporter"}}[{window}s]))'),
        }
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        for exporter in exporters:
            exporter.stop()
        remove_bench_containers()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=2))
    OUT.mkdir(exist_ok=True)
    out = OUT / f"scale-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
