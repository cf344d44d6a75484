"""Benchmark of the legacy WebSocket bridge, as browsers use it.

    .venv/bin/python -m bench.bridge_bench --clients 1000

The exporter runs with 10 idle containers, the KATO double on a real Redis (sessions being made)
and an access log with traffic. Then:
  1. N clients (two worker processes), subscribed as the old dashboard is (metrics, containers,
     system_alerts), once with permessage-deflate as browsers negotiate it and once without:
     tick → last client received, per tick, p50/p99/max; exporter CPU and RSS; meanwhile, once
     every client is connected, /metrics, /-/ready and the page's REST calls are timed every
     200 ms each (max latency);
  2. one client subscribed to metrics only, through a byte-counting TCP proxy: bytes on the wire
     per minute, with and without permessage-deflate;
  3. 100 reading clients, then the same beside one that never reads: their p99, exporter RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.exporter_bench import OUT, cpu_seconds, rss_bytes
from tests.conftest import IMAGE, Daemon, Exporter, answers_tcp, docker, free_port, redis_command

DASHBOARD = ["metrics", "containers", "system_alerts"]
LABEL = "kato.bridge-bench=1"
REST = [
    "/metrics",
    "/-/ready",
    "/api/v1/system/metrics",
    "/api/v1/system/container-stats",
    "/api/v1/sessions/count",
    "/api/v1/health",
    "/api/v1/system/kato-health",
]
ACCESS_LOG = (
    "while true; do echo 'INFO:     172.17.0.1:40000 - \"GET /health HTTP/1.1\" 200 OK'; "
    "echo 'INFO:     172.17.0.1:40001 - \"POST /sessions HTTP/1.1\" 500 Internal Server Error'; "
    "sleep 0.3; done"
)


def tick_of(text: str) -> float:
    """The tick time a realtime_update carries (it leads the message: no full parse needed)."""
    start = text.index('"timestamp":"') + 13
    return datetime.fromisoformat(text[start : text.index('"', start)]).timestamp()


async def texts(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> AsyncIterator[str]:
    """The text messages that arrive within ``seconds``; ends early if the socket does."""
    end = time.time() + seconds
    while time.time() < end:
        try:
            message = await ws.receive(timeout=max(0.1, end - time.time()))
        except TimeoutError:
            return
        if message.type != aiohttp.WSMsgType.TEXT:
            return
        yield message.data


async def worker(
    url: str, clients: int, seconds: float, subscriptions: list[str], compress: int
) -> dict[str, Any]:
    """Open ``clients`` sockets, subscribe, and record (tick, received) of every realtime_update.

    Once all are connected, the worker's objects are frozen out of the garbage collector: a full
    collection over 500 clients' state pauses a worker for 50-60 ms, which a browser, holding one
    socket, never does."""
    received: list[tuple[float, float]] = []
    connected = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal connected
            async with session.ws_connect(url, compress=compress, max_msg_size=0) as ws:
                await ws.send_str(json.dumps({"type": "subscribe", "subscriptions": subscriptions}))
                connected += 1
                if connected == clients:
                    gc.collect()
                    gc.freeze()
                async for message in texts(ws, seconds):
                    if message.startswith('{"type":"realtime_update"'):
                        received.append((tick_of(message), time.time()))

        results = await asyncio.gather(*(client() for _ in range(clients)), return_exceptions=True)
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    return {"received": received, "failed": failed[:5], "failures": len(failed)}


def run_workers(url: str, clients: int, seconds: float, compress: int, processes: int = 2) -> dict[str, Any]:
    per = clients // processes
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bridge_bench",
                "--worker",
                url,
                str(per),
                str(seconds),
                ",".join(DASHBOARD),
                str(compress),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    received: list[tuple[float, float]] = []
    failures = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        result = json.loads(out)
        received += [tuple(r) for r in result["received"]]  # type: ignore[misc]
        failures += result["failures"]
    return {"received": received, "failures": failures}


def latency_per_tick(received: list[tuple[float, float]], clients: int, skip: float) -> dict[str, float]:
    """Tick → last client, per tick that every client received (the first ``skip`` s left out)."""
    by_tick: dict[float, list[float]] = {}
    for tick, at in received:
        by_tick.setdefault(tick, []).append(at - tick)
    first = min(by_tick) + skip
    complete = sorted(max(v) * 1000 for t, v in by_tick.items() if t >= first and len(v) >= clients * 0.99)
    return {
        "ticks": len(complete),
        "p50_ms": complete[len(complete) // 2],
        "p99_ms": complete[min(len(complete) - 1, int(len(complete) * 0.99))],
        "max_ms": complete[-1],
    }


class RestTimer(threading.Thread):
    """Times each REST path every 200 ms while running."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.stop = base, threading.Event()
        self.times: dict[str, list[float]] = {path: [] for path in REST}

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for path in REST:
                started = time.perf_counter()
                with urllib.request.urlopen(self.base + path, timeout=10) as response:
                    response.read()
                self.times[path].append((time.perf_counter() - started) * 1000)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            p: {"max_ms": max(t), "p50_ms": sorted(t)[len(t) // 2], "n": len(t)}
            for p, t in self.times.items()
            if t  # none when the run is too short for the timer to start
        }


async def wire_bytes(exporter: Exporter, seconds: float, compress: int) -> dict[str, float]:
    """Bytes from the exporter to one metrics-only client, counted by a TCP proxy in between."""
    counted = {"down": 0}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
        while data := await reader.read(65536):
            if count:
                counted["down"] += len(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", exporter.port)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await asyncio.gather(pipe(reader, upstream_writer, False), pipe(upstream_reader, writer, True))

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/ws", compress=compress) as ws,
    ):
        await ws.send_str(json.dumps({"type": "subscribe", "subscriptions": ["metrics"]}))
        await asyncio.sleep(2)  # past the first, whole document
        start_bytes, messages = counted["down"], 0
        async for _ in texts(ws, seconds):
            messages += 1
        got = counted["down"] - start_bytes
    server.close()
    return {"bytes_per_minute": got * 60 / seconds, "messages_per_minute": messages * 60 / seconds}


async def slow_neighbour(exporter: Exporter, seconds: float) -> dict[str, Any]:
    """100 reading clients alone, then beside one that never reads."""
    url = exporter.url + "/ws"

    async def readers_p99() -> dict[str, float]:
        result = await worker(url, 100, seconds, DASHBOARD, 15)
        return latency_per_tick(result["received"], 100, 2)

    alone = await readers_p99()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", exporter.port))
    raw.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    rss_before = rss_bytes(exporter.proc.pid)
    beside = await readers_p99()
    rss_after = rss_bytes(exporter.proc.pid)
    raw.close()
    return {
        "alone": alone,
        "beside_a_non_reader": beside,
        "rss_mb_before_after": [rss_before / 1e6, rss_after / 1e6],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--worker", nargs=5, metavar=("URL", "N", "SECONDS", "SUBS", "DEFLATE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        url, n, seconds, subs, compress = args.worker
        print(json.dumps(asyncio.run(worker(url, int(n), float(seconds), subs.split(","), int(compress)))))
        return
    OUT.mkdir(exist_ok=True)
    tmp = OUT / "bridge-bench"
    tmp.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    redis_port, kato_port = free_port(), free_port()
    redis = Daemon(
        "redis", redis_command(redis_port, tmp), answers_tcp(redis_port), f"redis://127.0.0.1:{redis_port}/0"
    )
    kato = Daemon(
        "kato",
        [sys.executable, "-m", "tests.kato_double", "--port", str(kato_port), "--redis-url", redis.url],
        answers_tcp(kato_port),
        f"http://127.0.0.1:{kato_port}",
    )
    names = [f"kato-bridge-bench-{i}" for i in range(10)]
    try:
        for name in names[:-1]:
            docker(
                "run", "-d", "--name", name, "--label", LABEL, "--network", "none", IMAGE, "sleep", "86400"
            )
        docker(
            "run",
            "-d",
            "--name",
            names[-1],
            "--label",
            LABEL,
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            ACCESS_LOG,
        )
        exporter = Exporter(
            [
                f"--collector.containers.label-selector={LABEL}",
                f"--kato.url={kato.url}",
                f"--kato.redis-url={redis.url}",
                f"--kato.log-container={names[-1]}",
                f"--bridge.max-clients={args.clients + 100}",
            ]
        )
        for _ in range(20):
            request = urllib.request.Request(
                kato.url + "/sessions",
                data=b'{"node_id":"bench","ttl_seconds":600}',
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=5).read()
        time.sleep(3)
        try:
            for compress, label in ((15, "clients_deflate"), (0, "clients_no_deflate")):
                timer = RestTimer(exporter.url)
                pid = exporter.proc.pid
                # REST is timed once every client is connected (the ramp takes a few seconds)
                threading.Timer(15, timer.start).start()
                threading.Timer(args.seconds - 5, timer.stop.set).start()
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                many = run_workers(exporter.url + "/ws", args.clients, args.seconds, compress)
                cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
                results[label] = {
                    "n": args.clients,
                    "failures": many["failures"],
                    "tick_to_last_client": latency_per_tick(many["received"], args.clients, 10),
                    "exporter_cpu_percent_of_core": cpu * 100,
                    "exporter_rss_mb": rss_bytes(pid) / 1e6,
                    "rest_while_connected": timer.summary(),
                }
                print(json.dumps({label: results[label]}, indent=2), flush=True)
            results["metrics_only_client"] = {
                "deflate": asyncio.run(wire_bytes(exporter, args.seconds, 15)),
                "no_deflate": asyncio.run(wire_bytes(exporter, args.seconds, 0)),
            }
            print(json.dumps(results["metrics_only_client"], indent=2), flush=True)
            results["slow_neighbour"] = asyncio.run(slow_neighbour(exporter, 30))
            print(json.dumps(results["slow_neighbour"], indent=2), flush=True)
        finally:
            exporter.stop()
    finally:
        docker("rm", "-f", *names, check=False)
        kato.stop()
        redis.stop()
    path = OUT / f"bridge-{results['date']}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
