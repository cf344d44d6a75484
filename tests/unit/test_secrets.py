"""No secret in the repository: docker-compose.yml and scripts/run.sh read them from files."""

import re
import subprocess

from tests.conftest import ROOT


def test_no_secret_is_in_the_repository() -> None:
    """Token and password shapes in every file git tracks; the secret files are ignored."""
    shapes = re.compile(
        r"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"
        r"|xox[abpr]-[A-Za-z0-9-]{10,}|glsa_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}"
        r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
        r"|(password|api_url|token|credentials)\s*:\s*['\"]?(?!<|\$|/|\{)[^\s'\"]{8,}"
    )
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in tracked:
        path = ROOT / name
        if path.is_file() and path.suffix not in (".png", ".whl"):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if shapes.search(line):
                    found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not found, found
    ignored = subprocess.run(
        ["git", "check-ignore", "secrets/x", ".env"], cwd=ROOT, capture_output=True, text=True
    )
    assert ignored.stdout.split() == ["secrets/x", ".env"]
