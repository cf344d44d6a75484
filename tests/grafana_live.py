"""Grafana's own frontend code (``tests/grafana_js``) judging what we give Grafana: the Live
pushes, built into channel messages as Grafana builds them, and the stat panels' display.

What a Grafana Live channel carries to the browser for our pushes:

Grafana's HTTP push (``POST /api/live/push/:streamId``, no query parameters: the
``labels_column`` frame format) parses the body's lines and makes one frame per measurement
(``pkg/services/live/telemetry/telegraf/convert.go``, ``convertWithLabelsColumn``): a
``labels`` field (each line's tags as ``k=v, k2=v2``, sorted), a ``time`` field, then each field
in the order first seen, each line's fields sorted by key, every number a float64. The managed
stream (``pkg/services/live/managedstream/runner.go``, ``Push``) then sends that frame with its
schema when the schema differs from the channel's last one, else its data only.

``channel_messages(bodies)`` returns, per channel (measurement), the DataFrameJSON messages in
order, for ``tests/grafana_js/stream.cjs`` to feed Grafana's own ``StreamingDataFrame``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

JS = Path(__file__).resolve().parent / "grafana_js"
GRAFANA_VERSIONS = ("11", "12")  # the pinned @grafana/data versions, tests/grafana_js/package.json

_UNESCAPE = re.compile(r"\\(.)")


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes and not after a backslash."""
    parts, current, quoted, escaped = [], "", False, False
    for char in text:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
            current += char
        elif char == separator and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """(measurement, tags, fields, timestamp in ns) of one line-protocol line."""
    head, fields_text, stamp = _split(line, " ")
    measurement, *tag_texts = _split(head, ",")
    tags = dict(_UNESCAPE.sub(r"\1", t).split("=", 1) for t in tag_texts)
    fields: dict[str, Any] = {}
    for item in _split(fields_text, ","):
        key, _, value = item.partition("=")
        key = _UNESCAPE.sub(r"\1", key)
        if value.startswith('"'):
            fields[key] = json.loads(value)  # our strings escape only \\ and \"
        elif value in ("true", "false"):
            fields[key] = value == "true"
        else:
            fields[key] = float(value.removesuffix("i"))
        # every number becomes a float64: WithFloat64Numbers(true)
    return _UNESCAPE.sub(r"\1", measurement), tags, fields, int(stamp)


def _type(value: Any) -> str:
    return "string" if isinstance(value, str) else "boolean" if isinstance(value, bool) else "number"


def frames(body: bytes) -> dict[str, dict[str, Any]]:
    """The labels-column frame of each measurement in one push body."""
    out: dict[str, dict[str, Any]] = {}
    for text in body.decode().splitlines():
        measurement, tags, fields, stamp = parse_line(text)
        frame = out.setdefault(
            measurement, {"fields": [("labels", "string"), ("time", "time")], "values": [[], []]}
        )
        names = [name for name, _ in frame["fields"]]
        row = len(frame["values"][0])
        frame["values"][0].append(", ".join(f"{k}={v}" for k, v in sorted(tags.items())))
        frame["values"][1].append(stamp // 1_000_000)  # ms, as FrameToJSON writes times
        for key in sorted(fields):
            if key not in names:
                names.append(key)
                frame["fields"].append((key, _type(fields[key])))
                frame["values"].append([None] * row)
            frame["values"][names.index(key)].append(fields[key])
        for column in frame["values"][2:]:  # a field this line lacks: null
            column.extend([None] * (row + 1 - len(column)))
    return out


def channel_messages(bodies: Iterable[bytes]) -> dict[str, list[dict[str, Any]]]:
    """Per measurement, the messages its channel sends, schema included when it changed."""
    messages: dict[str, list[dict[str, Any]]] = {}
    last_schema: dict[str, Any] = {}
    for body in bodies:
        for measurement, frame in frames(body).items():
            schema = {"name": measurement, "fields": [{"name": n, "type": t} for n, t in frame["fields"]]}
            message: dict[str, Any] = {"data": {"values": frame["values"]}}
            if last_schema.get(measurement) != schema:
                message["schema"] = schema
            last_schema[measurement] = schema
            messages.setdefault(measurement, []).append(message)
    return messages


def node(script: str, document: dict[str, Any]) -> Any:
    """Run ``tests/grafana_js/<script>`` with ``document`` as JSON on stdin; its JSON answer."""
    done = subprocess.run(
        ["node", str(JS / script)], input=json.dumps(document), capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def streaming_frames(version: str, messages: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What Grafana's StreamingDataFrame (@grafana/data ``version``) ends with on each channel."""
    return node("stream.cjs", {"version": version, "channels": messages})  # type: ignore[no-any-return]


def displayed(version: str, panels: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """What Grafana shows in each stat, gauge or bar gauge (``tests/grafana_js/display.cjs``):
    by panel title, each value's title, text and colour."""
    return {
        panel["title"]: panel["values"]
        for panel in node("display.cjs", {"version": version, "panels": panels})
    }


# @grafana/schema of each pinned @grafana/data (11.6's is hoisted, 12.4's is its own)
SCHEMAS = {
    "11": "node_modules/@grafana/schema",
    "12": "node_modules/grafana-data-12/node_modules/@grafana/schema",
}
# A JSON document has strings where TypeScript's types have string enums: compare with each
# enum's values, as a string union (`${Enum}`); everything else stays as the type says.
JSON_OF = (
    "type Json<T> = T extends string ? `${T}` : T extends (infer U)[] ? Json<U>[]"
    " : T extends object ? { [K in keyof T]: Json<T[K]> } : T;"
)


def schema_errors(version: str, boards: dict[str, Any], folder: Path) -> str:
    """What TypeScript says of each dashboard as an object literal of @grafana/schema's
    ``Dashboard`` type (strict: an unknown or misspelled key is an error); empty if nothing."""
    files = []
    for name, board in boards.items():
        path = folder / f"{Path(name).stem}-{version}.ts"
        path.write_text(
            f"import type {{ Dashboard }} from {json.dumps(str(JS / SCHEMAS[version]))};\n{JSON_OF}\n"
            f"export const dashboard: Json<Dashboard> = {json.dumps(board, indent=1)};\n"
        )
        files.append(str(path))
    options = ["--noEmit", "--strict", "--skipLibCheck", "--module", "commonjs", "--moduleResolution", "node"]
    done = subprocess.run(
        [str(JS / "node_modules/.bin/tsc"), *options, *files], capture_output=True, text=True
    )
    return done.stdout + done.stderr
