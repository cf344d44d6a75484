"""Debian's own `prometheus` and `prometheus-alertmanager` services, with this repository's configs.

    scripts/debian-configs.sh                 # renders into /etc, then:
    systemctl reload prometheus prometheus-alertmanager
    scripts/debian-configs.sh --root /tmp/r   # the same into another root, to look first

What scripts/run.sh renders into <state>/config, rendered for the packages' paths:

    /etc/prometheus/prometheus.yml, rules/, targets/   Prometheus (the package reads this file);
                                                       other hosts' exporters: one file each in targets/
    /etc/prometheus/alertmanager.yml, templates/       Alertmanager (the same)
    /etc/kato-monitoring/webhook_token                 the token Alertmanager sends to the exporter's
                                                       webhook: made once, readable by root and the
                                                       prometheus group; give the exporter the same
                                                       (the systemd unit's webhook_token credential)

The exporter is expected on localhost:9817 with this machine's hostname as its `host`; the Slack
URL and SMTP password files are /etc/kato-monitoring/slack_api_url and smtp_password unless
KATO_SLACK_API_URL_FILE and KATO_SMTP_PASSWORD_FILE say otherwise. A config file that is there
and differs is kept once as <name>.orig.
"""

from __future__ import annotations

import argparse
import filecmp
import grp
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from scripts.stack import Settings, render_into

SECRETS = Path("/etc/kato-monitoring")
GROUP = "prometheus"  # the Debian packages' services run as user prometheus


def install(root: Path, settings: Settings) -> list[Path]:
    """Render into ``root``; return the files written."""
    etc = root / "etc" / "prometheus"
    token = root / SECRETS.relative_to("/") / "webhook_token"
    make_secret(token)
    with tempfile.TemporaryDirectory() as scratch:
        rendered = Path(scratch)
        render_into(settings, rendered, rendered, SECRETS / "webhook_token", "targets")
        written = []
        for path in sorted(p for p in rendered.rglob("*") if p.is_file()):
            target = etc / path.relative_to(rendered)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() and not filecmp.cmp(path, target, shallow=False):
                backup = target.with_name(target.name + ".orig")
                if not backup.exists():
                    shutil.copy2(target, backup)
            shutil.copyfile(path, target)
            target.chmod(0o644)
            written.append(target)
    return [*written, token]


def make_secret(path: Path) -> None:
    """A token readable by root and the prometheus group, made once."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    if not path.exists():
        path.touch(mode=0o640)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    try:
        gid = grp.getgrnam(GROUP).gr_gid
    except KeyError:
        return  # no packages installed in this root yet: the group comes with them
    if os.geteuid() == 0:
        for each in (path.parent, path):
            os.chown(each, 0, gid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/"), help="render under this root (default /)")
    args = parser.parse_args(argv)
    for path in install(args.root, Settings()):
        print(f"wrote {path}")
    print("now: systemctl reload prometheus prometheus-alertmanager (or restart, on a first install)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
