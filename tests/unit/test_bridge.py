"""The bridge's frames: what a WebSocket client decodes from them."""

import asyncio
import json
import zlib
from dataclasses import replace

import pytest
from aiohttp import WSMsgType, hdrs, web
from aiohttp.test_utils import make_mocked_request

from kato_exporter.config import BridgeConfig
from kato_exporter.hub import Hub
from kato_exporter.model import Container, ContainersSample, SessionEvent, SourceHealth
from kato_exporter.outputs.bridge import (
    Bridge,
    containers_part,
    session_message,
    text_frame,
    without_server_takeover,
)
from kato_exporter.outputs.rates import Rates
from tests.standins import silent_ws_client
from tests.unit.test_web import USAGE, meta


def decode(frame: bytes, wbits: int) -> tuple[int, str]:
    """(first byte, text) of one unmasked frame, as RFC 6455 and 7692 read it."""
    size, start = frame[1], 2
    if size == 126:
        size, start = int.from_bytes(frame[2:4]), 4
    elif size == 127:
        size, start = int.from_bytes(frame[2:10]), 10
    payload = frame[start:]
    assert frame[1] & 0x80 == 0 and len(payload) == size  # a server does not mask; length right
    if frame[0] & 0x40:
        payload = zlib.decompressobj(-wbits).decompress(payload + b"\x00\x00\xff\xff")
    return frame[0], payload.decode()


@pytest.mark.parametrize("wbits", [0, 9, 15])
@pytest.mark.parametrize("length", [10, 125, 126, 5_000, 70_000])
def test_a_frame_decodes_to_its_message_alone(wbits: int, length: int) -> None:
    message = json.dumps({"type": "realtime_update", "data": "é" * (length // 2)})[:length]
    first, text = decode(text_frame(message, wbits), wbits)
    assert text == message
    assert first == (0xC1 if wbits else 0x81)  # FIN, text, and RSV1 when compressed


def test_the_same_message_makes_the_same_bytes_for_every_client() -> None:
    message = '{"type":"session_event"}' * 50
    assert text_frame(message, 15) == text_frame(message, 15)
    assert len(text_frame(message, 15)) < len(message) // 5


@pytest.mark.parametrize(
    ("offer", "asked"),
    [
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits; server_no_context_takeover",
        ),
        ("permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover"),
        (
            "x-webkit-deflate-frame, permessage-deflate",
            "x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover",
        ),
    ],
)
def test_every_deflate_offer_asks_for_no_server_context_takeover(offer: str, asked: str) -> None:
    request = make_mocked_request("GET", "/ws", headers={hdrs.SEC_WEBSOCKET_EXTENSIONS: offer})
    assert without_server_takeover(request).headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] == asked


def test_a_request_without_an_offer_is_left_alone() -> None:
    request = make_mocked_request("GET", "/ws")
    assert without_server_takeover(request) is request


def test_a_container_on_anothers_network_shows_no_traffic_as_docker_stats_did() -> None:
    own = Container(meta("own", "running"), USAGE)
    shared = Container(replace(meta("shared", "running"), network_mode="host"), USAGE)
    part = containers_part(ContainersSample((own, shared), "cgroup"), None, 1.0, Rates())
    network = {row["name"]: row["network"] for row in part["containers"]}
    assert (network["own"]["rx_bytes"], network["own"]["tx_bytes"]) == (1, 2)
    assert (network["shared"]["rx_bytes"], network["shared"]["tx_bytes"]) == (0, 0)


@pytest.mark.parametrize(
    ("event", "reason"), [("destroyed", None), ("expired", "expired"), ("evicted", "evicted")]
)
def test_a_session_that_ends_says_why_when_it_was_not_deleted(event: str, reason: str | None) -> None:
    message = json.loads(session_message(SessionEvent(event, 1760356800.0, 2), 12.3))
    assert message["event_type"] == "session_destroyed" and message.get("reason") == reason
    assert message["data"] == {
        "current_count": 2,
        "previous_count": 3,
        "delta": -1,
        "time_since_last_event": 12.3,
    }


async def test_a_collection_just_after_the_tick_goes_with_that_tick(aiohttp_client) -> None:
    """Container collections a tick apart that land now just before the bridge's tick, now just
    after it (a busy machine's jitter, or ticks set by a scraper's phase): each tick sends one,
    and none is sent a tick late beside the next."""
    hub, tick = Hub(), 0.2
    bridge = Bridge(hub, BridgeConfig(tick=tick))
    app = web.Application()
    bridge.add_routes(app)
    client = await aiohttp_client(app)
    await bridge.start()  # its first tick: now
    loop = asyncio.get_running_loop()
    began = loop.time()
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "subscribe", "subscriptions": ["containers"]})
    try:
        for k in range(1, 11):
            await asyncio.sleep(max(0.0, began + k * tick + (0.03 if k % 2 else -0.03) - loop.time()))
            usage = replace(USAGE, cpu_seconds=float(k))
            sample = ContainersSample((Container(meta("a", "running"), usage),), "cgroup")
            await hub.update("containers", sample, SourceHealth(up=True))
        await asyncio.sleep(tick)
    finally:
        await bridge.close()
    updates = []
    while (message := await ws.receive(timeout=1)).type == WSMsgType.TEXT:
        updates.append(json.loads(message.data))
    sent = [u["timestamp"] for u in updates if u["type"] == "realtime_update" and "containers" in u["data"]]
    assert len(sent) == 10, sent


async def test_the_stop_cuts_a_client_that_reads_nothing(aiohttp_client) -> None:
    """A client whose socket is full cannot take the close frame: the stop cuts it after a
    second rather than wait on it for ever."""
    bridge = Bridge(Hub(), BridgeConfig(tick=60.0))
    app = web.Application()
    bridge.add_routes(app)
    server = await aiohttp_client(app)
    await bridge.start()
    loop = asyncio.get_running_loop()
    with await silent_ws_client(server.port) as raw:
        while not bridge.clients:
            await asyncio.sleep(0.01)
        (client,) = bridge.clients
        assert client.transport is not None
        while not client.transport.get_write_buffer_size():  # the kernel's buffers full
            client.put("x" * 1_000_000, 0.0)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(bridge.close(), 3)  # a second for the close frame, then cut
        assert client.transport.is_closing()
        assert not client.transport.get_write_buffer_size()  # dropped: nobody would read it
        while await asyncio.wait_for(loop.sock_recv(raw, 1 << 20), 2):  # what the kernel had, then the end
            pass
