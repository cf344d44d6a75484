"""The bridge's frames: what a WebSocket client decodes from them."""

import json
import zlib
from dataclasses import replace

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import make_mocked_request

from kato_exporter.model import Container, ContainersSample, SessionEvent
from kato_exporter.outputs.bridge import containers_part, session_message, text_frame, without_server_takeover
from kato_exporter.outputs.rates import Rates
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
