"""The shared pieces of every KATO dashboard: datasources, variables, panels, links.

Panels take their queries as ``(expr, legend)`` pairs. Thresholds are never copied into a
dashboard: ``thresholds("kato_host_cpu_usage_ratio")`` adds the recording rules of
prometheus/rules/thresholds.yml as dashed lines, so a number changed there moves the line.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import (
    common as common_builders,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prometheus_model
from grafana_foundation_sdk.models.dashboard import DataSourceRef, DynamicConfigValue

from kato_exporter.outputs.live import MEASUREMENTS

THRESHOLDS = Path(__file__).resolve().parents[2] / "prometheus" / "rules" / "thresholds.yml"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="kato-prometheus")
GRAFANA = DataSourceRef(type_val="datasource", uid="grafana")  # built in: Grafana Live
TAGS = ["kato"]
INSTANCE = 'instance=~"$instance"'
CONTAINER = 'instance=~"$instance", name=~"$container"'

Query = tuple[str, str]  # (PromQL, legend format)
Panel = cogbuilder.Builder[model.Panel]


def instance_variable() -> dashboard.QueryVariable:
    """Which exporters (one per Docker host) the dashboard shows: all by default."""
    return variable("instance", "Host", "label_values(kato_exporter_build_info, instance)")


def container_variable() -> dashboard.QueryVariable:
    query = 'label_values(kato_container_info{instance=~"$instance"}, name)'
    return variable("container", "Container", query)


def variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query({"query": query, "refId": name})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def board(uid: str, title: str, description: str, *variables: dashboard.QueryVariable) -> dashboard.Dashboard:
    """A dashboard of the KATO folder: read-only, linked to the others by the kato tag."""
    built = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .readonly()
        .timezone("browser")
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard.DashboardLink("KATO")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for v in variables:
        built.with_variable(v)
    return built


def prom(expr: str, legend: str = "", ref: str = "", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(PROMETHEUS)
    if ref:
        query.ref_id(ref)
    if instant:
        query.instant().format(prometheus_model.PromQueryFormat.TABLE)
    return query


def _with_queries(panel: Any, queries: Iterable[Query], instant: bool = False) -> Any:
    for i, (expr, legend) in enumerate(queries):
        panel.with_target(prom(expr, legend, ref=chr(ord("A") + i), instant=instant))
    return panel.datasource(PROMETHEUS)


def _sized(panel: Any, title: str, description: str, width: int, height: int) -> Any:
    return panel.title(title).description(description).span(width).height(height)


def graph(
    title: str,
    description: str,
    unit: str,
    *queries: Query,
    width: int = 12,
    height: int = 8,
    stack: bool = False,
    lines: str | None = None,
) -> timeseries.Panel:
    """A time series; ``lines``: a thresholds.yml ratio whose warning and critical are drawn."""
    panel: timeseries.Panel = _sized(timeseries.Panel(), title, description, width, height)
    panel.unit(unit).fill_opacity(10)
    panel.legend(
        common_builders.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
    )
    if stack:
        panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    _with_queries(panel, queries)
    if lines:
        thresholds(panel, lines)
    return panel


def thresholds(panel: timeseries.Panel, ratio: str) -> timeseries.Panel:
    """Draw ``threshold:<ratio>:warning`` and ``:critical`` (where the rules have one) as dashed lines."""
    for level, color in (("warning", "orange"), ("critical", "red")):
        if f"threshold:{ratio}:{level}" not in rule_thresholds():
            continue
        panel.with_target(prom(f"threshold:{ratio}:{level}", f"{level} threshold", ref=level))
        panel.override_by_query(
            level,
            [
                DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color}),
                DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
                DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            ],
        )
    return panel


Steps = tuple[tuple[float | None, str], ...]  # (from this value on, colour); the first from -∞
NEUTRAL: Steps = ((None, "blue"),)  # a count, a rate, a time: no value is good or bad in itself
NONE_IS_GOOD: Steps = ((None, "green"), (1, "red"))  # a count of things that are wrong


@functools.cache
def rule_thresholds() -> dict[str, float]:
    """The numbers of prometheus/rules/thresholds.yml by record name: read, never copied."""
    rules = yaml.safe_load(THRESHOLDS.read_text())["groups"][0]["rules"]
    return {r["record"]: float(r["expr"].removeprefix("vector(").removesuffix(")")) for r in rules}


def by_rules(ratio: str) -> Steps:
    """Green, orange from the rules' warning, red from their critical."""
    warning, critical = (rule_thresholds()[f"threshold:{ratio}:{level}"] for level in ("warning", "critical"))
    return ((None, "green"), (warning, "orange"), (critical, "red"))


def _coloured(panel: Any, steps: Steps, ratio: bool) -> Any:
    """Colour by ``steps``, from the latest value that is not null; a ratio on a 0–1 scale."""
    panel.thresholds(
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )
    panel.color_scheme(dashboard.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
    panel.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    if ratio:
        panel.min(0).max(1)
    return panel


def single(
    title: str,
    description: str,
    unit: str,
    *queries: Query,
    width: int = 4,
    height: int = 4,
    mappings: list[Any] | None = None,
    steps: Steps = NEUTRAL,
) -> stat.Panel:
    """A stat: the latest value of each query, coloured by ``steps`` (or its mappings)."""
    panel = _sized(stat.Panel(), title, description, width, height).unit(unit)
    panel.graph_mode(common.BigValueGraphMode.AREA)
    if mappings:
        panel.mappings(mappings)
    _coloured(panel, steps, unit == "percentunit")
    return _with_queries(panel, queries)  # type: ignore[no-any-return]


def bars(
    title: str, description: str, unit: str, *queries: Query, steps: Steps, width: int = 12, height: int = 8
) -> Any:
    """Horizontal bars of the latest values (the top containers), coloured by ``steps``."""
    panel = _sized(bargauge.Panel(), title, description, width, height).unit(unit)
    panel.orientation(common.VizOrientation.HORIZONTAL).display_mode(common.BarGaugeDisplayMode.GRADIENT)
    _coloured(panel, steps, unit == "percentunit")
    return _with_queries(panel, queries)


def timeline(title: str, description: str, *queries: Query, width: int = 24, height: int = 8) -> Any:
    """One lane per series, coloured by value (0 grey, 1 by the mapping's colour)."""
    panel = _sized(statetimeline.Panel(), title, description, width, height)
    panel.show_value(common.VisibilityMode.NEVER).merge_values(True)
    return _with_queries(panel, queries)


def listing(title: str, description: str, *queries: Query, width: int = 24, height: int = 8) -> Any:
    """A table of the current series (instant queries), one row per series."""
    panel = _sized(table.Panel(), title, description, width, height)
    panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
    panel.with_transformation(
        model.DataTransformerConfig(
            id_val="organize", options={"excludeByName": {"Time": True, "Value": True, "__name__": True}}
        )
    )
    return _with_queries(panel, queries, instant=True)


def states(*pairs: tuple[str, str]) -> list[Any]:
    """Value mappings for 0/1 gauges: ``states(("1", "up"), ("0", "down"))`` with colours."""
    colors = {"up": "green", "healthy": "green", "down": "red", "unhealthy": "red", "no": "red"}
    colors |= {"failing": "red", "firing": "red"}
    return [
        model.ValueMap(options={value: model.ValueMappingResult(text=text, color=colors.get(text, "blue"))})
        for value, text in pairs
    ]


def numbered(values: tuple[str, ...]) -> list[Any]:
    """Value mappings for a state numbered 1, 2, … in the order of ``values``."""
    colors = {
        "running": "green",
        "healthy": "green",
        "degraded": "orange",
        "exited": "red",
        "dead": "red",
        "unhealthy": "red",
    }
    options = {
        str(i): model.ValueMappingResult(text=v, color=colors.get(v, "yellow"), index=i - 1)
        for i, v in enumerate(values, 1)
    }
    return [model.ValueMap(options=options)]


def unit_override(unit: str) -> DynamicConfigValue:
    return DynamicConfigValue(id_val="unit", value=unit)


class LiveQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """A query of the built-in Grafana datasource for a Live channel (no Prometheus in between)."""

    def __init__(self, channel: str, fields: list[str], ref: str = "A") -> None:
        self._query = _LiveDataquery(channel, fields, ref)

    def build(self) -> cogvariants.Dataquery:
        return self._query


class _LiveDataquery(cogvariants.Dataquery):
    def __init__(self, channel: str, fields: list[str], ref: str) -> None:
        self.channel, self.fields, self.ref = channel, fields, ref

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref,
            "datasource": GRAFANA.to_json(),
            "queryType": "measurements",
            "channel": self.channel,
            "filter": {"fields": ["time", *self.fields]},
        }


def live(
    title: str,
    description: str,
    unit: str,
    channel: str,
    *fields: str,
    width: int = 12,
    more: Mapping[str, Sequence[str]] | None = None,
) -> Any:
    """A time series fed by Grafana Live from ``stream/kato/<channel>`` (and from each channel
    of ``more``), pushed by the exporter: each field one the exporter declares for it."""
    panel = _sized(timeseries.Panel(), title, description, width, 8).unit(unit).fill_opacity(10)
    for ref, (name, wanted) in zip("ABCDEFGH", {channel: fields, **(more or {})}.items(), strict=False):
        unknown = set(wanted) - set(MEASUREMENTS[name])
        if unknown:
            raise ValueError(f"{title}: {sorted(unknown)} are not fields of the Live measurement {name!r}")
        panel.with_target(LiveQuery(f"stream/kato/{name}", list(wanted), ref))
    return panel.datasource(GRAFANA)
