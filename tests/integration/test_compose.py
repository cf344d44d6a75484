"""docker-compose.yml, checked by Debian's docker-compose and then run for real with the images
scripts/build-image.sh builds here (Grafana excepted: no image of it can be built here)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, RUN_ID, docker, free_port, wait_for

pytestmark = pytest.mark.integration
LOCAL_IMAGES = {
    "KATO_EXPORTER_IMAGE": "kato-exporter:local",
    "PROMETHEUS_IMAGE": "kato-local/prometheus:debian",
    "ALERTMANAGER_IMAGE": "kato-local/alertmanager:debian",
    "DOCKER_API_PROXY_IMAGE": "kato-local/haproxy:debian",
}
PUBLISHED = {"grafana", "prometheus", "alertmanager", "alertmanager-2"}


def compose(env: dict[str, str], *args: str, files: tuple[str, ...] = ("docker-compose.yml",)) -> str:
    options = [arg for f in files for arg in ("-f", f)]
    done = subprocess.run(
        ["docker-compose", *options, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise AssertionError(f"docker-compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The variables of a run here: secrets made by scripts/compose-secrets.sh, free ports."""
    secrets = tmp_path_factory.mktemp("compose") / "secrets"
    subprocess.run(
        ["bash", "scripts/compose-secrets.sh"],
        cwd=ROOT,
        env={**os.environ, "SECRETS_DIR": str(secrets)},
        check=True,
    )
    socket_group = str(os.stat("/var/run/docker.sock").st_gid)
    return {"SECRETS_DIR": str(secrets), "DOCKER_GID": socket_group, "PROMETHEUS_PORT": str(free_port()),
            "ALERTMANAGER_PORT": str(free_port()), "ALERTMANAGER_2_PORT": str(free_port()),
            "GRAFANA_PORT": str(free_port())}  # fmt: skip


def test_the_files_are_valid_and_least_privileged(env: dict[str, str]) -> None:
    compose(env, "config", "-q", files=("docker-compose.yml", "docker-compose.kato.yml"))
    services: dict[str, Any] = yaml.safe_load(compose(env, "config"))["services"]
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)  # pinned
        assert service.get("restart") in ("unless-stopped", "no"), name
        assert service.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in service["security_opt"], (
            name
        )
        published = {p["published"] if isinstance(p, dict) else p for p in service.get("ports", [])}
        assert not published or name in PUBLISHED, name
        # the exporter's image has one; redis_exporter's has no shell to run one (KatoRedisDown
        # watches it instead)
        assert "healthcheck" in service or name in ("kato-exporter", "grafana-init", "redis-exporter"), name
    exporter = services["kato-exporter"]
    assert exporter["user"] == "10001:10001" and exporter["read_only"] is True
    assert exporter["environment"]["KATO_EXPORTER_DOCKER_HOST"] == "tcp://docker-api-proxy:2375"
    mounts = dict(mount(v) for v in exporter["volumes"])
    assert {"/host/proc", "/host/sys", "/host/root"} <= mounts.keys()
    assert all(read_only for _, read_only in mounts.values()), mounts
    assert not any("docker.sock" in source for source, _ in mounts.values())
    # the exporter starts whatever grafana-init did (its Live pusher waits for a token that works)
    assert exporter["depends_on"]["grafana-init"]["condition"] == "service_started"
    kato = yaml.safe_load(compose(env, "config", files=("docker-compose.yml", "docker-compose.kato.yml")))
    joined = kato["services"]["kato-exporter"]
    assert set(joined["networks"]) == {"default", "kato"} and kato["networks"]["kato"]["external"]
    assert joined["environment"]["KATO_EXPORTER_KATO_URL"] == "http://kato:8000"
    assert joined["environment"]["KATO_EXPORTER_KATO_REDIS_URL"] == "redis://kato-redis:6379/0"
    redis = kato["services"]["redis-exporter"]  # on KATO's Redis, with the kato-redis profile
    assert redis["profiles"] == ["kato-redis"] and set(redis["networks"]) == {"default", "kato"}
    assert redis["environment"]["REDIS_ADDR"] == "redis://kato-redis:6379/0" and redis["read_only"] is True
    assert redis["environment"]["REDIS_PASSWORD_FILE"] == "/run/secrets/kato_redis_password_map"
    blackbox = kato["services"]["blackbox-exporter"]  # probes KATO's services by their names
    assert blackbox["image"] == "prom/blackbox-exporter:v0.23.0" and blackbox["read_only"] is True
    assert blackbox["cap_drop"] == ["ALL"] and "healthcheck" in blackbox
    assert set(blackbox["networks"]) == {"default", "kato"}
    probes = dict(mount(v) for v in kato["services"]["prometheus"]["volumes"])["/etc/prometheus/probes"]
    assert probes == (str(ROOT / "blackbox" / "probes"), True)
    assert "blackbox-exporter" not in services  # without KATO, nothing to probe


def mount(volume: str | dict[str, Any]) -> tuple[str, tuple[str, bool]]:
    """(target, (source, read-only)) of a volume as `docker-compose config` prints it (short
    syntax in Debian's 1.29, long in Compose v2)."""
    if isinstance(volume, dict):
        return volume["target"], (str(volume.get("source")), bool(volume.get("read_only")))
    source, target, *options = volume.split(":")
    return target, (source, "ro" in ",".join(options).split(","))


@pytest.fixture(scope="module")
def stack(env: dict[str, str], images: None) -> Iterator[dict[str, str]]:
    """Everything but Grafana and its token (no Grafana image here), with the local images and
    the "ha" profile's second Alertmanager."""
    run = {
        **env,
        **LOCAL_IMAGES,
        "GRAFANA_LIVE_URL": "",
        "GRAFANA_LIVE_TOKEN_FILE": "",
        "COMPOSE_PROJECT_NAME": f"katotest{RUN_ID}",
        "COMPOSE_PROFILES": "ha",
    }
    services = ("docker-api-proxy", "prometheus", "alertmanager", "alertmanager-2", "kato-exporter")
    try:
        compose(run, "up", "-d", "--no-deps", "--no-build", *services)
        wait_for(lambda: all(health(run, s) == "healthy" for s in services), 90, what=f"{services} healthy")
        yield run
    finally:
        print(compose(run, "logs", "--tail", "30"))
        compose(run, "down", "-v", "--remove-orphans")


def health(env: dict[str, str], service: str) -> str:
    container = f"{env['COMPOSE_PROJECT_NAME']}_{service}_1"
    return docker("inspect", "--format", "{{.State.Health.Status}}", container, check=False)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def query(env: dict[str, str], promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}/api/v1/query?query={urllib.request.quote(promql)}"
    return get(url)["data"]["result"]


def test_prometheus_scrapes_the_exporter_which_reads_docker_through_the_proxy(stack: dict[str, str]) -> None:
    targets = get(f"http://127.0.0.1:{stack['PROMETHEUS_PORT']}/api/v1/targets")["data"]["activeTargets"]
    by_job = {t["labels"]["job"]: t for t in targets}
    assert by_job.keys() == {"kato-exporter", "prometheus", "alertmanager"}
    assert by_job["kato-exporter"]["scrapeUrl"] == "http://kato-exporter:9817/metrics"
    wait_for(
        lambda: all(
            t["health"] == "up"
            for t in get(f"http://127.0.0.1:{stack['PROMETHEUS_PORT']}/api/v1/targets")["data"][
                "activeTargets"
            ]
        ),
        30,
    )
    # the stack's own containers, read from cgroup files, as Prometheus stored them
    running = {r["metric"]["name"] for r in query(stack, 'kato_container_state{state="running"} == 1')}
    project = stack["COMPOSE_PROJECT_NAME"]
    assert {f"{project}_prometheus_1", f"{project}_kato-exporter_1"} <= running, running
    wait_for(lambda: query(stack, f'kato_container_pids{{name="{project}_prometheus_1"}}'), 20)
    exporter = json.loads(docker("inspect", f"{project}_kato-exporter_1"))[0]
    assert not [m for m in exporter["Mounts"] if "docker.sock" in m["Source"]]
    assert exporter["HostConfig"]["ReadonlyRootfs"] and exporter["HostConfig"]["CapDrop"] == ["ALL"]


def test_an_alert_reaches_the_exporters_webhook(stack: dict[str, str]) -> None:
    alert = [{"labels": {"alertname": "ComposeCheck", "severity": "warning", "instance": "compose"},
              "annotations": {"summary": "from the compose test"}}]  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack['ALERTMANAGER_PORT']}/api/v2/alerts",
        data=json.dumps(alert).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()
    # Alertmanager → the exporter's webhook (with the token of the compose secret) → Prometheus
    notified = 'kato_exporter_alertmanager_notifications_total{status="firing"} > 0'
    wait_for(lambda: query(stack, notified), 60, what="the webhook notified, as Prometheus scraped it")
    # Prometheus sends to both Alertmanagers (dns_sd of their alias), which gossip as one cluster
    assert query(stack, "prometheus_notifications_alertmanagers_discovered")[0]["value"][1] == "2"
    for port in (stack["ALERTMANAGER_PORT"], stack["ALERTMANAGER_2_PORT"]):
        assert len(get(f"http://127.0.0.1:{port}/api/v2/status")["cluster"]["peers"]) == 2
