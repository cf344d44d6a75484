"""Data sources. Each yields plain dataclasses from ``kato_exporter.model``."""
