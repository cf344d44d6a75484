"""The Prometheus and Alertmanager configs, checked by the real promtool and amtool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from scripts.stack import Settings, blackbox_exporter_command, redis_exporter_command, render
from tests.conftest import ROOT

PROMETHEUS = ROOT / "prometheus"
ALERTMANAGER = ROOT / "alertmanager"


def run(*command: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_promtool_check_config_and_rules():
    run("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    run("promtool", "check", "rules", *map(str, sorted((PROMETHEUS / "rules").glob("*.yml"))))


@pytest.mark.parametrize("name", sorted(p.name for p in (PROMETHEUS / "tests").glob("*.yml")))
def test_promtool_rule_unit_tests(name: str):
    out = run("promtool", "test", "rules", name, cwd=PROMETHEUS / "tests")
    assert "FAILED" not in out


def test_every_alert_has_a_firing_and_a_quiet_case_in_promtool_tests():
    alerts = {
        rule["alert"]
        for path in (PROMETHEUS / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    firing, quiet = set(), set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert len(alerts) >= 17
    assert alerts - firing == set(), "alerts without a firing case"
    assert alerts - quiet == {"Watchdog"}, "alerts without a case where they must stay quiet"


# alerts for no person: the dead man's switch's, and one that only holds others
UNROUTED = {"Watchdog", "KatoContainersUnknown"}


def test_every_alert_has_severity_and_annotations_with_value_and_threshold():
    for path in (PROMETHEUS / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in (r for r in group["rules"] if "alert" in r):
                expected = ("none",) if rule["alert"] in UNROUTED else ("warning", "critical")
                assert rule["labels"]["severity"] in expected, rule["alert"]
                assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
                text = rule["annotations"]["summary"] + rule["annotations"]["description"]
                if "threshold:" in rule["expr"]:  # a number against a threshold: say both
                    assert "$value" in text, rule["alert"]
                    assert 'query "threshold:' in text, rule["alert"]


def test_amtool_check_config():
    out = run("amtool", "check-config", str(ALERTMANAGER / "alertmanager.yml"))
    assert "3 inhibit rules" in out


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=KatoContainerCpuHigh", "severity=critical"], "critical"),
        (["alertname=KatoContainerCpuHigh", "severity=warning"], "warning"),
        (["alertname=KatoExporterDown", "severity=critical", "instance=h:9817"], "critical"),
        (["alertname=SomethingElse"], "exporter"),
        (["alertname=Watchdog", "severity=none"], "watchdog"),
        (["alertname=KatoContainersUnknown", "severity=none", "instance=h:9817"], "null"),
    ],
)
def test_amtool_routes(labels, receiver):
    run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER / 'alertmanager.yml'}",
        f"--verify.receivers={receiver}",
        *labels,
    )


def test_critical_and_warning_receivers_reach_slack_email_and_the_exporter():
    config = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert {"slack_configs", "email_configs", "webhook_configs"} <= receivers["critical"].keys()
    assert {"slack_configs", "webhook_configs"} == receivers["warning"].keys() - {"name"}
    for receiver in receivers.values():
        for kind in ("slack_configs", "email_configs", "webhook_configs"):
            assert all(c["send_resolved"] for c in receiver.get(kind, []))
    assert config["route"]["group_by"] == ["alertname", "instance"]
    assert "slack_api_url" not in config["global"] and "smtp_auth_password" not in config["global"]


def test_rendered_configs_stay_valid(tmp_path):
    settings = Settings(
        state=tmp_path,
        exporter_port=19817,
        prometheus_port=19090,
        alertmanager_port=19093,
        slack_api_url_file="/run/secrets/slack",
        smtp_password_file="/run/secrets/smtp",
        smtp_smarthost="mail:25",
        email_to="oncall@example.org",
        scrape_interval="1s",
    )
    prometheus, alertmanager = render(settings)
    run("promtool", "check", "config", str(prometheus))
    run("amtool", "check-config", str(alertmanager))
    am = yaml.safe_load(alertmanager.read_text())
    assert am["global"]["slack_api_url_file"] == "/run/secrets/slack"
    assert am["global"]["smtp_auth_password_file"] == "/run/secrets/smtp"
    hooks = [h["url"] for r in am["receivers"] for h in r.get("webhook_configs", [])]
    assert set(hooks) == {"http://localhost:19817/api/v1/alertmanager"}
    token = settings.state / "secrets" / "webhook_token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32
    tokens = {
        h["http_config"]["authorization"]["credentials_file"]
        for r in am["receivers"]
        for h in r.get("webhook_configs", [])
    }
    assert tokens == {str(token)}
    before = token.read_text()
    render(settings)
    assert token.read_text() == before  # kept across restarts
    prom = yaml.safe_load(prometheus.read_text())
    (exporter_job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "kato-exporter"]
    assert exporter_job["static_configs"] == [
        {"targets": ["localhost:19817"], "labels": {"host": settings.host_label}}
    ]
    assert exporter_job["file_sd_configs"][0]["files"] == [str(settings.targets / "*.yml")]
    assert prom["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["localhost:19093"]}]}]
    assert "redis" not in {j["job_name"] for j in prom["scrape_configs"]}  # no KATO Redis, no job
    assert "blackbox" not in {j["job_name"] for j in prom["scrape_configs"]}  # no KATO, nothing to probe
    assert list((prometheus.parent / "probes").glob("*.yml")) == []  # not compose's names either
    assert blackbox_exporter_command(settings) == {}


def test_kato_redis_is_watched_by_redis_exporter_with_its_password_from_a_file(tmp_path):
    password = tmp_path / "redis_password"
    password.write_text("s3cret\n")
    url = "redis://kato-redis:6379/0"
    settings = Settings(
        state=tmp_path / "state",
        exporter_args=[f"--kato.redis-url={url}", f"--kato.redis-password-file={password}"],
        redis_exporter_port=19121,
    )
    prometheus, _ = render(settings)
    run("promtool", "check", "config", str(prometheus))
    (job,) = [j for j in yaml.safe_load(prometheus.read_text())["scrape_configs"] if j["job_name"] == "redis"]
    assert job["static_configs"] == [
        {"targets": ["localhost:19121"], "labels": {"host": settings.host_label}}
    ]
    [(name, (port, command))] = redis_exporter_command(settings).items()
    assert (name, port) == ("redis-exporter", 19121) and f"-redis.addr={url}" in command
    assert not any("s3cret" in arg for arg in command)  # never a flag
    [mapping] = [arg.split("=", 1)[1] for arg in command if arg.startswith("-redis.password-file=")]
    assert json.loads(Path(mapping).read_text()) == {url: "s3cret"}
    assert Path(mapping).stat().st_mode & 0o777 == 0o600
    # KATO_REDIS_URL alone: the exporter is given it too
    from_env = Settings(state=tmp_path / "env", redis_url=url)
    assert from_env.exporter_args == [f"--kato.redis-url={url}"]


def test_kato_is_probed_by_blackbox_exporter_with_its_databases_on_its_host(tmp_path):
    settings = Settings(
        state=tmp_path / "state",
        exporter_args=["--kato.url=http://kato-host:8000/"],
        qdrant_url="off",
        blackbox_exporter_port=19115,
    )
    prometheus, _ = render(settings)
    run("promtool", "check", "config", str(prometheus))
    (job,) = [
        j for j in yaml.safe_load(prometheus.read_text())["scrape_configs"] if j["job_name"] == "blackbox"
    ]
    assert job["relabel_configs"][-1] == {"target_label": "__address__", "replacement": "localhost:19115"}
    probes = yaml.safe_load((prometheus.parent / "probes" / "kato.yml").read_text())
    assert [(p["targets"], p["labels"]["module"], p["labels"]["service"]) for p in probes] == [
        (["http://kato-host:8000/health"], "kato_health", "kato"),
        (["http://kato-host:8123/ping"], "clickhouse_ping", "clickhouse"),  # on KATO's host; Qdrant off
    ]
    assert {p["labels"]["host"] for p in probes} == {settings.host_label}
    [(name, (port, command))] = blackbox_exporter_command(settings).items()
    assert (name, port) == ("blackbox-exporter", 19115)
    assert f"--config.file={ROOT / 'blackbox' / 'blackbox.yml'}" in command
    run(
        "prometheus-blackbox-exporter",
        f"--config.file={ROOT / 'blackbox' / 'blackbox.yml'}",
        "--config.check",
    )
    # KATO_URL alone: the exporter is given it too
    assert Settings(state=tmp_path / "env", kato_url="http://kato:8000").exporter_args == [
        "--kato.url=http://kato:8000"
    ]
