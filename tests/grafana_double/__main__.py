"""A stand-in for the parts of Grafana's HTTP API that scripts/stack.py and the exporter use,
started the way the stack starts Grafana (its GF_* environment), since Grafana cannot be
installed here: /api/health, service accounts and their tokens (admin basic auth: search,
create, list, revoke), GET /api/org and POST /api/live/push/<stream> (a token of a service
account). GET /_double/state says what it was given. Its state lives in memory: a restart is a
Grafana whose database was reset."""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PROVISIONING = Path(os.environ["GF_PATHS_PROVISIONING"])
ADMIN = "admin:" + Path(os.environ["GF_SECURITY_ADMIN_PASSWORD__FILE"]).read_text().strip()
accounts: list[dict[str, Any]] = []
tokens: dict[str, dict[str, Any]] = {}  # key -> {"id", "name", "account"}
pushes: dict[str, int] = {}  # stream -> bodies


class Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def admin(self) -> bool:
        return self.headers.get("Authorization") == "Basic " + base64.b64encode(ADMIN.encode()).decode()

    def bearer(self) -> bool:
        return self.headers.get("Authorization", "").removeprefix("Bearer ") in tokens

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if self.path == "/api/health":
            self.reply(200, {"database": "ok", "version": "double"})
        elif self.path.startswith("/api/serviceaccounts/search") and self.admin():
            query = self.path.partition("query=")[2]
            self.reply(200, {"serviceAccounts": [a for a in accounts if query in a["name"]]})
        elif parts[:2] == ["api", "serviceaccounts"] and parts[3:] == ["tokens"] and self.admin():
            mine = [t for t in tokens.values() if t["account"] == int(parts[2])]
            self.reply(200, [{"id": t["id"], "name": t["name"]} for t in mine])
        elif self.path == "/api/org" and self.bearer():
            self.reply(200, {"id": 1, "name": "Main Org."})
        elif self.path == "/_double/state":
            sources = (PROVISIONING / "datasources" / "kato.yml").read_text()
            listed = [{"name": t["name"], "account": t["account"]} for t in tokens.values()]
            self.reply(
                200, {"accounts": accounts, "tokens": listed, "pushes": pushes, "datasources": sources}
            )
        else:
            self.reply(401 if self.path.startswith("/api/") else 404, {"message": "no"})

    def do_DELETE(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts[:2] == ["api", "serviceaccounts"] and parts[3:4] == ["tokens"] and self.admin():
            for key, t in list(tokens.items()):
                if t["account"] == int(parts[2]) and t["id"] == int(parts[4]):
                    del tokens[key]
                    return self.reply(200, {"message": "deleted"})
        self.reply(404, {"message": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = self.path.strip("/").split("/")
        if parts[:3] == ["api", "live", "push"]:
            if not self.bearer():
                return self.reply(401, {"message": "Unauthorized"})
            pushes[parts[3]] = pushes.get(parts[3], 0) + 1
            return self.reply(200, {})
        if not self.admin():
            return self.reply(401, {"message": "Unauthorized"})
        if parts == ["api", "serviceaccounts"]:
            account = {"id": len(accounts) + 1, **json.loads(body)}
            accounts.append(account)
            return self.reply(201, account)
        if parts[:2] == ["api", "serviceaccounts"] and parts[3:] == ["tokens"]:
            key = "glsa_" + secrets.token_hex(16)
            number = max((t["id"] for t in tokens.values()), default=0) + 1
            tokens[key] = {"id": number, "name": json.loads(body)["name"], "account": int(parts[2])}
            return self.reply(200, {"id": number, "name": tokens[key]["name"], "key": key})
        self.reply(404, {"message": "not found"})

    def log_message(self, *args: Any) -> None:
        pass


if __name__ == "__main__":
    print("grafana double:", " ".join(sys.argv[1:]), flush=True)
    address = (os.environ["GF_SERVER_HTTP_ADDR"], int(os.environ["GF_SERVER_HTTP_PORT"]))
    ThreadingHTTPServer(address, Handler).serve_forever()
