"""Session change → exporter: how long until the hub has the event and /metrics has the count.

    .venv/bin/python -m bench.sessions_bench --changes 1000

Runs a real redis-server, the KATO double (so the KATO sources are on) and the exporter in this
process. Each change is made in Redis the way KATO makes it (SETEX + SADD to create, DEL + SREM to
delete), then timed to (a) the SessionEvent on the hub and (b) the first /metrics whose
kato_session_events_total shows it, scraped back to back. The peer, in the same run, is the old
dashboard's method: diff GET /sessions/count on a 3 s tick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from kato_exporter.app import serve
from kato_exporter.config import load
from kato_exporter.hub import Hub
from tests.conftest import Daemon, answers_tcp, free_port
from tests.exposition import Exposition

OUT = Path(__file__).resolve().parent / "out"
PREFIX = "kato:session:"
INDEX = PREFIX + "_active_index"


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50_ms": statistics.median(values) * 1000,
        "p99_ms": values[int(len(values) * 0.99) - 1] * 1000,
        "max_ms": values[-1] * 1000,
        "n": len(values),
    }


async def metrics_shows(http: aiohttp.ClientSession, url: str, event: str, count: int) -> None:
    while True:
        async with http.get(url) as response:
            text = await response.text()
        if Exposition(text).value("kato_session_events_total", event=event) == count:
            return


async def measure(redis_url: str, kato_url: str, changes: int, peer_changes: int) -> dict[str, object]:
    port = free_port()
    config = load(
        {
            "web.listen_address": f"127.0.0.1:{port}",
            "kato.url": kato_url,
            "kato.redis_url": redis_url,
            "kato.logs": "false",
            "collector.containers.enabled": "false",
            "collector.host.enabled": "false",
        },
        env={},
    )
    hub, stop = Hub(), asyncio.Event()
    server = asyncio.create_task(serve(config, stop, hub))
    events = hub.subscribe()
    r = aioredis.from_url(redis_url, decode_responses=True)
    url = f"http://127.0.0.1:{port}/metrics"
    to_hub, to_metrics = [], []
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # until the exporter answers with the sessions source up
            try:
                async with http.get(url) as response:
                    if "kato_sessions_active" in await response.text():
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        counts = {"created": 0, "destroyed": 0}
        for i in range(changes):
            session_id = f"session-bench{i // 2:06d}"
            started = time.perf_counter()
            if i % 2 == 0:
                await r.execute_command("SETEX", PREFIX + session_id, 3600, "{}")  # as KATO does
                await r.sadd(INDEX, session_id)
                kind = "created"
            else:
                await r.delete(PREFIX + session_id)
                await r.srem(INDEX, session_id)
                kind = "destroyed"
            counts[kind] += 1
            event = await asyncio.wait_for(events.get(), 5)
            assert event.type == kind, event
            to_hub.append(time.perf_counter() - started)
            await asyncio.wait_for(metrics_shows(http, url, kind, counts[kind]), 5)
            to_metrics.append(time.perf_counter() - started)
        peer = []
        async with http.get(kato_url + "/sessions/count") as response:
            last = (await response.json())["active_session_count"]
        for i in range(peer_changes):
            session_id = f"session-peer{i:04d}"
            started = time.perf_counter()
            await r.execute_command("SETEX", PREFIX + session_id, 3600, "{}")  # as KATO does
            await r.sadd(INDEX, session_id)
            await asyncio.sleep(random.uniform(0, 3))  # a random phase of the 3 s tick
            while True:
                async with http.get(kato_url + "/sessions/count") as response:
                    seen = (await response.json())["active_session_count"]
                if seen != last:
                    last = seen
                    break
                await asyncio.sleep(3)
            peer.append(time.perf_counter() - started)
    stop.set()
    await server
    await r.aclose()
    ours = percentiles(to_metrics)
    old = percentiles(peer)
    return {
        "to_hub": percentiles(to_hub),
        "to_metrics": ours,
        "peer_old_dashboard_3s_tick": old,
        "p50_ratio_metrics_vs_peer": ours["p50_ms"] / old["p50_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--peer-changes", type=int, default=20)
    args = parser.parse_args()
    redis_port, kato_port = free_port(), free_port()
    redis = Daemon(
        "bench-redis",
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        answers_tcp(redis_port),
        f"redis://127.0.0.1:{redis_port}/0",
    )
    kato = Daemon(
        "bench-kato",
        [sys.executable, "-m", "tests.kato_double", "--port", str(kato_port), "--redis-url", redis.url],
        answers_tcp(kato_port),
        f"http://127.0.0.1:{kato_port}",
    )
    try:
        results = asyncio.run(measure(redis.url, kato.url, args.changes, args.peer_changes))
    finally:
        kato.stop()
        redis.stop()
    results["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps(results, indent=2))
    OUT.mkdir(exist_ok=True)
    (OUT / f"sessions-{results['date']}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
