"""Local stand-ins for what cannot run here: Slack's incoming webhook, an SMTP server, and
Grafana's Live push endpoint. Each records what it got, with the time it arrived. And a browser
that stopped reading its WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from scripts.stack import Settings
from tests.conftest import free_port


@dataclass
class Inbox:
    """What a receiver got, with the time each arrived."""

    items: list[tuple[float, Any]] = field(default_factory=list)

    def add(self, item: Any) -> None:
        self.items.append((time.time(), item))


async def silent_ws_client(port: int) -> socket.socket:
    """A WebSocket client on ``port`` (loopback, ``/ws``) that reads nothing: a raw socket with a
    4 KB receive window, set before connecting, its upgrade request sent."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, ("127.0.0.1", port))
    await loop.sock_sendall(
        raw,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    return raw


@contextlib.contextmanager
def http_receiver(answer: Callable[[BaseHTTPRequestHandler, bytes], int], port: int = 0) -> Iterator[str]:
    """An HTTP server on loopback (``port``: 0 for any) that hands each POST's or GET's handler and
    body to ``answer``, which returns the status to send. Yields its base URL; closed on exit."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(answer(self, body))
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def slack_standin() -> Iterator[tuple[str, Inbox]]:
    """Slack's incoming webhook: records each JSON payload. Yields (webhook URL, inbox)."""
    inbox = Inbox()

    def answer(_: BaseHTTPRequestHandler, body: bytes) -> int:
        inbox.add(json.loads(body))
        return 200

    with http_receiver(answer) as url:
        yield f"{url}/services/T000/B000/XXXX", inbox


@contextlib.contextmanager
def smtp_standin() -> Iterator[tuple[str, Inbox]]:
    """An SMTP server (aiosmtpd): records each message. Yields (host:port, inbox)."""
    inbox = Inbox()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            inbox.add(email.message_from_bytes(envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield f"127.0.0.1:{controller.port}", inbox
    finally:
        controller.stop()


@dataclass
class Readiness:
    status: int = 200


@contextlib.contextmanager
def qdrant_standin() -> Iterator[tuple[str, Readiness]]:
    """Qdrant's ``GET /readyz`` (Qdrant cannot run here): answers the status the yielded object
    holds, 200 (ready) until a test sets another. Yields (its /readyz URL, the object)."""
    readiness = Readiness()

    def answer(handler: BaseHTTPRequestHandler, _: bytes) -> int:
        return readiness.status if handler.path == "/readyz" else 404

    with http_receiver(answer) as url:
        yield f"{url}/readyz", readiness


def loopback_settings(state: Path, exporter_args: list[str], **fields: Any) -> Settings:
    """The native stack on free loopback ports, without Grafana (not installable here) unless
    ``fields`` say otherwise."""
    ports = {
        f"{name}_port": free_port()
        for name in ("exporter", "prometheus", "alertmanager", "redis_exporter", "blackbox_exporter")
    }
    return Settings(
        **{
            "state": state,
            "host": "127.0.0.1",
            "grafana": None,
            "exporter_args": exporter_args,
            **ports,
            **fields,
        }
    )


def alerting_settings(folder: Path, slack_url: str, smtp_host: str, exporter_args: list[str]) -> Settings:
    """The stack with 1 s clocks, delivering to the Slack and SMTP stand-ins; state in ``folder``."""
    secrets = folder / "secrets"
    secrets.mkdir()
    (secrets / "slack_api_url").write_text(slack_url)
    (secrets / "smtp_password").write_text("not-used-without-AUTH")
    return loopback_settings(
        folder / "state",
        exporter_args,
        slack_api_url_file=str(secrets / "slack_api_url"),
        smtp_password_file=str(secrets / "smtp_password"),
        smtp_smarthost=smtp_host,
        email_to="oncall@example.org",
        scrape_interval="1s",
        evaluation_interval="1s",
        group_wait="1s",
        group_interval="1s",
        resend_delay="1s",
    )
