"""Command line: flags (each also an env var) → Config → the running exporter."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from kato_exporter import __version__
from kato_exporter.config import ConfigError, leaves, load, parse_duration, redact

log = logging.getLogger("kato_exporter")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kato-exporter",
        description="Prometheus exporter for KATO: containers, host and sessions.",
        epilog="Every flag can also be set from the environment variable shown in brackets.",
    )
    p.add_argument(
        "--config.file",
        dest="config_file",
        metavar="PATH",
        default=os.environ.get("KATO_EXPORTER_CONFIG_FILE"),
        help="YAML file with the same settings, nested by their dots [KATO_EXPORTER_CONFIG_FILE].",
    )
    p.add_argument(
        "--check-config", action="store_true", help="Validate the configuration, print it and exit."
    )
    p.add_argument(
        "--health-check",
        action="store_true",
        help="Ask the exporter these settings describe whether it is healthy (its /-/healthy) and exit "
        "0 if so, 1 if not: for Docker's HEALTHCHECK and service managers.",
    )
    p.add_argument(
        "--health-check.wait",
        dest="health_check_wait",
        metavar="DURATION",
        default="0s",
        help="With --health-check: keep asking until healthy or this long has passed (e.g. 30s).",
    )
    p.add_argument("--version", action="version", version=f"kato-exporter {__version__}")
    for leaf in leaves():
        text = f"{leaf.field.metadata['help']} [{leaf.env}]"
        if leaf.is_bool:
            p.add_argument(
                leaf.flag, dest=leaf.key, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            p.add_argument(leaf.flag, dest=leaf.key, default=None, metavar="VALUE", help=text)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    config_file = args.pop("config_file")
    check_only = args.pop("check_config")
    health_check = args.pop("health_check")
    health_check_wait = args.pop("health_check_wait")
    from kato_exporter.outputs.webconfig import load_web_config  # bcrypt, ssl: only past --help

    try:
        config = load({k: v for k, v in args.items() if v is not None}, os.environ, config_file)
        security = load_web_config(config.web.config_file)  # checked here, so that a bad one exits 2
        wait = 0.0 if health_check_wait in ("0", "0s") else parse_duration(health_check_wait)
    except ConfigError as exc:
        print(f"kato-exporter: configuration error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"kato-exporter: --health-check.wait: {exc}", file=sys.stderr)
        return 2
    if health_check:
        from kato_exporter import healthcheck

        return healthcheck.main(config, security, wait)
    if check_only:
        print(f"configuration OK{f' ({config_file})' if config_file else ''}")
        for leaf in leaves():
            value = _lookup(config, leaf.key)
            shown = getattr(value, "pattern", value)
            print(f"  {leaf.key} = {redact(repr(shown))}")
        return 0
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=config.log.level.upper(), handlers=[handler])
    from kato_exporter.app import run  # imported late: --help and --check-config stay light

    return run(config)


class RedactingFormatter(logging.Formatter):
    """No password in a URL reaches the log, whichever library wrote the message."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _lookup(config: object, key: str) -> object:
    for part in key.split("."):
        config = getattr(config, part)
    return config
