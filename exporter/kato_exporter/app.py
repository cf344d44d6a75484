"""Wires the sources and outputs that the config turns on, and owns their lifetimes."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from kato_exporter import __version__
from kato_exporter.config import Config, read_secret, split_address
from kato_exporter.hub import Demand, Hub
from kato_exporter.model import SessionEvent
from kato_exporter.outputs.bridge import Bridge
from kato_exporter.outputs.exposition import Exposition
from kato_exporter.outputs.families import default_builders
from kato_exporter.outputs.live import LivePusher
from kato_exporter.outputs.web import make_app
from kato_exporter.outputs.webconfig import load_web_config
from kato_exporter.sources.accesslog import AccessLogSource
from kato_exporter.sources.alertmanager import AlertInbox
from kato_exporter.sources.containers import ContainerFilter, ContainersSource
from kato_exporter.sources.discovery import Found, KatoFinder, describe
from kato_exporter.sources.host import HostSource
from kato_exporter.sources.kato import KatoApi, KatoSource
from kato_exporter.sources.runner import Source, run_source
from kato_exporter.sources.sessions import ApiSessions, RedisSessions

log = logging.getLogger("kato_exporter")


def docker_url(config: Config) -> str:
    return config.docker.host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_found(url: str) -> bool:
    return not url.startswith("unix://") or os.path.exists(url.removeprefix("unix://"))


def container_filter(config: Config) -> ContainerFilter:
    """The containers the exporter watches (and among which it looks for KATO)."""
    containers = config.collector.containers
    labels = tuple(
        (k, v if sep else None) for k, sep, v in (item.partition("=") for item in containers.label_selector)
    )
    return ContainerFilter(containers.include, labels)


def build_sources(config: Config, emit: Callable[[SessionEvent], None]) -> list[Any]:
    """The sources the config turns on; ``emit`` receives each session change."""
    sources: list[Any] = []
    containers = config.collector.containers
    url = docker_url(config)
    enabled = containers.enabled
    if enabled is None:
        enabled = docker_found(url)
        if not enabled:
            log.warning(
                "no Docker socket at %s: container metrics are off, host metrics still "
                "served (--collector.containers turns them on anyway)",
                url,
            )
    if enabled:
        sources.append(
            ContainersSource(
                url,
                interval=containers.interval,
                keep=container_filter(config),
                stats_mode=containers.stats_mode,
                api_concurrency=containers.api_concurrency,
                procfs=config.path.procfs,
                sysfs=config.path.sysfs,
            )
        )
    if config.collector.host.enabled:
        sources.append(
            HostSource(
                interval=config.collector.host.interval,
                procfs=config.path.procfs,
                rootfs=config.path.rootfs,
                mount_exclude=config.collector.host.mount_exclude,
                fs_types_exclude=config.collector.host.fs_types_exclude,
                device_exclude=config.collector.host.device_exclude,
                mount_timeout=config.collector.host.mount_timeout,
            )
        )
    if config.kato.url not in ("", "off"):
        sources += kato_sources(config, emit)
    return sources


def with_kato(config: Config, api: Found, redis: Found | None) -> Config:
    """``config`` reading the KATO that was found (a Redis given by flag wins over one found)."""
    redis_url = config.kato.redis_url or (redis.url if redis else "")
    kato = dataclasses.replace(config.kato, url=api.url, redis_url=redis_url)
    return dataclasses.replace(config, kato=kato)


def kato_sources(config: Config, emit: Callable[[SessionEvent], None]) -> list[Any]:
    kato = config.kato
    api = KatoApi(kato.url, kato.timeout)
    sources: list[Any] = [KatoSource(api, kato.interval)]
    if kato.redis_url:
        sources.append(
            RedisSessions(
                kato.redis_url,
                emit,
                reconcile_interval=kato.reconcile_interval,
                password=read_secret(kato.redis_password_file) if kato.redis_password_file else None,
                configure=kato.redis_configure,
            )
        )
    else:
        log.warning(
            "no --kato.redis-url: sessions come from KATO's count and /ws/events; counts may drift "
            "(KATO's count includes expired sessions), and expiries (and, with several KATO "
            "workers, most events) are missed"
        )
        sources.append(ApiSessions(api, emit, interval=kato.interval))
    url = docker_url(config)
    logs = kato.logs
    if logs is None:
        logs = docker_found(url)
        if not logs:
            log.warning("no Docker socket at %s: KATO request counts (from its access log) are off", url)
    if logs:
        sources.append(AccessLogSource(url, kato.log_container, watched=container_filter(config).matches))
    return sources


async def serve(config: Config, stop: asyncio.Event, hub: Hub | None = None) -> None:
    """Run until ``stop`` is set (``hub``: to watch it from the same process, as benchmarks do)."""
    hub = hub or Hub()
    security = load_web_config(config.web.config_file)
    sources: list[Source] = build_sources(config, hub.publish)
    finder = None
    if config.kato.url == "" and any(isinstance(s, ContainersSource) for s in sources):
        watched, password = container_filter(config).matches, bool(config.kato.redis_password_file)
        finder = KatoFinder(
            docker_url(config), config.kato.log_container, watched, password, config.kato.discovery_interval
        )
        api, redis = await finder.look_safely()
        if api is not None:
            log.info("found %s", describe(api, redis))
            config = with_kato(config, api, redis)
            sources += kato_sources(config, hub.publish)
            finder = None
        else:
            log.info(
                "no KATO container (%s) answers on this Docker host: looking again every %gs "
                "(--kato.url sets KATO's address, --kato.url=off turns this off)",
                config.kato.log_container.pattern,
                finder.interval,
            )
    token, inbox = "", None
    if config.alertmanager.token_file:
        token, inbox = read_secret(config.alertmanager.token_file), AlertInbox(hub.publish)
        sources.append(inbox)
    else:
        log.info("Alertmanager webhook off: no --alertmanager.token-file")
    grafana = config.grafana
    if grafana.url:
        sources.append(
            # the token file is read by the pusher, again at each retry: the exporter starts
            # whatever happened to Grafana's token set-up
            LivePusher(hub, grafana.url, grafana.token_file, grafana.live.stream, grafana.live.interval)
        )
        log.info("pushing to Grafana Live at %s, stream %s", grafana.url, grafana.live.stream)
    exposition = Exposition(hub, default_builders(config.collector.containers.info_labels))
    names = {s.name for s in sources}  # what /-/ready waits for: grows with a KATO found later
    app = make_app(hub, exposition, names, config.web.telemetry_path, inbox, token, security.users)
    bridge = Bridge(hub, config.bridge, config.kato.url) if config.bridge.enabled else None
    if bridge is not None:
        bridge.add_routes(app)
    # on SIGTERM, requests under way get two seconds to finish (aiohttp's default: a minute, and as
    # long again once cancelled); a reader that stalled does not hold the stop
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    host, port = split_address(config.web.listen_address)
    await web.TCPSite(runner, host, port, ssl_context=security.tls).start()
    log.info(
        "kato-exporter %s listening on %s://%s:%d%s%s (sources: %s)",
        __version__,
        "https" if security.tls else "http",
        host or "0.0.0.0",
        port,
        config.web.telemetry_path,
        ", basic auth" if security.users else "",
        ", ".join(s.name for s in sources) or "none",
    )
    for source in sources:
        if hasattr(source, "start"):
            await source.start()
    if bridge is not None:
        await bridge.start()
        log.info("legacy dashboard bridge at /ws and /api/v1 (update every %gs)", config.bridge.tick)
    hub.demand.scrapes = exposition.scrapes  # containers and host refresh when somebody reads them
    tasks = [
        asyncio.create_task(
            run_source(s, hub, demand=hub.demand if s.name in Demand.SOURCES else None),
            name=s.name,
        )
        for s in sources
    ]
    tasks.append(asyncio.create_task(exposition.run(), name="exposition"))

    async def found_later(api: Found, redis: Found | None) -> None:
        log.info("found %s", describe(api, redis))
        more = kato_sources(with_kato(config, api, redis), hub.publish)
        for source in more:
            if hasattr(source, "start"):
                await source.start()
            sources.append(source)
            names.add(source.name)
            tasks.append(asyncio.create_task(run_source(source, hub), name=source.name))
        if bridge is not None:
            bridge.kato_url = api.url

    def watched_names() -> list[str] | None:
        sample = hub.snapshot.values.get("containers")
        return None if sample is None else [c.meta.name for c in sample.containers]

    if finder is not None:
        tasks.append(asyncio.create_task(finder.watch(found_later, watched_names), name="kato-finder"))
    # What start made (modules, sources, their state such as the set of live session ids) is left
    # out of full garbage collections: traversing 300,000 session ids took 40-60 ms, holding the GIL.
    gc.freeze()
    tasks.append(asyncio.create_task(freeze_first_round(hub, exposition, names), name="gc-freeze"))
    # The render thread waits for the GIL each time it gives it up (gzip does): by default 5 ms a
    # time while the session subscription keeps the event loop busy, which made 3 ms renders last 90.
    sys.setswitchinterval(0.001)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for source in sources:
            if hasattr(source, "close"):
                await source.close()
        if bridge is not None:
            await bridge.close()
        await runner.cleanup()
        exposition.close()


async def freeze_first_round(hub: Hub, exposition: Exposition, sources: set[str]) -> None:
    """Once every source has reported and that snapshot is rendered, what they made (1,000
    containers' metadata, cgroups and encoded rows: most of what the process holds) is left out
    of full garbage collections too; there, a collection over it took 100-250 ms."""
    snapshot = hub.snapshot
    while not snapshot.complete(sources):
        snapshot = await hub.next_snapshot(snapshot.version)
    renders = exposition.renders
    for _ in range(300):  # what Prometheus asks for is rendered from the start: within 30 s
        if exposition.renders > renders:
            break
        await asyncio.sleep(0.1)
    gc.collect()  # once: no garbage frozen with the rest
    gc.freeze()


def run(config: Config) -> int:
    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve(config, stop)
        except OSError as exc:
            log.error("cannot listen on %s: %s", config.web.listen_address, exc.strerror or exc)
            return 1
        log.info("stopped")
        return 0

    return asyncio.run(main())
