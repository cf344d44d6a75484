"""Reading an exposition the way Prometheus does, for assertions on values."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text


class Exposition:
    def __init__(self, text: str, openmetrics: bool = False) -> None:
        self.text = text
        parse = parse_openmetrics if openmetrics else parse_text
        self.samples = [
            (sample.name, sample.labels, sample.value) for family in parse(text) for sample in family.samples
        ]

    def all(self, name: str, /, **labels: str) -> Iterator[tuple[dict[str, str], float]]:
        for sample_name, sample_labels, value in self.samples:
            if sample_name == name and labels.items() <= sample_labels.items():
                yield sample_labels, value

    def value(self, name: str, /, **labels: str) -> float | None:
        """The one sample matching ``name`` and ``labels``, or None if there is none."""
        found = [value for _, value in self.all(name, **labels)]
        if len(found) > 1:
            raise AssertionError(f"{len(found)} samples match {name}{labels}")
        return found[0] if found else None


def scrape(url: str, headers: dict[str, str] | None = None) -> Exposition:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return Exposition(response.read().decode())
