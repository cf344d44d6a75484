"""TLS and basic auth for every endpoint, from a web config file in the format node_exporter
and Prometheus read (``--web.config.file``)::

    tls_server_config:
      cert_file: /etc/kato-exporter/tls.crt
      key_file: /etc/kato-exporter/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional; needs client_ca_file
      client_ca_file: /etc/kato-exporter/ca.crt
      min_version: TLS12                              # optional, the default
    basic_auth_users:
      prometheus: $2y$10$…                            # bcrypt hash, never the password

The Alertmanager webhook is outside basic auth: it has its own bearer token, and Alertmanager
sends one Authorization header, not two.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bcrypt
from aiohttp import web

from kato_exporter.config import ConfigError, read_yaml

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}


@dataclass(frozen=True)
class WebSecurity:
    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # name → bcrypt hash


def load_web_config(path: str) -> WebSecurity:
    """Read and check the file; ConfigError names the file and the key at fault."""
    if not path:
        return WebSecurity()
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = data.keys() - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise ConfigError(
            f"{path}: {sorted(unknown)[0]}: not supported (tls_server_config, basic_auth_users)"
        )
    return WebSecurity(
        tls=_tls(path, data.get("tls_server_config")),
        users=_users(path, data.get("basic_auth_users")),
    )


def _tls(path: str, tls: Any) -> ssl.SSLContext | None:
    if tls is None:
        return None
    if not isinstance(tls, dict):
        raise ConfigError(f"{path}: tls_server_config: expected a mapping")
    where = f"{path}: tls_server_config"
    unknown = tls.keys() - TLS_KEYS
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: not supported ({', '.join(sorted(TLS_KEYS))})")
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise ConfigError(f"{where}: cert_file and key_file are both required")
    version = tls.get("min_version", "TLS12")
    if version not in TLS_VERSIONS:
        raise ConfigError(f"{where}.min_version: expected one of {', '.join(TLS_VERSIONS)}, got {version!r}")
    client_auth = tls.get("client_auth_type", "NoClientCert")
    if client_auth not in CLIENT_AUTH:
        raise ConfigError(
            f"{where}.client_auth_type: expected one of {', '.join(CLIENT_AUTH)}, got {client_auth!r}"
        )
    if client_auth != "NoClientCert" and not tls.get("client_ca_file"):
        raise ConfigError(f"{where}.client_ca_file: required with client_auth_type {client_auth}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls["cert_file"], tls["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}.cert_file/key_file: cannot load: {exc}") from None
    context.minimum_version = TLS_VERSIONS[version]
    context.verify_mode = CLIENT_AUTH[client_auth]
    if client_auth != "NoClientCert":
        try:
            context.load_verify_locations(tls["client_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}.client_ca_file: cannot load: {exc}") from None
    return context


def _users(path: str, users: Any) -> dict[str, bytes]:
    if users is None:
        return {}
    if not isinstance(users, dict):
        raise ConfigError(f"{path}: basic_auth_users: expected a mapping of user name to bcrypt hash")
    checked = {}
    for name, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(
                f"{path}: basic_auth_users.{name}: expected a bcrypt hash ($2y$…), not a password"
            )
        checked[str(name)] = hashed.encode()
    return checked


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BasicAuth:
    """aiohttp middleware: every path but ``exempt`` needs one of ``users``' passwords.

    bcrypt is slow on purpose (tens of milliseconds), so it runs in a worker thread, and a
    name and password that passed once are remembered (by a hash of the password)."""

    def __init__(self, users: Mapping[str, bytes], exempt: frozenset[str] = frozenset()) -> None:
        self._users = users
        self._exempt = exempt
        self._passed: set[tuple[str, bytes]] = set()
        # compared against for unknown users, so that a wrong name takes as long as a wrong password
        self._dummy = bcrypt.hashpw(b"", bcrypt.gensalt(10))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self._exempt or await self._allowed(request.headers.get("Authorization", "")):
            return await handler(request)
        raise web.HTTPUnauthorized(
            text="401 Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="kato-exporter"'}
        )

    async def _allowed(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            name, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        key = (name, hashlib.sha256(password.encode()).digest())
        if sep and key in self._passed:
            return True
        hashed = self._users.get(name, self._dummy)
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
        ok = ok and bool(sep) and name in self._users
        if ok and len(self._passed) < 1000:
            self._passed.add(key)
        return ok
