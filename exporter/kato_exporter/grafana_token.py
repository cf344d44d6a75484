"""Make the token kato-exporter pushes to Grafana Live with: a Viewer service account
``kato-exporter`` and a token of it, through Grafana's HTTP API, written to a file once.

    python -m kato_exporter.grafana_token --url http://grafana:3000 \\
        --admin-password-file /run/secrets/grafana_admin_password --out /tokens/grafana_token

Waits for Grafana to answer (up to ``--wait`` seconds). When ``--out`` holds a token that
Grafana still takes, it does nothing; a token Grafana refuses (its database was reset) is made
again. Making one revokes the tokens this tool made before for that account, so re-runs leave
one. The token is written readable by its owner only (``--mode``) and never logged.
docker-compose.yml runs this as a one-shot service; ``scripts/run.sh`` calls ``make_token``
for a native Grafana.
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
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("kato_exporter.grafana_token")
ACCOUNT = "kato-exporter"


def _call(url: str, authorization: str, method: str, path: str, body: dict[str, object] | None = None) -> Any:
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


def make_token(url: str, admin_password: str, user: str = "admin") -> str:
    """A new token of the Viewer service account ``kato-exporter`` (made if missing, matched
    by its exact name); the tokens this tool made for it before are revoked."""
    auth = "Basic " + base64.b64encode(f"{user}:{admin_password}".encode()).decode()

    def call(method: str, path: str, body: dict[str, object] | None = None) -> Any:
        return _call(url, auth, method, path, body)

    found = call("GET", f"/api/serviceaccounts/search?query={urllib.parse.quote(ACCOUNT)}")["serviceAccounts"]
    account = next((a for a in found if a.get("name") == ACCOUNT), None)
    if account is None:
        account = call("POST", "/api/serviceaccounts", {"name": ACCOUNT, "role": "Viewer"})
    for old in call("GET", f"/api/serviceaccounts/{account['id']}/tokens") or []:
        if str(old.get("name", "")).startswith(f"{ACCOUNT}-"):
            call("DELETE", f"/api/serviceaccounts/{account['id']}/tokens/{old['id']}")
            log.info("revoked the earlier token %s", old["name"])
    token = call(
        "POST", f"/api/serviceaccounts/{account['id']}/tokens", {"name": f"{ACCOUNT}-{int(time.time())}"}
    )
    return str(token["key"])


def token_works(url: str, token: str) -> bool:
    """Whether Grafana takes ``token`` (GET /api/org, which any Viewer may read); False on 401
    or 403, an error for anything else (Grafana away: nothing is known)."""
    try:
        _call(url, f"Bearer {token}", "GET", "/api/org")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return False
        raise
    return True


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
    try:
        wait_for(args.url, args.wait)
        held = args.out.read_text().strip() if args.out.exists() else ""
        if held and token_works(args.url, held):
            log.info("%s holds a token Grafana takes: nothing to do", args.out)
            return 0
        if held:
            log.warning(
                "Grafana refuses the token in %s (its database was reset?): making a new one", args.out
            )
        password = args.admin_password_file.read_text().strip()
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
