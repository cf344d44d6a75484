"""kato-exporter: Prometheus metrics for KATO's containers, host and sessions."""

__version__ = "0.1.0"
