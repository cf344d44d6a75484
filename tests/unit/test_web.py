"""The web app through a real aiohttp server: negotiation, readiness, landing page."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import bcrypt
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from kato_exporter.hub import Hub
from kato_exporter.model import (
    Container,
    ContainerMeta,
    ContainersSample,
    ContainerUsage,
    SourceHealth,
)
from kato_exporter.outputs.exposition import MAX_SCRAPERS, PROMETHEUS_ACCEPT, _Scraper
from kato_exporter.outputs.exposition import Exposition as Renderer
from kato_exporter.outputs.families import default_builders
from kato_exporter.outputs.web import make_app
from kato_exporter.sources.alertmanager import AlertInbox
from kato_exporter.sources.runner import run_source
from tests.exposition import Exposition

USAGE = ContainerUsage(
    cpu_seconds=12.5,
    memory_usage_bytes=100,
    memory_working_set_bytes=80,
    network_receive_bytes=1,
    network_transmit_bytes=2,
    block_read_bytes=3,
    block_write_bytes=4,
    pids=5,
    cpu_limit_cores=None,
    memory_limit_bytes=1024,
)


def meta(name: str, state: str, health: str | None = None) -> ContainerMeta:
    return ContainerMeta(
        id=name * 4,
        name=name,
        image="busybox",
        labels={"com.docker.compose.project": "kato", "tier": "api"},
        state=state,
        health=health,
        restarts=2,
        started_at=1700000000.0,
        pid=42 if state == "running" else 0,
    )


SAMPLE = ContainersSample(
    (Container(meta("kato", "running", "healthy"), USAGE), Container(meta("redis", "exited"), None)),
    "cgroup",
)


@pytest.fixture
async def client(aiohttp_client):
    async def make(sources=frozenset({"containers"}), info_labels=()):
        hub = Hub()
        app = make_app(hub, Renderer(hub, default_builders(info_labels)), sources)
        return hub, await aiohttp_client(app)

    return make


async def test_text_by_default(client):
    hub, c = await client()
    await hub.update("containers", SAMPLE, SourceHealth(up=True, last_success_seconds=1.0))
    response = await c.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Content-Encoding" not in response.headers
    e = Exposition(await response.text())
    assert e.value("kato_container_cpu_usage_seconds_total", name="kato") == 12.5
    assert e.value("kato_container_state", name="redis", state="exited") == 1
    assert e.value("kato_container_cpu_usage_seconds_total", name="redis") is None
    assert e.value("kato_container_restarts_total", name="redis") == 2
    assert e.value("kato_container_health_status", name="kato", status="healthy") == 1
    assert list(e.all("kato_container_health_status", name="redis")) == []
    assert e.value("kato_container_memory_limit_bytes", name="kato") == 1024
    assert e.value("kato_container_cpu_limit_cores", name="kato") is None
    assert e.value("kato_exporter_source_up", source="containers") == 1
    [(labels, _)] = e.all("kato_container_info", name="kato")
    assert labels["compose_project"] == "kato" and labels["id"] == "kato" * 4
    assert e.value("process_resident_memory_bytes") > 0
    assert "# TYPE kato_container_restarts_total counter" in e.text


async def test_openmetrics_on_accept(client):
    hub, c = await client()
    await hub.update("containers", SAMPLE, SourceHealth(up=True))
    response = await c.get(
        "/metrics",
        headers={
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            "Accept-Encoding": "identity",
        },
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    body = await response.text()
    families = {f.name: f for f in openmetrics_families(body)}  # strict: fails without "# EOF"
    assert families["kato_container"].type == "info"
    assert families["kato_container_restarts"].type == "counter"
    [sample] = [s for s in families["kato_container_restarts"].samples if s.labels["name"] == "kato"]
    assert (sample.name, sample.value) == ("kato_container_restarts_total", 2)


async def test_gzip_on_accept_encoding(client):
    hub, c = await client()
    await hub.update("containers", SAMPLE, SourceHealth(up=True))
    response = await c.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(await response.read()).decode()
    assert Exposition(text).value("kato_container_pids", name="kato") == 5


async def test_bytes_are_rendered_once_per_snapshot(client):
    hub, c = await client()
    await hub.update("containers", SAMPLE, SourceHealth(up=True))
    first = await (await c.get("/metrics")).read()
    assert await (await c.get("/metrics")).read() == first  # same snapshot, same bytes
    await hub.update("containers", ContainersSample((), "cgroup"), SourceHealth(up=True))
    assert await (await c.get("/metrics")).read() != first


async def test_info_labels(client):
    hub, c = await client(info_labels=("tier",))
    await hub.update("containers", SAMPLE, SourceHealth(up=True))
    e = Exposition(await (await c.get("/metrics")).text())
    [(labels, _)] = e.all("kato_container_info", name="kato")
    assert labels["label_tier"] == "api"


async def test_ready_after_every_source_reported(client):
    hub, c = await client(sources=frozenset({"containers", "host"}))
    assert (await c.get("/-/healthy")).status == 200
    response = await c.get("/-/ready")
    assert response.status == 503
    assert "containers, host" in await response.text()
    await hub.update("containers", None, SourceHealth(up=False, last_error="boom"))
    await hub.update("host", None, SourceHealth(up=True))
    assert (await c.get("/-/ready")).status == 200


async def test_landing_page_shows_sources(client):
    hub, c = await client(sources=frozenset({"containers"}))
    await hub.update("containers", None, SourceHealth(up=False, last_error="cannot reach <Docker>"))
    page = await (await c.get("/")).text()
    assert 'href="metrics"' in page
    assert "cannot reach &lt;Docker&gt;" in page


async def settle(until=lambda: False, seconds: float = 0.2) -> None:
    """Let background work run for ``seconds``, or less once ``until()`` holds."""
    for _ in range(int(seconds / 0.01)):
        if until():
            return
        await asyncio.sleep(0.01)


async def test_rendered_ahead_of_each_scrapers_next_scrape():
    now = [100.0]
    hub = Hub()
    renderer = Renderer(hub, default_builders(), ahead_window=60.0, lead=1.5, clock=lambda: now[0])
    runner = asyncio.create_task(renderer.run())
    await asyncio.sleep(0)  # the runner waits for snapshots

    async def snapshot_at(t: float, renders: int) -> None:
        """A new snapshot at ``t``, after which ``renders`` renders have been made."""
        now[0], before = t, renderer.renders
        value = ContainersSample((), "cgroup") if t % 2 else SAMPLE
        await hub.update("containers", value, SourceHealth(up=True))

        def done() -> bool:  # a render counts as it starts: and has finished
            return renderer.renders > before and not renderer._rendering

        await settle(until=done, seconds=5 if renders > before else 0.2)
        assert renderer.renders == renders, t

    await snapshot_at(100, 1)
    prometheus = renderer.negotiate(PROMETHEUS_ACCEPT, "gzip")
    assert renderer._cache.keys() == {prometheus}  # what Prometheus asks for, ready before it asks
    await renderer.get(prometheus, "10.0.0.9")
    assert renderer.renders == 1
    fmt = renderer.negotiate("", "gzip")
    await renderer.get(fmt, "10.0.0.9")  # a format nobody asked for yet renders on demand
    assert renderer.renders == 2
    await snapshot_at(101, 3)  # periods not known yet: every snapshot is rendered
    now[0] = 105  # both scraped again: each one's period is 5 s
    await renderer.get(fmt, "10.0.0.9")
    await renderer.get(prometheus, "10.0.0.9")
    assert renderer.renders == 3  # the snapshot of 101 was ready in both formats
    await snapshot_at(106, 3)  # the next scrapes are due at 110: nothing to render yet
    await snapshot_at(108, 3)
    await snapshot_at(109, 4)  # within 1.5 s of them: rendered, both formats at once
    now[0] = 110
    await renderer.get(fmt, "10.0.0.9")
    await renderer.get(prometheus, "10.0.0.9")
    assert renderer.renders == 4  # the scrapes found their bytes ready
    await snapshot_at(171, 4)  # nobody asked within the window: no more renders ahead
    runner.cancel()
    renderer.close()


def test_the_scrape_after_a_late_one_is_expected_on_the_scrapers_beat():
    """Prometheus asks on a beat and comes late at times: a late scrape moves neither its period
    nor the next scrape, however late, and a scraper that takes a new period is learnt anew."""
    scraper = _Scraper(0.0)
    for t in (5.0, 10.0, 15.001, 20.0):
        scraper.asked(t)
    assert (scraper.period, scraper.due, scraper.jitter) == pytest.approx((5.0, 25.0, 0.0), abs=0.01)
    for t, due in ((26.2, 30.0), (30.0, 35.0), (37.8, 40.0), (40.0, 45.0), (55.0, 60.0)):
        scraper.asked(t)  # 1.2 s late, punctual, 2.8 s late (it looks early), punctual, two missed
        assert (scraper.period, scraper.due, scraper.jitter) == pytest.approx((5.0, due, 0.0), abs=0.01), t
    for t in (57.0, 59.0, 61.0, 63.0):
        scraper.asked(t)  # every 2 s from now on
    assert (scraper.period, scraper.due) == pytest.approx((2.0, 65.0))


async def test_concurrent_scrapes_of_a_new_snapshot_render_once():
    hub = Hub()
    renderer = Renderer(hub, default_builders())
    await hub.update("containers", SAMPLE, SourceHealth(up=True))
    fmt = renderer.negotiate("application/openmetrics-text;version=1.0.0", "gzip")
    bodies = await asyncio.gather(*(renderer.get(fmt) for _ in range(10)))
    assert renderer.renders == 1
    assert len(set(bodies)) == 1
    renderer.close()


async def test_distinct_accept_headers_make_no_formats_of_their_own(aiohttp_client):
    """1,000 scrapes, each with an Accept header of its own (OpenMetrics 1.0.N, as any client
    may send): they are the one format prometheus_client writes for all of them, so a new
    snapshot is rendered in as many formats after them as before."""
    hub = Hub()
    renderer = Renderer(hub, default_builders())
    c = await aiohttp_client(make_app(hub, renderer, frozenset({"containers"})))
    await hub.update("containers", SAMPLE, SourceHealth(up=True))
    before = renderer._due()
    assert before == {renderer.negotiate(PROMETHEUS_ACCEPT, "gzip")}
    for n in range(1000):
        response = await c.get(
            "/metrics", headers={"Accept": f"application/openmetrics-text;version=1.0.{n}"}
        )
        assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0;")
    assert renderer._due() == before
    assert len(renderer._codecs) == 1
    # a version that is no number is answered as one without a version, not with an error
    response = await c.get("/metrics", headers={"Accept": "application/openmetrics-text;version=x"})
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # and however many scrapers there are, the table of their periods stays small
    fmt = renderer.negotiate("", "")
    for n in range(1000):
        await renderer.get(fmt, f"10.0.{n // 256}.{n % 256}")
    assert len(renderer._scrapers) == MAX_SCRAPERS
    renderer.close()


TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
NOTIFICATION = {
    "version": "4",
    "status": "firing",
    "receiver": "kato-exporter",
    "groupLabels": {"alertname": "KatoContainerCpuHigh"},
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "KatoContainerCpuHigh",
                "severity": "critical",
                "legacy_type": "high_cpu",
                "name": "kato",
                "instance": "host:9817",
            },
            "annotations": {"summary": "Container kato uses 97% of its CPU limit"},
            "startsAt": "2026-11-26T18:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
        }
    ],
}


async def test_alertmanager_webhook_publishes_and_counts(aiohttp_client):
    hub = Hub()
    inbox = AlertInbox(hub.publish)
    runner = asyncio.create_task(run_source(inbox, hub))
    events = hub.subscribe()
    c = await aiohttp_client(
        make_app(hub, Renderer(hub, default_builders()), frozenset(), inbox=inbox, token=TOKEN)
    )
    assert (await c.post("/api/v1/alertmanager", json=NOTIFICATION, headers=BEARER)).status == 204
    notice = events.get_nowait()
    assert (notice.status, notice.name, notice.severity, notice.legacy_type) == (
        "firing",
        "KatoContainerCpuHigh",
        "critical",
        "high_cpu",
    )
    assert notice.annotations["summary"].startswith("Container kato")
    await settle()
    e = Exposition(await (await c.get("/metrics")).text())
    assert e.value("kato_exporter_alertmanager_notifications_total", status="firing") == 1
    assert e.value("kato_exporter_alertmanager_notifications_total", status="resolved") == 0
    runner.cancel()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "body is not JSON"),
        (b'{"status": "firing", "alerts": {}}', "alerts: expected a list"),
        (b'{"status": "maybe", "alerts": []}', "status firing or resolved"),
        (b'{"status": "firing", "alerts": [{"status": "firing", "labels": []}]}', "alerts[0]: labels"),
    ],
)
async def test_alertmanager_webhook_rejects_bad_bodies(aiohttp_client, body, error):
    hub = Hub()
    c = await aiohttp_client(
        make_app(
            hub, Renderer(hub, default_builders()), frozenset(), inbox=AlertInbox(hub.publish), token=TOKEN
        )
    )
    response = await c.post("/api/v1/alertmanager", data=body, headers=BEARER)
    assert response.status == 400
    assert error in (await response.json())["error"]
    assert (await c.get("/-/healthy")).status == 200


async def test_alertmanager_webhook_needs_its_token_and_limits_the_body(aiohttp_client):
    hub = Hub()
    events = hub.subscribe()
    app = make_app(
        hub, Renderer(hub, default_builders()), frozenset(), inbox=AlertInbox(hub.publish), token=TOKEN
    )
    c = await aiohttp_client(app)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = await c.post("/api/v1/alertmanager", json=NOTIFICATION, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    big = {**NOTIFICATION, "padding": "x" * (5 * 2**20)}
    assert (await c.post("/api/v1/alertmanager", json=big, headers=BEARER)).status == 413
    assert events.empty()  # nothing of the refused requests was published
    assert (await c.post("/api/v1/alertmanager", json=NOTIFICATION, headers=BEARER)).status == 204


async def test_no_webhook_without_a_token(aiohttp_client):
    hub = Hub()
    app = make_app(hub, Renderer(hub, default_builders()), frozenset(), inbox=AlertInbox(hub.publish))
    c = await aiohttp_client(app)
    assert (await c.post("/api/v1/alertmanager", json=NOTIFICATION, headers=BEARER)).status in (404, 405)


async def test_basic_auth_on_every_endpoint_but_the_webhook(aiohttp_client):
    hub = Hub()
    users = {"prometheus": bcrypt.hashpw(b"right", bcrypt.gensalt(4)).replace(b"$2b$", b"$2y$")}
    app = make_app(
        hub,
        Renderer(hub, default_builders()),
        frozenset(),
        inbox=AlertInbox(hub.publish),
        token=TOKEN,
        users=users,
    )
    c = await aiohttp_client(app)
    for path in ("/", "/metrics", "/-/healthy", "/-/ready"):
        assert (await c.get(path)).status == 401
        for user, password, status in (
            ("prometheus", "wrong", 401),
            ("nobody", "right", 401),
            ("prometheus", "right", 200),
        ):
            auth = {"Authorization": aiohttp.encode_basic_auth(user, password)}
            assert (await c.get(path, headers=auth)).status == status
    response = await c.get("/metrics", headers={"Authorization": "Basic !!notbase64"})
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert (await c.post("/api/v1/alertmanager", json=NOTIFICATION, headers=BEARER)).status == 204
