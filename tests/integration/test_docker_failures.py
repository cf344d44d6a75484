"""The failure policy against a real dockerd that is stopped, restarted and refused.

The dockerd here is the test's own (its own socket, data root, exec root, pidfile and bridge, no
iptables): stopping or breaking it touches no other daemon on the machine. (``--bridge=none``
would not do: dockerd then deletes docker0, the other daemon's bridge.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.stack import Program, start, stop
from tests.conftest import IMAGE, Exporter, wait_for
from tests.integration.test_alerting import prometheus_value, slack_messages, webhook_count
from tests.standins import Inbox, alerting_settings, slack_standin, smtp_standin

pytestmark = pytest.mark.integration


BRIDGE = "kato-test-br"


class PrivateDockerd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"unix://{root / 'docker.sock'}"
        self.log = root / "dockerd.log"
        self.command = [
            "dockerd",
            f"--host={self.url}",
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={root / 'docker.pid'}",
            f"--bridge={BRIDGE}",
            "--iptables=false",
            "--ip-masq=false",
            "--storage-driver=vfs",
            "--shutdown-timeout=1",  # test containers run `sleep` as PID 1, which ignores SIGTERM
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def docker(self, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(["docker", "-H", self.url, *args], input=stdin, capture_output=True, check=True)
        return done.stdout.decode().strip()

    def answers(self) -> bool:
        return subprocess.run(["docker", "-H", self.url, "info"], capture_output=True).returncode == 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_for(self.answers, 30, what=f"the test's dockerd ({self.log})")

    def stop(self) -> None:
        """SIGTERM to the daemon this test started, by its PID, never by name."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def own_dockerd(dockerd: None) -> Iterator[PrivateDockerd]:
    root = Path(tempfile.mkdtemp(prefix="kd-", dir="/tmp"))  # short: containerd's socket lives under it
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    machines_bridge = Path("/sys/class/net/docker0").exists()
    daemon = PrivateDockerd(root)
    daemon.start()
    image = subprocess.run(["docker", "save", IMAGE], capture_output=True, check=True).stdout
    daemon.docker("load", stdin=image)
    try:
        yield daemon
    finally:
        ids = daemon.docker("ps", "-aq").split() if daemon.answers() else []
        if ids:
            daemon.docker("rm", "-f", *ids)
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", BRIDGE], check=True)
    assert Path("/sys/class/net/docker0").exists() == machines_bridge, "the machine's dockerd was touched"


def containers_up(exporter: Exporter) -> float | None:
    return exporter.scrape().value("kato_exporter_source_up", source="containers")


def test_dockerd_stopped_and_started(start_exporter, own_dockerd):
    name = "kato-test-restart-always"
    own_dockerd.docker(
        "run", "-d", "--name", name, "--network", "none", "--restart", "always", IMAGE, "sleep", "3600"
    )
    exporter = start_exporter(f"--docker.host={own_dockerd.url}")
    wait_for(
        lambda: exporter.scrape().value("kato_container_cpu_usage_seconds_total", name=name) is not None,
        5,
        what="the container's usage",
    )
    try:
        asked = time.monotonic()
        own_dockerd.stop()
        stopped = time.monotonic()
        wait_for(lambda: containers_up(exporter) == 0, 2, what="containers source down")
        print(
            f"dockerd took {stopped - asked:.2f}s to stop; "
            f"source_up 0 {time.monotonic() - stopped:.2f}s after it was gone"
        )
        e = exporter.scrape()
        assert e.value("kato_exporter_source_up", source="host") == 1
        assert e.value("kato_host_cpus") is not None
        assert list(e.all("kato_container_cpu_usage_seconds_total")) == []
        assert list(e.all("kato_container_info")) == []
    finally:
        own_dockerd.start()
    started = time.monotonic()
    wait_for(lambda: containers_up(exporter) == 1, 5, what="containers source back up")
    wait_for(
        lambda: exporter.scrape().value("kato_container_cpu_usage_seconds_total", name=name) is not None,
        10,
        what="the restarted container's usage",
    )
    print(f"recovered {time.monotonic() - started:.2f}s after dockerd answered again")
    assert exporter.proc.poll() is None
    own_dockerd.docker("rm", "-f", name)


def test_permission_denied_on_the_socket(start_exporter, own_dockerd):
    # Root bypasses file modes; without CAP_DAC_OVERRIDE it is held to them like any user.
    no_override = [
        "setpriv",
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
    ]
    name = "kato-test-refused"
    own_dockerd.docker("run", "-d", "--name", name, "--network", "none", IMAGE, "sleep", "3600")
    socket = own_dockerd.url.removeprefix("unix://")
    mode = os.stat(socket).st_mode & 0o777
    os.chmod(socket, 0)
    try:
        exporter = start_exporter(f"--docker.host={own_dockerd.url}", prefix=no_override)
        wait_for(lambda: containers_up(exporter) == 0, 2, what="containers source down")
        e = exporter.scrape()
        assert e.value("kato_exporter_source_up", source="host") == 1
        assert e.value("kato_exporter_collect_errors_total", source="containers") >= 1
        assert "Permission denied" in exporter.log.read_text()
    finally:
        os.chmod(socket, mode)
    wait_for(
        lambda: exporter.scrape().value("kato_container_info", name=name) == 1,
        5,
        what="recovery once the socket is readable",
    )
    own_dockerd.docker("rm", "-f", name)


def test_firing_container_alerts_are_held_while_docker_is_away(tmp_path, own_dockerd):
    """Alert firing → Docker away → no "resolved" goes out (Alertmanager mutes it under
    KatoContainersUnknown) → Docker back → the same alert fires again, not notified anew."""
    name = "kato-test-crashed"
    with slack_standin() as (slack_url, slack), smtp_standin() as (smtp_host, _):
        settings = alerting_settings(
            tmp_path, slack_url, smtp_host, [f"--docker.host={own_dockerd.url}", "--no-collector.host"]
        )
        programs = start(settings)
        try:
            held_while_docker_is_away(programs, own_dockerd, slack, name)
        finally:
            stop(programs)
            own_dockerd.docker("rm", "-f", name)


def held_while_docker_is_away(
    programs: list[Program], own_dockerd: PrivateDockerd, slack: Inbox, name: str
) -> None:
    exporter, alertmanager, prometheus = programs
    alert = "KatoContainerNotRunning"
    firing = f'ALERTS{{alertname="{alert}",name="{name}",alertstate="firing"}}'
    own_dockerd.docker("run", "-d", "--name", name, "--network", "none", IMAGE, "sh", "-c", "exit 3")
    wait_for(lambda: slack_messages(slack, alert, "firing"), 90, interval=0.2, what="the alert on Slack")
    own_dockerd.stop()
    try:
        wait_for(
            lambda: not prometheus_value(prometheus, firing), 15, interval=0.2, what="resolved in Prometheus"
        )
        wait_for(  # the inhibitor; a resolved alert is not listed, muted or not
            lambda: [
                a for a in am_alerts(alertmanager) if a["labels"]["alertname"] == "KatoContainersUnknown"
            ],
            10,
            what="KatoContainersUnknown in Alertmanager",
        )
        time.sleep(8)  # Alertmanager flushes the group every second here
        assert slack_messages(slack, alert, "resolved") == []
        assert webhook_count(exporter, "resolved") == 0
    finally:
        own_dockerd.start()
    # still exited: pending for its minute, then firing, while the inhibitor holds on
    wait_for(lambda: prometheus_value(prometheus, firing), 90, interval=0.5, what="firing again")
    time.sleep(5)
    assert slack_messages(slack, alert, "resolved") == []
    assert len(slack_messages(slack, alert, "firing")) == 1
    assert webhook_count(exporter, "resolved") == 0


def am_alerts(alertmanager: Program) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{alertmanager.url}/api/v2/alerts", timeout=5) as response:
        return json.load(response)  # type: ignore[no-any-return]
