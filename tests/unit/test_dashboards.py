"""The committed dashboards: generated from grafana/kato_dashboards, and well formed. Whether
their queries return data is tests/integration/test_dashboards.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from grafana.kato_dashboards.dashboards import DASHBOARDS, encode, render
from scripts.stack import Settings, render_grafana
from tests.conftest import ROOT
from tests.dashboards import (
    BUILT_IN,
    dashboards,
    datasource_refs,
    metric_names,
    panels,
    prometheus_yml_scrape_interval,
    provisioned_datasources,
    targets,
    variables,
)
from tests.dashboards import (
    DASHBOARDS as FOLDER,
)
from tests.grafana_live import GRAFANA_VERSIONS, schema_errors


def test_committed_json_is_what_the_code_generates():
    stale = [
        uid
        for uid, make in DASHBOARDS.items()
        if (FOLDER / f"{uid}.json").read_text() != encode(render(make))
    ]
    assert not stale, f"regenerate with `python -m grafana.kato_dashboards`: {stale} differ"
    assert sorted(f"{uid}.json" for uid in DASHBOARDS) == sorted(dashboards())


def test_each_dashboard_has_its_uid_description_tags_links_and_variables():
    boards = dashboards()
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids) == 7
    for name, board in boards.items():
        assert f"{board['uid']}.json" == name
        assert board["description"] and board["tags"] == ["kato"] and board["editable"] is False
        assert board["links"][0]["type"] == "dashboards" and board["links"][0]["tags"] == ["kato"]
        names = [v["name"] for v in variables(board)]
        if board["uid"] == "kato-slo":  # an SLO is KATO's as a whole, over every host
            assert names == ["slo"]
        elif board["uid"] != "kato-live":
            assert names[0] == "instance", name
        if board["uid"] == "kato-containers":
            assert names == ["instance", "container"]
        ids = [panel["id"] for panel in panels(board)]
        assert len(set(ids)) == len(ids)
        for panel in panels(board):
            assert panel["title"] and panel.get("description"), f"{name}: {panel.get('title')}"
            if panel["type"] in ("timeseries", "stat", "bargauge"):
                assert panel["fieldConfig"]["defaults"].get("unit"), f"{name}: {panel['title']} has no unit"


def test_every_datasource_reference_resolves_to_a_provisioned_one():
    provisioned = {source["uid"]: source["type"] for source in provisioned_datasources()}
    assert provisioned == {"kato-prometheus": "prometheus", "kato-alertmanager": "alertmanager"}
    for name, board in dashboards().items():
        for ref in datasource_refs(board):
            assert ref["uid"] in provisioned or ref["uid"] in BUILT_IN, f"{name}: {ref}"
            if ref["uid"] in provisioned:
                assert ref["type"] == provisioned[ref["uid"]], f"{name}: {ref}"


def test_provisioning():
    prometheus, alertmanager = provisioned_datasources()
    assert prometheus["jsonData"] == {"timeInterval": prometheus_yml_scrape_interval(), "httpMethod": "POST"}
    assert alertmanager["jsonData"]["implementation"] == "prometheus"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/kato.yml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["folder"] == "KATO"
    assert provider["allowUiUpdates"] is False


def test_thresholds_are_queried_from_the_rules_never_copied():
    rules = yaml.safe_load((ROOT / "prometheus/rules/thresholds.yml").read_text())
    recorded = {rule["record"] for group in rules["groups"] for rule in group["rules"]}
    drawn = set()
    for target in targets("prometheus"):
        names = metric_names(target.query["expr"])
        drawn |= {n for n in names if n.startswith("threshold:")}
        assert not re.search(r"[<>]=?\s*0?\.\d", target.query["expr"]), f"a number copied in {target.where}"
    assert drawn and drawn <= recorded
    # every ratio with an alert threshold is drawn somewhere
    assert {r.rsplit(":", 1)[0] for r in recorded if r.endswith(":warning")} - {
        "threshold:kato_container_restarts"
    } == {d.rsplit(":", 1)[0] for d in drawn}


def test_metric_names_are_found_in_queries():
    assert metric_names('sum by (code) (rate(kato_http_requests_total{code=~"5.."}[4s]))') == {
        "kato_http_requests_total"
    }
    assert metric_names("a / on (instance, name) group_left () b or time() - c offset 5m") == {"a", "b", "c"}
    assert metric_names("kato:http_errors:ratio_rate5m > 0.1") == {"kato:http_errors:ratio_rate5m"}


def test_the_native_stack_points_grafana_at_its_prometheus_alertmanager_and_dashboards(tmp_path):
    settings = Settings(state=tmp_path, prometheus_port=19090, alertmanager_port=19093, grafana=None)
    render_grafana(settings, tmp_path / "grafana")
    sources = yaml.safe_load((tmp_path / "grafana/datasources/kato.yml").read_text())["datasources"]
    assert {s["uid"]: s["url"] for s in sources} == {
        "kato-prometheus": "http://localhost:19090",
        "kato-alertmanager": "http://localhost:19093",
    }
    provider = yaml.safe_load((tmp_path / "grafana/dashboards/kato.yml").read_text())["providers"][0]
    assert sorted(p.name for p in Path(provider["options"]["path"]).glob("*.json")) == sorted(dashboards())


@pytest.mark.parametrize("version", GRAFANA_VERSIONS)
def test_every_dashboard_is_a_dashboard_of_grafanas_schema(version, tmp_path):
    assert schema_errors(version, dashboards(), tmp_path) == ""


def test_a_misspelled_key_is_an_error_of_the_schema_check(tmp_path):
    board = dashboards()["kato-host.json"]
    board["panels"][0]["fieldConfig"]["defaults"]["unitt"] = "s"
    for version in GRAFANA_VERSIONS:
        assert """'"unitt"' does not exist""" in schema_errors(version, {"kato-host.json": board}, tmp_path)
