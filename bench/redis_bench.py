"""Reconciling KATO's never-pruned session index: SSCAN batches against one SMEMBERS.

    .venv/bin/python -m bench.redis_bench --members 1000000 --live 0.01

Starts its own redis-server (no persistence), fills KATO's index with ``--members`` ids of which
``--live`` have a session key (the rest expired long ago, as KATO leaves them), then measures in
the same run:
  1. the exporter's reconcile (its real RedisSessions source, from start to following):
     SSCAN batches of 1,000, each checked with one pipeline of EXISTS;
  2. the peer: the previous way, one SMEMBERS then pipelined EXISTS in batches of 1,000;
and for each, the slowest command Redis itself logged while it ran (SLOWLOG, every command over
100 µs logged), which is how long one command blocked every other client of KATO's Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
import redis.asyncio as aioredis

from kato_exporter.sources.sessions import INDEX, KEY_PREFIX, RedisSessions
from tests.conftest import answers_tcp, free_port, redis_command, wait_for

OUT = Path(__file__).resolve().parent / "out"


def fill(r: redis.Redis, members: int, live_share: float) -> int:
    live = int(members * live_share)
    step = max(1, members // live) if live else members + 1
    batch = 10_000
    for start in range(0, members, batch):
        with r.pipeline(transaction=False) as pipe:
            ids = [f"session-{i:08d}" for i in range(start, min(members, start + batch))]
            pipe.sadd(INDEX, *ids)
            for i, session_id in zip(range(start, start + batch), ids, strict=False):
                if i % step == 0:
                    pipe.set(KEY_PREFIX + session_id, "{}", ex=86400)
            pipe.execute()
    return sum(1 for i in range(members) if i % step == 0)


def worst_commands(r: redis.Redis) -> dict[str, float]:
    """The slowest logged command per command name, in ms (nothing logged: under 0.1 ms)."""
    worst: dict[str, float] = {}
    for entry in r.slowlog_get(100_000):
        name = entry["command"].split()[0].decode().upper()
        worst[name] = max(worst.get(name, 0.0), entry["duration"] / 1000)
    return dict(sorted(worst.items(), key=lambda item: -item[1]))


async def ours(url: str) -> dict[str, object]:
    source = RedisSessions(url, lambda event: None)
    started = time.perf_counter()
    await source.start()
    try:
        async with asyncio.timeout(600):
            while not source._link.up:
                await asyncio.sleep(0.01)
        return {
            "reconcile_s": time.perf_counter() - started,
            "active": source.active,
            "index_stale": source.index_stale,
        }
    finally:
        await source.close()


async def smembers_way(url: str) -> dict[str, object]:
    client = aioredis.from_url(url, decode_responses=True)
    started = time.perf_counter()
    ids = list(await client.smembers(INDEX))
    live = 0
    for start in range(0, len(ids), 1000):
        async with client.pipeline(transaction=False) as pipe:
            for session_id in ids[start : start + 1000]:
                pipe.exists(KEY_PREFIX + session_id)
            live += sum(await pipe.execute())
    elapsed = time.perf_counter() - started
    await client.aclose()
    return {"reconcile_s": elapsed, "active": live}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--live", type=float, default=0.01, help="share of members with a live session")
    args = parser.parse_args()
    port = free_port()
    folder = tempfile.mkdtemp(prefix="kato-redis-bench-")
    server = subprocess.Popen(
        redis_command(port, folder, "--notify-keyspace-events", "Kg$xe"), stdout=subprocess.DEVNULL
    )
    try:
        wait_for(answers_tcp(port), 10, what="redis-server")
        url = f"redis://127.0.0.1:{port}/0"
        r = redis.Redis.from_url(url)
        version = r.info("server")["redis_version"]
        print(f"filling {args.members:,} members…", flush=True)
        live = fill(r, args.members, args.live)
        r.config_set("slowlog-log-slower-than", 100)
        r.config_set("slowlog-max-len", 100_000)
        results: dict[str, object] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}, "
            f"Python {platform.python_version()}, Redis {version}",
            "members": args.members,
            "live": live,
        }
        for name, run in (("ours_sscan", ours), ("peer_smembers", smembers_way)):
            r.slowlog_reset()
            row = asyncio.run(run(url))
            row["worst_commands_ms"] = worst_commands(r)
            results[name] = row
            print(json.dumps({name: row}), flush=True)
    finally:
        server.terminate()
        server.wait(10)
    OUT.mkdir(exist_ok=True)
    path = OUT / f"redis-{results['date']}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
