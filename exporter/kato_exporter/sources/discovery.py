"""KATO found on this Docker host when ``--kato.url`` is not given: its API container (the
``--kato.log-container`` pattern: ``kato``, ``proj-kato-1``) and its Redis container (``kato-redis``
and the like), each reached the way this exporter can: a port it publishes on this host, else its
address on one of its networks (reachable from the host, and from a container on that network).
Nothing is guessed that could be wrong: an address that does not answer is not used, and a Redis
that wants a password is left out until one is given (``--kato.redis-password-file``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiodocker

from kato_exporter.supervision import reason

log = logging.getLogger(__name__)

REDIS_CONTAINER = re.compile(r"(.+[-_])?kato[-_]redis([-_][0-9]+)?")
API_PORT, REDIS_PORT = 8000, 6379
CONNECT_TIMEOUT = 1.0


@dataclass(frozen=True)
class Found:
    """What was found of KATO: a URL for each part, with the container it is and how it is reached."""

    url: str
    container: str
    how: str


def container_name(container: Mapping[str, Any] | aiodocker.docker.DockerContainer) -> str:
    """A container's name as Docker lists it (``/kato`` → ``kato``)."""
    return str((container["Names"] or ["/"])[0]).lstrip("/")


def addresses(container: Mapping[str, Any], port: int, scheme: str) -> list[tuple[str, str]]:
    """(URL, how) for ``port`` of a running container (an entry of Docker's ``containers/json``):
    the host's published port first, then the container's address on each of its networks."""
    found: list[tuple[str, str]] = []
    for published in container.get("Ports") or []:
        wanted = published.get("PrivatePort") == port and published.get("Type") == "tcp"
        if wanted and published.get("PublicPort"):
            ip = published.get("IP") or "0.0.0.0"
            host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(ip, f"[{ip}]" if ":" in ip else ip)
            found.append((f"{scheme}://{host}:{published['PublicPort']}", f"port {port} published on {ip}"))
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    for name, network in sorted(networks.items()):
        if network.get("IPAddress"):
            found.append((f"{scheme}://{network['IPAddress']}:{port}", f"its address on the network {name}"))
    return list(dict(found).items())


async def answers(url: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether something accepts a TCP connection at ``url``'s host and port."""
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def reach(containers: Iterable[Mapping[str, Any]], port: int, scheme: str) -> Found | None:
    """The first container, by name, with an address that answers on ``port``."""
    for container in sorted(containers, key=container_name):
        for url, how in addresses(container, port, scheme):
            if await answers(url):
                return Found(url, container_name(container), how)
    return None


async def find_kato(
    containers: Iterable[Mapping[str, Any]],
    api_pattern: re.Pattern[str],
    watched: Callable[[str, Mapping[str, str]], bool] = lambda name, labels: True,
) -> tuple[Found | None, Found | None]:
    """KATO's API and its Redis among the running, ``watched`` containers, where they answer."""
    running = [
        c
        for c in containers
        if c.get("State") == "running" and watched(container_name(c), c.get("Labels") or {})
    ]
    api = [c for c in running if api_pattern.fullmatch(container_name(c))]
    redis = [c for c in running if REDIS_CONTAINER.fullmatch(container_name(c))]
    return await reach(api, API_PORT, "http"), await reach(redis, REDIS_PORT, "redis")


async def needs_password(url: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether the Redis at ``url`` refuses a PING without a password (NOAUTH)."""
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(b"PING\r\n")
            reply = await reader.readline()
    except (OSError, TimeoutError):
        return False
    writer.close()
    return reply.startswith(b"-NOAUTH")


class KatoFinder:
    """Looks for KATO among this host's running containers: once at start, then every
    ``interval`` until it appears (``watch``)."""

    def __init__(
        self,
        docker_url: str,
        api_pattern: re.Pattern[str],
        watched: Callable[[str, Mapping[str, str]], bool],
        password_given: bool,
        interval: float = 30.0,
        docker_factory: Callable[[str], aiodocker.Docker] = aiodocker.Docker,
    ) -> None:
        self._url, self._pattern, self._password_given = docker_url, api_pattern, password_given
        self._watched = watched
        self.interval, self._factory = interval, docker_factory
        self._last_error = ""

    async def look(self) -> tuple[Found | None, Found | None]:
        """KATO's API and Redis where they answer; no Redis that wants a password not given."""
        docker = self._factory(self._url)
        try:
            listed = await docker._query_json("containers/json")
        finally:
            await docker.close()
        api, redis = await find_kato(listed, self._pattern, self._watched)
        if api and redis and not self._password_given and await needs_password(redis.url):
            log.error(
                "KATO's Redis %s at %s wants a password, so sessions come from KATO's API until it is "
                "given with --kato.redis-password-file (a file holding it)",
                redis.container,
                redis.url,
            )
            redis = None
        return api, redis

    async def look_safely(self) -> tuple[Found | None, Found | None]:
        """``look``, with Docker's failure logged (once per reason) as nothing found."""
        try:
            return await self.look()
        except Exception as exc:  # Docker away, or a reply of a shape not expected: try again later
            if reason(exc) != self._last_error:
                log.warning("looking for KATO's containers through Docker at %s: %s", self._url, reason(exc))
            self._last_error = reason(exc)
            return None, None

    async def watch(
        self,
        found: Callable[[Found, Found | None], Awaitable[None]],
        names: Callable[[], Iterable[str] | None] = lambda: None,
    ) -> None:
        """Look every ``interval`` until KATO's API is there, then hand it to ``found``. Docker is
        not asked while ``names`` (the watched containers', None while not known) has none that
        could be KATO's API: listing 1,000 containers took dockerd 75-110 ms of CPU."""
        while True:
            await asyncio.sleep(self.interval)
            known = names()
            if known is not None and not any(self._pattern.fullmatch(name) for name in known):
                continue
            api, redis = await self.look_safely()
            if api is not None:
                try:
                    await found(api, redis)
                except Exception:  # a bug: said, not swallowed with the task
                    log.exception("starting the KATO sources for %s failed", api.url)
                return


def describe(api: Found, redis: Found | None) -> str:
    """The start log's line on what was found and how it is reached."""
    parts = [f"KATO's API is container {api.container}, at {api.url} ({api.how})"]
    if redis is not None:
        parts.append(f"its Redis is container {redis.container}, at {redis.url} ({redis.how})")
    else:
        parts.append("no Redis container of KATO's that answers without a password")
    return "; ".join(parts) + " (--kato.url and --kato.redis-url set them, --kato.url=off turns this off)"
