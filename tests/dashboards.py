"""Reading the committed dashboards the way Grafana would: their panels' targets, their
variables, and each PromQL query with the variables and Grafana's interval macros filled in."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tests.conftest import ROOT

DASHBOARDS = ROOT / "grafana" / "dashboards"
BUILT_IN = {"grafana", "-- Grafana --"}  # Grafana's own datasource (Live channels)


def dashboards() -> dict[str, dict[str, Any]]:
    """Every committed dashboard, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    query: Mapping[str, Any]

    @property
    def where(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.query.get('refId')}"


def panels(board: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a row's panels


def targets(kind: str) -> Iterator[Target]:
    """Every target whose datasource is of ``kind`` (``prometheus``, ``datasource``)."""
    for name, board in dashboards().items():
        for panel in panels(board):
            for query in panel.get("targets", []):
                source = query.get("datasource") or panel.get("datasource") or {}
                if source.get("type") == kind:
                    yield Target(name, panel["title"], query)


def datasource_refs(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every ``"datasource": {...}`` anywhere in a dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield value
            else:
                yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def variables(board: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(board.get("templating", {}).get("list", []))


def fill(expr: str, values: Mapping[str, list[str]], range_seconds: int, scrape_seconds: int) -> str:
    """``expr`` as Grafana sends it: each ``$variable`` as a regex of its values (what "All" or a
    multi-value selection becomes), and the interval macros as Grafana computes them for a
    panel about 500 points wide (``$__rate_interval`` = max(interval + scrape, 4 × scrape))."""
    interval = max(scrape_seconds, range_seconds // 500)
    macros = {
        "$__rate_interval": f"{max(interval + scrape_seconds, 4 * scrape_seconds)}s",
        "$__interval": f"{interval}s",
        "$__range": f"{range_seconds}s",
    }
    for macro, value in macros.items():
        expr = expr.replace(macro, value)
    for name, options in values.items():
        regex = "(" + "|".join(map(regex_escape, options)) + ")"
        expr = re.sub(rf"\${name}\b", lambda _, regex=regex: regex, expr)
    assert "$" not in expr, f"unfilled variable in {expr}"
    return expr


def regex_escape(value: str) -> str:
    """A value inside a PromQL regex string, escaped as Grafana's Prometheus datasource does."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
_KEYWORDS |= {"offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        following = text[match.end() :].lstrip()[:1]
        if word.lower() not in _KEYWORDS and following != "(" and not word[0].isdigit():
            names.add(word)
    return names


def label_values_query(query: Any) -> tuple[str, str]:
    """``label_values(metric{selector}, label)`` → (series selector, label)."""
    text = query["query"] if isinstance(query, dict) else query
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
    assert match, f"not a label_values() query: {text}"
    return match[1], match[2]


def prometheus_yml_scrape_interval() -> str:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "kato-exporter")
    return str(job.get("scrape_interval", config["global"]["scrape_interval"]))


def provisioned_datasources() -> list[Mapping[str, Any]]:
    sources = []
    for path in sorted((ROOT / "grafana" / "provisioning" / "datasources").glob("*.yml")):
        sources += yaml.safe_load(path.read_text())["datasources"]
    return sources


def live_fields() -> dict[str, set[str]]:
    """Channel → fields, of every Live panel."""
    wanted: dict[str, set[str]] = {}
    for target in targets("datasource"):
        fields = set(target.query["filter"]["fields"]) - {"time"}
        wanted.setdefault(target.query["channel"], set()).update(fields)
    return wanted
