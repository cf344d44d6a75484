"""Running natively: the systemd unit as systemd's own analyzer sees it, its ExecStart= line run with
its environment and credentials (without capabilities, as the unit runs it), and Debian's
prometheus and prometheus-alertmanager configs rendered into a temporary root and loaded by the
real programs."""

from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from scripts.debian_configs import install
from scripts.stack import Settings
from tests.conftest import ROOT, RUN_LABEL, Daemon, answers_http, free_port, wait_for
from tests.exposition import scrape

pytestmark = pytest.mark.integration

UNIT = ROOT / "packaging" / "systemd" / "kato-exporter.service"
ENV_EXAMPLE = ROOT / "packaging" / "systemd" / "kato-exporter.env"
INSTALLED = "/opt/kato-exporter/bin"  # where the unit expects the exporter's virtualenv
VENV_BIN = str(Path(sys.executable).parent)


def unit_settings(path: Path) -> dict[str, list[str]]:
    """The [Service] section's settings, each key with its values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def environment_file(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines() if line and line[0] != "#")
    return {key: value for key, _, value in pairs}


def test_systemd_analyze_verifies_the_unit_and_rates_it_ok(tmp_path):
    unit = tmp_path / "kato-exporter.service"  # the exporter where this checkout installed it
    unit.write_text(UNIT.read_text().replace(INSTALLED, VENV_BIN))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
    )
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert level, done.stdout + done.stderr
    assert level[2] in ("PERFECT", "SAFE", "OK"), level[0]
    settings = unit_settings(UNIT)
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("SupplementaryGroups", "docker"),
    ):
        assert settings[key] == [value], key
    assert settings["ProtectHome"] in (["yes"], ["read-only"])
    assert not any(flag in " ".join(settings["ExecStart"]) for flag in ("password", "token"))


def test_the_units_command_runs_with_its_environment_credentials_and_no_capabilities(tmp_path, run_container):
    container = run_container("sleep 600", "--label", RUN_LABEL)
    settings = unit_settings(UNIT)
    credentials = tmp_path / "credentials"  # systemd's $CREDENTIALS_DIRECTORY, %d in the unit
    credentials.mkdir(mode=0o700)
    token = secrets.token_urlsafe(16)
    for entry in settings["LoadCredential"]:
        name, _, source = entry.partition(":")
        assert source.startswith("/etc/"), entry
        (credentials / name).write_text(token + "\n")

    def line(value: str) -> list[str]:
        return shlex.split(value.replace("%d", str(credentials)).replace(INSTALLED, VENV_BIN))

    port = free_port()
    env = environment_file(ENV_EXAMPLE)
    for assignment in settings["Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value.replace("%d", str(credentials))
    env["KATO_EXPORTER_WEB_LISTEN_ADDRESS"] = f"127.0.0.1:{port}"  # this test's own port
    env["KATO_EXPORTER_COLLECTOR_CONTAINERS_LABEL_SELECTOR"] = RUN_LABEL
    env["PATH"] = "/usr/bin:/bin"
    no_capabilities = ["setpriv", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all"]
    (start,) = settings["ExecStart"]
    (start_post,) = settings["ExecStartPost"]
    exporter = Daemon(
        f"exporter-unit-{port}",
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *no_capabilities, *line(start)],
        lambda: True,
        f"http://127.0.0.1:{port}",
    )
    try:
        post = subprocess.run(
            ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *no_capabilities, *line(start_post)],
            capture_output=True,
            text=True,
            timeout=40,
        )
        assert post.returncode == 0, post.stderr + exporter.log.read_text()
        assert "healthy" in post.stdout
        status = [Path(f"/proc/{child}/status").read_text() for child in child_pids(exporter.proc.pid)]
        assert status and all("CapEff:\t0000000000000000" in s and "NoNewPrivs:\t1" in s for s in status)
        wait_for(
            lambda: (
                scrape(exporter.url + "/metrics").value("kato_container_info", name=container) is not None
            ),
            15,
            what="the container, read without capabilities",
        )
        notification = {"status": "firing", "alerts": []}
        assert webhook(exporter.url, token, notification) == 204  # the credential is the token
        assert webhook(exporter.url, "not-it", notification) == 401
    finally:
        exporter.stop()


def child_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (env and setpriv exec in place: it is the exporter)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for child in children for p in child_pids(int(child)))]


def webhook(url: str, token: str, body: object) -> int:
    request = urllib.request.Request(
        url + "/api/v1/alertmanager",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_debian_configs_render_into_a_root_and_load_in_the_real_programs(tmp_path):
    root = tmp_path / "root"
    settings = Settings(host_label="kato-host")
    written = install(root, settings)
    etc = root / "etc" / "prometheus"
    token = root / "etc" / "kato-monitoring" / "webhook_token"
    assert {etc / "prometheus.yml", etc / "alertmanager.yml", etc / "rules" / "alerts.yml", token} <= set(
        written
    )
    assert token.stat().st_mode & 0o777 == 0o640
    first_token = token.read_text()
    (etc / "prometheus.yml").write_text("# the operator's own\n")
    install(root, settings)  # again: the token is kept, the operator's file once as .orig
    assert token.read_text() == first_token
    assert (etc / "prometheus.yml.orig").read_text() == "# the operator's own\n"
    install(root, settings)
    assert (etc / "prometheus.yml.orig").read_text() == "# the operator's own\n"

    alertmanager = yaml.safe_load((etc / "alertmanager.yml").read_text())
    hooks = [hook for r in alertmanager["receivers"] for hook in r.get("webhook_configs", [])]
    assert hooks and all(
        hook["http_config"]["authorization"]["credentials_file"] == "/etc/kato-monitoring/webhook_token"
        for hook in hooks
    )
    for check in (
        ["promtool", "check", "config", "prometheus.yml"],
        ["amtool", "check-config", "alertmanager.yml"],
    ):
        done = subprocess.run(check, cwd=etc, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    port = free_port()
    prometheus = Daemon(
        f"prometheus-debian-{port}",
        [
            "prometheus",
            f"--config.file={etc / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        answers_http(f"http://127.0.0.1:{port}/-/ready"),
        f"http://127.0.0.1:{port}",
    )
    try:
        rules = api(prometheus.url, "rules")["groups"]
        repository = [
            rule
            for f in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
            for group in yaml.safe_load(f.read_text())["groups"]
            for rule in group["rules"]
        ]
        assert sum(len(group["rules"]) for group in rules) == len(repository)

        def exporters() -> list[tuple[str, str]]:
            targets = api(prometheus.url, "targets")["activeTargets"]
            return [
                (t["labels"]["instance"], t["labels"]["host"])
                for t in targets
                if t["labels"]["job"] == "kato-exporter"
            ]

        assert wait_for(exporters, 15, 0.2, "the exporter's target") == [("localhost:9817", "kato-host")]
    finally:
        prometheus.stop()


def api(url: str, path: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/v1/{path}", timeout=5) as response:
        return json.load(response)["data"]
