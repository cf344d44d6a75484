"""Redis as KATO runs it in production: an index that is never pruned, CONFIG left alone when asked,
and a subscription whose connection goes silent without closing."""

from __future__ import annotations

import socket
import threading

import pytest
import redis

from tests.conftest import free_port, wait_for
from tests.integration.test_kato import create, start_kato_exporter, value

pytestmark = pytest.mark.integration

INDEX = "kato:session:_active_index"


def test_a_large_stale_index_is_reconciled_in_batches(start_exporter, kato_double, redis_server):
    kato = kato_double()
    r = redis.Redis.from_url(redis_server.url)
    stale = [f"session-stale-{i}" for i in range(20_000)]  # expired long ago, never removed from the index
    for start in range(0, len(stale), 5000):
        r.sadd(INDEX, *stale[start : start + 5000])
    live = [create(kato) for _ in range(5)]
    r.config_set("slowlog-log-slower-than", 0)  # log every command
    r.config_set("slowlog-max-len", 100_000)
    r.slowlog_reset()
    exporter = start_kato_exporter(start_exporter, kato, f"--kato.redis-url={redis_server.url}")
    wait_for(lambda: value(exporter, "kato_sessions_active") == 5, 10, what="the 5 live sessions")
    assert value(exporter, "kato_sessions_index_stale") == 20_000
    commands = [entry["command"].split()[0].upper() for entry in r.slowlog_get(100_000)]
    assert b"SMEMBERS" not in commands and b"KEYS" not in commands
    assert commands.count(b"SSCAN") >= 20  # about 1,000 members a batch
    assert set(live) <= {m.decode() for m in r.smembers(INDEX)}


def test_no_redis_configure_leaves_config_alone(start_exporter, kato_double, redis_server):
    kato = kato_double()
    r = redis.Redis.from_url(redis_server.url)
    r.config_set("notify-keyspace-events", "")
    exporter = start_kato_exporter(
        start_exporter, kato, f"--kato.redis-url={redis_server.url}", "--no-kato.redis-configure"
    )
    wait_for(
        lambda: value(exporter, "kato_exporter_source_up", source="kato_sessions") == 0,
        5,
        what="sessions down",
    )
    assert r.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""  # untouched
    assert "set notify-keyspace-events Kg$xe in redis.conf" in exporter.log.read_text()
    r.config_set("notify-keyspace-events", "Kg$xe")  # the operator follows the advice
    wait_for(
        lambda: value(exporter, "kato_exporter_source_up", source="kato_sessions") == 1,
        10,
        what="sessions up once notifications are on",
    )


class FreezingProxy:
    """TCP proxy to Redis that can go silent: bytes stop flowing both ways, sockets stay open,
    as across a dead NAT entry or an unplugged peer. New connections flow again."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.frozen: list[socket.socket] = []
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        for _, _, flowing in self._pairs:
            flowing.clear()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self._target))
            flowing = threading.Event()
            flowing.set()
            self._pairs.append((client, upstream, flowing))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b, flowing), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, flowing: threading.Event) -> None:
        try:
            while data := source.recv(65536):
                if flowing.is_set():
                    sink.sendall(data)  # else dropped: the peer never hears of it
        except OSError:
            pass


def test_a_silent_subscription_is_noticed(start_exporter, kato_double, redis_server):
    kato = kato_double()
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    proxy = FreezingProxy(port)
    exporter = start_kato_exporter(
        start_exporter, kato, f"--kato.redis-url=redis://127.0.0.1:{proxy.port}/0", "--kato.interval=1s"
    )
    create(kato)
    wait_for(lambda: value(exporter, "kato_sessions_active") == 1, 5, what="1 session")
    proxy.freeze()
    wait_for(
        lambda: value(exporter, "kato_exporter_source_up", source="kato_sessions") == 0,
        15,
        what="the silent subscription noticed",
    )
    # redis-py's health check or our own round trip, whichever times out first
    assert f"Redis keyspace events at redis://127.0.0.1:{proxy.port}/0: lost: " in exporter.log.read_text()
    wait_for(  # a new connection through the proxy flows again
        lambda: value(exporter, "kato_exporter_source_up", source="kato_sessions") == 1,
        15,
        what="sessions back on a new connection",
    )
    create(kato)
    wait_for(lambda: value(exporter, "kato_sessions_active") == 2, 5, what="2 sessions")
