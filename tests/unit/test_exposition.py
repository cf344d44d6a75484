"""The exposition assembled from cached pieces is what prometheus_client makes of the whole,
sample for sample, in text and OpenMetrics, and promtool accepts it."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from kato_exporter.hub import Hub
from kato_exporter.model import (
    Container,
    ContainersSample,
    Filesystem,
    HostSample,
    SessionsSample,
    SourceHealth,
)
from kato_exporter.outputs.exposition import Exposition
from kato_exporter.outputs.families import default_builders, exporter_families
from tests.exposition import Exposition as Parsed
from tests.unit.test_web import USAGE, meta

ACCEPT = {
    "text": ("text/plain;version=0.0.4", generate_latest, parse_text),
    "openmetrics": ("application/openmetrics-text;version=1.0.0", generate_openmetrics, parse_openmetrics),
}
HOST = HostSample(
    cpu_seconds={(cpu, mode): 10.0 + n for cpu in "01" for n, mode in enumerate(("user", "idle", "iowait"))},
    load1=0.5,
    load5=0.25,
    load15=0.125,
    memory_total_bytes=2**34,
    memory_available_bytes=2**33,
    swap_total_bytes=0,
    swap_used_bytes=0,
    boot_time_seconds=1.7e9,
    filesystems=(Filesystem("/", "ext4", 10**12, 10**11, 8 * 10**11),),
    network={"eth0": (1, 2)},
)


def running(name: str, **usage: float) -> Container:
    return Container(meta(name, "running", "healthy"), dataclasses.replace(USAGE, **usage))


def histories() -> list[ContainersSample]:
    """Container sets as they change over time: usage changes, stops, removals, new ones."""
    a, b, c = running("a"), running("b", cpu_limit_cores=0.5), Container(meta("c", "exited"), None)
    return [
        ContainersSample((a, b, c), "cgroup"),
        ContainersSample((a, running("b", cpu_seconds=99.25), c), "cgroup"),  # one changed
        ContainersSample((a, Container(meta("b", "exited"), None)), "cgroup"),  # stopped, one removed
        ContainersSample((running("aa", pids=7), a, Container(meta("b", "removing"), None)), "api"),
        ContainersSample((), "cgroup"),
        ContainersSample((a,), "cgroup"),
    ]


class Whole:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def samples(text: str, parse) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return [
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in parse(text)
        for s in family.samples
        # the exporter's own process, and its garbage collections: change between reads
        if not s.name.startswith(("process_", "kato_exporter_gc_pause_seconds"))
    ]


@pytest.mark.parametrize("kind", ACCEPT)
async def test_assembled_bytes_equal_prometheus_clients_own(kind):
    accept, encode, parse = ACCEPT[kind]
    hub = Hub()
    builders = default_builders(info_labels=("tier",))
    exposition = Exposition(hub, builders)
    fmt = exposition.negotiate(accept, "")
    await hub.update("host", HOST, SourceHealth(up=True))
    await hub.update("kato_sessions", SessionsSample("redis", 3, {"created": 5}, 2), SourceHealth(up=True))
    for sample in histories():
        snapshot = await hub.update("containers", sample, SourceHealth(up=True, last_success_seconds=1.0))
        ours = (await exposition.get(fmt)).decode()
        families = [
            *exporter_families(snapshot),
            exposition.scrape_times.family(),
            exposition.gc_pauses.family(),
        ]
        for source, value in sorted(snapshot.values.items()):
            families += builders[source](value)
        theirs = encode(Whole(families)).decode()
        assert samples(ours, parse) == samples(theirs, parse)
        # the containers' block, assembled from rows kept across snapshots, byte for byte
        block = exposition._block("containers", sample, fmt[0])
        assert (
            block.decode() + ("# EOF\n" if kind == "openmetrics" else "")
            == encode(Whole(builders["containers"](sample))).decode()
        )
    exposition.close()


async def test_promtool_accepts_the_exposition():
    """promtool (2.42) lints the text format; OpenMetrics is checked by the strict parser above."""
    hub = Hub()
    exposition = Exposition(hub, default_builders())
    for accept in ("", "text/plain;version=1.0.0"):
        fmt = exposition.negotiate(accept, "")
        await hub.update("host", HOST, SourceHealth(up=True))
        for sample in histories()[:4]:
            await hub.update("containers", sample, SourceHealth(up=True, last_success_seconds=1.0))
            body = await exposition.get(fmt)
            check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
            assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    exposition.close()


def test_series_that_would_mislead_are_left_out_or_said_for_what_they_are():
    """Per family, what the rules and dashboards rely on."""
    sample = ContainersSample(
        (
            Container(dataclasses.replace(meta("job", "exited"), exit_code=0), None),
            Container(
                dataclasses.replace(meta("crashed", "exited"), exit_code=3, restart_policy="always"), None
            ),
            Container(dataclasses.replace(meta("hostnet", "running"), network_mode="host"), USAGE),
            Container(
                dataclasses.replace(meta("sidecar", "running"), network_mode="container:abc"),
                dataclasses.replace(USAGE, pids=None),
            ),
            Container(dataclasses.replace(meta("own", "running"), network_mode="bridge"), USAGE),
        ),
        "cgroup",
    )
    builders = default_builders()
    text = generate_latest(Whole([*builders["containers"](sample), *builders["host"](HOST)])).decode()
    e = Parsed(text)
    assert e.value("kato_container_exit_code", name="job") == 0
    assert e.value("kato_container_exit_code", name="crashed") == 3
    assert e.value("kato_container_exit_code", name="own") is None
    info = {labels["name"]: labels for labels, _ in e.all("kato_container_info")}
    assert info["crashed"]["restart_policy"] == "always" and info["job"]["restart_policy"] == "no"
    receive = "kato_container_network_receive_bytes_total"
    assert e.value(receive, name="own") == 1
    assert e.value(receive, name="hostnet") is None and e.value(receive, name="sidecar") is None
    assert e.value("kato_container_pids", name="own") == 5
    assert e.value("kato_container_pids", name="sidecar") is None
    assert e.value("kato_host_cpu_seconds_total", cpu="1", mode="iowait") == 12
    assert e.value("kato_host_filesystem_avail_bytes", mountpoint="/") == 8 * 10**11
    assert e.value("kato_host_filesystem_used_bytes", mountpoint="/") == 10**11
