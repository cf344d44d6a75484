"""Settings: precedence, and errors that name the field and where it came from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kato_exporter.cli import main
from kato_exporter.config import LEGACY_ENV, ConfigError, leaves, load


def write(tmp_path, text: str) -> str:
    path = tmp_path / "kato.yml"
    path.write_text(text)
    return str(path)


def test_defaults_need_no_config():
    config = load({}, env={})
    assert config.web.listen_address == ":9817"
    assert config.collector.containers.interval == 1.0
    assert config.collector.containers.enabled is None  # auto: on when Docker is found
    assert config.collector.host.enabled is True


def test_flags_beat_env_beat_file(tmp_path):
    path = write(
        tmp_path,
        "collector:\n  containers:\n    interval: 3s\n  host:\n    interval: 4s\n"
        "web:\n  telemetry_path: /m\n",
    )
    config = load(
        {"collector.containers.interval": "500ms"},
        env={
            "KATO_EXPORTER_COLLECTOR_CONTAINERS_INTERVAL": "2s",
            "KATO_EXPORTER_COLLECTOR_HOST_INTERVAL": "2m",
        },
        config_file=path,
    )
    assert config.collector.containers.interval == 0.5
    assert config.collector.host.interval == 120.0
    assert config.web.telemetry_path == "/m"


def test_env_names_follow_flags():
    names = {leaf.flag: leaf.env for leaf in leaves()}
    assert names["--web.listen-address"] == "KATO_EXPORTER_WEB_LISTEN_ADDRESS"
    assert names["--collector.containers"] == "KATO_EXPORTER_COLLECTOR_CONTAINERS"
    assert names["--collector.containers.label-selector"] == (
        "KATO_EXPORTER_COLLECTOR_CONTAINERS_LABEL_SELECTOR"
    )


def test_lists_from_yaml_and_from_strings(tmp_path):
    path = write(tmp_path, "collector:\n  containers:\n    info_labels: [a.b, c]\n")
    assert load({}, env={}, config_file=path).collector.containers.info_labels == ("a.b", "c")
    config = load({"collector.containers.label_selector": "x=1, y"}, env={})
    assert config.collector.containers.label_selector == ("x=1", "y")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "collector:\n  containers:\n    intervl: 1s\n",
            "kato.yml: collector.containers.intervl: unknown key",
        ),
        (
            "collector:\n  containers:\n    interval: soon\n",
            "kato.yml: collector.containers.interval: expected a duration",
        ),
        (
            "collector:\n  containers:\n    interval: -1\n",
            "kato.yml: collector.containers.interval: must be positive",
        ),
        (
            "collector:\n  containers:\n    include: '('\n",
            "kato.yml: collector.containers.include: invalid regular expression",
        ),
        ("collector:\n  host: yes\n", "kato.yml: collector.host: expected a mapping"),
        ("web:\n  listen_address: 9817\n", "kato.yml: web.listen_address: expected a string"),
        ("log:\n  level: loud\n", "kato.yml: log.level: expected one of debug, info"),
        ("web: [\n", "kato.yml: not valid YAML"),
    ],
)
def test_file_errors_name_file_and_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load({}, env={}, config_file=write(tmp_path, text))


def test_env_and_flag_errors_name_them():
    with pytest.raises(ConfigError, match="KATO_EXPORTER_COLLECTOR_HOST: expected true or false"):
        load({}, env={"KATO_EXPORTER_COLLECTOR_HOST": "maybe"})
    with pytest.raises(ConfigError, match=re.escape("--web.listen-address: expected [host]:port")):
        load({"web.listen_address": "nowhere"}, env={})
    with pytest.raises(
        ConfigError, match=re.escape("--collector.containers.api-concurrency: must be at least 1")
    ):
        load({"collector.containers.api_concurrency": "0"}, env={})


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        load({}, env={}, config_file=str(tmp_path / "absent.yml"))


def test_cli_exits_2_with_the_field_named(tmp_path, capsys):
    path = write(tmp_path, "collector:\n  containers:\n    stats_mode: fast\n")
    assert main(["--config.file", path]) == 2
    err = capsys.readouterr().err
    assert "collector.containers.stats_mode: expected one of auto, cgroup, api, got 'fast'" in err


def test_check_config_validates_and_exits(tmp_path, capsys):
    path = write(tmp_path, "collector:\n  containers:\n    interval: 2s\n")
    assert main(["--config.file", path, "--check-config", "--no-collector.host"]) == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out
    assert "collector.containers.interval = 2.0" in out
    assert "collector.host.enabled = False" in out


def test_the_example_file_is_valid():
    example = Path(__file__).resolve().parents[2] / "exporter" / "kato-exporter.example.yml"
    config = load({}, env={}, config_file=str(example))
    assert config.collector.containers.include.pattern == "kato.*"
    assert config.collector.containers.info_labels == ("com.docker.compose.version",)


def test_the_configuration_doc_documents_every_setting():
    readme = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for leaf in leaves():
        flag = f"--[no-]{leaf.flag[2:]}" if leaf.is_bool else leaf.flag
        legacy = "".join(f", `{name}`" for name, key in LEGACY_ENV.items() if key == leaf.key)
        assert f"| `{flag}` | `{leaf.env}`{legacy} | `{leaf.key}` |" in readme, leaf.key


def test_the_old_backends_environment_is_honoured_below_ours():
    legacy = {"WEBSOCKET_ENABLED": "false", "WEBSOCKET_SELECTIVE_SUBSCRIPTIONS": "no"}
    config = load({}, env=legacy)
    assert config.bridge.enabled is False and config.bridge.selective_subscriptions is False
    assert load({}, env={**legacy, "KATO_EXPORTER_BRIDGE": "true"}).bridge.enabled is True
    assert load({"bridge.enabled": "true"}, env=legacy).bridge.enabled is True
    with pytest.raises(ConfigError, match="WEBSOCKET_SESSION_EVENTS: expected true or false"):
        load({}, env={"WEBSOCKET_SESSION_EVENTS": "sometimes"})
