"""``kato-exporter --health-check``: ask a running exporter's ``/-/healthy`` whether it is healthy,
reaching it as its own settings say it serves: the port of ``--web.listen-address`` (on loopback
when it listens on every address), HTTPS when ``--web.config.file`` has ``tls_server_config``, and
basic auth with the ``user:password`` of ``--web.health-check.auth-file`` when it has
``basic_auth_users``. Exit status 0 when healthy, 1 when not (the reason on stderr): what Docker's
``HEALTHCHECK`` and a service manager's watchdog read.

The exporter checks its own process on this machine, so its certificate is not verified (it is
issued for the names clients use, not for 127.0.0.1); a web config that requires client
certificates cannot be probed this way.
"""

from __future__ import annotations

import base64
import ssl
import sys
import time
import urllib.error
import urllib.request

from kato_exporter.config import Config, read_secret, split_address
from kato_exporter.outputs.webconfig import WebSecurity

TIMEOUT = 3.0  # seconds; Docker's HEALTHCHECK in the image allows 5


def url(config: Config, security: WebSecurity) -> str:
    host, port = split_address(config.web.listen_address)
    if host in (None, "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if security.tls else 'http'}://{host}:{port}/-/healthy"


def check(config: Config, security: WebSecurity, timeout: float = TIMEOUT) -> tuple[bool, str]:
    """(healthy, what was seen)."""
    target = url(config, security)
    request = urllib.request.Request(target)
    if security.users:
        if not config.web.health_check_auth_file:
            return False, (
                f"{config.web.config_file} asks for basic auth: give --web.health-check.auth-file "
                "a file holding user:password"
            )
        credentials = read_secret(config.web.health_check_auth_file)
        if ":" not in credentials:
            return False, f"{config.web.health_check_auth_file}: expected user:password"
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = None
    if security.tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return True, f"{target}: {response.status} {response.read(200).decode(errors='replace').strip()}"
    except urllib.error.HTTPError as exc:
        return False, f"{target}: {exc.code} {exc.read(200).decode(errors='replace').strip()}"
    except (OSError, ssl.SSLError) as exc:
        return False, f"{target}: {getattr(exc, 'reason', exc)}"


def main(config: Config, security: WebSecurity, wait: float = 0.0) -> int:
    """One check; with ``wait``, checks every half second until healthy or ``wait`` has passed."""
    deadline = time.monotonic() + wait
    while not (result := check(config, security))[0] and time.monotonic() < deadline:
        time.sleep(0.5)
    healthy, seen = result
    print(
        f"kato-exporter: {'healthy' if healthy else 'unhealthy'}: {seen}",
        file=sys.stdout if healthy else sys.stderr,
    )
    return 0 if healthy else 1
