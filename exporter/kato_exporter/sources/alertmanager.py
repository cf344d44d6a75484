"""Alerts pushed by Alertmanager's webhook (``POST /api/v1/alertmanager``).

The web app hands each request body to ``AlertInbox.receive``, which validates it,
publishes one ``AlertNotice`` per alert (the WebSocket bridge relays them as
``system_alert``) and counts notifications. Yields::

    {"firing": 3, "resolved": 1}    # notifications received, by status
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from kato_exporter.model import AlertNotice

log = logging.getLogger(__name__)


class BadNotification(ValueError):
    """The body is not an Alertmanager webhook notification (version 4)."""


class AlertInbox:
    name = "alertmanager"
    interval = 60.0
    timeout = 1.0

    def __init__(self, emit: Callable[[AlertNotice], None]) -> None:
        self._emit = emit
        self._counts: Counter[str] = Counter()
        self.changed = asyncio.Event()

    async def collect(self) -> dict[str, int]:
        return dict(self._counts)

    def receive(self, body: Any) -> int:
        """Publish the alerts of one notification; returns how many. Raises BadNotification."""
        notices = parse_notification(body)
        self._counts[body["status"]] += 1
        log.debug("Alertmanager notification %s: %s", body["status"], ", ".join(n.name for n in notices))
        for notice in notices:
            self._emit(notice)
        self.changed.set()
        return len(notices)


def parse_notification(body: Any) -> list[AlertNotice]:
    if not isinstance(body, dict) or body.get("status") not in ("firing", "resolved"):
        raise BadNotification("expected an Alertmanager notification with status firing or resolved")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise BadNotification("alerts: expected a list")
    notices = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise BadNotification(f"alerts[{i}]: expected an object")
        labels, annotations = alert.get("labels"), alert.get("annotations", {})
        if not isinstance(labels, dict) or not isinstance(annotations, dict):
            raise BadNotification(f"alerts[{i}]: labels and annotations must be objects")
        if alert.get("status") not in ("firing", "resolved"):
            raise BadNotification(f"alerts[{i}].status: expected firing or resolved")
        notices.append(
            AlertNotice(
                status=alert["status"],
                name=str(labels.get("alertname", "")),
                severity=str(labels.get("severity", "")),
                legacy_type=str(labels.get("legacy_type", "")),
                labels={str(k): str(v) for k, v in labels.items()},
                annotations={str(k): str(v) for k, v in annotations.items()},
                starts_at=str(alert.get("startsAt", "")),
                ends_at=str(alert.get("endsAt", "")),
            )
        )
    return notices
