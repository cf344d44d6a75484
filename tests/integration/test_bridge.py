"""The legacy WebSocket bridge, spoken to as the old page speaks: a real exporter process with
the KATO double on a real Redis, a KATO access log in a real container, and Alertmanager's
webhook; each message checked against docs/legacy-protocol.md."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RUN_LABEL, Exporter, wait_for
from tests.standins import silent_ws_client

pytestmark = pytest.mark.integration

ACCESS_LOG = (
    "while true; do "
    "echo 'INFO:     172.17.0.1:40000 - \"GET /health HTTP/1.1\" 200 OK'; "
    "echo 'INFO:     172.17.0.1:40001 - \"GET /health HTTP/1.1\" 200 OK'; "
    "echo 'INFO:     172.17.0.1:40002 - \"POST /sessions HTTP/1.1\" 500 Internal Server Error'; "
    "sleep 0.5; done"
)
TOKEN = "webhook-secret"
CPU_ALERT = {
    "alertname": "KatoContainerCpuHigh",
    "severity": "critical",
    "legacy_type": "high_cpu",
    "name": "kato",
}


class BridgedExporter(Exporter):
    kato_url: str


@pytest.fixture
def bridge(
    start_exporter, kato_double, redis_server, run_container, tmp_path
) -> Callable[..., BridgedExporter]:
    """Factory: an exporter with the bridge, KATO (double, Redis, access log) and the webhook."""
    kato = kato_double()
    log_name = run_container(ACCESS_LOG)
    (tmp_path / "token").write_text(TOKEN)

    def start(*flags: str, port: int | None = None) -> BridgedExporter:
        exporter = start_exporter(
            f"--collector.containers.label-selector={RUN_LABEL}",
            f"--kato.url={kato.url}",
            f"--kato.redis-url={redis_server.url}",
            "--kato.interval=1s",
            f"--kato.log-container={log_name}",
            f"--alertmanager.token-file={tmp_path / 'token'}",
            *flags,
            port=port,
        )
        exporter.__class__ = BridgedExporter
        exporter.kato_url = kato.url
        return exporter

    return start


def kato_call(exporter: BridgedExporter, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = exporter.kato_url + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def post_alert(exporter: Exporter, status: str, **labels: str) -> None:
    annotations = {"summary": f"{labels['alertname']} {status}", "value": "0.953", "threshold": "0.9"}
    body = {
        "version": "4",
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2026-11-27T00:00:00Z",
            }
        ],
    }
    request = urllib.request.Request(
        exporter.url + "/api/v1/alertmanager",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 204


class Page:
    """One socket, read in the background: every message with the time it came."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[tuple[float, Any]] = []
        self.closed: int | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.messages.append((time.monotonic(), json.loads(message.data)))
        self.closed = self.ws.close_code

    def of(self, kind: str) -> list[Any]:
        return [m for _, m in self.messages if m["type"] == kind]

    async def send(self, command: Any) -> None:
        await self.ws.send_str(command if isinstance(command, str) else json.dumps(command))

    async def wait(self, check: Callable[[], object], seconds: float = 10, what: str = "") -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; got {[m for _, m in self.messages][-5:]}"
                )
            await asyncio.sleep(0.05)


async def connect(session: aiohttp.ClientSession, exporter: Exporter, **kwargs: Any) -> Page:
    return Page(await session.ws_connect(exporter.url + "/ws", **kwargs))


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_realtime_update(message: dict[str, Any]) -> None:
    """The shape of realtime_update in legacy-ws-protocol.md."""
    assert message["type"] == "realtime_update" and isinstance(message["timestamp"], str)
    data = message["data"]
    if "metrics" in data:
        metrics = data["metrics"]
        assert {
            "sessions",
            "performance",
            "resources",
            "databases",
            "rates",
            "processor_manager",
        } <= metrics.keys()
        assert is_number(metrics["sessions"]["active"]) and is_number(
            metrics["performance"]["total_requests"]
        )
        assert is_number(metrics["performance"]["error_rate"])
    if "containers" in data:
        for row in data["containers"]["containers"]:
            assert isinstance(row["name"], str) and isinstance(row["status"], str) and is_number(row["cpu"])
            assert all(
                is_number(row["memory"][k])
                for k in ("usage_bytes", "limit_bytes", "usage_mb", "limit_mb", "usage_percent")
            )
            assert all(is_number(row["network"][k]) for k in ("rx_bytes", "tx_bytes", "rx_mb", "tx_mb"))
            assert all(
                is_number(row["block_io"][k]) for k in ("read_bytes", "write_bytes", "read_mb", "write_mb")
            )
            assert isinstance(row["timestamp"], str)
        aggregated = data["containers"]["aggregated"]
        for key in (
            "total_cpu_percent",
            "total_memory_mb",
            "total_memory_limit_mb",
            "total_memory_percent",
            "container_count",
        ):
            assert is_number(aggregated[key]), key
    if "sessions" in data:
        assert is_number(data["sessions"]["active_count"]) and is_number(data["sessions"]["total_count"])


async def test_messages_subscriptions_and_substituted_figures(bridge, run_container, cpu_first):
    exporter = bridge()
    busy = run_container("yes > /dev/null", "--cpus", "0.25", *cpu_first)
    for _ in range(3):
        kato_call(exporter, "POST", "/sessions", {"node_id": "bridge", "ttl_seconds": 600})
    async with aiohttp.ClientSession() as session:
        everything = await connect(session, exporter)
        await everything.wait(lambda: len(everything.of("realtime_update")) >= 3, what="updates")
        for message in everything.of("realtime_update"):
            check_realtime_update(message)
        first = everything.of("realtime_update")[0]["data"]
        assert set(first) == {"metrics", "containers", "sessions"}  # never subscribed: everything
        # the substituted figures are the exporter's
        metrics = exporter.scrape()
        await everything.wait(
            lambda: (
                everything.of("realtime_update")[-1]["data"]
                .get("metrics", {})
                .get("sessions", {})
                .get("active")
                == 3
                or any(
                    m["data"].get("metrics", {}).get("sessions", {}).get("active") == 3
                    for m in everything.of("realtime_update")
                )
            ),
            what="active sessions 3",
        )
        latest = [m["data"]["metrics"] for m in everything.of("realtime_update") if "metrics" in m["data"]][
            -1
        ]
        assert latest["performance"]["total_requests"] >= 3
        assert 0.2 < latest["performance"]["error_rate"] < 0.45  # one 500 in three lines
        assert metrics.value("kato_sessions_active") == 3
        containers = [
            m["data"]["containers"] for m in everything.of("realtime_update") if "containers" in m["data"]
        ][-1]
        row = next(r for r in containers["containers"] if r["name"] == busy)
        assert 15 < row["cpu"] <= 27.5  # percent of one core, pinned at a quarter
        # KATO's own count (total_count) comes through its 5 s cache

        def sessions() -> Any:
            return [
                m["data"]["sessions"] for m in everything.of("realtime_update") if "sessions" in m["data"]
            ][-1]

        await everything.wait(
            lambda: sessions() == {"active_count": 3, "total_count": 3}, what="sessions 3 and 3"
        )

        # ping → heartbeat; errors for what is not understood, and nothing changes
        await everything.send("ping")
        await everything.wait(lambda: everything.of("heartbeat"), what="heartbeat")
        assert isinstance(everything.of("heartbeat")[0]["timestamp"], str)
        for bad in (
            {"type": "subscribe", "subscriptions": ["metrics", "nope"]},
            "{not json",
            {"type": "dance"},
        ):
            await everything.send(bad)
        await everything.ws.send_bytes(b"\x00\x01")
        await everything.wait(lambda: len(everything.of("error")) == 4, what="four errors")
        assert "nope" in everything.of("error")[0]["message"]

        # a metrics-only client never receives containers; re-subscribing adds nothing and sends nothing
        trimmed = await connect(session, exporter)
        await trimmed.send({"type": "subscribe", "subscriptions": ["metrics"]})
        await trimmed.wait(lambda: trimmed.of("realtime_update"), what="the metrics part")
        storm_started = time.monotonic()
        while time.monotonic() - storm_started < 2:
            await trimmed.send({"type": "subscribe", "subscriptions": ["metrics"]})
            await asyncio.sleep(0.01)  # 100 a second, as the page's renders do
        await asyncio.sleep(1.2)
        updates = trimmed.of("realtime_update")
        assert all(set(m["data"]) == {"metrics"} for m in updates)
        assert len(updates) <= 5, f"{len(updates)} updates in 3 s: the re-sent subscribe was answered"

        # subscribe adds (the page's two components on one socket), with the added part at once
        before = len(trimmed.of("realtime_update"))
        sent_at = time.monotonic()
        await trimmed.send({"type": "subscribe", "subscriptions": ["sessions"]})
        await trimmed.wait(
            lambda: any("sessions" in m["data"] for m in trimmed.of("realtime_update")[before:]),
            what="sessions at once",
        )
        arrived = next(
            at for at, m in trimmed.messages if m["type"] == "realtime_update" and "sessions" in m["data"]
        )
        assert arrived - sent_at < 0.5  # at once, not at the next tick
        await trimmed.send({"type": "unsubscribe", "subscriptions": ["metrics", "sessions"]})
        await asyncio.sleep(0.1)
        count = len(trimmed.messages)
        kato_call(exporter, "POST", "/sessions", {"node_id": "bridge", "ttl_seconds": 600})
        await asyncio.sleep(2.5)
        assert len(trimmed.messages) == count  # subscribed to nothing: nothing
        await everything.ws.close()
        await trimmed.ws.close()


async def test_session_events_once_each_and_alerts_from_the_webhook(bridge):
    exporter = bridge()
    async with aiohttp.ClientSession() as session:
        page = await connect(session, exporter)
        await page.send({"type": "subscribe", "subscriptions": ["session_events", "system_alerts"]})
        await asyncio.sleep(0.5)
        kept = kato_call(exporter, "POST", "/sessions", {"node_id": "bridge", "ttl_seconds": 600})[
            "session_id"
        ]
        gone = kato_call(exporter, "POST", "/sessions", {"node_id": "bridge", "ttl_seconds": 600})[
            "session_id"
        ]
        kato_call(exporter, "POST", "/sessions", {"node_id": "bridge", "ttl_seconds": 1})
        kato_call(exporter, "DELETE", f"/sessions/{gone}")
        await page.wait(lambda: len(page.of("session_event")) >= 4, what="four session events")
        await asyncio.sleep(1.5)
        events = page.of("session_event")
        assert [e["event_type"] for e in events] == ["session_created"] * 3 + ["session_destroyed"] * 2
        assert [e.get("reason") for e in events[3:]] == [None, "expired"]
        counts = [
            (e["data"]["previous_count"], e["data"]["current_count"], e["data"]["delta"]) for e in events
        ]
        assert counts == [(0, 1, 1), (1, 2, 1), (2, 3, 1), (3, 2, -1), (2, 1, -1)]
        assert all(e["data"]["time_since_last_event"] >= 0 for e in events)
        assert not page.of("realtime_update")  # not subscribed to any part
        assert kept

        post_alert(exporter, "firing", **CPU_ALERT)
        await page.wait(lambda: page.of("system_alert"), what="system_alert")
        [alert] = page.of("system_alert")[0]["alerts"]
        assert alert == {
            "level": "error",
            "type": "high_cpu",
            "message": "KatoContainerCpuHigh firing",
            "value": 95.3,
            "threshold": 90.0,
            "container_name": "kato",
            "status": "firing",
        }
        assert page.of("system_alert")[0]["id"].startswith("alert_")

        late = await connect(session, exporter)  # a new client gets what is firing
        await late.send({"type": "subscribe", "subscriptions": ["system_alerts"]})
        await late.wait(lambda: late.of("system_alert"), what="the firing alert on subscribe")
        assert late.of("system_alert")[0]["alerts"][0]["type"] == "high_cpu"

        post_alert(exporter, "resolved", **CPU_ALERT)
        await page.wait(lambda: page.of("system_alert_resolved"), what="system_alert_resolved")
        assert page.of("system_alert_resolved")[0]["alerts"][0]["type"] == "high_cpu"
        third = await connect(session, exporter)
        await asyncio.sleep(1.5)
        assert not third.of("system_alert")  # nothing firing any more
        for p in (page, late, third):
            await p.ws.close()


async def test_limits_origins_and_malformed_frames_leave_other_clients_alone(bridge):
    exporter = bridge("--bridge.max-clients=3", "--bridge.max-message-size=1024")
    host = exporter.url.removeprefix("http://")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(exporter.url + "/ws", origin="http://evil.example.org")
        assert refused.value.status == 403
        good = await connect(session, exporter, origin=f"http://{host}")
        fuzzers = [await connect(session, exporter) for _ in range(2)]
        extra = await connect(session, exporter)  # the fourth
        await extra.wait(lambda: extra.closed is not None, what="the fourth client closed")
        assert extra.closed == 1013

        # 10,000 bad frames from two clients while the good one keeps its stream
        rng = random.Random(7)
        bad_frames: list[str | bytes] = [
            "{",
            "[]",
            "null",
            '{"type":"subscribe","subscriptions":"metrics"}',
            '{"type":"subscribe"}',
            '{"type":"subscribe","subscriptions":[1,2]}',
            "\u0000",
            "pingpong",
            b"\xff\xfe",
            b"",
        ]
        for i in range(10_000):
            frame = rng.choice(bad_frames)
            ws = fuzzers[i % 2].ws
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        await fuzzers[0].wait(lambda: len(fuzzers[0].of("error")) >= 10, what="errors back")
        await fuzzers[1].ws.send_str("x" * 2000)  # over --bridge.max-message-size
        await fuzzers[1].wait(lambda: fuzzers[1].closed is not None, what="the oversized frame closed")
        assert fuzzers[1].closed == 1009
        ticks_before = len(good.of("realtime_update"))
        await asyncio.sleep(3.2)
        assert len(good.of("realtime_update")) - ticks_before >= 3  # an update every tick, undisturbed
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(good.messages)]
        assert max(gaps) < 1.6
        assert fuzzers[0].closed is None  # bad commands get errors, not a close
        for page in (good, fuzzers[0]):
            await page.ws.close()


async def test_a_client_that_stops_reading_is_closed_and_slows_nobody(bridge, run_container):
    for _ in range(60):  # weight in each update: about 25 KB, ten a second; megabytes fill the buffers
        run_container("sleep 3600")
    exporter = bridge(
        "--collector.containers.interval=100ms",  # containers change ten times a second
        "--bridge.tick=100ms",
        "--bridge.queue-size=4",
        "--bridge.slow-client-timeout=2s",
    )
    async with aiohttp.ClientSession() as session:
        readers = [await connect(session, exporter) for _ in range(5)]
        await asyncio.sleep(1)
        alone = time.monotonic()
        await asyncio.sleep(3)  # the pace of the updates on this machine now, all reading
        raw = await silent_ws_client(exporter.port)
        rss_before = exporter_rss(exporter)
        started = time.monotonic()
        while "closing a WebSocket client that stopped reading" not in exporter.log.read_text():
            assert time.monotonic() - started < 60, "the client that does not read was never closed"
            await asyncio.sleep(0.5)
        print(
            f"closed after {time.monotonic() - started:.1f} s; "
            f"RSS {rss_before / 1e6:.0f} → {exporter_rss(exporter) / 1e6:.0f} MB"
        )
        assert exporter_rss(exporter) < rss_before + 50e6  # what waits for it is bounded
        cut_by = time.monotonic() + 2  # not left to linger with megabytes unsent: cut
        while holds(exporter, raw.getsockname()[1]):
            assert time.monotonic() < cut_by, "the client that reads nothing was closed, never cut"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)
        for page in readers:  # each reader's pace beside the stuck client, against its own before
            updates = [at for at, m in page.messages if m["type"] == "realtime_update"]
            before = sum(alone <= at < started for at in updates) / (started - alone)
            beside = sum(at >= started for at in updates) / (time.monotonic() - started)
            assert beside >= 0.8 * before, f"updates a second: {before:.1f} before, {beside:.1f} beside"
            assert max(b - a for a, b in itertools.pairwise(updates)) < 0.6
            assert page.closed is None
        stopping = time.monotonic()
        exporter.proc.terminate()  # with the readers connected, and the cut client's socket open
        assert exporter.proc.wait(5) == 0
        print(f"stopped in {time.monotonic() - stopping:.2f} s")
        raw.close()
        for page in readers:
            await page.wait(lambda page=page: page.closed is not None, what="the stop's close")
            assert page.closed == 1001


def holds(exporter: Exporter, port: int) -> bool:
    """Whether the exporter's process still holds its end of a TCP connection from ``port``."""
    held = set()
    for fd in Path(f"/proc/{exporter.proc.pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            held.add(os.readlink(fd).removeprefix("socket:[").removesuffix("]"))
    for line in Path(f"/proc/{exporter.proc.pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()  # sl, local address:port, remote address:port, ..., inode (10th)
        ports = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if ports == (exporter.port, port) and fields[9] in held:
            return True
    return False


def exporter_rss(exporter: Exporter) -> int:
    pages = int(Path(f"/proc/{exporter.proc.pid}/statm").read_text().split()[1])
    return pages * 4096


def rest(exporter: Exporter, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(exporter.url + path, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if exc.headers.get_content_type() == "application/json" else body


def test_the_pages_rest_calls(bridge):
    exporter = bridge()
    kato_call(exporter, "POST", "/sessions", {"node_id": "bridge", "ttl_seconds": 600})
    wait_for(
        lambda: rest(exporter, "/api/v1/sessions/count") == (200, {"active_session_count": 1}),
        10,
        what="count",
    )
    status, metrics = rest(exporter, "/api/v1/system/metrics")
    assert status == 200 and metrics["sessions"]["active"] == 1 and "processor_manager" in metrics
    status, containers = rest(exporter, "/api/v1/system/container-stats")
    assert status == 200 and {"containers", "aggregated"} <= containers.keys()
    status, stats = rest(exporter, "/api/v1/system/stats?minutes=5")
    assert status == 200 and "processor_manager" in stats
    status, health = rest(exporter, "/api/v1/system/kato-health")
    assert status == 200 and health["status"] == "healthy"
    status, own = rest(exporter, "/api/v1/health")
    assert status == 200 and own["sources"]["kato"] is True
    status, other = rest(exporter, "/api/v1/databases/clickhouse/tables")
    assert status == 501 and "--bridge.upstream" in other["error"]
    post_alert(exporter, "firing", alertname="KatoApiDown", severity="critical")  # the webhook still works


def test_the_bridge_can_be_turned_off_with_the_old_flag(start_exporter):
    exporter = start_exporter(
        "--no-collector.containers", "--no-collector.host", prefix=["env", "WEBSOCKET_ENABLED=false"]
    )
    assert rest(exporter, "/api/v1/health")[0] == 404
    assert "legacy dashboard bridge" not in exporter.log.read_text()


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def legacy_page() -> Iterator[str]:
    """tests/legacy_page/ served on its own port (so its origin is not the exporter's)."""
    folder = Path(__file__).resolve().parent.parent / "legacy_page"

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


async def test_a_real_browser_page_with_two_components_reconnecting(bridge, legacy_page, tmp_path):
    """Debian's Chromium, driven by Playwright, runs a page that speaks the protocol as the old page
    does. Its renders re-send both subscribes on every message: the updates must stay at one a tick."""
    from playwright.async_api import async_playwright

    page_origin = legacy_page.rsplit("/", 1)[0]
    exporter = bridge(f"--bridge.allowed-origins={page_origin}")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            page = await browser.new_page()
            ws_url = exporter.url.replace("http", "ws") + "/ws"
            await page.goto(f"{legacy_page}?ws={ws_url}")
            await asyncio.sleep(6)
            stats = await page.evaluate("window.stats")
            print(stats)
            assert stats["opened"] == 1 and stats["errors"] == 0
            # compressed, each message alone: what lets one compression serve every client
            assert stats["extensions"] == "permessage-deflate; server_no_context_takeover", stats
            assert 4 <= stats["updates"] <= 8, stats  # one a tick, not hundreds a second
            assert stats["parts"].get("metrics") and stats["parts"].get(
                "containers"
            )  # the layout did not win
            assert "sessions" not in stats["parts"]  # subscribed by neither component
            assert stats["subscribes"] >= 2 * stats["updates"]  # it did re-send on every render

            # the exporter goes away and comes back on the same port: the page reconnects by itself
            port = exporter.port
            exporter.stop()
            await asyncio.sleep(1.5)
            again = bridge(f"--bridge.allowed-origins={page_origin}", port=port)
            deadline = time.monotonic() + 20
            while (await page.evaluate("window.stats"))["opened"] < 2:
                assert time.monotonic() < deadline, await page.evaluate("window.stats")
                await asyncio.sleep(0.2)
            before = (await page.evaluate("window.stats"))["updates"]
            await asyncio.sleep(3)
            stats = await page.evaluate("window.stats")
            assert 2 <= stats["updates"] - before <= 5 and stats["closes"][0] == 1001  # going away
            assert again.port == port

            # a page from another origin is refused
            other = await browser.new_page()
            await other.goto(f"{legacy_page}?ws={ws_url}".replace("127.0.0.1", "localhost", 1))
            await asyncio.sleep(1.5)
            refused = await other.evaluate("window.stats")
            assert refused["opened"] == 0 and refused["closes"], refused
        finally:
            await browser.close()
