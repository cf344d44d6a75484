"""Redis as KATO runs it in production: an index that is never pruned, CONFIG left alone when asked,
and a subscription whose connection goes silent without closing."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
import redis

from tests.conftest import Daemon, answers_http, firing, free_port, prometheus_api, start_prometheus, wait_for
from tests.integration.test_kato import create, events, missed, start_kato_exporter, value

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
    # our own round trip through the subscription times out
    assert f"Redis keyspace events at redis://127.0.0.1:{proxy.port}/0: lost: " in exporter.log.read_text()
    wait_for(  # a new connection through the proxy flows again
        lambda: value(exporter, "kato_exporter_source_up", source="kato_sessions") == 1,
        15,
        what="sessions back on a new connection",
    )
    assert missed(exporter) == {"created": 0, "ended": 0}  # nothing changed meanwhile
    create(kato)
    wait_for(lambda: value(exporter, "kato_sessions_active") == 2, 5, what="2 sessions")


def test_past_redis_buffer_limit_loss_is_counted_and_explained(start_exporter, kato_double, redis_server):
    """Redis drops a subscriber further behind than its client-output-buffer-limit pubsub: the
    exporter says so, and the reconcile that follows counts what no event announced."""
    kato = kato_double()
    r = redis.Redis.from_url(redis_server.url)
    r.config_set("client-output-buffer-limit", "pubsub 256kb 0 0")
    exporter = start_kato_exporter(start_exporter, kato, f"--kato.redis-url={redis_server.url}")
    seen = [create(kato) for _ in range(10)]
    wait_for(lambda: value(exporter, "kato_sessions_active") == 10, 5, what="10 sessions")
    before = events(exporter)
    assert before["created"] == 10
    flood = 50_000  # 2 keyspace events each (set, expire): far more than the socket buffers hold
    os.kill(exporter.proc.pid, signal.SIGSTOP)  # behind, as a slow exporter under load
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(flood):
            session_id = f"session-flood-{i}"  # as KATO writes a session: the key, then the index
            pipe.set(f"kato:session:{session_id}", "{}", ex=3600)
            pipe.sadd(INDEX, session_id)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        # After Redis has dropped the subscriber nothing is announced: 10 sessions we knew end (as
        # KATO deletes one: the key, then its id from the index), and 1,000 start and expire.
        for session_id in seen:
            r.delete(f"kato:session:{session_id}")
            r.srem(INDEX, session_id)
        for i in range(1000):
            pipe.set(f"kato:session:session-brief-{i}", "{}", px=100)
            pipe.sadd(INDEX, f"session-brief-{i}")
        pipe.execute()
        time.sleep(0.2)
        for i in range(1000):
            pipe.exists(f"kato:session:session-brief-{i}")  # reading an expired key expires it
        assert pipe.execute() == [0] * 1000
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)
    wait_for(
        lambda: "client-output-buffer-limit pubsub (262144 0 0" in exporter.log.read_text(),
        15,
        what="the drop explained in the log",
    )
    wait_for(lambda: value(exporter, "kato_sessions_active") == flood, 15, what="reconciled")
    after = events(exporter)
    lost = missed(exporter)
    assert lost["created"] > 1000  # Redis dropped what it could not buffer
    # each start once, seen or missed; the ends all missed
    assert after["created"] - before["created"] + lost["created"] == flood + 1000
    assert lost["ended"] == 10 + 1000 and after["destroyed"] == after["expired"] == 0
    assert value(exporter, "kato_exporter_source_up", source="kato_sessions") == 1


def test_evicted_sessions_are_counted_apart_and_page(start_exporter, kato_double, redis_server, tmp_path):
    """KATO's Redis at its maxmemory with allkeys-lru, as KATO configures it: sessions it evicts
    are evicted, not expired, and KatoSessionsEvicted and KatoRedisEvictions fire through the real
    Prometheus, which also scrapes the real redis_exporter."""
    kato = kato_double()
    r = redis.Redis.from_url(redis_server.url)
    exporter = start_kato_exporter(start_exporter, kato, f"--kato.redis-url={redis_server.url}")
    port = free_port()
    redis_exporter = Daemon(
        f"redis-exporter-{port}",
        [
            "prometheus-redis-exporter",
            f"-redis.addr={redis_server.url}",
            f"-web.listen-address=127.0.0.1:{port}",
        ],
        answers_http(f"http://127.0.0.1:{port}/"),
        f"127.0.0.1:{port}",
    )
    jobs = {"kato-exporter": [exporter.address], "redis": [redis_exporter.url]}
    prometheus = start_prometheus(tmp_path, jobs, "1s", "1s")
    try:  # Prometheus has seen the counter at 0 (an increase needs two samples)
        wait_for(
            lambda: prometheus_api(prometheus, "query", query='kato_session_events_total{event="evicted"}')[
                "result"
            ],
            15,
            what="the evicted counter in Prometheus",
        )
        r.config_set("maxmemory", "4mb")
        r.config_set("maxmemory-policy", "allkeys-lru")
        written = [f"session-big-{i}" for i in range(2000)]  # 16 MB of sessions for 4 MB
        for session_id in written:  # as KATO writes a session: the key, then the index
            r.set(f"kato:session:{session_id}", "x" * 8000, ex=3600)
            r.sadd(INDEX, session_id)
        # Redis goes on evicting while any client's buffers (the exporter's subscription, a
        # scrape's INFO) lift it over maxmemory; a write pause stops eviction, so the count holds
        r.client_pause(60_000, all=False)
        try:
            pipe = r.pipeline(transaction=False)
            for session_id in written:
                pipe.exists(f"kato:session:{session_id}")
            evicted = len(written) - sum(pipe.execute())
            # Redis also evicted the index itself (its LRU clock ticks once a second: it looked as
            # old as the sessions written in the same second), which KATO's SADD makes anew
            assert evicted > 1000 and r.info("stats")["evicted_keys"] >= evicted
            wait_for(
                lambda: events(exporter)["evicted"] == evicted,
                10,
                what=f"{evicted} evicted",
                show=lambda: (events(exporter), missed(exporter)),
            )
            assert events(exporter) == {"created": 2000, "destroyed": 0, "expired": 0, "evicted": evicted}
            assert value(exporter, "kato_sessions_active") == 2000 - evicted
        finally:
            r.client_unpause()
        wait_for(lambda: firing(prometheus, "KatoSessionsEvicted"), 30, what="KatoSessionsEvicted")
        [labels] = firing(prometheus, "KatoSessionsEvicted")
        assert labels["severity"] == "critical" and labels["instance"] == exporter.address
        wait_for(lambda: firing(prometheus, "KatoRedisEvictions"), 30, what="KatoRedisEvictions")
        [labels] = firing(prometheus, "KatoRedisEvictions")
        assert labels["severity"] == "critical" and labels["instance"] == redis_exporter.url
        [ratio] = prometheus_api(prometheus, "query", query="kato:redis_memory_usage:ratio")["result"]
        assert float(ratio["value"][1]) > 0.85  # at maxmemory: KatoRedisMemoryHigh would follow in 2 m
    finally:
        prometheus.stop()
        redis_exporter.stop()
