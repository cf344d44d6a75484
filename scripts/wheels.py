"""Download into DEST the wheels that REQUIREMENTS need on Python VERSION (another 3.11 release
than this one), for an image built with no index:

    python scripts/wheels.py exporter/wheels 3.11.2 'setuptools>=68' 'aiohttp==3.14.5' ...

pip evaluates ``python_full_version`` markers for the Python it runs on, not for
``--python-version``; so each downloaded wheel's requirements are read again with VERSION's
markers, and what they add (redis's async-timeout before 3.11.3) is downloaded too.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import cast

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def download(dest: Path, version: str, requirements: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--only-binary=:all:", "--python-version", version, "--dest", str(dest), *requirements],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # pip names each configured index that lacks a package: not news
    sys.stderr.writelines(
        line for line in done.stderr.splitlines(True) if not line.startswith("WARNING: Location")
    )
    done.check_returncode()


def missing(dest: Path, version: str) -> list[str]:
    """Requirements of the wheels in ``dest`` that hold on ``version`` and have no wheel there."""
    environment: dict[str, str] = {
        **cast(dict[str, str], default_environment()),
        "python_full_version": version,
        "python_version": ".".join(version.split(".")[:2]),
        "extra": "",
    }
    wheels = list(dest.glob("*.whl"))
    have = {parse_wheel_filename(w.name)[0] for w in wheels}
    needed = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = Parser().parsestr(archive.read(name).decode())
        for text in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(text)
            holds = requirement.marker is None or requirement.marker.evaluate(environment)
            if holds and canonicalize_name(requirement.name) not in have:
                needed.append(str(requirement).split(";")[0])
    return sorted(set(needed))


def main() -> None:
    dest, version, requirements = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    dest.mkdir(parents=True, exist_ok=True)
    while requirements:
        download(dest, version, requirements)
        requirements = missing(dest, version)


if __name__ == "__main__":
    main()
