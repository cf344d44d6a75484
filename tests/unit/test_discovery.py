"""Finding KATO's containers in Docker's container list: which address of each, and only one
that answers."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from kato_exporter.config import DEFAULT_KATO_CONTAINER
from kato_exporter.sources.discovery import Found, KatoFinder, addresses, find_kato, needs_password

API = re.compile(DEFAULT_KATO_CONTAINER)


def container(name: str, ports: list[dict[str, Any]] = (), **networks: str) -> dict[str, Any]:  # type: ignore[assignment]
    """An entry of Docker's GET /containers/json, as dockerd writes it."""
    return {
        "Names": [f"/{name}"],
        "State": "running",
        "Labels": {},
        "Ports": list(ports),
        "NetworkSettings": {"Networks": {net: {"IPAddress": ip} for net, ip in networks.items()}},
    }


def test_a_published_port_comes_first_then_each_network():
    published = [
        {"IP": "0.0.0.0", "PrivatePort": 8000, "PublicPort": 18000, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 8000, "PublicPort": 18000, "Type": "tcp"},
        {"PrivatePort": 9000, "Type": "tcp"},  # exposed, not published
    ]
    found = addresses(container("proj-kato-1", published, proj_default="172.18.0.3"), 8000, "http")
    assert [url for url, _ in found] == [
        "http://127.0.0.1:18000",
        "http://[::1]:18000",
        "http://172.18.0.3:8000",
    ]
    assert found[0][1] == "port 8000 published on 0.0.0.0"
    assert found[2][1] == "its address on the network proj_default"
    on_one = [{"IP": "192.0.2.7", "PrivatePort": 6379, "PublicPort": 6380, "Type": "tcp"}]
    assert addresses(container("kato-redis", on_one), 6379, "redis")[0][0] == "redis://192.0.2.7:6380"


async def listening() -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.readline() == b"PING\r\n":
            writer.write(b"-NOAUTH Authentication required.\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_only_an_address_that_answers_is_used_and_only_kato_s_names():
    server, port = await listening()
    published = [{"IP": "127.0.0.1", "PrivatePort": 8000, "PublicPort": port, "Type": "tcp"}]
    redis_port = [{"IP": "127.0.0.1", "PrivatePort": 6379, "PublicPort": port, "Type": "tcp"}]
    try:
        listed = [
            container("proj-kato-1", [], proj_default="192.0.2.1"),  # TEST-NET: never answers
            container("proj-kato-2", published),
            container("proj-katoredis-1", redis_port),  # not a name of KATO's Redis
            container("kato-dashboard", published),  # nor of its API
            {**container("kato-redis", redis_port), "State": "exited"},
        ]
        api, redis = await find_kato(listed, API)
        assert api == Found(f"http://127.0.0.1:{port}", "proj-kato-2", "port 8000 published on 127.0.0.1")
        assert redis is None
        api, redis = await find_kato([container("proj-kato-redis-1", redis_port)], API)
        assert api is None and redis is not None and redis.container == "proj-kato-redis-1"
        watched = [container("proj-kato-2", published)]
        assert await find_kato(watched, API, lambda name, labels: False) == (None, None)
        assert await needs_password(f"redis://127.0.0.1:{port}")  # it answered NOAUTH
    finally:
        server.close()
        await server.wait_closed()


async def test_docker_is_asked_only_once_a_watched_container_could_be_katos_api():
    listings: list[str] = []

    class Docker:  # what the finder asks of aiodocker.Docker, counted
        def __init__(self, url: str) -> None:
            pass

        async def _query_json(self, path: str) -> list[dict[str, Any]]:
            listings.append(path)
            return []

        async def close(self) -> None:
            pass

    async def found(api: Found, redis: Found | None) -> None:
        raise AssertionError("nothing answers here")

    names: list[str] | None = ["web", "kato-redis"]
    finder = KatoFinder("unix:///nowhere", API, lambda name, labels: True, False, 0.01, Docker)
    watching = asyncio.create_task(finder.watch(found, lambda: names))
    try:
        await asyncio.sleep(0.1)  # ten looks, none of them at Docker: no name is KATO's API's
        assert listings == []
        names = ["web", "proj-kato-1"]
        await asyncio.sleep(0.05)
        assert listings and set(listings) == {"containers/json"}
        names, before = None, len(listings)  # the containers not known (Docker away): Docker asked
        await asyncio.sleep(0.05)
        assert len(listings) > before
    finally:
        watching.cancel()
