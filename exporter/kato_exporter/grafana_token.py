"""Make the token kato-exporter pushes to Grafana Live with: a Viewer service account
``kato-exporter`` and a token of it, through Grafana's HTTP API, written to a file once.

    python -m kato_exporter.grafana_token --url http://grafana:3000 \\
        --admin-password-file /run/secrets/grafana_admin_password --out /tokens/grafana_token

Waits for Grafana to answer (up to ``--wait`` seconds). When ``--out`` already holds a token it
does nothing: a token is made on the first start only. The token is written readable by its
owner only (``--mode``) and never logged. docker-compose.yml runs this as a one-shot service;
``scripts/run.sh`` calls ``make_token`` for a native Grafana.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("kato_exporter.grafana_token")
ACCOUNT = "kato-exporter"


def make_token(url: str, admin_password: str, user: str = "admin") -> str:
    """A new token of the Viewer service account ``kato-exporter``, made if missing."""
    auth = "Basic " + base64.b64encode(f"{user}:{admin_password}".encode()).decode()

    def call(method: str, path: str, body: dict[str, object] | None = None) -> Any:
        request = urllib.request.Request(
            url.rstrip("/") + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": auth, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    found = call("GET", f"/api/serviceaccounts/search?query={ACCOUNT}")["serviceAccounts"]
    account = found[0] if found else call("POST", "/api/serviceaccounts", {"name": ACCOUNT, "role": "Viewer"})
    token = call(
        "POST", f"/api/serviceaccounts/{account['id']}/tokens", {"name": f"{ACCOUNT}-{int(time.time())}"}
    )
    return str(token["key"])


def wait_for(url: str, seconds: float) -> None:
    """Until Grafana's /api/health answers 200; TimeoutError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/api/health", timeout=5):
                return
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Grafana at {url} did not answer in {seconds:.0f} s: {exc}") from exc
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="Grafana's address")
    parser.add_argument("--admin-password-file", type=Path, required=True)
    parser.add_argument("--admin-user", default="admin")
    parser.add_argument("--out", type=Path, required=True, help="the token file to write")
    parser.add_argument(
        "--mode", type=lambda text: int(text, 8), default=0o600, help="the token file's mode (octal)"
    )
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for Grafana")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out.exists() and args.out.read_text().strip():
        log.info("%s already holds a token: nothing to do", args.out)
        return 0
    try:
        password = args.admin_password_file.read_text().strip()
        wait_for(args.url, args.wait)
        token = make_token(args.url, password, args.admin_user)
    except (OSError, TimeoutError, ValueError, KeyError) as exc:
        log.error("cannot make a Grafana token: %s", exc)
        return 1
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, args.mode)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(args.out, args.mode)  # whatever the umask
    log.info("made a token of Grafana's Viewer service account %r in %s", ACCOUNT, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
