"""The seven KATO dashboards. ``python -m grafana.kato_dashboards`` writes them to grafana/dashboards/."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common

from grafana.kato_dashboards.panels import (
    CONTAINER,
    INSTANCE,
    NONE_IS_GOOD,
    bars,
    board,
    by_rules,
    container_variable,
    graph,
    instance_variable,
    listing,
    live,
    numbered,
    single,
    states,
    timeline,
    unit_override,
    variable,
)
from kato_exporter.model import KATO_HEALTH_STATES

# the states the exporter reports, as in kato_container_state and kato_container_health_status
CONTAINER_STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")
HEALTH_STATES = ("starting", "healthy", "unhealthy")
RATE = "[$__rate_interval]"
RANGE = "[$__range]"
# Prometheus, Alertmanager and redis_exporter are scraped every 15 s, not at the datasource's 5 s
# that $__rate_interval assumes: four of their scrapes
SELF_RATE = "[1m]"


def one_number(metric: str, selector: str, label: str, values: tuple[str, ...], by: str = "name") -> str:
    """A one-of gauge (``kato_container_state{state="running"} 1``) as one number per name:
    1 for the first of ``values``, 2 for the second…, so a state timeline can colour it."""
    parts = [f'{metric}{{{selector}, {label}="{v}"}} * {i} == {i}' for i, v in enumerate(values, 1)]
    return f"max by ({by}) (" + " or ".join(parts) + ")"


# Panels that two dashboards show alike (title and width are theirs)


def session_events_graph(width: int = 12) -> Any:
    return graph(
        "Session events",
        "Sessions created, destroyed (deleted), expired and evicted (Redis out of maxmemory) per second.",
        "ops",
        (f"sum by (event) (rate(kato_session_events_total{{{INSTANCE}}}{RATE}))", "{{event}}"),
        width=width,
    )


def requests_by_status_graph(width: int = 12) -> Any:
    return graph(
        "Requests by status",
        "Requests per second in the KATO containers' access logs, by status code.",
        "reqps",
        (f"sum by (code) (rate(kato_http_requests_total{{{INSTANCE}}}{RATE}))", "{{code}}"),
        width=width,
        stack=True,
    )


def error_ratio_graph(width: int = 12) -> Any:
    return graph(
        "5xx ratio",
        "Share of 5xx responses over 5 minutes, against the alert thresholds.",
        "percentunit",
        (f"kato:http_errors:ratio_rate5m{{{INSTANCE}}}", "{{instance}}"),
        width=width,
        lines="kato_http_error_ratio",
    )


def host_cpu_graph(title: str) -> Any:
    return graph(
        title,
        "Busy share of all CPUs over each minute (I/O wait counts as idle), against the alert thresholds.",
        "percentunit",
        (f"kato:host_cpu_usage:ratio_rate1m{{{INSTANCE}}}", "{{instance}}"),
        lines="kato_host_cpu_usage_ratio",
    )


def host_memory_graph(title: str, width: int = 12) -> Any:
    return graph(
        title,
        "1 − available ÷ total, against the alert thresholds.",
        "percentunit",
        (f"kato_host_memory_usage_ratio{{{INSTANCE}}}", "{{instance}}"),
        lines="kato_host_memory_usage_ratio",
        width=width,
    )


def overview() -> Any:
    return (
        board(
            "kato-overview",
            "KATO overview",
            "Is KATO up and healthy, how many sessions, how busy, which containers use most, what fires.",
            instance_variable(),
        )
        .with_panel(
            single(
                "KATO API",
                "1 when the exporter's last poll of KATO's /health, /metrics and /sessions/count worked.",
                "none",
                (f"min(kato_up{{{INSTANCE}}})", "up"),
                mappings=states(("1", "up"), ("0", "down")),
                steps=((None, "red"), (1, "green")),
            )
        )
        .with_panel(
            single(
                "KATO health",
                "What KATO's /health says (healthy, degraded or unhealthy), per host.",
                "none",
                (
                    one_number("kato_health_status", INSTANCE, "status", KATO_HEALTH_STATES, by="instance"),
                    "{{instance}}",
                ),
                mappings=numbered(KATO_HEALTH_STATES),
            )
        )
        .with_panel(
            single(
                "Active sessions",
                "Exact: live session keys in Redis, from keyspace events. KATO's own count beside it "
                "never drops when a session expires.",
                "none",
                (f"sum(kato_sessions_active{{{INSTANCE}}})", "exact"),
                (f"sum(kato_sessions_reported{{{INSTANCE}}})", "KATO's count"),
                width=6,
            )
        )
        .with_panel(
            single(
                "Requests",
                "Requests per second in the KATO containers' access logs, over 5 minutes.",
                "reqps",
                (f"sum(kato:http_requests:rate5m{{{INSTANCE}}})", "requests/s"),
            )
        )
        .with_panel(
            single(
                "5xx ratio",
                "Share of responses with a 5xx code over 5 minutes.",
                "percentunit",
                (f"max(kato:http_errors:ratio_rate5m{{{INSTANCE}}})", "5xx"),
                width=3,
                steps=by_rules("kato_http_error_ratio"),
            )
        )
        .with_panel(
            single(
                "Containers running",
                "Running containers, and all containers the exporter watches.",
                "none",
                (f'sum(kato_container_state{{{INSTANCE}, state="running"}})', "running"),
                (f"count(kato_container_info{{{INSTANCE}}})", "total"),
                width=3,
            )
        )
        .with_panel(session_events_graph(width=8))
        .with_panel(requests_by_status_graph(width=8))
        .with_panel(error_ratio_graph(width=8))
        .with_panel(
            bars(
                "Top containers by CPU",
                "CPU used as a share of the container's limit (of the host's cores without one).",
                "percentunit",
                (f"topk(10, kato:container_cpu_usage:ratio_rate1m{{{INSTANCE}}})", "{{name}}"),
                steps=by_rules("kato_container_cpu_usage_ratio"),
            )
        )
        .with_panel(
            bars(
                "Top containers by memory",
                "Working set as a share of the container's memory limit (containers with a limit).",
                "percentunit",
                (f"topk(10, kato:container_memory_usage:ratio{{{INSTANCE}}})", "{{name}}"),
                steps=by_rules("kato_container_memory_usage_ratio"),
            )
        )
        .with_panel(host_cpu_graph("Host CPU"))
        .with_panel(host_memory_graph("Host memory"))
        .with_panel(
            listing(
                "Firing alerts",
                "Alerts Prometheus sends to Alertmanager now; silences are in Grafana's Alerting.",
                ('ALERTS{alertstate="firing"}', ""),
            )
        )
    )


def containers() -> Any:
    c = CONTAINER
    return (
        board(
            "kato-containers",
            "KATO containers",
            "Each container: CPU, memory against its limit, I/O, processes, restarts, state and health.",
            instance_variable(),
            container_variable(),
        )
        .with_panel(
            graph(
                "CPU",
                "CPU used, in cores.",
                "suffix:cores",
                (f"rate(kato_container_cpu_usage_seconds_total{{{c}}}{RATE})", "{{name}}"),
            )
        )
        .with_panel(
            graph(
                "CPU share of limit",
                "CPU used as a share of the container's limit (of the host's cores without one).",
                "percentunit",
                (f"kato:container_cpu_usage:ratio_rate1m{{{c}}}", "{{name}}"),
                lines="kato_container_cpu_usage_ratio",
            )
        )
        .with_panel(
            graph(
                "Working set and limit",
                "Memory the kernel cannot reclaim, and the limit it is held to.",
                "bytes",
                (f"kato_container_memory_working_set_bytes{{{c}}}", "{{name}}"),
                (f"kato_container_memory_limit_bytes{{{c}}}", "{{name}} limit"),
            )
        )
        .with_panel(
            graph(
                "Memory share of limit",
                "Working set as a share of the memory limit (containers with a limit).",
                "percentunit",
                (f"kato:container_memory_usage:ratio{{{c}}}", "{{name}}"),
                lines="kato_container_memory_usage_ratio",
            )
        )
        .with_panel(
            graph(
                "Network",
                "Bytes per second received and sent.",
                "Bps",
                (f"rate(kato_container_network_receive_bytes_total{{{c}}}{RATE})", "{{name}} receive"),
                (f"rate(kato_container_network_transmit_bytes_total{{{c}}}{RATE})", "{{name}} transmit"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Block I/O",
                "Bytes per second read from and written to block devices.",
                "Bps",
                (f"rate(kato_container_block_read_bytes_total{{{c}}}{RATE})", "{{name}} read"),
                (f"rate(kato_container_block_write_bytes_total{{{c}}}{RATE})", "{{name}} write"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Processes",
                "Processes and threads in the container.",
                "none",
                (f"kato_container_pids{{{c}}}", "{{name}}"),
                width=8,
            )
        )
        .with_panel(
            timeline(
                "State",
                "Docker's state of each container.",
                (one_number("kato_container_state", c, "state", CONTAINER_STATES), "{{name}}"),
            ).mappings(numbered(CONTAINER_STATES))
        )
        .with_panel(
            timeline(
                "Health",
                "The result of each container's healthcheck (containers with one).",
                (one_number("kato_container_health_status", c, "status", HEALTH_STATES), "{{name}}"),
                width=16,
            ).mappings(numbered(HEALTH_STATES))
        )
        .with_panel(
            graph(
                "Restarts in the time range",
                "Times Docker restarted the container within the dashboard's time range, counted across"
                " the drops of Docker's count (`docker start`, a re-created container).",
                "none",
                (f"round(increase(kato_container_restarts_total{{{c}}}{RANGE}))", "{{name}}"),
                width=8,
            )
        )
    )


def sessions() -> Any:
    return (
        board(
            "kato-sessions",
            "KATO sessions and API",
            "Sessions (exact, as KATO reports them, and stale index entries), session events and requests.",
            instance_variable(),
        )
        .with_panel(
            graph(
                "Sessions",
                "Exact live sessions from Redis; KATO's count (the size of its index, which keeps expired "
                "sessions); index entries whose session is gone.",
                "none",
                (f"kato_sessions_active{{{INSTANCE}}}", "active {{instance}}"),
                (f"kato_sessions_reported{{{INSTANCE}}}", "KATO's count {{instance}}"),
                (f"kato_sessions_index_stale{{{INSTANCE}}}", "stale index {{instance}}"),
                width=16,
            )
        )
        .with_panel(
            single(
                "Events in the time range",
                "Session events within the dashboard's time range (evicted: dropped by Redis for memory).",
                "none",
                (
                    f"round(sum by (event) (increase(kato_session_events_total{{{INSTANCE}}}{RANGE})))",
                    "{{event}}",
                ),
                width=8,
                height=8,
            )
        )
        .with_panel(session_events_graph())
        .with_panel(error_ratio_graph())
        .with_panel(requests_by_status_graph())
        .with_panel(
            graph(
                "Requests by method",
                "Requests per second by HTTP method.",
                "reqps",
                (f"sum by (method) (rate(kato_http_requests_total{{{INSTANCE}}}{RATE}))", "{{method}}"),
                stack=True,
            )
        )
        .with_panel(
            graph(
                "KATO processors",
                "Processors cached by the KATO worker that answered each poll (KATO says not which),"
                " and the cache's size.",
                "none",
                (f"kato_processors{{{INSTANCE}}}", "cached {{instance}}"),
                (f"kato_processors_max{{{INSTANCE}}}", "max {{instance}}"),
                width=8,
            )
        )
        .with_panel(
            single(
                "KATO uptime",
                "Since the newest KATO worker started (a restart of KATO, or of one worker).",
                "dtdurations",
                (f"time() - kato_start_time_seconds{{{INSTANCE}}}", "{{instance}}"),
                width=8,
                height=8,
            )
        )
        .with_panel(
            single(
                "Session source",
                "redis: exact, from keyspace events; api: KATO's count and /ws/events (misses expiries).",
                "none",
                (f"kato_exporter_session_mode{{{INSTANCE}}} == 1", "{{mode}}"),
                width=8,
                height=8,
            ).text_mode(common.BigValueTextMode.NAME)
        )
        # KATO's Redis, from redis_exporter (job "redis", where KATO_REDIS_URL is set)
        .with_panel(
            graph(
                "Redis memory",
                "Memory KATO's Redis uses, against its maxmemory (where one is set): at maxmemory, with "
                "KATO's allkeys-lru, it evicts any key, sessions included.",
                "bytes",
                ('redis_memory_used_bytes{job="redis"}', "used {{instance}}"),
                ('redis_memory_max_bytes{job="redis"} > 0', "maxmemory {{instance}}"),
            )
        )
        .with_panel(
            graph(
                "Redis memory of maxmemory",
                "Memory used as a share of maxmemory, against the thresholds of KatoRedisMemoryHigh.",
                "percentunit",
                ("kato:redis_memory_usage:ratio", "{{instance}}"),
                lines="kato_redis_memory_usage_ratio",
            )
        )
        .with_panel(
            graph(
                "Redis evictions and rejected connections",
                "Keys Redis evicted for want of memory, and connections it refused (maxclients), per second.",
                "ops",
                (f'rate(redis_evicted_keys_total{{job="redis"}}{SELF_RATE})', "evicted {{instance}}"),
                (f'rate(redis_rejected_connections_total{{job="redis"}}{SELF_RATE})', "refused {{instance}}"),
            )
        )
        .with_panel(
            graph(
                "Redis clients",
                "Clients connected to KATO's Redis (KATO's workers, this exporter, redis_exporter), and "
                "those blocked in a command.",
                "none",
                ('redis_connected_clients{job="redis"}', "connected {{instance}}"),
                ('redis_blocked_clients{job="redis"}', "blocked {{instance}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Redis commands",
                "Commands KATO's Redis processes per second.",
                "ops",
                (f'rate(redis_commands_processed_total{{job="redis"}}{SELF_RATE})', "{{instance}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Redis keys",
                "Keys in KATO's Redis (sessions, the session index, patterns), and those with a TTL.",
                "none",
                ('sum by (instance) (redis_db_keys{job="redis"})', "keys {{instance}}"),
                ('sum by (instance) (redis_db_keys_expiring{job="redis"})', "with a TTL {{instance}}"),
                width=8,
            )
        )
        # KATO, its ClickHouse and its Qdrant from outside, through blackbox_exporter (job "blackbox")
        .with_panel(
            single(
                "Probes from outside",
                "Whether blackbox_exporter's last GET passed: KATO's /health (200 and \"healthy\"), "
                "ClickHouse's /ping, Qdrant's /readyz. KatoProbeFailing fires after 2 minutes failing.",
                "none",
                ('probe_success{job="blackbox"}', "{{service}}"),
                mappings=states(("1", "up"), ("0", "failing")),
                steps=((None, "red"), (1, "green")),
                width=6,
                height=8,
            )
        )
        .with_panel(
            graph(
                "Probe duration",
                "How long each probe took, DNS to last byte, against the threshold of KatoProbeSlow.",
                "s",
                ('probe_duration_seconds{job="blackbox"}', "{{service}}"),
                lines="kato_probe_duration_seconds",
                width=9,
            )
        )
        .with_panel(
            graph(
                "KATO's probe by phase",
                "Where a GET /health's time goes: name lookup, connect, TLS, KATO's processing, transfer.",
                "s",
                ('probe_http_duration_seconds{job="blackbox", service="kato"}', "{{phase}}"),
                stack=True,
                width=9,
            )
        )
    )


def slo() -> Any:
    """KATO's SLOs as rules/slo.yml records them (Sloth's names): the period's budget, the error
    ratio and burn rate per window, the alerts on them."""
    chosen = 'sloth_service="kato", sloth_slo=~"$slo"'
    windows = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    return (
        board(
            "kato-slo",
            "KATO SLOs",
            "KATO's SLOs (requests not 5xx; /health probes passing in under 500 ms), 99.5 % over 30 days: "
            "the error budget left and how fast it burns.",
            variable("slo", "SLO", 'label_values(slo:objective:ratio{sloth_service="kato"}, sloth_slo)'),
        )
        .with_panel(
            single(
                "Objective",
                "The share of good events each SLO wants over its 30 days (prometheus/rules/thresholds.yml).",
                "percentunit",
                (f"slo:objective:ratio{{{chosen}}}", "{{sloth_slo}}"),
                width=6,
            )
        )
        .with_panel(
            single(
                "Error budget left",
                "What is left of the period's error budget at the average error ratio so far: below 0, "
                "overspent.",
                "percentunit",
                (f"slo:period_error_budget_remaining:ratio{{{chosen}}}", "{{sloth_slo}}"),
                steps=((None, "red"), (0, "orange"), (0.5, "green")),
                width=6,
            ).min(-1)
        )
        .with_panel(
            single(
                "Burn rate now",
                "The last 5 minutes' error ratio as a multiple of the budget: at 1 it lasts the 30 days; "
                "14.4 over 1 hour pages.",
                "suffix:x",
                (f"slo:current_burn_rate:ratio{{{chosen}}}", "{{sloth_slo}}"),
                steps=((None, "green"), (1, "orange"), (6, "red")),
                width=6,
            )
        )
        .with_panel(
            single(
                "Budget alerts firing",
                "KatoErrorBudgetBurn alerts firing: page (fast burn) and ticket (slow burn).",
                "none",
                (
                    'count(ALERTS{alertname="KatoErrorBudgetBurn", alertstate="firing", sloth_slo=~"$slo"}) '
                    "or vector(0)",
                    "firing",
                ),
                steps=NONE_IS_GOOD,
                width=6,
            )
        )
        .with_panel(
            graph(
                "Error budget left over the period",
                "The period's budget left, as it was at each moment.",
                "percentunit",
                (f"slo:period_error_budget_remaining:ratio{{{chosen}}}", "{{sloth_slo}}"),
            )
        )
        .with_panel(
            graph(
                "Error ratio per window",
                "The share of bad events over each alert window, against the budget (1 - objective).",
                "percentunit",
                *((f"slo:sli_error:ratio_rate{w}{{{chosen}}}", f"{w} {{{{sloth_slo}}}}") for w in windows),
                (f"slo:error_budget:ratio{{{chosen}}}", "budget {{sloth_slo}}"),
            )
        )
        .with_panel(
            bars(
                "Burn rate per window",
                "Each window's error ratio as a multiple of the budget. Page: 14.4 over 1h and 5m, or 6 over "
                "6h and 30m; ticket: 3 over 1d and 2h, or 1 over 3d and 6h.",
                "suffix:x",
                *(
                    (
                        f"slo:sli_error:ratio_rate{w}{{{chosen}}} / ignoring (sloth_window) "
                        f"slo:error_budget:ratio{{{chosen}}}",
                        f"{{{{sloth_slo}}}} {w}",
                    )
                    for w in windows
                ),
                steps=((None, "green"), (1, "orange"), (6, "red")),
            )
        )
        .with_panel(
            timeline(
                "Budget alerts",
                "When each KatoErrorBudgetBurn alert fired, by SLO and severity (page, ticket).",
                (
                    'ALERTS{alertname="KatoErrorBudgetBurn", alertstate="firing", sloth_slo=~"$slo"}',
                    "{{sloth_slo}} {{sloth_severity}}",
                ),
                width=12,
            ).mappings(states(("1", "firing")))
        )
    )


def host() -> Any:
    return (
        board(
            "kato-host",
            "KATO host",
            "The Docker host under KATO: CPU, load, memory, swap, filesystems, network.",
            instance_variable(),
        )
        .with_panel(host_cpu_graph("CPU"))
        .with_panel(
            graph(
                "Load",
                "Load averages, and the number of CPUs to read them against.",
                "none",
                (f"kato_host_load1{{{INSTANCE}}}", "1m {{instance}}"),
                (f"kato_host_load5{{{INSTANCE}}}", "5m {{instance}}"),
                (f"kato_host_load15{{{INSTANCE}}}", "15m {{instance}}"),
                (f"kato_host_cpus{{{INSTANCE}}}", "CPUs {{instance}}"),
            )
        )
        .with_panel(host_memory_graph("Memory", width=8))
        .with_panel(
            graph(
                "Memory in bytes",
                "Physical memory, and what is available without swapping.",
                "bytes",
                (f"kato_host_memory_total_bytes{{{INSTANCE}}}", "total {{instance}}"),
                (f"kato_host_memory_available_bytes{{{INSTANCE}}}", "available {{instance}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Swap",
                "Swap in use, and all of it.",
                "bytes",
                (f"kato_host_swap_used_bytes{{{INSTANCE}}}", "used {{instance}}"),
                (f"kato_host_swap_total_bytes{{{INSTANCE}}}", "total {{instance}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Filesystems used",
                "Share of each filesystem that is not free to KATO: its reserved blocks count as used.",
                "percentunit",
                (
                    f"1 - kato_host_filesystem_avail_bytes{{{INSTANCE}}}"
                    f" / kato_host_filesystem_size_bytes{{{INSTANCE}}}",
                    "{{mountpoint}}",
                ),
                width=16,
            )
        )
        .with_panel(
            single(
                "Mounts not answering",
                "Filesystems whose statfs did not answer in time (a hung NFS or FUSE mount), per host.",
                "none",
                (
                    f"sum by (instance, host) (kato_host_filesystem_device_error{{{INSTANCE}}})",
                    "{{instance}}",
                ),
                width=8,
                height=8,
                steps=NONE_IS_GOOD,
            )
        )
        .with_panel(
            graph(
                "Network",
                "Bytes per second received and sent, per device.",
                "Bps",
                (f"rate(kato_host_network_receive_bytes_total{{{INSTANCE}}}{RATE})", "{{device}} receive"),
                (f"rate(kato_host_network_transmit_bytes_total{{{INSTANCE}}}{RATE})", "{{device}} transmit"),
                width=16,
            )
        )
        .with_panel(
            single(
                "Uptime",
                "Time since the host booted.",
                "dtdurations",
                (f"time() - kato_host_boot_time_seconds{{{INSTANCE}}}", "{{instance}}"),
                width=8,
                height=8,
            )
        )
    )


def monitoring() -> Any:
    return (
        board(
            "kato-monitoring",
            "KATO monitoring itself",
            "Is the monitoring working: exporter sources, scrapes, rule evaluation, alert delivery.",
            instance_variable(),
        )
        .with_panel(
            timeline(
                "Exporter sources",
                "Whether each source's last collection succeeded.",
                (f"kato_exporter_source_up{{{INSTANCE}}}", "{{instance}} {{source}}"),
            ).mappings(states(("1", "up"), ("0", "down")))
        )
        .with_panel(
            graph(
                "Collection duration",
                "How long each source's last collection took.",
                "s",
                (f"kato_exporter_collect_duration_seconds{{{INSTANCE}}}", "{{source}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Collection errors",
                "Failed collections per second, by source.",
                "ops",
                (f"rate(kato_exporter_collect_errors_total{{{INSTANCE}}}{RATE})", "{{source}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Data age",
                "Time since each source's last successful collection.",
                "s",
                (f"time() - kato_exporter_last_success_timestamp_seconds{{{INSTANCE}}}", "{{source}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Scrapes of the exporter",
                "How long Prometheus' scrapes of each exporter take.",
                "s",
                (f'scrape_duration_seconds{{job="kato-exporter", {INSTANCE}}}', "{{instance}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Samples per scrape",
                "Samples in each scrape of the exporter.",
                "none",
                (f'scrape_samples_scraped{{job="kato-exporter", {INSTANCE}}}', "{{instance}}"),
                width=8,
            )
        )
        .with_panel(
            timeline(
                "Exporters up",
                "Whether Prometheus' last scrape of each exporter succeeded.",
                (f'up{{job="kato-exporter", {INSTANCE}}}', "{{instance}}"),
                width=8,
            ).mappings(states(("1", "up"), ("0", "down")))
        )
        .with_panel(
            graph(
                "Rule evaluation",
                "Rule evaluations that failed per second, and how long each group took.",
                "s",
                (f"sum by (rule_group) (rate(prometheus_rule_evaluation_failures_total{SELF_RATE}))", ""),
                ("prometheus_rule_group_last_duration_seconds", "{{rule_group}} duration"),
                width=8,
            ).override_by_query("A", [unit_override("ops")])
        )
        .with_panel(
            graph(
                "Prometheus → Alertmanager",
                "Alerts Prometheus sent, failed to send and dropped per second.",
                "ops",
                (f"sum by (alertmanager) (rate(prometheus_notifications_sent_total{SELF_RATE}))", "sent"),
                (
                    f"sum by (alertmanager) (rate(prometheus_notifications_errors_total{SELF_RATE}))",
                    "errors",
                ),
                (f"rate(prometheus_notifications_dropped_total{SELF_RATE})", "dropped"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Alertmanager alerts",
                "Alerts Alertmanager holds, by state.",
                "none",
                ("sum by (state) (alertmanager_alerts)", "{{state}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Notifications sent",
                "Notifications Alertmanager sent per second, by integration.",
                "ops",
                (
                    f"sum by (integration) (rate(alertmanager_notifications_total{SELF_RATE}))",
                    "{{integration}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Notifications failed",
                "Notifications Alertmanager failed to send per second, by integration.",
                "ops",
                (
                    f"sum by (integration) (rate(alertmanager_notifications_failed_total{SELF_RATE}))",
                    "{{integration}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Webhook into the exporter",
                "Alertmanager notifications the exporter received, by status (relayed to the old page).",
                "ops",
                (
                    "sum by (status) "
                    f"(rate(kato_exporter_alertmanager_notifications_total{{{INSTANCE}}}{RATE}))",
                    "{{status}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Grafana Live pushes",
                "Pushes to Grafana Live per second, by result.",
                "ops",
                (
                    f"sum by (result) (rate(kato_exporter_live_pushes_total{{{INSTANCE}}}{RATE}))",
                    "{{result}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Grafana Live push duration",
                "Mean duration of a push to Grafana Live.",
                "s",
                (
                    f"rate(kato_exporter_live_push_duration_seconds_sum{{{INSTANCE}}}{RATE})"
                    f" / rate(kato_exporter_live_push_duration_seconds_count{{{INSTANCE}}}{RATE})",
                    "{{instance}}",
                ),
                width=8,
            )
        )
    )


def kato_live() -> Any:
    return (
        board(
            "kato-live",
            "KATO live",
            "Pushed by the exporter to Grafana Live once a second, and each session event and alert at "
            "once: no Prometheus in between. Shows the stream `kato` (--grafana.live.stream).",
        )
        .refresh("")
        .time("now-5m", "now")
        .with_panel(live("Container CPU", "CPU used, in cores.", "suffix:cores", "containers", "cpu_cores"))
        .with_panel(
            live(
                "Container working set",
                "Working set of each container.",
                "bytes",
                "containers",
                "memory_working_set_bytes",
            )
        )
        .with_panel(
            live(
                "Container network",
                "Bytes per second received and sent.",
                "Bps",
                "containers",
                "network_receive_bytes_per_second",
                "network_transmit_bytes_per_second",
                width=8,
            )
        )
        .with_panel(
            live(
                "Container block I/O",
                "Bytes per second read and written.",
                "Bps",
                "containers",
                "block_read_bytes_per_second",
                "block_write_bytes_per_second",
                width=8,
            )
        )
        .with_panel(
            live(
                "Host",
                "Busy share of all CPUs, and memory in use.",
                "percentunit",
                "host",
                "cpu_usage_ratio",
                "memory_usage_ratio",
                width=8,
            )
        )
        .with_panel(
            live(
                "Sessions",
                "Exact active sessions, and KATO's count.",
                "none",
                "sessions",
                "active",
                width=8,
                more={"kato": ("sessions_reported",)},
            )
        )
        .with_panel(
            live(
                "Session events",
                "One point per session event, when it happens: live sessions after it.",
                "none",
                "session_events",
                "active",
                width=8,
            )
        )
        .with_panel(
            live(
                "Requests",
                "Requests per second by status class.",
                "reqps",
                "requests",
                "rate_2xx",
                "rate_3xx",
                "rate_4xx",
                "rate_5xx",
                width=8,
            )
        )
        .with_panel(
            live(
                "Alert notices",
                "One point per alert Alertmanager sends: 1 firing, 0 resolved.",
                "none",
                "alerts",
                "firing",
                width=24,
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], Any]] = {
    "kato-overview": overview,
    "kato-containers": containers,
    "kato-sessions": sessions,
    "kato-host": host,
    "kato-monitoring": monitoring,
    "kato-live": kato_live,
    "kato-slo": slo,
}


# what the SDK writes on every variable, though only an interval variable has it (not in
# @grafana/schema's VariableModel)
INTERVAL_ONLY = ("auto", "auto_min", "auto_count")


def render(make: Callable[[], Any]) -> dict[str, Any]:
    """The dashboard's JSON model, panels numbered in order."""
    model: dict[str, Any] = json.loads(json.dumps(make().build(), cls=JSONEncoder))
    for number, panel in enumerate(model["panels"], 1):
        panel["id"] = number
    for each in model.get("templating", {}).get("list", []):
        if each.get("type") != "interval":
            for key in INTERVAL_ONLY:
                each.pop(key, None)
    return model


def encode(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"
